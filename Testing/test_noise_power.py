"""A domain's noise measured without pairs (RevGANCore/noise_power.py), and the kernel task's
degraded pairs built from it: on real phantom volumes and on noise of known correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.config import ObjectiveConfig
from RevGANCore.errors import ConfigError
from RevGANCore.kernel_degradation import KernelDegradation
from RevGANCore.linear_prior import fit_spectral_ratio_kernel
from RevGANCore.noise_power import NoiseSynthesis, flat_blocks, noise_power_spectrum
from RevGANCore.objectives import Objective, forward_on_degraded
from RevGANCore.phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case
from RevGANCore.volume import hu_to_unit


def correlated_noise(shape, sigma_zyx, std, seed=0) -> np.ndarray:
    """White noise blurred by a Gaussian of ``sigma_zyx`` voxels (periodic), scaled to ``std``."""
    sigmas = np.broadcast_to(np.asarray(sigma_zyx, dtype=np.float64), (3,))
    frequencies = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    transfer = np.exp(-2.0 * np.pi ** 2 * sum((s * f) ** 2 for s, f in zip(sigmas, frequencies)))
    noise = np.real(np.fft.ifftn(np.fft.fftn(np.random.default_rng(seed).standard_normal(shape)) * transfer))
    return noise * (std / noise.std())


def lag_one_correlation(array: np.ndarray, axis: int) -> float:
    head = np.take(array, range(array.shape[axis] - 1), axis=axis)
    tail = np.take(array, range(1, array.shape[axis]), axis=axis)
    return float(np.corrcoef(head.ravel(), tail.ravel())[0, 1])


def test_flat_blocks_come_from_where_the_anatomy_is_flat():
    """Half the volume is a steep ramp (2 units across a block), half is noise alone (0.05):
    the chosen half of the blocks is the flat half, each with its trend removed."""
    volume = correlated_noise((16, 64, 64), 1.0, 0.05)
    volume[:, :, 32:] += np.linspace(0.0, 4.0, 32)[None, None, :]
    blocks = flat_blocks(volume, (8, 16, 16), fraction=0.5)
    assert len(blocks) == 16  # half of the 2 x 4 x 4 blocks
    assert np.abs(blocks).max() < 0.3  # none holds a piece of the ramp
    assert np.allclose(blocks.mean(axis=(1, 2, 3)), 0.0, atol=1e-12)


def test_measured_spectrum_gives_back_the_noise_level_and_its_correlations():
    """Noise correlated along z and in-plane, under a smooth background: the NPS's mean is its
    variance, and noise drawn with it has the measured level and the true lag-one correlations
    (a block's plain periodogram would lose a quarter of the slice-to-slice one)."""
    truth = correlated_noise((64, 128, 128), (1.0, 0.7, 0.7), 0.05)
    background = np.linspace(-0.3, 0.3, 128)[None, :, None] * np.ones((64, 1, 128))
    power = noise_power_spectrum([truth + background])
    assert np.sqrt(power.mean()) == pytest.approx(0.05, rel=0.05)
    drawn = NoiseSynthesis(power).sample(torch.zeros(4, 1, 24, 48, 48), torch.Generator().manual_seed(1)).numpy()
    assert drawn.std() == pytest.approx(0.05, rel=0.05)
    for axis in (2, 4):  # z and x of (N, C, D, H, W); the truth's axes 0 and 2
        assert lag_one_correlation(drawn, axis) == pytest.approx(lag_one_correlation(truth, axis - 2), abs=0.06)


def test_drawn_noise_is_reproducible_with_a_generator_and_fits_small_patches():
    synthesis = NoiseSynthesis(noise_power_spectrum([correlated_noise((16, 64, 64), 1.0, 0.05)]))
    like = torch.zeros(2, 1, 6, 16, 12)  # smaller than the 8 x 16 x 16 block in z and x
    first = synthesis.sample(like, torch.Generator().manual_seed(3))
    assert first.shape == like.shape and torch.isfinite(first).all()
    assert torch.equal(first, synthesis.sample(like, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, synthesis.sample(like, torch.Generator().manual_seed(4)))


def test_noise_synthesis_refuses_a_negative_spectrum():
    with pytest.raises(ConfigError, match="non-negative 3D noise power spectrum"):
        NoiseSynthesis(-np.ones((8, 16, 16)))


@pytest.fixture(scope="module")
def kernel_cases():
    """Sharp volumes of two cases, the smooth volume of a third (the nonlinear world)."""
    recipe = PhantomRecipe(shape=(32, 96, 96), world="nonlinear")
    return [make_phantom_case(case_seeds(0, k), recipe) for k in (1, 2, 3)]


def unit(volume) -> torch.Tensor:
    return torch.from_numpy(hu_to_unit(volume.array, clip=False))[None, None]


def test_a_degraded_target_has_the_sharp_domains_noise(kernel_cases):
    """A smooth target sharpened by the inverse spectral-ratio filter has a quarter of a sharp
    volume's noise where the anatomy is flat; with the sharp domain's measured noise added it
    has as much, with the same correlation between neighbouring pixels. Nothing is paired: the
    noise comes from case 1, the filter from cases 1 and 3, the comparison is case 2."""
    first, second, third = kernel_cases
    noise = NoiseSynthesis(noise_power_spectrum([hu_to_unit(first["sharp"].array, clip=False)]))
    inverse = torch.from_numpy(fit_spectral_ratio_kernel([third["smooth"]], [first["sharp"]], 11))
    inverse = inverse.reshape(1, 1, 1, 11, 11)  # the generator's buffer layout
    y = unit(third["smooth"])
    sharpened = KernelDegradation(NoiseSynthesis(np.zeros((8, 16, 16))))(y, inverse)[0, 0].numpy()
    degraded = KernelDegradation(noise)(y, inverse, torch.Generator().manual_seed(0))[0, 0].numpy()
    sharp = hu_to_unit(second["sharp"].array, clip=False)

    def flat_noise(array):
        blocks = flat_blocks(array)
        return blocks.std(), lag_one_correlation(blocks, 3)

    (level, correlation), (degraded_level, degraded_correlation) = flat_noise(sharp), flat_noise(degraded)
    assert flat_noise(sharpened)[0] < 0.3 * level
    assert degraded_level == pytest.approx(level, rel=0.1)
    assert degraded_correlation == pytest.approx(correlation, abs=0.05)


def test_kernel_degraded_pairs_run_the_forward_direction_on_degraded_targets(kernel_cases):
    """G(inverse_prior(y) + noise): the generator's own inverse prior, fresh source-domain noise
    from the default generator in training."""
    from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d, filter_slices

    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, prior_taps=3)).eval()
    sharpen = torch.tensor([[0.0, -0.5, 0.0], [-0.5, 3.0, -0.5], [0.0, -0.5, 0.0]])
    generator.set_prior(torch.full((3, 3), 1.0 / 9.0), sharpen)
    noise = NoiseSynthesis(noise_power_spectrum([hu_to_unit(kernel_cases[0]["sharp"].array, clip=False)]))
    objective = Objective(ObjectiveConfig(mode="unpaired", lambda_degraded_pairs=1.0), "kernel",
                          source_noise=noise, prior_taps=3)
    y = unit(kernel_cases[2]["smooth"])[..., :8, 40:56, 40:56]
    x = unit(kernel_cases[0]["sharp"])[..., :8, 40:56, 40:56]
    with torch.no_grad():
        torch.manual_seed(5)
        out = objective.generator_phase(generator)(x, y)
        torch.manual_seed(5)
        expected = generator(filter_slices(y, generator.prior_inverse) + noise.sample(y), "forward")
        fresh = objective.generator_phase(generator)(x, y)
    assert torch.equal(out["fake_degraded"], expected)
    assert not torch.equal(out["fake_degraded"], fresh["fake_degraded"])


