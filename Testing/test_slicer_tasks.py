"""Tasks, directions, names and model cards of the Slicer module (pure Python)."""

import pytest

import slicer_helpers  # noqa: F401  (puts RevGANSlicer/ on sys.path)

from RevGANSlicerLib import engine  # noqa: E402
from RevGANSlicerLib.tasks import (  # noqa: E402
    Direction, Task, checkModelForTask, directionFor, domainLabel, outputName, taskInfo)


@pytest.mark.parametrize("task, domains, expected", [
    (Task.SuperResolution, {"x": "lr", "y": "hr"}, "forward"),
    (Task.SuperResolution, {"x": "hr", "y": "lr"}, "inverse"),
    (Task.SuperResolution, {"x": "low_resolution", "y": "high_resolution"}, "forward"),
    (Task.SuperResolution, {"x": {"name": "thick slices"}, "y": {"name": "thin slices"}}, "forward"),
    (Task.SharpToSmooth, {"x": "sharp", "y": "smooth"}, "forward"),
    (Task.SharpToSmooth, {"x": "B30f", "y": "B50f"}, "inverse"),
    (Task.SmoothToSharp, {"x": "sharp", "y": "smooth"}, "inverse"),
    (Task.SmoothToSharp, {"x": "smooth (B30f-like)", "y": "sharp (B50f-like)"}, "forward"),
    (Task.SharpToSmooth, {"x": "domain A", "y": "domain B"}, "forward"),  # no clue: training order
    (Task.SmoothToSharp, None, "inverse"),
])
def test_direction_follows_the_model_domains(task, domains, expected):
    metadata = {"domains": domains} if domains is not None else {}
    assert directionFor(task, metadata) == expected


def test_direction_reads_object_metadata_and_custom_choice():
    class Metadata:
        domains = {"x": "smooth", "y": "sharp"}

    assert directionFor(Task.SharpToSmooth, Metadata()) == "inverse"
    assert directionFor(Task.CustomModel, Metadata(), Direction.Inverse) == "inverse"
    assert directionFor(Task.CustomModel, None, "forward") == "forward"


def test_names_labels_and_task_checks():
    assert outputName("CT chest", Task.SuperResolution) == "CT chest super-resolved"
    assert outputName("", Task.SharpToSmooth) == "volume smooth kernel"
    assert taskInfo(Task.SuperResolution).buttonText == "Super-resolve"
    assert Task.SmoothToSharp.label().startswith("Kernel smooth")
    assert Direction.Inverse.label().startswith("inverse")
    assert checkModelForTask(Task.SuperResolution, {"task": "kernel"}) == (
        "this model was trained for 'kernel', not 'super_resolution'")
    assert checkModelForTask(Task.SuperResolution, {"task": "super_resolution"}) is None
    assert checkModelForTask(Task.CustomModel, {"task": "kernel"}) is None
    assert domainLabel({"domains": {"x": "sharp", "y": "smooth"}}, "inverse") == "smooth \u2192 sharp"


def test_model_card_rows_from_metadata(tmp_path):
    model = tmp_path / "kernel.safetensors"
    model.write_bytes(b"")
    (tmp_path / "kernel.md").write_text("# Kernel model\n")
    from RevGANCore.modelmetadata import ModelMetadata

    metadata = ModelMetadata(task="kernel", description="sharp <-> smooth", domains={"x": "sharp", "y": "smooth"},
                             hu_window=(-1150, 350), caveats="phantoms only; not for diagnosis",
                             training={"dataset": "phantoms, 40 cases", "iterations": 20000,
                                       "config": {"long": "x" * 1000}})
    rows = dict(engine.modelCard(metadata, str(model)))
    assert rows["Training"] == "dataset: phantoms, 40 cases; iterations: 20000"
    assert rows["Task"] == "kernel"
    assert rows["Domains"] == "x = sharp, y = smooth"
    assert rows["HU window"] == "(-1150, 350)"
    assert rows["Caveats"] == "phantoms only; not for diagnosis"
    assert rows["Model card"] == str(tmp_path / "kernel.md")
