"""Per-scan adaptation: fine-tune a copy of a super-resolution model on the scan at hand.

The scan is its own truth one scale up (:mod:`RevGANCore.real_pairs`): its slices degraded
in-plane by the model's in-plane factors are the input, the scan's own slices the target, and
the model's output, averaged over each block of z-factor slices, is compared with them (the
slab term of :meth:`~RevGANCore.objectives.Objective.slab_terms`). A few minutes of this teach
the model the scan's own anatomy, reconstruction kernel and noise in-plane, at the pixel size
twice the scan's: like SMORE (Zhao et al., IEEE TMI 2021) it relies on the image looking alike
across that factor of scale. The detail inside a slab is left to what the model learnt before.

Only the copy changes: the model passed in, and its file, are never modified.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .config import ObjectiveConfig
from .errors import CancelledError, ConfigError
from .modelfile import TranslationModel, check_task
from .objectives import Objective
from .real_pairs import RealScanPairs, slab_patch_size
from .volume import Volume

__all__ = ["ADAPT_PATCH_ZYX", "MAX_ADAPT_SECONDS", "adapt_to_scan", "check_adapt_seconds"]

#: Target patch on the scan's own grid (slices, rows, columns) at most; smaller scans use all of theirs.
ADAPT_PATCH_ZYX = (8, 64, 64)
#: Adam's step size: a tenth of training's, so a short run refines rather than relearns.
ADAPT_LEARNING_RATE = 2e-5
#: The longest adaptation: minutes already give its gain (docs/training.md); a longer run
#: only fits one scan harder, and a larger number is a typo (hours or minutes for seconds).
MAX_ADAPT_SECONDS = 3600.0

Progress = Optional[Callable[[int, int, str], None]]


def _patch_size(volume: Volume, factors_zyx: Sequence[int]) -> tuple:
    """The generator's output patch for the largest target patch (up to :data:`ADAPT_PATCH_ZYX`)
    that fits the scan: whole multiples of the in-plane factors."""
    fz, fy, fx = factors_zyx
    depth = min(ADAPT_PATCH_ZYX[0], volume.shape[0])
    rows = min(ADAPT_PATCH_ZYX[1], volume.shape[1] - volume.shape[1] % fy)
    columns = min(ADAPT_PATCH_ZYX[2], volume.shape[2] - volume.shape[2] % fx)
    rows, columns = rows - rows % (2 * fy), columns - columns % (2 * fx)
    if depth < 1 or rows < 2 * fy or columns < 2 * fx:
        raise ConfigError(f"{volume.source or 'scan'}: {volume.shape[::-1]} voxels (x, y, z) are too few to adapt on")
    return (depth * fz, rows, columns)


def check_adapt_seconds(seconds, what: str = "the adaptation time") -> None:
    """Refuse an adaptation time that is not more than 0 and at most :data:`MAX_ADAPT_SECONDS`."""
    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and np.isfinite(seconds)
            and 0 < seconds <= MAX_ADAPT_SECONDS):
        shown = f"{seconds:g}" if isinstance(seconds, (int, float)) else repr(seconds)
        raise ConfigError(f"{what} is in seconds, more than 0 and at most {MAX_ADAPT_SECONDS:g} (one hour); "
                          f"got {shown}")


def adapt_to_scan(model: TranslationModel, volume: Volume, seconds: float, batch_size: int = 2, seed: int = 0,
                  progress: Progress = None, cancel: Optional[Callable[[], bool]] = None,
                  log: Optional[Callable[[str], None]] = None) -> TranslationModel:
    """A copy of ``model`` fine-tuned for about ``seconds`` (wall clock, at least one step) on
    real-scan pairs of ``volume`` with the slab term; ``model`` itself is untouched.

    ``progress(done_seconds, total_seconds, postfix)`` after each step; ``cancel()`` before
    each step (true: :class:`CancelledError`). The copy's metadata says it was adapted."""
    check_task(model, "super_resolution")
    factors = tuple(model.generator.config.upscale_zyx)
    if factors == (1, 1, 1):
        raise ConfigError(f"{model.name}: adaptation needs a generator that upsamples inside the network "
                          "(architecture 'resize'); this model works on a pre-resampled grid")
    check_adapt_seconds(seconds)
    patch = _patch_size(volume, factors)
    residual = model.generator.config.residual
    pairs = RealScanPairs([volume], factors, patch, region="train", val_slices=0, names=[volume.source or "scan"],
                          seed=seed, samples_per_epoch=max(64, batch_size), clip_to_window=not residual)
    objective = Objective(ObjectiveConfig(lambda_slab=1.0), "super_resolution", factors)
    device = model.device
    generator = copy.deepcopy(model.generator).to(device).train()
    for parameter in generator.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(generator.parameters(), lr=ADAPT_LEARNING_RATE, betas=(0.5, 0.999))
    torch.manual_seed(seed)
    if log is not None:
        log(f"adapting {model.name} to {volume.source or 'the scan'} for {seconds:g} s: patches of "
            f"{slab_patch_size(patch, factors)} voxels (z, y, x), its slices degraded in-plane")
    started, step, first, last = time.perf_counter(), 0, None, None
    while step == 0 or time.perf_counter() - started < seconds:
        if cancel is not None and cancel():
            raise CancelledError(f"adaptation cancelled after {step} steps")
        items = []
        for offset in range(batch_size):
            epoch, index = divmod(step * batch_size + offset, len(pairs))
            pairs.set_epoch(epoch)
            items.append(pairs[index])
        x = torch.stack([item["source"] for item in items]).to(device)
        y = torch.stack([item["target"] for item in items]).to(device)
        loss = objective.slab_terms(generator(x, "forward"), y)["l1"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        last = float(loss.detach())
        first = last if first is None else first
        if progress is not None:
            elapsed = min(int(round(time.perf_counter() - started)), int(np.ceil(seconds)))
            progress(elapsed, int(np.ceil(seconds)), f"slab L1 {last:.4f}")
    generator.eval()
    if log is not None:
        log(f"adapted in {step} steps ({time.perf_counter() - started:.0f} s): slab L1 {first:.4f} -> {last:.4f}")
    caveat = f"adapted for {step} steps to {volume.source or 'one scan'} (in memory; not the file's weights)"
    metadata = replace(model.metadata, caveats="\n".join(text for text in (model.metadata.caveats, caveat) if text))
    return TranslationModel(generator, metadata, model.path)
