"""``revgan batch``: a cohort with a bad scan, a killed run resumed, shards that cover the
cohort once, one output per DICOM series, and command-line mistakes refused up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from RevGANCore.batch_ledger import output_digest
from RevGANCore.batch_plan import plan_batch, shard_jobs
from RevGANCore.cli import main
from RevGANCore.volume_io import read_volume, write_volume

from dicom_series_writer import write_ct_series
from hostile_helpers import revgan_command, revgan_environment, start_revgan
from model_helpers import random_volume, save_tiny_model


#: No shipped models unless a test makes a registry.
pytestmark = pytest.mark.usefixtures("no_registry")


@pytest.fixture
def model(tmp_path):
    return save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=3, depth=1)


def _cohort(root: Path, names, shape=(10, 24, 24)) -> Path:
    for seed, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_volume(random_volume(shape, seed=seed), root / name)
    return root


def _ledger(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _batch(model, *args) -> int:
    return main(["batch", *map(str, args), "--model", str(model), "--device", "cpu", "--quiet"])


def test_a_corrupt_scan_is_recorded_and_the_others_are_done(tmp_path, model, capsys):
    tree = _cohort(tmp_path / "cohort", ["p1/ct.nrrd", "p2/ct.nii.gz", "p3/ct.mha"])
    corrupt = tree / "p2" / "broken.nrrd"
    corrupt.write_bytes(b"NRRD0004\nnot a header\n")
    inputs_before = {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()}
    out = tmp_path / "out"
    assert _batch(model, tree, "--out", out) == 1
    captured = capsys.readouterr()
    assert "3 done, 0 skipped as already done, 1 FAILED" in captured.out
    records = {record["job"]: record for record in _ledger(out / "ledger-1-of-1.jsonl")}
    assert set(records) == {"p1_ct", "p2_ct", "p3_ct", "p2_broken"}
    failed = records["p2_broken"]
    assert failed["status"] == "failed" and failed["output"] is None
    assert failed["error"].startswith(f"{corrupt}: cannot be read") and "\n" not in failed["error"]
    assert f"failed: p2_broken: {corrupt}" in captured.err
    for job in ("p1_ct", "p2_ct", "p3_ct"):
        record = records[job]
        assert record["status"] == "ok" and record["error"] is None
        assert record["sha256"] == output_digest(out / record["output"])
        assert read_volume(out / record["output"]).shape == (10, 24, 24)
    assert {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()} == inputs_before


def test_a_killed_batch_resumes_without_redoing_finished_scans(tmp_path, model):
    tree = _cohort(tmp_path / "cohort", [f"scan{n}.nrrd" for n in range(6)], shape=(24, 48, 48))
    out = tmp_path / "out"
    ledger = out / "ledger-1-of-1.jsonl"
    process = subprocess.Popen(revgan_command(["batch", str(tree), "--model", str(model), "--out", str(out),
                                               "--device", "cpu", "--quiet"]),
                               env=revgan_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (ledger.is_file() and ledger.read_bytes().count(b"\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, "the batch ended before its first scan"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {record["job"]: record for record in _ledger(ledger)}
    assert 1 <= len(finished) < 6, "the kill must land mid-batch"
    kept = {job: os.stat(out / record["output"]) for job, record in finished.items()}
    with open(ledger, "ab") as stream:  # a line torn by a kill
        stream.write(b'{"job": "scan5", "input": "')

    assert _batch(model, tree, "--out", out, "--resume") == 0
    for job, before in kept.items():
        after = os.stat(out / finished[job]["output"])
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), f"{job} was redone"
    lines = ledger.read_text().splitlines()
    assert lines[len(finished)] == '{"job": "scan5", "input": "'  # the torn line is closed, not glued onto
    records = [json.loads(line) for line in lines[len(finished) + 1:]]
    assert sorted(record["job"] for record in records) == sorted(set(f"scan{n}" for n in range(6)) - set(finished))
    assert all(record["status"] == "ok" for record in records)


def test_ctrl_c_mid_batch_names_the_outputs_already_complete(tmp_path, model):
    tree = _cohort(tmp_path / "cohort", [f"scan{n}.nrrd" for n in range(6)], shape=(24, 48, 48))
    out = tmp_path / "out"
    ledger = out / "ledger-1-of-1.jsonl"
    process = start_revgan(["batch", str(tree), "--model", str(model), "--out", str(out), "--device", "cpu",
                            "--quiet"])
    try:
        deadline = time.monotonic() + 120
        while not (ledger.is_file() and ledger.read_bytes().count(b"\n") >= 1):
            assert process.poll() is None and time.monotonic() < deadline, "the batch ended before its first scan"
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    finished = [record for record in _ledger(ledger) if record["status"] == "ok"]
    assert 1 <= len(finished) < 6, "the interrupt must land mid-batch"
    assert "revgan: interrupted (SIGINT); written completely before it: " in stderr
    assert str(out / finished[-1]["output"]) in stderr


def test_resume_redoes_a_scan_whose_output_changed(tmp_path, model, capsys):
    tree = _cohort(tmp_path / "cohort", ["a.nrrd", "b.nrrd", "c.nrrd"])
    out = tmp_path / "out"
    assert _batch(model, tree, "--out", out, "--format", "nrrd") == 0
    (out / "b.nrrd").write_bytes(b"damaged")
    (out / "c.nrrd").unlink()
    capsys.readouterr()
    assert _batch(model, tree, "--out", out, "--format", "nrrd", "--resume") == 0
    assert "2 done, 1 skipped as already done" in capsys.readouterr().out
    assert read_volume(out / "b.nrrd").shape == read_volume(out / "c.nrrd").shape == (10, 24, 24)


@pytest.mark.parametrize("count", [2, 3])
def test_shards_cover_every_scan_exactly_once(tmp_path, count):
    tree = _cohort(tmp_path / "cohort", [f"d{n % 3}/scan{n}.nrrd" for n in range(7)], shape=(2, 4, 4))
    jobs = plan_batch([tree], tmp_path / "out", "nifti", "kernel")
    shares = [shard_jobs(jobs, (k, count)) for k in range(1, count + 1)]
    taken = [job.job_id for share in shares for job in share]
    assert sorted(taken) == sorted(job.job_id for job in jobs) and len(set(taken)) == 7
    assert jobs == plan_batch([tree], tmp_path / "out", "nifti", "kernel")  # deterministic


def test_two_shard_runs_share_a_cohort(tmp_path, model):
    tree = _cohort(tmp_path / "cohort", [f"scan{n}.nrrd" for n in range(5)])
    out = tmp_path / "out"
    assert _batch(model, tree, "--out", out, "--shard", "1/2") == 0
    assert _batch(model, tree, "--out", out, "--shard", "2/2", "--jobs", "2") == 0
    first, second = _ledger(out / "ledger-1-of-2.jsonl"), _ledger(out / "ledger-2-of-2.jsonl")
    jobs = [record["job"] for record in first + second]
    assert sorted(jobs) == [f"scan{n}" for n in range(5)]
    assert all(record["status"] == "ok" and (out / record["output"]).is_file() for record in first + second)


@pytest.mark.parametrize("output_format", ["nifti", "dicom"])
def test_a_dicom_tree_gives_one_output_per_series(tmp_path, model, output_format):
    tree = tmp_path / "dicom"
    write_ct_series(tree / "patient1", random_volume((4, 16, 16), seed=1), series_number=3, signed=True)
    write_ct_series(tree / "patient1", random_volume((5, 16, 16), seed=2), series_number=4, signed=True,
                    file_prefix="other")
    write_ct_series(tree / "patient2" / "study", random_volume((6, 16, 16), seed=3), series_number=3, signed=True)
    out = tmp_path / "out"
    assert _batch(model, tree, "--out", out, "--format", output_format) == 0
    records = {record["job"]: record for record in _ledger(out / "ledger-1-of-1.jsonl")}
    assert set(records) == {"patient1_series3", "patient1_series4", "patient2_study_series3"}
    depths = {job: read_volume(out / record["output"]).shape[0] for job, record in records.items()}
    assert depths == {"patient1_series3": 4, "patient1_series4": 5, "patient2_study_series3": 6}
    # the series are B30f, the look of the model's target domain (smooth_b30f): kept in the ledger
    assert all(len(record["warnings"]) == 1 and "B30F" in record["warnings"][0].upper()
               for record in records.values())


def test_a_manifest_gives_each_case_in_the_model_source_domain(tmp_path, model):
    from RevGANCore.manifest import new_manifest, write_manifest

    folder = tmp_path / "dataset"
    _cohort(folder, ["c1/sharp.nrrd", "c1/smooth.nrrd", "c2/sharp.nrrd"])
    manifest = new_manifest({"sharp": {}, "smooth": {}}, {"kernel": {"source": "sharp", "target": "smooth"}}, "test")
    manifest["cases"] = [{"id": "c1", "files": {"sharp": "c1/sharp.nrrd", "smooth": "c1/smooth.nrrd"}},
                         {"id": "c2", "files": {"sharp": "c2/sharp.nrrd"}}]
    write_manifest(manifest, folder)
    inverse = plan_batch([folder], tmp_path / "out", "nifti", "kernel", "inverse")
    assert [(job.job_id, job.input.name) for job in inverse] == [("c1", "smooth.nrrd")]
    out = tmp_path / "out"
    assert _batch(model, folder / "manifest.json", "--out", out) == 0
    assert {(r["job"], Path(r["input"]).name) for r in _ledger(out / "ledger-1-of-1.jsonl")} == {
        ("c1", "sharp.nrrd"), ("c2", "sharp.nrrd")}


def test_same_names_from_two_inputs_get_distinct_outputs(tmp_path):
    _cohort(tmp_path, ["a/ct.nrrd", "b/ct.nrrd", "b/CT.nrrd"], shape=(2, 4, 4))
    jobs = plan_batch([tmp_path / "b", tmp_path / "a"], tmp_path / "out", "nrrd", "kernel")
    assert [job.output.name for job in jobs] == ["CT.nrrd", "ct-2.nrrd", "ct-3.nrrd"]
    assert [job.input.parent.name for job in jobs] == ["b", "a", "b"]


def _mistakes(tmp_path):
    """(inputs, options, expected message) of each mistake."""
    tree = _cohort(tmp_path / "cohort", ["a.nrrd"], shape=(2, 4, 4))
    (tmp_path / "notes.txt").write_text("x")
    used = tmp_path / "used"
    used.mkdir()
    (used / "ledger-1-of-1.jsonl").write_text("")
    out = ["--out", str(tmp_path / "out")]
    return [
        ([tree], out + ["--shard", "0/2"], "--shard must be K/N with 1 <= K <= N"),
        ([tree], out + ["--shard", "two"], "--shard must be K/N"),
        ([tree], out + ["--jobs", "0"], "--jobs must be a positive integer"),
        ([tree], ["--out", str(used)], "ledger-1-of-1.jsonl: an earlier run of this shard left its ledger here"),
        ([tmp_path / "missing.nrrd"], out, "missing.nrrd: no such file or folder"),
        ([tmp_path / "notes.txt"], out, "notes.txt: not a volume file"),
        ([tree / "a.nrrd"], ["--out", str(tree)], f"{tree / 'a.nrrd'}: lies in the output folder"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_command_line_mistakes_are_one_line_errors(tmp_path, model, capsys, case):
    inputs, options, message = _mistakes(tmp_path)[case]
    args = ["batch", *map(str, inputs), "--model", str(model), "--device", "cpu", "--quiet", *options]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert error.startswith("revgan: error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_spacing_warning_is_kept_in_the_ledger_and_shown(tmp_path, capsys):
    from model_helpers import metadata_for, two_way_generator
    from RevGANCore.modelfile import save_model

    model = save_model(tmp_path / "kernel.safetensors", two_way_generator(2, 1),
                       metadata_for("kernel", training_spacing_xyz=(0.8, 0.8, 1.25)))
    scan = write_volume(random_volume((6, 24, 24), seed=2, spacing=(0.15, 0.15, 1.25)), tmp_path / "thin.nrrd")
    out = tmp_path / "out"
    assert _batch(model, scan, "--out", out) == 0  # --quiet: warnings still show
    expected = ("the scan's voxel spacing 0.15 x 0.15 mm is more than 4 times away from the 0.8 x 0.8 mm this "
                "model was trained at; results outside this range are not supported")
    assert _ledger(out / "ledger-1-of-1.jsonl")[0]["warnings"] == [expected]
    assert capsys.readouterr().err.splitlines() == [f"revgan: warning: thin: {expected}"]
