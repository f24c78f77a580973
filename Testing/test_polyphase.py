"""The decoder's head on the core grid (polyphase convolution) equals trilinear upsampling
followed by the 3^3 convolution on the output grid: values and gradients, for the
super-resolution and same-grid factors, odd sizes included."""

import pytest
import torch

from RevGANCore.generator_config import GeneratorConfig
from RevGANCore.networks import RevGANGenerator3d, upsample_image
from RevGANCore.polyphase import interpolation_taps


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_taps_are_trilinear_weights_that_sum_to_one(factor):
    taps = interpolation_taps(factor)
    assert torch.allclose(taps.sum(dim=2), torch.ones(factor, 3, dtype=torch.float64))
    # Upsampling a ramp gives the ramp at fine centres: the taps reproduce position.
    positions = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    for phase in range(factor):
        for tap in range(3):
            expected = (phase + tap - 1 + 0.5) / factor - 0.5
            assert float(taps[phase, tap] @ positions) == pytest.approx(expected)


def _random_decoder(factors, seed=0):
    torch.manual_seed(seed)
    config = GeneratorConfig(ngf=4, depth=1, head_channels=3, residual=True, upscale_zyx=factors)
    generator = RevGANGenerator3d(config=config).double()
    decoder = generator.decoder_y
    for module in (decoder.reduce, decoder.refine, decoder.to_image):
        torch.nn.init.normal_(module.weight, std=0.5)
        torch.nn.init.normal_(module.bias, std=0.2)
    return decoder


@pytest.mark.parametrize("factors,fine_shape", [((4, 2, 2), (13, 10, 7)), ((4, 2, 2), (16, 8, 8)),
                                                ((1, 1, 1), (5, 6, 7)), ((2, 3, 1), (7, 9, 4))])
def test_head_on_core_grid_equals_upsample_then_convolve(factors, fine_shape):
    decoder = _random_decoder(factors)
    core_shape = tuple(-(-n // f) for n, f in zip(fine_shape, factors))
    features = torch.randn((1, decoder.reduce.in_channels) + core_shape, dtype=torch.float64, requires_grad=True)
    extended = torch.nn.functional.pad(torch.nn.functional.silu(decoder.reduce(features)), (1, 1) * 3,
                                       mode="replicate")
    fast = decoder._head_on_core_grid(extended, fine_shape)
    reference = decoder._head_on_output_grid(extended, fine_shape)
    assert fast.shape == reference.shape == (1, 1) + fine_shape
    assert torch.allclose(fast, reference, atol=1e-10)
    probe = torch.randn_like(reference)
    fast_grads = torch.autograd.grad((fast * probe).sum(), [features, decoder.refine.weight, decoder.to_image.weight],
                                     retain_graph=True)
    reference_grads = torch.autograd.grad((reference * probe).sum(),
                                          [features, decoder.refine.weight, decoder.to_image.weight])
    for fast_grad, reference_grad in zip(fast_grads, reference_grads):
        assert torch.allclose(fast_grad, reference_grad, atol=1e-9)


def test_inference_uses_the_core_grid_head_and_matches_training_mode():
    """Under no_grad the SiLU runs in place; the whole generator gives the same output."""
    torch.manual_seed(1)
    config = GeneratorConfig(ngf=4, depth=1, head_channels=3, residual=True, upscale_zyx=(4, 2, 2))
    generator = RevGANGenerator3d(config=config)
    torch.nn.init.normal_(generator.decoder_y.to_image.weight, std=0.5)
    low = torch.randn(1, 1, 3, 5, 4)
    with_grad = generator(low)
    with torch.no_grad():
        without = generator(low)
    assert torch.allclose(with_grad, without, atol=1e-6)
    reference = upsample_image(low, (4, 2, 2))
    assert not torch.allclose(without, reference, atol=1e-3)  # the head does contribute
