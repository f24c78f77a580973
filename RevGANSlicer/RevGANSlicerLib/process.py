"""A command in a separate process that the GUI polls: output lines, progress, cancel.

Slicer's own helper (``slicer.util.launchConsoleProcess``) starts a process with its
output piped, but it cannot put the process in its own process group, and in Slicer
< 5.12 it has no non-blocking mode. Cancel must stop the whole tree: ``PythonSlicer`` is
a launcher that starts the real Python interpreter as its child, and killing only the
launcher would leave the computation running on the GPU. So:

- POSIX: the process starts a new session (its own process group); cancel sends SIGTERM
  to the group, then SIGKILL to whatever is left after a grace period.
- Windows: the process starts in a new process group without a console window; cancel
  runs ``taskkill /T /F`` on it (the tree).

Output is read by a background thread in raw chunks and split on both "\\n" and "\\r"
(lines of commands without ``--progress jsonl`` may redraw with carriage returns).
Progress and messages arrive as JSON lines and are read as data. The GUI thread calls
:meth:`ConsoleProcess.poll` (from a ``qt.QTimer``); nothing here needs Qt, so it is
tested in plain Python.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

def parseEvent(line: str) -> Optional[Dict[str, Any]]:
    """The event of a ``--progress jsonl`` line ({"event": "progress", "done": 3, "total": 12},
    "message", "error", "done"), or None for any other line (those are only logged: progress
    is never guessed from text meant for people)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


def _progressOf(event: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    done, total = event.get("done"), event.get("total")
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (done, total)):
        return None
    return (done, total) if 0 <= done <= total else None


def killProcessTree(process: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop ``process`` and every process it started (see the module docstring)."""
    if process.poll() is not None and os.name != "nt":
        # The leader is gone, but its group may live on (an orphaned child).
        _signalGroup(process.pid, signal.SIGKILL)
        return
    if os.name == "nt":
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, creationflags=flags, check=False)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
        return
    _signalGroup(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None and not _groupAlive(process.pid):
            return
        time.sleep(0.05)
    _signalGroup(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def _signalGroup(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _groupAlive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConsoleProcess:
    """A command whose output is collected in the background and handed out by :meth:`poll`.

    ``onLine(line)`` is called (from :meth:`poll`, so on the caller's thread) for every
    output line. JSON-lines events (``revgan ... --progress jsonl``) are read as data:
    :attr:`progress` holds the last (done, total), :attr:`lastMessage` the last message's
    text, :attr:`warnings` the text of every warning (messages with level "warning"),
    :attr:`errorMessage` the error the command reported and :attr:`writtenPath` the file it
    wrote."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                 onLine: Optional[Callable[[str], None]] = None, keepLines: int = 2000):
        self.args = [str(arg) for arg in args]
        self.env = env
        self.cwd = cwd
        self.onLine = onLine
        self.keepLines = keepLines
        self.lines: List[str] = []
        self.progress: Optional[Tuple[int, int]] = None
        self.lastMessage = ""
        self.warnings: List[str] = []
        self.errorMessage = ""
        self.writtenPath: Optional[str] = None
        self.returncode: Optional[int] = None
        self.cancelled = False
        self.startTime: Optional[float] = None
        self.endTime: Optional[float] = None
        self._process: Optional[subprocess.Popen] = None
        self._queue: "queue.Queue[Tuple[str, object]]" = queue.Queue()
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "ConsoleProcess":
        if self._process is not None:
            raise RuntimeError("the process was already started")
        options = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=self.env, cwd=self.cwd, bufsize=0)
        if os.name == "nt":
            options["creationflags"] = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                        | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            options["start_new_session"] = True
        self.startTime = time.monotonic()
        self._process = subprocess.Popen(self.args, **options)
        self._reader = threading.Thread(target=self._read, name="RevGANSlicer output reader", daemon=True)
        self._reader.start()
        return self

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self.returncode is None

    def _read(self) -> None:
        stream = self._process.stdout
        pending = b""
        while True:
            try:
                chunk = stream.read(4096)  # unbuffered: returns whatever is available
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                break
            pending += chunk
            parts = re.split(rb"[\r\n]", pending)
            pending = parts.pop()
            for part in parts:
                if part.strip():
                    self._queue.put(("line", part.decode("utf-8", errors="replace").rstrip()))
        if pending.strip():
            self._queue.put(("line", pending.decode("utf-8", errors="replace").rstrip()))
        self._queue.put(("exit", self._process.wait()))

    def poll(self) -> Optional[int]:
        """Hand out the output collected so far; the return code once the process ended
        and all its output was handed out, else None."""
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                return self.returncode
            if kind == "line":
                self._handleLine(str(value))
            else:
                self.returncode = int(value)  # type: ignore[arg-type]
                self.endTime = time.monotonic()
                return self.returncode

    def _handleLine(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > self.keepLines:
            del self.lines[: len(self.lines) - self.keepLines]
        event = parseEvent(line)
        kind = event.get("event") if event is not None else None
        if kind == "progress":
            self.progress = _progressOf(event) or self.progress
        elif kind == "message":
            self.lastMessage = str(event.get("text", ""))
            if event.get("level") == "warning":
                self.warnings.append(self.lastMessage)
        elif kind == "error":
            self.errorMessage = str(event.get("text", ""))
        elif kind == "done":
            self.writtenPath = str(event.get("output", ""))
        if self.onLine is not None:
            self.onLine(line)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[int]:
        """Poll until the process ends (or ``timeout`` seconds pass); the return code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return self.returncode

    def cancel(self) -> None:
        """Stop the process and everything it started; :meth:`poll` then returns its code."""
        if self._process is None:
            return
        self.cancelled = True
        killProcessTree(self._process)

    def outputTail(self, count: int = 20) -> str:
        return "\n".join(self.lines[-count:])


def pythonExecutable() -> str:
    """The Python to run RevGANCore in a separate process: PythonSlicer inside Slicer (the
    same interpreter, packages and torch as Slicer's own Python), else this interpreter."""
    import shutil

    found = shutil.which("PythonSlicer")
    if found:
        return found
    folder = os.path.dirname(sys.executable)
    for name in ("PythonSlicer.exe", "PythonSlicer"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    if os.path.basename(sys.executable).lower().startswith("python"):
        return sys.executable
    raise RuntimeError(f"cannot find PythonSlicer (or a Python interpreter) next to {sys.executable}")
