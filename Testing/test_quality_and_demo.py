"""Classical baselines, the Table-2 benchmark, the demo and the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from RevGANCore.baselines import fit_gaussian_sigma, interpolate_super_resolution
from RevGANCore.bench.quality import TEST_SEED, load_table_index, run_quality_benchmark
from RevGANCore.cli import main
from RevGANCore.degradations import gaussian_inplane, kernel_oracle, low_resolution
from RevGANCore.errors import ModelFileError
from RevGANCore.inference import translate
from RevGANCore.metrics import compare_volumes
from RevGANCore.modelfile import ModelMetadata, load_model, save_model
from RevGANCore.networks import RevGANGenerator3d
from RevGANCore.phantom import generate_chest_phantom
from RevGANCore.phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case
from RevGANCore.registry import MODELS_DIR_ENV, list_models

REPO = Path(__file__).resolve().parent.parent
SMALL = (16, 32, 32)


def _untrained_model(path: Path, task: str) -> Path:
    """A new residual generator is the identity map: its output is its (resampled) input."""
    metadata = ModelMetadata(task=task, domains={"x": "lr", "y": "hr"} if task == "super_resolution"
                             else {"x": "sharp", "y": "smooth"},
                             scale_factors_xyz=(2, 2, 4) if task == "super_resolution" else None, name=path.stem)
    save_model(path, RevGANGenerator3d(ngf=2, depth=1, residual=True), metadata)
    return path


def test_gaussian_fit_recovers_a_known_blur():
    sharp = generate_chest_phantom(SMALL, (0.8, 0.8, 1.25), seed=1)
    smooth = gaussian_inplane(sharp, 0.6)
    sigma, error = fit_gaussian_sigma([(sharp, smooth)])
    assert sigma == pytest.approx(0.6) and error < 1.0


def test_interpolation_baseline_lands_on_the_high_resolution_grid():
    hr = generate_chest_phantom(SMALL, (0.8, 0.8, 1.25), seed=2)
    upsampled = interpolate_super_resolution(low_resolution(hr, (2, 2, 4)), (2, 2, 4))
    assert upsampled.same_geometry(hr)


def test_quality_benchmark_refuses_a_missing_index(tmp_path):
    with pytest.raises(ModelFileError, match="no Table-2 model index"):
        load_table_index(tmp_path)
    (tmp_path / "table2.json").write_text(json.dumps({"models": [
        {"task": "kernel", "variant": "paired_2r", "file": "gone.safetensors"}]}))
    with pytest.raises(ModelFileError, match="gone.safetensors, which is missing"):
        load_table_index(tmp_path)


def test_demo_writes_volumes_figures_and_metrics(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    _untrained_model(models / "sr.safetensors", "super_resolution")
    _untrained_model(models / "kernel.safetensors", "kernel")
    (models / "models.json").write_text(json.dumps({
        "format": "revgan-model-registry", "format_version": 1, "models": {
            "sr": {"file": "sr.safetensors", "task": "super_resolution", "description": "test"},
            "kernel": {"file": "kernel.safetensors", "task": "kernel", "description": "test"}}}))
    monkeypatch.setenv("REVGAN_MODELS_DIR", str(models))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    for name in ("super_resolved.nii.gz", "kernel_converted.nii.gz", "phantom_hr.nii.gz",
                 "super_resolution.png", "kernel_conversion.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "super_resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "B-spline interpolation" in printed and "Linear oracle" in printed
    # the strongest classical baselines, fitted on training pairs, beside the models
    assert "Fitted upsampler (5^3, 2 training pairs)" in printed
    assert "Fitted FIR filter (11 x 11, 2 training pairs)" in printed


# ------------------------------------------------------------------------- shipped models


def test_shipped_models_are_registered_and_loadable():
    entries = {entry.task: entry for entry in list_models()}
    assert set(entries) == {"super_resolution", "kernel"}
    sr = load_model(entries["super_resolution"].path)
    assert sr.metadata.scale_factors_xyz == (2, 2, 4) and sr.generator.config.depth == 2
    kernel = load_model(entries["kernel"].path)
    assert kernel.metadata.domains == {"x": "sharp", "y": "smooth"}
    for entry in entries.values():
        assert entry.card is not None and "synthetic" in entry.card.read_text()
        assert entry.path.stat().st_size < 5 * 2 ** 20  # a few MB at most


@pytest.mark.slow
def test_shipped_models_beat_the_classical_baselines_on_a_held_out_phantom():
    """A regression check of the shipped weights on one held-out test phantom (the README
    table averages five); the Gaussian's sigma is the one fitted on training cases."""
    sigma = json.loads((REPO / "Resources" / "Models" / "table2" / "quality.json").read_text())["gaussian_sigma_mm"]
    case = make_phantom_case(case_seeds(TEST_SEED, 1), PhantomRecipe())
    entries = {entry.task: entry for entry in list_models()}
    sr = translate(load_model(entries["super_resolution"].path), case["lr"], device="cpu")
    bspline = interpolate_super_resolution(case["lr"], (2, 2, 4))
    ours, baseline = compare_volumes(sr, case["hr"]), compare_volumes(bspline, case["hr"])
    assert ours["mae_hu"] < baseline["mae_hu"] and ours["psnr_unit_db"] > baseline["psnr_unit_db"]
    assert ours["ssim"] > baseline["ssim"]
    smooth = translate(load_model(entries["kernel"].path), case["sharp"], device="cpu")
    ours = compare_volumes(smooth, case["smooth"])
    gaussian = compare_volumes(gaussian_inplane(case["sharp"], sigma), case["smooth"])
    oracle = compare_volumes(kernel_oracle(case["sharp"]), case["smooth"])
    assert oracle["mae_hu"] < ours["mae_hu"] < gaussian["mae_hu"]
    assert ours["psnr_unit_db"] > gaussian["psnr_unit_db"] and ours["ssim"] > gaussian["ssim"]
    assert np.isfinite(sr.array).all() and np.isfinite(smooth.array).all()


