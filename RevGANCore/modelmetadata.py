"""The metadata of a RevGAN model file, and the one place where it is validated.

A model file's metadata is hostile input until proven otherwise: every field is checked
for its JSON type (no float where an integer belongs, no string where a flag belongs, no
``true`` where a number belongs) and its range before anything is built from it. Bounds:

- generator: see :data:`RevGANCore.networks.GENERATOR_LIMITS` (in_channels 1-8, ngf 1-256,
  depth 0-128, coupling_channels 1-1024, encoder_convs 0-16);
- ``hu_window``: two numbers between -100000 and 100000 HU, at least 1 HU apart;
- ``scale_factors_xyz``: three integers from 1 to 16;
- ``training_spacing_xyz``: null (files written before it existed) or three numbers from
  0.05 to 20 mm, the voxel spacing of the grid the generator ran on in training (for
  super-resolution: the high-resolution grid); ``training_slice_thickness_mm``: null or a
  number from 0.05 to 50 mm, the slice thickness of the scans the model was trained to
  translate (for super-resolution: its low-resolution input);
- ``name``, ``created_by`` and the domain names: one line of at most 256 characters;
  ``description`` and ``caveats`` may also hold newlines and tabs; no other control or
  invisible formatting character (ANSI escapes, bidi overrides) is accepted anywhere;
- the metadata JSON may not nest deeper than Python's parser allows (it is refused, not
  a RecursionError).

- ``model_type``: absent or "revgan-generator" (a generator: weights + ``generator``), or
  "radial-kernel-filter" (a fitted linear kernel converter, :mod:`RevGANCore.linear_filter_file`:
  task "kernel", empty ``generator``, a ``filter`` object validated there).

Every problem raises :class:`ConfigError` with one line naming the field; the model-file
reader adds the file name.

:func:`read_metadata` reads a model file's validated metadata from its header alone. This
module and everything it imports are torch-free, so the Slicer panel can show a model
card without importing PyTorch (seconds, and it would pin the torch version in Slicer's
process).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from . import __version__
from .errors import ConfigError, ModelFileError, RevGANError
from .generator_config import GeneratorConfig, generator_state_shapes
from .printable import has_control_characters, printable
from .tensorfile import read_safetensors_header

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "TASKS", "DEFAULT_HU_WINDOW", "HU_LIMIT", "MAX_SCALE_FACTOR",
           "MAX_NAME_LENGTH", "SPACING_LIMITS_MM", "SLICE_THICKNESS_LIMITS_MM", "METADATA_KEY", "FLOAT_DTYPES", "ModelMetadata", "check_text", "read_model_header",
           "read_metadata"]

MODEL_FORMAT = "revgan-model"
MODEL_FORMAT_VERSION = 1
GENERATOR_MODEL_TYPE = "revgan-generator"
FILTER_MODEL_TYPE = "radial-kernel-filter"  # RevGANCore.linear_filter_file
MODEL_TYPES = (GENERATOR_MODEL_TYPE, FILTER_MODEL_TYPE)
TASKS = ("super_resolution", "kernel", "custom")
DEFAULT_HU_WINDOW = (-1150.0, 350.0)
HU_LIMIT = 100_000.0
MAX_SCALE_FACTOR = 16
SPACING_LIMITS_MM = (0.05, 20.0)
SLICE_THICKNESS_LIMITS_MM = (0.05, 50.0)
MAX_NAME_LENGTH = 256  # a file name (training names models after their folder) fits
#: The safetensors ``__metadata__`` key holding the JSON of :class:`ModelMetadata`.
METADATA_KEY = "revgan"
#: Weights must be floating point: an integer tensor would be silently cast by load_state_dict.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")

_FIELDS = ("format", "format_version", "name", "task", "domains", "generator", "hu_window",
           "scale_factors_xyz", "training_spacing_xyz", "training_slice_thickness_mm", "description", "caveats", "training", "created_by",
           "model_type", "filter")
_FREE_TEXT_CONTROLS = "\n\t"  # allowed in description and caveats only


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_text(value: Any, what: str, one_line: bool = True) -> str:
    """``value`` if it is a string fit to show a person: no control or invisible formatting
    characters (free text may hold newlines and tabs), one-line text at most
    :data:`MAX_NAME_LENGTH` characters. Else :class:`ConfigError`."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if has_control_characters(value, "" if one_line else _FREE_TEXT_CONTROLS):
        kind = "control characters" if one_line else "control characters other than newlines and tabs"
        raise ConfigError(f"{what} contains {kind} (e.g. terminal escapes): {value[:60]!r}")
    if one_line and len(value) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what} is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    return value


