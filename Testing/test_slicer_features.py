"""The module's Logic on real MRML (slicer-core): CPU threads in both run modes, results in
the input's study described for DICOM export, every frame of a sequence, the wait cursor
around the UI-thread work, and the model manager (with RevGANCore's real model store).

Slicer's application object is absent from slicer-core; the wait-cursor test stands one
in (``slicer.app`` and ``qt.Qt.WaitCursor``, which is all the module touches) and checks
what is on disk and in the scene while the cursor is up. DICOM export itself needs
Slicer's DICOMLib (not in slicer-core): what is checked is what its tag editor reads, the
result's subject-hierarchy parent (the study, below the patient) and its ``DICOM.*``
series attributes."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from slicer_helpers import addVolumeNode, ctLikeArray, obliqueIjkToRas, scene, slicer  # noqa: F401

from RevGANSlicerLib import testing  # noqa: E402
from RevGANSlicerLib.logic import BusyError, TranslationLogic  # noqa: E402
from RevGANSlicerLib.nodes import SERIES_DESCRIPTION_ATTRIBUTE  # noqa: E402
from RevGANSlicerLib.tasks import Task  # noqa: E402
from RevGANCore.cli import main  # noqa: E402
from RevGANCore.errors import CancelledError, ModelFileError, VolumeError  # noqa: E402
from RevGANCore.model_store import STORE_DIR_ENV  # noqa: E402
from RevGANCore.registry import MODELS_DIR_ENV  # noqa: E402
from model_helpers import save_tiny_model, save_two_way_model  # noqa: E402


def _ctNode(scene, name="CT chest", shape=(8, 16, 12), seed=0):
    return addVolumeNode(scene, ctLikeArray(shape, seed=seed), obliqueIjkToRas(), name)


def _inStudy(scene, node):
    """Put ``node`` in patient > study, as Slicer's DICOM loader does; returns (patient, study)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Anonymous patient")
    study = hierarchy.CreateStudyItem(patient, "Chest CT study")
    hierarchy.CreateItem(study, node)  # the series item (Slicer's DICOM plugins make it on loading)
    return hierarchy, patient, study


def _checkInStudy(hierarchy, node, patient, study, *words):
    item = hierarchy.GetItemByDataNode(node)
    assert hierarchy.GetItemParent(item) == study and hierarchy.GetItemParent(study) == patient
    description = hierarchy.GetItemAttribute(item, SERIES_DESCRIPTION_ATTRIBUTE)
    assert len(description) <= 64 and all(word in description for word in words), description
    assert hierarchy.GetItemAttribute(item, "DICOM.Modality") == "CT"


# --------------------------------------------------------------------------- threads and study


def test_in_process_run_uses_the_thread_setting_and_restores_it_and_lands_in_the_study(scene, tmp_path):
    node = _ctNode(scene)
    hierarchy, patient, study = _inStudy(scene, node)
    modelPath = str(save_two_way_model(tmp_path / "kernel-two-way.safetensors"))
    before = torch.get_num_threads()
    during = []
    out = TranslationLogic().translate(node, Task.SharpToSmooth, modelPath=modelPath, device="cpu", tileSize=32,
                                       threads=1, progress=lambda done, total: during.append(torch.get_num_threads()))
    assert during and set(during) == {1}
    assert torch.get_num_threads() == before
    _checkInStudy(hierarchy, out, patient, study, "smooth kernel", "kernel-two-way", "forward")
    with pytest.raises(Exception, match="CPU threads"):
        TranslationLogic().translate(node, Task.SharpToSmooth, modelPath=modelPath, device="cpu", threads=-2)


