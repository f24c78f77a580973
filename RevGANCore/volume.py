"""A CT volume: a voxel array plus the geometry that places it in the patient; HU-window
normalisation, grids and resampling (files: :mod:`RevGANCore.volume_io`).

Axis order (kept everywhere in RevGANCore): ``array[k, j, i]`` is (z, y, x) in numpy order,
exactly what ``SimpleITK.GetArrayFromImage`` returns; ``spacing`` and ``origin`` are
``(x, y, z)`` tuples in millimetres and ``direction`` is the row-major 3x3 matrix whose
columns are the LPS directions of the i, j and k axes, exactly what SimpleITK reports.
The physical (LPS) position of voxel (i, j, k) is ``origin + direction @ (spacing * (i, j, k))``.

- :func:`hu_to_unit` / :func:`unit_to_hu`: the seed's window [-1150, 350] HU <-> [-1, 1].
- :class:`Grid`, :func:`super_resolution_grid`, :func:`low_resolution_grid`,
  :func:`resample_to_grid`: geometry-exact resampling that keeps the physical extent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

from .errors import ConfigError, VolumeError

Vector3 = Tuple[float, float, float]
Matrix3 = Tuple[float, float, float, float, float, float, float, float, float]

IDENTITY_DIRECTION: Matrix3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class _GridGeometry:
    """Geometry shared by :class:`Volume` and :class:`Grid` (both have ``shape`` (z, y, x),
    ``spacing``, ``origin`` and ``direction``)."""

    @property
    def size_xyz(self) -> Tuple[int, int, int]:
        """Voxel counts in (x, y, z) order, matching ``spacing``."""
        return self.shape[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical_matrix(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    @property
    def physical_extent(self) -> Vector3:
        """Edge lengths in mm of the box covered by the voxels (voxel count x spacing), (x, y, z)."""
        return tuple(n * s for n, s in zip(self.size_xyz, self.spacing))  # type: ignore[return-value]

    def _same_grid(self, other, tolerance: float) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance)
                and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance * 1e3)
                and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance))


@dataclass(frozen=True)
class Volume(_GridGeometry):
    """Voxels in (z, y, x) order with their LPS geometry. Never modified in place by this
    package: every operation returns a new Volume."""

    array: np.ndarray
    spacing: Vector3 = (1.0, 1.0, 1.0)
    origin: Vector3 = (0.0, 0.0, 0.0)
    direction: Matrix3 = IDENTITY_DIRECTION
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f" ({self.source})" if self.source else ""
        if not isinstance(self.array, np.ndarray):
            raise VolumeError(f"volume array must be a numpy array, got {type(self.array).__name__}{where}")
        if self.array.ndim != 3:
            raise VolumeError(
                f"a volume must be 3D (z, y, x); got {self.array.ndim}D with shape {self.array.shape}{where}")
        if min(self.array.shape) < 1:
            raise VolumeError(f"volume has an empty axis, shape {self.array.shape}{where}")
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise VolumeError(f"spacing and origin need 3 values and direction 9{where}")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise VolumeError(f"spacing must be positive and finite, got {spacing}{where}")
        if not all(np.isfinite(origin)) or not all(np.isfinite(direction)):
            raise VolumeError(f"origin and direction must be finite{where}")
        matrix = np.asarray(direction).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
            raise VolumeError(f"direction must be an orthonormal 3x3 matrix, got {direction}{where}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # -- geometry -----------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, int, int]:
        """Array shape, (z, y, x)."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    def same_geometry(self, other: "Volume", tolerance: float = 1e-6) -> bool:
        return self._same_grid(other, tolerance)

    # -- derived volumes ----------------------------------------------------------------
    def with_array(self, array: np.ndarray, source: str = "") -> "Volume":
        """A new Volume with this geometry and another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise VolumeError(f"array shape {tuple(array.shape)} does not match volume shape {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction, source or self.source)

    def __repr__(self) -> str:
        return (f"Volume(shape(z,y,x)={self.shape}, dtype={self.array.dtype}, spacing(x,y,z)="
                f"{tuple(round(s, 4) for s in self.spacing)}, origin={tuple(round(o, 3) for o in self.origin)}"
                f"{', oblique' if not np.allclose(self.direction_matrix, np.diag(np.diag(self.direction_matrix))) else ''})")

    @property
    def grid(self) -> "Grid":
        """The voxel grid of this volume (shape and geometry without the voxels)."""
        return Grid(self.shape, self.spacing, self.origin, self.direction)


# =========================================================================== grids


@dataclass(frozen=True)
class Grid(_GridGeometry):
    """A voxel grid in the patient: shape (z, y, x) plus the same geometry fields as
    :class:`Volume`. Used as a resampling target (e.g. the high-resolution grid)."""

    shape: Tuple[int, int, int]
    spacing: Vector3 = (1.0, 1.0, 1.0)
    origin: Vector3 = (0.0, 0.0, 0.0)
    direction: Matrix3 = IDENTITY_DIRECTION

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise VolumeError(f"a grid needs 3 positive sizes (z, y, x), got {self.shape}")
        # Reuse Volume's checks of spacing, origin and direction on a 1-voxel stand-in.
        probe = Volume(np.zeros((1, 1, 1), np.float32), self.spacing, self.origin, self.direction)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", probe.spacing)
        object.__setattr__(self, "origin", probe.origin)
        object.__setattr__(self, "direction", probe.direction)

    def corner(self) -> np.ndarray:
        """LPS position of the outer corner of voxel (0, 0, 0): origin minus half a voxel
        along each axis. Grids with equal extent and equal corner cover the same box."""
        return np.asarray(self.origin) - self.direction_matrix @ (np.asarray(self.spacing) / 2)

    def same_as(self, other: "Grid", tolerance: float = 1e-6) -> bool:
        return self._same_grid(other, tolerance)


def _as_grid(reference) -> Grid:
    if isinstance(reference, Grid):
        return reference
    if isinstance(reference, Volume):
        return reference.grid
    raise VolumeError(f"a resampling reference must be a Volume or a Grid, got {type(reference).__name__}")


def _checked_factors(factors_xyz) -> Tuple[int, int, int]:
    factors = tuple(int(f) for f in factors_xyz)
    if len(factors) != 3 or min(factors) < 1 or any(f != g for f, g in zip(factors, factors_xyz)):
        raise VolumeError(f"scale factors must be 3 positive integers (x, y, z), got {tuple(factors_xyz)}")
    return factors  # type: ignore[return-value]


def super_resolution_grid(volume, factors_xyz=(2, 2, 4)) -> Grid:
    """The finer grid covering the same physical box as ``volume`` (a Volume or Grid).

    Spacing is divided by the factors and voxel counts multiplied; the origin (centre of
    the first voxel) moves by half the spacing difference along each axis direction, so
    the outer corner and the extent are unchanged; the direction is unchanged."""
    grid = _as_grid(volume)
    factors = np.asarray(_checked_factors(factors_xyz), dtype=float)
    spacing = np.asarray(grid.spacing)
    fine_spacing = spacing / factors
    origin = np.asarray(grid.origin) + grid.direction_matrix @ ((fine_spacing - spacing) / 2)
    shape = tuple(int(n * f) for n, f in zip(grid.shape, factors[::-1]))
    return Grid(shape, tuple(fine_spacing), tuple(origin), grid.direction)  # type: ignore[arg-type]


def low_resolution_grid(volume, factors_xyz=(2, 2, 4), round_up: bool = False) -> Grid:
    """The coarser grid covering the same physical box (inverse of
    :func:`super_resolution_grid`); voxel counts must be divisible by the factors, unless
    ``round_up``: then an incomplete last block still makes a coarse voxel (the box grows
    by less than one coarse voxel at the far end)."""
    grid = _as_grid(volume)
    factors = _checked_factors(factors_xyz)
    if not round_up and any(n % f for n, f in zip(grid.size_xyz, factors)):
        raise VolumeError(f"grid size (x, y, z) {grid.size_xyz} is not divisible by the factors {factors}")
    spacing = np.asarray(grid.spacing)
    coarse_spacing = spacing * np.asarray(factors, dtype=float)
    origin = np.asarray(grid.origin) + grid.direction_matrix @ ((coarse_spacing - spacing) / 2)
    shape = tuple(-(-n // f) for n, f in zip(grid.shape, factors[::-1]))
    return Grid(shape, tuple(coarse_spacing), tuple(origin), grid.direction)  # type: ignore[arg-type]


# =========================================================================== HU window

#: The seed paper's intensity window: HU in [-1150, 350] maps linearly onto [-1, 1].
DEFAULT_HU_WINDOW: Tuple[float, float] = (-1150.0, 350.0)


def _checked_window(window) -> Tuple[float, float]:
    low, high = float(window[0]), float(window[1])
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(f"an HU window needs two finite values, low < high; got {tuple(window)}")
    return low, high


def hu_to_unit(hu, window=DEFAULT_HU_WINDOW, clip: bool = True):
    """Map Hounsfield units to network units: the window maps linearly onto [-1, 1]
    (low -> -1, high -> +1). With ``clip`` (default, the seed paper's normalisation) values
    outside the window are clipped first and lost (bone above 350 HU becomes 1); residual
    models use ``clip=False`` so dense bone and metal pass through beyond +1. Works on numpy
    arrays (returns float32), torch tensors (keeps their dtype and device) and floats."""
    low, high = _checked_window(window)
    half = (high - low) / 2.0
    centre = (high + low) / 2.0
    if hasattr(hu, "clamp"):  # a torch tensor
        return ((hu.clamp(low, high) if clip else hu) - centre) / half
    if isinstance(hu, np.ndarray):
        values = hu.astype(np.float32, copy=False)
        if clip:
            values = np.clip(values, low, high)
        return ((values - np.float32(centre)) / np.float32(half)).astype(np.float32, copy=False)
    value = min(max(float(hu), low), high) if clip else float(hu)
    return (value - centre) / half


def unit_to_hu(x, window=DEFAULT_HU_WINDOW):
    """Inverse of :func:`hu_to_unit` on [-1, 1]: ``hu = centre + x * half_width``. Does not
    clip, so a network output slightly outside [-1, 1] keeps its value."""
    low, high = _checked_window(window)
    half = (high - low) / 2.0
    centre = (high + low) / 2.0
    if hasattr(x, "clamp"):
        return x * half + centre
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32, copy=False) * np.float32(half) + np.float32(centre)).astype(
            np.float32, copy=False)
    return float(x) * half + centre


# =========================================================================== SimpleITK


def volume_to_image(volume: Volume):
    """A SimpleITK image with the volume's voxels and geometry (the array is copied)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def image_to_volume(image, source: str = "") -> Volume:
    """A float32 :class:`Volume` from a SimpleITK image; rejects anything but one scalar
    3D volume (2D, 4D, vector/colour, complex, single-slice, non-finite voxels)."""
    import SimpleITK as sitk

    name = source or "image"
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                          "(a colour or vector image), not a scalar CT volume")
    if "complex" in image.GetPixelIDTypeAsString():
        raise VolumeError(f"{name}: has complex voxels, not a CT volume")
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        # A 3D volume stored with a unit 4th axis (some NRRD/NIfTI writers do this).
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
        dimension = 3
    if dimension == 2:
        raise VolumeError(f"{name}: is a 2D image (size {image.GetSize()}); a 3D volume is needed")
    if dimension != 3:
        raise VolumeError(f"{name}: is a {dimension}D image (size {image.GetSize()}); "
                          "a single 3D volume is needed (not a time series)")
    if min(image.GetSize()) < 2:
        raise VolumeError(f"{name}: has a single slice (size x, y, z = {image.GetSize()}): "
                          "a 2D image, a 3D volume is needed")
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise VolumeError(f"{name}: contains {bad} non-finite voxels (NaN or infinity)")
    return Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), source)


