"""The one place where the module calls RevGANCore's model files and inference.

Everything the module needs from the core goes through these functions, so a change in
the core's interface is adapted here and nowhere else:

- :func:`defaultModel`, :func:`shippedModels`, :func:`resolveModel`: RevGANCore.registry;
  :func:`loadModel`: RevGANCore.modelfile; :func:`readMetadata`: RevGANCore.modelmetadata
  (torch-free);
- :func:`translateVolume`: RevGANCore.inference.translate, in this process;
- :func:`translateCommand`: the ``revgan translate`` command line for a separate process;
- :func:`availableDevices`: torch's devices (imports torch: call on first use only).

Nothing here imports torch at module level, and the model card's path (the registry,
:func:`readMetadata`, :func:`modelCard`) never imports it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from .corepath import coreParentFolder, ensureRevGANCoreImportable

ensureRevGANCoreImportable()

from RevGANCore.errors import ConfigError, ModelFileError  # noqa: E402

ProgressCallback = Callable[[int, int], None]

#: Voxel type of every result in Slicer, in this process or a separate one: whole HU, half
#: the memory of float32 (the model's output carries no meaningful sub-HU detail).
RESULT_DTYPE = "int16"

#: Python code run by the separate process: make RevGANCore importable from the folder
#: the module found it in, then run ``python -m RevGANCore`` with the remaining arguments.
#: (``-c`` rather than ``-m`` so the path does not depend on how the PythonSlicer
#: launcher treats PYTHONPATH; PYTHONPATH is set as well.)
_BOOTSTRAP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
              "runpy.run_module('RevGANCore', run_name='__main__', alter_sys=True)")


# =========================================================================== models


def shippedModels() -> List[Any]:
    """The registry's models (empty when none is installed)."""
    from RevGANCore import registry

    return list(registry.list_models())


def defaultModel(modelTask: str) -> Optional[str]:
    """Path of the shipped model for ``modelTask`` ("super_resolution" or "kernel"), or
    None when no such model is installed."""
    from RevGANCore import registry

    try:
        return str(registry.default_model(modelTask).path)
    except ModelFileError:
        return None


def resolveModel(nameOrPath: str) -> str:
    """A model file path from a path or a shipped model's name (ModelFileError if neither)."""
    if not nameOrPath:
        raise ModelFileError("no model file chosen")
    from RevGANCore import registry

    return str(registry.get_model_path(nameOrPath))


def allModels() -> List[Any]:
    """Shipped models, then the user's (RevGANCore.registry.ModelEntry, with ``origin``)."""
    from RevGANCore import registry

    return list(registry.all_models())


def addUserModel(path: str, name: Optional[str] = None) -> Any:
    """Validate a model file and copy it into the user's model folder (with its checksum)."""
    from RevGANCore.model_store import add_model

    return add_model(path, name=name or None)


def removeUserModel(name: str) -> Any:
    from RevGANCore.model_store import remove_model

    return remove_model(name)


def userModelsFolder() -> str:
    from RevGANCore.model_store import store_dir

    return str(store_dir())


def loadModel(nameOrPath: str, device: str = "cpu"):
    """Load a model file (or a shipped model by name). Imports torch."""
    from RevGANCore import modelfile

    return modelfile.load_model(resolveModel(nameOrPath), device=device)


def readMetadata(nameOrPath: str) -> Any:
    """A model file's validated metadata from its header alone: no weights are read and
    torch is not imported (the panel shows the model card with it)."""
    from RevGANCore.modelmetadata import read_metadata

    return read_metadata(resolveModel(nameOrPath))


def modelCardPath(modelPath: str) -> Optional[str]:
    """The model card (.md) shipped with a model file, when there is one."""
    if not modelPath:
        return None
    stem, _ = os.path.splitext(modelPath)
    for candidate in (stem + ".md", os.path.join(os.path.dirname(modelPath), "README.md")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    if isinstance(value, (list, tuple)):
        return "; ".join(_text(item) for item in value if item)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_text(item)}" for key, item in value.items())
    return str(value)


def modelCard(metadata: Any, modelPath: str = "") -> List[Tuple[str, str]]:
    """(label, text) rows summarising a model (its RevGANCore ModelMetadata) for the panel:
    what it was trained on, its domains, scale factors, HU window and caveats."""
    rows: List[Tuple[str, str]] = [("Description", metadata.description), ("Task", metadata.task),
                                   ("Domains", f"x = {metadata.domains['x']}, y = {metadata.domains['y']}")]
    if metadata.scale_factors_xyz:
        rows.append(("Scale factors (x, y, z)", _text(metadata.scale_factors_xyz)))
    rows.append(("HU window", _text(metadata.hu_window)))
    training = metadata.training
    keys = [key for key in ("dataset", "data", "iterations", "metrics", "date") if key in training]
    summary = "; ".join(f"{key}: {_text(training[key])}" for key in keys) or _text(training)
    rows.append(("Training", summary if len(summary) <= 400 else summary[:397] + "..."))
    rows.append(("Caveats", metadata.caveats))
    if modelPath:
        rows.append(("File", modelPath))
        card = modelCardPath(modelPath)
        if card:
            rows.append(("Model card", card))
    return [(label, text) for label, text in rows if text]


