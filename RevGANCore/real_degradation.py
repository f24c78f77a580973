"""A real scan made coarser in-plane, and a finer prediction brought back onto the scan's slabs.

Real thick-slice CT has no high-resolution truth along z, but its in-plane axes are fine. So a
real scan is evaluated (and can be trained on) by degrading it *in-plane only* and keeping its
real slices as the low-resolution z:

- :func:`degrade_in_plane`: a Gaussian in-plane blur whose FWHM is the new pixel size
  (``factor`` times the scan's), then decimation by ``factor`` with each coarse sample at
  the centre of the fine pixels it replaces (:func:`~RevGANCore.degradations.low_resolution`
  with a z factor of 1). That is what a reconstruction onto a coarser pixel grid with a
  correspondingly smoother kernel gives: the scan's own kernel MTF times a Gaussian whose
  MTF is 0.5 at 0.47 / (new pixel) cycles/mm, so little above the new Nyquist frequency
  survives to alias. The coarse grid covers the same box (``low_resolution_grid``).
  Reconstruction-circle padding (<= -1500 HU) is replaced by air first, so the blur does not
  smear it into the body.
- :func:`slab_average`: a prediction on a finer z grid (e.g. 1.25 mm) averaged over each
  slab of the reference scan (e.g. 5 mm), weighted by how much of each predicted slice
  lies inside the slab. The weights come from both grids' geometry (slice centres and
  spacings in millimetres), not from an assumed factor, so any z factor, offset or crop is
  scored correctly; a prediction whose slab averages equal the scan scores perfectly. The
  in-plane grids must be the same. Overlaps are rounded to 1e-9 of a slab, so a slice that
  lies wholly inside a slab gets an exact weight.

Other in-plane degradations (``degradation=``): ``"gaussian"`` with ``fwhm_scale`` (the FWHM
as a multiple of the new pixel; 1 is the default above), and ``"box"``: each coarse pixel the
plain mean of the ``factor`` x ``factor`` fine pixels it covers (pixel binning; sharper than
the Gaussian, and it aliases). :class:`InPlaneFamily` is a random family of these for
training (``data.real.degradations``, docs/training.md): each patch draws one member,
seeded, and since every member is a linear filter of the same scan followed by the same
decimation, a weighted sum of members is itself such a degradation (a blended blur kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .degradations import FWHM_PER_SIGMA, low_resolution
from .errors import ConfigError, VolumeError
from .field_of_view import padding_mask, without_padding
from .volume import Grid, Volume, low_resolution_grid

__all__ = ["IN_PLANE_DEGRADATIONS", "FAMILY_KINDS", "InPlaneFamily", "degrade_in_plane", "in_plane_fwhm_mm",
           "slab_weights", "slab_average", "FWHM_PER_SIGMA"]

#: What :func:`degrade_in_plane` can apply.
IN_PLANE_DEGRADATIONS = ("gaussian", "box")
#: What a training family draws from, per patch: a Gaussian (FWHM from the range), box
#: binning, or a random blend of the two.
FAMILY_KINDS = ("gaussian", "box", "mixture")
#: Largest Gaussian FWHM a family may ask for, in new pixels (beyond it the input is mush).
MAX_FWHM_SCALE = 3.0
#: Spacing of the precomputed Gaussian levels of a family, in new pixels: a FWHM between two
#: levels is realised by blending their neighbouring degraded scans.
FWHM_LEVEL_STEP = 0.125

_OVERLAP_DECIMALS = 9


def in_plane_fwhm_mm(volume: Volume, factors_xy: Sequence[int] = (2, 2), fwhm_scale: float = 1.0) -> tuple:
    """The Gaussian FWHM (mm, x and y) :func:`degrade_in_plane` uses: ``fwhm_scale`` new pixels."""
    return tuple(float(fwhm_scale) * float(f) * float(s) for f, s in zip(factors_xy, volume.spacing[:2]))


def describe_degradation(degradation: str = "gaussian", fwhm_scale: float = 1.0) -> str:
    """One line for reports: what :func:`degrade_in_plane` does with these settings."""
    if degradation == "box":
        return "box binning (each coarse pixel the mean of the fine pixels it covers); real slices kept"
    scale = "" if fwhm_scale == 1.0 else f"{fwhm_scale:g} x "
    return f"Gaussian in-plane blur (FWHM = {scale}new pixel size), then decimation; real slices kept"


def degrade_in_plane(volume: Volume, factors_xy: Sequence[int] = (2, 2), degradation: str = "gaussian",
                     fwhm_scale: float = 1.0) -> Volume:
    """``volume`` on a grid ``factors_xy`` times coarser in-plane, same slices (see the
    module documentation). In-plane sizes must be divisible by the factors."""
    fx, fy = (int(f) for f in factors_xy)
    if degradation not in IN_PLANE_DEGRADATIONS:
        raise ConfigError(f"in-plane degradation must be one of {IN_PLANE_DEGRADATIONS}, got {degradation!r}")
    if not 0.0 < float(fwhm_scale) <= MAX_FWHM_SCALE:
        raise ConfigError(f"in-plane FWHM scale must be in (0, {MAX_FWHM_SCALE:g}] new pixels, got {fwhm_scale}")
    if volume.shape[2] % fx or volume.shape[1] % fy:
        raise VolumeError(f"{volume.source or 'volume'}: in-plane size {volume.shape[2]} x {volume.shape[1]} is not "
                          f"divisible by the factors {fx} x {fy}; crop it first")
    padding = padding_mask(volume)
    clean = volume if padding is None else without_padding(volume, padding)
    if degradation == "box":
        coarse = _binned(clean, fx, fy)
    else:
        fwhm_x, fwhm_y = in_plane_fwhm_mm(volume, (fx, fy), fwhm_scale)
        square = abs(fwhm_x - fwhm_y) <= 1e-6 * max(fwhm_x, fwhm_y)
        if not square and fwhm_scale != 1.0:
            raise VolumeError(f"{volume.source or 'volume'}: a FWHM scale other than 1 needs square pixels "
                              f"(these are {volume.spacing[0]:g} x {volume.spacing[1]:g} mm)")
        # low_resolution takes one in-plane FWHM; anisotropic pixels get each axis's own
        # default (the new pixel size along that axis) when no FWHM is given.
        coarse = low_resolution(clean, (fx, fy, 1), inplane_fwhm_mm=fwhm_x if square else None)
    return coarse.with_array(coarse.array, source=f"in-plane {fx}x{fy} degraded {volume.source or 'volume'}")


def _binned(volume: Volume, fx: int, fy: int) -> Volume:
    """Each coarse pixel the mean of the fx x fy fine pixels it covers, on low_resolution_grid."""
    nz, ny, nx = volume.shape
    blocks = np.asarray(volume.array, dtype=np.float32).reshape(nz, ny // fy, fy, nx // fx, fx)
    array = blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
    grid = low_resolution_grid(volume, (fx, fy, 1))
    return Volume(array, grid.spacing, grid.origin, grid.direction, volume.source)


@dataclass(frozen=True)
class InPlaneFamily:
    """A random family of in-plane degradations, one draw per training patch.

    ``kinds``: any of :data:`FAMILY_KINDS`, drawn with equal probability per patch:
    ``"gaussian"`` (FWHM uniform in ``fwhm_range``, in new pixels), ``"box"`` (binning),
    ``"mixture"`` (a Gaussian so drawn blended with binning, weight uniform in [0, 1]).
    A scan is degraded once per :meth:`members` entry (Gaussians at :data:`FWHM_LEVEL_STEP`
    spacing across the range, then binning); :meth:`draw` gives (member, weight) pairs whose
    weighted sum is the patch's input. The default family is the single training degradation
    of ``revgan bench real`` (Gaussian, FWHM = new pixel), drawn without randomness."""

    kinds: Tuple[str, ...] = ("gaussian",)
    fwhm_range: Tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        kinds = tuple(str(k) for k in self.kinds)
        if not kinds:
            raise ConfigError(f"data.real.degradations is empty; choose from {FAMILY_KINDS}")
        unknown = [k for k in kinds if k not in FAMILY_KINDS]
        if unknown:
            raise ConfigError(f"data.real.degradations: unknown {', '.join(map(repr, unknown))}; "
                              f"choose from {FAMILY_KINDS}")
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"data.real.degradations lists a kind twice: {list(kinds)}")
        if len(self.fwhm_range) != 2:
            raise ConfigError(f"data.real.fwhm_range must be [low, high] new pixels, got {list(self.fwhm_range)}")
        low, high = (float(v) for v in self.fwhm_range)
        if not 0.0 < low <= high <= MAX_FWHM_SCALE:
            raise ConfigError(f"data.real.fwhm_range [{low:g}, {high:g}] must satisfy 0 < low <= high <= "
                              f"{MAX_FWHM_SCALE:g} (Gaussian FWHM in new pixels)")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "fwhm_range", (low, high))

    def fwhm_levels(self) -> List[float]:
        """The Gaussian FWHMs (new pixels) degraded in advance; empty when only binning is drawn."""
        if self.kinds == ("box",):
            return []
        low, high = self.fwhm_range
        count = 1 + int(math.ceil((high - low) / FWHM_LEVEL_STEP - 1e-9))
        return [float(v) for v in np.linspace(low, high, count)] if count > 1 else [low]

    def members(self) -> List[Tuple[str, float]]:
        """(degradation, fwhm_scale) of each scan degraded in advance, in member order."""
        members = [("gaussian", level) for level in self.fwhm_levels()]
        if "box" in self.kinds or "mixture" in self.kinds:
            members.append(("box", 1.0))
        return members

    def degrade(self, volume: Volume, factors_xy: Sequence[int]) -> List[Volume]:
        """``volume`` degraded by every member, in member order."""
        return [degrade_in_plane(volume, factors_xy, kind, scale) for kind, scale in self.members()]

    def draw(self, rng: np.random.Generator) -> List[Tuple[int, float]]:
        """(member index, weight) pairs of one patch's degradation; the weights sum to 1."""
        count = len(self.members())
        if count == 1:
            return [(0, 1.0)]  # no randomness: the same input as a single degradation
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        box = count - 1
        if kind == "box":
            return [(box, 1.0)]
        gaussian = self._gaussian(float(rng.uniform(*self.fwhm_range)))
        if kind == "gaussian":
            return gaussian
        share = float(rng.uniform(0.0, 1.0))
        return [(m, w * share) for m, w in gaussian] + [(box, 1.0 - share)]

    def _gaussian(self, fwhm_scale: float) -> List[Tuple[int, float]]:
        levels = self.fwhm_levels()
        if len(levels) == 1:
            return [(0, 1.0)]
        position = (fwhm_scale - levels[0]) / (levels[1] - levels[0])
        below = min(int(math.floor(position)), len(levels) - 2)
        upper = position - below
        return [(below, 1.0 - upper), (below + 1, upper)]

    def describe(self) -> str:
        low, high = self.fwhm_range
        parts = {"gaussian": f"Gaussian (FWHM {low:g}-{high:g} new pixels)", "box": "box binning",
                 "mixture": "Gaussian/binning blends"}
        return ", ".join(parts[k] for k in self.kinds) + ", one per patch"


