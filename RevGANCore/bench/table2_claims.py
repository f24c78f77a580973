"""What a Table-2 result shows, claim by claim, so nobody has to read it off the numbers.

In the nonlinear worlds (iterative-reconstruction-like targets, where no linear filter is the
answer) a learned model must earn its place against the strongest classical method that uses
the same data:

- ``Paired+2R`` beats every ``classical-paired`` row on MAE and on PSNR;
- each unpaired RevGAN row beats every ``classical-unpaired`` row on MAE and on PSNR;
- each unpaired RevGAN row's bias (mean signed error in the body) is below 2 HU in size;
- ``Paired+2R`` is at least as good as ``Paired`` on MAE and on PSNR.

In the linear worlds the fitted linear filter is the ceiling, and the table is printed as it
is, with no claim. A claim whose rows are missing (a table without those models) is reported
as not evaluated, never as holding. Margins are means over cases and training seeds; the
rows' standard deviations stand beside them in the table.
"""

from __future__ import annotations

from typing import Dict, List, Optional

#: Largest |bias| (HU) an unpaired row may carry: the unpaired objectives must not shift levels.
MAX_UNPAIRED_BIAS_HU = 2.0
CLAIMED_WORLDS = ("nonlinear",)


def _find(rows: List[dict], variant: str) -> Optional[dict]:
    return next((row for row in rows if row.get("variant") == variant), None)


def _beats(row: dict, others: List[dict]) -> dict:
    """Does ``row`` have lower MAE and higher PSNR than every row of ``others``? With the
    closest competitor on each metric and the margins (3 decimals: a win can be that thin)."""
    closest_mae = min(others, key=lambda other: other["mae_hu"])
    closest_psnr = max(others, key=lambda other: other["psnr"])
    holds = row["mae_hu"] < closest_mae["mae_hu"] and row["psnr"] > closest_psnr["psnr"]
    names = (closest_mae["method"] if closest_mae is closest_psnr
             else f"{closest_mae['method']} on MAE, {closest_psnr['method']} on PSNR")
    detail = (f"MAE {row['mae_hu']:.2f} vs {closest_mae['mae_hu']:.2f} HU "
              f"({row['mae_hu'] - closest_mae['mae_hu']:+.3f}), PSNR {row['psnr']:.2f} vs "
              f"{closest_psnr['psnr']:.2f} dB ({row['psnr'] - closest_psnr['psnr']:+.3f}); closest: {names}")
    return {"holds": holds, "detail": detail}


def _claim(task_key: str, text: str, outcome: Optional[dict]) -> dict:
    if outcome is None:
        return {"task": task_key, "claim": text, "holds": None, "detail": "rows missing"}
    return {"task": task_key, "claim": text, **outcome}


def task_claims(task_key: str, rows: List[dict]) -> List[dict]:
    """The claims of one ``"<task>/<world>"`` table (empty outside :data:`CLAIMED_WORLDS`)."""
    if task_key.split("/")[-1] not in CLAIMED_WORLDS:
        return []
    by_kind: Dict[str, List[dict]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    paired_classical = by_kind.get("classical-paired", [])
    unpaired_classical = by_kind.get("classical-unpaired", [])
    claims = []
    best_paired = _find(rows, "Paired+2R")
    claims.append(_claim(task_key, "Paired+2R beats every classical-paired row on MAE and PSNR",
                         _beats(best_paired, paired_classical) if best_paired and paired_classical else None))
    for variant in ("Unpaired", "Unpaired+2R"):
        row = _find(rows, variant)
        claims.append(_claim(task_key, f"{variant} beats every classical-unpaired row on MAE and PSNR",
                             _beats(row, unpaired_classical) if row and unpaired_classical else None))
        bias = None if row is None else {
            "holds": abs(row["bias_hu"]) < MAX_UNPAIRED_BIAS_HU,
            "detail": f"bias {row['bias_hu']:+.2f} HU"}
        claims.append(_claim(task_key, f"{variant} has |bias| < {MAX_UNPAIRED_BIAS_HU:g} HU", bias))
    plain = _find(rows, "Paired")
    at_least = None
    if best_paired and plain:
        at_least = {"holds": best_paired["mae_hu"] <= plain["mae_hu"] and best_paired["psnr"] >= plain["psnr"],
                    "detail": f"MAE {best_paired['mae_hu']:.2f} vs {plain['mae_hu']:.2f} HU, "
                              f"PSNR {best_paired['psnr']:.2f} vs {plain['psnr']:.2f} dB"}
    claims.append(_claim(task_key, "Paired+2R is at least as good as Paired on MAE and PSNR", at_least))
    return claims


def table_claims(result: dict) -> List[dict]:
    """Every claim of a ``revgan bench quality`` result, table by table."""
    return [claim for key, rows in result["tasks"].items() for claim in task_claims(key, rows)]


def format_claims(claims: List[dict]) -> str:
    """One line per claim: holds / FAILS / not evaluated, and the figures it rests on."""
    marks = {True: "holds", False: "FAILS", None: "not evaluated"}
    failed = sum(claim["holds"] is False for claim in claims)
    open_ = sum(claim["holds"] is None for claim in claims)
    summary = (f"{len(claims) - failed - open_} of {len(claims)} claims hold"
               + (f"; {failed} fail" if failed else "") + (f"; {open_} not evaluated" if open_ else ""))
    if claims and open_ == len(claims):  # one line, not a screen of "not evaluated"
        return (f"{summary}: no RevGAN rows trained in the nonlinear worlds in these model folders "
                "(README, \"Reproducing Table 2\")")
    lines = [f"{claim['task']}: {claim['claim']}: {marks[claim['holds']]} ({claim['detail']})" for claim in claims]
    return "\n".join(lines + [summary])