# =========================================================================== running


def translateVolume(model: Any, volume: Any, direction: str = "forward", tileSize: int = 0,
                    device: str = "auto", progress: Optional[ProgressCallback] = None,
                    cancel: Optional[Callable[[], bool]] = None,
                    message: Optional[Callable[[str], None]] = None,
                    warning: Optional[Callable[[str], None]] = None) -> Any:
    """Translate ``volume`` (a RevGANCore Volume in HU) in this process; returns the new
    Volume (super-resolution: on the finer grid), int16 whole HU like the separate
    process's result. ``tileSize`` 0 lets the core choose. ``progress(done, total)`` is
    called before the first tile and after each, ``cancel()`` is polled between tiles
    (RevGANCore.errors.CancelledError when it returns True), ``message(text)`` receives
    the core's notes (plan, device, memory fallbacks) and ``warning(text)`` its warnings
    (e.g. a voxel spacing outside the model's range; unlabelled, like the separate process's
    warning events; without it they go to ``message`` as "warning: ...")."""
    from RevGANCore.inference import translate

    return translate(model, volume, direction=direction, tile_size=int(tileSize) or None, device=device,
                     progress=progress, cancel=cancel, out_dtype=RESULT_DTYPE, log=message, warn=warning)


def revganCommand(arguments: Sequence[str], python: Optional[str] = None) -> List[str]:
    """The command line that runs ``revgan <arguments>`` (``python -m RevGANCore``) in a
    separate process: PythonSlicer inside Slicer, with this RevGANCore."""
    if python is None:
        from .process import pythonExecutable

        python = pythonExecutable()
    return [python, "-c", _BOOTSTRAP, coreParentFolder()] + [str(argument) for argument in arguments]


def translateCommand(inputPath: str, outputPath: str, modelPath: str, direction: str = "forward",
                     tileSize: int = 0, device: str = "auto", python: Optional[str] = None,
                     threads: int = 0) -> List[str]:
    """The command that runs ``revgan translate`` in a separate process (PythonSlicer
    inside Slicer); ``threads`` > 0 limits its CPU threads (``--threads``). ``--no-air-check``:
    the input is a volume node the user chose, which :func:`translateVolume` in this process
    takes as it is too (a soft-tissue crop has no air)."""
    command = revganCommand(["translate", str(inputPath), str(outputPath), "--model", str(modelPath),
                             "--direction", direction, "--device", device or "auto", "--dtype", RESULT_DTYPE,
                             "--progress", "jsonl", "--no-air-check"], python=python)
    if tileSize:
        command += ["--tile", str(int(tileSize))]
    if threads:
        command += ["--threads", str(int(threads))]
    return command


@contextlib.contextmanager
def cpuThreads(threads: int = 0) -> Iterator[None]:
    """PyTorch's CPU thread count set to ``threads`` while the block runs in this process,
    then restored (0: left as it is). Imports torch only when ``threads`` > 0."""
    threads = int(threads or 0)
    if threads < 0:
        raise ConfigError(f"CPU threads must be 0 (automatic) or a positive number, got {threads}")
    if not threads:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def processEnvironment(base: Optional[dict] = None) -> dict:
    """Environment for the separate process: RevGANCore's folder first on PYTHONPATH,
    unbuffered output (progress arrives as it happens), UTF-8 output."""
    environment = dict(os.environ if base is None else base)
    folder = coreParentFolder()
    existing = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = folder + (os.pathsep + existing if existing else "")
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONIOENCODING"] = "utf-8"
    return environment


def minimumTileSize(metadata: Any) -> int:
    """Smallest tile edge the core accepts for a model (its ModelMetadata): a
    halo of the receptive-field radius (rounded up to the stride) on both sides of at
    least one stride of core."""
    from RevGANCore.networks import receptive_field
    from RevGANCore.tiling import halo_for, minimum_window

    field = receptive_field(metadata.generator_config)
    return int(minimum_window(halo_for(field.radius, field.stride), field.stride))


def releaseMemory() -> None:
    """Give cached GPU memory back to the driver after a run (other extensions and the
    next run need it); does nothing when torch was never imported or has no GPU."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# =========================================================================== devices


def availableDevices() -> List[Tuple[str, str]]:
    """(name, description) of the devices the user can pick: "auto", "cpu", each
    "cuda:i" and "mps" on Apple silicon. Imports torch."""
    import torch

    devices = [("auto", "auto (first GPU if any, else CPU)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append((f"cuda:{index}", f"cuda:{index} \u2013 {properties.name}, "
                                             f"{properties.total_memory / 2 ** 30:.0f} GiB"))
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        devices.append(("mps", "mps \u2013 Apple GPU (experimental: some 3D operations are slow or missing)"))
    return devices


def deviceNames(devices: Sequence[Tuple[str, str]]) -> List[str]:
    return [name for name, _ in devices]