def _slice_axis_positions(grid: Grid, reference: Grid) -> np.ndarray:
    """Centres of ``grid``'s slices in ``reference``'s continuous index coordinates (x, y, z)."""
    to_reference = np.linalg.inv(reference.index_to_physical_matrix())
    k = np.arange(grid.shape[0], dtype=np.float64)
    index = np.stack([np.zeros_like(k), np.zeros_like(k), k, np.ones_like(k)])
    return (to_reference @ grid.index_to_physical_matrix() @ index)[:3].T


def slab_weights(grid: Grid, reference: Grid) -> np.ndarray:
    """(reference slices, grid slices) weights: the fraction of each reference slab covered
    by each slice of ``grid``; every row sums to 1. The in-plane grids must match and
    ``grid``'s slices must cover every reference slab."""
    if grid.shape[1:] != reference.shape[1:] or not np.allclose(grid.spacing[:2], reference.spacing[:2], rtol=1e-6):
        raise VolumeError(f"slab averaging needs the same in-plane grid: {grid.shape[1:][::-1]} pixels of "
                          f"{grid.spacing[:2]} mm vs {reference.shape[1:][::-1]} of {reference.spacing[:2]} mm")
    if not np.allclose(grid.direction, reference.direction, atol=1e-6):
        raise VolumeError("slab averaging needs grids with the same direction")
    positions = _slice_axis_positions(grid, reference)
    if np.abs(positions[:, :2]).max() > 1e-4:
        raise VolumeError("slab averaging needs the same in-plane origin (the grids are shifted in-plane)")
    centres = positions[:, 2]
    half = 0.5 * grid.spacing[2] / reference.spacing[2]  # a slice's half thickness in slabs
    slabs = np.arange(reference.shape[0], dtype=np.float64)[:, None]
    overlap = np.minimum(slabs + 0.5, centres[None] + half) - np.maximum(slabs - 0.5, centres[None] - half)
    overlap = np.round(np.clip(overlap, 0.0, None), _OVERLAP_DECIMALS)
    covered = overlap.sum(axis=1)
    if np.any(np.abs(covered - 1.0) > 1e-6):
        worst = int(np.argmax(np.abs(covered - 1.0)))
        raise VolumeError(f"the finer grid covers only {covered[worst]:.3f} of reference slab {worst}; "
                          "it must span the reference's slabs")
    return overlap / covered[:, None]


def slab_average(prediction: Volume, reference) -> Volume:
    """``prediction``'s slices averaged over each slab of ``reference`` (a Volume or Grid):
    a float64 Volume on the reference grid (see the module documentation)."""
    reference_grid = reference.grid if isinstance(reference, Volume) else reference
    weights = slab_weights(prediction.grid, reference_grid)
    out = np.empty(reference_grid.shape, dtype=np.float64)
    for k, row in enumerate(weights):
        used = np.nonzero(row)[0]
        out[k] = np.tensordot(row[used], prediction.array[used].astype(np.float64), axes=(0, 0))
    return Volume(out, reference_grid.spacing, reference_grid.origin, reference_grid.direction,
                  f"slab average of {prediction.source or 'a prediction'}")
