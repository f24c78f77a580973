"""The memory and speed benchmarks, on tiny shapes: the properties they exist to show."""

from __future__ import annotations

import json

import pytest

from RevGANCore.bench.memory import run_memory_benchmark
from RevGANCore.cli import main


def test_reversible_activation_memory_does_not_grow_with_depth():
    result = run_memory_benchmark(depths=[0, 1, 3], patch=16, ngf=4)
    rows = {row["depth"]: row for row in result["rows"]}
    reversible = [rows[d]["activations_reversible_mib"] for d in (0, 1, 3)]
    assert reversible[0] == reversible[1] == reversible[2] > 0
    naive = [rows[d]["activations_naive_mib"] for d in (0, 1, 3)]
    checkpoint = [rows[d]["activations_checkpoint_mib"] for d in (0, 1, 3)]
    assert naive[0] == reversible[0]  # no core: the three are the same network
    assert naive[0] < naive[1] < naive[2]
    assert reversible[2] < checkpoint[2] < naive[2]
    assert rows[3]["params_mib"] > rows[0]["params_mib"]


def test_bench_cli_prints_the_documented_json(capsys):
    assert main(["bench", "memory", "--depths", "0", "2", "--patch", "16", "--ngf", "4", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)
    assert set(memory) >= {"device", "patch", "rows"}
    assert set(memory["rows"][0]) >= {"depth", "params_mib", "activations_reversible_mib",
                                      "activations_naive_mib", "activations_checkpoint_mib"}
    assert main(["bench", "speed", "--depths", "0", "1", "--patch", "16", "--batch", "1", "--ngf", "4",
                 "--repeats", "1", "--json"]) == 0
    speed = json.loads(capsys.readouterr().out)
    assert [row["depth"] for row in speed["rows"]] == [0, 1]
    for row in speed["rows"]:
        assert set(row) >= {"naive_s", "reversible_s", "checkpoint_s", "ratio_reversible_naive"}
        assert row["naive_s"] > 0 and row["ratio_reversible_naive"] > 0


def test_cli_reports_unavailable_device_in_one_line(capsys):
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last visible GPU, or any on a CPU machine
    assert main(["bench", "memory", "--device", missing, "--depths", "0", "--patch", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("revgan: error:") and "CUDA" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- bench inference

INFERENCE_ROW_KEYS = {"name", "task", "flop_per_voxel", "mvoxel_per_s", "gflop_per_s", "peak_gflop_per_s",
                      "fraction_of_peak", "timed_input_zyx", "timed_output_zyx", "timed_seconds",
                      "extrapolated_from"}


def test_bench_inference_json_has_the_documented_keys(tmp_path, monkeypatch, capsys):
    """--size-scale 0.125 (what --quick does with 0.25, at an eighth of the time)."""
    from RevGANCore.registry import MODELS_DIR_ENV

    from model_helpers import save_tiny_model

    folder = tmp_path / "models"
    save_tiny_model(folder / "sr.safetensors", "super_resolution", ngf=2, depth=1)
    save_tiny_model(folder / "kernel.safetensors", "kernel", ngf=2, depth=1)
    save_tiny_model(folder / "other.safetensors", "kernel", ngf=2, depth=1)
    entries = {name: {"file": f"{name}.safetensors", "task": task, "description": "tiny", "default": default}
               for name, task, default in [("sr", "super_resolution", True), ("kernel", "kernel", True),
                                           ("other", "kernel", False)]}
    (folder / "models.json").write_text(json.dumps({"format": "revgan-model-registry", "format_version": 1,
                                                    "models": entries}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    assert main(["bench", "inference", "--size-scale", "0.125", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in result["models"]}
    assert set(rows) == {"sr", "kernel"}  # default models only
    expected = {"sr": ("super_resolution", "sr_512x512x48_seconds", [6, 64, 64], [24, 128, 128]),
                "kernel": ("kernel", "kernel_512x512x300_seconds", [38, 64, 64], [38, 64, 64])}
    for name, (task, seconds_key, timed, output) in expected.items():
        row = rows[name]
        assert set(row) == INFERENCE_ROW_KEYS | {seconds_key}
        assert row["task"] == task and row["extrapolated_from"] == timed == row["timed_input_zyx"]
        assert row["timed_output_zyx"] == output
        # at least the head's 3^3 convolution (8 -> 8 channels) per output voxel
        assert 2 * 8 * 8 * 27 < row["flop_per_voxel"] < 1e6
        assert row["mvoxel_per_s"] > 0 and row["peak_gflop_per_s"] > 0
        assert row["gflop_per_s"] == pytest.approx(row["flop_per_voxel"] * row["mvoxel_per_s"] / 1e3, rel=0.01)
        assert row["fraction_of_peak"] == pytest.approx(row["gflop_per_s"] / row["peak_gflop_per_s"], rel=0.01)
        full_voxels = 48 * 1024 * 1024 * 4 if task == "super_resolution" else 300 * 512 * 512
        timed_voxels = output[0] * output[1] * output[2]
        assert row[seconds_key] == pytest.approx(full_voxels / timed_voxels * row["timed_seconds"], rel=0.01)
    quick = ["bench", "inference", "--size-scale", "0.125", "--json", "--device", "cpu"]
    assert main(quick + ["--task", "kernel"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)["models"]] == ["kernel"]
    other = str(folder / "other.safetensors")  # not a default: timed because it is named
    assert main(quick + ["--model", other]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)["models"]] == [other]


def test_bench_scale_shows_the_same_kernel_transfer_at_every_pixel_size(capsys):
    assert main(["bench", "scale", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pixels_mm"] == [0.3, 0.6, 0.9] and result["cycles_per_mm"] == [0.3, 0.5]
    for direction in ("forward", "inverse"):
        assert len(result["directions"][direction]["transfer"]) == 3
        assert all(spread < 1.10 for spread in result["directions"][direction]["spread"])
    assert main(["bench", "scale"]) == 0
    assert "spread" in capsys.readouterr().out


# ------------------------------------------------------------------------- bench quality (Table 2)

QUALITY_SHAPE = (16, 48, 48)
METRICS = ("mae_hu", "psnr", "ssim", "bias_hu")


@pytest.fixture(scope="module")
def identity_table(tmp_path_factory):
    """A Table-2 index of untrained residual generators (each the identity on its input):
    every variant in the linear world, and one pooled row (two files) in the nonlinear one."""
    from RevGANCore.bench.quality import VARIANT_LABELS
    from RevGANCore.modelfile import ModelMetadata, save_model
    from RevGANCore.networks import RevGANGenerator3d

    folder = tmp_path_factory.mktemp("table2")
    entries = []
    for task in ("super_resolution", "kernel"):
        metadata = ModelMetadata(task=task, domains={"x": "lr", "y": "hr"} if task == "super_resolution"
                                 else {"x": "sharp", "y": "smooth"},
                                 scale_factors_xyz=(2, 2, 4) if task == "super_resolution" else None)
        for variant in VARIANT_LABELS:
            save_model(folder / f"{task}_{variant}.safetensors", RevGANGenerator3d(ngf=2, depth=1, residual=True),
                       metadata)
            entries.append({"task": task, "variant": variant, "file": f"{task}_{variant}.safetensors"})
        for seed in (0, 1):
            entries.append({"task": task, "variant": "paired_2r", "world": "nonlinear",
                            "file": f"{task}_paired_2r.safetensors", "seed": seed})
    (folder / "table2.json").write_text(json.dumps({"format": "revgan-table2", "models": entries}))
    return folder


def test_bench_quality_json_has_every_task_world_and_row_kind(identity_table, tmp_path, capsys):
    assert main(["bench", "quality", "--models", str(identity_table), "--data", str(tmp_path), "--cases", "2",
                 "--shape", *map(str, QUALITY_SHAPE), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["tasks"]) == {"super_resolution/linear", "super_resolution/nonlinear", "kernel/linear",
                                    "kernel/nonlinear"}
    for key, rows in result["tasks"].items():
        for row in rows:
            assert set(row) >= {"method", "kind", "variant", *METRICS, *(f"{m}_std" for m in METRICS)}
            assert row["kind"] in ("classical-paired", "classical-unpaired", "oracle", "revgan-paired",
                                   "revgan-unpaired")
            assert (row["variant"] is None) == row["kind"].startswith(("classical", "oracle"))
        kinds = {row["kind"] for row in rows}
        assert {"classical-paired", "classical-unpaired", "revgan-paired"} <= kinds
        by_method = {row["method"]: row for row in rows}
        fitted = next(row for row in rows if row["method"].startswith("Fitted linear filter"))
        if key.startswith("kernel"):
            identity = by_method["Identity (sharp input)"]
            ratio = by_method["Spectral-ratio filter (unpaired training volumes)"]
            assert ratio["kind"] == "classical-unpaired" and ratio["mae_hu"] < identity["mae_hu"]
            assert fitted["mae_hu"] < 0.5 * identity["mae_hu"]
            assert any(row["kind"] == "oracle" for row in rows)
            # the kernel generators' linear priors, cut to their width: paired and unpaired
            fir = by_method["Fitted FIR filter (11 x 11, least squares on training pairs)"]
            ratio_fir = by_method["Spectral-ratio FIR filter (11 x 11, unpaired training volumes)"]
            assert fir["kind"] == "classical-paired" and fir["mae_hu"] < 0.5 * identity["mae_hu"]
            assert ratio_fir["kind"] == "classical-unpaired" and ratio_fir["mae_hu"] < identity["mae_hu"]
        else:
            identity = by_method["B-spline interpolation"]
            assert fitted["mae_hu"] < identity["mae_hu"] and abs(fitted["bias_hu"]) < abs(identity["bias_hu"])
            # the super-resolution generators' priors: fitted on pairs, and on degraded hr volumes (no pairs)
            paired_prior = by_method["Fitted polyphase upsampler (5x5x5 coarse taps, Huber fit on training pairs)"]
            unpaired_prior = next(row for row in rows if row["method"].startswith("Fitted polyphase upsampler")
                                  and "degraded" in row["method"])
            assert paired_prior["kind"] == "classical-paired" and unpaired_prior["kind"] == "classical-unpaired"
            assert max(paired_prior["mae_hu"], unpaired_prior["mae_hu"]) < identity["mae_hu"]
        # Untrained residual models are the identity on their (resampled) input.
        paired_2r = by_method["Paired+2R"]
        assert paired_2r["variant"] == "Paired+2R" and paired_2r["mae_hu"] == pytest.approx(identity["mae_hu"], abs=0.02)
        if key.endswith("nonlinear"):
            assert paired_2r["n"] == 4 and len(paired_2r["models"]) == 2  # two files pooled: 2 x 2 cases
            assert "Paired" not in by_method
        else:
            assert {"Paired", "Unpaired", "Unpaired+2R"} <= set(by_method)
    from RevGANCore.bench.quality import format_quality_table

    text = format_quality_table(result)
    assert "the fitted linear filter is the ceiling" in text and "kernel/nonlinear" in text
    # untrained models earn nothing; the rows this table lacks are not a pass
    claims = {(c["task"], c["claim"]): c["holds"] for c in result["claims"]}
    assert claims[("kernel/nonlinear", "Paired+2R beats every classical-paired row on MAE and PSNR")] is False
    assert claims[("kernel/nonlinear", "Paired+2R is at least as good as Paired on MAE and PSNR")] is None
    assert "FAILS" in text and "not evaluated" in text
    assert result["phantom_shape"] == list(QUALITY_SHAPE) and "a quick check, not the reported table" in text


def test_bench_quality_pools_several_model_folders(identity_table, tmp_path, capsys):
    """Rows trained apart (kernel rows in one folder, super-resolution rows in another) make one table."""
    import shutil

    index = json.loads((identity_table / "table2.json").read_text())
    for task in ("kernel", "super_resolution"):
        folder = tmp_path / task
        folder.mkdir()
        entries = [e for e in index["models"] if e["task"] == task and e.get("world", "linear") == "linear"]
        for entry in entries:
            shutil.copyfile(identity_table / entry["file"], folder / entry["file"])
        (folder / "table2.json").write_text(json.dumps({"format": "revgan-table2", "models": entries}))
    assert main(["bench", "quality", "--models", str(tmp_path / "kernel"), str(tmp_path / "super_resolution"),
                 "--data", str(tmp_path / "data"), "--cases", "2", "--shape", *map(str, QUALITY_SHAPE),
                 "--device", "cpu", "--worlds", "linear", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("kernel/linear", "super_resolution/linear"):
        assert {"Paired", "Paired+2R", "Unpaired", "Unpaired+2R"} <= {row["method"] for row in result["tasks"][key]}
