"""Super-resolution inside the network ("resize" generators with upscale_zyx): shapes,
receptive field, exact tiling between grids, no checkerboard, and whole-volume translation
onto the right grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.bench.tiling import randomize_weights
from RevGANCore.errors import ConfigError
from RevGANCore.inference import output_grid, translate
from RevGANCore.modelfile import TranslationModel
from RevGANCore.modelmetadata import ModelMetadata
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d, output_shape, receptive_field
from RevGANCore.tiling import halo_for, plan_tiles, run_tiled
from RevGANCore.volume import low_resolution_grid, super_resolution_grid

from model_helpers import random_volume

SR = (4, 2, 2)


def _generator(upscale=SR, ngf=3, depth=1, head=3, seed=0, architecture="resize", residual=False):
    config = GeneratorConfig(ngf=ngf, depth=depth, head_channels=head, upscale_zyx=upscale,
                             architecture=architecture, residual=residual)
    return randomize_weights(RevGANGenerator3d(config=config), seed).eval()


def _run(generator, array, direction):
    with torch.no_grad():
        return generator(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None],
                         direction)[0, 0].numpy()


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (8, 8, 8)])
def test_forward_multiplies_and_inverse_divides_the_grid(shape):
    generator = _generator()
    high = _run(generator, np.zeros(shape), "forward")
    assert high.shape == tuple(n * f for n, f in zip(shape, SR)) == output_shape(generator.config, shape)
    low = _run(generator, high, "inverse")
    assert low.shape == shape
    odd = _run(generator, np.zeros((5, 3, 3)), "inverse")  # incomplete blocks still give a coarse voxel
    assert odd.shape == (2, 2, 2) == output_shape(generator.config, (5, 3, 3), "inverse")


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_radius_bounds_the_reach_in_coarse_voxels_along_every_axis(depth, direction):
    generator = _generator(depth=depth, ngf=2, head=2).double()
    radius = receptive_field(generator.config).radius
    coarse = (2 * radius + 7,) * 3
    shape = coarse if direction == "forward" else tuple(n * f for n, f in zip(coarse, SR))
    x = torch.randn(1, 1, *shape, dtype=torch.float64, requires_grad=True)
    reach = [0, 0, 0]
    for shift in range(4):  # every position inside a block of fine voxels
        out = generator(x, direction)
        centre = [n // 2 + shift for n in out.shape[2:]]
        (grad,) = torch.autograd.grad(out[0, 0, centre[0], centre[1], centre[2]], x)
        for axis, f in enumerate(SR):
            others = tuple(a for a in range(3) if a != axis)
            support = grad[0, 0].abs().sum(dim=others).nonzero().flatten()
            low, high = int(support.min()), int(support.max())
            if direction == "forward":  # output block index vs input (coarse) voxels
                block = centre[axis] // f
            else:  # output coarse voxel vs input fine voxels, counted in blocks
                block, low, high = centre[axis], low // f, high // f
            reach[axis] = max(reach[axis], block - low, high - block)
    assert max(reach) <= radius
    if direction == "forward":  # the longer chain: the bound is not loose
        assert max(reach) >= radius - 1


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("coarse_shape,windows", [((13, 21, 18), [17, (13, 17, 30)]), ((6, 9, 11), [40])])
def test_tiles_across_grids_equal_the_whole_volume(direction, coarse_shape, windows):
    generator = _generator(depth=1, seed=sum(coarse_shape))
    field = receptive_field(generator.config)
    halo = halo_for(field.radius, field.stride)
    rng = np.random.default_rng(3)
    if direction == "forward":
        source = rng.uniform(-1, 1, coarse_shape).astype(np.float32)
        scales = {"out_scale": SR}
        out_shape = tuple(n * f for n, f in zip(coarse_shape, SR))
    else:  # a fine volume whose last blocks are incomplete
        source = rng.uniform(-1, 1, tuple(n * f - 1 for n, f in zip(coarse_shape, SR))).astype(np.float32)
        scales = {"source_scale": SR}
        out_shape = coarse_shape
    whole = _run(generator, source, direction)
    assert whole.shape == out_shape
    for window in windows:
        plan = plan_tiles(coarse_shape, window, halo, field.stride)
        out = np.full(out_shape, np.nan, dtype=np.float32)
        run_tiled(lambda w: torch.from_numpy(_run(generator, w, direction)), source, out, plan, **scales)
        assert np.isfinite(out).all()
        assert np.abs(out - whole).max() <= 1e-5, plan.describe()


def _nyquist_rms(response: np.ndarray) -> float:
    """Root-mean-square amplitude (normalised units; 1.0 = 750 HU) of the response's
    period-2 component along each axis (its Nyquist planes, by Parseval)."""
    spectrum = np.abs(np.fft.fftn(response - response.mean())) ** 2
    nyquist = sum(spectrum.take([n // 2], axis=a).sum() for a, n in enumerate(response.shape))
    return float(np.sqrt(nyquist) / response.size)


def test_no_checkerboard_on_a_constant_volume_unlike_transposed_convolutions():
    constant = np.full((9, 12, 11), 0.3, dtype=np.float32)
    for generator in (_generator(), _generator(upscale=(1, 1, 1))):
        for direction in ("forward", "inverse"):
            out = _run(generator, constant, direction)
            # constant everywhere, faces included: no period-2 pattern (float rounding:
            # below 1e-4 HU) and no border effect
            assert np.ptp(out) < 1e-5 and _nyquist_rms(out) < 1e-7
    transposed = _generator(upscale=(1, 1, 1), architecture="transposed")
    out = _run(transposed, constant, "forward")[2:-2, 2:-2, 2:-2]
    assert _nyquist_rms(out) > 1e-3  # the pattern this layout avoids (> 0.75 HU)


def test_translate_super_resolves_onto_the_fine_grid_and_back():
    generator = _generator(depth=1, residual=True, seed=5)
    metadata = ModelMetadata(task="super_resolution", domains={"x": "lr", "y": "hr"}, scale_factors_xyz=SR[::-1],
                             generator=generator.config.to_dict(), name="tiny-sr")
    model = TranslationModel(generator, metadata)
    volume = random_volume((7, 10, 9), seed=2)
    fine = translate(model, volume, "forward", tile_size=(13, 13, 13), device="cpu")
    expected = super_resolution_grid(volume, SR[::-1])
    assert fine.grid.same_as(expected) and output_grid(model, volume).same_as(expected)
    whole = translate(model, volume, "forward", device="cpu")
    assert np.abs(fine.array - whole.array).max() < 1e-3
    coarse = translate(model, fine, "inverse", device="cpu", out_dtype="int16")
    assert coarse.array.dtype == np.int16
    assert coarse.grid.same_as(low_resolution_grid(fine, SR[::-1]))
    assert np.allclose(coarse.origin, volume.origin) and np.allclose(coarse.spacing, volume.spacing)


def test_metadata_refuses_an_upscale_that_disagrees_with_the_factors():
    config = GeneratorConfig(upscale_zyx=(4, 2, 2))
    with pytest.raises(ConfigError, match="must agree"):
        ModelMetadata(task="super_resolution", domains={"x": "lr", "y": "hr"}, scale_factors_xyz=(2, 2, 2),
                      generator=config.to_dict())
    with pytest.raises(ConfigError, match="cannot upsample"):
        GeneratorConfig(upscale_zyx=(2, 2, 2), architecture="transposed")
    old_file = {k: v for k, v in GeneratorConfig().to_dict().items()
                if k not in ("architecture", "upscale_zyx", "head_channels")}
    assert GeneratorConfig.from_dict(old_file).architecture == "transposed"  # files from before "resize"


def test_super_resolve_command_writes_the_fine_grid_with_an_upsampling_model(tmp_path):
    from RevGANCore.cli import main
    from RevGANCore.modelfile import save_model
    from RevGANCore.volume_io import read_volume, write_volume

    generator = _generator(depth=1, residual=True, seed=8)
    with torch.no_grad():  # CT-like output: the input plus a small random change
        generator.decoder_y.to_image.weight.mul_(0.1)
        generator.decoder_y.to_image.bias.mul_(0.1)
    metadata = ModelMetadata(task="super_resolution", domains={"x": "lr", "y": "hr"}, scale_factors_xyz=SR[::-1],
                             generator=generator.config.to_dict(), name="tiny-sr-inside")
    model_path = save_model(tmp_path / "sr.safetensors", generator, metadata)
    source = random_volume((6, 14, 12), seed=4)
    input_path = write_volume(source, tmp_path / "ct.nrrd")
    out = tmp_path / "sr.nii.gz"
    assert main(["super-resolve", str(input_path), str(out), "--model", str(model_path), "--quiet",
                 "--device", "cpu"]) == 0
    result = read_volume(out)
    assert result.shape == (24, 28, 24) and np.array_equal(result.array, np.rint(result.array))  # int16 file
    assert result.grid.same_as(super_resolution_grid(source, SR[::-1]))