def test_background_run_passes_the_thread_setting_and_lands_in_the_study(scene, tmp_path):
    node = _ctNode(scene)
    hierarchy, patient, study = _inStudy(scene, node)
    modelPath = str(save_two_way_model(tmp_path / "kernel-two-way.safetensors"))
    logic = TranslationLogic()
    job = logic.startTranslation(node, Task.SmoothToSharp, modelPath=modelPath, device="cpu", tileSize=32,
                                 python=sys.executable, threads=1)
    assert job.wait(timeout=300) == 0, job.process.outputTail()
    # the process's own report of its device: torch ran on one thread there
    assert any("cpu (1 threads)" in line for line in job.process.lines), job.process.outputTail()
    out = logic.finishTranslation(job)
    _checkInStudy(hierarchy, out, patient, study, "sharp kernel", "kernel-two-way", "inverse")


def test_the_threads_option_of_the_command_refuses_negative_numbers(tmp_path, capsys):
    assert main(["translate", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd"), "--model", "x.safetensors",
                 "--threads", "-1"]) == 1
    assert "--threads must be 0 (automatic) or a positive number" in capsys.readouterr().err


# --------------------------------------------------------------------------- sequences


def _sequenceScene(scene, values=("0", "1.5", "3")):
    """A sequence of three CT frames (different voxels) with a browser and its proxy node."""
    sequencesLogic = slicer.vtkSlicerSequencesLogic()  # what Slicer's Sequences module sets up
    sequencesLogic.SetMRMLScene(scene)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "CT 4D")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    frames = []
    for index, value in enumerate(values):
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(obliqueIjkToRas()))
        array = ctLikeArray((8, 16, 12), seed=10 + index)
        slicer.util.updateVolumeFromArray(frame, array)
        sequence.SetDataNodeAtValue(frame, value)
        frames.append(array)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "CT 4D browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    sequencesLogic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    proxy.CreateDefaultDisplayNodes()
    proxy.GetDisplayNode().AutoWindowLevelOff()
    proxy.GetDisplayNode().SetWindowLevel(1500.0, -600.0)
    return browser, sequence, proxy, frames, sequencesLogic


def _sequenceIDs(scene):
    collection = scene.GetNodesByClass("vtkMRMLSequenceNode")
    return [collection.GetItemAsObject(i).GetID() for i in range(collection.GetNumberOfItems())]


def test_every_frame_of_a_sequence_becomes_a_frame_of_a_new_synchronised_sequence(scene, tmp_path):
    browser, sequence, proxy, frames, sequencesLogic = _sequenceScene(scene)
    modelPath = str(save_two_way_model(tmp_path / "kernel-two-way.safetensors"))
    logic = TranslationLogic()
    assert logic.sequenceOf(proxy) == (browser, sequence)
    ticks, messages = [], []
    outProxy = logic.translateSequence(proxy, Task.SharpToSmooth, modelPath=modelPath, device="cpu", tileSize=32,
                                       progress=lambda done, total: ticks.append((done, total)),
                                       message=messages.append)
    result = browser.GetSequenceNode(outProxy)
    assert result is not None and result.GetID() != sequence.GetID()
    assert result.GetName() == "CT 4D smooth kernel" and result.GetIndexName() == "time"
    assert [result.GetNthIndexValue(i) for i in range(result.GetNumberOfDataNodes())] == ["0", "1.5", "3"]
    # each frame is the translation of the matching input frame (same as translating it alone)
    single = TranslationLogic()
    for index, array in enumerate(frames):
        alone = addVolumeNode(scene, array, obliqueIjkToRas(), f"frame {index}")
        expected = slicer.util.arrayFromVolume(single.translate(alone, Task.SharpToSmooth, modelPath=modelPath,
                                                                device="cpu", tileSize=32))
        got = slicer.util.arrayFromVolume(result.GetNthDataNode(index))
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(got, array)  # the two-way model changes the voxels
    # progress runs once over all frames, from 0 to the end; a message per frame
    assert ticks[0][0] == 0 and ticks[-1][0] == ticks[-1][1]
    assert [done for done, _ in ticks] == sorted(done for done, _ in ticks)
    assert len({total for _, total in ticks}) == 1
    assert sum("Frame" in text for text in messages) == 3
    # the result's proxy follows the browser with the input
    browser.SetSelectedItemNumber(2)
    sequencesLogic.UpdateProxyNodesFromSequences(browser)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(outProxy),
                                  slicer.util.arrayFromVolume(result.GetNthDataNode(2)))
    assert testing.windowLevel(outProxy) == (1500.0, -600.0)


