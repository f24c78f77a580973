"""Kernel and low-resolution degradations (RevGANCore.degradations)."""

import numpy as np
import pytest

from RevGANCore.degradations import (SHARP_KERNEL, SMOOTH_KERNEL, FWHM_PER_SIGMA, KernelMTF, KernelPair, LowResolution,
                                     RandomKernelPair, RandomLowResolution, RandomReconstruction, Reconstruction,
                                     kernel_oracle, kernel_pair, low_resolution, reconstruct, slice_profile)
from RevGANCore.errors import ConfigError, VolumeError
from RevGANCore.phantom import generate_chest_phantom
from RevGANCore.volume import Volume, super_resolution_grid

SPACING = (0.8, 0.8, 1.25)


@pytest.fixture(scope="module")
def clean():
    return generate_chest_phantom((16, 96, 96), SPACING, seed=2)


def inplane_filter(array, spacing, gain_of_frequency):
    """Reference implementation: FFT each (y, x) slice, multiply, inverse FFT."""
    fy = np.fft.fftfreq(array.shape[1], d=spacing[1])[:, None]
    fx = np.fft.fftfreq(array.shape[2], d=spacing[0])[None, :]
    gain = gain_of_frequency(np.sqrt(fx ** 2 + fy ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(array.astype(np.float64), axes=(1, 2)) * gain, axes=(1, 2)))


# ------------------------------------------------------------------- kernels


def test_kernel_mtfs_have_the_specified_shape():
    assert SMOOTH_KERNEL.f10 == pytest.approx(0.6, abs=1e-3)
    assert SMOOTH_KERNEL.sigma_mm == pytest.approx(0.3416 / 0.6, rel=1e-3)
    assert SHARP_KERNEL.f10 == pytest.approx(0.8, abs=1e-3)
    peak_frequency, peak = SHARP_KERNEL.peak
    assert peak > 1.05 and 0.1 < peak_frequency < 0.5  # edge enhancement at mid frequencies
    assert SMOOTH_KERNEL.peak == (0.0, 1.0)
    f = np.linspace(0.01, 2.0, 400)
    assert np.all(SHARP_KERNEL(f) > SMOOTH_KERNEL(f)) and np.all(SHARP_KERNEL(f) > 0)
    # Because of the overshoot, sharp -> smooth is not a single Gaussian blur: the log of
    # the MTF ratio is not linear in f^2 (it would be for two Gaussian kernels).
    def gaussian_misfit(sharp):
        log_ratio = np.log(SMOOTH_KERNEL(f) / sharp(f))
        fit = np.polyval(np.polyfit(f ** 2, log_ratio, 1), f ** 2)
        return np.abs(log_ratio - fit).max()

    assert gaussian_misfit(SHARP_KERNEL) > 0.05
    assert gaussian_misfit(KernelMTF.gaussian("plain", 0.8)) < 1e-9
    custom = KernelMTF.edge_enhancing("x", 0.7, 1.0, 0.9)
    assert custom.f10 == pytest.approx(0.7, abs=1e-3)


def test_the_kernel_pair_shares_one_noise_realisation(clean):
    sharp, smooth = kernel_pair(clean, seed=11, noise_std_hu=20.0)
    assert sharp.same_geometry(clean) and smooth.same_geometry(clean)
    assert sharp.array.dtype == np.float32
    # The smooth image is exactly the MTF-ratio filter of the sharp one: same raw data.
    np.testing.assert_allclose(kernel_oracle(sharp, pad_mm=0).array, smooth.array, atol=0.02)
    # Their difference is a fixed linear filter of the sharp image...
    ratio = lambda f: SMOOTH_KERNEL(f) / SHARP_KERNEL(f)  # noqa: E731
    expected = inplane_filter(sharp.array, SPACING, lambda f: 1.0 - ratio(f))
    np.testing.assert_allclose(sharp.array - smooth.array, expected, atol=0.02)
    # ...and without noise, a fixed filter (MTF_sharp - MTF_smooth) of the slice-profiled object.
    quiet_sharp, quiet_smooth = kernel_pair(clean, seed=11, noise_std_hu=0.0)
    profiled = slice_profile(clean, SPACING[2]).array
    expected = inplane_filter(profiled, SPACING, lambda f: SHARP_KERNEL(f) - SMOOTH_KERNEL(f))
    np.testing.assert_allclose(quiet_sharp.array - quiet_smooth.array, expected, atol=0.02)
    # The noise fields are one realisation seen through two kernels: strongly correlated.
    noise_sharp = (sharp.array - quiet_sharp.array).ravel()
    noise_smooth = (smooth.array - quiet_smooth.array).ravel()
    assert np.corrcoef(noise_sharp, noise_smooth)[0, 1] > 0.6
    assert noise_smooth.std() == pytest.approx(20.0, rel=0.05)
    assert 1.6 < noise_sharp.std() / noise_smooth.std() < 3.5
    # Independent realisations (other seed) are not related by the filter.
    _, other_smooth = kernel_pair(clean, seed=12, noise_std_hu=20.0)
    assert np.std(kernel_oracle(sharp, pad_mm=0).array - other_smooth.array) > 20.0


