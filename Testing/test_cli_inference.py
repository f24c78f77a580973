"""The inference commands in-process: translate, super-resolve, evaluate, models and
bench tiling; every bad input gives one clear line, exit 1, and touches no file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RevGANCore.cli import main
from RevGANCore.registry import MODELS_DIR_ENV
from RevGANCore.tensorfile import load_safetensors, save_safetensors
from RevGANCore.volume_io import read_volume, write_volume

from model_helpers import random_generator, random_volume, save_tiny_model


#: No shipped models unless a test makes a registry.
pytestmark = pytest.mark.usefixtures("no_registry")


@pytest.fixture
def files(tmp_path):
    volume = random_volume((9, 20, 18), seed=1)
    return {
        "input": write_volume(volume, tmp_path / "ct.nrrd"),
        "kernel": save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2, depth=1),
        "sr": save_tiny_model(tmp_path / "sr.safetensors", "super_resolution", ngf=2, depth=1),
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_translate_and_super_resolve_write_volumes(files, tmp_path, capsys):
    out = tmp_path / "smooth.nii.gz"
    assert main(["translate", str(files["input"]), str(out), "--model", str(files["kernel"]), "--device", "cpu",
                 "--direction", "inverse", "--dtype", "float32", "--tile", "40"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "sharp_b50f" in captured.err  # the plan is reported
    assert main(["translate", str(files["input"]), str(out), "--model", str(files["kernel"]), "--device", "cpu",
                 "--direction", "inverse", "--dtype", "float32", "--tile-memory", "64"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "sharp_b50f" in captured.err  # the plan is reported
    assert read_volume(out).same_geometry(read_volume(files["input"]))
    sr_out = tmp_path / "sr.nrrd"
    assert main(["super-resolve", str(files["input"]), str(sr_out), "--model", str(files["sr"]), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    result = read_volume(sr_out)
    source = read_volume(files["input"])
    assert result.shape == (36, 40, 36)
    assert result.spacing == pytest.approx(tuple(s / f for s, f in zip(source.spacing, (2, 2, 4))))
    assert result.physical_extent == pytest.approx(source.physical_extent)


def test_super_resolve_uses_the_default_shipped_model(files, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    save_tiny_model(folder / "sr-default.safetensors", "super_resolution", ngf=2, depth=1, seed=9)
    (folder / "models.json").write_text(json.dumps({
        "format": "revgan-model-registry", "format_version": 1,
        "models": {"sr-default": {"file": "sr-default.safetensors", "card": "sr-default.md",
                                  "task": "super_resolution", "description": "tiny", "default": True}}}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    out = tmp_path / "hr.mha"
    assert main(["super-resolve", str(files["input"]), str(out), "--quiet"]) == 0
    assert read_volume(out).shape == (36, 40, 36)
    assert main(["models"]) == 0
    assert "sr-default" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["models"][0]["name"] == "sr-default" and listing["models"][0]["available"]
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "no-models"))
    assert main(["models"]) == 0
    assert "no models are shipped" in capsys.readouterr().out


def test_super_resolve_writes_a_dicom_series_in_a_new_study(files, tmp_path, capsys):
    import pydicom

    out = tmp_path / "sr-dicom"
    assert main(["super-resolve", str(files["input"]), str(out), "--model", str(files["sr"]), "--device", "cpu",
                 "--format", "dicom"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    result, source = read_volume(out), read_volume(files["input"])
    assert result.shape == (36, 40, 36)
    assert result.physical_extent == pytest.approx(source.physical_extent)
    slices = sorted(out.iterdir())
    assert len(slices) == 36 and all(path.suffix == ".dcm" for path in slices)
    header = pydicom.dcmread(str(slices[0]))
    assert "super-resolution" in header.SeriesDescription and list(header.ConvolutionKernel) == ["RevGAN", "high_resolution"]


def _bad_inputs(files, tmp_path):
    """(name, argv, expected message) for every bad input of the issue."""
    data = tmp_path / "bad"
    data.mkdir()
    corrupt = data / "corrupt.safetensors"
    corrupt.write_bytes(os.urandom(64))
    pickled = data / "model.pt"
    torch.save(random_generator(ngf=2).state_dict(), pickled)
    tensors, strings = load_safetensors(files["kernel"])
    values = json.loads(strings["revgan"])
    values["format_version"] = 7
    future = save_safetensors(data / "future.safetensors", tensors, {"revgan": json.dumps(values)})
    flat = data / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 20), -1000, np.int16)), str(flat))
    series = data / "series.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5, 6), -1000, np.float32), isVector=False), str(series))
    nan = data / "nan.nrrd"
    array = np.full((6, 8, 8), -1000, np.float32)
    array[2, 3, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(nan))
    big = write_volume(random_volume((9, 20, 60), seed=2), data / "wide.nrrd")
    if os.geteuid() == 0:  # root writes anywhere a permission bit forbids; sysfs refuses it too
        locked_out = Path("/sys/revgan-cli-test.nrrd")
    else:
        locked = data / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        locked_out = locked / "out.nrrd"
    ct, out = str(files["input"]), str(tmp_path / "out.nrrd")
    translate = ["translate", "--device", "cpu", "--model", str(files["kernel"])]
    return [
        ("missing model", ["translate", ct, out, "--model", str(data / "nope.safetensors")], "no such model file"),
        ("corrupt model", ["translate", ct, out, "--model", str(corrupt)], "not a safetensors file"),
        ("pickled model", ["translate", ct, out, "--model", str(pickled)], "pickled PyTorch checkpoint"),
        ("future version", ["translate", ct, out, "--model", str(future)], "newer RevGAN"),
        ("other task", ["super-resolve", ct, out, "--model", str(files["kernel"])],
         "needs a 'super_resolution' model"),
        ("no shipped model", ["super-resolve", ct, out], "no super_resolution model is shipped"),
        ("2D input", translate + [str(flat), out], "2D"),
        ("4D input", translate + [str(series), out], "4D"),
        ("NaN voxels", translate + [str(nan), out], "non-finite"),
        ("missing input", translate + [str(data / "absent.nrrd"), out], "no such file"),
        ("tile below halo", translate + [str(big), out, "--tile", "24"], "too small for this model"),
        ("window budget in bytes", translate + [ct, out, "--tile-memory", "4e9"], "--tile-memory is in MiB"),
        ("output is input", translate + [ct, ct], "refusing to overwrite"),
        ("output is model", translate + [ct, str(files["kernel"])], "unknown output file type"),
        ("unknown suffix", translate + [ct, str(tmp_path / "out.png")], "unknown output file type"),
        ("no permission", translate + [ct, str(locked_out)], "cannot write"),
        ("series of a file", translate + [ct, out, "--series", "2"], "can be chosen in DICOM folders only"),
        ("DICOM folder holds the input", translate + [ct, str(tmp_path), "--format", "dicom"],
         "which is an input of this command"),
        ("DICOM folder not empty", translate + [ct, str(data), "--format", "dicom"], "the folder is not empty"),
    ]


def test_every_bad_input_is_one_clear_line_and_touches_nothing(files, tmp_path, capsys):
    cases = _bad_inputs(files, tmp_path)
    protected = {path: _digest(path) for path in tmp_path.rglob("*") if path.is_file()}
    for name, argv, message in cases:
        assert main(argv) == 1, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("revgan: error:"), (name, captured.err)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in captured.err and captured.out == "", name
    assert not (tmp_path / "out.nrrd").exists()
    after = {path: _digest(path) for path in tmp_path.rglob("*") if path.is_file()}
    assert after == protected  # nothing overwritten, nothing new (no partial or scratch file)


def test_evaluate_reports_mean_and_std_over_cases(tmp_path, capsys):
    from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset

    manifest = write_phantom_dataset(tmp_path / "data", cases=2, seed=0, recipe=PhantomRecipe(shape=(16, 32, 32)))
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2, depth=1)
    assert main(["evaluate", "--model", str(kernel), "--data", str(tmp_path / "data"), "--json",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "kernel" and [c["id"] for c in result["cases"]] == ["case000", "case001"]
    assert (result["source_domain"], result["target_domain"]) == ("sharp", "smooth")
    for name in ("mae_hu", "psnr_unit_db", "psnr_hu_db", "ssim"):
        values = [case["metrics"][name] for case in result["cases"]]
        assert result["summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"][name]["std"] == pytest.approx(np.std(values, ddof=1))
        assert result["baseline_summary"][name]["n"] == 2
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution", ngf=2, depth=1)
    assert main(["evaluate", "--model", str(sr), "--data", str(manifest), "--cases", "case001",
                 "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "super_resolution forward (lr -> hr) on 1 case(s)" in table and "ssim" in table
    wrong = save_tiny_model(tmp_path / "sr3.safetensors", "super_resolution", ngf=2, depth=1, factors=(2, 2, 2))
    assert main(["evaluate", "--model", str(wrong), "--data", str(manifest)]) == 1
    assert "scaled by [2, 2, 4]" in capsys.readouterr().err


def test_bench_tiling_json_has_exactly_the_documented_keys(capsys):
    # MONAI's row is left out here (importing MONAI alone takes ~5 s per worker); run
    # `revgan bench tiling` for it.
    assert main(["bench", "tiling", "--shape", "16", "40", "52", "--tiles", "32", "--ngf", "2", "--depth", "1",
                 "--no-monai", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"rows", "whole_seconds", "monai"} and result["monai"] is None
    assert [row["tile"] for row in result["rows"]][0] == 32
    for row in result["rows"]:
        assert set(row) == {"tile", "max_abs_diff", "seconds", "peak_rss_mib"}
        assert row["max_abs_diff"] <= 1e-5 and row["seconds"] > 0
    assert isinstance(result["rows"][-1]["tile"], list)  # the default plan's window


def test_progress_jsonl_is_one_json_object_per_line_from_zero_to_done(files, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    assert main(["translate", str(files["input"]), str(out), "--model", str(files["kernel"]), "--device", "cpu",
                 "--tile", "40", "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] > 0
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert any(e["event"] == "message" and "tile(s)" in e["text"] for e in events)
    assert events[-1] == {"event": "done", "output": str(out)} and out.is_file()


@pytest.mark.parametrize("argv, command, unknown", [
    (["super-resolve", "IN", "-o", "OUT"], "revgan super-resolve", "-o"),  # OUT is positional
    (["bench", "quality", "--bogus", "1"], "revgan bench quality", "--bogus 1"),
    (["models", "show", "x", "--all"], "revgan models show", "--all"),
])
def test_an_unknown_option_is_named_with_its_command_usage(tmp_path, capsys, monkeypatch, argv, command, unknown):
    """The first thing typed wrong gets the usage of the command it was meant for, not the
    list of commands; exit 2 (argparse's), nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert f"usage: {command} " in error
    assert f"{command}: error: unrecognized arguments: {unknown}" in error
    assert not (tmp_path / "OUT").exists()


def test_a_listed_model_writes_the_name_it_is_listed_under(files, tmp_path, monkeypatch, capsys):
    """The name the user chose (the registry's) is the one logs and DICOM headers carry, not
    the name the file was trained under; the same file outside the registry keeps its own,
    and an unreadable registry does not stop a model file given by path."""
    import pydicom
    import shutil

    from RevGANCore.modelfile import load_model

    folder = tmp_path / "models"
    save_tiny_model(folder / "trained-as-run-7.safetensors", "super_resolution", ngf=2, depth=1, seed=9)
    (folder / "models.json").write_text(json.dumps({
        "format": "revgan-model-registry", "format_version": 1,
        "models": {"site-sr": {"file": "trained-as-run-7.safetensors", "task": "super_resolution",
                               "description": "tiny", "default": True}}}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    trained_as = load_model(folder / "trained-as-run-7.safetensors").metadata.name
    assert trained_as and trained_as != "site-sr"
    out = tmp_path / "sr-dicom"
    assert main(["super-resolve", str(files["input"]), str(out), "--model", "site-sr", "--format", "dicom"]) == 0
    assert "revgan: site-sr: " in capsys.readouterr().err
    header = pydicom.dcmread(str(sorted(out.iterdir())[0]))
    assert header.ManufacturerModelName == "site-sr" and "(site-sr)" in header.SeriesDescription
    assert "'site-sr'" in header.DerivationDescription

    elsewhere = shutil.copy(folder / "trained-as-run-7.safetensors", tmp_path / "copy.safetensors")
    assert load_model(elsewhere).name == trained_as
    assert load_model(folder / "trained-as-run-7.safetensors").name == "site-sr"  # by path, still listed
    (folder / "models.json").write_text("{ not json")
    assert load_model(elsewhere).name == trained_as


def _kernel_model_trained_at(path: Path, spacing=(0.8, 0.8, 1.25)) -> Path:
    """A tiny kernel model whose file records the pixel size it was trained at."""
    from model_helpers import metadata_for, two_way_generator
    from RevGANCore.modelfile import save_model

    return save_model(path, two_way_generator(2, 1), metadata_for("kernel", training_spacing_xyz=spacing))


def test_a_spacing_warning_is_a_warning_even_when_quiet_or_as_json_lines(tmp_path, capsys):
    model = _kernel_model_trained_at(tmp_path / "kernel.safetensors")
    scan = write_volume(random_volume((6, 24, 24), seed=2, spacing=(0.15, 0.15, 1.25)), tmp_path / "thin.nrrd")
    assert main(["translate", str(scan), str(tmp_path / "o.nrrd"), "--model", str(model), "--device", "cpu",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    # --quiet: no messages, but the warning, labelled once
    assert captured.err.splitlines() == [
        "revgan: warning: the scan's voxel spacing 0.15 x 0.15 mm is more than 4 times away from the 0.8 x 0.8 mm "
        "this model was trained at; results outside this range are not supported"]
    assert main(["translate", str(scan), str(tmp_path / "o2.nrrd"), "--model", str(model), "--device", "cpu",
                 "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    warnings = [e for e in events if e["event"] == "message" and "voxel spacing" in e["text"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["text"].startswith("the scan's voxel spacing 0.15 x 0.15 mm")


@pytest.mark.parametrize("spacing, message", [
    ((500.0, 500.0, 5000.0), "in-plane spacing 500 x 500 mm, 24 x 24 pixels (12000 x 12000 mm across): this "
                             "model works at 0.8 x 0.8 mm pixels, which would make 15000 x 15000 pixels per slice"),
    ((0.001, 0.001, 0.001), "in-plane spacing 0.001 x 0.001 mm, 24 x 24 pixels (0.024 x 0.024 mm across): this "
                            "model works at 0.8 x 0.8 mm pixels, and the slices are narrower than one of them"),
])
def test_a_spacing_no_ct_has_is_one_line_before_any_work(tmp_path, capsys, spacing, message):
    model = _kernel_model_trained_at(tmp_path / "kernel.safetensors")
    scan = write_volume(random_volume((6, 24, 24), seed=2, spacing=spacing), tmp_path / "odd.nrrd")
    out = tmp_path / "out.nrrd"
    assert main(["translate", str(scan), str(out), "--model", str(model), "--device", "cpu", "--quiet"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"revgan: error: {scan}: ") and message in lines[0], lines
    assert "check the spacing in the file's header" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kernel.safetensors", "no-models", "odd.nrrd"]


def _without_air(tmp_path: Path, name: str = "softtissue.nrrd") -> Path:
    """A real CT cropped to soft tissue and bone has no air (one such crop: -424 to 1606 HU)."""
    from RevGANCore.volume import Volume

    array = np.random.default_rng(3).uniform(-424.0, 1606.0, (9, 20, 18)).astype(np.float32)
    return write_volume(Volume(array, spacing=(0.7, 0.8, 1.5)), tmp_path / name)


def test_a_scan_without_air_is_refused_naming_the_option_that_accepts_it(files, tmp_path, capsys):
    scan = _without_air(tmp_path)
    for command, model in (("translate", files["kernel"]), ("super-resolve", files["sr"])):
        out = tmp_path / f"{command}.nrrd"
        argv = [command, str(scan), str(out), "--model", str(model), "--device", "cpu", "--quiet"]
        assert main(argv) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"revgan: error: {scan}: values range from"), lines
        assert "does not look like CT" in lines[0] and "pass --no-air-check" in lines[0]
        assert "read_volume" not in lines[0]  # a command-line user is not sent to a Python function
        assert not out.exists()
        assert main(argv + ["--no-air-check"]) == 0
        assert out.is_file()
    # batch: the failed scan's ledger line names the option; with it the scan is translated
    assert main(["batch", str(scan), "--model", str(files["kernel"]), "--out", str(tmp_path / "b"), "--device",
                 "cpu", "--quiet"]) == 1
    assert "pass --no-air-check" in capsys.readouterr().err
    record = json.loads((tmp_path / "b" / "ledger-1-of-1.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "failed" and "pass --no-air-check" in record["error"]
    assert main(["batch", str(scan), "--model", str(files["kernel"]), "--out", str(tmp_path / "b2"), "--device",
                 "cpu", "--quiet", "--no-air-check"]) == 0
    assert (tmp_path / "b2" / "softtissue.nii.gz").is_file()


def test_python_callers_get_the_python_hint_and_air_check_around_deeper_reads(files, tmp_path):
    from RevGANCore.errors import VolumeError
    from RevGANCore.inference import translate_file
    from RevGANCore.volume import Volume
    from RevGANCore.volume_io import air_check

    scan = _without_air(tmp_path)
    with pytest.raises(VolumeError, match=r"read_volume\(\.\.\., expect_ct=False\)") as refused:
        translate_file(files["kernel"], scan, tmp_path / "out.nrrd", device="cpu")
    assert "--no-air-check" not in str(refused.value)
    with air_check(False):
        translate_file(files["kernel"], scan, tmp_path / "out.nrrd", device="cpu")
        broken = write_volume(Volume(np.full((4, 8, 8), 1e6, np.float32)), tmp_path / "broken.nrrd",
                              dtype="float32")
        with pytest.raises(VolumeError, match="far outside any CT scale"):  # still refused
            read_volume(broken)
    with pytest.raises(VolumeError, match="does not look like CT"):  # the check is back after the block
        read_volume(scan)


def test_evaluate_on_one_case_shows_no_spread_and_null_std(tmp_path, capsys):
    """One case: the spread is undefined; it once printed `4.44 +- 0.00`."""
    from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset

    write_phantom_dataset(tmp_path / "data", cases=1, seed=0, recipe=PhantomRecipe(shape=(16, 32, 32)))
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2, depth=1)
    argv = ["evaluate", "--model", str(kernel), "--data", str(tmp_path / "data"), "--device", "cpu"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "on 1 case(s)" in table and "one case: no spread" in table and "+-" not in table
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    case = result["cases"][0]
    for name in ("mae_hu", "psnr_unit_db", "psnr_hu_db", "ssim"):
        for per_case, summaries in (("metrics", "summary"), ("baseline", "baseline_summary")):
            summary = result[summaries][name]
            assert summary["std"] is None and summary["n"] == 1
            assert summary["mean"] == pytest.approx(case[per_case][name])


def test_evaluate_reads_a_dataset_without_air_with_no_air_check(tmp_path, capsys):
    from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset
    from RevGANCore.volume import Volume

    manifest = write_phantom_dataset(tmp_path / "data", cases=1, seed=0, recipe=PhantomRecipe(shape=(16, 32, 32)))
    for domain in ("sharp", "smooth"):  # cropped to the body: every voxel above -500 HU
        path = tmp_path / "data" / "case000" / f"{domain}.nii.gz"
        volume = read_volume(path)
        path.unlink()
        write_volume(Volume(np.maximum(volume.array, -400.0), volume.spacing, volume.origin, volume.direction), path)
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2, depth=1)
    argv = ["evaluate", "--model", str(kernel), "--data", str(manifest), "--device", "cpu", "--quiet"]
    assert main(argv) == 1
    assert "pass --no-air-check" in capsys.readouterr().err
    assert main(argv + ["--no-air-check"]) == 0


def test_a_too_small_tile_on_a_resampled_kernel_grid_names_the_scans_axis_too(tmp_path, capsys):
    """The model works on the scan resampled to its pixel size: a tile error names both the
    scan's axis and the working grid's, not only the grid the user never sees."""
    model = _kernel_model_trained_at(tmp_path / "kernel.safetensors")  # 0.8 mm pixels
    scan = write_volume(random_volume((8, 64, 64), seed=2, spacing=(0.57, 0.57, 5.0)), tmp_path / "s.nrrd")
    assert main(["translate", str(scan), str(tmp_path / "o.nrrd"), "--model", str(model), "--device", "cpu",
                 "--tile", "8"]) == 1
    line = capsys.readouterr().err.strip()
    assert "too small for this model" in line and "the scan's 64 voxels are 46 on the grid" in line
