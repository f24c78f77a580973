"""RevGAN model files (data, not code).

A model file is a safetensors file (see :mod:`RevGANCore.tensorfile`): the tensors are
the generator's ``state_dict`` and the header's ``__metadata__`` holds one key,
``"revgan"``, whose value is the JSON of :class:`ModelMetadata`::

    {
      "format": "revgan-model",            always this string
      "format_version": 1,                 readers refuse versions they do not know
      "name": "sr-phantom-v1",             short name ("" allowed)
      "task": "super_resolution",          "super_resolution" | "kernel" | "custom"
      "domains": {"x": "low_resolution", "y": "high_resolution"},
                                           direction "forward" maps x -> y, "inverse" y -> x
      "generator": {"in_channels": 1, "ngf": 16, "depth": 2, "norm": "none",
                    "core_activation": "silu", "coupling_channels": null,
                    "residual": false, "memory_saving": true},    GeneratorConfig
      "hu_window": [-1150.0, 350.0],       HU mapped linearly onto [-1, 1]
      "scale_factors_xyz": [2, 2, 4],      super-resolution only (null otherwise)
      "description": "...", "caveats": "...",
      "training": {...},                   free provenance: config, iterations, dataset,
                                           metrics, git commit, date
      "created_by": "RevGANCore 0.1.0",
      "extra": {}                          unknown keys of a version-1 file, kept verbatim
    }

Loading never unpickles anything and refuses, with a :class:`ModelFileError` naming the
file: a missing file, a file that is not safetensors (or is truncated or inconsistent), a
pickled PyTorch checkpoint, a safetensors file without RevGAN metadata, an unknown
format version, invalid metadata, and weights that do not match the architecture.
Metadata is validated for types and bounds in one place (:mod:`RevGANCore.modelmetadata`,
with the generator's bounds on :class:`GeneratorConfig`), and the tensor names, shapes and
dtypes in the header are compared with the architecture it describes
(:func:`generator_state_shapes`) before any weight is read or any module built: a small
file that describes a huge network is refused at once. :func:`read_metadata` does all of
that without reading the weights (the Slicer model card uses it).

Model names (as opposed to paths) are resolved by :mod:`RevGANCore.registry`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import ConfigError, ModelFileError
from .modelmetadata import (DEFAULT_HU_WINDOW, METADATA_KEY, MODEL_FORMAT, MODEL_FORMAT_VERSION, TASKS,
                            ModelMetadata, read_model_header)
from .printable import printable
from .registry import get_model_path, verified_name
from .tensorfile import read_safetensors_tensors, save_safetensors

if TYPE_CHECKING:  # torch and the networks are imported where weights are used: metadata and the registry
    import torch     # are read without them (the Slicer panel must not import torch)

    from .networks import ReceptiveField, RevGANGenerator3d

__all__ = [
    "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "METADATA_KEY", "TASKS", "DEFAULT_HU_WINDOW",
    "ModelMetadata", "TranslationModel", "save_model", "load_model", "read_metadata", "as_model", "check_task",
]



@dataclass
class TranslationModel:
    """A loaded model: the generator (eval mode) and its metadata."""

    generator: RevGANGenerator3d
    metadata: ModelMetadata
    path: Optional[Path] = None
    #: The name the registry lists the file under (:func:`registry.registered_name`), if any.
    known_as: Optional[str] = None

    @property
    def name(self) -> str:
        return self.known_as or self.metadata.name or (self.path.name if self.path else "model")

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def receptive_field(self) -> ReceptiveField:
        from .networks import receptive_field

        return receptive_field(self.generator.config)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def describe(self) -> str:
        """One printable line (names from the file are passed through :func:`printable`)."""
        meta = self.metadata
        config = self.generator.config
        factors = f", factors (x, y, z) {list(meta.scale_factors_xyz)}" if meta.scale_factors_xyz else ""
        return printable(f"{self.name}: {meta.task} ({meta.domains['x']} <-> {meta.domains['y']}), "
                         f"ngf {config.ngf}, depth {config.depth}{factors}")


def _same_architecture(a: dict, b: dict) -> bool:
    ignore = {"memory_saving"}  # a training-time choice; the weights are the same
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def save_model(path, generator: RevGANGenerator3d, metadata: ModelMetadata) -> Path:
    """Write ``generator``'s weights and ``metadata`` to ``path`` (atomically). An empty
    ``metadata.generator`` is filled from the generator; a different one is an error."""
    from .networks import RevGANGenerator3d

    path = Path(path)
    if not isinstance(generator, RevGANGenerator3d):
        raise ConfigError(f"save_model needs a RevGANGenerator3d, got {type(generator).__name__}")
    config = generator.config.to_dict()
    if not metadata.generator:
        metadata = replace(metadata, generator=config)
    elif not _same_architecture(metadata.generator, config):
        raise ConfigError(f"{path}: metadata.generator {metadata.generator} does not match the generator's "
                          f"configuration {config}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in generator.state_dict().items()}
    return save_safetensors(path, tensors, {METADATA_KEY: metadata.to_json()})


def read_metadata(path) -> ModelMetadata:
    """The validated metadata of a model file (or a registry name), checked against the
    tensor names, shapes and dtypes in its header, without reading any weights."""
    return read_model_header(get_model_path(path))[3]


def load_model(path, device: Union[str, torch.device] = "cpu") -> TranslationModel:
    """Load a model file (or a registry name) into a :class:`TranslationModel` on ``device``;
    a fitted radial kernel filter file gives a
    :class:`~RevGANCore.linear_filter_file.KernelFilterModel` (numpy, no device)."""
    import torch

    from .networks import RevGANGenerator3d

    path = get_model_path(path)
    known_as = verified_name(path)  # a listed file must still be the one its registry recorded
    header, start, size, metadata, config = read_model_header(path)
    if config is None:
        from .linear_filter_file import load_kernel_filter

        return load_kernel_filter(path, header, start, size, metadata, known_as=known_as)
    tensors = read_safetensors_tensors(path, header, start, size)
    for name, tensor in sorted(tensors.items()):
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: weight {name!r} contains NaN or infinite values")
    generator = RevGANGenerator3d(config=config)
    generator.load_state_dict(tensors, strict=True)
    generator.eval()
    try:
        generator.to(torch.device(device))
    except (RuntimeError, TypeError) as error:
        raise ModelFileError(f"{path}: cannot move the model to device {device!r} ({error})") from None
    return TranslationModel(generator, metadata, path, known_as=known_as)


def as_model(model, device: Union[str, torch.device] = "cpu") -> TranslationModel:
    """``model`` itself if it is a :class:`TranslationModel`, else :func:`load_model` of it
    (a model file path or a registry name)."""
    from .linear_filter_file import KernelFilterModel

    if isinstance(model, (TranslationModel, KernelFilterModel)):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device)
    raise ModelFileError(f"expected a TranslationModel, a model file or a model name, got {type(model).__name__}")


def check_task(model: TranslationModel, expected_task: str) -> None:
    """Raise :class:`ModelFileError` unless ``model`` is for ``expected_task``."""
    if expected_task not in TASKS:
        raise ConfigError(f"unknown task {expected_task!r}; tasks are {', '.join(TASKS)}")
    if model.task != expected_task:
        # The name the user chose for a listed model; a file given by path is named by its path.
        where = (f"model {model.known_as!r} ({model.path})" if model.known_as and model.path
                 else model.path or model.name)
        domains = model.metadata.domains
        raise ModelFileError(printable(f"{where}: is a {model.task!r} model ({domains['x']} -> {domains['y']}), "
                                       f"but this needs a {expected_task!r} model"))