def test_kernel_degraded_pairs_need_the_linear_prior():
    with pytest.raises(ConfigError, match="inverse linear prior; set model.generator.prior_taps"):
        Objective(ObjectiveConfig(mode="unpaired", lambda_degraded_pairs=1.0), "kernel")


def test_a_kernel_run_learns_from_degraded_pairs(tmp_path):
    """A tiny unpaired kernel run with the term: it measures the sharp noise in the prior's
    source cases only, logs it, and trains and validates on the degraded pairs."""
    import csv

    from RevGANCore.config import load_config
    from RevGANCore.phantom_dataset import write_phantom_dataset
    from RevGANCore.training import Trainer
    from training_helpers import tiny_settings, write_config

    # Wide slices: the unpaired prior measures spectra 6 mm inside the body.
    manifest = write_phantom_dataset(tmp_path / "data", cases=3, seed=5, recipe=PhantomRecipe(shape=(16, 96, 96)))
    settings = tiny_settings(manifest, tmp_path / "run", model__generator__prior_taps=5, objective__mode="unpaired",
                             objective__lambda_degraded_pairs=10.0)
    lines = []
    Trainer(load_config(str(write_config(tmp_path / "config.json", settings))), log=lines.append).fit()
    measured = [line for line in lines if line.startswith("degraded pairs: sharp noise measured")]
    assert len(measured) == 1 and "of 1 volumes (case000..case000)" in measured[0], lines
    level = float(measured[0].rsplit(", ", 1)[1].split(" HU")[0])
    assert 20.0 < level < 80.0  # the sharp kernel's noise, not anatomy
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    trained = [float(r["g_degraded_pairs"]) for r in rows if r["g_degraded_pairs"]]
    validated = [float(r["val_degraded_pairs"]) for r in rows if r["val_degraded_pairs"]]
    assert trained and len(validated) == 3  # validated at steps 0, 2 and 4
    assert all(np.isfinite(trained)) and all(0.0 < v < 0.2 for v in validated)