def _check_format(format_name: Any, version: Any) -> None:
    if format_name != MODEL_FORMAT:
        raise ConfigError(f"not a RevGAN model: format is {format_name!r}, expected {MODEL_FORMAT!r}")
    if not _is_integer(version) or version < 1:
        raise ConfigError(f"invalid format_version {version!r}")
    if version > MODEL_FORMAT_VERSION:
        raise ConfigError(
            f"format_version {version} was written by a newer RevGAN; this RevGANCore ({__version__}) "
            f"reads format_version {MODEL_FORMAT_VERSION}. Update RevGAN")


def _check_domains(domains: Any) -> None:
    if (not isinstance(domains, dict) or set(domains) != {"x", "y"}
            or not all(isinstance(v, str) and v for v in domains.values()) or domains["x"] == domains["y"]):
        raise ConfigError(f"domains must be {{\"x\": name, \"y\": name}} with two different non-empty "
                          f"names, got {domains!r}")
    for key, name in domains.items():
        check_text(name, f"domain name {key}")


def _checked_hu_window(window: Any) -> Tuple[float, float]:
    if not isinstance(window, (list, tuple)) or len(window) != 2 or not all(_is_number(v) for v in window):
        raise ConfigError(f"hu_window must be two numbers [low, high], got {window!r}")
    low, high = float(window[0]), float(window[1])
    if not all(math.isfinite(v) and abs(v) <= HU_LIMIT for v in (low, high)) or high - low < 1:
        raise ConfigError(f"hu_window must be two finite numbers within +-{HU_LIMIT:g} HU, low < high by at "
                          f"least 1 HU; got {list(window)!r}")
    return low, high


def _checked_scale_factors(factors: Any) -> Optional[Tuple[int, int, int]]:
    if factors is None:
        return None
    if (not isinstance(factors, (list, tuple)) or len(factors) != 3
            or not all(_is_integer(f) and 1 <= f <= MAX_SCALE_FACTOR for f in factors)):
        raise ConfigError(f"scale_factors_xyz must be three integers from 1 to {MAX_SCALE_FACTOR}, got {factors!r}")
    return tuple(factors)


def _checked_spacing(spacing: Any) -> Optional[Tuple[float, float, float]]:
    if spacing is None:
        return None
    low, high = SPACING_LIMITS_MM
    if (not isinstance(spacing, (list, tuple)) or len(spacing) != 3
            or not all(_is_number(s) and math.isfinite(s) and low <= s <= high for s in spacing)):
        raise ConfigError(f"training_spacing_xyz must be null or three numbers from {low:g} to {high:g} mm, "
                          f"got {spacing!r}")
    return tuple(float(s) for s in spacing)  # type: ignore[return-value]


