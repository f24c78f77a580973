"""Recorrupted pairs for the kernel task: self-supervised noise reduction without pairs.

A smooth reconstruction kernel, or an iterative reconstruction, removes noise that no linear
filter can remove only where the anatomy is flat. An unpaired run sees no image without that
noise, but it knows the sharp domain's noise power spectrum (measured in flat regions,
:mod:`RevGANCore.noise_power`). Recorrupted-to-recorrupted training (Pang et al., CVPR 2021)
turns that into pairs: with ``z`` drawn with the noise's spectrum and ``x = s + n`` a sharp
patch (``n`` its own noise), ``x1 = x + alpha z`` and ``x2 = x - z / alpha`` carry uncorrelated
noise (``cov(n + alpha z, n - z / alpha) = 0``), so the network fed ``x1`` and asked for
``x2`` under squared error learns ``E[s | x1]``: the noise-free image, never shown to it.

The answer here is not ``x2`` itself but the linear prior's output moved part of the way
towards it, ``P(x1) + a w (P(x2) - P(x1))`` (P the generator's forward prior): the conversion
keeps ``1 - a`` of the noise where the image is flat, and more of it at edges (``w``, from
the input's local in-plane gradient: 1 below the edge threshold, falling as its inverse square
above), as edge-preserving reconstructions do. ``w`` depends on ``x1`` only, so the answer
stays unbiased. Both settings are measured without pairs: ``a`` from the flat-region noise
levels, ``1 - target / P(source)`` (0 when the target domain is as noisy as the prior's
output: FBP kernels, where the prior is already the answer); the edge threshold is the noise
level of the prior's output.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch.nn import functional

from .networks import filter_slices
from .noise_power import NoiseSynthesis

#: x1 = x + ALPHA z, x2 = x - z / ALPHA: the recorruption of Pang et al. (their default 0.5):
#: the network's input is 1.12 times as noisy as a real sharp image.
ALPHA = 0.5


def _inplane_box(tensor: torch.Tensor) -> torch.Tensor:
    """3 x 3 in-plane means, border pixels replicated."""
    padded = functional.pad(tensor, (1, 1, 1, 1, 0, 0), mode="replicate")
    return functional.avg_pool3d(padded, (1, 3, 3), stride=1)


def edge_weight(image: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 where the 3 x 3-smoothed in-plane gradient of ``image`` is below ``threshold``, and
    (threshold / gradient)^2 above it, smoothed by 3 x 3 in-plane means."""
    smoothed = _inplane_box(image)
    along_x = functional.pad(smoothed[..., :, 1:] - smoothed[..., :, :-1], (0, 1))
    along_y = functional.pad(smoothed[..., 1:, :] - smoothed[..., :-1, :], (0, 0, 0, 1))
    gradient = torch.sqrt(along_x * along_x + along_y * along_y).clamp_min(1e-12)
    return _inplane_box((threshold / gradient).pow(2).clamp(max=1.0))


def prior_noise_level(noise: NoiseSynthesis, prior: torch.Tensor) -> float:
    """The standard deviation of ``noise`` after the in-plane ``prior`` (the generator's buffer,
    (1, 1, 1, K, K)), exactly: the norm of the shaping kernel correlated with the prior."""
    kernel = torch.fft.fftshift(noise.kernel).double()
    half = prior.shape[-1] - 1
    padded = functional.pad(kernel[None, None], (half, half, half, half, 0, 0))
    return float(functional.conv3d(padded, prior.detach().cpu().double().reshape(1, 1, 1, *prior.shape[-2:]))
                 .pow(2).sum().sqrt())


class RecorruptedPairs:
    """(source, answer) pairs from sharp patches, in network units (see the module docstring).
    :meth:`calibrate` with the generator's forward prior before the first call."""

    def __init__(self, noise: NoiseSynthesis, target_noise_level: float, alpha: float = ALPHA,
                 source_cases: Sequence[str] = (), target_cases: Sequence[str] = ()):
        self.noise = noise
        self.target_noise_level = float(target_noise_level)
        self.alpha = float(alpha)
        # Where the two noise levels were measured, for the training log.
        self.source_cases, self.target_cases = tuple(source_cases), tuple(target_cases)
        self.noise_reduction: Optional[float] = None  # a
        self.edge_threshold: Optional[float] = None

    def calibrate(self, prior_forward: torch.Tensor) -> Tuple[float, float]:
        """Set ``a`` and the edge threshold from the noise level of the prior's output; returns
        (that level, a)."""
        level = prior_noise_level(self.noise, prior_forward)
        self.noise_reduction = min(1.0, max(0.0, 1.0 - self.target_noise_level / level)) if level > 0 else 0.0
        self.edge_threshold = level
        return level, self.noise_reduction

    def __call__(self, x: torch.Tensor, prior_forward: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.noise_reduction is None:
            raise RuntimeError("RecorruptedPairs.calibrate(prior) must run before pairs are drawn")
        x = x.float()
        z = self.noise.sample(x, generator)
        source = x + self.alpha * z
        # In float32 even under autocast: the answer is a difference of a few HU.
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            kept = filter_slices(source, prior_forward)
            denoised = filter_slices(x - z / self.alpha, prior_forward)
            weight = self.noise_reduction * edge_weight(kept, self.edge_threshold)
            answer = kept + weight * (denoised - kept)
        return source, answer
