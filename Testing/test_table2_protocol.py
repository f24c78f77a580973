"""The Table-2 protocol: one iteration budget for every row, the validation case deciding, the
test phantoms kept apart (RevGANCore/bench/protocol.py, README "Reproducing Table 2")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from RevGANCore.bench.protocol import ROWS, chosen_seed, run_folder, run_overrides, split_row, table_index
from RevGANCore.config import load_config
from RevGANCore.phantom_splits import FIT_CASES, TEST_SEED, TRAIN_SEED, VALIDATION_CASES

REPO = Path(__file__).resolve().parent.parent
TABLE2 = REPO / "configs" / "table2"


def test_every_row_has_the_same_budget_and_validation_split():
    configs = {row: load_config(str(TABLE2 / f"{row}.toml")) for row in ROWS}
    assert len({c.optim.iterations for c in configs.values()}) == 1
    for row, config in configs.items():
        task, variant = split_row(row)
        assert config.data.task == task and config.objective.mode == variant.split("_")[0]
        assert config.data.val_cases == VALIDATION_CASES
        assert config.data.generate.seed == TRAIN_SEED != TEST_SEED
        assert not set(FIT_CASES) & set(VALIDATION_CASES)


def test_protocol_overrides_change_only_seed_budget_and_folder(tmp_path):
    base = load_config(str(TABLE2 / "kernel_unpaired_2r.toml"))
    run = load_config(str(TABLE2 / "kernel_unpaired_2r.toml"), run_overrides(2, 77, tmp_path / "run"))
    assert (run.seed, run.optim.iterations, run.output_dir) == (2, 77, str(tmp_path / "run"))
    for section in ("model", "objective", "data", "checkpoint"):
        assert run.to_dict()[section] == base.to_dict()[section]


def _finished(folder: Path, metric: str, value: float) -> None:
    folder.mkdir(parents=True)
    (folder / "best.safetensors").write_bytes(b"")
    (folder / "summary.json").write_text(json.dumps({"step": 50, "best_metric": metric, "best_value": value,
                                                    "best_model": str(folder / "best.safetensors")}))


@pytest.mark.parametrize("metric, values, expected", [("val_unpaired", [0.9, 0.4, 0.6], 1),
                                                      ("val_l1", [0.05, 0.07, 0.02], 2),
                                                      ("val_psnr", [31.0, 35.0, 33.0], 1)])
def test_validation_chooses_the_seed(tmp_path, metric, values, expected):
    for seed, value in enumerate(values):
        _finished(run_folder(tmp_path, "kernel_unpaired", seed), metric, value)
    index = table_index(tmp_path, ["kernel_unpaired"], range(3), iterations=50)
    assert [m["seed"] for m in index["models"] if m["chosen"]] == [expected]
    assert {m["file"] for m in index["models"]} == {f"kernel_unpaired_linear_seed{s}.safetensors" for s in range(3)}
    summaries = {s: json.loads((run_folder(tmp_path, "kernel_unpaired", s) / "summary.json").read_text())
                 for s in range(3)}
    assert chosen_seed(summaries) == expected
