"""Adversarial losses and CycleGAN's history pool of generated images."""

from __future__ import annotations

from typing import List

import torch
from torch import nn


class GANLoss(nn.Module):
    """LSGAN (mean squared error to 1/0) or vanilla GAN (binary cross-entropy on logits)."""

    def __init__(self, kind: str = "lsgan"):
        super().__init__()
        if kind not in ("lsgan", "vanilla"):
            raise ValueError(f"unknown GAN loss {kind!r}")
        self.kind = kind

    def forward(self, scores: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        scores = scores.float()  # losses in float32 also under autocast
        target = torch.ones_like(scores) if target_is_real else torch.zeros_like(scores)
        if self.kind == "lsgan":
            return torch.mean((scores - target) ** 2)
        return nn.functional.binary_cross_entropy_with_logits(scores, target)


class ImagePool:
    """Keeps up to ``size`` generated patches; the discriminator sees, with probability 1/2,
    an older generated patch instead of the newest (CycleGAN), which damps oscillation.

    Randomness comes from a dedicated ``torch.Generator`` so resumed runs continue exactly;
    the pool's content and that generator's state are part of the training checkpoint."""

    def __init__(self, size: int, seed: int = 0):
        self.size = int(size)
        self.images: List[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        chosen = []
        for image in batch.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                chosen.append(image)
            elif torch.rand(1, generator=self.generator).item() < 0.5:
                index = int(torch.randint(len(self.images), (1,), generator=self.generator))
                chosen.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                chosen.append(image)
        return torch.cat(chosen, dim=0)

    # -- checkpointing -----------------------------------------------------------------
    def state_tensors(self, prefix: str) -> dict:
        tensors = {f"{prefix}.rng": self.generator.get_state()}
        if self.images:
            tensors[f"{prefix}.images"] = torch.cat(self.images, dim=0).cpu()
        return tensors

    def load_state_tensors(self, prefix: str, tensors: dict, device: torch.device) -> None:
        self.generator.set_state(tensors[f"{prefix}.rng"])
        images = tensors.get(f"{prefix}.images")
        self.images = [] if images is None else [img.unsqueeze(0).to(device) for img in images]
