"""Patch datasets for training: paired and unpaired 3D patches in network units.

Every item is a dict ``{"source": tensor, "target": tensor, "source_case": int,
"target_case": int, "source_start": tensor, "target_start": tensor}``: the patches are
float32, shaped (1, D, H, W), in [-1, 1] (:func:`~RevGANCore.volume.hu_to_unit`, window
[-1150, 350] HU by default; with ``clip_to_window=False``, for residual generators, HU beyond
the window map linearly beyond [-1, 1]); the starts are the patches' first voxel (z, y, x) in their
(resampled) case volume, as int64 tensors.

- :class:`PairedPatchDataset`: the same region of two domains of one case (kernel pairs;
  super-resolution, where the low-resolution volume is first resampled onto the
  high-resolution grid with a B-spline, once per case, and cached).
- :class:`UnpairedPatchDataset`: a source patch and a target patch from different cases.

Sampling is foreground-biased (a chosen fraction of patches is centred near a body voxel:
denser than -500 HU, or enclosed by such tissue in its slice, as the lungs are) with random
flips, and is a pure function of (seed, epoch, index): the same
index always gives the same patch, so :func:`batch_positions` can shard the indices and an
interrupted run can resume exactly. Call ``set_epoch(e)`` each epoch for fresh patches.

Speed on CPU: PyTorch's fast (oneDNN) Conv3d path is taken only when
batch x channels x depth x height > 20480 for a 3x3x3 convolution; below that it falls
back to a ~20x slower implementation. Choose patch and batch so every convolution clears
it (e.g. 16 channels on 32x64x64 patches: 1 x 16 x 32 x 64 = 32768 > 20480);
:func:`conv3d_fast_path` checks a configuration.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from .errors import ConfigError
from .manifest import load_manifest, pick_cases  # noqa: F401  (load_manifest re-exported)
from .volume import DEFAULT_HU_WINDOW, Volume, hu_to_unit, resample_to_grid, super_resolution_grid
from .volume_io import VOLUME_SUFFIXES, read_volume, volume_suffix

#: PyTorch's threshold for the fast CPU Conv3d path (batch * channels * depth * height).
FAST_CONV3D_THRESHOLD = 20480
#: Voxels above this HU count as body for foreground-biased sampling.
FOREGROUND_HU = -500.0
#: Value used to pad volumes smaller than a patch: air.
PAD_HU = -1024.0

VolumeLike = Union[Volume, str, Path]


def conv3d_fast_path(batch: int, channels: int, depth: int, height: int) -> bool:
    """Whether a 3x3x3 Conv3d on (batch, channels, depth, height, width) takes PyTorch's
    fast CPU path (batch * channels * depth * height > 20480)."""
    return batch * channels * depth * height > FAST_CONV3D_THRESHOLD


def _checked_patch_size(patch_size) -> Tuple[int, int, int]:
    try:
        size = tuple(int(n) for n in patch_size)
    except (TypeError, ValueError):
        raise ConfigError(f"patch size must be 3 integers (D, H, W), got {patch_size!r}") from None
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"patch size must be 3 positive integers (D, H, W), got {patch_size!r}")
    return size  # type: ignore[return-value]


@dataclass
class _LoadedCase:
    unit: np.ndarray            # float32, network units, padded to at least the patch size
    foreground: np.ndarray      # (M, 3) int32 body voxel indices (a subsample)


class _CaseLoader:
    """Loads one volume (file or Volume), optionally resamples it onto a grid, converts to
    network units; keeps up to ``capacity`` loaded cases (None: all)."""

    def __init__(self, patch_size: Tuple[int, int, int], window, capacity: Optional[int],
                 clip_to_window: bool = True) -> None:
        self.clip_to_window = clip_to_window
        self.patch_size = patch_size
        self.window = window
        self.capacity = capacity
        self.cache: "OrderedDict[tuple, _LoadedCase]" = OrderedDict()

    def load(self, key: tuple, volume: VolumeLike, grid_of: Optional[VolumeLike] = None,
             factors_xyz: Optional[Sequence[int]] = None, interpolation: str = "bspline") -> _LoadedCase:
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        image = _as_volume(volume)
        grid = None
        if grid_of is not None:
            grid = _as_volume(grid_of).grid
        elif factors_xyz is not None:
            grid = super_resolution_grid(image, factors_xyz)
        if grid is not None and not grid.same_as(image.grid):
            image = resample_to_grid(image, grid, interpolation=interpolation)
        loaded = self._prepare(image)
        self.cache[key] = loaded
        if self.capacity is not None:
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return loaded

    def _prepare(self, image: Volume) -> _LoadedCase:
        hu = image.array
        pads = [(0, max(0, p - n)) for p, n in zip(self.patch_size, hu.shape)]
        if any(after for _, after in pads):
            hu = np.pad(hu, pads, mode="constant", constant_values=PAD_HU)
        unit = hu_to_unit(np.ascontiguousarray(hu, dtype=np.float32), self.window, clip=self.clip_to_window)
        body = body_mask(hu)
        # A lattice subsample of the body keeps memory small on large volumes.
        stride = max(1, int(round((body.size / 200_000) ** (1 / 3))))
        coords = np.argwhere(body[::stride, ::stride, ::stride]).astype(np.int32) * stride
        return _LoadedCase(unit, coords)


def _span(mask: np.ndarray, axis: int) -> np.ndarray:
    """True between the first and the last True along ``axis`` (inclusive)."""
    n = mask.shape[axis]
    index = np.arange(n).reshape([-1 if a == axis else 1 for a in range(mask.ndim)])
    any_true = mask.any(axis=axis, keepdims=True)
    first = np.argmax(mask, axis=axis).reshape(any_true.shape)
    last = n - 1 - np.argmax(np.flip(mask, axis=axis), axis=axis).reshape(any_true.shape)
    return any_true & (index >= first) & (index <= last)


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Voxels inside the body: tissue denser than -500 HU, with what it encloses in each
    axial slice (lungs, airways) filled in by row and column spans."""
    dense = hu > FOREGROUND_HU
    return dense | (_span(dense, 1) & _span(dense, 2))