def test_noise_power_spectrum_follows_ramp_times_mtf_squared():
    flat = Volume(np.zeros((24, 64, 64), np.float32), SPACING)
    noise = reconstruct(flat, SMOOTH_KERNEL, seed=3, noise_std_hu=20.0).array
    power = np.mean(np.abs(np.fft.fft2(noise, axes=(1, 2))) ** 2, axis=0)
    fy = np.fft.fftfreq(64, d=SPACING[1])[:, None]
    fx = np.fft.fftfreq(64, d=SPACING[0])[None, :]
    radial = np.sqrt(fx ** 2 + fy ** 2)
    model = radial * SMOOTH_KERNEL(radial) ** 2
    bins = np.linspace(0.05, 0.5, 10)
    ratios = [power[(radial >= lo) & (radial < hi)].mean() / model[(radial >= lo) & (radial < hi)].mean()
              for lo, hi in zip(bins[:-1], bins[1:])]
    assert np.max(ratios) / np.min(ratios) < 1.3  # flat ratio: NPS ~ |f| MTF^2
    assert power[0, 0] < 1e-6 * power.max()  # no noise at zero frequency (the ramp)


def test_oracle_with_padding_matches_inside_and_beats_doing_nothing(clean):
    sharp, smooth = kernel_pair(clean, seed=4, noise_std_hu=20.0)
    padded = kernel_oracle(sharp).array
    inner = (slice(None), slice(24, -24), slice(24, -24))
    assert np.abs(padded[inner] - smooth.array[inner]).max() < 1.0
    assert np.abs(padded - smooth.array).mean() < 0.1 * np.abs(sharp.array - smooth.array).mean()


def test_reconstruction_and_classes_are_deterministic(clean):
    first = Reconstruction(SMOOTH_KERNEL, 10.0, seed=1)(clean)
    assert np.array_equal(first.array, reconstruct(clean, SMOOTH_KERNEL, 1, 10.0).array)
    assert not np.array_equal(first.array, reconstruct(clean, SMOOTH_KERNEL, 2, 10.0).array)
    pair = KernelPair(15.0, seed=9)
    a, b = pair(clean)
    np.testing.assert_array_equal(a.array, kernel_pair(clean, 9, 15.0)[0].array)
    random_pair = RandomKernelPair((12.0, 30.0))
    sampled = random_pair.sample(np.random.default_rng(5))
    assert 12.0 <= sampled.noise_std_hu <= 30.0
    assert sampled == random_pair.sample(np.random.default_rng(5))
    np.testing.assert_array_equal(random_pair(clean, seed=5)[1].array, sampled(clean)[1].array)
    recon = RandomReconstruction(noise_std_range_hu=(5.0, 6.0)).sample(np.random.default_rng(0))
    assert 5.0 <= recon.noise_std_hu <= 6.0
    with pytest.raises(ConfigError):
        RandomKernelPair((30.0, 12.0)).sample(np.random.default_rng(0))
    with pytest.raises(ConfigError):
        kernel_pair(clean, 0, noise_std_hu=-1.0)


# ------------------------------------------------------------------- low resolution


def test_low_resolution_factors_and_geometry(clean):
    lr = low_resolution(clean)
    assert lr.shape == (4, 48, 48)
    np.testing.assert_allclose(lr.spacing, (1.6, 1.6, 5.0))
    np.testing.assert_allclose(lr.physical_extent, clean.physical_extent)
    np.testing.assert_allclose(lr.grid.corner(), clean.grid.corner(), atol=1e-12)
    back = super_resolution_grid(lr, (2, 2, 4))
    assert back.shape == clean.shape
    np.testing.assert_allclose(back.spacing, clean.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, clean.origin, atol=1e-9)
    assert back.direction == clean.direction
    with pytest.raises(VolumeError, match="divisible"):
        low_resolution(Volume(np.zeros((6, 8, 8), np.float32)))


def test_low_resolution_on_an_oblique_volume_keeps_its_box():
    angle = 0.4
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    volume = Volume(np.zeros((8, 8, 8), np.float32), (0.5, 0.6, 1.0), (3.0, 4.0, 5.0), direction)
    lr = low_resolution(volume)
    assert lr.direction == volume.direction
    np.testing.assert_allclose(lr.grid.corner(), volume.grid.corner(), atol=1e-12)
    assert super_resolution_grid(lr, (2, 2, 4)).same_as(volume.grid, tolerance=1e-12)