@pytest.mark.parametrize("registry_file,message", [
    (True, "table2/table2.json: no Table-2 model index"),
    (False, "no models are shipped"),
])
def test_quality_benchmark_finds_its_models_through_the_registry(tmp_path, monkeypatch, registry_file, message):
    """Without --models the benchmark reads the registry's table2 folder, wherever the
    registry is (here a folder without Table-2 models), not a path of its own."""
    folder = tmp_path / "models"
    folder.mkdir()
    if registry_file:
        (folder / "models.json").write_text(json.dumps({"format": "revgan-model-registry", "format_version": 1,
                                                        "models": {}}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    with pytest.raises(ModelFileError, match=message):
        run_quality_benchmark(data_dir=tmp_path / "data", test_cases=2, device="cpu", log=lambda _: None)
    assert not (tmp_path / "data").exists()


def test_demo_output_it_cannot_create_is_one_line_before_any_work(tmp_path, capsys):
    """`revgan demo --out` below a file or on a file: once a NotADirectoryError / FileExistsError
    traceback. The check comes before the models are even looked up."""
    scan = tmp_path / "small.nrrd"
    scan.write_bytes(b"a scan")
    for target, reason in ((scan, "cannot write there (it is a file, not a folder); choose a folder"),
                           (scan / "demo", f"cannot write there ({scan} is not a folder)")):
        assert main(["demo", "--out", str(target), "--device", "cpu"]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert lines == [f"revgan: error: {target}: {reason}"] and captured.out == ""
    assert scan.read_bytes() == b"a scan" and list(tmp_path.iterdir()) == [scan]


def test_quality_table_shows_no_spread_for_one_case():
    from RevGANCore.bench.quality import format_quality_table

    row = {"method": "Identity (sharp input)", "kind": "classical-paired", "variant": None, "n": 1,
           "mae_hu": 12.5, "mae_hu_std": float("nan"), "psnr": 40.0, "psnr_std": float("nan"),
           "ssim": 0.95, "ssim_std": float("nan"), "bias_hu": -1.0, "bias_hu_std": float("nan")}
    table = format_quality_table({"cases": 1, "test_seed": TEST_SEED, "tasks": {"kernel/linear": [row]}})
    assert "Identity (sharp input) | classical-paired | 12.50 | 40.00 | 0.9500 | -1.00" in table
    assert "nan" not in table
