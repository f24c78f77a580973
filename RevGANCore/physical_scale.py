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
until it is brought back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .modelmetadata import ModelMetadata
from .volume import Grid

__all__ = ["SAME_SCALE_TOLERANCE", "MAX_SCALE_RATIO", "InPlaneScale", "in_plane_scale", "fourier_resample",
           "scale_warning"]

#: Relative pixel-size difference below which a scan is translated on its own grid
#: (bit-identical to a model without a recorded spacing).
SAME_SCALE_TOLERANCE = 0.03
#: The documented supported range: pixel sizes within this factor of the training spacing.
MAX_SCALE_RATIO = 4.0

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
        return (f"in-plane {grid.spacing[0]:.3g} x {grid.spacing[1]:.3g} mm resampled to the model's "
                f"{working.spacing[0]:.3g} x {working.spacing[1]:.3g} mm "
                f"({self.working_shape_yx[1]} x {self.working_shape_yx[0]} pixels) and back")


def _ratios(spacing: Sequence[float], trained: Sequence[float]) -> Tuple[float, ...]:
    return tuple(float(s) / float(t) for s, t in zip(spacing, trained))


def in_plane_scale(metadata: ModelMetadata, grid: Grid) -> Optional[InPlaneScale]:
    """How a scan on ``grid`` is brought to the model's training pixel size, or None when
    it is translated on its own grid: the model records no spacing, changes the grid
    itself (super-resolution), or the scan is within :data:`SAME_SCALE_TOLERANCE`."""
    trained = metadata.training_spacing_xyz
    if trained is None or metadata.scale_factors_xyz is not None:
        return None
    _, ny, nx = grid.shape
    counts = []
    for count, ratio in zip((nx, ny), _ratios(grid.spacing[:2], trained[:2])):
        counts.append(count if abs(ratio - 1.0) <= SAME_SCALE_TOLERANCE else max(1, int(round(count * ratio))))
    if counts == [nx, ny]:
        return None
    return InPlaneScale((ny, nx), (counts[1], counts[0]))


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
    return (f"warning: the scan's voxel spacing {shown} mm is more than {MAX_SCALE_RATIO:g} times away from "
            f"the {expected} mm this model was trained at; results outside this range are not supported")
