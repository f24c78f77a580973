"""Models live in millimetres: bring a scan to the pixel size a model was trained at, and back.

A reconstruction kernel is a transfer function in cycles/mm, but a convolutional network
acts in voxels: run on 0.3 mm pixels, a model trained at 0.8 mm applies its filter at
frequencies 2.7 times too high. A kernel model whose file records ``training_spacing_xyz``
therefore runs on a *working grid*: the scan's slices resampled in-plane to (nearly) the
training pixel size, with the same origin, direction, slices and physical period
(``n * spacing`` along each in-plane axis), so the working spacing is ``n * s / m`` for a
whole number ``m`` of working pixels (within half a pixel of the training spacing).

Resampling is band-limited (Fourier): frequencies below both grids' Nyquist frequencies
pass unchanged, the rest is removed, so going from 0.3 mm to 0.8 mm pixels cannot alias,
and a frequency the model changes is brought back at its own amplitude. The slices are
treated as periodic; CT slices are air (or padding, replaced by air, see
:mod:`RevGANCore.field_of_view`) at their edges, so the wrap-around is benign.

What comes back onto the scan's grid is the model's *change* (output minus input on the
working grid), added to the scan: detail finer than the working grid's Nyquist frequency,
which the model never saw, is kept as it was instead of being erased. A scan within
:data:`SAME_SCALE_TOLERANCE` of the training pixel size is not resampled at all.

The resampling works on whole slices, so it runs one z-slab at a time; the working
result (``m_y * m_x / (n_y * n_x)`` times the scan's voxel count, float32) is held whole
until it is brought back (:func:`working_grid_bytes`).

A spacing no CT has is refused before anything is allocated: a working slice wider than
:data:`MAX_WORKING_PIXELS` (e.g. a header saying 500 mm pixels: 40,000 working pixels, 48 GiB
for 8 slices of 64 x 64) or narrower than one of the model's pixels (e.g. 0.001 mm pixels: a
64-pixel slice is 0.064 mm across).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .errors import VolumeError
from .modelmetadata import ModelMetadata
from .volume import Grid

__all__ = ["SAME_SCALE_TOLERANCE", "MAX_SCALE_RATIO", "MAX_WORKING_PIXELS", "InPlaneScale", "in_plane_scale",
           "fourier_resample", "working_grid_bytes", "scale_warning"]

#: Relative pixel-size difference below which a scan is translated on its own grid
#: (bit-identical to a model without a recorded spacing).
SAME_SCALE_TOLERANCE = 0.03
#: The documented supported range: pixel sizes within this factor of the training spacing.
MAX_SCALE_RATIO = 4.0
#: Largest working slice edge: 3.3 m at 0.8 mm pixels, wider than any CT's field of view (a
#: 1024-pixel slice at the supported 4x coarser spacing fits). A larger one comes from a wrong
#: spacing in the file's header and would only exhaust memory.
MAX_WORKING_PIXELS = 4096

Logger = Optional[Callable[[str], None]]


def fourier_resample(array: np.ndarray, length: int, axis: int) -> np.ndarray:
    """``array`` resampled along ``axis`` to ``length`` samples over the same period, keeping
    the frequencies strictly below both Nyquist frequencies (an even length's Nyquist bin,
    which has no sign, is dropped). Returns float32."""
    count = array.shape[axis]
    if count == length:
        return np.asarray(array, dtype=np.float32)
    spectrum = np.fft.rfft(array.astype(np.float64, copy=False), axis=axis)
    kept = (min(count, length) + 1) // 2
    shape = list(spectrum.shape)
    shape[axis] = length // 2 + 1
    resized = np.zeros(shape, dtype=spectrum.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, kept)
    resized[tuple(index)] = spectrum[tuple(index)]
    return (np.fft.irfft(resized, n=length, axis=axis) * (length / count)).astype(np.float32)


@dataclass(frozen=True)
class InPlaneScale:
    """The in-plane resampling between a scan's slices (``shape_yx``) and the working grid
    (``working_shape_yx``) over the same period."""

    shape_yx: Tuple[int, int]
    working_shape_yx: Tuple[int, int]
    #: the model's training pixel size (x, y), for the description
    trained_xy: Optional[Tuple[float, float]] = field(default=None, compare=False)

    def working_grid(self, grid: Grid) -> Grid:
        """``grid`` with the working pixel counts: same origin, direction, slices and period."""
        ny, nx = self.shape_yx
        my, mx = self.working_shape_yx
        spacing = (grid.spacing[0] * nx / mx, grid.spacing[1] * ny / my, grid.spacing[2])
        return Grid((grid.shape[0], my, mx), spacing, grid.origin, grid.direction)

    def to_working(self, slab: np.ndarray) -> np.ndarray:
        """Slices (z, y, x) of the scan on the working grid."""
        return fourier_resample(fourier_resample(slab, self.working_shape_yx[0], 1), self.working_shape_yx[1], 2)

    def to_scan(self, slab: np.ndarray) -> np.ndarray:
        """Working-grid slices (z, y, x) on the scan's grid."""
        return fourier_resample(fourier_resample(slab, self.shape_yx[0], 1), self.shape_yx[1], 2)

    def describe(self, grid: Grid) -> str:
        working = self.working_grid(grid)
        pixels = f"{self.working_shape_yx[1]} x {self.working_shape_yx[0]} pixels"
        spacing = f"{working.spacing[0]:.3g} x {working.spacing[1]:.3g} mm"
        trained = self.trained_xy
        if trained is None or all(abs(w / t - 1.0) <= SAME_SCALE_TOLERANCE
                                  for w, t in zip(working.spacing[:2], trained)):
            return f"in-plane {grid.spacing[0]:.3g} x {grid.spacing[1]:.3g} mm resampled to the model's {spacing} " \
                   f"({pixels}) and back"
        # A slice only a few model pixels wide cannot get the model's spacing in whole pixels:
        # say what it gets instead of calling that the model's.
        return (f"in-plane {grid.spacing[0]:.3g} x {grid.spacing[1]:.3g} mm resampled to {spacing} ({pixels}, "
                f"the nearest whole pixels to the model's {trained[0]:.3g} x {trained[1]:.3g} mm) and back")


