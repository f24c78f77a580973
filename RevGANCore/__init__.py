"""RevGANCore: memory-efficient 3D reversible GANs for CT volumes.

A library first: every feature is a function or class callable from Python (and from
3D Slicer's Python console); the ``revgan`` command and the Slicer module are thin callers.

Axis convention, used everywhere in this package: a volume's voxel array is indexed
``array[k, j, i]`` (z, y, x, numpy order, as ``SimpleITK.GetArrayFromImage`` returns it),
while ``spacing`` and ``origin`` are ``(x, y, z)`` tuples and ``direction`` is the 3x3
row-major matrix whose columns are the physical (LPS) directions of the i, j, k axes,
exactly as SimpleITK reports them.

Heavy modules (torch, SimpleITK) are imported lazily by the submodules that need them,
so ``import RevGANCore`` stays cheap.
"""

__version__ = "0.1.0"

from .errors import RevGANError  # noqa: E402,F401
