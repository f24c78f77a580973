#!/usr/bin/env python3
"""Install trained Table-2 models into Resources/Models (run from the repository root).

    python tools/install_models.py RUNS.tar.gz            # models + indexes (tools/gpu_session.py output)
    python tools/install_models.py --cards QUALITY.json   # model cards with the measured table
    python tools/install_models.py --checksums            # models.json's sha256 from the files

Step 1 copies each run's validation-chosen model (one per row and training seed) to
``Resources/Models/table2/<row>_seed<k>.safetensors`` with its name, description and caveats
filled in, writes ``table2/table2.json`` (read by ``revgan bench quality``; ``chosen`` marks the
seed a row ships) and registers the two Paired+2R models (chosen seeds) in ``models.json`` (read by
``revgan models``, ``super-resolve``, ``demo`` and the Slicer module), keeping its other
entries. Step 2 writes the model cards from ``revgan bench quality --json`` output. Every
registered file's SHA-256 is recorded in ``models.json`` (checked on every load); after
replacing a model file by hand, ``--checksums`` records the new ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RevGANCore.bench.quality import mean_and_spread  # noqa: E402
from RevGANCore.checksums import file_sha256  # noqa: E402
from RevGANCore.modelfile import load_model, save_model  # noqa: E402
from RevGANCore.output import write_text_atomic  # noqa: E402

MODELS = REPO / "Resources" / "Models"
TABLE = MODELS / "table2"
SHIPPED = {
    "super_resolution": ("revgan-sr-phantom-paired2r", "super_resolution_paired_2r",
                         "Chest CT super-resolution (4x in z, 2x in x and y), Paired+2R, trained on synthetic phantoms"),
    "kernel": ("revgan-kernel-phantom-paired2r", "kernel_paired_2r",
               "Reconstruction kernel conversion sharp B50f-like <-> smooth B30f-like, Paired+2R, trained on "
               "synthetic phantoms"),
}
CAVEATS = ("Trained only on synthetic chest phantoms (RevGANCore.phantom) with simulated reconstruction "
           "kernels and slice profiles; never trained or validated on patient scans. Real scanners, "
           "kernels, doses, noise and anatomy differ: expect a domain gap and do not use for diagnosis. "
           "The phantoms have a 102 mm field of view (a small chest); the model is tile-exact, so larger "
           "volumes are processed in tiles with identical results.")
VARIANT_TEXT = {"paired_2r": "Paired+2R", "paired": "Paired", "unpaired_2r": "Unpaired+2R", "unpaired": "Unpaired"}


def _row(entry: dict) -> str:
    return f"{entry['task']}_{entry['variant']}"


def install_runs(archive_path: Path, models_dir: Path = MODELS) -> None:
    """Every run of the archive (one per row and training seed, its validation-chosen model)
    into ``models_dir/table2``; table2.json keeps which seed each row ships (``chosen``)."""
    table = models_dir / "table2"
    table.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(archive_path) as archive:
        members = [m for m in archive.getmembers() if m.name == "table2.json" or m.name.endswith(".safetensors")
                   or m.name.endswith("/summary.json") or m.name.endswith("/metrics.csv")]
        for member in members:  # plain files only, no links or absolute paths
            if not member.isfile() or member.name.startswith("/") or ".." in member.name:
                raise SystemExit(f"refusing archive member {member.name}")
        archive.extractall(scratch, members=members)
        index = json.loads((Path(scratch) / "table2.json").read_text())
        for entry in index["models"]:
            row, seed = _row(entry), entry["seed"]
            run_dir = Path(scratch) / row / f"seed{seed}"
            model = load_model(Path(scratch) / entry["file"])
            summary = json.loads((run_dir / "summary.json").read_text())
            training = dict(model.metadata.training)
            training["summary"] = {k: summary.get(k) for k in ("status", "step", "iterations", "seconds", "device",
                                                               "first_validation", "last_validation", "best_metric",
                                                               "best_value")}
            training["command"] = (f"revgan train configs/table2/{row}.toml --set seed={seed} "
                                   f"--set optim.iterations={summary['iterations']}")
            metadata = dataclasses.replace(
                model.metadata, name=f"{row}_seed{seed}",
                description=f"{VARIANT_TEXT[entry['variant']]} 3D RevGAN for {entry['task'].replace('_', '-')} "
                            f"({model.metadata.domains['x']} <-> {model.metadata.domains['y']}), "
                            f"training seed {seed}, trained on synthetic chest phantoms",
                caveats=CAVEATS, training=training)
            save_model(table / entry["file"], model.generator, metadata)
            (table / f"{row}_seed{seed}.metrics.csv").write_bytes((run_dir / "metrics.csv").read_bytes())
            entries.append({**entry, "train_seconds": summary.get("seconds"), "device": summary.get("device")})
    # Rows not in this archive keep their earlier entries (rows can be retrained separately).
    index_path = table / "table2.json"
    previous = json.loads(index_path.read_text())["models"] if index_path.exists() else []
    installed = {_row(e) for e in entries}
    kept = [e for e in previous if _row(e) not in installed]
    order = {row: i for i, row in enumerate(f"{t}_{v}" for t in ("super_resolution", "kernel") for v in VARIANT_TEXT)}
    entries = sorted(kept + entries, key=lambda e: (order[_row(e)], e.get("seed", 0)))
    index_path.write_text(json.dumps({"format": "revgan-table2", "protocol": index.get("protocol"),
                                      "models": entries}, indent=2) + "\n")
    registry_path = models_dir / "models.json"
    registry = (json.loads(registry_path.read_text()) if registry_path.exists() else
                {"format": "revgan-model-registry", "format_version": 1, "models": {}})
    for task, (name, row, description) in SHIPPED.items():
        registry["models"][name] = {"file": f"table2/{shipped_file(row, table)}", "card": f"{name}.md", "task": task,
                                    "description": description, "default": registry["models"].get(name, {}).get(
                                        "default", not any(e["task"] == task and e.get("default")
                                                           for e in registry["models"].values()))}
    write_checksums(registry_path, registry)
    print(f"installed {len(entries)} models into {table} and registered {len(SHIPPED)} in {models_dir / 'models.json'}")


def write_checksums(registry_path: Path, registry: Optional[dict] = None) -> None:
    """Write ``registry`` (default: the file's own) with every entry's ``sha256`` taken from
    its model file."""
    registry = registry if registry is not None else json.loads(registry_path.read_text())
    for name, entry in registry["models"].items():
        entry["sha256"] = file_sha256(registry_path.parent / entry["file"])
    write_text_atomic(registry_path, json.dumps(registry, indent=2) + "\n")


def shipped_file(row: str, table: Path = TABLE) -> str:
    """The model file a row ships: its validation-chosen seed (older indexes: its only entry)."""
    entries = [e for e in json.loads((table / "table2.json").read_text())["models"] if _row(e) == row]
    chosen = [e for e in entries if e.get("chosen", True)]
    if not chosen:
        raise SystemExit(f"{table / 'table2.json'}: no model chosen for {row}")
    return chosen[0]["file"]


def _table(rows: list) -> str:
    lines = ["| method | MAE (HU) | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    for row in rows:
        mae, psnr, ssim = (mean_and_spread(row, key, digits, plus_minus="±")
                           for key, digits in (("mae_hu", 1), ("psnr", 2), ("ssim", 3)))
        lines.append(f"| {row['method']} | {mae} | {psnr} | {ssim} |")
    return "\n".join(lines)


def write_cards(quality_path: Path) -> None:
    quality = json.loads(quality_path.read_text())
    (TABLE / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    for task, (name, row, description) in SHIPPED.items():
        model = load_model(TABLE / shipped_file(row))
        meta, config = model.metadata, model.generator.config
        summary = meta.training.get("summary", {})
        train_config = meta.training.get("config", {})
        generate = train_config.get("data", {}).get("generate", {})
        factors = (f"scale factors (x, y, z) {list(meta.scale_factors_xyz)}: the input is resampled onto a grid "
                   "with the same physical extent and spacing divided by these factors, then translated"
                   if meta.scale_factors_xyz else "keeps the input's voxel grid")
        directions = (f"`forward`: {meta.domains['x']} -> {meta.domains['y']}; `inverse`: "
                      f"{meta.domains['y']} -> {meta.domains['x']} (the same shared reversible core run backwards)")
        card = f"""# {name}

{description}.

| | |
|---|---|
| file | `table2/{row}.safetensors` (safetensors weights + JSON metadata; {sum(p.numel() for p in model.generator.parameters()):,} parameters) |
| task | {meta.task}; {factors} |
| directions | {directions} |
| architecture | 3D RevGAN generator, ngf {config.ngf}, {config.depth} reversible blocks (additive coupling, SiLU), residual output, no normalisation (tile-exact inference) |
| objective | paired (pix2pix-style): LSGAN both ways + 100 x L1, conditional 3D PatchGANs |
| intensities | HU window {list(meta.hu_window)} mapped linearly to [-1, 1]; {'not clipped (residual model: dense bone and metal pass through)' if config.residual else 'clipped to the window'} |
| training data | {generate.get('cases', '?')} synthetic chest phantoms (seed {generate.get('seed', '?')}, 64 x 128 x 128 voxels at 0.8 x 0.8 x 1.25 mm), one held out for validation |
| training | {summary.get('step')} iterations, batch 8 of 32 x 64 x 64 patches, Adam 2e-4 (constant, then linear decay), {summary.get('device')}, {summary.get('seconds')} s |
| reproduce | `{meta.training.get('command')}` |

## What the training data means for real scans

{CAVEATS}

## Held-out test phantoms, linear world ({quality['cases']} cases, seed {quality['test_seed']}; mean ± std)

{_table(quality['tasks'][f"{task}/linear"])}

PSNR: window-normalised, data range 2 (the seed paper's convention). MAE inside the body mask.
Table 2 evaluates the forward direction only. Recompute with `revgan bench quality`.
"""
        (MODELS / f"{name}.md").write_text(card)
    print(f"wrote model cards into {MODELS}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", help="table2_runs.tar.gz from tools/gpu_session.py")
    parser.add_argument("--cards", help="revgan bench quality --json output")
    parser.add_argument("--into", type=Path, default=MODELS, help=f"models folder for RUNS (default {MODELS})")
    parser.add_argument("--checksums", action="store_true", help="record every registered file's SHA-256 in "
                        "models.json of --into")
    args = parser.parse_args()
    if args.checksums:
        write_checksums(args.into / "models.json")
    if args.runs:
        install_runs(Path(args.runs), args.into)
    if args.cards:
        write_cards(Path(args.cards))
    if not (args.runs or args.cards or args.checksums):
        parser.error("give RUNS.tar.gz, --cards QUALITY.json and/or --checksums")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