def test_cancel_between_frames_adds_no_sequence_and_plain_volumes_are_not_sequences(scene, tmp_path):
    browser, sequence, proxy, frames, _ = _sequenceScene(scene)
    modelPath = str(save_two_way_model(tmp_path / "kernel-two-way.safetensors"))
    logic = TranslationLogic()
    before = (_sequenceIDs(scene), browser.GetNumberOfSynchronizedSequenceNodes())
    seen = []

    def cancelAfterFirstFrame():
        return any(text.startswith("Frame 2") for text in seen)

    with pytest.raises(CancelledError):
        logic.translateSequence(proxy, Task.SharpToSmooth, modelPath=modelPath, device="cpu", tileSize=32,
                                message=seen.append, cancel=cancelAfterFirstFrame)
    assert (_sequenceIDs(scene), browser.GetNumberOfSynchronizedSequenceNodes()) == before
    assert not logic.busy
    plain = _ctNode(scene, name="plain")
    assert logic.sequenceOf(plain) is None
    with pytest.raises(VolumeError, match="not the volume of a sequence"):
        logic.translateSequence(plain, Task.SharpToSmooth, modelPath=modelPath, device="cpu")


# --------------------------------------------------------------------------- wait cursor


class _FakeApplication:
    """Stands in for slicer.app: counts override cursors and records, at each change, which
    files exist under its temporary folder."""

    def __init__(self, temporaryPath: Path):
        self.temporaryPath = str(temporaryPath)
        self.depth = 0
        self.changes = []

    def _files(self):
        return sorted(p.name for p in Path(self.temporaryPath).rglob("*") if p.is_file())

    def setOverrideCursor(self, cursor):
        assert cursor == "WaitCursor"
        self.depth += 1
        self.changes.append(("set", self._files()))

    def restoreOverrideCursor(self):
        self.depth -= 1
        self.changes.append(("restore", self._files()))

    def processEvents(self):
        pass


@pytest.fixture
def application(tmp_path, monkeypatch):
    folder = tmp_path / "slicer-temp"
    folder.mkdir()
    app = _FakeApplication(folder)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(Qt=types.SimpleNamespace(WaitCursor="WaitCursor")))
    return app


def _depthWhenVolumesAreAdded(scene, application):
    depths = []

    def added(caller, event, callData=None):
        depths.append(application.depth)

    scene.AddObserver(scene.NodeAddedEvent, added)
    return depths


def test_writing_the_input_and_loading_results_happen_under_a_wait_cursor(scene, tmp_path, application):
    node = _ctNode(scene)
    modelPath = str(save_two_way_model(tmp_path / "kernel-two-way.safetensors"))
    logic = TranslationLogic()
    job = logic.startTranslation(node, Task.SharpToSmooth, modelPath=modelPath, device="cpu", python=sys.executable)
    # the input file did not exist when the cursor went up and did when it came down
    assert application.changes[:2] == [("set", []), ("restore", ["input.nrrd"])]
    assert job.wait(timeout=300) == 0, job.process.outputTail()
    depths = _depthWhenVolumesAreAdded(scene, application)
    logic.finishTranslation(job)
    logic.translate(node, Task.SharpToSmooth, modelPath=modelPath, device="cpu", tileSize=32)
    assert depths and set(depths) == {1}  # every node of both results was added under the cursor
    assert application.depth == 0  # and the cursor was restored each time


