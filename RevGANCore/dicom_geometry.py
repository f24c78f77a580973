"""Where the slices of a DICOM series lie, worked out from their headers alone.

GDCM fills in what it cannot read (a PixelSpacing of ``0\\0`` becomes 1 mm, a skewed
orientation becomes the identity) and derives the slice step from the distance between
two slice positions, which is wrong for a gantry-tilted series. So the geometry of a
series is computed here instead, with every header value checked:
- PixelSpacing (0028,0030): two positive finite numbers;
- ImageOrientationPatient (0020,0037): two orthogonal unit vectors;
- ImagePositionPatient (0020,0032): three finite numbers;
- slices ordered along the slice normal (row x column), distinct, evenly spaced, and on
  one straight line. A line that is not parallel to the normal is a gantry tilt: its
  in-plane drift per slice is kept in :attr:`SliceStack.lateral_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from .errors import VolumeError

# DICOM tags as SimpleITK names them ("group|element", lower-case hex), with their keywords.
TAG_PIXEL_SPACING = "0028|0030"
TAG_ORIENTATION = "0020|0037"
TAG_POSITION = "0020|0032"
TAG_KEYWORDS = {TAG_PIXEL_SPACING: "PixelSpacing", TAG_ORIENTATION: "ImageOrientationPatient",
                TAG_POSITION: "ImagePositionPatient"}

#: Orientation cosines are stored as decimal strings of a few digits: unit length and
#: orthogonality are checked to this tolerance, then made exact.
ORIENTATION_TOLERANCE = 1e-3

#: Relative tolerance on slice steps: more variation is reported as uneven slices.
SLICE_SPACING_TOLERANCE = 0.01

#: In-plane drift over the whole stack, as a fraction of a pixel, below which a stack is
#: treated as untilted (it is decimal rounding of the positions, not a tilt).
TILT_DRIFT_TOLERANCE_PIXELS = 0.01


def tag_name(tag: str) -> str:
    """'0028|0030' -> '(0028,0030) PixelSpacing', as a message names a tag."""
    return f"({tag.replace('|', ',')}) {TAG_KEYWORDS.get(tag, '')}".rstrip()


def header_numbers(header: Dict[str, str], tag: str, count: int, path: str) -> np.ndarray:
    """``count`` finite numbers from a multi-valued DICOM tag, or a VolumeError naming the
    file and the tag."""
    text = header.get(tag, "")
    try:
        values = [float(v) for v in text.replace("\\", " ").split()]
    except ValueError:
        values = []
    if not text.strip():
        raise VolumeError(f"{path}: DICOM tag {tag_name(tag)} is missing or empty")
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise VolumeError(f"{path}: DICOM tag {tag_name(tag)} should hold {count} finite numbers, got {text!r}")
    return np.asarray(values)


@dataclass(frozen=True, eq=False)
class SliceGeometry:
    """One slice: its file, pixel spacing (x = along a row, y = down a column, mm), the
    unit row and column directions (LPS) and the position of its first pixel (mm)."""

    path: str
    pixel_spacing_xy: Tuple[float, float]
    row_direction: np.ndarray
    column_direction: np.ndarray
    position: np.ndarray


def slice_geometry(header: Dict[str, str], path: str) -> SliceGeometry:
    """Check and read the geometry tags of one slice header (SimpleITK metadata keys)."""
    spacing = header_numbers(header, TAG_PIXEL_SPACING, 2, path)
    if spacing.min() <= 0:
        raise VolumeError(f"{path}: DICOM tag {tag_name(TAG_PIXEL_SPACING)} must hold two positive numbers, "
                          f"got {header[TAG_PIXEL_SPACING]!r}")
    orientation = header_numbers(header, TAG_ORIENTATION, 6, path)
    row, column = orientation[:3], orientation[3:]
    lengths = (np.linalg.norm(row), np.linalg.norm(column))
    if max(abs(length - 1.0) for length in lengths) > ORIENTATION_TOLERANCE or \
            abs(float(row @ column)) > ORIENTATION_TOLERANCE:
        raise VolumeError(f"{path}: DICOM tag {tag_name(TAG_ORIENTATION)} is not two orthogonal unit vectors "
                          f"(lengths {lengths[0]:.4g} and {lengths[1]:.4g}, cosine between them "
                          f"{float(row @ column):.4g}): {header[TAG_ORIENTATION]!r}")
    row = row / lengths[0]
    # Gram-Schmidt: the tolerated rounding must not leave a skewed direction matrix.
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    position = header_numbers(header, TAG_POSITION, 3, path)
    # PixelSpacing lists the row spacing (between rows, y) first, then the column spacing (x).
    return SliceGeometry(path, (float(spacing[1]), float(spacing[0])), row, column, position)


@dataclass(frozen=True, eq=False)
class SliceStack:
    """The slices of a series in order along the normal, with the grid they lie on:
    voxel (i, j, k) is at ``origin + i*sx*row + j*sy*column + k*(sz*normal + lateral_step)``."""

    files: Tuple[str, ...]
    origin: np.ndarray
    spacing: Tuple[float, float, float]
    direction: np.ndarray
    lateral_step: np.ndarray

    @property
    def tilt_deg(self) -> float:
        """Angle between the slice-to-slice step and the slice normal (the gantry tilt)."""
        return math.degrees(math.atan2(float(np.linalg.norm(self.lateral_step)), self.spacing[2]))

    @property
    def lateral_shift_pixels(self) -> Tuple[float, float]:
        """In-plane shift (i, j pixels) of the last slice relative to the first."""
        count = len(self.files) - 1
        return (count * float(self.lateral_step @ self.direction[:, 0]) / self.spacing[0],
                count * float(self.lateral_step @ self.direction[:, 1]) / self.spacing[1])

    @property
    def is_tilted(self) -> bool:
        return max(abs(shift) for shift in self.lateral_shift_pixels) > TILT_DRIFT_TOLERANCE_PIXELS


def _check_alike(slices: Sequence[SliceGeometry], series: str) -> None:
    first = slices[0]
    for other in slices[1:]:
        if not np.allclose(other.pixel_spacing_xy, first.pixel_spacing_xy, rtol=0, atol=1e-4):
            raise VolumeError(f"{series}: mixed slices: {other.path} and {first.path} have different pixel "
                              f"spacings (tag {tag_name(TAG_PIXEL_SPACING)})")
        if not (np.allclose(other.row_direction, first.row_direction, rtol=0, atol=1e-4)
                and np.allclose(other.column_direction, first.column_direction, rtol=0, atol=1e-4)):
            raise VolumeError(f"{series}: mixed slices: {other.path} and {first.path} have different "
                              f"orientations (tag {tag_name(TAG_ORIENTATION)})")


def stack_slices(slices: Sequence[SliceGeometry], series: str) -> SliceStack:
    """Order two or more slices along their normal and check that they form one evenly
    spaced straight stack; ``series`` names the series in messages."""
    _check_alike(slices, series)
    first = slices[0]
    normal = np.cross(first.row_direction, first.column_direction)
    positions = np.array([s.position for s in slices])
    order = np.argsort(positions @ normal, kind="stable")
    files = [slices[i].path for i in order]
    steps = np.diff(positions[order], axis=0)
    along = steps @ normal
    if along.min() < 1e-3:
        at = int(np.argmin(along))
        raise VolumeError(f"{series}: {files[at]} and {files[at + 1]} lie at the same position along the slice "
                          f"normal (tag {tag_name(TAG_POSITION)}): duplicate slices, or two series mixed")
    typical = float(np.median(along))
    if along.max() - along.min() > SLICE_SPACING_TOLERANCE * typical:
        at = int(np.argmax(np.abs(along - typical)))
        raise VolumeError(f"{series}: uneven slice spacing: {files[at]} to {files[at + 1]} is {along[at]:.3f} mm, "
                          f"other slices are {typical:.3f} mm apart (a missing, unreadable or extra slice?)")
    lateral = steps - np.outer(along, normal)
    mean_lateral = lateral.mean(axis=0)
    wander = np.linalg.norm(lateral - mean_lateral, axis=1)
    if wander.max() > SLICE_SPACING_TOLERANCE * typical:
        at = int(np.argmax(wander))
        raise VolumeError(f"{series}: slices are not stacked on a straight line: {files[at + 1]} is shifted "
                          f"{wander[at]:.3f} mm sideways from where the other slices put it "
                          f"(tag {tag_name(TAG_POSITION)})")
    direction = np.column_stack([first.row_direction, first.column_direction, normal])
    spacing = (first.pixel_spacing_xy[0], first.pixel_spacing_xy[1], float(along.mean()))
    return SliceStack(tuple(files), positions[order[0]].copy(), spacing, direction, mean_lateral)
