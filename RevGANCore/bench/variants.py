"""The three ways to run the generator's core that the benchmarks compare.

- "reversible": the memory-saving ReversibleSequence (keeps only the core's output);
- "naive": the same blocks through plain autograd (keeps every intermediate);
- "checkpoint": plain blocks, each wrapped in ``torch.utils.checkpoint`` (keeps each block's
  input and recomputes the block in backward), what a user would otherwise reach for.
All three share weights, so their outputs and gradients are the same.
"""

from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..networks import RevGANGenerator3d

VARIANTS = ("naive", "reversible", "checkpoint")


class CheckpointedCore(nn.Module):
    """Drop-in for ``ReversibleSequence`` that checkpoints each block instead."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            # Reentrant checkpointing saves the block input through save_for_backward, so the
            # saved-tensor hooks of the memory benchmark see it.
            x = checkpoint(block, x, use_reentrant=True)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = checkpoint(block.inverse, y, use_reentrant=True)
        return y


def build_variants(ngf: int, depth: int, device: torch.device, seed: int = 0) -> Dict[str, nn.Module]:
    torch.manual_seed(seed)
    reversible = RevGANGenerator3d(ngf=ngf, depth=depth, memory_saving=True).to(device)
    naive = copy.deepcopy(reversible)
    naive.core.memory_saving = False
    checkpointed = copy.deepcopy(reversible)
    checkpointed.core = CheckpointedCore(checkpointed.core.blocks)
    return {"naive": naive, "reversible": reversible, "checkpoint": checkpointed}


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  upstream_x: torch.Tensor, upstream_y: torch.Tensor) -> None:
    """Generator forward and backward in both directions (G: X->Y and F: Y->X), as training
    does, with fixed random upstream gradients standing in for the losses."""
    out_y = model(x, "forward")
    out_x = model(y, "inverse")
    loss = (out_y * upstream_y).sum() + (out_x * upstream_x).sum()
    loss.backward()
