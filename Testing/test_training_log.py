"""metrics.csv stays one table across a crash and a resume, and across versions that add columns."""

import csv

from RevGANCore.training_log import FIELDS, MetricsLog

OLD_HEADER = ["step", "lr", "g_total", "g_retired", "val_l1"]  # an older version's columns


def _write_old_file(path, body: str) -> None:
    path.write_bytes((",".join(OLD_HEADER) + "\r\n" + body).encode("utf-8"))


def _read(path):
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        return reader.fieldnames, list(reader)


def test_resume_drops_rows_past_the_checkpoint_and_a_torn_line_and_keeps_old_columns(tmp_path):
    target = tmp_path / "metrics.csv"
    # Steps 10 and 20 were logged, the checkpoint is at 20; step 30 was logged after it, and the
    # kill tore the line of step 40 in half.
    _write_old_file(target, "10,0.001,1.5,7,\r\n20,0.001,1.4,8,0.02\r\n30,0.001,1.3,9,\r\n40,0.0")
    log = MetricsLog(tmp_path, is_main=True, tensorboard=False, resume_step=20)
    log.write({"step": 30, "lr": 0.0005, "g_total": 1.25, "g_recorrupted_pairs": 0.5})
    header, rows = _read(target)
    assert header[:len(OLD_HEADER)] == OLD_HEADER  # the file's own columns, in its order
    assert set(FIELDS) <= set(header) and len(header) == len(set(header))
    assert [row["step"] for row in rows] == ["10", "20", "30"]
    assert rows[1]["g_retired"] == "8" and rows[1]["val_l1"] == "0.02"  # kept values intact
    assert rows[2]["g_total"] == "1.25" and rows[2]["g_recorrupted_pairs"] == "0.5"
    assert rows[2]["g_retired"] == ""


def test_a_file_that_needs_nothing_is_left_byte_for_byte(tmp_path):
    target = tmp_path / "metrics.csv"
    first = MetricsLog(tmp_path, is_main=True, tensorboard=False)
    for step in (0, 10, 20):
        first.write({"step": step, "lr": 0.001, "val_l1": 0.5})
    before = target.read_bytes()
    MetricsLog(tmp_path, is_main=True, tensorboard=False, resume_step=20)
    assert target.read_bytes() == before


def test_a_fresh_run_starts_the_file_anew(tmp_path):
    """A folder whose earlier run never reached a checkpoint may be reused by a fresh run; its
    rows would otherwise sit in front of the new run's as if they were one run."""
    target = tmp_path / "metrics.csv"
    _write_old_file(target, "10,0.001,1.5,7,\r\n")
    log = MetricsLog(tmp_path, is_main=True, tensorboard=False)
    log.write({"step": 0, "val_l1": 0.25})
    header, rows = _read(target)
    assert [row["step"] for row in rows] == ["0"]
    assert rows[0]["val_l1"] == "0.25"


def test_other_processes_leave_the_file_alone(tmp_path):
    target = tmp_path / "metrics.csv"
    _write_old_file(target, "10,0.001,1.5,7,\r\n20,0.001,1.4,8,0.02\r\n30,0.0")
    before = target.read_bytes()
    MetricsLog(tmp_path, is_main=False, tensorboard=False, resume_step=10).write({"step": 11})
    assert target.read_bytes() == before
