"""The linear prior: the least-squares fits (kernel FIR, super-resolution polyphase upsampler)
recover a known filter, the unpaired fit never pairs a case with itself, an untrained
generator IS its prior, tiles still equal the whole volume, a constant stays constant, model
files keep the prior, and training fits it (and resume keeps it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.config import load_config
from RevGANCore.errors import ConfigError
from RevGANCore.generator_config import GeneratorConfig, generator_state_shapes
from RevGANCore.linear_prior import (apply_kernel, apply_upsampler, degraded_pairs, fit_fir_least_squares,
                                     fit_prior_kernels, unpaired_halves)
from RevGANCore.modelfile import load_model, save_model
from RevGANCore.networks import RevGANGenerator3d, receptive_field
from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset
from RevGANCore.tiling import halo_for, plan_tiles, run_tiled
from RevGANCore.training import Trainer
from RevGANCore.upsampler_fit import fit_upsampling_huber
from RevGANCore.volume import Volume

from model_helpers import metadata_for
from training_helpers import tiny_settings, write_config, write_tiny_phantoms


def _textured(seed: int, shape=(6, 40, 44)) -> Volume:
    """Random tissue inside an air frame 8 pixels wide (so replicated borders are air)."""
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[:, 8:-8, 8:-8] = rng.normal(40.0, 150.0, size=(shape[0], shape[1] - 16, shape[2] - 16))
    return Volume(array, (0.8, 0.8, 2.0))


def _blur_kernel() -> np.ndarray:
    rng = np.random.default_rng(7)
    kernel = rng.uniform(0.0, 1.0, size=(5, 5))
    return kernel / kernel.sum()


def test_least_squares_fir_recovers_the_filter_that_made_the_pairs():
    kernel = _blur_kernel()
    sources = [_textured(seed) for seed in range(3)]
    pairs = [(source, apply_kernel(source, kernel)) for source in sources]
    fitted = fit_fir_least_squares(pairs, 5, slice_step=1)
    assert np.abs(fitted - kernel).max() < 1e-4
    wider = fit_fir_least_squares(pairs, 9, slice_step=1)  # extra taps stay at zero
    assert np.abs(wider[2:7, 2:7] - kernel).max() < 1e-4 and np.abs(wider).sum() - np.abs(kernel).sum() < 1e-3


def test_unpaired_prior_uses_disjoint_cases_and_paired_prior_needs_pairs():
    first, second = unpaired_halves(["a", "b", "c", "d", "e"])
    assert first == ["a", "b"] and second == ["c", "d", "e"]
    with pytest.raises(ConfigError, match="at least 2 training cases"):
        unpaired_halves(["a"])
    with pytest.raises(ConfigError, match="differ in shape"):
        fit_fir_least_squares([(_textured(0), _textured(1, shape=(6, 40, 40)))], 3)


def test_unpaired_prior_smooths_like_the_smoother_domain_without_pairs():
    """Sources sharp noise, targets the same kind of noise blurred, never of the same case:
    the spectral-ratio prior lowers the sources' noise towards the targets'."""
    kernel = _blur_kernel()
    big = (6, 80, 80)  # the spectra are measured inside the body, 6 mm from its outline
    sources = [_textured(seed, big) for seed in range(2)]
    targets = [apply_kernel(_textured(seed, big), kernel) for seed in range(10, 12)]
    forward, inverse = fit_prior_kernels(sources, targets, paired=False, taps=7)
    body = (slice(None), slice(16, -16), slice(16, -16))
    filtered = apply_kernel(sources[0], forward).array[body]
    assert abs(forward.sum() - 1.0) < 0.05
    assert filtered.std() < 0.6 * sources[0].array[body].std()
    assert abs(filtered.std() - targets[0].array[body].std()) < 0.25 * targets[0].array[body].std()
    assert np.abs(inverse).max() > np.abs(forward).max()  # the way back sharpens


def _prior_generator(taps: int = 5, seed: int = 0) -> RevGANGenerator3d:
    torch.manual_seed(seed)
    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, residual=True, prior_taps=taps))
    rng = np.random.default_rng(seed)
    forward = rng.uniform(0.0, 1.0, size=(taps, taps))
    inverse = rng.uniform(-0.2, 1.0, size=(taps, taps))
    generator.set_prior(torch.from_numpy(forward / forward.sum()), torch.from_numpy(inverse / inverse.sum()))
    return generator


def test_an_untrained_generator_is_its_prior_in_both_directions():
    generator = _prior_generator().double()
    volume = _textured(3, shape=(4, 24, 26))
    x = torch.from_numpy(volume.array.astype(np.float64))[None, None]
    for direction, buffer in (("forward", generator.prior_forward), ("inverse", generator.prior_inverse)):
        with torch.no_grad():
            out = generator(x, direction)[0, 0].numpy()
        expected = apply_kernel(volume, buffer[0, 0, 0].numpy()).array
        assert np.abs(out - expected).max() < 1e-3  # float32 storage of the expected volume


def test_tiles_equal_the_whole_volume_with_a_prior():
    generator = _prior_generator(taps=7, seed=2)
    for parameter in generator.parameters():  # a trained-looking network: every layer matters
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    field = receptive_field(generator.config)
    assert field.radius == receptive_field(GeneratorConfig(ngf=2, depth=1, residual=True)).radius + 3
    halo = halo_for(field.radius, field.stride)
    shape = (13, 70, 66)
    array = np.random.default_rng(4).uniform(-1, 1, size=shape).astype(np.float32)
    with torch.no_grad():
        whole = generator(torch.from_numpy(array)[None, None], "inverse")[0, 0].numpy()
    plan = plan_tiles(shape, 2 * halo + 8, halo, field.stride)
    assert plan.counts[1] > 1 and plan.counts[2] > 1
    out = np.empty(shape, dtype=np.float32)

    def run(window):
        with torch.no_grad():
            return generator(torch.from_numpy(np.ascontiguousarray(window))[None, None], "inverse")[0, 0]

    run_tiled(run, array, out, plan)
    assert np.abs(out - whole).max() <= 1e-5


def test_model_files_keep_the_prior(tmp_path):
    generator = _prior_generator()
    assert generator_state_shapes(generator.config) == {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    path = save_model(tmp_path / "prior.safetensors", generator, metadata_for("kernel"))
    loaded = load_model(path).generator
    assert loaded.config.prior_taps == 5
    assert torch.equal(loaded.prior_forward, generator.prior_forward)
    assert torch.equal(loaded.prior_inverse, generator.prior_inverse)


@pytest.mark.parametrize("settings,message", [
    ({"prior_taps": 4}, "odd and at least 3"),
    ({"prior_taps": 1}, "odd and at least 3"),
    ({"prior_taps": 65}, "between 0 and 63"),
    ({"prior_taps": 11, "upscale_zyx": (4, 2, 2)}, "at most 9 taps"),
    ({"prior_taps": 3, "upscale_zyx": (4, 2, 2), "in_channels": 2}, "needs in_channels = 1"),
    ({"prior_taps": 5, "architecture": "transposed"}, "needs the 'resize' architecture"),
])
def test_bad_prior_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        GeneratorConfig(**settings)


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_training_fits_the_prior_and_resume_keeps_it(tmp_path, mode):
    # The unpaired fit measures spectra 6 mm inside the body: it needs wider slices than 32^2.
    manifest = (write_tiny_phantoms(tmp_path / "data") if mode == "paired" else
                write_phantom_dataset(tmp_path / "data", cases=3, seed=5, recipe=PhantomRecipe(shape=(16, 96, 96))))
    settings = tiny_settings(manifest, tmp_path / "run", model__generator__prior_taps=5, objective__mode=mode,
                             data__val_cases=[])
    config = load_config(str(write_config(tmp_path / "config.json", settings)))
    lines = []
    Trainer(config, log=lines.append).fit()
    assert any(f"linear prior (5 x 5 in-plane taps): {'least squares on 3 training pairs' if mode == 'paired' else 'spectral ratio'}"
               in line for line in lines), lines
    if mode == "unpaired":
        assert any("case000..case000" in line and "case001..case002" in line for line in lines), lines
    trained = load_model(tmp_path / "run" / "checkpoints" / "step_00000004.model.safetensors").generator
    fitted = trained.prior_forward[0, 0, 0]
    assert abs(float(fitted.sum()) - 1.0) < 0.1 and float(fitted.max()) < 0.9  # a smoothing filter, not the impulse

    resumed = load_config(str(write_config(tmp_path / "config.json", {**settings, "optim": {"iterations": 6,
                                                                                              "decay_start": 0.5}})))
    lines.clear()
    Trainer(resumed, log=lines.append).fit(resume=True)
    assert not any("linear prior" in line for line in lines)  # not refitted: it comes back with the weights
    again = load_model(tmp_path / "run" / "checkpoints" / "step_00000006.model.safetensors").generator
    assert torch.equal(again.prior_forward, trained.prior_forward)
    assert torch.equal(again.prior_inverse, trained.prior_inverse)


SR = (4, 2, 2)


def _sr_generator(taps: int = 3, seed: int = 0) -> RevGANGenerator3d:
    torch.manual_seed(seed)
    return RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, head_channels=2, residual=True,
                                                    upscale_zyx=SR, prior_taps=taps)).double()


def _known_upsampler(taps: int, seed: int = 1) -> torch.Tensor:
    weights = torch.from_numpy(np.random.default_rng(seed).uniform(0.0, 1.0, size=(16, taps, taps, taps)))
    return weights / weights.sum(dim=(1, 2, 3), keepdim=True)  # every phase keeps a constant


def test_fitted_upsampler_recovers_the_one_that_made_the_pairs():
    generator = _sr_generator()
    generator.set_prior(_known_upsampler(3))
    rng = np.random.default_rng(2)
    pairs = []
    for shape in ((5, 7, 6), (4, 9, 8)):
        coarse = rng.normal(size=shape)
        with torch.no_grad():  # untrained residual generator = its upsampling prior
            fine = generator(torch.from_numpy(coarse)[None, None])[0, 0].numpy()
        pairs.append((coarse, fine))
    fitted = fit_upsampling_huber(pairs, SR, 3)
    assert np.abs(fitted - _known_upsampler(3).numpy()).max() < 1e-8
    assert np.allclose(fitted.sum(axis=(1, 2, 3)), 1.0)
    with pytest.raises(ConfigError, match="not \\(4, 2, 2\\) x its coarse"):
        fit_upsampling_huber([(pairs[0][0], pairs[0][1][:-1])], SR, 3)


def _pairs_of_known_upsampler(taps: int, shapes, seed: int):
    generator = _sr_generator()
    generator.set_prior(_known_upsampler(taps))
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in shapes:
        coarse = rng.normal(size=shape)
        with torch.no_grad():
            pairs.append((coarse, generator(torch.from_numpy(coarse)[None, None])[0, 0].numpy()))
    return pairs


def test_huber_upsampler_recovers_the_filter_and_shrugs_off_outliers():
    """Clean pairs: the Huber fit is exact. Pairs where 3% of the fine voxels carry a large
    error (a misregistered edge, a metal streak): least squares is pulled off the filter, the
    Huber fit barely moves."""
    pairs = _pairs_of_known_upsampler(3, ((6, 9, 8), (5, 10, 9)), seed=11)
    truth = _known_upsampler(3).numpy()
    assert np.abs(fit_upsampling_huber(pairs, SR, 3) - truth).max() < 1e-6
    rng = np.random.default_rng(12)
    corrupted = []
    for coarse, fine in pairs:
        spikes = (rng.random(fine.shape) < 0.03) * rng.choice([-4.0, 4.0], size=fine.shape)
        corrupted.append((coarse, fine + spikes + rng.normal(scale=0.01, size=fine.shape)))
    least_squares_error = np.abs(fit_upsampling_huber(corrupted, SR, 3, iterations=1) - truth).max()
    huber = fit_upsampling_huber(corrupted, SR, 3, delta=0.05)
    assert np.abs(huber - truth).max() < least_squares_error / 5
    assert np.allclose(huber.sum(axis=(1, 2, 3)), 1.0)


def test_huber_upsampler_keeps_to_its_row_budget():
    """A sample of at most max_rows neighbourhoods, taken evenly across pairs: the fit from a
    quarter of the rows of clean pairs is still exact."""
    pairs = _pairs_of_known_upsampler(3, ((6, 9, 8), (5, 10, 9)), seed=13)
    rows = sum(coarse.size for coarse, _ in pairs)
    fitted = fit_upsampling_huber(pairs, SR, 3, max_rows=rows // 4)
    assert np.abs(fitted - _known_upsampler(3).numpy()).max() < 1e-6
    with pytest.raises(ConfigError, match="odd number of taps"):
        fit_upsampling_huber(pairs, SR, 4)
    with pytest.raises(ConfigError, match="delta > 0"):
        fit_upsampling_huber(pairs, SR, 3, delta=0.0)


def test_huber_fit_reads_a_lazy_sequence_pair_by_pair_twice():
    """Pairs loaded on access (how training hands real scans to the fit): the same weights as
    from a list, each pair loaded exactly twice (sizes, then samples), in order."""
    from collections.abc import Sequence

    pairs = _pairs_of_known_upsampler(3, ((6, 9, 8), (5, 10, 9), (4, 8, 8)), seed=17)
    loads = []

    class Loading(Sequence):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, index):
            pair = pairs[index]  # past the end: IndexError, how a Sequence's iteration stops
            loads.append(index)
            return pair

    lazy = fit_upsampling_huber(Loading(), SR, 3, max_rows=200)
    assert np.array_equal(lazy, fit_upsampling_huber(pairs, SR, 3, max_rows=200))
    assert loads == [0, 1, 2, 0, 1, 2]


def test_the_bench_upsampler_is_the_untrained_generator():
    """apply_upsampler (the quality bench's row of the paired prior) in HU equals an untrained
    generator with that prior, on the super-resolution grid."""
    from RevGANCore.volume import hu_to_unit, unit_to_hu

    generator = _sr_generator(taps=5)
    weights = _known_upsampler(5, seed=9)
    generator.set_prior(weights)
    volume = _textured(21, shape=(5, 20, 18))
    upsampled = apply_upsampler(volume, weights.numpy(), SR)
    with torch.no_grad():
        unit = hu_to_unit(torch.from_numpy(volume.array.astype(np.float64)), clip=False)
        expected = unit_to_hu(generator(unit[None, None])[0, 0].numpy())
    assert upsampled.shape == (20, 40, 36)
    assert np.abs(upsampled.array - expected).max() < 1e-3
    assert upsampled.spacing == pytest.approx((0.4, 0.4, 0.5))


def test_degraded_pairs_use_the_known_operator_and_recover_its_inverse_on_smooth_volumes():
    """The unpaired super-resolution prior's pairs: high-resolution volumes (cropped to whole
    blocks) and their degradation by the operator of the physics term; an upsampler fitted on
    them brings a smooth volume's degradation back closer than nearest-neighbour repetition."""
    from RevGANCore.tensor_filters import LowResolution

    rng = np.random.default_rng(31)
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in (26, 18, 20)), indexing="ij")
    volumes = [np.sin(3 * z + a) * np.cos(2 * y - b) + 0.5 * x for a, b in rng.uniform(0, 3, size=(3, 2))]
    pairs = degraded_pairs(volumes, SR)
    assert [fine.shape for _, fine in pairs] == [(24, 18, 20)] * 3  # 26 slices: 6 whole blocks of 4
    with torch.no_grad():
        expected = LowResolution(SR)(torch.from_numpy(volumes[0][:24])[None, None])[0, 0].numpy()
    assert np.array_equal(pairs[0][0], expected)
    weights = fit_upsampling_huber(pairs[:2], SR, 3)
    coarse, fine = pairs[2]
    generator = _sr_generator()
    generator.set_prior(torch.from_numpy(weights))
    with torch.no_grad():
        upsampled = generator(torch.from_numpy(coarse)[None, None])[0, 0].numpy()
    nearest = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 2, 1), 2, 2)
    assert np.abs(upsampled - fine).mean() < 0.5 * np.abs(nearest - fine).mean()
    with pytest.raises(ConfigError, match="no whole"):
        degraded_pairs([np.zeros((3, 8, 8))], SR)