def _as_volume(volume: VolumeLike) -> Volume:
    return volume if isinstance(volume, Volume) else read_volume(volume)


def volume_shape(volume: VolumeLike) -> Tuple[int, int, int]:
    """Voxel counts (z, y, x) of a Volume or a volume file, from the file's header where it
    has one (no voxel is read); anything else goes through read_volume, which words errors."""
    if not isinstance(volume, Volume) and Path(volume).is_file():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(volume))
        try:
            reader.ReadImageInformation()
            size = reader.GetSize()
        except RuntimeError:
            size = ()
        if len(size) == 3:
            return (int(size[2]), int(size[1]), int(size[0]))
    return tuple(_as_volume(volume).array.shape)  # type: ignore[return-value]


def _fits(shape: Sequence[int], patch: Sequence[int]) -> bool:
    return all(n >= p for n, p in zip(shape, patch))


class _PatchDataset(torch.utils.data.Dataset):
    """Shared sampling machinery of the patch datasets (torch map-style Datasets)."""

    def __init__(self, patch_size, samples_per_epoch: int, seed: int, flip_axes: Sequence[int],
                 foreground_fraction: float, window, max_cached_cases: Optional[int],
                 clip_to_window: bool = True, source_scale_zyx: Optional[Sequence[int]] = None) -> None:
        self.patch_size = _checked_patch_size(patch_size)
        # Generators that upsample inside the network take the source on its own, coarser
        # grid: its patches are cut there, patch_size / scale voxels, at start / scale.
        self.source_scale = tuple(int(f) for f in source_scale_zyx) if source_scale_zyx is not None else None
        if self.source_scale is not None:
            if len(self.source_scale) != 3 or min(self.source_scale) < 1:
                raise ConfigError(f"source scale must be 3 positive integers (z, y, x), got {source_scale_zyx!r}")
            if any(p % f for p, f in zip(self.patch_size, self.source_scale)):
                raise ConfigError(f"patch size {self.patch_size} (z, y, x) is not divisible by the "
                                  f"super-resolution factors {self.source_scale} (z, y, x)")
        self.source_patch_size = (tuple(p // f for p, f in zip(self.patch_size, self.source_scale))
                                  if self.source_scale is not None else self.patch_size)
        if int(samples_per_epoch) < 1:
            raise ConfigError(f"samples_per_epoch must be at least 1, got {samples_per_epoch}")
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ConfigError(f"foreground_fraction must be within [0, 1], got {foreground_fraction}")
        axes = tuple(int(a) for a in flip_axes)
        if any(a not in (0, 1, 2) for a in axes):
            raise ConfigError(f"flip axes are patch axes 0 (z), 1 (y), 2 (x); got {tuple(flip_axes)}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.flip_axes = axes
        self.foreground_fraction = float(foreground_fraction)
        self.window = window
        self.epoch = 0
        self._loader = _CaseLoader(self.patch_size, window, max_cached_cases, clip_to_window)
        self._source_loader = (_CaseLoader(self.source_patch_size, window, max_cached_cases, clip_to_window)
                               if self.source_scale is not None else self._loader)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw a different set of patches (like DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"patch index {index} out of range 0..{self.samples_per_epoch - 1}")
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _start(self, rng: np.random.Generator, case: _LoadedCase, patch_size=None,
               multiple_of=(1, 1, 1)) -> Tuple[int, int, int]:
        patch_size = patch_size or self.patch_size
        shape = case.unit.shape
        highest = [n - p for n, p in zip(shape, patch_size)]
        use_body = len(case.foreground) > 0 and rng.random() < self.foreground_fraction
        if use_body:
            centre = case.foreground[rng.integers(len(case.foreground))]
            start = [int(c) - p // 2 for c, p in zip(centre, patch_size)]
        else:
            start = [int(rng.integers(0, h + 1)) for h in highest]
        start = [min(max(s, 0), h) for s, h in zip(start, highest)]
        return tuple(s - s % m for s, m in zip(start, multiple_of))  # type: ignore[return-value]

    def _crop(self, unit: np.ndarray, start, flips, patch_size=None) -> torch.Tensor:
        region = tuple(slice(s, s + p) for s, p in zip(start, patch_size or self.patch_size))
        patch = unit[region]
        if flips:
            patch = np.flip(patch, axis=flips)
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]

    def _flips(self, rng: np.random.Generator) -> Tuple[int, ...]:
        draws = rng.random(len(self.flip_axes))
        return tuple(a for a, d in zip(self.flip_axes, draws) if d < 0.5)

    def grid_shapes(self) -> Dict[str, List[Tuple[int, int, int]]]:
        """Shapes (z, y, x) of the volumes patches are cut from, per side ("source", "target"),
        on the grid they are cropped on (after any resampling), before padding."""
        raise NotImplementedError

    def check_patch_fits(self, setting: str = "patch size") -> None:
        """Refuse a patch larger than every volume of a side: its patches would be mostly air
        padding, and training would run without learning anything useful."""
        for side, shapes in self.grid_shapes().items():
            if shapes and not any(_fits(shape, self.patch_size) for shape in shapes):
                largest = tuple(max(axis) for axis in zip(*shapes))
                raise ConfigError(f"{setting} {self.patch_size} (z, y, x) is larger than every {side} volume "
                                  f"({len(shapes)} volumes, at most {largest} voxels); choose a patch that fits")


class PairedPatchDataset(_PatchDataset):
    """Aligned patches of two domains of the same cases.

    ``sources[i]`` and ``targets[i]`` (Volumes or file paths) are one case. The target grid
    is the reference: a source with another geometry (e.g. the low-resolution volume) is
    resampled onto it once (B-spline by default) and cached. Both patches get the same
    region and the same flips."""

    def __init__(self, sources: Sequence[VolumeLike], targets: Sequence[VolumeLike], patch_size=(32, 64, 64),
                 samples_per_epoch: int = 256, seed: int = 0, flip_axes: Sequence[int] = (0, 1, 2),
                 foreground_fraction: float = 0.9, window=DEFAULT_HU_WINDOW, interpolation: str = "bspline",
                 case_ids: Optional[Sequence[str]] = None, max_cached_cases: Optional[int] = None,
                 clip_to_window: bool = True, source_scale_zyx: Optional[Sequence[int]] = None) -> None:
        super().__init__(patch_size, samples_per_epoch, seed, flip_axes, foreground_fraction, window,
                         max_cached_cases, clip_to_window, source_scale_zyx)
        if len(sources) != len(targets) or not sources:
            raise ConfigError(f"paired datasets need as many sources as targets (at least one); got "
                              f"{len(sources)} and {len(targets)}")
        self.sources = list(sources)
        self.targets = list(targets)
        self.interpolation = interpolation
        self.case_ids = list(case_ids) if case_ids is not None else [str(i) for i in range(len(sources))]

    def grid_shapes(self) -> Dict[str, List[Tuple[int, int, int]]]:
        return {"target": [volume_shape(target) for target in self.targets]}  # sources go onto these grids

    def case(self, index: int) -> Tuple[_LoadedCase, _LoadedCase]:
        target = self._loader.load(("target", index), self.targets[index])
        if self.source_scale is not None:
            source = self._source_loader.load(("source", index), self.sources[index])
            expected = tuple(n * f for n, f in zip(source.unit.shape, self.source_scale))
            if expected != target.unit.shape:
                raise ConfigError(f"case {self.case_ids[index]}: the source grid {source.unit.shape} (z, y, x) times "
                                  f"the factors {self.source_scale} is not the target grid {target.unit.shape}")
            return source, target
        source = self._loader.load(("source", index), self.sources[index], grid_of=self.targets[index],
                                   interpolation=self.interpolation)
        if source.unit.shape != target.unit.shape:
            raise ConfigError(f"case {self.case_ids[index]}: source and target grids differ after resampling")
        return source, target

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._rng(index)
        case_index = int(rng.integers(len(self.targets)))
        source, target = self.case(case_index)
        scale = self.source_scale or (1, 1, 1)
        start = self._start(rng, target, multiple_of=scale)
        source_start = tuple(s // f for s, f in zip(start, scale))
        flips = self._flips(rng)
        return {"source": self._crop(source.unit, source_start, flips, self.source_patch_size),
                "target": self._crop(target.unit, start, flips),
                "source_case": case_index, "target_case": case_index,
                "source_start": torch.tensor(source_start, dtype=torch.int64),
                "target_start": torch.tensor(start, dtype=torch.int64)}


class UnpairedPatchDataset(_PatchDataset):
    """A source-domain patch and a target-domain patch from different cases.

    ``source_ids``/``target_ids`` name the cases; when both lists share ids, the target
    case is never the source case (as long as another exists), so no accidental pairs
    are learned. With ``source_factors_xyz`` each source volume is first resampled onto
    its own super-resolution grid (low-resolution inputs at the target's voxel size)."""

    def __init__(self, sources: Sequence[VolumeLike], targets: Sequence[VolumeLike], patch_size=(32, 64, 64),
                 samples_per_epoch: int = 256, seed: int = 0, flip_axes: Sequence[int] = (0, 1, 2),
                 foreground_fraction: float = 0.9, window=DEFAULT_HU_WINDOW,
                 source_factors_xyz: Optional[Sequence[int]] = None, interpolation: str = "bspline",
                 source_ids: Optional[Sequence[str]] = None, target_ids: Optional[Sequence[str]] = None,
                 max_cached_cases: Optional[int] = None, clip_to_window: bool = True,
                 source_scale_zyx: Optional[Sequence[int]] = None) -> None:
        super().__init__(patch_size, samples_per_epoch, seed, flip_axes, foreground_fraction, window,
                         max_cached_cases, clip_to_window, source_scale_zyx)
        if not sources or not targets:
            raise ConfigError(f"unpaired datasets need at least one source and one target volume; got "
                              f"{len(sources)} and {len(targets)}")
        self.sources = list(sources)
        self.targets = list(targets)
        self.source_factors_xyz = tuple(source_factors_xyz) if source_factors_xyz is not None else None
        self.interpolation = interpolation
        self.source_ids = list(source_ids) if source_ids is not None else [f"source{i}" for i in range(len(sources))]
        self.target_ids = list(target_ids) if target_ids is not None else [f"target{i}" for i in range(len(targets))]

    def grid_shapes(self) -> Dict[str, List[Tuple[int, int, int]]]:
        factors_zyx = self.source_factors_xyz[::-1] if self.source_factors_xyz else (1, 1, 1)
        if self.source_scale is not None:  # cut on its own grid, in patches scaled alike: compare scaled
            factors_zyx = self.source_scale
        sources = [tuple(int(n * f) for n, f in zip(volume_shape(source), factors_zyx)) for source in self.sources]
        return {"source": sources, "target": [volume_shape(target) for target in self.targets]}

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._rng(index)
        source_index = int(rng.integers(len(self.sources)))
        others = [i for i, name in enumerate(self.target_ids) if name != self.source_ids[source_index]]
        choices = others or list(range(len(self.targets)))
        target_index = int(choices[int(rng.integers(len(choices)))])
        if self.source_scale is not None:
            source = self._source_loader.load(("source", source_index), self.sources[source_index])
        else:
            source = self._loader.load(("source", source_index), self.sources[source_index],
                                       factors_xyz=self.source_factors_xyz, interpolation=self.interpolation)
        target = self._loader.load(("target", target_index), self.targets[target_index])
        source_start = self._start(rng, source, self.source_patch_size)
        source_patch = self._crop(source.unit, source_start, self._flips(rng), self.source_patch_size)
        target_start = self._start(rng, target)
        target_patch = self._crop(target.unit, target_start, self._flips(rng))
        return {"source": source_patch, "target": target_patch, "source_case": source_index,
                "target_case": target_index, "source_start": torch.tensor(source_start, dtype=torch.int64),
                "target_start": torch.tensor(target_start, dtype=torch.int64)}


def batch_positions(step: int, batch_size: int, rank: int = 0, world_size: int = 1,
                    samples_per_epoch: int = 256) -> List[Tuple[int, int]]:
    """(epoch, index) of each patch in the batch of ``step`` for process ``rank``: how
    training shards its data. The ranks of a step take consecutive runs of the global batch,
    so ``world_size`` processes see exactly the patches one process would with a batch of
    ``world_size * batch_size``, and a resumed run continues the sequence."""
    first = (step * world_size + rank) * batch_size
    return [divmod(first + offset, samples_per_epoch) for offset in range(batch_size)]


# =========================================================================== builders


def _split(case_ids: List[str], validation_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be within [0, 1), got {validation_fraction}")
    if validation_fraction == 0.0:
        return case_ids, []
    if len(case_ids) < 2:
        raise ConfigError(f"a validation split needs at least 2 cases, got {len(case_ids)}")
    order = np.random.default_rng([seed, 0x73706C74]).permutation(len(case_ids))
    count = min(max(1, int(round(validation_fraction * len(case_ids)))), len(case_ids) - 1)
    validation = sorted(case_ids[i] for i in order[:count])
    return [c for c in case_ids if c not in validation], validation


def datasets_from_manifest(manifest_path, task: str = "super_resolution", paired: bool = True,
                           case_ids: Optional[Sequence[str]] = None, validation_fraction: float = 0.0,
                           seed: int = 0, **patch_options) -> Dict[str, _PatchDataset]:
    """Training (and validation) patch datasets for a manifest task ("super_resolution":
    lr -> hr; "kernel": sharp -> smooth; or any task the manifest defines).

    Returns ``{"train": dataset}`` plus ``"validation"`` when ``validation_fraction`` > 0
    (a seeded split by case). ``case_ids`` restricts the cases; ``patch_options`` go to
    the dataset classes (patch_size, samples_per_epoch, flip_axes, foreground_fraction,
    window, max_cached_cases, clip_to_window), except ``source_on_own_grid``: True keeps a
    super-resolution source on its own coarse grid (for generators that upsample inside the
    network) instead of resampling it onto the target's."""
    own_grid = bool(patch_options.pop("source_on_own_grid", False))
    manifest = load_manifest(manifest_path)
    spec = manifest.task(task)
    source_domain, target_domain = spec["source"], spec["target"]
    factors = spec.get("factors_xyz")
    if own_grid and factors:
        patch_options["source_scale_zyx"] = tuple(factors)[::-1]
    cases = pick_cases(manifest, case_ids)
    needed = (source_domain, target_domain)
    usable = [c for c in cases if all(d in c.files for d in needed)] if paired else [
        c for c in cases if any(d in c.files for d in needed)]
    if not usable:
        raise ConfigError(f"{manifest.path}: no case has {'both' if paired else 'either'} of the domains "
                          f"{source_domain!r} and {target_domain!r}")
    train_ids, validation_ids = _split([c.id for c in usable], validation_fraction, seed)
    result = {"train": _build(usable, train_ids, source_domain, target_domain, paired, factors, seed, patch_options)}
    if validation_ids:
        result["validation"] = _build(usable, validation_ids, source_domain, target_domain, paired, factors,
                                      seed + 1, patch_options)
    return result


def _build(cases, ids, source_domain, target_domain, paired, factors, seed, patch_options) -> _PatchDataset:
    chosen = [c for c in cases if c.id in ids]
    if paired:
        return PairedPatchDataset([c.files[source_domain] for c in chosen], [c.files[target_domain] for c in chosen],
                                  seed=seed, case_ids=[c.id for c in chosen], **patch_options)
    with_source = [c for c in chosen if source_domain in c.files]
    with_target = [c for c in chosen if target_domain in c.files]
    if not with_source or not with_target:
        raise ConfigError(f"cases {ids} lack volumes of {source_domain!r} or {target_domain!r}")
    own_grid = patch_options.get("source_scale_zyx") is not None
    return UnpairedPatchDataset([c.files[source_domain] for c in with_source],
                                [c.files[target_domain] for c in with_target], seed=seed,
                                source_factors_xyz=None if own_grid else factors, source_ids=[c.id for c in with_source],
                                target_ids=[c.id for c in with_target], **patch_options)


def volume_files(folder) -> List[Path]:
    """Volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) directly in ``folder``, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder")
    found = sorted(p for p in root.iterdir() if p.is_file() and volume_suffix(p))
    if not found:
        raise ConfigError(f"{root}: holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
    return found


def _stem(path: Path) -> str:
    return path.name[:-len(volume_suffix(path))]


def datasets_from_folders(source_dir, target_dir, paired: bool = False,
                          source_factors_xyz: Optional[Sequence[int]] = None, seed: int = 0,
                          **patch_options) -> _PatchDataset:
    """A dataset from two folders of the user's own volumes. Paired: files are matched by
    name (without extension) and every file needs a partner; unpaired: all files are used
    (``source_factors_xyz`` resamples low-resolution sources onto their fine grid)."""
    sources = volume_files(source_dir)
    targets = volume_files(target_dir)
    if paired:
        by_name = {_stem(p): p for p in targets}
        unmatched = [p.name for p in sources if _stem(p) not in by_name]
        unmatched += [p.name for p in targets if _stem(p) not in {_stem(s) for s in sources}]
        if unmatched:
            raise ConfigError(f"paired folders {source_dir} and {target_dir}: files without a partner of the same "
                              f"name: {', '.join(unmatched)}")
        names = [_stem(p) for p in sources]
        return PairedPatchDataset(sources, [by_name[n] for n in names], seed=seed, case_ids=names, **patch_options)
    return UnpairedPatchDataset(sources, targets, seed=seed, source_factors_xyz=source_factors_xyz,
                                source_ids=[_stem(p) for p in sources], target_ids=[_stem(p) for p in targets],
                                **patch_options)
