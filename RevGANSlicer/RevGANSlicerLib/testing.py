"""Helpers shared by the module's self-test (in Slicer) and the pytest suite (slicer-core).

They build test inputs (oblique nodes, phantom cases, tiny untrained models) and check
results (output geometry, window/level, closeness to the ground truth), so both test
layers check the same things the same way.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .nodes import ijkToRasArray, nodeCorner, nodeDirections, nodeExtent, volumeFromNode
from .tasks import Task

#: Super-resolution factors (x, y, z) of the project's models.
DEFAULT_FACTORS = (2, 2, 4)
SMALL_PHANTOM_SHAPE = (32, 64, 64)
#: Mean absolute errors closer than this (HU) are float rounding, not a better image: an
#: identity model's output differs from its input by about 1e-5 HU.
MIN_IMPROVEMENT_HU = 0.1


#: Set to 1 by the ctest registration (RevGANSlicer/CMakeLists.txt): on Slicer's extension
#: build machines the self-test neither downloads PyTorch nor runs inference.
SKIP_INFERENCE_VARIABLE = "REVGAN_SELFTEST_SKIP_INFERENCE"
#: Set to 1 to let a self-test without PyTorch install it (a download of up to a few GB).
INSTALL_TORCH_VARIABLE = "REVGAN_SELFTEST_INSTALL_TORCH"


def _isSet(environment: Mapping[str, str], name: str) -> bool:
    return environment.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def inferenceSkipReason(environment: Mapping[str, str], torchInstalled: bool) -> Optional[str]:
    """Why the self-test must not run models here, or None. What runs without PyTorch
    (module, panel, model cards, node round trip) is checked either way."""
    if _isSet(environment, SKIP_INFERENCE_VARIABLE):
        return f"{SKIP_INFERENCE_VARIABLE} is set (extension build machine): no PyTorch install, no inference"
    if not torchInstalled and not _isSet(environment, INSTALL_TORCH_VARIABLE):
        return (f"PyTorch is not installed and the self-test does not download it unless "
                f"{INSTALL_TORCH_VARIABLE}=1 is set")
    return None


# =========================================================================== inputs


def rotationMatrix(ax: float, ay: float, az: float) -> np.ndarray:
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def addObliqueVolumeNode(scene, name: str = "oblique CT", shape=(6, 10, 12), seed: int = 0,
                         spacing=(0.7, 0.8, 2.5), angles=(12.0, -25.0, 33.0), origin=(12.5, -40.0, 101.0)):
    """An int16 CT-like scalar volume node with an oblique IJKToRAS and a fixed window."""
    import slicer.util

    rng = np.random.default_rng(seed)
    array = np.clip(rng.normal(40.0, 300.0, size=shape), -1024, 3000).astype(np.int16)
    array.flat[0] = -1000
    matrix = np.eye(4)
    matrix[:3, :3] = rotationMatrix(*angles) @ np.diag(spacing)
    matrix[:3, 3] = origin
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(1500.0, -600.0)
    return node


def phantomCase(full: bool = False, seed: int = 0) -> Dict[str, Any]:
    """A phantom case ("lr", "hr", "sharp", "smooth" Volumes): the training-size grid when
    ``full`` (for quality checks with trained models), else a small one."""
    from .sampledata import DEFAULT_SHAPE, generatePhantomVolumes

    return generatePhantomVolumes(seed, DEFAULT_SHAPE if full else SMALL_PHANTOM_SHAPE)


def tinyGenerator(seed: int = 0):
    """A very small untrained RevGAN generator that starts as the identity map."""
    import torch

    from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d

    torch.manual_seed(seed)
    return RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, residual=True)).eval()


def tinyMetadata(modelTask: str) -> Dict[str, Any]:
    """Metadata of a tiny test model for "super_resolution" or "kernel"."""
    metadata: Dict[str, Any] = {
        "task": modelTask,
        "hu_window": [-1150.0, 350.0],
        "description": "tiny untrained test model (identity at initialisation)",
        "caveats": "for tests only",
    }
    if modelTask == "super_resolution":
        metadata["domains"] = {"x": "lr", "y": "hr"}
        metadata["scale_factors_xyz"] = list(DEFAULT_FACTORS)
    else:
        metadata["domains"] = {"x": "sharp", "y": "smooth"}
    return metadata


def tinyModel(modelTask: str, seed: int = 0):
    """A tiny untrained model in memory, as RevGANCore.modelfile represents models."""
    from RevGANCore import modelfile

    generator = tinyGenerator(seed)
    return modelfile.TranslationModel(generator=generator, metadata=_coreMetadata(modelTask, generator))


def tinyModelFile(modelTask: str, seed: int = 0, folder: Optional[str] = None) -> Tuple[str, str]:
    """(folder, path) of a tiny untrained model saved as a model file."""
    from RevGANCore import modelfile

    folder = folder or tempfile.mkdtemp(prefix="RevGANSlicer-test-")
    path = os.path.join(folder, f"tiny-{modelTask}.safetensors")
    generator = tinyGenerator(seed)
    written = modelfile.save_model(path, generator, _coreMetadata(modelTask, generator))
    return folder, str(written or path)


def _coreMetadata(modelTask: str, generator) -> Any:
    """The tiny metadata in the form the core's model files use."""
    from RevGANCore import modelfile

    values = tinyMetadata(modelTask)
    maker = getattr(modelfile, "ModelMetadata", None)
    if maker is None:
        return values
    fields = getattr(maker, "__dataclass_fields__", {})
    if "generator" in fields:
        values["generator"] = generator.config
    return maker(**{key: value for key, value in values.items() if not fields or key in fields})


