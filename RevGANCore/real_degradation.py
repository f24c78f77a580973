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
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .degradations import FWHM_PER_SIGMA, low_resolution
from .errors import VolumeError
from .field_of_view import padding_mask, without_padding
from .volume import Grid, Volume

__all__ = ["degrade_in_plane", "in_plane_fwhm_mm", "slab_weights", "slab_average", "FWHM_PER_SIGMA"]

_OVERLAP_DECIMALS = 9


def in_plane_fwhm_mm(volume: Volume, factors_xy: Sequence[int] = (2, 2)) -> tuple:
    """The blur FWHM (mm, x and y) :func:`degrade_in_plane` uses: the new pixel size."""
    return tuple(float(f) * float(s) for f, s in zip(factors_xy, volume.spacing[:2]))


def degrade_in_plane(volume: Volume, factors_xy: Sequence[int] = (2, 2)) -> Volume:
    """``volume`` on a grid ``factors_xy`` times coarser in-plane, same slices (see the
    module documentation). In-plane sizes must be divisible by the factors."""
    fx, fy = (int(f) for f in factors_xy)
    if volume.shape[2] % fx or volume.shape[1] % fy:
        raise VolumeError(f"{volume.source or 'volume'}: in-plane size {volume.shape[2]} x {volume.shape[1]} is not "
                          f"divisible by the factors {fx} x {fy}; crop it first")
    padding = padding_mask(volume)
    clean = volume if padding is None else without_padding(volume, padding)
    fwhm_x, fwhm_y = in_plane_fwhm_mm(volume, (fx, fy))
    if abs(fwhm_x - fwhm_y) > 1e-6 * max(fwhm_x, fwhm_y):
        # low_resolution takes one in-plane FWHM; anisotropic pixels get each axis's own
        # default (the new pixel size along that axis) when no FWHM is given.
        coarse = low_resolution(clean, (fx, fy, 1))
    else:
        coarse = low_resolution(clean, (fx, fy, 1), inplane_fwhm_mm=fwhm_x)
    return coarse.with_array(coarse.array, source=f"in-plane {fx}x{fy} degraded {volume.source or 'volume'}")


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