# =========================================================================== resampling

INTERPOLATIONS = ("bspline", "linear", "nearest")

#: Fewest samples along an axis for cubic B-spline interpolation (its support is 4 wide).
BSPLINE_MIN_SAMPLES = 4


def resample_to_grid(volume: Volume, reference, interpolation: str = "bspline",
                     default_value: float = -1024.0) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (a Volume or :class:`Grid`) in
    physical (LPS) space. ``interpolation`` is "bspline" (cubic B-spline, for images),
    "linear" or "nearest" (for labels); points outside the input get ``default_value``
    (air). A cubic B-spline needs 4 samples along every axis: on a shorter axis (a
    2-slice volume) SimpleITK returns garbage (values up to 1e20, different on every run),
    so such volumes are resampled linearly instead. Returns float32; the input is not
    modified."""
    import SimpleITK as sitk

    grid = _as_grid(reference)
    methods = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear,
               "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in methods:
        raise ConfigError(f"unknown interpolation {interpolation!r}; use one of {INTERPOLATIONS}")
    if interpolation == "bspline" and min(volume.shape) < BSPLINE_MIN_SAMPLES:
        interpolation = "linear"
    image = volume_to_image(volume.with_array(volume.array.astype(np.float32, copy=False)))
    resampled = sitk.Resample(image, list(grid.size_xyz), sitk.Transform(), methods[interpolation],
                              grid.origin, grid.spacing, grid.direction, float(default_value),
                              sitk.sitkFloat32)
    return Volume(sitk.GetArrayFromImage(resampled), grid.spacing, grid.origin, grid.direction,
                  volume.source)
