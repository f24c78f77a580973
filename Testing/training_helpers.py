"""Tiny training runs for the training suites: a 3-case phantom set of 16x32x32 volumes and
the settings of a run that takes seconds on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset

#: (z, y, x) of every tiny phantom volume.
TINY_SHAPE = (16, 32, 32)


def write_tiny_phantoms(folder: Path) -> Path:
    """The manifest of 3 tiny phantom cases written into ``folder``."""
    return write_phantom_dataset(folder, cases=3, seed=5, recipe=PhantomRecipe(shape=TINY_SHAPE))


def tiny_settings(manifest: Path, out: Path, **changes) -> dict:
    """Settings of a 4-step run; ``changes`` use ``section__key=value`` for nested keys."""
    settings = {
        "output_dir": str(out), "seed": 3, "device": "cpu",
        "model": {"generator": {"ngf": 2, "depth": 1, "residual": True},
                  "discriminator": {"ndf": 2, "n_layers": 2}},
        "data": {"manifest": str(manifest), "task": "kernel", "val_cases": ["case002"],
                 "patch_size": [16, 16, 16], "batch_size": 2, "val_patches": 2},
        "objective": {"mode": "paired"},
        "optim": {"iterations": 4, "decay_start": 0.5},
        "checkpoint": {"every": 2, "validate_every": 2, "keep_last": 2},
        "logging": {"progress": False, "preview_every": 2, "tensorboard": False},
    }
    for dotted, value in changes.items():
        target = settings
        *parents, leaf = dotted.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return settings


def write_config(path: Path, settings: dict) -> Path:
    path.write_text(json.dumps(settings))
    return path
