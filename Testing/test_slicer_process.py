"""Running in a separate process: output, progress, messages and cancel (real processes)."""

import os
import signal
import sys
import textwrap
import time

import pytest

import slicer_helpers  # noqa: F401  (puts RevGANSlicer/ on sys.path)

from RevGANSlicerLib import engine  # noqa: E402
from RevGANSlicerLib.process import ConsoleProcess, parseEvent  # noqa: E402


@pytest.mark.parametrize("line, expected", [
    ('{"event": "progress", "done": 3, "total": 12}', {"event": "progress", "done": 3, "total": 12}),
    ('  {"event": "message", "level": "info", "text": "t"}  ', {"event": "message", "level": "info", "text": "t"}),
    ("plan: 20% recomputed, tile 3/12", None),  # text meant for people is never progress
    ("translating:  42%|####      | 5/12 [00:03<00:04,  1.7tile/s]", None),
    ('{"done": 1, "total": 2}', None),  # no event name
    ('{"event": "progress", "done": 1', None),  # cut short
    ("[1, 2]", None),
])
def test_only_json_lines_with_an_event_are_events(line, expected):
    assert parseEvent(line) == expected


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_output_events_and_exit_code_arrive(tmp_path):
    child = _script(tmp_path, r"""
        import json, sys, time
        def event(**fields):
            sys.stdout.write(json.dumps(fields) + "\n"); sys.stdout.flush()
        sys.stderr.write("plan: 20% recomputed\n"); sys.stderr.flush()
        for done in range(0, 5):
            event(event="progress", done=done, total=4)
            time.sleep(0.05)
        event(event="message", level="info", text="CUDA out of memory: halving the tile")
        event(event="error", text="out.nrrd: disk full")
        sys.stderr.write("\rredrawn 1\rredrawn 2\n")
        sys.exit(3)
    """)
    seen = []
    progress = []
    process = ConsoleProcess([sys.executable, child], onLine=seen.append).start()
    while process.poll() is None:
        if process.progress is not None and process.progress not in progress:
            progress.append(process.progress)
        time.sleep(0.01)
    assert process.returncode == 3
    assert "plan: 20% recomputed" in seen and "redrawn 1" in seen and "redrawn 2" in seen
    assert progress[0] == (0, 4) and process.progress == (4, 4)
    assert process.lastMessage == "CUDA out of memory: halving the tile"
    assert process.errorMessage == "out.nrrd: disk full"
    assert not process.running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """Like PythonSlicer (a launcher that runs the real Python as its child): cancelling must
    stop the grandchild too, not only the process we started."""
    pid_file = tmp_path / "grandchild.pid"
    child = _script(tmp_path, f"""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("tile 1/100", flush=True)
        grandchild.wait()
    """)
    process = ConsoleProcess([sys.executable, child]).start()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    started = time.monotonic()
    process.cancel()
    # Ended by the cancel's signal, not by finishing (it would wait 120 s for the grandchild).
    assert process.wait(timeout=15) in (-signal.SIGTERM, -signal.SIGKILL)
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived the cancel"


def test_the_translate_command_reaches_revgancore_in_a_fresh_process(tmp_path):
    """The separate process finds RevGANCore through the bootstrap (whatever the working
    folder and without PYTHONPATH), as PythonSlicer will."""
    command = engine.translateCommand("in.nrrd", "out.nrrd", "model.safetensors", python=sys.executable)
    assert command[0] == sys.executable and command[1] == "-c"
    assert command[4:7] == ["translate", "in.nrrd", "out.nrrd"]
    version = command[:4] + ["--version"]
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    process = ConsoleProcess(version, env=environment, cwd=str(tmp_path)).start()
    assert process.wait(timeout=60) == 0, process.outputTail()
    assert any(line.startswith("revgan ") for line in process.lines)

    # With the environment the module uses, too.
    process = ConsoleProcess(version, env=engine.processEnvironment(), cwd=str(tmp_path)).start()
    assert process.wait(timeout=60) == 0, process.outputTail()


