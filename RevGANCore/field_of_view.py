"""What is not anatomy stays out of the network: reconstruction-circle padding, output range.

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
  widened to the input's own range, plus :data:`OUTPUT_MARGIN_HU` (a sharp kernel may
  overshoot a little at edges). Clipping is logged with the number of voxels affected.

Padding that is a constant *above* the threshold (e.g. -1024 outside the circle) is air to
the network and is left as it is. Memory: a boolean mask of the input's voxels, and a
float32 copy of the input with air in the padding (only when there is padding).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .volume import Volume

__all__ = ["PADDING_BELOW_HU", "AIR_HU", "OUTPUT_MARGIN_HU", "CT_SCALE_HU", "padding_mask", "without_padding",
           "output_limits", "restore_padding"]

PADDING_BELOW_HU = -1500.0
AIR_HU = -1000.0
OUTPUT_MARGIN_HU = 200.0
CT_SCALE_HU = (-1024.0, 3071.0)
_SLAB = 16


def padding_mask(volume: Volume) -> Optional[np.ndarray]:
    """Boolean (z, y, x) mask of the padding voxels, or None when there are none."""
    array = volume.array
    mask = np.empty(array.shape, dtype=bool)
    for start in range(0, array.shape[0], _SLAB):
        np.less_equal(array[start:start + _SLAB], PADDING_BELOW_HU, out=mask[start:start + _SLAB])
    return mask if mask.any() else None


def without_padding(volume: Volume, mask: np.ndarray) -> Volume:
    """A float32 copy of ``volume`` with air in the padding voxels (the input is unchanged)."""
    array = np.array(volume.array, dtype=np.float32, copy=True)
    array[mask] = AIR_HU
    return volume.with_array(array)


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
    """Write the padding values of ``source`` into ``out`` (on the same grid, or on a grid
    ``factors_zyx`` times finer over the same box), one z-slab at a time."""
    fz, fy, fx = (int(f) for f in factors_zyx)
    rows_y = np.arange(out.shape[1]) // fy
    rows_x = np.arange(out.shape[2]) // fx
    for start in range(0, out.shape[0], _SLAB):
        stop = min(start + _SLAB, out.shape[0])
        rows_z = np.arange(start, stop) // fz
        index = np.ix_(rows_z, rows_y, rows_x)
        slab_mask = mask[index]
        if slab_mask.any():
            slab = out[start:stop]
            slab[slab_mask] = source[index][slab_mask]
