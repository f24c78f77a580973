"""The module in real use: run state, busy guards, dependencies and a torch-free panel
(issue 14). Real MRML (slicer-core), real processes, real model files."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from slicer_helpers import ROOT, addVolumeNode, obliqueIjkToRas, scene  # noqa: F401

from RevGANSlicerLib import dependencies  # noqa: E402
from RevGANSlicerLib.logic import BusyError, TranslationLogic  # noqa: E402
from RevGANSlicerLib.tasks import Task  # noqa: E402
from model_helpers import save_two_way_model  # noqa: E402


def _ctNode(scene, shape=(8, 16, 12)):
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[2:6, 4:12, 3:9] = 40.0
    return addVolumeNode(scene, array, obliqueIjkToRas(), name="CT")


def test_stopping_a_background_run_leaves_the_logic_idle(scene, tmp_path):
    """Scene close mid-run: the process tree is killed, its files deleted and the Logic is
    idle, so the next run starts (the panel reads its running state from the Logic)."""
    modelPath = str(save_two_way_model(tmp_path / "model.safetensors"))
    node = _ctNode(scene)
    logic = TranslationLogic()
    job = logic.startTranslation(node, Task.CustomModel, modelPath=modelPath, device="cpu", python=sys.executable)
    assert logic.busy
    with pytest.raises(BusyError, match="separate process"):
        logic.startTranslation(node, Task.CustomModel, modelPath=modelPath, device="cpu", python=sys.executable)
    logic.stopActiveJob()
    assert not logic.busy and logic.activeJob is None
    assert job.poll() is not None and job.cancelled
    assert not os.path.exists(job.folder)
    again = logic.startTranslation(node, Task.CustomModel, modelPath=modelPath, device="cpu", python=sys.executable)
    logic.stopActiveJob()
    assert again.cancelled and not logic.busy


def test_a_second_install_during_an_install_is_refused():
    """Two Apply clicks: while the first click installs, the second gets BusyError and
    starts nothing; afterwards the check runs again."""
    logic = TranslationLogic()
    with logic.busyWith("installing Python packages"):
        with pytest.raises(BusyError, match="installing"):
            logic.ensureDependencies(askUser=False)
    assert not logic.busy
    assert logic.ensureDependencies(askUser=False).startswith("torch ")


def test_nothing_changes_the_input_or_starts_twice_during_an_in_process_run(scene, tmp_path):
    """In-process runs process Slicer's events in their progress callback, so buttons stay
    clickable: phantoms, a second run and an install must be refused until it ends."""
    modelPath = str(save_two_way_model(tmp_path / "model.safetensors"))
    node = _ctNode(scene)
    logic = TranslationLogic()
    refused = []

    def clickEverything(done, total):
        for click in (lambda: logic.loadPhantoms(("lr",), shape=(8, 16, 16)),
                      lambda: logic.translate(node, Task.CustomModel, modelPath=modelPath, device="cpu"),
                      lambda: logic.ensureDependencies(askUser=False)):
            with pytest.raises(BusyError):
                click()
            refused.append(done)

    nodesBefore = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    out = logic.translate(node, Task.CustomModel, modelPath=modelPath, device="cpu", progress=clickEverything)
    assert refused and not logic.busy
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == nodesBefore + 1
    assert out.GetID() != node.GetID()


def _thirdPartyImports():
    names = set()
    for folder in ("RevGANCore", "RevGANSlicer/RevGANSlicerLib"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names}


def test_the_dependency_list_is_what_the_code_imports():
    """Only packages something imports are installed (no safetensors: the core reads the
    format itself), and every package imported is either installed, shipped with Slicer,
    optional, or Slicer's own."""
    slicersOwn = {"slicer", "vtk", "qt", "ctk", "PyTorchUtils", "SampleData", "RevGANCore"}
    imported = _thirdPartyImports() - slicersOwn - set(dependencies.BUNDLED) - set(dependencies.OPTIONAL)
    assert imported == set(dependencies.REQUIREMENTS)
    # torch is installed here, so the check installs nothing and lists nothing missing.
    assert dependencies.missingPackages() == []


