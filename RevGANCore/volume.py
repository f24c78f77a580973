"""A CT volume: a voxel array plus the geometry that places it in the patient.

Axis order (kept everywhere in RevGANCore): ``array[k, j, i]`` is (z, y, x) in numpy order,
exactly what ``SimpleITK.GetArrayFromImage`` returns; ``spacing`` and ``origin`` are
``(x, y, z)`` tuples in millimetres and ``direction`` is the row-major 3x3 matrix whose
columns are the LPS directions of the i, j and k axes, exactly what SimpleITK reports.
The physical (LPS) position of voxel (i, j, k) is ``origin + direction @ (spacing * (i, j, k))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

from .errors import VolumeError

Vector3 = Tuple[float, float, float]
Matrix3 = Tuple[float, float, float, float, float, float, float, float, float]

IDENTITY_DIRECTION: Matrix3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Volume:
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

    def same_geometry(self, other: "Volume", tolerance: float = 1e-6) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance)
                and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance * 1e3)
                and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance))

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
