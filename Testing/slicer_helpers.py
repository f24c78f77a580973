"""Shared set-up of the Slicer-module tests: the real MRML library from ``slicer-core``.

``slicer-core`` gives MRML in plain Python (scene, volume nodes, storage nodes, slice
nodes) but no application: each test gets a fresh ``vtkMRMLScene`` that is also
``slicer.mrmlScene``, as in Slicer. ``RevGANSlicer/`` is put on ``sys.path`` so
``RevGANSlicerLib`` imports as it does in Slicer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "RevGANSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

slicer = pytest.importorskip("slicer", reason="the slicer-core package (real MRML in plain Python) is needed")
import slicer.util  # noqa: E402
import vtk  # noqa: E402


@pytest.fixture
def scene():
    """A fresh MRML scene, installed as ``slicer.mrmlScene`` for the test's duration."""
    previous = getattr(slicer, "mrmlScene", None)
    mrml = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml
    yield mrml
    mrml.Clear(1)
    slicer.mrmlScene = previous


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A rotation matrix from three angles in degrees (x, then y, then z)."""
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def addVolumeNode(scene, array: np.ndarray, ijkToRas: np.ndarray, name: str = "CT", window=(1500.0, -600.0)):
    """A scalar volume node with these voxels, this IJKToRAS and a fixed window/level."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRas))
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(*window)
    return node


def obliqueIjkToRas(spacing=(0.7, 0.8, 2.5), origin=(12.5, -40.0, 101.0), angles=(12.0, -25.0, 33.0)) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(*angles) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def ijkToRas(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volumeState(node):
    """What a test compares to show a volume node was left untouched: a copy of its voxels,
    its IJKToRAS, name, window and level."""
    display = node.GetDisplayNode()
    return (slicer.util.arrayFromVolume(node).copy(), ijkToRas(node).copy(), node.GetName(),
            display.GetWindow(), display.GetLevel())


def assertVolumeUnchanged(node, state) -> None:
    array, matrix, name, window, level = volumeState(node)
    np.testing.assert_array_equal(array, state[0])
    np.testing.assert_array_equal(matrix, state[1])
    assert (name, window, level) == tuple(state[2:])


def ctLikeArray(shape=(6, 10, 12), seed=0, dtype=np.int16) -> np.ndarray:
    """Random CT-like voxels (HU) that include air, so they pass CT range checks."""
    rng = np.random.default_rng(seed)
    array = rng.normal(40.0, 300.0, size=shape)
    array.flat[0] = -1000.0
    return np.clip(array, -1024, 3000).astype(dtype)


def coreHas(*modules: str) -> bool:
    """Whether RevGANCore has these submodules (some arrive from other branches)."""
    import importlib.util

    for name in modules:
        try:
            if importlib.util.find_spec(f"RevGANCore.{name}") is None:
                return False
        except ImportError:
            return False
    return True


def needsCore(*modules: str):
    """Skip marker naming the RevGANCore modules a test needs but this checkout lacks."""
    missing = [name for name in modules if not coreHas(name)]
    return pytest.mark.skipif(bool(missing), reason=f"needs RevGANCore.{', RevGANCore.'.join(missing)} "
                                                    "(from another branch, not merged yet)")


__all__ = ["slicer", "vtk", "scene", "rotation", "addVolumeNode", "obliqueIjkToRas", "ijkToRas", "ctLikeArray",
           "volumeState", "assertVolumeUnchanged",
           "coreHas", "needsCore", "ROOT", "MODULE_DIR", "os"]
