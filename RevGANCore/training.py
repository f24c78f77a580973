"""Training a 3D RevGAN: paired (pix2pix-style) and unpaired (CycleGAN-style) objectives,
both directions of ONE generator with a shared reversible core.

Python API (also from 3D Slicer's Python console)::

    from RevGANCore.config import load_config
    from RevGANCore.training import Trainer
    summary = Trainer(load_config("configs/kernel_paired_2r.toml")).fit()

Objectives (G = generator "forward" X->Y, F = generator "inverse" Y->X):
- paired:   L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda_l1 (|G(x) - y| + |F(y) - x|), with
            conditional discriminators that see (input, output) concatenated;
- unpaired: L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda_cycle (|F(G(x)) - x| + |G(F(y)) - y|)
            [+ lambda_cycle * lambda_identity (|G(y) - y| + |F(x) - x|)], discriminators
            fed from a history pool of generated patches.
Each optimisation step updates the generator, then both discriminators.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoints import (CheckpointStore, optimizer_from_tensors, optimizer_to_tensors, require_resumable,
                          write_json_atomic)
from .config import TrainConfig, generator_for_task
from .devices import describe_device, resolve_device
from .data import batch_positions
from .distributed import distributed_context, shutdown
from .errors import ConfigError, RevGANError
from .losses import GANLoss, ImagePool
from .modelfile import ModelMetadata, load_model, save_model
from .networks import PatchDiscriminator3d, RevGANGenerator3d, upsample_image
from .volume_io import read_spacing

Log = Callable[[str], None]


class TrainingDivergedError(RevGANError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------ modules run under DDP
# DistributedDataParallel expects one forward per backward, so each phase of a step is one
# module call: the generator phase computes every generator output the losses need.


class _GeneratorPhase(nn.Module):
    def __init__(self, generator: RevGANGenerator3d, mode: str, identity: bool):
        super().__init__()
        self.generator = generator
        self.mode = mode
        self.identity = identity

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"fake_y": self.generator(x, "forward"), "fake_x": self.generator(y, "inverse")}
        if self.mode == "unpaired":
            out["cycle_x"] = self.generator(out["fake_y"], "inverse")
            out["cycle_y"] = self.generator(out["fake_x"], "forward")
            if self.identity:
                out["identity_y"] = self.generator(y, "forward")
                out["identity_x"] = self.generator(x, "inverse")
        return out


class _DiscriminatorPhase(nn.Module):
    def __init__(self, d_x: PatchDiscriminator3d, d_y: PatchDiscriminator3d):
        super().__init__()
        self.d_x = d_x
        self.d_y = d_y

    def forward(self, inputs_y: torch.Tensor, inputs_x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.d_y(inputs_y), self.d_x(inputs_x)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


def learning_rate_factor(step: int, iterations: int, decay_start: float) -> float:
    """Constant, then linear decay to zero at the last iteration (pix2pix/CycleGAN)."""
    start = int(round(decay_start * iterations))
    if step < start or iterations <= start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / float(iterations - start))


def parameter_fingerprint(module: nn.Module) -> List[float]:
    """Two numbers that differ when any weight differs (sum and position-weighted sum)."""
    total, weighted = 0.0, 0.0
    for index, parameter in enumerate(module.parameters()):
        values = parameter.detach().double().flatten()
        total += float(values.sum())
        weights = torch.linspace(1.0, 2.0, values.numel(), dtype=torch.float64, device=values.device)
        weighted += float((values * weights).sum()) * (index + 1)
    return [total, weighted]


def _git_commit() -> Optional[str]:
    try:
        folder = Path(__file__).resolve().parent.parent
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=5)
        return result.stdout.strip() or None if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals only work there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# -------------------------------------------------------------------------------- trainer


class Trainer:
    """Trains one RevGAN according to a :class:`TrainConfig`; ``fit()`` runs (or resumes) it.

    ``log`` receives human-readable lines (default: print on rank 0)."""

    def __init__(self, config: TrainConfig, log: Optional[Log] = None):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.dist = distributed_context(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self._log = log if log is not None else print
        self.output_dir = Path(config.output_dir)
        self.store = CheckpointStore(self.output_dir, config.checkpoint.keep_last)
        self.step = 0
        self.best: Optional[float] = None
        self.history: List[dict] = []

    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._log(message)

    def _check_output_dir(self, resume: bool) -> None:
        """Refuse an output_dir that cannot hold this run, without creating anything."""
        existing = self.output_dir.absolute()
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"output_dir {self.output_dir}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"output_dir {self.output_dir}: {existing} is not writable")
        if resume:
            require_resumable(self.store)
        elif self.store.latest() is not None:
            raise ConfigError(f"{self.output_dir} already holds a training run; use --resume to continue "
                              "it or choose another output_dir")

    # ---------------------------------------------------------------- data
    def _ensure_data(self) -> Path:
        data = self.config.data
        manifest = Path(data.manifest)
        if manifest.is_dir():
            manifest = manifest / "manifest.json"
        generate = data.generate
        if manifest.exists() and generate.cases > 0:
            from .phantom_dataset import describe_phantom_manifest

            held = describe_phantom_manifest(manifest)
            wanted = {"cases": generate.cases, "seed": generate.seed, "shape": tuple(generate.shape)}
            if held != wanted:
                raise ConfigError(f"{manifest} holds {held or 'no generated phantom set'}, but the configuration "
                                  f"asks for {wanted}; point data.manifest at another folder")
        if not manifest.exists():
            if generate.cases < 1:
                raise ConfigError(f"data.manifest not found: {manifest} (create it with `revgan phantom` or "
                                  "`revgan dataset`, or set data.generate.cases to generate phantoms)")
            if self.dist.is_main:
                from .phantom_dataset import PhantomRecipe, write_phantom_dataset

                self.log(f"generating {generate.cases} phantom cases (seed {generate.seed}, shape "
                         f"{tuple(generate.shape)}) into {manifest.parent}")
                write_phantom_dataset(manifest.parent, cases=generate.cases, seed=generate.seed,
                                      recipe=PhantomRecipe(shape=tuple(generate.shape)), overwrite=True)
            self.dist.barrier()
        return manifest

    def _build_data(self) -> None:
        from .data import datasets_from_manifest, load_manifest

        data, paired = self.config.data, self.config.objective.mode == "paired"
        manifest_path = self._ensure_data()
        manifest = load_manifest(manifest_path)
        spec = manifest.task(data.task)
        self.task_spec = spec
        self.manifest = manifest
        self.generator_config = generator_for_task(self.config.model.generator, data.task, spec.get("factors_xyz"))
        all_ids = [c.id for c in manifest.cases]
        for case_id in tuple(data.train_cases) + tuple(data.val_cases):
            if case_id not in all_ids:
                raise ConfigError(f"{manifest.path}: no case {case_id!r}; cases are {', '.join(all_ids)}")
        val_ids = list(data.val_cases)
        train_ids = list(data.train_cases) or [c for c in all_ids if c not in val_ids]
        overlap = sorted(set(train_ids) & set(val_ids))
        if overlap:
            raise ConfigError(f"cases used for both training and validation: {', '.join(overlap)}")
        patch = dict(patch_size=data.patch_size, foreground_fraction=data.foreground_fraction,
                     samples_per_epoch=max(256, data.batch_size * self.dist.world_size * 16),
                     # Residual generators learn unclipped HU (bone beyond the window survives);
                     # tanh generators are bounded to the window, as in the seed paper.
                     clip_to_window=not self.config.model.generator.residual,
                     source_on_own_grid=self.generator_config.upscale_zyx != (1, 1, 1))
        self.train_set = datasets_from_manifest(manifest_path, task=data.task, paired=paired,
                                                case_ids=train_ids, seed=self.config.seed, **patch)["train"]
        self.train_set.check_patch_fits(f"{manifest.path}: data.patch_size")
        self.val_batches: List[Tuple[torch.Tensor, torch.Tensor]] = []
        if val_ids:
            val_set = datasets_from_manifest(manifest_path, task=data.task, paired=True, case_ids=val_ids,
                                             seed=self.config.seed + 7919, **patch)["train"]
            items = [val_set[i] for i in range(data.val_patches)]
            for start in range(0, len(items), data.batch_size):
                chunk = items[start:start + data.batch_size]
                self.val_batches.append((torch.stack([it["source"] for it in chunk]),
                                         torch.stack([it["target"] for it in chunk])))
        self.train_ids, self.val_ids = train_ids, val_ids

    def _batch(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step`` for this rank: a pure function of (seed, step, rank), so
        resumed and multi-process runs see exactly the patches a single run would."""
        sources, targets = [], []
        for epoch, index in batch_positions(step, self.config.data.batch_size, self.dist.rank,
                                            self.dist.world_size, len(self.train_set)):
            self.train_set.set_epoch(epoch)
            item = self.train_set[index]
            sources.append(item["source"])
            targets.append(item["target"])
        return self._to_device(torch.stack(sources)), self._to_device(torch.stack(targets))

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.config.optim.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
        return tensor

    # ---------------------------------------------------------------- models
    def _build_models(self) -> None:
        config = self.config
        paired = config.objective.mode == "paired"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick the fastest 3D convs
        torch.manual_seed(config.seed)
        self.generator = RevGANGenerator3d(config=self.generator_config).to(self.device)
        d_config = dataclasses.replace(config.model.discriminator, in_channels=2 if paired else 1)
        self.d_x = PatchDiscriminator3d(config=d_config).to(self.device)
        self.d_y = PatchDiscriminator3d(config=d_config).to(self.device)
        if config.optim.channels_last:
            for module in (self.generator, self.d_x, self.d_y):
                module.to(memory_format=torch.channels_last_3d)
        # An identity term needs G(y) on y's grid: not for generators that change the grid.
        identity = (not paired) and config.objective.lambda_identity > 0 and self.generator_config.upscale_zyx == (1, 1, 1)
        self.g_phase: nn.Module = _GeneratorPhase(self.generator, config.objective.mode, identity)
        self.d_phase: nn.Module = _DiscriminatorPhase(self.d_x, self.d_y)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_phase = nn.parallel.DistributedDataParallel(self.g_phase, device_ids=ids)
            self.d_phase = nn.parallel.DistributedDataParallel(self.d_phase, device_ids=ids)
        optim = config.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2))
        self.opt_d = torch.optim.Adam(list(self.d_x.parameters()) + list(self.d_y.parameters()), lr=optim.lr,
                                      betas=(optim.beta1, optim.beta2))
        self.gan_loss = GANLoss(config.objective.gan_loss)
        self.pool_x = ImagePool(config.objective.pool_size if not paired else 0, seed=config.seed + 1)
        self.pool_y = ImagePool(config.objective.pool_size if not paired else 0, seed=config.seed + 2)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _amp_dtype(self) -> Optional[torch.dtype]:
        amp = self.config.optim.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "fp16":
            if self.device.type != "cuda":
                raise ConfigError("optim.amp = fp16 needs a CUDA device (use bf16 on the CPU)")
            return torch.float16
        if amp == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # ---------------------------------------------------------------- one step
    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, float]:
        objective = self.config.objective
        paired = objective.mode == "paired"
        l1 = nn.functional.l1_loss
        # Both discriminators judge on the fine grid (for a generator that upsamples inside,
        # x-side patches are too small for a PatchGAN on their own grid), a conditional one
        # with the input beside the output.
        factors = self.generator.config.upscale_zyx
        fine = (lambda t: upsample_image(t, factors)) if factors != (1, 1, 1) else (lambda t: t)
        x_fine = fine(x)

        _set_requires_grad(self.d_phase, False)
        with self._autocast():
            out = self.g_phase(x, y)
            if paired:
                score_y = self.d_y(torch.cat([x_fine, out["fake_y"]], 1))
                score_x = self.d_x(torch.cat([y, fine(out["fake_x"])], 1))
            else:
                score_y = self.d_y(out["fake_y"])
                score_x = self.d_x(fine(out["fake_x"]))
        loss_gan = self.gan_loss(score_y, True) + self.gan_loss(score_x, True)
        terms = {"g_gan": loss_gan}
        if paired:
            terms["g_l1"] = l1(out["fake_y"].float(), y) + l1(out["fake_x"].float(), x)
            loss_g = loss_gan + objective.lambda_l1 * terms["g_l1"]
        else:
            terms["g_cycle"] = l1(out["cycle_x"].float(), x) + l1(out["cycle_y"].float(), y)
            loss_g = loss_gan + objective.lambda_cycle * terms["g_cycle"]
            if "identity_y" in out:
                terms["g_identity"] = l1(out["identity_y"].float(), y) + l1(out["identity_x"].float(), x)
                loss_g = loss_g + objective.lambda_cycle * objective.lambda_identity * terms["g_identity"]
        self._check_finite("generator", loss_g)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self._clip_and_step(self.opt_g, self.generator)

        _set_requires_grad(self.d_phase, True)
        fake_y = out["fake_y"].detach()
        fake_x = fine(out["fake_x"].detach())
        if paired:
            inputs_y = torch.cat([torch.cat([x_fine, y], 1), torch.cat([x_fine, fake_y], 1)], 0)
            inputs_x = torch.cat([torch.cat([y, x_fine], 1), torch.cat([y, fake_x], 1)], 0)
        else:
            inputs_y = torch.cat([y, self.pool_y.query(fake_y).to(y.dtype)], 0)
            inputs_x = torch.cat([x_fine, self.pool_x.query(fake_x).to(x.dtype)], 0)
        with self._autocast():
            scores_y, scores_x = self.d_phase(inputs_y, inputs_x)
        n = x.shape[0]
        loss_d = 0.5 * (self.gan_loss(scores_y[:n], True) + self.gan_loss(scores_y[n:], False)
                        + self.gan_loss(scores_x[:n], True) + self.gan_loss(scores_x[n:], False))
        self._check_finite("discriminator", loss_d)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self._clip_and_step(self.opt_d, self.d_phase)
        self.scaler.update()
        values = {name: float(value.detach()) for name, value in terms.items()}
        values.update(g_total=float(loss_g.detach()), d_total=float(loss_d.detach()))
        return values

    @contextlib.contextmanager
    def _out_of_memory_as_error(self):
        """A step that does not fit in memory is a setting to change, said in one line."""
        try:
            yield
        except RuntimeError as error:  # torch.OutOfMemoryError (CUDA) is a RuntimeError too
            text = str(error)
            if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in text:
                raise
            data = self.config.data
            raise RevGANError(f"out of memory in training step {self.step + 1} on {describe_device(self.device)} "
                              f"(data.batch_size {data.batch_size}, data.patch_size {data.patch_size}): "
                              "lower them, or the model size") from None

    def _clip_and_step(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> None:
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(module.parameters(), self.config.optim.grad_clip)
        self.scaler.step(optimizer)

    def _check_finite(self, which: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            kept = self.store.latest()
            where = f"; the last good checkpoint is {kept.model} (step {kept.step})" if kept else ""
            raise TrainingDivergedError(
                f"the {which} loss became {float(loss.detach())} at step {self.step + 1}: training stopped{where}. "
                "Lower optim.lr, enable optim.grad_clip, or check the data for extreme values")

    def _set_learning_rate(self, step: int) -> float:
        optim = self.config.optim
        lr = optim.lr * learning_rate_factor(step, optim.iterations, optim.decay_start)
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """L1 (normalised units) and PSNR (data range 2) of both directions on held-out patches."""
        if not self.val_batches:
            return {}
        self.generator.eval()
        sums = {"val_l1": 0.0, "val_mse": 0.0, "val_l1_inverse": 0.0, "val_l1_input": 0.0}
        count = 0
        for x, y in self.val_batches:
            x, y = self._to_device(x), self._to_device(y)
            with self._autocast():
                fake_y = self.generator(x, "forward").float()
                fake_x = self.generator(y, "inverse").float()
            sums["val_l1"] += float((fake_y - y).abs().mean()) * x.shape[0]
            sums["val_mse"] += float(((fake_y - y) ** 2).mean()) * x.shape[0]
            sums["val_l1_inverse"] += float((fake_x - x).abs().mean()) * x.shape[0]
            sums["val_l1_input"] += float((upsample_image(x, self.generator.config.upscale_zyx) - y).abs().mean()) * x.shape[0]
            count += x.shape[0]
        self.generator.train()
        metrics = {key: value / count for key, value in sums.items()}
        metrics["val_psnr"] = 10.0 * math.log10(4.0 / max(metrics.pop("val_mse"), 1e-12))
        return metrics

    def _preview(self, step: int) -> None:
        every = self.config.logging.preview_every
        if not self.val_batches or every <= 0 or not self.dist.is_main:
            return
        from .preview import side_by_side, window_to_uint8, write_png
        from .volume import unit_to_hu

        x, y = self.val_batches[0]
        with torch.no_grad(), self._autocast():
            fake_y = self.generator(self._to_device(x[:1]), "forward").float().cpu()
        x = upsample_image(x, self.generator.config.upscale_zyx)  # shown on the output's grid
        middle = x.shape[2] // 2
        panels = [window_to_uint8(unit_to_hu(t[0, 0, middle].numpy()), level=-600, width=1500)
                  for t in (x, fake_y, y)]
        write_png(self.output_dir / "previews" / f"step_{step:08d}.png", side_by_side(panels))

    # ---------------------------------------------------------------- checkpoints
    def _median_spacing(self, domain: str) -> Optional[Tuple[float, float, float]]:
        """Median voxel spacing (x, y, z) of the training cases' ``domain`` volumes (headers only)."""
        found = [read_spacing(case.files[domain]) for case in self.manifest.cases
                 if case.id in self.train_ids and domain in case.files]
        found = [spacing for spacing in found if spacing is not None]
        if not found:
            return None
        return tuple(float(np.median(axis)) for axis in zip(*found))  # type: ignore[return-value]

    def _metadata(self, metrics: Dict[str, float]) -> ModelMetadata:
        config, spec = self.config, self.task_spec
        factors = spec.get("factors_xyz") if config.data.task == "super_resolution" else None
        # Models live in millimetres: inference brings a scan to the scale trained on. The
        # generator runs on the target grid; the slice thickness is the source's (for
        # super-resolution the thick low-resolution slices, for kernels the same grid).
        spacing = self._median_spacing(spec["target"])
        source_spacing = self._median_spacing(spec["source"]) or spacing
        return ModelMetadata(
            training_spacing_xyz=spacing,
            training_slice_thickness_mm=source_spacing[2] if source_spacing else None,
            task=config.data.task,
            domains={"x": spec["source"], "y": spec["target"]},
            generator=self.generator_config.to_dict(),
            scale_factors_xyz=tuple(factors) if factors else None,
            name=config.name or Path(config.output_dir).name,
            description=f"{config.objective.mode} 3D RevGAN, depth {config.model.generator.depth}, "
                        f"{spec['source']} <-> {spec['target']}",
            training={
                "config": config.to_dict(),
                "iterations_done": self.step,
                "dataset": {"manifest": str(self.manifest.path), "train_cases": self.train_ids,
                            "val_cases": self.val_ids},
                "validation": metrics,
                "device": describe_device(self.device),
                "world_size": self.dist.world_size,
                "git_commit": self.git_commit,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "revgan_version": __version__,
            })

    def _state(self) -> Tuple[Dict[str, torch.Tensor], dict]:
        tensors: Dict[str, torch.Tensor] = {}
        for prefix, module in (("d_x", self.d_x), ("d_y", self.d_y)):
            for name, tensor in module.state_dict().items():
                tensors[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous()
        optimizers = {}
        for prefix, optimizer in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            opt_tensors, optimizers[prefix] = optimizer_to_tensors(optimizer, prefix)
            tensors.update(opt_tensors)
        tensors.update(self.pool_x.state_tensors("pool_x"))
        tensors.update(self.pool_y.state_tensors("pool_y"))
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state = {"step": self.step, "best": self.best, "optimizers": optimizers,
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "config": self.config.to_dict()}
        return tensors, state

    def save_checkpoint(self, metrics: Optional[Dict[str, float]] = None) -> None:
        if not self.dist.is_main:
            return
        metadata = self._metadata(metrics or {})
        tensors, state = self._state()
        self.store.save(self.step, lambda path: save_model(path, self.generator, metadata), tensors, state)

    def _save_best(self, metrics: Dict[str, float]) -> None:
        key = self.config.checkpoint.best_metric
        if key not in metrics or not self.dist.is_main:
            return
        value = metrics[key] if key == "val_l1" else -metrics[key]
        if self.best is None or value < self.best:
            self.best = value
            save_model(self.output_dir / "best.safetensors", self.generator, self._metadata(metrics))

    def _resume(self) -> None:
        files = require_resumable(self.store)
        tensors, state = self.store.read_state(files)
        saved = state.get("config", {})
        current = self.config.to_dict()
        for section in ("model", "objective", "data"):
            if saved.get(section) != current.get(section):
                raise ConfigError(f"--resume: the configuration's [{section}] differs from the run in "
                                  f"{self.output_dir}; resume with the saved config.json")
        model = load_model(files.model, device=self.device)
        self.generator.load_state_dict(model.generator.state_dict())
        for prefix, module in (("d_x", self.d_x), ("d_y", self.d_y)):
            module.load_state_dict({name[len(prefix) + 1:]: t for name, t in tensors.items()
                                    if name.startswith(prefix + ".")})
        for prefix, optimizer in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            optimizer_from_tensors(optimizer, prefix, tensors, state["optimizers"][prefix])
        self.pool_x.load_state_tensors("pool_x", tensors, self.device)
        self.pool_y.load_state_tensors("pool_y", tensors, self.device)
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.log(f"resumed from {files.model.name} at step {self.step}")

    # ---------------------------------------------------------------- logs
    def _open_logs(self) -> None:
        self.csv_path = self.output_dir / "metrics.csv"
        self.tensorboard = None
        if self.dist.is_main and self.config.logging.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"))
            except ImportError:  # the tensorboard package is optional
                self.tensorboard = None

    def _write_log(self, row: dict) -> None:
        self.history.append(row)
        if not self.dist.is_main:
            return
        fields = ["step", "lr", "seconds", "g_total", "g_gan", "g_l1", "g_cycle", "g_identity", "d_total",
                  "val_l1", "val_psnr", "val_l1_inverse", "val_l1_input"]
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, row["step"])

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> dict:
        """Train to ``optim.iterations`` (or resume the run in ``output_dir``). Returns a summary
        dict; ``summary["status"]`` is "finished" or "interrupted" (SIGINT/SIGTERM)."""
        config = self.config
        # Everything that can refuse the run happens before the run folder is created, so a
        # refused configuration leaves nothing behind.
        self._check_output_dir(resume)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.git_commit = _git_commit()
        self._build_data()
        self._build_models()
        if resume:
            self._resume()
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config.to_dict())
        self.dist.barrier()
        self._open_logs()
        self.log(f"training {config.objective.mode} RevGAN (depth {config.model.generator.depth}, "
                 f"ngf {config.model.generator.ngf}) for {config.data.task} on {describe_device(self.device)}"
                 f"{f' x {self.dist.world_size} processes' if self.dist.enabled else ''}; "
                 f"{len(self.train_ids)} training cases, {len(self.val_ids)} validation cases")
        if self.step == 0:
            start_metrics = self.validate()
            self._write_log({"step": 0, **start_metrics})
            if start_metrics:
                self.log(f"step 0: val_l1 {start_metrics['val_l1']:.4f}, val_psnr {start_metrics['val_psnr']:.2f} dB "
                         f"(input vs target L1 {start_metrics['val_l1_input']:.4f})")
        status = "finished"
        bar = self._progress_bar()
        started = time.perf_counter()
        metrics: Dict[str, float] = {}
        self.generator.train()
        with _StopRequest() as stop:
            try:
                while self.step < config.optim.iterations:
                    lr = self._set_learning_rate(self.step)
                    with self._out_of_memory_as_error():
                        x, y = self._batch(self.step)
                        losses = self._train_step(x, y)
                    self.step += 1
                    elapsed = time.perf_counter() - started
                    row = {"step": self.step, "lr": lr, "seconds": round(elapsed, 2), **losses}
                    if self.step % config.checkpoint.validate_every == 0 or self.step == config.optim.iterations:
                        metrics = self.validate()
                        row.update(metrics)
                        self._save_best(metrics)
                        self._preview(self.step)
                    if self.step % config.logging.log_every == 0 or "val_l1" in row:
                        self._write_log(row)
                    bar(self.step, config.optim.iterations,
                        " ".join(f"{k}={losses[k]:.3f}" for k in ("g_total", "d_total", "g_l1", "g_cycle")
                                 if k in losses))
                    stopping = self.dist.broadcast_flag(stop.signal_name is not None)
                    if self.step % config.checkpoint.every == 0 or self.step == config.optim.iterations or stopping:
                        self.save_checkpoint(metrics)
                    if stopping:
                        status = "interrupted"
                        self.log(f"\n{stop.signal_name or 'stop'} received: checkpoint saved at step {self.step}; "
                                 "continue with --resume")
                        break
            finally:
                bar.close()
                if self.tensorboard is not None:
                    self.tensorboard.close()
        return self._finish(status, time.perf_counter() - started)

    def _finish(self, status: str, seconds: float) -> dict:
        fingerprints = self.dist.gather_floats(parameter_fingerprint(self.generator)
                                               + parameter_fingerprint(self.d_x) + parameter_fingerprint(self.d_y))
        in_sync = all(np.allclose(f, fingerprints[0], rtol=1e-12, atol=0) for f in fingerprints)
        if not in_sync:
            raise RevGANError(f"distributed training ended with different weights on different ranks: {fingerprints}")
        validations = [row for row in self.history if "val_l1" in row]
        latest, best = self.store.latest(), self.output_dir / "best.safetensors"
        summary = {
            "status": status, "step": self.step, "iterations": self.config.optim.iterations,
            "seconds": round(seconds, 2), "device": describe_device(self.device),
            "world_size": self.dist.world_size, "rank": self.dist.rank, "ranks_identical": in_sync, "fingerprints": fingerprints,
            "first_validation": validations[0] if validations else None,
            "last_validation": validations[-1] if validations else None,
            "output_dir": str(self.output_dir),
            "latest_model": str(latest.model) if latest else None,
            "best_model": str(best) if best.exists() else None,
        }
        if self.dist.is_main:
            write_json_atomic(self.output_dir / "summary.json", summary)
        shutdown(self.dist)
        return summary

    def _progress_bar(self):
        from .progress import progress_bar

        return progress_bar("train", unit="it", enabled=self.config.logging.progress and self.dist.is_main)
