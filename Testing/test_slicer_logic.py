"""The module's Logic on a real MRML scene: translations in this process and in a separate
process, output geometry, the input left untouched, cancel, errors.

The shipped models are not needed: tiny untrained generators (identity at start) are built
in memory or saved as model files; what is checked is the node handling, not image quality
(the Slicer self-test checks quality when the trained models are installed)."""

import os
import re
import sys

import numpy as np
import pytest

from slicer_helpers import (  # noqa: F401
    addVolumeNode, assertVolumeUnchanged, ctLikeArray, ijkToRas, needsCore, obliqueIjkToRas, scene, slicer, volumeState)

from RevGANSlicerLib import dependencies, testing  # noqa: E402
from RevGANSlicerLib.logic import TranslationLogic  # noqa: E402
from RevGANSlicerLib.tasks import Direction, Task  # noqa: E402
from RevGANCore.errors import CancelledError, ModelFileError, RevGANError, VolumeError  # noqa: E402
from model_helpers import save_two_way_model  # noqa: E402

needs_inference = needsCore("inference", "modelfile")
needs_io = needsCore("modelfile")


def _volumeNodes(scene):
    collection = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    return [collection.GetItemAsObject(i).GetID() for i in range(collection.GetNumberOfItems())]


def _lowResolutionNode(scene, shape=(8, 16, 12)):
    """An oblique, CT-like, thick-slice volume node with a lung window."""
    return addVolumeNode(scene, ctLikeArray(shape), obliqueIjkToRas(spacing=(1.6, 1.5, 5.0)), "CT chest",
                         window=(1500.0, -600.0))


@needs_inference
def test_super_resolution_on_a_node_gives_the_fine_grid_over_the_same_box(scene):
    node = _lowResolutionNode(scene)
    before = volumeState(node)
    ticks = []
    logic = TranslationLogic()
    out = logic.translate(node, Task.SuperResolution, model=testing.tinyModel("super_resolution"), device="cpu",
                          tileSize=32, progress=lambda done, total: ticks.append((done, total)))

    assert out.GetID() != node.GetID() and out.GetName() == "CT chest super-resolved"
    assertVolumeUnchanged(node, before)
    # Spacing / 2 in x and y, / 4 in z; 2x, 2x, 4x the voxels; same orientation, corner, extent.
    np.testing.assert_allclose(out.GetSpacing(), np.asarray(node.GetSpacing()) / (2, 2, 4), rtol=1e-9)
    assert out.GetImageData().GetDimensions() == (24, 32, 32)
    assert testing.geometryProblems(node, out, Task.SuperResolution) == []
    matrix, inputMatrix = ijkToRas(out), ijkToRas(node)
    np.testing.assert_allclose(matrix[:3, :3] @ np.diag([2, 2, 4]), inputMatrix[:3, :3], atol=1e-9)
    # The first fine voxel's centre sits a quarter (x, y) / three eighths (z) of a coarse voxel
    # inside the coarse voxel's corner: origin moved by (fine - coarse) / 2 along each axis.
    expectedOrigin = inputMatrix[:3, 3] + inputMatrix[:3, :3] @ ((1 / np.array([2, 2, 4]) - 1) / 2)
    np.testing.assert_allclose(matrix[:3, 3], expectedOrigin, atol=1e-9)
    assert testing.windowLevel(out) == testing.windowLevel(node)
    assert ticks and ticks[-1][0] == ticks[-1][1]


@needs_inference
def test_kernel_conversion_keeps_the_grid_and_an_untrained_model_is_close_to_identity(scene):
    node = _lowResolutionNode(scene)
    before = volumeState(node)
    out = TranslationLogic().translate(node, Task.SharpToSmooth, model=testing.tinyModel("kernel"), device="cpu",
                                       tileSize=32)
    assertVolumeUnchanged(node, before)
    assert out.GetName() == "CT chest smooth kernel"
    assert testing.geometryProblems(node, out, Task.SharpToSmooth) == []
    np.testing.assert_allclose(ijkToRas(out), ijkToRas(node), atol=0)
    # The tiny generator starts as the identity: inside the HU window the voxels come back.
    inside = (before[0] > -1150) & (before[0] < 350)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(out)[inside], before[0][inside], atol=0.5)