@pytest.mark.parametrize("system, says, neverSays", [
    ("Windows", "CPU-only", "several GB"),
    ("Linux", "CUDA build", "CPU-only"),
    ("Darwin", "Apple", "CUDA"),
])
def test_the_pip_fallback_question_fits_the_operating_system(system, says, neverSays):
    question = dependencies.pipFallbackQuestion(system)
    assert says in question and neverSays not in question


@pytest.mark.parametrize("system, machine, numpyVersion, torchVersion, says", [
    # Intel macOS (or an x86_64 Slicer under Rosetta): PyTorch stops at 2.2, which needs NumPy 1.
    ("Darwin", "x86_64", "2.2.6", "2.2.2", "Slicer 5.8"),
    ("Darwin", "x86_64", "2.0.2", None, "Slicer 5.8"),  # refused before downloading a torch that cannot run
    # Elsewhere an old torch next to NumPy 2 is fixed by updating torch.
    ("Darwin", "arm64", "2.2.6", "2.2.2", "update PyTorch to 2.3"),
    ("Linux", "x86_64", "2.1.0", "2.1.2+cpu", "update PyTorch to 2.3"),
    ("Windows", "AMD64", "2.2.6", "2.2.1", "update PyTorch to 2.3"),
    # Combinations that work.
    ("Darwin", "x86_64", "1.26.4", "2.2.2", None),  # Slicer 5.8
    ("Darwin", "arm64", "2.2.6", "2.5.1", None),
    ("Darwin", "arm64", "2.2.6", None, None),  # installing gets a current build
    ("Linux", "x86_64", "2.2.6", "2.3.0", None),
    ("Linux", "x86_64", "1.26.4", "2.1.0", None),
])
def test_torch_numpy_problem_names_what_works(system, machine, numpyVersion, torchVersion, says):
    problem = dependencies.torchNumpyProblem(system, machine, numpyVersion, torchVersion)
    if says is None:
        assert problem is None
        return
    assert says in problem and numpyVersion in problem and "\n" not in problem
    if system == "Darwin" and machine == "x86_64":
        assert "will not help" in problem and "Apple-silicon" in problem
        assert "reinstall" not in problem.replace("reinstalling PyTorch will not help", "")


@pytest.mark.parametrize("environment, torchInstalled, skips", [
    ({"REVGAN_SELFTEST_SKIP_INFERENCE": "1"}, True, "build machine"),  # what ctest sets
    ({"REVGAN_SELFTEST_SKIP_INFERENCE": "ON", "REVGAN_SELFTEST_INSTALL_TORCH": "1"}, False, "build machine"),
    ({}, False, "PyTorch is not installed"),
    ({"REVGAN_SELFTEST_INSTALL_TORCH": "0"}, False, "PyTorch is not installed"),
    ({}, True, None),
    ({"REVGAN_SELFTEST_SKIP_INFERENCE": "0"}, True, None),
    ({"REVGAN_SELFTEST_INSTALL_TORCH": "yes"}, False, None),  # allowed to download it
])
def test_self_test_skips_inference_on_build_machines(environment, torchInstalled, skips):
    from RevGANSlicerLib.testing import inferenceSkipReason

    reason = inferenceSkipReason(environment, torchInstalled)
    assert (reason is None) if skips is None else (skips in reason)


def test_the_model_card_is_shown_without_importing_torch(tmp_path):
    """The panel's model card (a custom model file and a shipped-model task) reads the
    file's header only: torch stays out of Slicer's process."""
    modelPath = str(save_two_way_model(tmp_path / "model.safetensors"))
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'RevGANSlicer')!r})
from RevGANSlicerLib.logic import TranslationLogic
from RevGANSlicerLib.tasks import Task
logic = TranslationLogic()
custom = dict(logic.modelCard(Task.CustomModel, {modelPath!r}))
shipped = dict(logic.modelCard(Task.SuperResolution))
print(json.dumps({{"custom": custom, "shipped": shipped, "torch": "torch" in sys.modules}}))
"""
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["custom"]["Task"] == "kernel" and report["custom"]["File"] == modelPath
    assert report["shipped"]
    assert report["torch"] is False