def test_any_revgan_command_runs_in_the_background(tmp_path):
    from RevGANSlicerLib.logic import TranslationLogic

    process = TranslationLogic.startCommand(["--help"], cwd=str(tmp_path), python=sys.executable)
    assert process.wait(timeout=60) == 0
    assert any("usage: revgan" in line for line in process.lines)
    failing = TranslationLogic.startCommand(["no-such-command"], cwd=str(tmp_path), python=sys.executable)
    assert failing.wait(timeout=60) not in (None, 0)


def test_translate_command_options():
    command = engine.translateCommand("a.nrrd", "b.nrrd", "m", direction="inverse", tileSize=48, device="cuda:1",
                                      python="PythonSlicer")
    tail = command[4:]
    assert tail == ["translate", "a.nrrd", "b.nrrd", "--model", "m", "--direction", "inverse", "--device",
                    "cuda:1", "--dtype", "int16", "--progress", "jsonl", "--no-air-check", "--tile", "48"]
    assert "--tile" not in engine.translateCommand("a", "b", "m", python="p")


def test_a_real_translate_run_reports_json_lines_from_zero(tmp_path):
    """``revgan translate --progress jsonl`` in a real process: every progress event is
    read as data, the first is 0 of N, the last N of N, then the written file."""
    from model_helpers import save_two_way_model
    from RevGANCore.volume import Volume
    from RevGANCore.volume_io import write_volume

    import numpy as np

    model = save_two_way_model(tmp_path / "model.safetensors")
    array = np.full((36, 36, 36), -1000.0, dtype=np.float32)
    array[8:28, 8:28, 8:28] = 40.0
    write_volume(Volume(array, spacing=(1.0, 1.0, 2.0)), tmp_path / "in.nrrd", dtype="float32")
    command = engine.translateCommand(tmp_path / "in.nrrd", tmp_path / "out.nrrd", model, tileSize=32,
                                      device="cpu", python=sys.executable)
    process = ConsoleProcess(command, env=engine.processEnvironment(), cwd=str(tmp_path)).start()
    assert process.wait(timeout=300) == 0, process.outputTail()
    events = [parseEvent(line) for line in process.lines]
    progress = [(event["done"], event["total"]) for event in events if event and event["event"] == "progress"]
    total = progress[0][1]
    assert total > 1 and progress[0] == (0, total) and progress[-1] == (total, total)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert any(event and event["event"] == "message" for event in events)
    assert process.writtenPath == str(tmp_path / "out.nrrd")


def test_a_volume_without_air_translates_in_a_separate_process_as_in_this_one(tmp_path):
    """A soft-tissue crop (no voxel below -500 HU) that the in-process engine translates is not
    refused by the separate process either: both take the volume node the user chose."""
    from model_helpers import save_two_way_model
    from RevGANCore.volume import Volume
    from RevGANCore.volume_io import read_volume, write_volume

    import numpy as np

    model = save_two_way_model(tmp_path / "model.safetensors")
    array = np.random.default_rng(0).uniform(-150.0, 800.0, (20, 24, 24)).astype(np.float32)
    write_volume(Volume(array, spacing=(1.0, 1.0, 2.0)), tmp_path / "in.nrrd", dtype="float32")
    command = engine.translateCommand(tmp_path / "in.nrrd", tmp_path / "out.nrrd", model, device="cpu",
                                      python=sys.executable)
    process = ConsoleProcess(command, env=engine.processEnvironment(), cwd=str(tmp_path)).start()
    assert process.wait(timeout=300) == 0, process.outputTail()
    assert read_volume(tmp_path / "out.nrrd", expect_ct=False).shape == (20, 24, 24)


def test_a_failing_run_reports_its_error_as_an_event(tmp_path):
    command = engine.translateCommand(tmp_path / "missing.nrrd", tmp_path / "out.nrrd", tmp_path / "none.safetensors",
                                      python=sys.executable)
    process = ConsoleProcess(command, env=engine.processEnvironment(), cwd=str(tmp_path)).start()
    assert process.wait(timeout=120) == 1
    assert "none.safetensors" in process.errorMessage and "\n" not in process.errorMessage