@needs_inference
def test_output_into_a_chosen_node_and_never_into_the_input(scene):
    node = _lowResolutionNode(scene)
    target = addVolumeNode(scene, ctLikeArray((2, 2, 2), seed=5), np.eye(4), "my result")
    logic = TranslationLogic()
    model = testing.tinyModel("kernel")
    out = logic.translate(node, Task.SharpToSmooth, model=model, device="cpu", outputNode=target)
    assert out.GetID() == target.GetID() and out.GetName() == "my result"
    assert testing.sameIjkToRas(out, node)
    before = volumeState(node)
    with pytest.raises(VolumeError, match="must not be the input"):
        logic.translate(node, Task.SharpToSmooth, model=model, device="cpu", outputNode=node)
    assertVolumeUnchanged(node, before)


@needs_inference
def test_tile_size_below_the_model_minimum_is_raised_and_said(scene):
    from RevGANSlicerLib import engine

    model = testing.tinyModel("kernel")
    smallest = engine.minimumTileSize(model.metadata)
    assert smallest == 2 * 12 + 2  # depth 1, "resize" layout: receptive-field radius 4 + 4 x 2, stride 2
    notes = []
    assert TranslationLogic.usableTileSize(8, model.metadata, notes.append) == smallest
    assert notes and str(smallest) in notes[0]
    assert TranslationLogic.usableTileSize(0, model.metadata) == 0
    assert TranslationLogic.usableTileSize(64, model.metadata) == 64
    node = _lowResolutionNode(scene)
    out = TranslationLogic().translate(node, Task.SharpToSmooth, model=model, device="cpu", tileSize=8,
                                       message=notes.append)
    assert testing.sameIjkToRas(out, node)


@needs_inference
def test_cancel_in_this_process_leaves_no_node(scene):
    node = _lowResolutionNode(scene)
    nodesBefore = _volumeNodes(scene)
    with pytest.raises(CancelledError):
        TranslationLogic().translate(node, Task.SuperResolution, model=testing.tinyModel("super_resolution"),
                                     device="cpu", tileSize=32, cancel=lambda: True)
    assert _volumeNodes(scene) == nodesBefore


#: A kernel model trained smooth -> sharp: its domain names, not the usual order, decide.
SMOOTH_TO_SHARP_DOMAINS = {"x": "smooth_b30f", "y": "sharp_b50f"}


@needs_inference
@pytest.mark.parametrize("task, customDirection, domains, expected, separateProcess", [
    (Task.SharpToSmooth, Direction.Forward, None, "forward", False),
    (Task.SmoothToSharp, Direction.Forward, None, "inverse", False),
    (Task.SharpToSmooth, Direction.Forward, SMOOTH_TO_SHARP_DOMAINS, "inverse", False),
    (Task.CustomModel, Direction.Inverse, None, "inverse", False),
    # Forward in a separate process: test_separate_process_gives_the_same_result_as_in_process.
    (Task.SmoothToSharp, Direction.Forward, None, "inverse", True),
], ids=["sharp-to-smooth", "smooth-to-sharp", "domains-decide", "custom-inverse", "smooth-to-sharp-process"])
def test_the_logic_runs_the_direction_the_task_needs(scene, tmp_path, task, customDirection, domains, expected,
                                                     separateProcess):
    """With a model whose two directions differ by tens of HU, the Logic's result is the
    core's translation in the expected direction, not in the other one."""
    from RevGANCore.inference import translate
    from RevGANCore.modelfile import load_model
    from RevGANSlicerLib.nodes import volumeFromNode

    modelPath = str(save_two_way_model(tmp_path / "two-way.safetensors", domains=domains))
    node = _lowResolutionNode(scene)
    model, volume = load_model(modelPath), volumeFromNode(node)
    other = "inverse" if expected == "forward" else "forward"
    wanted, unwanted = (translate(model, volume, way, device="cpu").array for way in (expected, other))
    assert np.abs(wanted - unwanted).mean() > 10.0  # the model tells the directions apart

    logic = TranslationLogic()
    options = dict(modelPath=modelPath, direction=customDirection, device="cpu")
    if separateProcess:
        out = logic.translateInSeparateProcess(node, task, timeout=300, python=sys.executable, **options)
    else:
        out = logic.translate(node, task, **options)
    result = slicer.util.arrayFromVolume(out)
    # Results are whole HU (int16) in both run modes: equal within rounding.
    assert result.dtype == np.int16
    np.testing.assert_allclose(result, wanted, rtol=0, atol=0.51)
    assert np.abs(result - unwanted).mean() > 10.0


