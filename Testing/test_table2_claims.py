"""The claims a Table-2 result is read for (RevGANCore/bench/table2_claims.py), on real result
rows: each claim flips with the one figure it rests on, missing rows are never a pass, the
linear worlds claim nothing, and the shipped tables carry the claims of their own rows."""

import copy
import json
from pathlib import Path

import pytest

from RevGANCore.bench.quality import format_quality_table
from RevGANCore.bench.table2_claims import format_claims, table_claims, task_claims

REPO = Path(__file__).resolve().parents[1]


def _row(method, kind, mae, psnr, bias=0.0, variant=None):
    return {"method": method, "kind": kind, "variant": variant, "mae_hu": mae, "psnr": psnr, "bias_hu": bias}


def _rows():
    return [_row("Identity", "classical-unpaired", 60.0, 28.0, 12.0),
            _row("Spectral-ratio filter", "classical-unpaired", 12.3, 40.0),
            _row("Fitted linear filter", "classical-paired", 12.0, 41.5),
            _row("Unpaired", "revgan-unpaired", 12.2, 40.5, -0.9, "Unpaired"),
            _row("Unpaired+2R", "revgan-unpaired", 12.1, 41.0, 1.5, "Unpaired+2R"),
            _row("Paired", "revgan-paired", 12.5, 41.0, -1.0, "Paired"),
            _row("Paired+2R", "revgan-paired", 11.2, 42.0, -0.6, "Paired+2R")]


def _outcomes(rows, key="kernel/nonlinear"):
    return {claim["claim"]: claim["holds"] for claim in task_claims(key, rows)}


def test_every_claim_holds_on_a_table_that_shows_them():
    outcomes = _outcomes(_rows())
    assert len(outcomes) == 6 and all(value is True for value in outcomes.values())


@pytest.mark.parametrize("variant,field,value,claim", [
    ("Unpaired", "mae_hu", 12.31, "Unpaired beats every classical-unpaired row on MAE and PSNR"),
    ("Unpaired+2R", "psnr", 39.99, "Unpaired+2R beats every classical-unpaired row on MAE and PSNR"),
    ("Unpaired+2R", "bias_hu", -2.01, "Unpaired+2R has |bias| < 2 HU"),
    ("Paired+2R", "mae_hu", 12.01, "Paired+2R beats every classical-paired row on MAE and PSNR"),
    ("Paired", "mae_hu", 11.19, "Paired+2R is at least as good as Paired on MAE and PSNR"),
])
def test_each_claim_fails_with_the_figure_it_rests_on(variant, field, value, claim):
    rows = copy.deepcopy(_rows())
    next(row for row in rows if row["variant"] == variant)[field] = value
    outcomes = _outcomes(rows)
    assert outcomes[claim] is False
    assert sum(holds is False for holds in outcomes.values()) == 1


def test_missing_rows_are_not_evaluated_and_linear_worlds_claim_nothing():
    without_unpaired = [row for row in _rows() if row["kind"] != "revgan-unpaired"]
    outcomes = _outcomes(without_unpaired)
    assert outcomes["Unpaired beats every classical-unpaired row on MAE and PSNR"] is None
    assert outcomes["Paired+2R beats every classical-paired row on MAE and PSNR"] is True
    assert task_claims("kernel/linear", _rows()) == []
    text = format_claims(task_claims("kernel/nonlinear", without_unpaired))
    assert "not evaluated" in text and text.endswith("2 of 6 claims hold; 4 not evaluated")
    classical_only = [row for row in _rows() if not row["kind"].startswith("revgan")]
    text = format_claims(task_claims("kernel/nonlinear", classical_only))
    assert "0 of 6 claims hold; 6 not evaluated" in text and "Reproducing Table 2" in text


def test_the_shipped_table_carries_the_claims_of_its_rows():
    result = json.loads((REPO / "Resources" / "Models" / "table2_cpu" / "quality.json").read_text())
    assert result["claims"] == table_claims(result)
    assert {claim["task"] for claim in result["claims"]} == {"kernel/nonlinear", "super_resolution/nonlinear"}
    assert "claims hold" in format_quality_table(result)
