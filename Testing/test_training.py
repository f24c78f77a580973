"""Training end to end on tiny phantoms: paired and unpaired, checkpoints, exact resume,
SIGKILL/SIGINT survival, 2-process DDP, configuration guards."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from RevGANCore.checkpoints import CheckpointStore
from RevGANCore.cli import main
from RevGANCore.config import TrainConfig, config_from_dict, load_config
from RevGANCore.config_bounds import BOUNDS, Bound, numeric_settings
from RevGANCore.errors import ConfigError
from RevGANCore.inference import translate
from RevGANCore.manifest import load_manifest
from RevGANCore.modelfile import load_model
from RevGANCore.training import Trainer, TrainingDivergedError, learning_rate_factor
from RevGANCore.training_data import ensure_training_manifest
from RevGANCore.volume_io import read_volume
from training_helpers import tiny_settings, write_config, write_tiny_phantoms

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_tiny_phantoms(tmp_path_factory.mktemp("phantoms"))


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_end_to_end_training_writes_loadable_models(phantoms, tmp_path, mode):
    config = config_from_dict(tiny_settings(phantoms, tmp_path / "run", objective__mode=mode,
                                        objective__pool_size=3))
    summary = Trainer(config, log=lambda message: None).fit()
    assert summary["status"] == "finished" and summary["step"] == 4
    rows = list(np.genfromtxt(tmp_path / "run" / "metrics.csv", delimiter=",", names=True))
    losses = [row["g_total"] for row in rows if not np.isnan(row["g_total"])]
    assert losses and all(np.isfinite(losses))
    # validation cases choose best.safetensors: by pairs when paired, by the pair-free criterion when not
    assert summary["best_metric"] == {"paired": "val_l1", "unpaired": "val_unpaired"}[mode]
    assert all(np.isfinite(row["val_unpaired"]) for row in rows if not np.isnan(row["val_l1"]))
    if mode == "unpaired":
        assert all(np.isfinite(row["g_physics"]) and np.isfinite(row["g_spectrum"])
                   for row in rows if not np.isnan(row["g_total"]))
    assert (tmp_path / "run" / "previews" / "step_00000002.png").exists()
    model = load_model(summary["latest_model"])
    assert model.task == "kernel" and model.metadata.domains == {"x": "sharp", "y": "smooth"}
    assert model.metadata.training["iterations_done"] == 4
    sharp = read_volume(load_manifest(phantoms).case("case002").files["sharp"])
    # the scale the model was trained at, so inference can bring other scans to it
    assert model.metadata.training_spacing_xyz == pytest.approx(sharp.spacing)
    assert model.metadata.training_slice_thickness_mm == pytest.approx(sharp.spacing[2])
    for direction in ("forward", "inverse"):
        out = translate(model, sharp, direction, tile_size=30, device="cpu")
        assert out.same_geometry(sharp) and np.isfinite(out.array).all()
    assert load_model(tmp_path / "run" / "best.safetensors").task == "kernel"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["objective"]["mode"] == mode


def _final_checkpoint(run: Path) -> dict:
    """Every tensor of a run's newest checkpoint: generator weights, discriminators, both
    optimizers' moments, image pools and RNG states."""
    files = CheckpointStore(run).latest()
    tensors, _ = CheckpointStore.read_state(files)
    generator = load_model(files.model).generator.state_dict()
    return {**tensors, **{f"generator.{name}": tensor for name, tensor in generator.items()}}


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_resume_continues_bit_exactly(phantoms, tmp_path, mode):
    """2 steps, stop, resume for 2 more: every weight, optimizer moment, pool image and RNG
    state equals a straight 4-step run's. Unpaired runs fill a 3-patch image pool in step 2,
    so a resume that lost the pool (or its generator) feeds the discriminators other patches."""
    changes = dict(objective__mode=mode, objective__pool_size=3, logging__preview_every=0)
    Trainer(config_from_dict(tiny_settings(phantoms, tmp_path / "straight", **changes)), log=lambda m: None).fit()
    Trainer(config_from_dict(tiny_settings(phantoms, tmp_path / "resumed", optim__iterations=2, **changes)),
            log=lambda m: None).fit()
    summary = Trainer(config_from_dict(tiny_settings(phantoms, tmp_path / "resumed", **changes)),
                      log=lambda m: None).fit(resume=True)
    assert summary["step"] == 4 and summary["start_step"] == 2  # its seconds are those of steps 3-4
    straight, resumed = _final_checkpoint(tmp_path / "straight"), _final_checkpoint(tmp_path / "resumed")
    assert sorted(resumed) == sorted(straight)
    assert ("pool_x.images" in straight) == (mode == "unpaired")  # the pool is in play
    different = [name for name in straight if not torch.equal(straight[name], resumed[name])]
    assert different == []