def test_low_resolution_samples_coarse_voxel_centres_without_aliasing():
    z, y, x = np.meshgrid(np.arange(32), np.arange(16), np.arange(16), indexing="ij")
    ramp = Volume((3.0 * z + 0.5 * y).astype(np.float32), (1.0, 1.0, 1.0))
    lr = low_resolution(ramp)
    # A linear ramp is reproduced at the coarse centres (4 i + 1.5 in z, 2 j + 0.5 in y)
    # away from the mirrored edges.
    zc = 4 * np.arange(8) + 1.5
    yc = 2 * np.arange(8) + 0.5
    expected = 3.0 * zc[:, None, None] + 0.5 * yc[None, :, None] + 0 * np.arange(8)[None, None, :]
    np.testing.assert_allclose(lr.array[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-3)
    # A pattern at the fine Nyquist frequency must not alias into the coarse image.
    checker = Volume(np.where(x % 2 == 0, 100.0, -100.0).astype(np.float32), (1.0, 1.0, 1.0))
    assert np.abs(low_resolution(checker).array).max() < 5.0
    constant = Volume(np.full((32, 16, 16), 40.0, np.float32))
    np.testing.assert_allclose(low_resolution(constant).array, 40.0, atol=1e-4)


def test_slice_profile_has_the_requested_width():
    delta = np.zeros((41, 4, 4), np.float32)
    delta[20] = 1.0
    blurred = slice_profile(Volume(delta, (1.0, 1.0, 0.5)), fwhm_mm=3.0).array[:, 0, 0]
    positions = (np.arange(41) - 20) * 0.5
    sigma_mm = np.sqrt(np.sum(blurred * positions ** 2) / np.sum(blurred))
    assert sigma_mm * FWHM_PER_SIGMA == pytest.approx(3.0, rel=0.02)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)


def test_low_resolution_classes(clean):
    fixed = LowResolution((2, 2, 4), slice_thickness_mm=6.0)
    np.testing.assert_array_equal(fixed(clean).array, low_resolution(clean, (2, 2, 4), 6.0).array)
    sampler = RandomLowResolution(thickness_to_spacing_range=(1.0, 1.5))
    chosen = sampler.sample(np.random.default_rng(1), clean)
    assert 5.0 <= chosen.slice_thickness_mm <= 7.5
    np.testing.assert_array_equal(sampler(clean, seed=1).array, chosen(clean).array)
    with pytest.raises(ConfigError):
        low_resolution(clean, (2, 2, 4), slice_thickness_mm=0.0)


# ------------------------------------------------------------------- iterative reconstruction (nonlinear world)


def _step_edge(noise_seed=None, noise_hu=20.0):
    """A 1000 HU vertical step edge (soft tissue | lung-like), plus white noise of noise_hu."""
    array = np.full((4, 64, 64), 40.0, dtype=np.float32)
    array[:, :, 32:] = -850.0
    if noise_seed is not None:
        array += np.random.default_rng(noise_seed).normal(0, noise_hu, array.shape).astype(np.float32)
    return Volume(array, SPACING)


def test_iterative_reconstruction_is_not_linear():
    from RevGANCore.degradations import iterative_reconstruction

    a = _step_edge()
    b = _step_edge(noise_seed=1).array - a.array
    ir = lambda array: iterative_reconstruction(a.with_array(array.astype(np.float32)), 20.0).array  # noqa: E731
    # Measured in the band around the edge, where the edge-preserving prior acts (the noise
    # alone, in flat regions, is smoothed almost linearly): HU, far beyond float rounding.
    band = (slice(None), slice(None), slice(28, 36))
    assert np.abs(ir(a.array + b) - (ir(a.array) + ir(b)))[band].mean() > 0.5
    assert np.abs(ir(2 * a.array) - 2 * ir(a.array))[band].mean() > 4.0


def test_iterative_reconstruction_removes_noise_in_flat_regions_and_keeps_edges():
    from RevGANCore.degradations import IterativeReconstruction

    clean = _step_edge()
    noisy = _step_edge(noise_seed=2)
    result = IterativeReconstruction(20.0)(noisy).array
    error = result - clean.array
    before = noisy.array - clean.array
    flat = (slice(None), slice(None), slice(4, 24))          # soft tissue, far from the edge
    edge = (slice(None), slice(None), slice(30, 34))         # the two columns each side of the step
    reduction_flat = error[flat].std() / before[flat].std()
    reduction_edge = error[edge].std() / before[edge].std()
    assert reduction_flat < 0.6 and reduction_edge > reduction_flat + 0.15
    # The edge itself stays sharp: the step is still ~ 890 HU across 2 pixels.
    profile = result.mean(axis=(0, 1))
    assert profile[30] - profile[33] > 0.9 * 890
    # Deterministic, and a weaker dose (more noise) with the same image smooths no less.
    np.testing.assert_array_equal(IterativeReconstruction(20.0)(noisy).array, result)
