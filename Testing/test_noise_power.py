"""A domain's noise measured without pairs (RevGANCore/noise_power.py): on real phantom volumes
and on noise of known correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.errors import ConfigError
from RevGANCore.noise_power import NoiseSynthesis, flat_blocks, noise_power_spectrum


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