def test_wrong_inputs_are_refused_before_any_work(scene):
    logic = TranslationLogic()
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(VolumeError, match="scalar"):
        logic.translate(label, Task.SharpToSmooth)
    with pytest.raises(VolumeError, match="select an input"):
        logic.translate(None, Task.SharpToSmooth)
    with pytest.raises(ModelFileError, match="choose a model file"):
        logic.modelPathForTask(Task.CustomModel, "")
    node = _lowResolutionNode(scene)
    # int16 results: 2 bytes a voxel.
    assert logic.estimateOutputBytes(node, Task.SuperResolution) == 8 * 16 * 12 * 16 * 2
    assert logic.estimateOutputBytes(node, Task.SharpToSmooth) == 8 * 16 * 12 * 2


@needs_inference
def test_separate_process_gives_the_same_result_as_in_process(scene, tmp_path):
    node = _lowResolutionNode(scene)
    before = volumeState(node)
    # Directions that differ: a process running the inverse cannot match the in-process forward.
    modelPath = str(save_two_way_model(tmp_path / "two-way.safetensors", task="super_resolution"))
    logic = TranslationLogic()
    lines = []
    job = logic.startTranslation(node, Task.CustomModel, modelPath=modelPath, device="cpu", tileSize=32,
                                 python=sys.executable, onLine=lines.append)
    assert job.wait(timeout=300) == 0, job.process.outputTail()
    viaProcess = logic.finishTranslation(job)
    assert not os.path.exists(job.folder), "temporary files were left behind"
    assertVolumeUnchanged(node, before)
    assert viaProcess.GetName() == "CT chest translated"
    assert testing.geometryProblems(node, viaProcess, Task.SuperResolution) == []
    assert job.progress is not None and job.progress[0] == job.progress[1], lines[-10:]

    here = logic.translate(node, Task.CustomModel, modelPath=modelPath, device="cpu", tileSize=32)
    assert testing.sameIjkToRas(here, viaProcess)
    # One answer whatever the run mode: the same whole-HU int16 voxels.
    assert slicer.util.arrayFromVolume(here).dtype == np.int16
    assert slicer.util.arrayFromVolume(viaProcess).dtype == np.int16
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(viaProcess), slicer.util.arrayFromVolume(here))
    assert testing.windowLevel(viaProcess) == testing.windowLevel(node)


@needs_inference
def test_separate_process_cancel_kills_it_and_leaves_nothing(scene, tmp_path):
    node = _lowResolutionNode(scene)
    nodesBefore = _volumeNodes(scene)
    _, modelPath = testing.tinyModelFile("kernel", folder=str(tmp_path))
    logic = TranslationLogic()
    job = logic.startTranslation(node, Task.SharpToSmooth, modelPath=modelPath, device="cpu", python=sys.executable)
    job.cancel()  # at once: the child is still importing torch
    # Killed, not run to the end: a signal's negative code on POSIX, else a failure code.
    returnCode = job.poll()
    assert returnCode is not None and (returnCode < 0 if os.name == "posix" else returnCode != 0), returnCode
    with pytest.raises(CancelledError):
        logic.finishTranslation(job)
    assert _volumeNodes(scene) == nodesBefore
    assert not os.path.exists(job.folder)


@needs_inference
def test_separate_process_failure_is_reported_with_its_output(scene, tmp_path):
    node = _lowResolutionNode(scene)
    nodesBefore = _volumeNodes(scene)
    _, modelPath = testing.tinyModelFile("kernel", folder=str(tmp_path))
    logic = TranslationLogic()
    job = logic.startTranslation(node, Task.SharpToSmooth, modelPath=modelPath, device="cuda:7", python=sys.executable)
    assert job.wait(timeout=300) not in (None, 0)
    with pytest.raises(RevGANError, match="cuda:7"):
        logic.finishTranslation(job)
    assert _volumeNodes(scene) == nodesBefore


@needs_inference
def test_a_spacing_warning_reaches_the_panel_in_both_run_modes(scene, tmp_path):
    """A scan 5x finer than the model's training pixels: the warning is a message labelled
    "Warning:" in this process, a warning event from the separate process, and the Logic
    keeps it (the panel shows it with the result) either way."""
    from model_helpers import metadata_for, two_way_generator
    from RevGANCore.modelfile import save_model

    modelPath = str(save_model(tmp_path / "kernel.safetensors", two_way_generator(2, 1),
                               metadata_for("kernel", training_spacing_xyz=(0.8, 0.8, 1.25))))
    node = addVolumeNode(scene, ctLikeArray((6, 24, 24)), obliqueIjkToRas(spacing=(0.15, 0.15, 1.25)), "thin")
    expected = ("the scan's voxel spacing 0.15 x 0.15 mm is more than 4 times away from the 0.8 x 0.8 mm this "
                "model was trained at; results outside this range are not supported")
    logic = TranslationLogic()
    messages = []
    logic.translate(node, Task.CustomModel, modelPath=modelPath, device="cpu", message=messages.append)
    assert logic.lastWarnings == [expected] and f"Warning: {expected}" in messages
    job = logic.startTranslation(node, Task.CustomModel, modelPath=modelPath, device="cpu", python=sys.executable)
    assert job.wait(timeout=300) == 0, job.process.outputTail()
    assert job.warnings == [expected]
    logic.finishTranslation(job)
    assert logic.lastWarnings == [expected]
    logic.translate(node, Task.SharpToSmooth, model=testing.tinyModel("kernel"), device="cpu")
    assert logic.lastWarnings == []  # a model that records no spacing: nothing to warn about


