"""The module's tasks and how each maps onto a model and a direction.

A RevGAN model translates both ways between its two domains x and y: direction
"forward" is x -> y, "inverse" is y -> x. The module offers:

- Super-resolve: the shipped super-resolution model, low resolution -> high resolution;
- Kernel sharp -> smooth and Kernel smooth -> sharp: both directions of the shipped
  reconstruction-kernel model (B50f-like sharp <-> B30f-like smooth);
- Custom model file: any model file, in the direction the user picks.

Which direction goes where is read from the model's domain names (e.g. x = "lr",
y = "hr"; x = "sharp", y = "smooth"), so a model trained the other way round still does
what the button says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

FORWARD = "forward"
INVERSE = "inverse"


class Task(enum.Enum):
    """What the Apply button does. Stored in the parameter node by name."""

    SuperResolution = "super_resolution"
    SharpToSmooth = "sharp_to_smooth"
    SmoothToSharp = "smooth_to_sharp"
    CustomModel = "custom"

    def label(self) -> str:
        return TASKS[self].label


class Direction(enum.Enum):
    """Direction of a custom model: forward (x -> y) or inverse (y -> x)."""

    Forward = FORWARD
    Inverse = INVERSE

    def label(self) -> str:
        return "forward (x \u2192 y)" if self is Direction.Forward else "inverse (y \u2192 x)"


@dataclass(frozen=True)
class TaskInfo:
    label: str            # in the task combo box
    buttonText: str       # on the Apply button
    modelTask: Optional[str]  # the model file's task; None: any (custom)
    targetWords: Tuple[str, ...]  # words naming the target domain
    sourceWords: Tuple[str, ...]  # words naming the source domain
    outputSuffix: str     # appended to the input's name
    help: str


_LOW = ("lr", "low", "lowres", "low_resolution", "thick")
_HIGH = ("hr", "high", "highres", "high_resolution", "thin")
_SHARP = ("sharp", "b50f", "b50", "b60f", "b70f", "bone", "lung", "edge")
_SMOOTH = ("smooth", "b30f", "b30", "b20f", "b31f", "soft", "standard")

TASKS = {
    Task.SuperResolution: TaskInfo(
        "Super-resolve (low \u2192 high resolution)", "Super-resolve", "super_resolution", _HIGH, _LOW,
        "super-resolved",
        "A new volume on a grid 2x finer in x and y and 4x finer in z (the model's factors), "
        "covering the same physical box."),
    Task.SharpToSmooth: TaskInfo(
        "Kernel sharp \u2192 smooth (B50f-like \u2192 B30f-like)", "Convert to smooth kernel", "kernel",
        _SMOOTH, _SHARP, "smooth kernel",
        "Same grid; the texture and noise of a smooth (B30f-like) reconstruction kernel."),
    Task.SmoothToSharp: TaskInfo(
        "Kernel smooth \u2192 sharp (B30f-like \u2192 B50f-like)", "Convert to sharp kernel", "kernel",
        _SHARP, _SMOOTH, "sharp kernel",
        "Same grid; the edge enhancement and noise of a sharp (B50f-like) reconstruction kernel."),
    Task.CustomModel: TaskInfo(
        "Custom model file", "Translate", None, (), (), "translated",
        "Any RevGAN model file, in the direction chosen below."),
}


def taskInfo(task: Task) -> TaskInfo:
    return TASKS[Task(task)]


def metadataValue(metadata: Any, key: str, default: Any = None) -> Any:
    """``metadata[key]`` for a mapping or ``metadata.key`` for an object (model metadata
    may be either), else ``default``."""
    if metadata is None:
        return default
    if isinstance(metadata, Mapping):
        return metadata.get(key, default)
    return getattr(metadata, key, default)


def _words(name: Any) -> Tuple[str, ...]:
    text = str(name or "").lower()
    for separator in "-_/.,;:()[]>":
        text = text.replace(separator, " ")
    return tuple(text.split()) + (str(name or "").lower().strip(),)


def _names(domain: Any, words: Tuple[str, ...]) -> bool:
    """Whether a domain (a name, or a mapping with "name"/"description") is named by ``words``."""
    if isinstance(domain, Mapping):
        domain = " ".join(str(domain.get(key, "")) for key in ("name", "id", "description"))
    found = _words(domain)
    return any(word in found for word in words)


def directionFor(task: Task, metadata: Any = None, customDirection: Any = Direction.Forward) -> str:
    """"forward" or "inverse": the direction that performs ``task`` with a model whose
    metadata has ``domains`` {"x": ..., "y": ...}.

    Fixed tasks look the target up among the domain names; when the names say nothing,
    super-resolution and sharp -> smooth are forward and smooth -> sharp is inverse (the
    order in which the project's models are trained: x = low resolution or sharp)."""
    task = Task(task)
    if task is Task.CustomModel:
        return Direction(customDirection).value
    info = TASKS[task]
    domains = metadataValue(metadata, "domains", None) or {}
    x = domains.get("x") if isinstance(domains, Mapping) else None
    y = domains.get("y") if isinstance(domains, Mapping) else None
    if y is not None and _names(y, info.targetWords) and not _names(x, info.targetWords):
        return FORWARD
    if x is not None and _names(x, info.targetWords) and not _names(y, info.targetWords):
        return INVERSE
    if x is not None and _names(x, info.sourceWords) and not _names(y, info.sourceWords):
        return FORWARD
    if y is not None and _names(y, info.sourceWords) and not _names(x, info.sourceWords):
        return INVERSE
    return INVERSE if task is Task.SmoothToSharp else FORWARD


def checkModelForTask(task: Task, metadata: Any) -> Optional[str]:
    """A warning when a model file is meant for another task (None when it fits)."""
    wanted = TASKS[Task(task)].modelTask
    actual = metadataValue(metadata, "task", None)
    if wanted is None or actual is None or actual == wanted:
        return None
    return f"this model was trained for {actual!r}, not {wanted!r}"


def outputName(inputName: str, task: Task) -> str:
    """A clear name for the result, e.g. "CT chest super-resolved"."""
    base = (inputName or "volume").strip()
    return f"{base} {TASKS[Task(task)].outputSuffix}"


def domainLabel(metadata: Any, direction: str) -> str:
    """"sharp \u2192 smooth" style description of what a direction does with this model."""
    domains = metadataValue(metadata, "domains", None) or {}

    def name(key: str) -> str:
        value = domains.get(key, key) if isinstance(domains, Mapping) else key
        if isinstance(value, Mapping):
            value = value.get("name") or value.get("description") or key
        return str(value)

    source, target = ("x", "y") if direction == FORWARD else ("y", "x")
    return f"{name(source)} \u2192 {name(target)}"


def seriesDescription(task: Task, modelName: str, direction: str) -> str:
    """What made a result, for its DICOM series description, e.g.
    "RevGAN super-resolved: revgan-sr-phantom-paired2r forward" (cut to DICOM's 64 characters)."""
    text = f"RevGAN {TASKS[Task(task)].outputSuffix}: {modelName} {direction}"
    return text[:64]
