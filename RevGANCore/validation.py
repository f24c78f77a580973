"""Validation during training, on patches of the held-out validation cases.

Logged every time: L1 (normalised units) and PSNR (data range 2) of both directions against
the paired validation target, the input's own L1 to the target, and the pair-free criterion
of :meth:`RevGANCore.objectives.Objective.pair_free_criterion` (val_physics, val_spectrum,
val_unpaired). Which one chooses ``best.safetensors`` is ``checkpoint.best_metric``; "auto"
lets pairs decide paired runs and only the pair-free criterion decide unpaired runs, which
in real use have no pairs. Test cases decide nothing. With real-scan pairs,
:func:`validate_real` adds the slab term on the scans' held-out slices (val_real_l1,
val_real_psnr).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .objectives import Objective, forward_on_degraded, forward_on_recorrupted
from .tensor_filters import on_grid
from .training_models import TrainingModels

#: Metrics for which a higher value is better; every other one is better when lower.
HIGHER_IS_BETTER = ("val_psnr", "val_real_psnr")


def best_metric_name(setting: str, paired: bool) -> str:
    if setting == "auto":
        return "val_l1" if paired else "val_unpaired"
    return setting


def is_better(metric: str, value: float, best: Optional[float]) -> bool:
    """Whether ``value`` of ``metric`` beats the best so far (None: nothing yet)."""
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


@torch.no_grad()
def validate(models: TrainingModels, objective: Objective, batches: Sequence[Tuple[torch.Tensor, torch.Tensor]],
             channels_last: bool = False) -> Dict[str, float]:
    if not batches:
        return {}
    generator = models.generator
    generator.eval()
    sums = {"val_l1": 0.0, "val_mse": 0.0, "val_l1_inverse": 0.0, "val_l1_input": 0.0}
    count = 0
    collected: Dict[str, List[torch.Tensor]] = {"x": [], "y": [], "fake_y": [], "fake_x": [], "fake_degraded": [],
                                                "fake_recorrupted": [], "recorrupted_answer": []}
    noise = torch.Generator().manual_seed(0)  # the kernel task's recorrupted pairs: the same noise every time
    for x, y in batches:
        x, y = models.to_device(x, channels_last), models.to_device(y, channels_last)
        with models.autocast():
            fake_y = generator(x, "forward").float()
            fake_x = generator(y, "inverse").float()
        n = x.shape[0]
        sums["val_l1"] += float((fake_y - y).abs().mean()) * n
        sums["val_mse"] += float(((fake_y - y) ** 2).mean()) * n
        sums["val_l1_inverse"] += float((fake_x - x).abs().mean()) * n
        sums["val_l1_input"] += float((on_grid(x, y.shape[2:]) - y).abs().mean()) * n
        count += n
        for key, value in (("x", x), ("y", y), ("fake_y", fake_y), ("fake_x", fake_x)):
            collected[key].append(value.float())
        if objective.uses_degraded_pairs:
            with models.autocast():
                collected["fake_degraded"].append(forward_on_degraded(generator, objective.pair_degradation, y).float())
        if objective.recorrupted_pairs is not None:
            with models.autocast():
                fake, answer = forward_on_recorrupted(generator, objective.recorrupted_pairs, x, noise)
            collected["fake_recorrupted"].append(fake.float())
            collected["recorrupted_answer"].append(answer.float())
    generator.train()
    metrics = {key: value / count for key, value in sums.items()}
    metrics["val_psnr"] = 10.0 * math.log10(4.0 / max(metrics.pop("val_mse"), 1e-12))
    whole = {key: torch.cat(values) for key, values in collected.items() if values}
    recorrupted = (whole["fake_recorrupted"], whole["recorrupted_answer"]) if "fake_recorrupted" in whole else None
    metrics.update(objective.pair_free_criterion(whole["x"], whole["y"], whole["fake_y"], whole["fake_x"],
                                                 whole.get("fake_degraded"), recorrupted))
    return metrics


@torch.no_grad()
def validate_real(models: TrainingModels, objective: Objective, batches: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                  channels_last: bool = False) -> Dict[str, float]:
    """The slab term (:meth:`Objective.slab_terms`) of the forward direction on held-out
    real-scan patches: mean absolute error and PSNR (data range 2) in network units."""
    if not batches:
        return {}
    generator = models.generator
    generator.eval()
    l1 = mse = 0.0
    count = 0
    for x, y in batches:
        x, y = models.to_device(x, channels_last), models.to_device(y, channels_last)
        with models.autocast():
            fake = generator(x, "forward").float()
        terms = objective.slab_terms(fake, y)
        l1 += float(terms["l1"]) * x.shape[0]
        mse += float(terms["mse"]) * x.shape[0]
        count += x.shape[0]
    generator.train()
    return {"val_real_l1": l1 / count, "val_real_psnr": 10.0 * math.log10(4.0 / max(mse / count, 1e-12))}
