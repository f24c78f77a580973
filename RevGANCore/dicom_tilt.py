"""Giving the slices of a DICOM series, as read by SimpleITK, their true geometry.

A straight stack gets the geometry computed from its headers (:mod:`.dicom_geometry`).
A gantry-tilted stack (each slice shifted in-plane from the previous one) is sheared: its
voxels are resampled, linearly and within each slice plane only, onto the orthogonal
grid of the slice planes, widened to hold every slice. The widening is filled with the
lowest value in the series (padding, or air), so nothing that was not scanned looks like
tissue, and every voxel keeps its physical place.
"""

from __future__ import annotations

import math

import numpy as np

from .dicom_geometry import SliceStack


def _with_geometry(image, origin, spacing, direction: np.ndarray):
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def place_on_slice_grid(image, stack: SliceStack):
    """``image`` (slices in ``stack`` order, any geometry) on the grid whose k axis is the
    slice normal: its geometry replaced for a straight stack, resampled for a tilted one."""
    import SimpleITK as sitk

    if not stack.is_tilted:
        return _with_geometry(image, stack.origin, stack.spacing, stack.direction)
    # The true, sheared geometry: k steps along the slice-to-slice step, not the normal.
    step = stack.spacing[2] * stack.direction[:, 2] + stack.lateral_step
    sheared = stack.direction.copy()
    sheared[:, 2] = step / np.linalg.norm(step)
    _with_geometry(image, stack.origin, (stack.spacing[0], stack.spacing[1], np.linalg.norm(step)), sheared)
    # Whole-pixel margins on the side(s) the slices drift to keep slice 0 on the grid.
    before = [math.floor(min(0.0, shift) + 1e-6) for shift in stack.lateral_shift_pixels]
    after = [math.ceil(max(0.0, shift) - 1e-6) for shift in stack.lateral_shift_pixels]
    size = image.GetSize()
    grid = sitk.Image(size[0] + after[0] - before[0], size[1] + after[1] - before[1], size[2], sitk.sitkFloat32)
    origin = stack.origin + sum(before[axis] * stack.spacing[axis] * stack.direction[:, axis] for axis in (0, 1))
    _with_geometry(grid, origin, stack.spacing, stack.direction)
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, lowest, sitk.sitkFloat32)