@needsCore("phantom_dataset")
def test_sample_data_entries_fetch_nothing_and_show_the_phantom(scene):
    """Slicer's Sample Data fetches every URI a source lists (``downloadSample`` ignores
    custom loaders), so the entries list none: the local loader generates the phantom and
    shows it in every slice view."""
    from RevGANSlicerLib import layout
    from RevGANSlicerLib.sampledata import INPUT_KINDS, PHANTOMS, loadSample, sampleSources

    views = ("Red", "Yellow", "Green")
    for name in views:  # what Slicer's layout manager creates at start-up
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        scene.AddNode(composite)
    sources = sampleSources(shape=(16, 32, 32))
    assert [source["sampleName"] for source in sources] == [PHANTOMS[kind] for kind in INPUT_KINDS]
    shown = []
    for source in sources:
        assert [source[field] for field in ("uris", "fileNames", "nodeNames", "checksums")] == [[], [], [], []]
        node = source["customDownloader"](source)  # what the Sample Data button calls
        assert node.GetName() == source["sampleName"] and scene.GetNodeByID(node.GetID()) is node
        assert [layout.sliceCompositeNode(scene, name).GetBackgroundVolumeID() for name in views] == [node.GetID()] * 3
        shown.append(node.GetID())
    assert len(set(shown)) == 2
    node = loadSample(PHANTOMS["lr"], shape=(16, 32, 32))  # the console's way to load one by name
    assert node.GetImageData().GetDimensions() == (16, 16, 4)
    assert layout.sliceCompositeNode(scene, "Red").GetBackgroundVolumeID() == node.GetID()
    with pytest.raises(ValueError, match="no RevGAN sample named"):
        loadSample("MRHead")


@needsCore("phantom_dataset")
def test_phantom_sample_data_nodes(scene):
    from RevGANSlicerLib.sampledata import PHANTOMS, loadPhantomNodes

    nodesByKind = loadPhantomNodes(("lr", "hr", "sharp"), shape=(16, 32, 32), scene=scene)
    lr, hr, sharp = nodesByKind["lr"], nodesByKind["hr"], nodesByKind["sharp"]
    assert lr.GetName() == PHANTOMS["lr"]
    assert lr.GetImageData().GetDimensions() == (16, 16, 4)
    np.testing.assert_allclose(lr.GetSpacing(), np.asarray(hr.GetSpacing()) * (2, 2, 4))
    np.testing.assert_allclose(testing.nodeExtent(lr), testing.nodeExtent(hr))
    assert sharp.GetImageData().GetDimensions() == (32, 32, 16)
    assert slicer.util.arrayFromVolume(lr).min() < -500  # CT: air present
    assert testing.windowLevel(lr) == (1500.0, -600.0)


def test_dependency_checks_without_installing():
    assert dependencies.isInstalled("numpy")
    assert not dependencies.isInstalled("a_package_that_does_not_exist_revgan")
    assert dependencies.missingPackages(["numpy", "a_package_that_does_not_exist_revgan"]) == [
        "a_package_that_does_not_exist_revgan"]
    summary = dependencies.checkTorchWorks()
    assert summary.startswith("torch ") and "numpy" in summary
    # Minimum versions, never pins (the list itself: test_slicer_run_state.py).
    assert all(">=" in requirement and "==" not in requirement for requirement in dependencies.REQUIREMENTS.values())


def test_engine_lists_devices_with_auto_and_cpu_first():
    from RevGANSlicerLib import engine

    names = engine.deviceNames(engine.availableDevices())
    assert names[:2] == ["auto", "cpu"]
    assert all(name in ("auto", "cpu", "mps") or name.startswith("cuda:") for name in names)


def _nodeWithoutVoxels(scene):
    return scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not loaded yet")