def test_the_wait_cursor_is_restored_when_loading_fails(scene, tmp_path, application):
    node = _ctNode(scene)
    with pytest.raises(Exception):
        TranslationLogic().translate(node, Task.SharpToSmooth, model=testing.tinyModel("kernel"), device="cpu",
                                     outputNode=scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels"))
    assert application.depth == 0


# --------------------------------------------------------------------------- model manager


@pytest.fixture
def modelFolders(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    save_tiny_model(shipped / "sr.safetensors", "super_resolution", ngf=2, seed=1)
    save_tiny_model(shipped / "kernel.safetensors", "kernel", ngf=2, seed=2)
    (shipped / "models.json").write_text(json.dumps({
        "format": "revgan-model-registry", "format_version": 1,
        "models": {"sr-shipped": {"file": "sr.safetensors", "task": "super_resolution", "default": True},
                   "kernel-shipped": {"file": "kernel.safetensors", "task": "kernel", "default": True}}}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(shipped))
    monkeypatch.setenv(STORE_DIR_ENV, str(tmp_path / "user"))
    return tmp_path


def test_the_model_manager_adds_lists_describes_uses_and_removes_models(scene, modelFolders):
    added = save_two_way_model(modelFolders / "downloads" / "my-kernel.safetensors")
    logic = TranslationLogic()
    entry = logic.addModel(str(added))
    assert [(m.name, m.origin) for m in logic.listModels()] == [
        ("sr-shipped", "shipped"), ("kernel-shipped", "shipped"), ("my-kernel", "user")]
    assert [value for _, value in logic.modelChoices(Task.SharpToSmooth)] == ["", "kernel-shipped", "my-kernel"]
    assert [value for _, value in logic.modelChoices(Task.SuperResolution)] == ["", "sr-shipped"]
    assert [value for _, value in logic.modelChoices(Task.CustomModel)] == ["", "sr-shipped", "kernel-shipped",
                                                                            "my-kernel"]
    card = dict(logic.modelManagerCard("my-kernel"))
    assert card["Origin"] == "added by you" and card["SHA-256"] == entry.sha256 and card["Task"] == "kernel"
    # the selector's choice is what runs
    assert logic.chosenModel(Task.SharpToSmooth, "my-kernel", "/other/file.safetensors") == "my-kernel"
    assert logic.chosenModel(Task.SharpToSmooth, "", "/other/file.safetensors") == ""
    assert logic.chosenModel(Task.CustomModel, "", "/other/file.safetensors") == "/other/file.safetensors"
    node = _ctNode(scene)
    out = logic.translate(node, Task.SharpToSmooth, modelPath="my-kernel", device="cpu", tileSize=32)
    assert "my-kernel" in slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene).GetItemAttribute(
        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene).GetItemByDataNode(out),
        SERIES_DESCRIPTION_ATTRIBUTE)
    # a result carries the name its model is listed under, not its file's name ("kernel")
    shipped = logic.translate(node, Task.SharpToSmooth, device="cpu", tileSize=32)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert "kernel-shipped" in hierarchy.GetItemAttribute(hierarchy.GetItemByDataNode(shipped),
                                                         SERIES_DESCRIPTION_ATTRIBUTE)
    # a stored file that changed is refused, and the card says why
    Path(entry.path).write_bytes(Path(save_tiny_model(modelFolders / "other.safetensors", "kernel")).read_bytes())
    assert "checksum mismatch" in dict(logic.modelManagerCard("my-kernel"))["Error"]
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        logic.translate(node, Task.SharpToSmooth, modelPath="my-kernel", device="cpu")
    logic.removeModel("my-kernel")
    assert [m.name for m in logic.listModels()] == ["sr-shipped", "kernel-shipped"]
    with pytest.raises(ModelFileError, match="shipped model"):
        logic.removeModel("kernel-shipped")
    with pytest.raises(ModelFileError, match="not a RevGAN model|cannot|not a .safetensors"):
        logic.addModel(str(modelFolders / "shipped" / "models.json"))


def test_models_are_not_added_or_removed_during_a_run(modelFolders):
    logic = TranslationLogic()
    with logic.busyWith("translating"):
        with pytest.raises(BusyError):
            logic.addModel(str(modelFolders / "shipped" / "kernel.safetensors"))
        with pytest.raises(BusyError):
            logic.removeModel("anything")
