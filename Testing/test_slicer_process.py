"""Running in a separate process: output, progress, messages and cancel (real processes)."""

import os
import signal
import sys
import textwrap
import time

import pytest

import slicer_helpers  # noqa: F401  (puts RevGANSlicer/ on sys.path)

from RevGANSlicerLib import engine  # noqa: E402
from RevGANSlicerLib.process import ConsoleProcess, isNoteworthy, parseProgress  # noqa: E402


@pytest.mark.parametrize("line, expected", [
    ("translate: tile 3/12", (3, 12)),
    ("Tiles 5 of 8 done", (5, 8)),
    ("translating:  42%|####      | 5/12 [00:03<00:04,  1.7tile/s]", (5, 12)),
    ("progress 7 / 9", (7, 9)),
    ("  55%", (55, 100)),
    ("reading /data/case/12/34/input.nrrd", None),
    ("model ngf=16 depth=4", None),
    ("spacing 0.8/1.25 mm", None),
    ("13/12", None),
])
def test_progress_lines_are_parsed(line, expected):
    assert parseProgress(line) == expected


def test_memory_fallback_lines_are_noteworthy():
    assert isNoteworthy("CUDA out of memory at tile 64: halving the tile to 32")
    assert isNoteworthy("falling back to the CPU")
    assert not isNoteworthy("tile 3/12")


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_output_progress_and_exit_code_arrive(tmp_path):
    child = _script(tmp_path, r"""
        import sys, time
        sys.stdout.write("starting\n"); sys.stdout.flush()
        for done in range(1, 5):
            sys.stderr.write(f"\rtranslating: {done}/4 [00:00<00:00]"); sys.stderr.flush()
            time.sleep(0.05)
        sys.stderr.write("\nCUDA out of memory: halving the tile\n")
        print("written out.nrrd")
        sys.exit(3)
    """)
    seen = []
    process = ConsoleProcess([sys.executable, child], onLine=seen.append).start()
    assert process.wait(timeout=30) == 3
    assert "starting" in seen and "written out.nrrd" in seen
    # Carriage-return progress (tqdm style) arrives as separate lines.
    assert [line for line in seen if line.startswith("translating")] == [
        f"translating: {n}/4 [00:00<00:00]" for n in range(1, 5)]
    assert process.progress == (4, 4)
    assert "out of memory" in process.lastMessage
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
                    "cuda:1", "--tile", "48"]
    assert "--tile" not in engine.translateCommand("a", "b", "m", python="p")
