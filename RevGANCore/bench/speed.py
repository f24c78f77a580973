"""``revgan bench speed``: median generator training-step time (forward + backward, both
directions) for the naive, reversible and checkpointed core at several depths.

Default shape: batch 4 of 40^3, so the core's half-resolution convs (16 channels, 20^3)
stay on PyTorch's fast CPU path (batch*channels*depth*height = 25600 > 20480).

The variants are interleaved in one process, rotating their order each round, because these
machines' speed drifts by up to 2x between runs: only ratios measured together are trusted.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, Iterable, List

import torch

from ..devices import describe_device, resolve_device
from .variants import VARIANTS, build_variants, training_step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_speed_benchmark(depths: Iterable[int] = (0, 8), patch: int = 40, ngf: int = 16,
                        repeats: int = 5, device: str = "cpu", batch: int = 4, warmup: int = 1) -> dict:
    torch_device = resolve_device(device)
    rows: List[dict] = []
    for depth in depths:
        models = build_variants(ngf, depth, torch_device)
        generator = torch.Generator(device="cpu").manual_seed(depth)
        tensors = [torch.randn(batch, 1, patch, patch, patch, generator=generator).to(torch_device)
                   for _ in range(4)]
        times: Dict[str, List[float]] = {name: [] for name in VARIANTS}
        for round_index in range(warmup + repeats):
            shift = round_index % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                model = models[name]
                model.zero_grad(set_to_none=True)
                _synchronize(torch_device)
                start = time.perf_counter()
                training_step(model, *tensors)
                _synchronize(torch_device)
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append({
            "depth": int(depth),
            "naive_s": round(medians["naive"], 4),
            "reversible_s": round(medians["reversible"], 4),
            "checkpoint_s": round(medians["checkpoint"], 4),
            "ratio_reversible_naive": round(medians["reversible"] / medians["naive"], 3),
            "ratio_checkpoint_naive": round(medians["checkpoint"] / medians["naive"], 3),
        })
        del models
    return {"device": describe_device(torch_device), "patch": [batch, 1, patch, patch, patch],
            "ngf": ngf, "repeats": repeats, "rows": rows}


def format_speed_table(result: dict) -> str:
    lines = [f"Generator training step (forward+backward, both directions), median of "
             f"{result['repeats']}, patch {result['patch']}, ngf {result['ngf']}, {result['device']}",
             "depth | naive s | reversible s | checkpoint s | reversible/naive | checkpoint/naive",
             "--- | --- | --- | --- | --- | ---"]
    for row in result["rows"]:
        lines.append(f"{row['depth']} | {row['naive_s']:.3f} | {row['reversible_s']:.3f} | "
                     f"{row['checkpoint_s']:.3f} | {row['ratio_reversible_naive']:.2f}x | "
                     f"{row['ratio_checkpoint_naive']:.2f}x")
    return "\n".join(lines)
