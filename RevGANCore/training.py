"""Training a 3D RevGAN: both directions of ONE generator with a shared reversible core.

Python API (also from 3D Slicer's Python console)::

    from RevGANCore.config import load_config
    from RevGANCore.training import Trainer
    summary = Trainer(load_config("configs/kernel_paired_2r.toml")).fit()

The :class:`Trainer` orchestrates; the parts live beside it: the objectives (paired and
unpaired terms, weights, discriminator inputs) in :mod:`RevGANCore.objectives`, the data in
:mod:`RevGANCore.training_data`, networks and optimizers in :mod:`RevGANCore.training_models`,
checkpoints in :mod:`RevGANCore.checkpoints`, validation in :mod:`RevGANCore.validation`,
metrics files in :mod:`RevGANCore.training_log`. Each optimisation step updates the
generator, then both discriminators.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoints import CheckpointStore, require_resumable, write_json_atomic
from .config import TrainConfig
from .devices import describe_device, resolve_device
from .distributed import distributed_context, shutdown
from .errors import ConfigError, RevGANError
from .linear_prior import install_prior, unpaired_fit_halves
from .noise_power import source_noise, target_noise_level
from .volume import unit_to_hu
from .modelfile import ModelMetadata, load_model, save_model
from .objectives import Objective, check_terms_for_task
from .recorrupted_pairs import RecorruptedPairs
from .training_control import StopRequest, git_commit, learning_rate_factor, parameter_fingerprint
from .training_data import TrainingData, ensure_training_manifest, load_training_data
from .training_log import MetricsLog
from .training_models import TrainingModels, build_training_models
from .validation import best_metric_name, is_better, validate, validate_real
from .volume_io import read_spacing

__all__ = ["Trainer", "TrainingDivergedError", "learning_rate_factor"]

Log = Callable[[str], None]


class TrainingDivergedError(RevGANError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


# -------------------------------------------------------------------------------- trainer


class Trainer:
    """Trains one RevGAN according to a :class:`TrainConfig`; ``fit()`` runs (or resumes) it.

    ``log`` receives human-readable lines (default: print on rank 0). The parts of a run
    (data, objective, models, metrics log) are built by ``fit()``."""

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
        self.git_commit: Optional[str] = None
        self.data: Optional[TrainingData] = None
        self.objective: Optional[Objective] = None
        self.models: Optional[TrainingModels] = None
        self.metrics_log: Optional[MetricsLog] = None

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

    def _build(self) -> None:
        config = self.config
        prior_taps = config.model.generator.prior_taps
        check_terms_for_task(config.objective, config.data.task, prior_taps)
        manifest = ensure_training_manifest(config, self.log, self.dist.is_main, self.dist.barrier)
        self.data = load_training_data(config, manifest, self.dist.world_size)
        self.objective = Objective(config.objective, config.data.task, self.data.factors_zyx,
                                   recorrupted_pairs=self._recorrupted_pairs(), prior_taps=prior_taps)
        self.objective.check_patch(config.data.patch_size)
        self.models = build_training_models(config, self.objective, self.device, self.dist.enabled,
                                            self.data.generator_config)

    def _recorrupted_pairs(self) -> Optional[RecorruptedPairs]:
        """The kernel task's recorrupted pairs: the source domain's noise, measured in the source
        volumes of the cases that give the unpaired prior its sources, and the target domain's
        flat-region noise level in those that give it its targets (no case gives both)."""
        if self.config.data.task != "kernel" or self.config.objective.lambda_recorrupted_pairs <= 0:
            return None
        sources, targets = unpaired_fit_halves(self.data.manifest, self.data.train_ids)
        return RecorruptedPairs(source_noise(self.data.manifest, self.data.task_spec, sources),
                                target_noise_level(self.data.manifest, self.data.task_spec, targets),
                                source_cases=sources, target_cases=targets)

    def _calibrate_recorrupted_pairs(self) -> None:
        """Settle the recorrupted pairs' noise reduction against the installed linear prior."""
        pairs = self.objective.recorrupted_pairs
        if pairs is None:
            return
        sources, targets = pairs.source_cases, pairs.target_cases
        level, reduction = pairs.calibrate(self.models.generator.prior_forward)
        hu = unit_to_hu(1.0) - unit_to_hu(0.0)
        spec = self.data.task_spec
        self.log(f"recorrupted pairs: {spec['source']} noise {pairs.noise.std * hu:.1f} HU in the flat regions of "
                 f"{len(sources)} volume{'s' if len(sources) != 1 else ''} ({sources[0]}..{sources[-1]}), {level * hu:.1f} HU after the "
                 f"prior; {spec['target']} {pairs.target_noise_level * hu:.1f} HU ({targets[0]}..{targets[-1]}): "
                 f"flat regions keep {1.0 - reduction:.2f} of the noise, edges more (threshold {level * hu:.1f} HU)")

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.models.to_device(tensor, self.config.optim.channels_last)

    # ---------------------------------------------------------------- one step
    def _train_step(self, x: torch.Tensor, y: torch.Tensor,
                    real: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, float]:
        models, objective = self.models, self.objective
        real_x, real_y = real if real is not None else (None, None)
        _set_requires_grad(models.d_phase, False)
        with models.autocast():
            out = models.g_phase(x, y, real_x) if real_x is not None else models.g_phase(x, y)
            loss_g, terms = objective.generator_loss(x, y, out, models.d_x, models.d_y, real_y=real_y)
        self._check_finite("generator", loss_g)
        models.opt_g.zero_grad(set_to_none=True)
        models.scaler.scale(loss_g).backward()
        self._clip_and_step(models.opt_g, models.generator)

        _set_requires_grad(models.d_phase, True)
        inputs_y, inputs_x = objective.discriminator_batches(x, y, out, models.pool_x, models.pool_y)
        with models.autocast():
            scores_y, scores_x = models.d_phase(inputs_y, inputs_x)
        loss_d = objective.discriminator_loss(scores_y, scores_x, x.shape[0])
        self._check_finite("discriminator", loss_d)
        models.opt_d.zero_grad(set_to_none=True)
        models.scaler.scale(loss_d).backward()
        self._clip_and_step(models.opt_d, models.d_phase)
        models.scaler.update()
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
            self.models.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(module.parameters(), self.config.optim.grad_clip)
        self.models.scaler.step(optimizer)

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
        for optimizer in (self.models.opt_g, self.models.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    # ---------------------------------------------------------------- validation
    def validate(self) -> Dict[str, float]:
        """Validation metrics on the held-out patches (see :mod:`RevGANCore.validation`)."""
        metrics = validate(self.models, self.objective, self.data.val_batches, self.config.optim.channels_last)
        metrics.update(validate_real(self.models, self.objective, self.data.real_val_batches,
                                     self.config.optim.channels_last))
        return metrics

    def _preview(self, step: int) -> None:
        every = self.config.logging.preview_every
        if not self.data.val_batches or every <= 0 or not self.dist.is_main:
            return
        from .preview import side_by_side, window_to_uint8, write_png
        from .tensor_filters import on_grid
        from .volume import unit_to_hu

        x, y = self.data.val_batches[0]
        with torch.no_grad(), self.models.autocast():
            fake_y = self.models.generator(self._to_device(x[:1]), "forward").float().cpu()
        x = on_grid(x[:1], y.shape[2:])
        middle = y.shape[2] // 2
        panels = [window_to_uint8(unit_to_hu(t[0, 0, middle].numpy()), level=-600, width=1500)
                  for t in (x, fake_y, y)]
        write_png(self.output_dir / "previews" / f"step_{step:08d}.png", side_by_side(panels))

    # ---------------------------------------------------------------- checkpoints
    def _median_spacing(self, domain: str) -> Optional[Tuple[float, float, float]]:
        """Median voxel spacing (x, y, z) of the training cases' ``domain`` volumes (headers only)."""
        found = [read_spacing(case.files[domain]) for case in self.data.manifest.cases
                 if case.id in self.data.train_ids and domain in case.files]
        found = [spacing for spacing in found if spacing is not None]
        if not found:
            return None
        return tuple(float(np.median(axis)) for axis in zip(*found))  # type: ignore[return-value]

    def _metadata(self, metrics: Dict[str, float]) -> ModelMetadata:
        config, spec = self.config, self.data.task_spec
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
            generator=self.models.generator.config.to_dict(),
            scale_factors_xyz=tuple(factors) if factors else None,
            name=config.name or Path(config.output_dir).name,
            description=f"{config.objective.mode} 3D RevGAN, depth {config.model.generator.depth}, "
                        f"{spec['source']} <-> {spec['target']}",
            training={
                "config": config.to_dict(),
                "iterations_done": self.step,
                "dataset": {"manifest": str(self.data.manifest.path), "train_cases": self.data.train_ids,
                            "val_cases": self.data.val_ids, "real_scans": self.data.real_scans,
                            "real_val_slices": config.data.real.val_slices if self.data.real_scans else None},
                "validation": metrics,
                "best_metric": best_metric_name(config.checkpoint.best_metric, self.objective.paired),
                "device": describe_device(self.device),
                "world_size": self.dist.world_size,
                "git_commit": self.git_commit,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "revgan_version": __version__,
            })

    def save_checkpoint(self, metrics: Optional[Dict[str, float]] = None) -> None:
        if not self.dist.is_main:
            return
        metadata = self._metadata(metrics or {})
        tensors, state = self.models.state({"step": self.step, "best": self.best, "config": self.config.to_dict()})
        self.store.save(self.step, lambda path: save_model(path, self.models.generator, metadata), tensors, state)

    def _save_best(self, metrics: Dict[str, float]) -> None:
        """best.safetensors: the model of the best validation so far (validation cases only)."""
        key = best_metric_name(self.config.checkpoint.best_metric, self.objective.paired)
        if key not in metrics or not self.dist.is_main:
            return
        if is_better(key, metrics[key], self.best):
            self.best = metrics[key]
            save_model(self.output_dir / "best.safetensors", self.models.generator, self._metadata(metrics))

    def _resume(self) -> None:
        files = require_resumable(self.store)
        tensors, state = self.store.read_state(files)
        saved = state.get("config", {})
        current = self.config.to_dict()
        for section in ("model", "objective", "data"):
            if saved.get(section) != current.get(section):
                raise ConfigError(f"--resume: the configuration's [{section}] differs from the run in "
                                  f"{self.output_dir}; resume with the saved config.json")
        generator_state = load_model(files.model, device=self.device).generator.state_dict()
        scalars = self.models.load_state(generator_state, tensors, state)
        self.step = int(scalars["step"])
        self.best = scalars.get("best")
        self.log(f"resumed from {files.model.name} at step {self.step}")

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
        self.git_commit = git_commit()
        self._build()
        if resume:
            self._resume()  # a linear prior comes back with the weights
        elif config.model.generator.prior_taps:
            self.log(install_prior(self.models.generator, self.data.manifest, self.data.task_spec,
                                   self.data.train_ids, self.objective.paired))
        self._calibrate_recorrupted_pairs()
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config.to_dict())
        self.dist.barrier()
        self.metrics_log = MetricsLog(self.output_dir, self.dist.is_main, config.logging.tensorboard,
                                      resume_step=self.step if resume else None)
        self.log(f"training {config.objective.mode} RevGAN (depth {config.model.generator.depth}, "
                 f"ngf {config.model.generator.ngf}) for {config.data.task} on {describe_device(self.device)}"
                 f"{f' x {self.dist.world_size} processes' if self.dist.enabled else ''}; "
                 f"{len(self.data.train_ids)} training cases, {len(self.data.val_ids)} validation cases")
        if self.step == 0:
            start_metrics = self.validate()
            self.metrics_log.write({"step": 0, **start_metrics})
            if start_metrics:
                self.log(f"step 0: val_l1 {start_metrics['val_l1']:.4f}, val_psnr {start_metrics['val_psnr']:.2f} dB "
                         f"(input vs target L1 {start_metrics['val_l1_input']:.4f})")
        status = "finished"
        started, start_step = time.perf_counter(), self.step
        self.models.generator.train()
        with StopRequest() as stop:
            try:
                status = self._loop(stop, started)
            finally:
                self.metrics_log.close()
        return self._finish(status, start_step, time.perf_counter() - started)

    def _loop(self, stop: StopRequest, started: float) -> str:
        config = self.config
        bar = self._progress_bar()
        metrics: Dict[str, float] = {}
        try:
            while self.step < config.optim.iterations:
                lr = self._set_learning_rate(self.step)
                with self._out_of_memory_as_error():
                    x, y = self.data.batch(self.step, config.data.batch_size, self.dist.rank, self.dist.world_size)
                    real = self.data.real_batch(self.step, self.dist.rank, self.dist.world_size)
                    if real is not None:
                        real = (self._to_device(real[0]), self._to_device(real[1]))
                    losses = self._train_step(self._to_device(x), self._to_device(y), real)
                self.step += 1
                row = {"step": self.step, "lr": lr, "seconds": round(time.perf_counter() - started, 2), **losses}
                if self.step % config.checkpoint.validate_every == 0 or self.step == config.optim.iterations:
                    metrics = self.validate()
                    row.update(metrics)
                    self._save_best(metrics)
                    self._preview(self.step)
                if self.step % config.logging.log_every == 0 or "val_l1" in row:
                    self.metrics_log.write(row)
                bar(self.step, config.optim.iterations,
                    " ".join(f"{k}={losses[k]:.3f}" for k in ("g_total", "d_total", "g_l1", "g_cycle", "g_slab")
                             if k in losses))
                stopping = self.dist.broadcast_flag(stop.signal_name is not None)
                if self.step % config.checkpoint.every == 0 or self.step == config.optim.iterations or stopping:
                    self.save_checkpoint(metrics)
                if stopping:
                    self.log(f"\n{stop.signal_name or 'stop'} received: checkpoint saved at step {self.step}; "
                             "continue with --resume")
                    return "interrupted"
        finally:
            bar.close()
        return "finished"

    def _finish(self, status: str, start_step: int, seconds: float) -> dict:
        """The run's summary (also summary.json); ``seconds`` is this process's training time,
        from ``start_step`` (0, or the step a resumed run continued from)."""
        models = self.models
        fingerprints = self.dist.gather_floats(parameter_fingerprint(models.generator)
                                               + parameter_fingerprint(models.d_x) + parameter_fingerprint(models.d_y))
        in_sync = all(np.allclose(f, fingerprints[0], rtol=1e-12, atol=0) for f in fingerprints)
        if not in_sync:
            raise RevGANError(f"distributed training ended with different weights on different ranks: {fingerprints}")
        validations = self.metrics_log.validations()
        latest, best = self.store.latest(), self.output_dir / "best.safetensors"
        summary = {
            "status": status, "step": self.step, "start_step": start_step, "iterations": self.config.optim.iterations,
            "seconds": round(seconds, 2), "device": describe_device(self.device),
            "world_size": self.dist.world_size, "rank": self.dist.rank, "ranks_identical": in_sync,
            "fingerprints": fingerprints,
            "first_validation": validations[0] if validations else None,
            "last_validation": validations[-1] if validations else None,
            "best_metric": best_metric_name(self.config.checkpoint.best_metric, self.objective.paired),
            "best_value": self.best,
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
