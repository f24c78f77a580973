"""The world dimension of the Table-2 protocol (RevGANCore/bench/protocol.py): every row is
trained in the linear and the nonlinear phantom world, each on its own phantoms, in its own
run folder, with its own chosen seed; and the CPU runner (tools/cpu_table2.py) end to end in
its dry-run mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from RevGANCore.bench.protocol import (ProtocolRun, iterations_for_budget, predicted_seconds, protocol_runs,
                                       run_folder, run_overrides, table_index, world_manifest)
from RevGANCore.bench.quality import load_table_index
from RevGANCore.config import load_config
from RevGANCore.errors import ConfigError
from RevGANCore.phantom_dataset import PhantomRecipe, phantom_world, write_phantom_dataset
from RevGANCore.training_data import ensure_training_manifest

REPO = Path(__file__).resolve().parent.parent
TABLE2 = REPO / "configs" / "table2"


def test_nonlinear_runs_train_on_their_own_phantoms(tmp_path):
    base = load_config(str(TABLE2 / "kernel_paired_2r.toml"))
    linear = load_config(str(TABLE2 / "kernel_paired_2r.toml"),
                         run_overrides(1, 50, tmp_path / "a", "linear", base.data.manifest))
    nonlinear = load_config(str(TABLE2 / "kernel_paired_2r.toml"),
                            run_overrides(1, 50, tmp_path / "b", "nonlinear", base.data.manifest))
    assert (linear.data.generate.world, nonlinear.data.generate.world) == ("linear", "nonlinear")
    assert linear.data.manifest == base.data.manifest == "data/phantoms_train/manifest.json"
    assert nonlinear.data.manifest == "data/phantoms_train_nonlinear/manifest.json"
    different = {key for key, value in nonlinear.to_dict()["data"].items() if linear.to_dict()["data"][key] != value}
    assert different == {"manifest", "generate"}
    assert run_folder(tmp_path, "kernel_paired_2r", 1, "nonlinear") != run_folder(tmp_path, "kernel_paired_2r", 1)
    with pytest.raises(ValueError, match="manifest"):
        run_overrides(0, 50, tmp_path, "nonlinear")


def test_a_world_refuses_the_other_worlds_phantoms(tmp_path):
    recipe = PhantomRecipe(shape=(32, 48, 48))
    write_phantom_dataset(tmp_path / "phantoms", cases=2, seed=0, recipe=recipe)
    manifest = str(tmp_path / "phantoms" / "manifest.json")
    settings = [f"data.manifest={manifest}", "data.generate.cases=2", "data.generate.shape=[32,48,48]"]
    config = load_config(str(TABLE2 / "kernel_paired.toml"), settings)
    assert ensure_training_manifest(config, log=print) == Path(manifest)
    nonlinear = load_config(str(TABLE2 / "kernel_paired.toml"), settings + ["data.generate.world=nonlinear"])
    with pytest.raises(ConfigError, match="nonlinear"):
        ensure_training_manifest(nonlinear, log=print)
    elsewhere = world_manifest(manifest, "nonlinear")
    moved = load_config(str(TABLE2 / "kernel_paired.toml"),
                        settings[1:] + ["data.generate.world=nonlinear", f"data.manifest={elsewhere}"])
    generated = ensure_training_manifest(moved, log=print)
    assert generated.parent.name == "phantoms_nonlinear" and phantom_world(generated) == "nonlinear"


def _finished(folder: Path, metric: str, value: float, step: int = 50) -> None:
    folder.mkdir(parents=True)
    (folder / "best.safetensors").write_bytes(b"")
    (folder / "summary.json").write_text(json.dumps({"step": step, "best_metric": metric, "best_value": value,
                                                    "best_model": str(folder / "best.safetensors")}))


def test_each_world_chooses_its_own_seed(tmp_path):
    values = {"linear": [0.05, 0.03, 0.04], "nonlinear": [0.06, 0.07, 0.02]}
    for world, by_seed in values.items():
        for seed, value in enumerate(by_seed):
            _finished(run_folder(tmp_path, "kernel_paired_2r", seed, world), "val_l1", value)
    index = table_index(tmp_path, ["kernel_paired_2r"], range(3), 50, ["linear", "nonlinear"])
    chosen = {m["world"]: m["seed"] for m in index["models"] if m["chosen"]}
    assert chosen == {"linear": 1, "nonlinear": 2}
    assert index["protocol"]["worlds"] == ["linear", "nonlinear"]
    files = [m["file"] for m in index["models"]]
    assert len(set(files)) == 6 and "kernel_paired_2r_nonlinear_seed2.safetensors" in files


def test_runs_are_seed_major_over_rows_and_worlds():
    runs = protocol_runs(["kernel_paired", "kernel_unpaired"], ["linear", "nonlinear"], range(2))
    assert len(runs) == 8 and len(set(runs)) == 8
    assert {run.seed for run in runs[:4]} == {0}
    assert runs[0] == ProtocolRun("kernel_paired", "linear", 0)
    with pytest.raises(ValueError, match="world"):
        protocol_runs(["kernel_paired"], ["fbp"])


def test_budget_fits_the_replayed_schedule():
    runs = protocol_runs(["kernel_paired", "kernel_unpaired"], ["linear", "nonlinear"], range(3))  # 12 runs
    per_iteration = {"kernel_paired": 0.5, "kernel_unpaired": 1.5}
    overhead = {"kernel_paired": 10.0, "kernel_unpaired": 10.0}
    # one slot: every run in turn, 6 x (10 + 0.5 n) + 6 x (10 + 1.5 n) = 120 + 12 n
    assert predicted_seconds(runs, 100, per_iteration, overhead, parallel=1) == pytest.approx(1320)
    # two slots, each next run on the first free one: 60, 160 | +60 = 120 | +160 = 280 | ... (hand-replayed)
    assert predicted_seconds(runs, 100, per_iteration, overhead, parallel=2) == pytest.approx(720)
    assert predicted_seconds(runs, 100, per_iteration, overhead) == pytest.approx(10 + 150)  # all at once
    assert iterations_for_budget(runs, 1330.0, per_iteration, overhead, parallel=1) == 100  # 1440 at 110
    assert iterations_for_budget(runs, 1.0, per_iteration, overhead, parallel=1) == 10  # never below one step


def test_cpu_runner_dry_run_trains_and_ships_both_worlds(tmp_path):
    work, out = tmp_path / "work", tmp_path / "shipped"
    command = [sys.executable, str(REPO / "tools" / "cpu_table2.py"), "--dry-run", "--rows", "kernel_paired",
               "--seeds", "1", "--iterations", "2", "--nice", "0", "--work", str(work), "--out", str(out)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for world in ("linear", "nonlinear"):
        folder = run_folder(work / "table2", "kernel_paired", 0, world)
        config = json.loads((folder / "config.json").read_text())
        assert config["data"]["generate"]["world"] == world
        assert phantom_world(config["data"]["manifest"]) == world
        assert json.loads((folder / "summary.json").read_text())["step"] == 2
    shipped = json.loads((out / "table2.json").read_text())
    assert {(m["world"], m["seed"], m["chosen"]) for m in shipped["models"]} == {("linear", 0, True),
                                                                                 ("nonlinear", 0, True)}
    assert {m.world for m in load_table_index(out)} == {"linear", "nonlinear"}
    assert len(load_table_index(work / "all_seeds")) == 2  # every seed's model (here one seed)
    record = json.loads((out / "cpu_table2_kernel.json").read_text())
    assert record["iterations_per_run"] == 2 and record["dry_run"] and not record["failed"]

    # A run that did not finish (here: its summary gone) is trained again by --continue; the others stay.
    linear_summary = run_folder(work / "table2", "kernel_paired", 0, "linear") / "summary.json"
    before = linear_summary.stat().st_mtime_ns
    (run_folder(work / "table2", "kernel_paired", 0, "nonlinear") / "summary.json").unlink()
    again = subprocess.run([*command[:2], "--continue", *command[2:]], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 of 2 runs finished; training 1 again" in again.stdout
    assert linear_summary.stat().st_mtime_ns == before
    assert json.loads((run_folder(work / "table2", "kernel_paired", 0, "nonlinear") / "summary.json")
                      .read_text())["step"] == 2
    record = json.loads((work / "cpu_table2.json").read_text())
    assert record["runs"]["kernel_paired/nonlinear/seed0"]["rerun"] and not record["failed"]
    assert "rerun" not in record["runs"]["kernel_paired/linear/seed0"]
    assert record["total_wall_seconds"] >= record["training_wall_seconds"]  # the rerun counts in both
    assert len(load_table_index(out)) == 2

    # Other rows trained apart into the same --out join the kernel rows there.
    other = [*command[:command.index("--rows") + 1], "super_resolution_paired",
             *command[command.index("--rows") + 2:command.index("--work") + 1], str(tmp_path / "work_sr"),
             "--out", str(out)]
    assert subprocess.run(other, cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    assert {(m.task, m.world) for m in load_table_index(out)} == {
        (task, world) for task in ("kernel", "super_resolution") for world in ("linear", "nonlinear")}
    shipped = json.loads((out / "table2.json").read_text())
    assert set(shipped["protocol"]) == {"kernel", "super_resolution"}
    assert (out / "cpu_table2_kernel.json").is_file() and (out / "cpu_table2_super_resolution.json").is_file()

    # One row of a task trained again: the task's record keeps the other rows' runs and settings.
    kernel_unpaired = [*command[:command.index("--rows") + 1], "kernel_unpaired",
                       *command[command.index("--rows") + 2:command.index("--iterations") + 1], "4",
                       "--nice", "0", "--work", str(tmp_path / "work_unpaired"), "--out", str(out)]
    assert subprocess.run(kernel_unpaired, cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    record = json.loads((out / "cpu_table2_kernel.json").read_text())
    assert set(record["runs"]) == {f"{row}/{world}/seed0" for row in ("kernel_paired", "kernel_unpaired")
                                   for world in ("linear", "nonlinear")}
    assert record["iterations_per_run"] == 4 and record["rows"] == ["kernel_unpaired"]
    assert [(t["rows"], t["iterations_per_run"]) for t in record["earlier_trainings"]] == [(["kernel_paired"], 2)]
    assert {m.variant for m in load_table_index(out) if m.task == "kernel"} == {"paired", "unpaired"}

    # Trained once more: the first training (the paired row's) is still on record, the second is not.
    again = [*kernel_unpaired[:kernel_unpaired.index("--work") + 1], str(tmp_path / "work_again"), "--out", str(out)]
    again[again.index("--iterations") + 1] = "6"
    assert subprocess.run(again, cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    record = json.loads((out / "cpu_table2_kernel.json").read_text())
    assert record["iterations_per_run"] == 6 and record["rows"] == ["kernel_unpaired"]
    assert [(t["rows"], t["iterations_per_run"]) for t in record["earlier_trainings"]] == [(["kernel_paired"], 2)]


def test_every_training_seed_is_validated_on_the_same_patches(tmp_path):
    """The seed a row ships is the one with the best validation value: only fair when every
    seed's run is measured on the same validation patches (its training patches differ)."""
    import torch

    from RevGANCore.training_data import load_training_data

    write_phantom_dataset(tmp_path / "phantoms", cases=3, seed=0, recipe=PhantomRecipe(shape=(32, 48, 48)))
    manifest = tmp_path / "phantoms" / "manifest.json"
    data = {}
    for seed in (0, 1):
        config = load_config(str(TABLE2 / "kernel_unpaired.toml"),
                             [f"seed={seed}", f"data.manifest={manifest}", "data.patch_size=[24,24,24]",
                              "data.batch_size=2", "data.val_patches=4"])
        data[seed] = load_training_data(config, manifest)
    for (x0, y0), (x1, y1) in zip(data[0].val_batches, data[1].val_batches):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(data[0].batch(0, 2, 0, 1)[0], data[1].batch(0, 2, 0, 1)[0])