def test_a_fitted_upsampler_keeps_a_constant_constant():
    """The constrained fit: even from noisy pairs no phase lifts a uniform region (no checkerboard)."""
    rng = np.random.default_rng(5)
    coarse = rng.normal(size=(6, 8, 8))
    fine = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 2, 1), 2, 2) + rng.normal(scale=0.5, size=(24, 16, 16))
    generator = _sr_generator(taps=5)
    generator.set_prior(torch.from_numpy(fit_upsampling_huber([(coarse, fine)], SR, 5)))
    with torch.no_grad():
        out = generator(torch.full((1, 1, 4, 5, 6), 0.3, dtype=torch.float64))[0, 0]
    assert float((out - 0.3).abs().max()) < 1e-10


def test_the_upsampling_prior_is_the_forward_residual_path_and_tiles_stay_exact():
    generator = _sr_generator(taps=5, seed=4)
    generator.set_prior(_known_upsampler(5, seed=6))
    for parameter in generator.parameters():
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    field = receptive_field(generator.config)
    halo = halo_for(field.radius, field.stride)
    coarse_shape = (11, 29, 27)
    source = np.random.default_rng(3).uniform(-1, 1, coarse_shape)
    with torch.no_grad():
        whole = generator(torch.from_numpy(source)[None, None])[0, 0].numpy()
    plan = plan_tiles(coarse_shape, 2 * halo + 3, halo, field.stride)
    assert plan.counts[1] > 1
    out = np.full(whole.shape, np.nan)

    def run(window):
        with torch.no_grad():
            return generator(torch.from_numpy(np.ascontiguousarray(window))[None, None])[0, 0]

    run_tiled(run, source, out, plan, out_scale=SR)
    assert np.abs(out - whole).max() <= 1e-5  # the tiler hands windows over in float32
    generator.decoder_y.to_image.weight.data.zero_()
    generator.decoder_y.to_image.bias.data.zero_()
    with torch.no_grad():
        prior_only = generator(torch.from_numpy(source)[None, None])[0, 0].numpy()
    block = source[5, 9, 8]  # a fine voxel is its phase's weighted sum of the coarse 5^3 around it
    phase = (1 * 2 + 0) * 2 + 1  # (pz, py, px) = (1, 0, 1)
    expected = float((_known_upsampler(5, seed=6)[phase].numpy() * source[3:8, 7:12, 6:11]).sum())
    assert prior_only[5 * 4 + 1, 9 * 2 + 0, 8 * 2 + 1] == pytest.approx(expected, abs=1e-12) and block == source[5, 9, 8]


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_super_resolution_training_fits_the_upsampling_prior(tmp_path, mode):
    manifest = write_tiny_phantoms(tmp_path / "data")
    settings = tiny_settings(manifest, tmp_path / "run", model__generator__prior_taps=3, objective__mode=mode,
                             data__task="super_resolution", data__val_cases=[])
    lines = []
    Trainer(load_config(str(write_config(tmp_path / "config.json", settings))), log=lines.append).fit()
    expected = ("Huber fit (threshold 0.15 network units) on 3 training pairs" if mode == "paired"
                else "Huber fit on 2 hr volumes (case001..case002) degraded by the known low-resolution operator")
    assert any(f"linear prior (3^3 polyphase upsampler): {expected}" in line for line in lines), lines
    model = load_model(tmp_path / "run" / "checkpoints" / "step_00000004.model.safetensors").generator
    weights = model.prior_upsampling
    assert weights.shape == (16, 1, 3, 3, 3)
    assert torch.allclose(weights.sum(dim=(1, 2, 3, 4)), torch.ones(16, dtype=weights.dtype), atol=1e-5)
    assert float((weights[:, 0, 1, 1, 1] - 1).abs().min()) > 1e-3  # no phase kept the nearest-neighbour start
