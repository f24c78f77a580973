"""Trilinear upsampling followed by a 3^3 convolution, computed on the coarse grid.

Both steps are linear, so for each of the ``fz * fy * fx`` positions ("phases") a fine voxel
can take inside its coarse block, the pair is one 3^3 convolution over the coarse grid with
its own weights. Computing all phases as the output channels of a single convolution on the
coarse grid gives the same numbers (to float rounding) as upsampling then convolving, but
never materialises the upsampled features: on a CPU those memory-bound passes (interpolation,
crop, a conv with few channels on a 16x larger grid) took ~60% of a super-resolution
(``revgan bench inference``). A pixel shuffle then interleaves the phases of the small
final image.

Geometry is that of :func:`networks.upsample_image` (cell-centred, ``align_corners=False``)
on a coarse grid that has been extended by one replicated voxel on every side, as in the
decoder's reference path.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

__all__ = ["interpolation_taps", "phase_weights", "interleave_phases"]


def interpolation_taps(factor: int) -> torch.Tensor:
    """``taps[k, t, a]``: the weight of coarse neighbour ``a - 1`` (-1, 0 or +1 blocks away)
    in the trilinearly upsampled value at fine position ``k + t - 1`` of a block, for phase
    ``k`` (0 .. factor-1) and conv tap ``t`` (0, 1, 2 for offsets -1, 0, +1). float64."""
    taps = torch.zeros(factor, 3, 3, dtype=torch.float64)
    for phase in range(factor):
        for tap in range(3):
            # Coarse coordinate of the fine voxel's centre, relative to its block.
            source = (phase + tap - 1 + 0.5) / factor - 0.5
            low = math.floor(source)
            upper_weight = source - low
            for neighbour, weight in ((low, 1.0 - upper_weight), (low + 1, upper_weight)):
                if weight:
                    taps[phase, tap, neighbour + 1] += weight
    return taps


def phase_weights(weight: torch.Tensor, bias: torch.Tensor, factors: Sequence[int]
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The coarse-grid convolution (weight ``(P * out, in, 3, 3, 3)``, bias ``(P * out,)``,
    phases z-major then y then x, each phase's ``out`` channels together) equal to
    trilinear upsampling by ``factors`` (z, y, x) followed by the 3^3 convolution
    ``weight``/``bias`` on the fine grid. Differentiable in ``weight`` and ``bias``."""
    fz, fy, fx = (int(f) for f in factors)
    if tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(f"phase_weights needs a 3^3 convolution, got kernel {tuple(weight.shape[2:])}")
    # In the weights' own precision (at least float32): float64 is missing on some devices (MPS).
    dtype = torch.promote_types(weight.dtype, torch.float32)
    taps = [interpolation_taps(f).to(device=weight.device, dtype=dtype) for f in (fz, fy, fx)]
    combined = torch.einsum("oidhw,kda,lhb,mwc->klmoiabc", weight.to(dtype), *taps)
    out_channels, in_channels = weight.shape[:2]
    phases = fz * fy * fx
    return (combined.reshape(phases * out_channels, in_channels, 3, 3, 3).to(weight.dtype),
            bias.repeat(phases))


def interleave_phases(phased: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """``(N, P * C, D, H, W)`` with phases ordered as in :func:`phase_weights` ->
    ``(N, C, D * fz, H * fy, W * fx)``: a 3D pixel shuffle."""
    fz, fy, fx = (int(f) for f in factors)
    n, channels, depth, height, width = phased.shape
    c = channels // (fz * fy * fx)
    grouped = phased.view(n, fz, fy, fx, c, depth, height, width)
    return grouped.permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(n, c, depth * fz, height * fy, width * fx)