@needs_io
@pytest.mark.parametrize("makeNode, missingInterpreter, error, match", [
    (_nodeWithoutVoxels, None, VolumeError, "has no voxels"),
    (_lowResolutionNode, "no-such-PythonSlicer", OSError, "no-such-PythonSlicer"),
], ids=["input without voxels", "interpreter missing"])
def test_no_temporary_folder_is_left_when_starting_fails(scene, tmp_path, monkeypatch, makeNode, missingInterpreter,
                                                         error, match):
    """Failures after the temporary folder exists (writing the input, starting the
    process), with a valid model file: the folder is removed."""
    _, modelPath = testing.tinyModelFile("kernel", folder=str(tmp_path))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    python = str(tmp_path / missingInterpreter) if missingInterpreter else sys.executable
    with pytest.raises(error, match=match):
        TranslationLogic().startTranslation(makeNode(scene), Task.CustomModel, modelPath=modelPath, python=python)
    assert os.listdir(scratch) == []


@needs_inference
@needsCore("phantom_dataset")
def test_the_self_test_flow_runs_on_plain_mrml(scene, tmp_path):
    """What RevGANSlicerTest does in Slicer, minus the application: phantom in, both tasks
    through the Logic on the CPU with small tiles, geometry and the quality measure; and
    the blocking separate-process helper the self-test uses."""
    logic = TranslationLogic()
    case = testing.phantomCase(full=False)
    for task, source, reference, modelTask in ((Task.SuperResolution, "lr", "hr", "super_resolution"),
                                               (Task.SharpToSmooth, "sharp", "smooth", "kernel")):
        inputNode = logic.loadPhantoms((source,), volumes=case)[source]
        out = logic.translate(inputNode, task, device="cpu", tileSize=64, model=testing.tinyModel(modelTask))
        assert testing.geometryProblems(inputNode, out, task) == []
        assert testing.windowLevel(out) == testing.windowLevel(inputNode)
        # An untrained model is the identity: no closer to the reference than its input.
        better, message = testing.closerToReference(inputNode, out, case[reference])
        inputError, resultError = re.fullmatch(
            r"MAE to the reference inside the body: input (\d+\.\d) HU, result (\d+\.\d) HU", message).groups()
        assert better is False and inputError == resultError and float(inputError) > 10, message

    _, modelPath = testing.tinyModelFile("kernel", folder=str(tmp_path))
    sharp = logic.loadPhantoms(("sharp",), volumes=case)["sharp"]
    ticks = []
    out = logic.translateInSeparateProcess(sharp, Task.SharpToSmooth, modelPath=modelPath, device="cpu", tileSize=64,
                                           timeout=300, python=sys.executable,
                                           progress=lambda done, total: ticks.append((done, total)))
    assert testing.geometryProblems(sharp, out, Task.SharpToSmooth) == []
    assert ticks and ticks[-1][0] == ticks[-1][1], ticks  # progress reached the end


def test_quality_measure_prefers_the_closer_volume(scene):
    from RevGANCore.volume import Volume

    reference = Volume(np.where(np.arange(4 * 6 * 8).reshape(4, 6, 8) % 3, 40.0, -1000.0).astype(np.float32),
                       (1.0, 1.0, 1.0))
    from RevGANSlicerLib.nodes import createOutputNode

    noisy = createOutputNode(reference.with_array(reference.array + 30.0), "noisy")
    close = createOutputNode(reference.with_array(reference.array + 3.0), "close")
    better, message = testing.closerToReference(noisy, close, reference)
    assert better is True and "input 30.0 HU, result 3.0 HU" in message
    assert testing.closerToReference(close, noisy, reference)[0] is False
    barelyCloser = createOutputNode(reference.with_array(reference.array + 2.99), "barely closer")
    assert testing.closerToReference(close, barelyCloser, reference)[0] is False  # 0.01 HU: rounding


@needs_inference
def test_model_card_of_a_model_file_and_of_a_missing_shipped_model(tmp_path, monkeypatch):
    _, modelPath = testing.tinyModelFile("kernel", folder=str(tmp_path))
    logic = TranslationLogic()
    rows = dict(logic.modelCard(Task.CustomModel, modelPath))
    assert rows["Task"] == "kernel"
    assert rows["Domains"] == "x = sharp, y = smooth"
    assert rows["File"] == modelPath
    rows = dict(logic.modelCard(Task.SuperResolution, modelPath))  # a kernel model for super-resolution
    assert "trained for 'kernel'" in rows["Warning"]
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("REVGAN_MODELS_DIR", str(empty))
    rows = dict(logic.modelCard(Task.SuperResolution))
    assert "no shipped super-resolution model" in rows["Model"]
    with pytest.raises(ModelFileError, match="Custom model file"):
        logic.modelPathForTask(Task.SharpToSmooth)
