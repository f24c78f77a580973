"""What one training run reads: its manifest (generated phantoms on first use when the
configuration asks for them), the training and validation cases, the patches of each step,
and the held-out validation patches; with ``data.real.scans``, also the real-scan pairs
(:mod:`RevGANCore.real_pairs`) of each step and their held-out validation patches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from .config import TrainConfig, generator_for_task
from .generator_config import GeneratorConfig
from .data import batch_positions
from .errors import ConfigError

Log = Callable[[str], None]
Batch = Tuple[torch.Tensor, torch.Tensor]


#: Validation patches are drawn with this seed whatever the training seed, so runs that differ
#: only in their seed are compared on the same patches (the Table-2 protocol ships the seed
#: with the best validation value).
VALIDATION_PATCH_SEED = 7919


def ensure_training_manifest(config: TrainConfig, log: Log, is_main: bool = True,
                             barrier: Callable[[], None] = lambda: None) -> Path:
    """The run's manifest path; generates the configured phantom set (on the main process)
    when it is missing, and refuses a folder that holds another generated set."""
    data = config.data
    manifest = Path(data.manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.json"
    generate = data.generate
    if manifest.exists() and generate.cases > 0:
        from .phantom_dataset import describe_phantom_manifest, phantom_world

        held = describe_phantom_manifest(manifest)
        if held:
            held["world"] = phantom_world(manifest)
        wanted = {"cases": generate.cases, "seed": generate.seed, "shape": tuple(generate.shape),
                  "world": generate.world}
        if held != wanted:
            raise ConfigError(f"{manifest} holds {held or 'no generated phantom set'}, but the configuration "
                              f"asks for {wanted}; point data.manifest at another folder")
    if not manifest.exists():
        if generate.cases < 1:
            raise ConfigError(f"data.manifest not found: {manifest} (create it with `revgan phantom` or "
                              "`revgan dataset`, or set data.generate.cases to generate phantoms)")
        if is_main:
            from .phantom_dataset import PhantomRecipe, write_phantom_dataset

            log(f"generating {generate.cases} {generate.world}-world phantom cases (seed {generate.seed}, shape "
                f"{tuple(generate.shape)}) into {manifest.parent}")
            write_phantom_dataset(manifest.parent, cases=generate.cases, seed=generate.seed,
                                  recipe=PhantomRecipe(shape=tuple(generate.shape), world=generate.world),
                                  overwrite=True)
        barrier()
    return manifest


@dataclass
class TrainingData:
    manifest: object            # RevGANCore.manifest.Manifest
    task_spec: dict             # the manifest's entry for the task: source, target, factors_xyz
    train_set: object           # a patch dataset (data.py)
    val_batches: List[Batch]
    train_ids: List[str]
    val_ids: List[str]
    generator_config: GeneratorConfig  # the configured one, with the task's in-network upsampling
    real_set: Optional[object] = None  # real_pairs.RealScanPairs, or None
    real_val_batches: List[Batch] = field(default_factory=list)
    real_batch_size: int = 0
    real_scans: List[str] = field(default_factory=list)

    @property
    def factors_zyx(self) -> Optional[Tuple[int, int, int]]:
        factors = self.task_spec.get("factors_xyz")
        return tuple(int(f) for f in factors[::-1]) if factors else None  # type: ignore[return-value]

    def batch(self, step: int, batch_size: int, rank: int, world_size: int) -> Batch:
        """The batch of ``step`` for ``rank``: a pure function of (seed, step, rank), so resumed
        and multi-process runs see exactly the patches a single run would."""
        return _stacked(self.train_set, step, batch_size, rank, world_size)

    def real_batch(self, step: int, rank: int, world_size: int) -> Optional[Batch]:
        """The real-scan pairs of ``step`` for ``rank`` (None without real scans), drawn
        like :meth:`batch`."""
        if self.real_set is None:
            return None
        return _stacked(self.real_set, step, self.real_batch_size, rank, world_size)


def _stacked(dataset, step: int, batch_size: int, rank: int, world_size: int) -> Batch:
    sources, targets = [], []
    for epoch, index in batch_positions(step, batch_size, rank, world_size, len(dataset)):
        dataset.set_epoch(epoch)
        item = dataset[index]
        sources.append(item["source"])
        targets.append(item["target"])
    return torch.stack(sources), torch.stack(targets)


def _batches(dataset, count: int, batch_size: int) -> List[Batch]:
    items = [dataset[i] for i in range(count)]
    return [(torch.stack([it["source"] for it in items[start:start + batch_size]]),
             torch.stack([it["target"] for it in items[start:start + batch_size]]))
            for start in range(0, len(items), batch_size)]


def load_training_data(config: TrainConfig, manifest_path: Path, world_size: int = 1) -> TrainingData:
    """Training patches (paired or unpaired, as the objective needs) and held-out validation
    patches (always read as pairs of one region, so paired metrics can be logged too)."""
    from .data import datasets_from_manifest, load_manifest

    data, paired = config.data, config.objective.mode == "paired"
    manifest = load_manifest(manifest_path)
    spec = manifest.task(data.task)
    generator = generator_for_task(config.model.generator, data.task, spec.get("factors_xyz"))
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
                 samples_per_epoch=max(256, data.batch_size * world_size * 16),
                 # Residual generators learn unclipped HU (bone beyond the window survives);
                 # tanh generators are bounded to the window, as in the seed paper.
                 clip_to_window=not config.model.generator.residual,
                 # a generator that upsamples inside takes the source on its own coarse grid
                 source_on_own_grid=generator.upscale_zyx != (1, 1, 1))
    train_set = datasets_from_manifest(manifest_path, task=data.task, paired=paired, case_ids=train_ids,
                                       seed=config.seed, **patch)["train"]
    train_set.check_patch_fits(f"{manifest.path}: data.patch_size")
    val_batches: List[Batch] = []
    if val_ids:
        val_set = datasets_from_manifest(manifest_path, task=data.task, paired=True, case_ids=val_ids,
                                         seed=VALIDATION_PATCH_SEED, **patch)["train"]
        val_batches = _batches(val_set, data.val_patches, data.batch_size)
    training = TrainingData(manifest, spec, train_set, val_batches, train_ids, val_ids, generator)
    if data.real.scans:
        _add_real_pairs(training, config, patch)
    return training


def _add_real_pairs(training: TrainingData, config: TrainConfig, patch: dict) -> None:
    """Real-scan pairs for the slab term: training patches from all but the last
    ``data.real.val_slices`` slices of each scan, validation patches from those."""
    from .real_pairs import RealScanPairs, resolve_training_scan

    data, real = config.data, config.data.real
    factors = training.generator_config.upscale_zyx
    if factors == (1, 1, 1):
        raise ConfigError("data.real.scans need a generator that upsamples inside the network "
                          "(model.generator.architecture = \"resize\")")
    paths = [resolve_training_scan(scan) for scan in real.scans]
    options = {key: patch[key] for key in ("foreground_fraction", "samples_per_epoch", "clip_to_window")}
    names = [str(scan) for scan in real.scans]
    family = real.family()
    training.real_set = RealScanPairs(paths, factors, data.patch_size, "train", real.val_slices, names=names,
                                      family=family, seed=config.seed + 104729, **options)
    training.real_set.check_patch_fits("data.patch_size (real scans)")
    training.real_batch_size = real.batch_size or data.batch_size
    training.real_scans = names
    if real.val_slices > 0:
        val_set = RealScanPairs(paths, factors, data.patch_size, "validation", real.val_slices, names=names,
                                family=family, seed=VALIDATION_PATCH_SEED, **options)
        training.real_val_batches = _batches(val_set, data.val_patches, data.batch_size)
