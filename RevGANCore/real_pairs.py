"""Super-resolution pairs cut from real thick-slice scans: the scan is its own truth.

A real chest CT has fine pixels in-plane but thick slices, so it has no high-resolution truth
along z. Its in-plane axes are truth enough for a self-supervised pair:

- input: the scan degraded in-plane only (:func:`~RevGANCore.real_degradation.degrade_in_plane`,
  by default the degradation ``revgan bench real`` scores with), on its own coarse grid: the
  real slices, pixels ``factor`` times larger. With a :class:`~RevGANCore.real_degradation.InPlaneFamily`
  (``data.real.degradations``) each patch draws its own degradation, seeded by (seed, epoch,
  index) like its position, so one learned degradation does not become the model's prior;
- target: the scan itself (reconstruction-circle padding replaced by air on both sides).

A generator that upsamples by (fz, fy, fx) inside the network turns an input patch of
(d, h, w) voxels into (fz d, fy h, fx w) voxels on the cell-centred fine grid of
:func:`~RevGANCore.volume.super_resolution_grid`; every block of fz output slices then lies
exactly inside one real slice, so its mean (the slab average) is what the scan measured there.
:meth:`RevGANCore.objectives.Objective.slab_terms` compares the two. The loss teaches in-plane
super-resolution on real anatomy and consistency with the real slabs; it says nothing about
the detail *inside* a slab, which comes from the phantom pairs trained in the same run.

Patches: ``patch_size`` is the generator's fine output patch (as ``data.patch_size``); the
target patch on the real grid is (pz / fz, py, px) voxels and the input (pz / fz, py / fy,
px / fx). The last ``val_slices`` slices of every scan are held out for validation and never
cut into training patches. The held-out benchmark scan (``lung2``) is refused outright.
Validation patches draw from the same family (with their own seed), so the checkpoint is
chosen on the degradations trained for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data import PairedPatchDataset
from .errors import ConfigError
from .field_of_view import padding_mask, without_padding
from .real_degradation import InPlaneFamily, degrade_in_plane
from .volume import Volume
from .volume_io import read_volume

__all__ = ["REGIONS", "resolve_training_scan", "slice_region", "real_pair_target", "real_pair_volumes",
           "slab_patch_size", "RealScanPairs"]

REGIONS = ("train", "validation")
#: Mixed into a patch's seed for its degradation draw, so positions and flips stay those of
#: a run with one fixed degradation.
_DEGRADATION_STREAM = 4099


def resolve_training_scan(scan: str) -> Path:
    """A training scan: "lung1" (the fetched development scan) or a volume file path. The
    held-out benchmark scan is refused, by name and by file name: it is only reported on."""
    from .bench.real import HELD_OUT_SCAN, REAL_SCAN_FILES, resolve_scan

    if str(scan) == HELD_OUT_SCAN or Path(str(scan)).name == REAL_SCAN_FILES[HELD_OUT_SCAN]:
        raise ConfigError(f"data.real.scans: {scan} is the held-out benchmark scan ({HELD_OUT_SCAN}); "
                          "it is never trained on")
    return resolve_scan(scan)


def slice_region(volume: Volume, start: int, stop: int) -> Volume:
    """Slices ``start``..``stop - 1`` of ``volume``, with the geometry that places them."""
    origin = volume.index_to_physical_matrix() @ np.array([0.0, 0.0, float(start), 1.0])
    return Volume(np.ascontiguousarray(volume.array[start:stop]), volume.spacing, tuple(origin[:3]),
                  volume.direction, volume.source)


def _region(volume: Volume, region: str, val_slices: int) -> Volume:
    if region not in REGIONS:
        raise ConfigError(f"region must be one of {REGIONS}, got {region!r}")
    depth = volume.shape[0]
    if not 0 <= val_slices < depth:
        raise ConfigError(f"{volume.source or 'scan'}: data.real.val_slices {val_slices} must leave training "
                          f"slices of its {depth}")
    if region == "train":
        return slice_region(volume, 0, depth - val_slices)
    if val_slices == 0:
        raise ConfigError("data.real.val_slices is 0: no validation region")
    return slice_region(volume, depth - val_slices, depth)


def real_pair_target(scan: Volume, factors_yx: Sequence[int]) -> Volume:
    """The target of one real scan: padding outside the reconstruction circle made air, the
    in-plane sizes cropped at the far end to a multiple of the factors (same origin)."""
    fy, fx = (int(f) for f in factors_yx)
    ny, nx = scan.shape[1] - scan.shape[1] % fy, scan.shape[2] - scan.shape[2] % fx
    if ny < fy or nx < fx:
        raise ConfigError(f"{scan.source or 'scan'}: {scan.shape[2]} x {scan.shape[1]} pixels are too few "
                          f"for in-plane factors {fx} x {fy}")
    target = scan if (ny, nx) == scan.shape[1:] else Volume(  # the far end goes: same origin
        np.ascontiguousarray(scan.array[:, :ny, :nx]), scan.spacing, scan.origin, scan.direction, scan.source)
    padding = padding_mask(target)
    if padding is not None:
        target = without_padding(target, padding)
    return target.with_array(target.array.astype(np.float32, copy=False), scan.source)


def real_pair_volumes(scan: Volume, factors_yx: Sequence[int]) -> Tuple[Volume, Volume]:
    """(input, target) of one real scan: :func:`real_pair_target`, and it degraded in-plane
    by ``factors_yx`` on its own coarse grid (the benchmark's Gaussian)."""
    target = real_pair_target(scan, factors_yx)
    fy, fx = (int(f) for f in factors_yx)
    return degrade_in_plane(target, (fx, fy)), target


def slab_patch_size(patch_size: Sequence[int], factors_zyx: Sequence[int]) -> Tuple[int, int, int]:
    """The target patch on the real grid for a fine output patch: z divided by the z factor."""
    pz, py, px = (int(n) for n in patch_size)
    fz = int(factors_zyx[0])
    if pz % fz:
        raise ConfigError(f"data.patch_size z edge {pz} is not a multiple of the z factor {fz}")
    return (pz // fz, py, px)


class RealScanPairs(PairedPatchDataset):
    """Patches of self-supervised pairs from real scans (see the module documentation).

    ``scans``: Volumes or files; ``factors_zyx``: the generator's upsampling; ``region``:
    "train" (all but the last ``val_slices`` slices) or "validation" (those slices);
    ``family``: the in-plane degradations drawn per patch (default: the benchmark's one).
    Items are those of :class:`~RevGANCore.data.PairedPatchDataset`: "source" (1, d, h/fy,
    w/fx) on the degraded grid, "target" (1, d, h, w) on the scan's grid, their starts in
    voxels of their grids (the source start is the target start divided by (1, fy, fx))."""

    def __init__(self, scans: Sequence, factors_zyx: Sequence[int], patch_size=(32, 64, 64),
                 region: str = "train", val_slices: int = 12, names: Sequence[str] = (),
                 family: Optional[InPlaneFamily] = None, **patch_options) -> None:
        factors = tuple(int(f) for f in factors_zyx)
        if len(factors) != 3 or min(factors) < 1:
            raise ConfigError(f"super-resolution factors must be 3 positive integers (z, y, x), got {factors_zyx!r}")
        self.factors_zyx = factors
        self.region = region
        self.family = family if family is not None else InPlaneFamily()
        banks: List[List[Volume]] = []
        targets: List[Volume] = []
        for scan in scans:
            volume = scan if isinstance(scan, Volume) else read_volume(scan)
            target = real_pair_target(_region(volume, region, int(val_slices)), factors[1:])
            inputs = self.family.degrade(target, factors[1:][::-1])
            banks.append(inputs)
            targets.append(target)
        if not targets:
            raise ConfigError("real-scan pairs need at least one scan")
        ids = list(names) or [v.source or f"scan{i}" for i, v in enumerate(targets)]
        super().__init__([bank[0] for bank in banks], targets, patch_size=slab_patch_size(patch_size, factors),
                         case_ids=ids, source_scale_zyx=(1,) + factors[1:], **patch_options)
        self.input_banks = banks

    def __getitem__(self, index: int) -> Dict[str, object]:
        item = super().__getitem__(index)
        draw = self.family.draw(np.random.default_rng([self.seed, self.epoch, int(index), _DEGRADATION_STREAM]))
        if draw == [(0, 1.0)]:
            return item  # the first member: what the parent cut
        case = int(item["source_case"])
        start = tuple(int(s) for s in item["source_start"])
        flips = self._last_flips
        patch = None
        for member, weight in draw:
            key = ("source", case) if member == 0 else ("source", case, member)  # member 0: the parent's
            loaded = self._source_loader.load(key, self.input_banks[case][member])
            part = self._crop(loaded.unit, start, flips, self.source_patch_size) * float(weight)
            patch = part if patch is None else patch + part
        item["source"] = patch
        return item

    def _flips(self, rng: np.random.Generator) -> Tuple[int, ...]:
        # the parent draws the flips once per item; kept so the blended input gets the same ones
        self._last_flips = super()._flips(rng)
        return self._last_flips
