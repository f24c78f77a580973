"""Generator shapes, receptive field and PatchGAN."""

from __future__ import annotations

import pytest
import torch

from RevGANCore.errors import ArchitectureError, ConfigError
from RevGANCore.networks import (DiscriminatorConfig, GeneratorConfig, PatchDiscriminator3d,
                                 RevGANGenerator3d, receptive_field)


def _perturbed_generator(depth: int, encoder_convs: int = 0) -> RevGANGenerator3d:
    model = RevGANGenerator3d(config=GeneratorConfig(ngf=4, depth=depth, encoder_convs=encoder_convs)).double()
    with torch.no_grad():  # zero-initialised convs would hide the core's reach
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("depth, encoder_convs", [(0, 0), (1, 0), (2, 0), (0, 2), (1, 1)])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_receptive_field_radius_is_a_tight_bound(depth, encoder_convs, direction):
    model = _perturbed_generator(depth, encoder_convs)
    radius = receptive_field(model.config).radius
    size = 2 * radius + 9
    x = torch.randn(1, 1, size, size, size, dtype=torch.float64, requires_grad=True)
    centre = size // 2
    for c in (centre, centre + 1):  # even and odd positions relative to the stride
        out = model(x, direction)
        (grad,) = torch.autograd.grad(out[0, 0, c, c, c], x)
        support = grad[0, 0].abs().sum(dim=(1, 2)).nonzero().flatten()
        reach = int(max(c - support.min(), support.max() - c))
        assert reach <= radius
        assert reach >= radius - 1  # the formula is not loose


@pytest.mark.parametrize("shape", [(7, 8, 9), (1, 1, 1), (2, 3, 5), (16, 16, 16)])
def test_generator_keeps_any_input_shape(shape):
    model = RevGANGenerator3d(ngf=4, depth=1)
    x = torch.randn(1, 1, *shape)
    for direction in ("forward", "inverse"):
        assert model(x, direction).shape == x.shape


def test_new_generator_is_identity_when_residual():
    model = RevGANGenerator3d(ngf=4, depth=2, residual=True)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), x) and torch.equal(model(x, "inverse"), x)


@pytest.mark.parametrize("norm, reaches_far_voxels", [("instance", True), ("none", False)])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_instance_norm_makes_every_output_voxel_depend_on_the_whole_volume(norm, reaches_far_voxels, direction):
    config = GeneratorConfig(ngf=4, depth=1, norm=norm)
    model = RevGANGenerator3d(config=config).double().eval()
    # Long in z: the last slice lies 39 voxels from the first, beyond the radius (14) at depth 1.
    x = torch.randn(1, 1, 40, 6, 6, dtype=torch.float64)
    far = x.clone()
    far[0, 0, 0] += 25.0  # the first slice only
    with torch.no_grad():
        out, out_far = model(x, direction), model(far, direction)
    assert out.shape == x.shape and torch.isfinite(out).all()
    last_slice_change = (out_far[0, 0, -1] - out[0, 0, -1]).abs().max().item()
    if reaches_far_voxels:  # per-volume statistics: the first slice moves the last one
        assert last_slice_change > 1e-4
        with pytest.raises(ArchitectureError, match="global receptive field"):
            receptive_field(config)
    else:
        assert last_slice_change == 0.0
        assert receptive_field(config).radius < 39


def test_config_round_trip_and_validation():
    config = GeneratorConfig(ngf=8, depth=3, residual=True)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown generator settings: colour"):
        GeneratorConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="norm"):
        GeneratorConfig(norm="batch")
    with pytest.raises(ConfigError, match="encoder_convs needs the 'resize'"):
        GeneratorConfig(encoder_convs=1, architecture="transposed")
    with pytest.raises(ConfigError, match="encoder_convs must be between 0 and 16"):
        GeneratorConfig(encoder_convs=17)


@pytest.mark.parametrize("in_channels", [1, 2])
def test_patch_discriminator_scores_patches(in_channels):
    config = DiscriminatorConfig(in_channels=in_channels, ndf=4, n_layers=3)
    model = PatchDiscriminator3d(config=config)
    edge = config.min_patch()
    assert model(torch.randn(2, in_channels, edge, edge, edge)).shape == (2, 1, 1, 1, 1)
    assert model(torch.randn(1, in_channels, 32, 32, 32)).shape == (1, 1, 2, 2, 2)
    with pytest.raises(ArchitectureError, match="at least 24"):
        model(torch.randn(1, in_channels, 16, 32, 32))