def _ratios(spacing: Sequence[float], trained: Sequence[float]) -> Tuple[float, ...]:
    return tuple(float(s) / float(t) for s, t in zip(spacing, trained))


def in_plane_scale(metadata: ModelMetadata, grid: Grid, source: str = "") -> Optional[InPlaneScale]:
    """How a scan on ``grid`` is brought to the model's training pixel size, or None when
    it is translated on its own grid: the model records no spacing, changes the grid
    itself (super-resolution), or the scan is within :data:`SAME_SCALE_TOLERANCE`.

    A :class:`VolumeError` naming ``source`` (the scan's file) when the working slice would
    be wider than :data:`MAX_WORKING_PIXELS` or narrower than one of the model's pixels."""
    trained = metadata.training_spacing_xyz
    if trained is None or metadata.scale_factors_xyz is not None:
        return None
    _, ny, nx = grid.shape
    counts, spans = [], []  # working pixels per axis; widths in model pixels of the resampled axes
    for count, ratio in zip((nx, ny), _ratios(grid.spacing[:2], trained[:2])):
        if abs(ratio - 1.0) <= SAME_SCALE_TOLERANCE:
            counts.append(count)
        else:
            counts.append(int(round(count * ratio)))
            spans.append(count * ratio)
    if not spans:
        return None
    what = (f"{source or 'the scan'}: in-plane spacing {grid.spacing[0]:.3g} x {grid.spacing[1]:.3g} mm, "
            f"{nx} x {ny} pixels ({nx * grid.spacing[0]:.5g} x {ny * grid.spacing[1]:.5g} mm across)")
    needs = f"this model works at {trained[0]:.3g} x {trained[1]:.3g} mm pixels"
    if max(counts) > MAX_WORKING_PIXELS and max(counts) > max(nx, ny):
        raise VolumeError(f"{what}: {needs}, which would make {counts[0]} x {counts[1]} pixels per slice (more than "
                          f"{MAX_WORKING_PIXELS}, wider than any CT); check the spacing in the file's header")
    if min(spans) < 1.0:
        raise VolumeError(f"{what}: {needs}, and the slices are narrower than one of them; check the spacing "
                          "in the file's header")
    return InPlaneScale((ny, nx), (counts[1], counts[0]), (float(trained[0]), float(trained[1])))


def working_grid_bytes(scale: InPlaneScale, grid: Grid, slab: int = 16) -> int:
    """Estimated peak bytes of a translation on the working grid beyond the scan's own
    arrays: the float32 working result, held whole, plus resampling ``slab`` slices at once
    (a window's depth; float64 and complex FFT buffers and float32 copies: measured 21-41
    bytes per voxel of the larger of the two grids)."""
    my, mx = scale.working_shape_yx
    ny, nx = scale.shape_yx
    plane = int(my) * int(mx)
    return 4 * plane * int(grid.shape[0]) + 32 * max(plane, int(ny) * int(nx)) * min(int(slab), int(grid.shape[0]))


def scale_warning(metadata: ModelMetadata, spacing_xyz: Sequence[float], direction: str = "forward") -> Optional[str]:
    """A warning when the scan's voxel spacing is outside the supported range: more than
    :data:`MAX_SCALE_RATIO` times finer or coarser than the training spacing (in-plane for
    kernel models, which are resampled; along every axis for super-resolution models,
    which act on the scan's voxels as they are)."""
    trained = metadata.training_spacing_xyz
    if trained is None:
        return None
    factors = metadata.scale_factors_xyz
    if factors is not None and direction == "forward":
        # the model's input is the low-resolution scan: training spacing times the factors
        trained = tuple(t * f for t, f in zip(trained, factors))
    axes = 3 if factors is not None else 2
    ratios = _ratios(spacing_xyz[:axes], trained[:axes])
    if all(1.0 / MAX_SCALE_RATIO <= r <= MAX_SCALE_RATIO for r in ratios):
        return None
    shown = " x ".join(f"{s:.3g}" for s in spacing_xyz[:axes])
    expected = " x ".join(f"{t:.3g}" for t in trained[:axes])
    return (f"the scan's voxel spacing {shown} mm is more than {MAX_SCALE_RATIO:g} times away from "
            f"the {expected} mm this model was trained at; results outside this range are not supported")
