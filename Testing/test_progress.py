"""Progress bars (RevGANCore.progress) with the real tqdm and the plain-line fallback: the rate
and time left cover only the work the bar saw being done, so a resumed run does not claim
thousands of steps per second."""

from __future__ import annotations

import io
import re
import time

import pytest

from RevGANCore.progress import ProgressBar

pytest.importorskip("tqdm")

#: Seconds between updates: the true rate is then at most 1 / PAUSE steps per second.
PAUSE = 0.2


def rates(text: str, unit: str):
    """Every rate a bar printed, in units per second ('?' frames left out)."""
    return [float(value) for value in re.findall(r"([0-9.]+)\s*" + re.escape(unit) + r"/s", text)]


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_a_resumed_run_reports_the_rate_it_saw(use_tqdm):
    """The first update arrives at step 500 of 1000 (a run resumed from its checkpoint): the
    bar must not count those 500 steps as done in no time."""
    stream = io.StringIO()
    with ProgressBar("train", unit="it", stream=stream, interval=0.0, use_tqdm=use_tqdm) as bar:
        for step in (500, 501, 502):
            bar(step, 1000)
            time.sleep(PAUSE)
    text = stream.getvalue()
    assert "502/1000" in text
    seen = rates(text, "it")
    assert seen, text
    assert max(seen) <= 2.0 / PAUSE, text  # the old bar printed 500 / (microseconds)


def test_a_new_count_restarts_the_rate():
    """Smaller tiles after an out-of-memory retry change the total mid-way; the rate then
    counts from the new start."""
    stream = io.StringIO()
    with ProgressBar("translate", unit="tile", stream=stream, use_tqdm=True) as bar:
        bar(0, 4)
        time.sleep(PAUSE)
        bar(3, 4)
        bar(3, 32)  # retried with smaller tiles: 3 of 32 done at once, not in the bar's time
        time.sleep(PAUSE)
        bar(4, 32)
    text = stream.getvalue()
    assert "4/32" in text
    assert max(rates(text.split("3/32")[-1], "tile")) <= 2.0 / PAUSE, text


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_a_finished_bar_is_not_redrawn_by_what_follows(use_tqdm):
    """After the last tile: messages (clipped voxels) and the output's writing time neither
    redraw the bar nor lower its rate; the last step reported twice draws nothing new."""
    stream = io.StringIO()
    with ProgressBar("translate", unit="tile", stream=stream, interval=0.0, use_tqdm=use_tqdm) as bar:
        bar(0, 4)
        bar(4, 4)
        bar.write("revgan: 12 output voxels clipped")
        time.sleep(PAUSE)
        bar(4, 4)
    before, after = stream.getvalue().split("revgan: 12 output voxels clipped")
    assert "4/4" in before
    assert after.strip() == "", after
