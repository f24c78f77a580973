"""A 3D convolution to very few output channels, computed one depth tap at a time.

oneDNN vectorises a convolution over its output channels, so a 5^3 convolution from 16
channels to 1 runs at the same wall time as one to 16 channels (measured on 2 CPU cores:
2.8 GFLOP/s against 41). The first-layout ("transposed") decoders end in exactly such a
convolution, which took 56% of a kernel conversion. Splitting the kernel's depth taps into
output channels -- a (1, k, k) convolution to ``k * out`` channels -- and summing the
depth-shifted results gives the same numbers (to float rounding) ~3x faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

__all__ = ["convolve_by_depth_taps", "worth_splitting"]


def worth_splitting(conv: nn.Conv3d) -> bool:
    """Few output channels, a depth extent to split, and plain settings (stride 1, no
    dilation, no groups, zero padding that keeps the size)."""
    depth = conv.kernel_size[0]
    return (conv.out_channels <= 2 and depth > 1 and conv.stride == (1, 1, 1) and conv.dilation == (1, 1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros"
            and tuple(conv.padding) == tuple(k // 2 for k in conv.kernel_size)
            and all(k % 2 == 1 for k in conv.kernel_size))


def convolve_by_depth_taps(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(x)`` for a convolution :func:`worth_splitting` accepts."""
    out_channels, in_channels, depth = conv.weight.shape[:3]
    # (depth * out, in, 1, kh, kw): output channel t * out + o is tap t of output o.
    taps = conv.weight.permute(2, 0, 1, 3, 4).reshape(depth * out_channels, in_channels, 1,
                                                      *conv.weight.shape[3:])
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        taps = taps.contiguous(memory_format=torch.channels_last_3d)
    half = depth // 2
    per_tap = functional.conv3d(x, taps, None, padding=(half,) + tuple(conv.padding[1:]))
    size = x.shape[2]
    out = per_tap[:, 0:out_channels, 0:size]
    for tap in range(1, depth):
        out = out + per_tap[:, tap * out_channels:(tap + 1) * out_channels, tap:tap + size]
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1, 1, 1)
    return out
