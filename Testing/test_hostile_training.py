"""Hostile training configurations through the real ``revgan train`` command: each one is
refused with exit 1 and one line naming the setting, before any compute, with the inputs
byte-identical and no run folder (or anything else) created. The range of every numeric
setting is tested in process in test_training.py; these are the cases of issue 10 end to end.

The cases run as concurrent processes in one module fixture: each process spends most of
its time importing torch, and the suite must stay fast on 2 cores."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, NamedTuple, Sequence

import pytest

from hostile_helpers import assert_refused, digest_tree, hidden_leftovers, run_revgan
from training_helpers import tiny_settings, write_config, write_tiny_phantoms


class Case(NamedTuple):
    overrides: Sequence[str] = ()  # --set KEY=VALUE
    toml: str = ""                  # settings written to a TOML file that extends the JSON base
    extra_args: Sequence[str] = ()
    fragments: Sequence[str] = ()   # what the one error line must name


CASES: Dict[str, Case] = {
    "lr_nan_in_toml": Case(toml="[optim]\nlr = nan\n", fragments=("optim.lr", "finite", "nan")),
    "lr_overflows_to_inf": Case(["optim.lr=1e400"], fragments=("optim.lr", "finite")),
    "beta1_5": Case(["optim.beta1=5"], fragments=("optim.beta1", "[0, 1)")),
    "seed_negative": Case(["seed=-1"], fragments=("seed", "-1")),
    "lambda_l1_negative": Case(["objective.lambda_l1=-1"], fragments=("objective.lambda_l1", ">= 0")),
    "lambda_cycle_negative": Case(toml="[objective]\nmode = \"unpaired\"\nlambda_cycle = -10.0\n",
                                  fragments=("objective.lambda_cycle", ">= 0")),
    "foreground_fraction_nan": Case(["data.foreground_fraction=NaN"], fragments=("data.foreground_fraction",)),
    "iterations_past_checkpoint_names": Case(["optim.iterations=100000000"], fragments=("optim.iterations",)),
    "output_dir_is_a_file": Case(["output_dir=in_the_way"], fragments=("output_dir", "is a file")),
    "output_dir_below_a_file": Case(["output_dir=in_the_way/run"], fragments=("output_dir", "is a file")),
    "patch_larger_than_every_volume": Case(["data.patch_size=[32,32,32]"],
                                           fragments=("data.patch_size", "larger than every", "manifest.json")),
    "resume_without_checkpoint": Case(extra_args=["--resume"], fragments=("--resume", "no complete checkpoint")),
}


def _prepare(folder: Path, manifest: Path, case: Case) -> list:
    """The case's folder (config files and a stray file named ``in_the_way``) and the command."""
    folder.mkdir()
    (folder / "in_the_way").write_text("not a folder\n")
    config = write_config(folder / "base.json", tiny_settings(manifest, folder / "run"))
    if case.toml:
        config = folder / "config.toml"
        config.write_text('extends = "base.json"\n' + case.toml)
    overrides = [arg for override in case.overrides for arg in ("--set", override)]
    return ["train", config.name, *overrides, *case.extra_args]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """{case name: (run, case folder, digests before, phantom digests before)}, all cases run
    concurrently, each in its own folder."""
    root = tmp_path_factory.mktemp("hostile_training")
    manifest = write_tiny_phantoms(root / "phantoms")
    phantoms_before = digest_tree(root / "phantoms")
    prepared = {}
    for name, case in CASES.items():
        folder = root / name
        args = _prepare(folder, manifest, case)
        prepared[name] = (args, folder, digest_tree(folder))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_revgan, args, cwd=folder, timeout=240)
                   for name, (args, folder, _) in prepared.items()}
        runs = {name: future.result() for name, future in futures.items()}
    return {name: (runs[name], folder, before, root / "phantoms", phantoms_before)
            for name, (_, folder, before) in prepared.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_training_configuration_is_refused_before_anything_is_created(refusals, name):
    run, folder, before, phantoms, phantoms_before = refusals[name]
    assert_refused(run, *CASES[name].fragments)
    assert not (folder / "run").exists()
    assert digest_tree(folder) == before  # config files untouched, nothing added
    assert digest_tree(phantoms) == phantoms_before
    assert hidden_leftovers(folder) == []
