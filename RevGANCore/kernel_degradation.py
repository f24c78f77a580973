"""Degraded pairs for the kernel task, without pairs: a smooth target patch made a sharp source.

Super-resolution knows its degradation (the slice profile and in-plane blur); a kernel
conversion does not, but an unpaired run knows two things about the sharp domain without
pairing anything: the inverse linear prior (the spectral ratio from smooth to sharp volumes of
different cases, :mod:`RevGANCore.linear_prior`) and the sharp volumes' noise, measured in their
flat regions (:mod:`RevGANCore.noise_power`). A target patch y, sharpened by the inverse prior,
plus such noise, is a source whose answer is y: the network learns to remove sharp-kernel noise
while keeping what the smooth reconstruction kept (edges, its own texture), which a linear
filter cannot do. The pair is approximate (y's own noise is sharpened too; the smooth
reconstruction of that source would not be y exactly), which is why it sits beside the
adversarial and cycle terms rather than replacing them.
"""

from __future__ import annotations

from typing import Optional

import torch

from .networks import filter_slices
from .noise_power import NoiseSynthesis


class KernelDegradation:
    """y -> inverse_prior(y) + source-domain noise, in network units."""

    def __init__(self, noise: NoiseSynthesis):
        self.noise = noise

    def __call__(self, y: torch.Tensor, inverse_kernel: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        sharpened = filter_slices(y.float(), inverse_kernel)
        return sharpened + self.noise.sample(sharpened, generator)
