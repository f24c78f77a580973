"""Shared tools for the hostile-input suites (Testing/test_hostile_*.py): run the real
``revgan`` command in a separate process (optionally under resource limits), and check
what a hostile case must leave behind: one clear line, a known exit code, inputs
byte-identical and no stray files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """A finished ``revgan`` process."""

    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self):
        return [line for line in self.stderr.splitlines() if line.strip()]


def _limits(file_size_bytes: Optional[int], memory_bytes: Optional[int]):
    if file_size_bytes is None and memory_bytes is None:
        return None

    def apply() -> None:
        import resource

        if file_size_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_bytes, file_size_bytes))
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def revgan_command(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "RevGANCore", *[str(a) for a in args]]


def revgan_environment(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY)] + ([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else []))
    environment.setdefault("OMP_NUM_THREADS", "2")
    environment.update(env or {})
    return environment


def _interruptible() -> None:
    # As in a person's terminal. A suite started in the background (`... &` in a script)
    # inherits SIGINT ignored, and Python then leaves it ignored, so Ctrl-C tests would pass
    # or fail by how the suite was launched.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_revgan(args: Sequence[str], cwd=None) -> subprocess.Popen:
    """Start ``revgan ARGS`` without waiting (to signal it mid-run); text pipes; SIGINT
    at its default (see :func:`_interruptible`)."""
    return subprocess.Popen(revgan_command(args), cwd=str(cwd) if cwd else None, env=revgan_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible if os.name == "posix" else None)


def run_revgan_in_terminal(args: Sequence[str], cwd=None, timeout: float = 300,
                           size: Optional[Tuple[int, int]] = (24, 80)) -> Run:
    """Run ``revgan ARGS`` with a pseudo-terminal as stdin, stdout and stderr, the way a
    person's shell runs it (progress bars then redraw in place); the terminal's output
    comes back as ``stdout`` (and ``stderr``, the same text)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    if size is not None:  # (rows, columns); a new pseudo-terminal is 0 x 0, as under `script`
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    process = subprocess.Popen(revgan_command(args), cwd=str(cwd) if cwd else None, env=revgan_environment(),
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other end is closed
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"revgan {' '.join(map(str, args))} ran past {timeout} s")
    finally:
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return Run([str(a) for a in args], process.wait(), text, text)


def run_revgan(args: Sequence[str], cwd=None, timeout: float = 300, file_size_bytes: Optional[int] = None,
               memory_bytes: Optional[int] = None, env: Optional[Dict[str, str]] = None,
               stdin: Optional[str] = None) -> Run:
    """Run ``python -m RevGANCore ARGS`` in a new process. ``file_size_bytes`` sets
    RLIMIT_FSIZE (what ``ulimit -f`` does: a stand-in for a full disk that needs no
    privileges), ``memory_bytes`` RLIMIT_AS."""
    done = subprocess.run(revgan_command(args), cwd=str(cwd) if cwd else None, env=revgan_environment(env),
                          input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limits(file_size_bytes, memory_bytes))
    return Run([str(a) for a in args], done.returncode, done.stdout, done.stderr)


def assert_refused(run: Run, *fragments: str, exit_code: int = 1) -> str:
    """The command failed with ``exit_code`` and printed exactly one error line, with no
    traceback, containing every fragment (case-insensitive). Returns that line."""
    assert run.returncode == exit_code, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.error_lines if "error" in line.lower()]
    assert len(errors) == 1, run.stderr[-2000:]
    line = errors[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), (fragment, line)
    return line


def digest_tree(*roots) -> Dict[str, str]:
    """sha256 of every file under (or at) each root, keyed by path: compare before and
    after a hostile run to prove that inputs are byte-identical and nothing was added."""
    digests: Dict[str, str] = {}
    for root in roots:
        root = Path(root)
        paths: Iterable[Path] = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
        for path in paths:
            if path.is_file() and not path.is_symlink():
                digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir() or path.is_symlink():
                digests[str(path)] = "<dir>" if path.is_dir() else "<link>"
    return digests


def hidden_leftovers(folder) -> list:
    """Files or folders whose names start with '.revgan' (staging and scratch) under folder."""
    return sorted(str(p) for p in Path(folder).rglob(".revgan*"))
