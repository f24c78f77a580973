"""What is not anatomy stays out of the network: reconstruction-circle padding, metal above the
CT scale, output range.

Scanners fill the voxels outside the reconstruction circle with a value far below air
(-2000, -3024, ...). A network sees that as a huge edge and answers with a ring at the
circle's border. So, around a translation:

- padding voxels (at or below :data:`PADDING_BELOW_HU`; no tissue or air reaches it, even
  with a sharp kernel's noise) are found, and the network sees air (:data:`AIR_HU`) there;
- the output gets the exact padding values back at the same voxels; on a finer output grid
  (super-resolution) each output voxel takes the padding of the input voxel it lies in,
  which for integer factors over the same box is the nearest-neighbour resampling
  ``input[k // f_z, j // f_y, i // f_x]``;
- translated values are clipped to :func:`output_limits`: the CT scale [-1024, 3071] HU,
  widened to the input's own range (as the network sees it), plus :data:`OUTPUT_MARGIN_HU` (a sharp kernel may
  overshoot a little at edges). Clipping is logged with the number of voxels affected.

Padding that is a constant *above* the threshold (e.g. -1024 outside the circle) is air to
the network and is left as it is.

Metal on an extended HU scale (up to 32767) is the same kind of problem at the other end:
no model saw values above the 12-bit CT maximum, and a residual network answers a 2x3x3
block of 32000 HU in a real chest CT by moving voxels more than 5 pixels or 2 slices away by up
to 416 HU (kernel model) and 2459 HU (super-resolution). So voxels above :data:`CEILING_HU` are
seen by the network at the ceiling (everything else then comes out exactly as for a block at
3071 HU: 44 HU there for the kernel model), and get their own values back in the output. On a
finer output grid, like padding, every fine voxel inside an input metal voxel takes its value
(:func:`restore_padding`): the model cannot know the metal's shape within a voxel, and
resampling a 32000 HU step would ring. On a coarser grid (the inverse of super-resolution) a
coarse voxel over metal takes the mean of its input block (:func:`restore_block_means`), what a
coarser scan measures there.

Memory: a boolean mask of the input's voxels for each of padding and metal (only when there
is some), and a float32 copy of the input as the network sees it (only then too).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .tiling import write_core
from .volume import Volume

__all__ = ["PADDING_BELOW_HU", "AIR_HU", "OUTPUT_MARGIN_HU", "CT_SCALE_HU", "CEILING_HU", "padding_mask",
           "without_padding", "ceiling_mask", "network_view", "output_limits", "restore_padding",
           "restore_block_means"]

PADDING_BELOW_HU = -1500.0
AIR_HU = -1000.0
OUTPUT_MARGIN_HU = 200.0
CT_SCALE_HU = (-1024.0, 3071.0)
#: The most the network sees: the classic 12-bit CT maximum. Dense bone and contrast stay
#: below it; only metal on an extended HU scale is above.
CEILING_HU = CT_SCALE_HU[1]
_SLAB = 16


def padding_mask(volume: Volume) -> Optional[np.ndarray]:
    """Boolean (z, y, x) mask of the padding voxels, or None when there are none."""
    return _mask(volume.array, np.less_equal, PADDING_BELOW_HU)


def _mask(array: np.ndarray, compare, threshold: float) -> Optional[np.ndarray]:
    """``compare(array, threshold)`` one z-slab at a time (no float temporary of the whole
    volume), or None when no voxel matches."""
    mask = np.empty(array.shape, dtype=bool)
    for start in range(0, array.shape[0], _SLAB):
        compare(array[start:start + _SLAB], threshold, out=mask[start:start + _SLAB])
    return mask if mask.any() else None


def without_padding(volume: Volume, mask: np.ndarray) -> Volume:
    """A float32 copy of ``volume`` with air in the padding voxels (the input is unchanged)."""
    array = np.array(volume.array, dtype=np.float32, copy=True)
    array[mask] = AIR_HU
    return volume.with_array(array)


def ceiling_mask(volume: Volume) -> Optional[np.ndarray]:
    """Boolean (z, y, x) mask of the voxels above :data:`CEILING_HU`, or None when there are none."""
    return _mask(volume.array, np.greater, CEILING_HU)


def network_view(volume: Volume) -> Tuple[Volume, Optional[np.ndarray], Optional[np.ndarray]]:
    """(the volume as the network sees it, padding mask, ceiling mask): ``volume`` itself when
    both masks are None, else a float32 copy with air in the padding and :data:`CEILING_HU` in
    the voxels above it (the input is unchanged)."""
    padding, above = padding_mask(volume), ceiling_mask(volume)
    if above is None:
        return (volume if padding is None else without_padding(volume, padding)), padding, None
    clean = without_padding(volume, padding) if padding is not None else volume.with_array(
        np.array(volume.array, dtype=np.float32, copy=True))
    for start in range(0, clean.array.shape[0], _SLAB):
        np.minimum(clean.array[start:start + _SLAB], CEILING_HU, out=clean.array[start:start + _SLAB])
    return clean, padding, above


def output_limits(volume: Volume) -> Tuple[float, float]:
    """(low, high) HU that a translation of ``volume`` (without padding) may produce."""
    array = volume.array
    low, high = CT_SCALE_HU
    for start in range(0, array.shape[0], _SLAB):
        slab = array[start:start + _SLAB]
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    return low - OUTPUT_MARGIN_HU, high + OUTPUT_MARGIN_HU


def restore_padding(out: np.ndarray, source: np.ndarray, mask: np.ndarray,
                    factors_zyx: Sequence[int] = (1, 1, 1)) -> None:
    """Write the values of ``source`` at ``mask`` (padding, or voxels above the ceiling) into
    ``out`` (on the same grid, or on a grid ``factors_zyx`` times finer over the same box:
    every fine voxel inside a masked input voxel), one z-slab at a time."""
    fz, fy, fx = (int(f) for f in factors_zyx)
    rows_y = np.arange(out.shape[1]) // fy
    rows_x = np.arange(out.shape[2]) // fx
    for start in range(0, out.shape[0], _SLAB):
        stop = min(start + _SLAB, out.shape[0])
        rows_z = np.arange(start, stop) // fz
        index = np.ix_(rows_z, rows_y, rows_x)
        slab_mask = mask[index]
        if slab_mask.any():
            # write_core: rounded for int16 output, and metal beyond int16 is an error, not a wrap
            write_core(out[start:stop], slab_mask, source[index][slab_mask])


def restore_block_means(out: np.ndarray, source: np.ndarray, mask: np.ndarray, factors_zyx: Sequence[int]) -> None:
    """On a grid ``factors_zyx`` times coarser than ``source`` (``out[k]`` covers
    ``source[k * f : (k + 1) * f]``, the last blocks possibly partial), write the mean of
    ``source`` over each block that holds a ``mask`` voxel: what a coarser scan measures
    there, where the network only saw the ceiling. One z-slab at a time."""
    fz, fy, fx = (int(f) for f in factors_zyx)
    starts_y = np.arange(0, source.shape[1], fy)
    starts_x = np.arange(0, source.shape[2], fx)
    for start in range(0, out.shape[0], _SLAB):
        stop = min(start + _SLAB, out.shape[0])
        fine = slice(start * fz, min(stop * fz, source.shape[0]))
        hits = mask[fine]
        if not hits.any():
            continue
        starts_z = np.arange(0, hits.shape[0], fz)

        def block_sums(array: np.ndarray) -> np.ndarray:
            array = np.add.reduceat(array, starts_z, axis=0)
            return np.add.reduceat(np.add.reduceat(array, starts_y, axis=1), starts_x, axis=2)

        sums = block_sums(source[fine].astype(np.float64))
        counts = block_sums(np.ones(hits.shape, dtype=np.float64))
        blocks = block_sums(hits.astype(np.int32)) > 0
        write_core(out[start:stop], blocks, (sums / counts)[blocks])
