"""A few-channel 3D convolution computed tap by tap along depth equals the convolution."""

import pytest
import torch
from torch import nn

from RevGANCore.depth_taps import convolve_by_depth_taps, worth_splitting


@pytest.mark.parametrize("out_channels,kernel,channels_last", [(1, 5, False), (1, 5, True), (2, 3, False)])
def test_equals_the_convolution_in_values_and_gradients(out_channels, kernel, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv3d(6, out_channels, kernel, padding=kernel // 2).double()
    x = torch.randn(2, 6, 7, 9, 8, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    assert worth_splitting(conv)
    split, direct = convolve_by_depth_taps(x, conv), conv(x)
    assert split.shape == direct.shape and torch.allclose(split, direct, atol=1e-12)
    probe = torch.randn_like(direct)
    grads = torch.autograd.grad((split * probe).sum(), [x, conv.weight, conv.bias])
    expected = torch.autograd.grad((direct * probe).sum(), [x, conv.weight, conv.bias])
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-10)


def test_only_plain_few_channel_convolutions_are_split():
    assert not worth_splitting(nn.Conv3d(16, 16, 5, padding=2))  # many outputs: oneDNN is fine
    assert not worth_splitting(nn.Conv3d(16, 1, 1))  # nothing to split along depth
    assert not worth_splitting(nn.Conv3d(16, 1, 5, padding=2, padding_mode="replicate"))
    assert not worth_splitting(nn.Conv3d(16, 1, 5, padding=1))  # changes the size
    assert not worth_splitting(nn.Conv3d(16, 1, 5, padding=2, stride=2))
