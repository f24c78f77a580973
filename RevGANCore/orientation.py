"""Scans in the models' axis order, whatever order their file stores the axes in.

A file may store the same patient image with its axes in any order and any sense: DICOM and
NRRD usually store rows along the patient's left and columns along posterior (LPS), NIfTI
written by dcm2niix often the reverse in-plane, and a volume may be stored sagittally. The
models were trained on axial volumes stored LPS (array axis 0 along superior) and are not
mirror-symmetric, and super-resolution refines array axis 0 four times: run on another
storage order, the same image gave results up to 183 HU apart (6.6 HU on average; a mirror
of the input, measured on a real chest CT crop), and a sagittal file would be refined along
the wrong axis.

:func:`axis_order` finds the permutation and flips of the array axes that bring the storage
closest to LPS; :meth:`AxisOrder.canonical` applies them (views of the same voxels: lossless,
no copy) and :meth:`AxisOrder.restore` undoes them on a result of any grid, so a result comes
back in its input's storage order with the same physical geometry. The direction's remaining
rotation (an oblique scan) is kept: only whole-axis reorderings are undone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .volume import Grid, Volume

__all__ = ["AxisOrder", "axis_order"]


@dataclass(frozen=True)
class AxisOrder:
    """Canonical index axis ``r`` (0 = x, 1 = y, 2 = z, as in ``spacing``) is stored index axis
    ``axes[r]``, reversed where ``flips[r]``."""

    axes: Tuple[int, int, int] = (0, 1, 2)
    flips: Tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    # Arrays are (z, y, x): index axis a is array axis 2 - a.
    def canonical_array(self, array: np.ndarray) -> np.ndarray:
        """A view of a stored-order array in canonical order (writes go through to ``array``)."""
        view = np.transpose(array, [2 - self.axes[2 - j] for j in range(3)])
        return view[tuple(slice(None, None, -1) if self.flips[2 - j] else slice(None) for j in range(3))]

    def stored_array(self, array: np.ndarray) -> np.ndarray:
        """A view of a canonical-order array in stored order (the inverse of :meth:`canonical_array`)."""
        unflipped = array[tuple(slice(None, None, -1) if self.flips[2 - j] else slice(None) for j in range(3))]
        inverse = [0, 0, 0]
        for j in range(3):
            inverse[2 - self.axes[2 - j]] = j
        return np.transpose(unflipped, inverse)

    def canonical(self, volume: Volume) -> Volume:
        """``volume`` stored in canonical order: the same voxels at the same places."""
        grid = self.canonical_grid(volume.grid)
        return Volume(self.canonical_array(volume.array), grid.spacing, grid.origin, grid.direction, volume.source)

    def restore(self, volume: Volume) -> Volume:
        """A canonical-order result back in the stored order (the geometry follows the
        result's own grid, so a finer super-resolution grid comes back right too)."""
        grid = self.stored_grid(volume.grid)
        return Volume(self.stored_array(volume.array), grid.spacing, grid.origin, grid.direction, volume.source)

    def canonical_shape(self, stored_shape) -> Tuple[int, int, int]:
        """(z, y, x) shape of the canonical view of a stored array of ``stored_shape``."""
        return tuple(int(stored_shape[2 - self.axes[2 - j]]) for j in range(3))  # type: ignore[return-value]

    def stored_shape(self, canonical_shape) -> Tuple[int, int, int]:
        return tuple(int(canonical_shape[2 - self._stored_to_canonical(2 - j)]) for j in range(3))  # type: ignore

    def canonical_grid(self, grid: Grid) -> Grid:
        return _reordered(grid, self.canonical_shape(grid.shape), self.axes, self.flips, inverse=False)

    def stored_grid(self, grid: Grid) -> Grid:
        """A canonical-order grid (e.g. a result's) in the stored order."""
        return _reordered(grid, self.stored_shape(grid.shape), self.axes, self.flips, inverse=True)

    def _stored_to_canonical(self, stored_axis: int) -> int:
        return self.axes.index(stored_axis)


def axis_order(direction) -> AxisOrder:
    """The reordering that brings a grid of ``direction`` (9 values, ITK's row-major matrix
    whose column ``a`` is index axis ``a``'s direction in LPS) closest to the identity: the
    permutation with the largest total alignment, each axis reversed where it points the
    other way."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(itertools.permutations(range(3)), key=lambda axes: sum(abs(matrix[r, axes[r]]) for r in range(3)))
    flips = tuple(bool(matrix[r, best[r]] < 0) for r in range(3))
    return AxisOrder(tuple(best), flips)  # type: ignore[arg-type]


def _reordered(grid: Grid, shape, axes, flips, inverse: bool) -> Grid:
    """The geometry of ``grid`` after reordering its index axes: canonical axis r = stored axis
    axes[r], reversed where flips[r] (or the inverse, from canonical back to stored)."""
    matrix = grid.direction_matrix
    spacing = np.asarray(grid.spacing, dtype=float)
    size = np.asarray(grid.size_xyz, dtype=float)
    new_direction = np.zeros((3, 3))
    new_spacing = np.zeros(3)
    corner = np.zeros(3)  # the old grid's index of the new grid's voxel 0
    for r in range(3):
        new_axis, old_axis = (axes[r], r) if inverse else (r, axes[r])
        sign = -1.0 if flips[r] else 1.0
        new_direction[:, new_axis] = sign * matrix[:, old_axis]
        new_spacing[new_axis] = spacing[old_axis]
        corner[old_axis] = size[old_axis] - 1 if flips[r] else 0.0
    origin = np.asarray(grid.origin, dtype=float) + matrix @ (spacing * corner)
    return Grid(tuple(int(n) for n in shape), tuple(new_spacing), tuple(origin), tuple(new_direction.ravel()))
