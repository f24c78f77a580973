"""Per-scan adaptation (RevGANCore.scan_adaptation, `revgan super-resolve --adapt`): a copy of
the model is fine-tuned on the scan's own in-plane-degraded slices; the model file is never
changed; cancel stops it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from RevGANCore.cli import main
from RevGANCore.config import ObjectiveConfig
from RevGANCore.errors import CancelledError, ConfigError
from RevGANCore.modelfile import TranslationModel, load_model, save_model
from RevGANCore.modelmetadata import ModelMetadata
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d
from RevGANCore.objectives import Objective
from RevGANCore.real_pairs import RealScanPairs
from RevGANCore.scan_adaptation import adapt_to_scan
from RevGANCore.volume import Volume
from RevGANCore.volume_io import read_volume, write_volume

SR = (4, 2, 2)


def _scan() -> Volume:
    rng = np.random.default_rng(4)
    z, y, x = np.indices((10, 32, 32), dtype=np.float32)
    body = (y - 16) ** 2 + (x - 16) ** 2 < 13 ** 2
    hu = np.where(body, 40.0 + 300.0 * np.sin(x / 2.0) * np.cos(y / 3.0 + z), -1000.0)
    hu = hu + body * rng.normal(0, 10, hu.shape)
    return Volume(hu.astype(np.float32), spacing=(0.6, 0.6, 5.0), source="scan")


def _model() -> TranslationModel:
    torch.manual_seed(0)
    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=4, depth=1, head_channels=4, upscale_zyx=SR,
                                                         residual=True)).eval()
    metadata = ModelMetadata(task="super_resolution", domains={"x": "lr", "y": "hr"}, scale_factors_xyz=SR[::-1],
                             generator=generator.config.to_dict(), name="tiny-sr")
    return TranslationModel(generator, metadata)


def _slab_error(model: TranslationModel, scan: Volume) -> float:
    pairs = RealScanPairs([scan], SR, (32, 32, 32), region="train", val_slices=0, samples_per_epoch=4,
                          clip_to_window=False, flip_axes=(), foreground_fraction=1.0)
    objective = Objective(ObjectiveConfig(lambda_slab=1.0), "super_resolution", SR)
    with torch.no_grad():
        return float(np.mean([float(objective.slab_terms(model.generator(pairs[i]["source"][None], "forward"),
                                                         pairs[i]["target"][None])["l1"]) for i in range(4)]))


def test_adaptation_fits_a_copy_to_the_scan_and_leaves_the_model_alone():
    model, scan = _model(), _scan()
    before = {name: tensor.clone() for name, tensor in model.generator.state_dict().items()}
    ticks = []
    adapted = adapt_to_scan(model, scan, seconds=3.0, progress=lambda done, total, text="": ticks.append(done))
    assert ticks and ticks[-1] <= 3
    assert all(torch.equal(before[name], tensor) for name, tensor in model.generator.state_dict().items())
    assert not all(torch.equal(before[name], tensor) for name, tensor in adapted.generator.state_dict().items())
    assert _slab_error(adapted, scan) < _slab_error(model, scan)
    assert "adapted" in adapted.metadata.caveats and not adapted.generator.training


def test_adaptation_can_be_cancelled_and_refuses_a_bad_time():
    model, scan = _model(), _scan()
    with pytest.raises(CancelledError):
        adapt_to_scan(model, scan, seconds=60.0, cancel=lambda: True)
    with pytest.raises(ConfigError, match="more than 0 and at most 3600"):
        adapt_to_scan(model, scan, seconds=0)
    with pytest.raises(ConfigError, match="at most 3600 .one hour.; got 1e\\+09"):  # not cancelled: refused first
        adapt_to_scan(model, scan, seconds=1e9, cancel=lambda: True)


def test_super_resolve_adapt_writes_the_result_and_never_the_model_file(tmp_path, capsys):
    model = _model()
    model_path = save_model(tmp_path / "tiny.safetensors", model.generator, model.metadata)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    scan_path = write_volume(_scan(), tmp_path / "scan.nrrd")
    plain, adapted = tmp_path / "plain.nrrd", tmp_path / "adapted.nrrd"
    assert main(["super-resolve", str(scan_path), str(plain), "--model", str(model_path), "--quiet"]) == 0
    assert main(["super-resolve", str(scan_path), str(adapted), "--model", str(model_path), "--adapt", "2",
                 "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(e["event"] == "message" and "adapted in" in e["text"] for e in events)
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == digest
    assert load_model(model_path).generator.state_dict().keys()
    a, b = read_volume(plain), read_volume(adapted)
    assert a.same_geometry(b) and a.shape == (40, 64, 64)
    assert np.abs(a.array - b.array).max() > 0  # the adapted copy translated


@pytest.mark.parametrize("seconds", ["1e9", "3601", "nan", "0"])
def test_an_adaptation_time_outside_one_hour_is_refused_before_any_work(tmp_path, seconds):
    """`--adapt 1e9` once ran silently for 31 years; a separate process, so a regression times out."""
    from hostile_helpers import assert_refused, run_revgan

    model = _model()
    model_path = save_model(tmp_path / "tiny.safetensors", model.generator, model.metadata)
    scan_path = write_volume(_scan(), tmp_path / "scan.nrrd")
    run = run_revgan(["super-resolve", scan_path, tmp_path / "out.nrrd", "--model", model_path, "--adapt", seconds,
                      "--quiet"], timeout=120)
    assert_refused(run, "--adapt is in seconds, more than 0 and at most 3600 (one hour)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scan.nrrd", "tiny.safetensors"]


def test_the_help_states_the_adaptation_limit(capsys):
    from RevGANCore.scan_adaptation import MAX_ADAPT_SECONDS

    with pytest.raises(SystemExit):
        main(["super-resolve", "--help"])
    assert f"at most {MAX_ADAPT_SECONDS:g}" in " ".join(capsys.readouterr().out.split())