# =========================================================================== checks


def sameIjkToRas(first, second, tolerance: float = 1e-9) -> bool:
    return bool(np.allclose(ijkToRasArray(first), ijkToRasArray(second), rtol=0, atol=tolerance))


def windowLevel(node) -> Tuple[float, float]:
    display = node.GetDisplayNode()
    return (round(display.GetWindow(), 6), round(display.GetLevel(), 6))


def geometryProblems(inputNode, outputNode, task: Task, factors: Sequence[int] = DEFAULT_FACTORS,
                     tolerance: float = 1e-5) -> List[str]:
    """What is wrong with the output's grid for ``task`` (empty when nothing is):
    super-resolution keeps orientation, corner and physical extent while the spacing is
    divided by ``factors`` (x, y, z) and the voxel counts multiplied; kernel conversion and
    custom models keep the input's grid exactly."""
    problems = []
    inputSpacing = np.asarray(inputNode.GetSpacing())
    outputSpacing = np.asarray(outputNode.GetSpacing())
    inputSize = np.asarray(inputNode.GetImageData().GetDimensions())
    outputSize = np.asarray(outputNode.GetImageData().GetDimensions())
    if not np.allclose(nodeDirections(inputNode), nodeDirections(outputNode), atol=tolerance):
        problems.append("orientation changed")
    if Task(task) is Task.SuperResolution:
        wanted = np.asarray(factors, dtype=float)
        if not np.allclose(outputSpacing, inputSpacing / wanted, rtol=tolerance):
            problems.append(f"spacing {tuple(outputSpacing)} is not {tuple(inputSpacing / wanted)}")
        if not np.array_equal(outputSize, inputSize * wanted.astype(int)):
            problems.append(f"size {tuple(outputSize)} is not {tuple(inputSize * wanted.astype(int))}")
        if not np.allclose(nodeExtent(outputNode), nodeExtent(inputNode), atol=tolerance * 100):
            problems.append(f"physical extent {tuple(nodeExtent(outputNode))} is not {tuple(nodeExtent(inputNode))}")
        if not np.allclose(nodeCorner(outputNode), nodeCorner(inputNode), atol=tolerance * 100):
            problems.append(f"corner {tuple(nodeCorner(outputNode))} moved from {tuple(nodeCorner(inputNode))}")
    else:
        if not np.array_equal(outputSize, inputSize):
            problems.append(f"size {tuple(outputSize)} is not {tuple(inputSize)}")
        if not sameIjkToRas(inputNode, outputNode, tolerance):
            problems.append("IJKToRAS changed")
    return problems


def meanAbsoluteError(volume: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.abs(volume[mask].astype(np.float64) - reference[mask].astype(np.float64))))


def closerToReference(inputNode, outputNode, reference) -> Tuple[bool, str]:
    """Whether the output is closer (mean absolute error in HU, inside the body, by at least
    :data:`MIN_IMPROVEMENT_HU`) to the ``reference`` Volume than the input is. A
    super-resolution input is first put on the reference grid by B-spline interpolation,
    the baseline any method must beat."""
    source = volumeFromNode(inputNode)
    result = volumeFromNode(outputNode)
    if source.shape != reference.shape:
        from RevGANCore.volume import resample_to_grid

        source = resample_to_grid(source, reference)
    if result.shape != reference.shape:
        return False, f"output shape {result.shape} differs from the reference's {reference.shape}"
    mask = reference.array > -900.0
    before = meanAbsoluteError(source.array, reference.array, mask)
    after = meanAbsoluteError(result.array, reference.array, mask)
    message = f"MAE to the reference inside the body: input {before:.1f} HU, result {after:.1f} HU"
    return after < before - MIN_IMPROVEMENT_HU, message
