"""Progress reporting for long loops: a tqdm bar when tqdm is importable, else plain lines.

``progress_bar(description, unit)`` returns an object that is both a context manager and a
``progress(done, total)`` callback, the shape every long-running RevGANCore function takes::

    with progress_bar("translate", unit="tile") as bar:
        translate(model, volume, progress=bar)

tqdm is optional (RevGANCore must run in 3D Slicer's Python without a pip step); the
fallback prints at most one line per ``interval`` seconds, and always the last one.

:class:`JsonLinesReporter` is the machine-readable form (``revgan translate --progress
jsonl``): one JSON object per line, so a parent process (the Slicer module) reads progress
and messages as data instead of scraping text meant for people.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, TextIO


class _PlainBar:
    """Fallback without tqdm: ``description: 3/27 tile (11%) 4.2 s`` lines on ``stream``."""

    def __init__(self, description: str, unit: str, stream: TextIO, interval: float):
        self.description = description
        self.unit = unit
        self.stream = stream
        self.interval = interval
        self.started = time.perf_counter()
        self.last_print = float("-inf")
        self.last_done = -1
        self.first_done = None
        self.first_time = self.started

    def __call__(self, done: int, total: int, postfix: str = "") -> None:
        now = time.perf_counter()
        finished = total > 0 and done >= total
        if done == self.last_done or (not finished and now - self.last_print < self.interval):
            return
        if self.first_done is None:
            self.first_done, self.first_time = done, now
        self.last_print = now
        self.last_done = done
        percent = f" ({100.0 * done / total:.0f}%)" if total else ""
        elapsed = now - self.first_time
        rate = f" {(done - self.first_done) / elapsed:.2f} {self.unit}/s" if elapsed > 0 else ""
        self.stream.write(f"{self.description}: {done}/{total} {self.unit}{percent} "
                          f"{now - self.started:.1f} s{rate}{' ' + postfix if postfix else ''}\n")
        self.stream.flush()

    def write(self, text: str) -> None:
        _write_line(self.stream, text)

    def close(self) -> None:
        pass


class _TqdmBar:
    """Created on the first update, so that work failing before it starts prints no bar. Work
    done before that update (a resumed run's earlier steps, the first step itself) counts as
    the bar's start, so its rate and time left cover only what the bar saw being done. A bar
    that reaches its total is closed at once: what follows (writing the output, messages)
    neither redraws it nor counts in its time."""

    def __init__(self, description: str, unit: str, stream: TextIO):
        self.description = description
        self.unit = unit
        self.stream = stream
        self.bar = None
        self.completed = None  # (done, total) of the bar closed at its total

    def __call__(self, done: int, total: int, postfix: str = "") -> None:
        if self.bar is None and self.completed == (done, total):
            return  # the last step reported again after the bar closed
        if self.bar is None:
            from tqdm import tqdm

            # A terminal that reports no width (a pseudo-terminal nobody sized, as under
            # `script` without a parent terminal) would get an empty bar: assume 80 columns.
            sized = _terminal_columns(self.stream) > 0
            self.bar = tqdm(total=total, initial=done, desc=self.description, unit=self.unit, file=self.stream,
                            dynamic_ncols=sized, ncols=None if sized else 80,
                            nrows=None if sized else 24)
        if self.bar.total != total:  # the total may change (e.g. smaller tiles after an OOM)
            self.bar.reset(total=total)
            self.bar.initial = done  # the rate starts again with the new count
        self.bar.n = done
        if postfix:
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()
        if total and done >= total:
            self.close()
            self.completed = (done, total)

    def write(self, text: str) -> None:
        """A message on its own line above the bar (never glued to the bar's line)."""
        if self.bar is None:
            _write_line(self.stream, text)
        else:
            self.bar.write(text, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressBar:
    """A ``progress(done, total)`` callback drawing a bar; close it (or use ``with``)."""

    def __init__(self, description: str, unit: str = "step", stream: Optional[TextIO] = None,
                 enabled: bool = True, interval: float = 2.0, use_tqdm: Optional[bool] = None):
        stream = stream if stream is not None else sys.stderr
        self._stream = stream
        self.enabled = enabled
        self._impl = None
        if not enabled:
            return
        if use_tqdm is None:
            # Redraw-in-place bars only on a terminal; logs and parent processes (the Slicer
            # module parses progress lines) get plain lines.
            use_tqdm = tqdm_available() and _is_terminal(stream)
        self._impl = _TqdmBar(description, unit, stream) if use_tqdm else _PlainBar(
            description, unit, stream, interval)

    def __call__(self, done: int, total: int, postfix: str = "") -> None:
        if self._impl is not None:
            self._impl(done, total, postfix)

    def write(self, text: str) -> None:
        """Print ``text`` as a line of its own, also while a bar is being redrawn (a
        disabled bar still prints: warnings and failures are not progress)."""
        if self._impl is not None:
            self._impl.write(text)
        else:
            _write_line(self._stream, text)

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_line(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _terminal_columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def progress_bar(description: str, unit: str = "step", stream: Optional[TextIO] = None,
                 enabled: bool = True) -> ProgressBar:
    """A progress callback for ``description``; disabled bars do nothing."""
    return ProgressBar(description, unit=unit, stream=stream, enabled=enabled)


class JsonLinesReporter:
    """Progress and messages as JSON lines on ``stream`` (default: standard output)::

        {"event": "progress", "done": 3, "total": 12}
        {"event": "message", "level": "info", "text": "device cpu; 12 windows of ..."}
        {"event": "error", "text": "in.nrrd: no such file or folder"}
        {"event": "done", "output": "out.nrrd"}

    Every progress update is written (no rate limit: a reader wants each tile) and each
    line is flushed at once. Usable as a ``progress(done, total)`` callback and a
    ``log(text)`` callback (:meth:`message`)."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, event: str, **fields) -> None:
        self.stream.write(json.dumps(dict(event=event, **fields), ensure_ascii=True) + "\n")
        self.stream.flush()

    def __call__(self, done: int, total: int, postfix: str = "") -> None:
        self.emit("progress", done=int(done), total=int(total))

    def message(self, text: str, level: str = "info") -> None:
        self.emit("message", level=level, text=str(text))

    def error(self, text: str) -> None:
        self.emit("error", text=str(text))

    def done(self, output) -> None:
        self.emit("done", output=str(output))

    def close(self) -> None:
        pass

    def __enter__(self) -> "JsonLinesReporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
