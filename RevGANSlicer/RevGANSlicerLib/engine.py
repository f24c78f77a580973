"""The one place where the module calls RevGANCore's model files and inference.

Everything the module needs from the core goes through these functions, so a change in
the core's interface is adapted here and nowhere else:

- :func:`defaultModel`, :func:`shippedModels`, :func:`resolveModel`, :func:`loadModel`,
  :func:`modelMetadata`, :func:`modelCard`: RevGANCore.registry and RevGANCore.modelfile;
- :func:`translateVolume`: RevGANCore.inference.translate, in this process;
- :func:`translateCommand`: the ``revgan translate`` command line for a separate process;
- :func:`availableDevices`: torch's devices (imports torch: call on first use only).

Nothing here imports torch at module level.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .corepath import coreParentFolder, ensureRevGANCoreImportable
from .tasks import metadataValue

ensureRevGANCoreImportable()

from RevGANCore.errors import ModelFileError  # noqa: E402

ProgressCallback = Callable[[int, int], None]

#: Python code run by the separate process: make RevGANCore importable from the folder
#: the module found it in, then run ``python -m RevGANCore`` with the remaining arguments.
#: (``-c`` rather than ``-m`` so the path does not depend on how the PythonSlicer
#: launcher treats PYTHONPATH; PYTHONPATH is set as well.)
_BOOTSTRAP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
              "runpy.run_module('RevGANCore', run_name='__main__', alter_sys=True)")


# =========================================================================== models


def shippedModels() -> List[Any]:
    """The registry's models (empty when none is installed or the registry is broken)."""
    from RevGANCore import registry

    try:
        return registry.list_models()
    except ModelFileError:
        return []


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


def loadModel(nameOrPath: str, device: str = "cpu"):
    """Load a model file (or a shipped model by name). Imports torch."""
    from RevGANCore import modelfile

    return modelfile.load_model(resolveModel(nameOrPath), device=device)


def modelMetadata(model: Any) -> Any:
    """The metadata of a loaded model (a mapping or an object)."""
    return getattr(model, "metadata", None)


def readMetadata(nameOrPath: str) -> Any:
    """A model file's metadata, without keeping the model (weights are read only when the
    core has no metadata-only reader)."""
    from RevGANCore import modelfile

    path = resolveModel(nameOrPath)
    for reader in ("read_metadata", "load_metadata"):
        function = getattr(modelfile, reader, None)
        if function is not None:
            return function(path)
    return modelMetadata(modelfile.load_model(path, device="cpu"))


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
    """(label, text) rows summarising a model for the panel: what it was trained on, its
    domains, scale factors, HU window and caveats."""
    rows: List[Tuple[str, str]] = []

    def add(label: str, *keys: str) -> None:
        for key in keys:
            value = _text(metadataValue(metadata, key, None))
            if value:
                rows.append((label, value))
                return

    add("Description", "description", "summary")
    add("Task", "task")
    domains = metadataValue(metadata, "domains", None)
    if isinstance(domains, dict) and domains:
        rows.append(("Domains", f"x = {_text(domains.get('x'))}, y = {_text(domains.get('y'))}"))
    add("Scale factors (x, y, z)", "scale_factors_xyz", "factors_xyz")
    add("HU window", "hu_window")
    training = metadataValue(metadata, "training", None)
    if isinstance(training, dict) and training:
        keys = [key for key in ("dataset", "data", "iterations", "metrics", "date") if key in training]
        summary = "; ".join(f"{key}: {_text(training[key])}" for key in keys) or _text(training)
        rows.append(("Training", summary if len(summary) <= 400 else summary[:397] + "..."))
    else:
        add("Training", "training_data", "training", "provenance")
    add("Caveats", "caveats", "limitations")
    if modelPath:
        rows.append(("File", modelPath))
        card = modelCardPath(modelPath)
        if card:
            rows.append(("Model card", card))
    return rows


# =========================================================================== running


class _MessageCollector(logging.Handler):
    """Forwards the core's warnings (e.g. "out of memory: halving the tile") to a callback."""

    def __init__(self, callback: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.callback(record.getMessage())
        except Exception:  # a status line must never break the computation
            pass


def translateVolume(model: Any, volume: Any, direction: str = "forward", tileSize: int = 0,
                    device: str = "auto", progress: Optional[ProgressCallback] = None,
                    cancel: Optional[Callable[[], bool]] = None,
                    message: Optional[Callable[[str], None]] = None) -> Any:
    """Translate ``volume`` (a RevGANCore Volume in HU) in this process; returns the new
    Volume (super-resolution: on the finer grid). ``tileSize`` 0 lets the core choose.
    ``progress(done, total)`` is called per tile, ``cancel()`` is polled between tiles
    (RevGANCore.errors.CancelledError when it returns True) and ``message(text)``
    receives the core's notes (memory fallbacks)."""
    from RevGANCore.inference import translate

    options = dict(direction=direction, tile_size=int(tileSize) or None, device=device,
                   progress=progress, cancel=cancel)
    parameters = inspect.signature(translate).parameters
    if message is not None:
        for name in ("message", "on_message", "log"):
            if name in parameters:
                options[name] = message
                break
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        options = {key: value for key, value in options.items() if key in parameters or key == "direction"}
    logger = logging.getLogger("RevGANCore")
    collector = _MessageCollector(message) if message is not None else None
    if collector is not None:
        logger.addHandler(collector)
    try:
        return translate(model, volume, **options)
    finally:
        if collector is not None:
            logger.removeHandler(collector)


def revganCommand(arguments: Sequence[str], python: Optional[str] = None) -> List[str]:
    """The command line that runs ``revgan <arguments>`` (``python -m RevGANCore``) in a
    separate process: PythonSlicer inside Slicer, with this RevGANCore."""
    if python is None:
        from .process import pythonExecutable

        python = pythonExecutable()
    return [python, "-c", _BOOTSTRAP, coreParentFolder()] + [str(argument) for argument in arguments]


def translateCommand(inputPath: str, outputPath: str, modelPath: str, direction: str = "forward",
                     tileSize: int = 0, device: str = "auto", python: Optional[str] = None) -> List[str]:
    """The command that runs ``revgan translate`` in a separate process (PythonSlicer
    inside Slicer)."""
    command = revganCommand(["translate", str(inputPath), str(outputPath), "--model", str(modelPath),
                             "--direction", direction, "--device", device or "auto"], python=python)
    if tileSize:
        command += ["--tile", str(int(tileSize))]
    return command


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


def generatorConfig(modelOrMetadata: Any) -> Any:
    """The generator configuration of a loaded model or of a model file's metadata (None
    when it cannot be told)."""
    from RevGANCore.networks import GeneratorConfig

    generator = getattr(modelOrMetadata, "generator", None)
    config = getattr(generator, "config", None)
    if isinstance(config, GeneratorConfig):
        return config
    values = metadataValue(modelOrMetadata, "generator", None)
    if isinstance(values, GeneratorConfig):
        return values
    if isinstance(values, dict) and values:
        return GeneratorConfig.from_dict(values)
    return None


def minimumTileSize(config: Any) -> int:
    """Smallest tile edge the core accepts for a generator: a halo of the receptive-field
    radius (rounded up to the stride) on both sides of at least one stride of core."""
    from RevGANCore.networks import receptive_field

    field = receptive_field(config)
    try:
        from RevGANCore.tiling import halo_for, minimum_window
    except ImportError:
        halo = -(-field.radius // field.stride) * field.stride
        return 2 * halo + field.stride
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