def _checked_thickness(thickness: Any) -> Optional[float]:
    if thickness is None:
        return None
    low, high = SLICE_THICKNESS_LIMITS_MM
    if not (_is_number(thickness) and math.isfinite(thickness) and low <= thickness <= high):
        raise ConfigError(f"training_slice_thickness_mm must be null or a number from {low:g} to {high:g} mm, "
                          f"got {thickness!r}")
    return float(thickness)


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model file says about its generator besides the weights."""

    task: str
    domains: Dict[str, str]
    generator: Dict[str, Any] = field(default_factory=dict)
    hu_window: Tuple[float, float] = DEFAULT_HU_WINDOW
    scale_factors_xyz: Optional[Tuple[int, int, int]] = None
    training_spacing_xyz: Optional[Tuple[float, float, float]] = None
    training_slice_thickness_mm: Optional[float] = None
    name: str = ""
    description: str = ""
    caveats: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    created_by: str = f"RevGANCore {__version__}"
    format: str = MODEL_FORMAT
    format_version: int = MODEL_FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)
    model_type: str = GENERATOR_MODEL_TYPE
    filter: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.generator, GeneratorConfig):
            object.__setattr__(self, "generator", self.generator.to_dict())
        _check_format(self.format, self.format_version)
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.model_type == FILTER_MODEL_TYPE:
            from .linear_filter_file import check_filter_settings

            if self.generator or self.task != "kernel":
                raise ConfigError("a radial kernel filter has task 'kernel' and no generator")
            object.__setattr__(self, "filter", check_filter_settings(self.filter))
        elif self.filter:
            raise ConfigError("filter settings belong to a radial-kernel-filter model, not a generator")
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        _check_domains(self.domains)
        if not isinstance(self.generator, dict):
            raise ConfigError(f"generator must be a GeneratorConfig dictionary, got {type(self.generator).__name__}")
        if self.generator:
            self.generator_config  # validates the architecture: types and bounds
        object.__setattr__(self, "hu_window", _checked_hu_window(self.hu_window))
        factors = _checked_scale_factors(self.scale_factors_xyz)
        object.__setattr__(self, "scale_factors_xyz", factors)
        if self.task == "super_resolution" and (factors is None or all(f == 1 for f in factors)):
            raise ConfigError("a super_resolution model needs scale_factors_xyz (e.g. [2, 2, 4])")
        if self.task == "kernel" and factors is not None:
            raise ConfigError("a kernel model keeps the voxel grid: scale_factors_xyz must be null")
        if self.generator:
            upscale = self.generator_config.upscale_zyx
            if upscale != (1, 1, 1) and (factors is None or tuple(upscale) != tuple(factors)[::-1]):
                raise ConfigError(f"the generator upsamples by {list(upscale)} (z, y, x) but scale_factors_xyz is "
                                  f"{list(factors) if factors else None}: they must agree")
        object.__setattr__(self, "training_spacing_xyz", _checked_spacing(self.training_spacing_xyz))
        object.__setattr__(self, "training_slice_thickness_mm",
                           _checked_thickness(self.training_slice_thickness_mm))
        check_text(self.name, "name")
        check_text(self.created_by, "created_by")
        check_text(self.description, "description", one_line=False)
        check_text(self.caveats, "caveats", one_line=False)
        for name in ("training", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a JSON object")

    @property
    def generator_config(self) -> GeneratorConfig:
        try:
            return GeneratorConfig.from_dict(self.generator)
        except TypeError as error:
            raise ConfigError(f"generator settings are invalid: {error}") from None

    def domain_names(self, direction: str = "forward") -> Tuple[str, str]:
        """(source, target) domain names for a direction."""
        if direction == "forward":
            return self.domains["x"], self.domains["y"]
        if direction == "inverse":
            return self.domains["y"], self.domains["x"]
        raise ConfigError(f"direction must be 'forward' or 'inverse', got {direction!r}")

    def to_dict(self) -> dict:
        values = {
            "format": self.format, "format_version": self.format_version, "name": self.name,
            "task": self.task, "domains": dict(self.domains), "generator": dict(self.generator),
            "hu_window": list(self.hu_window),
            "scale_factors_xyz": list(self.scale_factors_xyz) if self.scale_factors_xyz else None,
            "training_spacing_xyz": list(self.training_spacing_xyz) if self.training_spacing_xyz else None,
            "training_slice_thickness_mm": self.training_slice_thickness_mm,
            "description": self.description, "caveats": self.caveats, "training": self.training,
            "created_by": self.created_by,
        }
        if self.model_type != GENERATOR_MODEL_TYPE:  # generator files stay as they were
            values["model_type"] = self.model_type
            values["filter"] = dict(self.filter)
        if self.extra:
            values["extra"] = self.extra
        return values

    def to_json(self) -> str:
        try:
            return json.dumps(self.to_dict(), sort_keys=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model metadata is not JSON-serialisable: {error}") from None

    @classmethod
    def from_dict(cls, values: dict) -> "ModelMetadata":
        if not isinstance(values, dict):
            raise ConfigError("model metadata must be a JSON object")
        # The version first: a newer file may have other fields, and saying so is clearer.
        _check_format(values.get("format"), values.get("format_version"))
        model_type = values.get("model_type", GENERATOR_MODEL_TYPE)
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
        required = ("task", "domains") if values.get("model_type") == FILTER_MODEL_TYPE else ("task", "domains",
                                                                                              "generator")
        missing = [key for key in required if not values.get(key)]
        if missing:
            raise ConfigError(f"model metadata lacks {', '.join(missing)}")
        extra = values.get("extra")
        extra = {} if extra is None else extra
        if not isinstance(extra, dict):
            raise ConfigError("extra must be a JSON object")
        extra = dict(extra)
        extra.update({key: value for key, value in values.items() if key not in _FIELDS and key != "extra"})
        return cls(extra=extra, **{key: values[key] for key in _FIELDS if key in values})

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"the RevGAN metadata is not valid JSON ({error})") from None
        except RecursionError:
            raise ConfigError("the RevGAN metadata is nested too deeply to be model metadata") from None
        return cls.from_dict(values)


def read_model_header(path):
    """(tensor entries, buffer offset, buffer size, metadata, generator configuration; None
    for a radial kernel filter) of a model file, validated against each other from the header alone: no tensor data is read
    and no module is built, so a file that describes a huge network is refused at once.
    Every problem raises :class:`ModelFileError` naming the file."""
    path = Path(path)
    header, strings, start, size = read_safetensors_header(path)
    if METADATA_KEY not in strings:
        raise ModelFileError(f"{path}: is a safetensors file but not a RevGAN model (no {METADATA_KEY!r} "
                             "metadata)")
    try:
        metadata = ModelMetadata.from_json(strings[METADATA_KEY])
        config = metadata.generator_config if metadata.model_type == GENERATOR_MODEL_TYPE else None
    except RevGANError as error:
        raise ModelFileError(f"{path}: {error}") from None
    if config is None:
        from .linear_filter_file import check_filter_tensors

        check_filter_tensors(path, header, metadata.filter)
    else:
        _check_tensors_match(path, header, config)
    return header, start, size, metadata, config


def read_metadata(path) -> ModelMetadata:
    """The validated metadata of the model file ``path``, checked against the tensor names,
    shapes and dtypes in its header, without reading any weights or importing torch."""
    return read_model_header(path)[3]


def _check_tensors_match(path: Path, header: dict, config: GeneratorConfig) -> None:
    expected = generator_state_shapes(config)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    wrong = sorted(name for name in set(expected) & set(header) if tuple(header[name]["shape"]) != expected[name])
    if missing or unexpected or wrong:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                parts.append(f"{label}: {printable(shown)}")
        raise ModelFileError(f"{path}: the weights do not match the generator described in its metadata "
                             f"(ngf {config.ngf}, depth {config.depth}); {'; '.join(parts)}")
    for name in sorted(header):
        if header[name]["dtype"] not in FLOAT_DTYPES:
            raise ModelFileError(f"{path}: weight {name!r} has dtype {header[name]['dtype']}, expected floating "
                                 f"point ({', '.join(FLOAT_DTYPES)})")