def test_fresh_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(phantoms, tmp_path):
    config = config_from_dict(tiny_settings(phantoms, tmp_path / "run", optim__iterations=2))
    Trainer(config, log=lambda m: None).fit()
    with pytest.raises(ConfigError, match="already holds a training run"):
        Trainer(config, log=lambda m: None).fit()
    empty = config_from_dict(tiny_settings(phantoms, tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        Trainer(empty, log=lambda m: None).fit(resume=True)


def test_non_finite_loss_stops_with_clear_error(phantoms, tmp_path):
    config = config_from_dict(tiny_settings(phantoms, tmp_path / "run", objective__lambda_l1=1e300))
    with pytest.raises(TrainingDivergedError, match="became inf"):
        Trainer(config, log=lambda m: None).fit()
    assert CheckpointStore(tmp_path / "run").latest() is None


def _launch(args, cwd: Path, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "RevGANCore", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for_step(store: CheckpointStore, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = store.latest()
        if latest is not None and latest.step >= step:
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited early:\n{process.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigkill_during_training_leaves_a_resumable_checkpoint(phantoms, tmp_path):
    run = tmp_path / "run"
    config = write_config(tmp_path / "config.json", tiny_settings(
        phantoms, run, optim__iterations=10_000, checkpoint__every=1, checkpoint__validate_every=10_000,
        logging__preview_every=0))
    process = _launch(["train", str(config)], tmp_path)
    store = CheckpointStore(run)
    _wait_for_step(store, 3, process)
    process.kill()  # SIGKILL: possibly in the middle of writing a checkpoint
    process.wait(timeout=30)
    latest = store.latest()
    assert latest is not None and latest.step >= 3
    load_model(latest.model)  # the newest complete checkpoint loads
    CheckpointStore.read_state(latest)
    target = latest.step + 2
    code = main(["train", str(config), "--resume", "--set", f"optim.iterations={target}",
                 "--set", "logging.progress=false"])
    assert code == 0
    assert json.loads((run / "summary.json").read_text())["step"] == target
    assert store.latest().step == target
    with open(run / "metrics.csv", newline="", encoding="utf-8") as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream)]
    assert steps == sorted(set(steps)) and steps[-1] == target  # one table: no step logged twice


@pytest.mark.slow
def test_sigint_saves_and_exits_cleanly(phantoms, tmp_path):
    run = tmp_path / "run"
    config = write_config(tmp_path / "config.json", tiny_settings(
        phantoms, run, optim__iterations=10_000, checkpoint__every=1000, checkpoint__validate_every=10_000,
        logging__preview_every=0))
    process = _launch(["train", str(config)], tmp_path)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:  # step 0 validated: loop running
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "checkpoint saved" in output and "Traceback" not in output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert CheckpointStore(run).latest().step == summary["step"] >= 1


def _weights(run: Path) -> dict:
    """Generator and discriminator weights of a run's newest checkpoint."""
    return {name: tensor for name, tensor in _final_checkpoint(run).items()
            if name.startswith(("generator.", "d_x.", "d_y."))}


@pytest.mark.slow
def test_two_process_ddp_trains_the_weights_of_one_process_on_the_global_batch(phantoms, tmp_path):
    """torchrun, 2 CPU processes (gloo) with 1 patch each, against one process with both
    patches per step: rank r of step s takes patch 2s + r, the single process patches 2s and
    2s + 1, and DDP averages the gradients, so the weights agree up to all-reduce rounding."""
    # Without instance norm in the discriminators: a conv bias before it has a zero gradient up to
    # rounding, which Adam scales to a full step of either sign, so no two runs would agree there.
    changes = dict(optim__iterations=3, checkpoint__every=3, logging__preview_every=0,
                   model__discriminator={"ndf": 2, "n_layers": 2, "norm": "none"})
    config = write_config(tmp_path / "config.json",
                          tiny_settings(phantoms, tmp_path / "ddp", data__batch_size=1, **changes))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", "-m", "RevGANCore", "train", str(config)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("finished 3 iterations") == 1  # only rank 0 reports
    Trainer(config_from_dict(tiny_settings(phantoms, tmp_path / "single", data__batch_size=2, **changes)),
            log=lambda m: None).fit()
    distributed, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert sorted(distributed) == sorted(single) and len(single) > 10
    for name, tensor in single.items():
        assert torch.allclose(distributed[name], tensor, rtol=1e-4, atol=1e-6), (
            name, float((distributed[name] - tensor).abs().max()))


def test_config_files_overrides_and_guards(phantoms, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text(f'output_dir = "{tmp_path / "out"}"\n[data]\nmanifest = "{phantoms}"\n'
                    'patch_size = [16, 16, 16]\n[optim]\niterations = 7\n')
    config = load_config(str(toml), ["optim.lr=0.001", "model.generator.depth=3", "data.val_cases=[\"case001\"]"])
    assert config.optim.iterations == 7 and config.optim.lr == 0.001
    assert config.model.generator.depth == 3 and config.data.val_cases == ("case001",)
    with pytest.raises(ConfigError, match=r"unknown setting: optim\.learning_rate"):
        load_config(str(toml), ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="not a multiple of the generator's total stride"):
        load_config(str(toml), ["data.patch_size=[15, 16, 16]"])
    with pytest.raises(ConfigError, match="too small"):
        load_config(str(toml), ["data.patch_size=[8, 8, 8]"])
    with pytest.raises(ConfigError, match="voxels per batch"):
        load_config(str(toml), ["data.batch_size=5000", "data.patch_size=[64, 64, 64]"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(str(toml), ["optim.iterations=many"])
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(str(tmp_path / "missing.toml"))
    missing_data = config_from_dict(tiny_settings(tmp_path / "nowhere" / "manifest.json", tmp_path / "run"))
    with pytest.raises(ConfigError, match="data.manifest not found"):
        Trainer(missing_data, log=lambda m: None).fit()
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("term, refusal", [
    ("lambda_recorrupted_pairs", "answers with the linear prior's output"),
    ("lambda_degraded_pairs", "the kernel task's self-supervised term is objective.lambda_recorrupted_pairs"),
    ("lambda_degraded_means", "needs objective.lambda_degraded_pairs > 0")])
def test_a_term_the_run_cannot_use_is_refused_before_phantoms_are_generated(tmp_path, term, refusal):
    """A kernel run with a self-supervised term it cannot use (recorrupted pairs without the
    linear prior; super-resolution's degraded pairs) fails at once: no phantom set is written."""
    folder = tmp_path / "generated"
    config = config_from_dict(tiny_settings(folder / "manifest.json", tmp_path / "run", objective__mode="unpaired",
                                            **{f"objective__{term}": 1.0}, data__generate__cases=3,
                                            data__generate__shape=[16, 32, 32]))
    assert config.model.generator.prior_taps == 0
    with pytest.raises(ConfigError, match=refusal):
        Trainer(config, log=lambda m: None).fit()
    assert not folder.exists() and not (tmp_path / "run" / "checkpoints").exists()


def _outside(bound: Bound) -> list:
    """Values just outside ``bound`` (and non-finite ones), as --set would pass them."""
    values = ["NaN", "Infinity"]
    values.append(bound.low if bound.low_open else bound.low - 1)
    if not math.isinf(bound.high):
        values.append(bound.high if bound.high_open else bound.high + 1)
    return values


@pytest.mark.parametrize("path", sorted(BOUNDS))
def test_every_numeric_setting_outside_its_bound_is_refused_by_name(phantoms, tmp_path, path):
    values = tiny_settings(phantoms, tmp_path / "run")
    load_config(None, [f"{key}={json.dumps(value)}" for key, value in _flat(values)])  # the base is valid
    for value in _outside(BOUNDS[path]):
        with pytest.raises(ConfigError, match=re.escape(path)):
            load_config(None, [f"{key}={json.dumps(v)}" for key, v in _flat(values)] + [f"{path}={value}"])


def _flat(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_numeric_setting_has_a_bound():
    paths = {path for path, _, _ in numeric_settings(TrainConfig())}
    assert paths == set(BOUNDS)


def test_python_api_values_of_the_wrong_kind_are_refused():
    config = config_from_dict({"data": {"manifest": "m.json"}})
    assert config.validate() is config
    for section, change, message in (("optim", {"lr": "0.1"}, "optim.lr must be a finite number"),
                                     ("optim", {"iterations": 2.5}, "optim.iterations must be an integer"),
                                     ("data", {"batch_size": True}, "data.batch_size must be an integer")):
        changed = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **change)})
        with pytest.raises(ConfigError, match=re.escape(message)):
            changed.validate()


def test_cli_train_reports_config_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nsteps = 3\n")
    assert main(["train", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("revgan: error: unknown setting: optim.steps") and "Traceback" not in err


def test_learning_rate_schedule_is_constant_then_linear():
    factors = [learning_rate_factor(step, 10, 0.5) for step in range(10)]
    assert factors[:5] == [1.0] * 5
    assert factors[5:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def test_generated_dataset_must_match_the_configuration(phantoms, tmp_path):
    """A manifest generated for other phantoms (seed, count or shape) is refused, not reused."""
    matching = {"cases": 3, "seed": 5, "shape": [16, 32, 32]}
    ensure_training_manifest(config_from_dict(tiny_settings(phantoms, tmp_path / "ok", data__generate=matching)),
                             log=lambda m: None)
    for key, value in (("seed", 6), ("cases", 4), ("shape", [16, 32, 64])):
        other = config_from_dict(tiny_settings(phantoms, tmp_path / key, data__generate=dict(matching, **{key: value})))
        with pytest.raises(ConfigError, match="point data.manifest at another folder"):
            ensure_training_manifest(other, log=lambda m: None)
