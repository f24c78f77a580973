"""Physically grounded CT degradations: reconstruction kernels with shaped noise, and low
resolution (thick slices, larger pixels).

Three layers, as in TorchIO: pure functions do the work (``kernel_pair``,
``reconstruct``, ``low_resolution``, ``kernel_oracle``); small deterministic classes hold
their parameters plus a seed (``KernelPair``, ``Reconstruction``, ``LowResolution``); random
classes sample those parameters (``RandomKernelPair``, ``RandomReconstruction``,
``RandomLowResolution``). Everything is deterministic given its seed and never modifies
its input.

Physics, in brief (docs/data.md has the numbers):
- A filtered-back-projection kernel acts in-plane as a modulation transfer function
  (MTF). Smooth (B30f-like): Gaussian, 10 % MTF at 0.6 /mm. Sharp (B50f-like): 10 % MTF
  at 0.8 /mm and an edge-enhancing rise above 1 at mid frequencies (a difference of
  Gaussians), as real sharp kernels have. Without that overshoot the sharp-to-smooth map
  would be one Gaussian blur and no learned model could beat it.
- Noise: FBP filters projection noise with the ramp |f| and the kernel, so its power
  spectrum is NPS(f) ~ |f| MTF(f)^2 in-plane; along z it is correlated by the slice
  sensitivity profile. The sharp and smooth images of one case are two reconstructions
  of the same raw data: ONE noise realisation, filtered by each kernel. Hence the smooth
  image is exactly the MTF-ratio filter of the sharp one (``kernel_oracle``).
- Low resolution: a Gaussian slice sensitivity profile (FWHM = slice thickness) along z
  and a Gaussian in-plane blur (FWHM = the new pixel size), each followed by decimation,
  with output samples at the centres of the coarse voxels, so the coarse grid covers
  exactly the same box as the fine one.
- Iterative reconstruction (the "nonlinear world"): the smooth side can instead be an
  iterative / model-based-like image, ``iterative_reconstruction`` of the FBP one: a fixed
  number of accelerated gradient steps on a penalised least-squares objective with an
  edge-preserving Huber prior between in-plane neighbours. It removes noise in flat regions,
  keeps edges whose contrast is well above the noise, blurs low-contrast detail, and leaves a
  coarser (blotchy) noise texture; lower dose (more noise) raises the contrast it needs. It is
  not linear: the map sharp -> smooth is then no filter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError, VolumeError
from .volume import Volume, low_resolution_grid

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.3548
# sigma (mm) of a Gaussian MTF whose value at f10 (1/mm) is 0.1: sqrt(ln 10 / 2) / pi.
SIGMA_TIMES_F10 = float(np.sqrt(np.log(10.0) / 2.0) / np.pi)  # 0.3416


# =========================================================================== kernels


@dataclass(frozen=True)
class KernelMTF:
    """In-plane MTF of a reconstruction kernel, f in cycles/mm:
    ``MTF(f) = (1 + w) G(f; sigma) - w G(f; overshoot_sigma)`` with
    ``G(f; s) = exp(-2 pi^2 s^2 f^2)`` (the transform of a Gaussian PSF of s mm). With
    ``w = 0`` it is a plain Gaussian; with ``w > 0`` and a wider subtracted Gaussian it
    rises above 1 at mid frequencies (edge enhancement) and stays positive everywhere."""

    name: str
    sigma_mm: float
    overshoot_weight: float = 0.0
    overshoot_sigma_mm: float = 0.0

    def __call__(self, frequency) -> np.ndarray:
        f2 = np.asarray(frequency, dtype=np.float64) ** 2
        main = np.exp(-2.0 * np.pi ** 2 * self.sigma_mm ** 2 * f2)
        if self.overshoot_weight == 0.0:
            return main
        wide = np.exp(-2.0 * np.pi ** 2 * self.overshoot_sigma_mm ** 2 * f2)
        return (1.0 + self.overshoot_weight) * main - self.overshoot_weight * wide

    @property
    def f10(self) -> float:
        """Frequency (1/mm) where the MTF falls to 0.1."""
        return _first_crossing(self, 0.1)

    @property
    def f50(self) -> float:
        return _first_crossing(self, 0.5)

    @property
    def peak(self) -> Tuple[float, float]:
        """(frequency, value) of the MTF maximum; value > 1 means edge enhancement."""
        f = np.linspace(0.0, 2.0, 4001)
        values = self(f)
        best = int(np.argmax(values))
        return float(f[best]), float(values[best])

    @staticmethod
    def gaussian(name: str, f10: float) -> "KernelMTF":
        return KernelMTF(name, SIGMA_TIMES_F10 / f10)

    @staticmethod
    def edge_enhancing(name: str, f10: float, overshoot_weight: float, overshoot_sigma_mm: float) -> "KernelMTF":
        """A difference-of-Gaussians MTF; its main sigma is solved so that MTF(f10) = 0.1."""
        low, high = 1e-3, 5.0
        for _ in range(80):  # bisection: a larger sigma gives a lower f10
            middle = (low + high) / 2
            trial = KernelMTF(name, middle, overshoot_weight, overshoot_sigma_mm)
            if trial.f10 > f10:
                low = middle
            else:
                high = middle
        return KernelMTF(name, (low + high) / 2, overshoot_weight, overshoot_sigma_mm)

    def describe(self) -> Dict[str, float]:
        peak_f, peak_value = self.peak
        return {"name": self.name, "sigma_mm": round(self.sigma_mm, 6),
                "overshoot_weight": self.overshoot_weight, "overshoot_sigma_mm": self.overshoot_sigma_mm,
                "f10_per_mm": round(self.f10, 4), "f50_per_mm": round(self.f50, 4),
                "peak_frequency_per_mm": round(peak_f, 4), "peak_mtf": round(peak_value, 4)}


def _first_crossing(mtf, level: float) -> float:
    f = np.linspace(0.0, 5.0, 50001)
    below = np.flatnonzero(mtf(f) < level)
    if below.size == 0:
        return float("inf")
    i = int(below[0])
    f0, f1 = f[i - 1], f[i]
    v0, v1 = mtf(f0), mtf(f1)
    return float(f0 + (v0 - level) * (f1 - f0) / (v0 - v1))


#: Smooth, B30f-like: Gaussian MTF, 10 % at 0.6 /mm (sigma 0.569 mm).
SMOOTH_KERNEL = KernelMTF.gaussian("B30f-like", 0.6)
#: Sharp, B50f-like: 10 % at 0.8 /mm with a mid-frequency overshoot (peak ~1.15 near 0.23 /mm).
SHARP_KERNEL = KernelMTF.edge_enhancing("B50f-like", 0.8, overshoot_weight=1.5, overshoot_sigma_mm=0.8)


# =========================================================================== helpers


def _inplane_frequency(shape_yx: Tuple[int, int], spacing_xy: Tuple[float, float]) -> np.ndarray:
    """Radial in-plane frequency (1/mm) on the rfft2 grid of (y, x) slices."""
    fy = np.fft.fftfreq(shape_yx[0], d=spacing_xy[1])[:, None]
    fx = np.fft.rfftfreq(shape_yx[1], d=spacing_xy[0])[None, :]
    return np.sqrt(fy * fy + fx * fx)


def _filter_inplane(array: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Multiply every (y, x) slice's spectrum by ``gain`` (periodic boundaries)."""
    spectrum = np.fft.rfft2(array.astype(np.float32, copy=False), axes=(1, 2))
    spectrum *= gain.astype(np.complex64 if spectrum.dtype == np.complex64 else np.complex128)
    return np.fft.irfft2(spectrum, s=array.shape[1:], axes=(1, 2)).astype(np.float32, copy=False)


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into [0, n) (edge sample not repeated: ... 2 1 | 0 1 2 ... n-1 | n-2 ...)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def _gaussian_resampling_matrix(n_in: int, factor: int, sigma_voxels: float) -> np.ndarray:
    """(n_out, n_in) weights: Gaussian of ``sigma_voxels`` centred on each coarse voxel
    centre ``factor * i + (factor - 1) / 2``, mirrored at the edges, rows summing to 1."""
    n_out = n_in // factor
    centres = factor * np.arange(n_out) + (factor - 1) / 2.0
    radius = int(np.ceil(4.0 * sigma_voxels + factor))
    taps = np.arange(-radius, radius + 1)
    sources = np.floor(centres)[:, None].astype(np.int64) + taps[None, :]
    weights = np.exp(-0.5 * ((sources - centres[:, None]) / sigma_voxels) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), len(taps)), _reflect_index(sources, n_in).ravel()),
              weights.ravel())
    return matrix


def _resample_axis(array: np.ndarray, axis: int, factor: int, sigma_voxels: float) -> np.ndarray:
    """Gaussian blur along ``axis`` then keep every ``factor``-th sample (coarse centres)."""
    if sigma_voxels <= 0:
        if factor == 1:
            return array
        raise ConfigError("decimation needs a blur (sigma > 0): sub-sampling alone would alias")
    matrix = _gaussian_resampling_matrix(array.shape[axis], factor, sigma_voxels)
    # One BLAS product (tensordot), in float64: BLAS sums in an order that depends on the
    # thread count, and float32 rounding would then change a few output voxels between
    # machines; float64 keeps the float32 result identical.
    result = np.tensordot(matrix, array.astype(np.float64), axes=([1], [axis]))
    return np.ascontiguousarray(np.moveaxis(result, 0, axis), dtype=np.float32)


def slice_profile(volume: Volume, fwhm_mm: float) -> Volume:
    """Blur along z with a Gaussian slice sensitivity profile of ``fwhm_mm`` (mirror edges)."""
    sigma = fwhm_mm / FWHM_PER_SIGMA / volume.spacing[2]
    return volume.with_array(_resample_axis(volume.array, 0, 1, sigma))


def _unit_ramp_noise(shape: Tuple[int, int, int], spacing, slice_fwhm_mm: float, seed: int) -> np.ndarray:
    """Spectrum (rfftn layout) of white noise shaped by sqrt(|f_inplane|) and the slice
    profile along z: the kernel-independent part of FBP noise."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6E6F6973]))
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfftn(white)
    radial = _inplane_frequency(shape[1:], (spacing[0], spacing[1]))
    fz = np.fft.fftfreq(shape[0], d=spacing[2])
    sigma_z = slice_fwhm_mm / FWHM_PER_SIGMA
    profile = np.exp(-2.0 * np.pi ** 2 * sigma_z ** 2 * fz ** 2)
    spectrum *= (profile[:, None, None] * np.sqrt(radial)[None]).astype(np.float32)
    return spectrum


def _expected_noise_std(shape, spacing, slice_fwhm_mm: float, kernel: KernelMTF) -> float:
    """Standard deviation of unit white noise after the ramp, slice-profile and kernel
    filters, from Parseval on the discrete grid (no realisation needed)."""
    radial = _inplane_frequency(shape[1:], (spacing[0], spacing[1]))
    gain2 = radial * kernel(radial) ** 2
    # rfft stores half the x frequencies: count the mirrored ones twice.
    weight = np.full(radial.shape[1], 2.0)
    weight[0] = 1.0
    if shape[2] % 2 == 0:
        weight[-1] = 1.0
    fz = np.fft.fftfreq(shape[0], d=spacing[2])
    sigma_z = slice_fwhm_mm / FWHM_PER_SIGMA
    profile2 = np.exp(-2.0 * np.pi ** 2 * sigma_z ** 2 * fz ** 2) ** 2
    total = profile2.sum() * (gain2 * weight[None, :]).sum()
    return float(np.sqrt(total / (shape[0] * shape[1] * shape[2])))


def _checked_volume(volume: Volume, what: str) -> None:
    if not isinstance(volume, Volume):
        raise VolumeError(f"{what} needs a Volume, got {type(volume).__name__}")


# =========================================================================== kernels: pure


def kernel_pair(clean: Volume, seed: int, noise_std_hu: float = 20.0, sharp: KernelMTF = SHARP_KERNEL,
                smooth: KernelMTF = SMOOTH_KERNEL, slice_fwhm_mm: Optional[float] = None) -> Tuple[Volume, Volume]:
    """Sharp and smooth reconstructions of ``clean`` sharing ONE noise realisation.

    raw = slice_profile(clean) + noise, noise with NPS ~ |f| (in-plane) x profile^2 (z);
    sharp = MTF_sharp * raw, smooth = MTF_smooth * raw (in-plane). The noise is scaled so
    the smooth image's expected noise standard deviation is ``noise_std_hu``.
    ``slice_fwhm_mm`` defaults to the z spacing."""
    _checked_volume(clean, "kernel_pair")
    raw = _raw_data(clean, seed, noise_std_hu, smooth, slice_fwhm_mm)
    radial = _inplane_frequency(clean.shape[1:], clean.spacing[:2])
    spectrum = np.fft.rfft2(raw, axes=(1, 2))
    outputs = []
    for kernel in (sharp, smooth):
        filtered = spectrum * kernel(radial).astype(np.float32)
        outputs.append(clean.with_array(np.fft.irfft2(filtered, s=clean.shape[1:], axes=(1, 2)).astype(np.float32),
                                        source=f"{kernel.name} reconstruction of {clean.source or 'a volume'}"))
    return outputs[0], outputs[1]


def reconstruct(clean: Volume, kernel: KernelMTF, seed: int, noise_std_hu: float,
                slice_fwhm_mm: Optional[float] = None) -> Volume:
    """One reconstruction of ``clean`` with ``kernel``: same model as :func:`kernel_pair`,
    noise scaled so this image's expected noise standard deviation is ``noise_std_hu``."""
    _checked_volume(clean, "reconstruct")
    raw = _raw_data(clean, seed, noise_std_hu, kernel, slice_fwhm_mm)
    radial = _inplane_frequency(clean.shape[1:], clean.spacing[:2])
    return clean.with_array(_filter_inplane(raw, kernel(radial)),
                            source=f"{kernel.name} reconstruction of {clean.source or 'a volume'}")


def _raw_data(clean: Volume, seed: int, noise_std_hu: float, reference: KernelMTF,
              slice_fwhm_mm: Optional[float]) -> np.ndarray:
    """The kernel-independent "raw" image: slice-profiled object plus ramp-shaped noise,
    scaled so that ``reference``'s reconstruction has ``noise_std_hu`` of noise."""
    if not noise_std_hu >= 0:
        raise ConfigError(f"noise standard deviation must be >= 0 HU, got {noise_std_hu}")
    fwhm = float(slice_fwhm_mm) if slice_fwhm_mm is not None else clean.spacing[2]
    if not fwhm > 0:
        raise ConfigError(f"slice FWHM must be positive, got {slice_fwhm_mm}")
    raw = slice_profile(clean, fwhm).array.astype(np.float32, copy=True)
    if noise_std_hu > 0:
        spectrum = _unit_ramp_noise(clean.shape, clean.spacing, fwhm, seed)
        scale = noise_std_hu / _expected_noise_std(clean.shape, clean.spacing, fwhm, reference)
        raw += np.fft.irfftn(spectrum, s=clean.shape, axes=(0, 1, 2)).astype(np.float32) * np.float32(scale)
    return raw


def filter_inplane(volume: Volume, gain: Callable[[np.ndarray], np.ndarray], pad_mm: float = 16.0,
                   source: str = "") -> Volume:
    """Multiply every axial slice's spectrum by ``gain(radial frequency in 1/mm)``.

    Slices are mirror-padded by ``pad_mm`` first so the filter does not wrap across the field
    of view (``pad_mm=0``: periodic boundaries, as the simulation itself uses)."""
    _checked_volume(volume, "filter_inplane")
    pads = [int(np.ceil(pad_mm / s)) if pad_mm > 0 else 0 for s in volume.spacing[:2]]
    array = volume.array.astype(np.float32, copy=False)
    pads = [min(p, n - 1) for p, n in zip(pads, (array.shape[2], array.shape[1]))]
    padded = np.pad(array, ((0, 0), (pads[1], pads[1]), (pads[0], pads[0])), mode="reflect")
    radial = _inplane_frequency(padded.shape[1:], volume.spacing[:2])
    filtered = _filter_inplane(padded, gain(radial))
    filtered = filtered[:, pads[1]:pads[1] + array.shape[1], pads[0]:pads[0] + array.shape[2]]
    return volume.with_array(np.ascontiguousarray(filtered), source=source or volume.source)


def kernel_oracle(sharp_volume: Volume, sharp: KernelMTF = SHARP_KERNEL, smooth: KernelMTF = SMOOTH_KERNEL,
                  pad_mm: float = 16.0) -> Volume:
    """The linear sharp -> smooth baseline: each slice filtered by MTF_smooth / MTF_sharp.

    For a pair made by :func:`kernel_pair` it returns the smooth image exactly (pass
    ``pad_mm=0`` to use the same periodic boundaries). On real scans the slices are
    mirror-padded by ``pad_mm`` so the filter does not wrap across the field of view."""
    return filter_inplane(sharp_volume, lambda f: smooth(f) / sharp(f), pad_mm,
                          source=f"kernel oracle of {sharp_volume.source or 'a volume'}")


def gaussian_inplane(volume: Volume, sigma_mm: float, pad_mm: float = 16.0) -> Volume:
    """In-plane Gaussian smoothing with standard deviation ``sigma_mm`` (the classical
    sharp -> smooth baseline; MTF exp(-2 pi^2 sigma^2 f^2))."""
    if sigma_mm < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma_mm}")
    return filter_inplane(volume, lambda f: np.exp(-2.0 * np.pi ** 2 * sigma_mm ** 2 * f * f), pad_mm,
                          source=f"Gaussian sigma {sigma_mm:g} mm of {volume.source or 'a volume'}")


# =========================================================================== low resolution: pure


def low_resolution(volume: Volume, factors_xyz: Sequence[int] = (2, 2, 4), slice_thickness_mm: Optional[float] = None,
                   inplane_fwhm_mm: Optional[float] = None) -> Volume:
    """The thick-slice, coarse-pixel version of ``volume``.

    Along z: Gaussian slice sensitivity profile with FWHM ``slice_thickness_mm`` (default:
    the new slice spacing, factor_z x spacing_z), then decimation. In-plane: Gaussian blur
    with FWHM ``inplane_fwhm_mm`` (default: the new pixel size per axis), then decimation.
    Each coarse sample sits at the centre of the fine voxels it replaces, and the result's
    geometry is :func:`low_resolution_grid`: the same physical box. Sizes must be
    divisible by the factors."""
    _checked_volume(volume, "low_resolution")
    grid = low_resolution_grid(volume, factors_xyz)
    factors = tuple(int(f) for f in factors_xyz)
    array = volume.array.astype(np.float32, copy=False)
    for axis_xyz, axis_array in ((2, 0), (1, 1), (0, 2)):
        factor = factors[axis_xyz]
        spacing = volume.spacing[axis_xyz]
        if axis_xyz == 2:
            fwhm = slice_thickness_mm if slice_thickness_mm is not None else factor * spacing
        else:
            fwhm = inplane_fwhm_mm if inplane_fwhm_mm is not None else factor * spacing
        if factor == 1 and (slice_thickness_mm is None if axis_xyz == 2 else inplane_fwhm_mm is None):
            continue  # an axis left alone keeps its resolution
        if not fwhm > 0:
            raise ConfigError(f"blur FWHM must be positive, got {fwhm}")
        array = _resample_axis(array, axis_array, factor, fwhm / FWHM_PER_SIGMA / spacing)
    return Volume(array, grid.spacing, grid.origin, grid.direction,
                  f"low-resolution {factors} of {volume.source or 'a volume'}")


# =========================================================================== iterative reconstruction: pure

#: Default iterative-reconstruction settings (docs/data.md, "The nonlinear world").
IR_STRENGTH = 1.5
IR_EDGE_THRESHOLD = 1.0
IR_ITERATIONS = 30


def _forward_difference(array: np.ndarray, axis: int) -> np.ndarray:
    """x[i+1] - x[i] along ``axis`` (one sample shorter: no difference across the border)."""
    return np.diff(array, axis=axis)


def _adjoint_difference(values: np.ndarray, axis: int, length: int) -> np.ndarray:
    """The transpose of :func:`_forward_difference` (a divergence with Neumann borders)."""
    pad = [(0, 0)] * values.ndim
    pad[axis] = (1, 1)
    padded = np.pad(values, pad)
    return -np.diff(padded, axis=axis)


def iterative_reconstruction(fbp: Volume, noise_std_hu: float, strength: float = IR_STRENGTH,
                             edge_threshold: float = IR_EDGE_THRESHOLD, iterations: int = IR_ITERATIONS) -> Volume:
    """An iterative-reconstruction-like image of the FBP-like reconstruction ``fbp``.

    Minimises, slice by slice, ``E(x) = 1/2 |x - y|^2 + strength * sum_d huber(c_d D_d x)``
    (``y`` = ``fbp``, ``D_d`` the forward difference between in-plane neighbours along x and
    y, ``c_d`` = mean pixel size / pixel size along d) with ``iterations`` steps of Nesterov-
    accelerated gradient descent from ``y``. ``huber(t)`` is ``t^2/2`` up to
    ``delta = edge_threshold * noise_std_hu`` and linear beyond: differences of the size of
    the noise are smoothed quadratically, edges of higher contrast only by a constant pull
    (total-variation-like), so they stay. ``noise_std_hu`` is the noise standard deviation of
    ``fbp`` (the dose): with the threshold tied to it, the noise reduction is the same
    fraction at every dose while the contrast an edge needs to survive grows with the noise.
    Deterministic: no randomness; jointly scaling ``fbp`` and ``noise_std_hu`` scales the
    result."""
    _checked_volume(fbp, "iterative_reconstruction")
    if not (np.isfinite(noise_std_hu) and noise_std_hu > 0):
        raise ConfigError(f"iterative reconstruction needs the noise level (> 0 HU), got {noise_std_hu}")
    if not (np.isfinite(strength) and strength >= 0 and np.isfinite(edge_threshold) and edge_threshold > 0):
        raise ConfigError(f"iterative reconstruction needs strength >= 0 and edge_threshold > 0, got "
                          f"{strength} and {edge_threshold}")
    if int(iterations) != iterations or iterations < 0:
        raise ConfigError(f"iterations must be a whole number >= 0, got {iterations}")
    y = fbp.array.astype(np.float32, copy=True)
    delta = np.float32(edge_threshold * noise_std_hu)
    mean_spacing = (fbp.spacing[0] + fbp.spacing[1]) / 2.0
    # (array axis, weight): x is axis 2 with spacing[0], y is axis 1 with spacing[1].
    axes = [(axis, np.float32(mean_spacing / fbp.spacing[index])) for axis, index in ((2, 0), (1, 1))
            if fbp.shape[axis] > 1]
    # Lipschitz constant of the gradient: 1 (data) + strength * sum_d c_d^2 |D_d|^2, |D|^2 <= 4.
    step = np.float32(1.0 / (1.0 + strength * sum(4.0 * float(c) ** 2 for _, c in axes)))
    x = y.copy()
    previous = x
    momentum = 1.0
    for _ in range(int(iterations)):
        gradient = x - y
        for axis, weight in axes:
            flux = np.clip(weight * _forward_difference(x, axis), -delta, delta)
            gradient += np.float32(strength) * weight * _adjoint_difference(flux, axis, x.shape[axis])
        updated = x - step * gradient
        next_momentum = (1.0 + np.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
        x = updated + np.float32((momentum - 1.0) / next_momentum) * (updated - previous)
        previous, momentum = updated, next_momentum
    return fbp.with_array(previous.astype(np.float32, copy=False),
                          source=f"iterative reconstruction of {fbp.source or 'a volume'}")


# =========================================================================== deterministic classes


@dataclass(frozen=True)
class KernelPair:
    """Deterministic sharp/smooth pair maker (see :func:`kernel_pair`)."""

    noise_std_hu: float = 20.0
    seed: int = 0
    sharp: KernelMTF = SHARP_KERNEL
    smooth: KernelMTF = SMOOTH_KERNEL
    slice_fwhm_mm: Optional[float] = None

    def __call__(self, clean: Volume) -> Tuple[Volume, Volume]:
        return kernel_pair(clean, self.seed, self.noise_std_hu, self.sharp, self.smooth, self.slice_fwhm_mm)

    def describe(self) -> dict:
        return {"noise_std_hu_smooth": self.noise_std_hu, "seed": self.seed, "sharp": self.sharp.describe(),
                "smooth": self.smooth.describe(), "slice_fwhm_mm": self.slice_fwhm_mm}


@dataclass(frozen=True)
class Reconstruction:
    """Deterministic single reconstruction (see :func:`reconstruct`)."""

    kernel: KernelMTF = SMOOTH_KERNEL
    noise_std_hu: float = 10.0
    seed: int = 0
    slice_fwhm_mm: Optional[float] = None

    def __call__(self, clean: Volume) -> Volume:
        return reconstruct(clean, self.kernel, self.seed, self.noise_std_hu, self.slice_fwhm_mm)

    def describe(self) -> dict:
        return {"kernel": self.kernel.describe(), "noise_std_hu": self.noise_std_hu, "seed": self.seed,
                "slice_fwhm_mm": self.slice_fwhm_mm}


@dataclass(frozen=True)
class LowResolution:
    """Deterministic low-resolution operator (see :func:`low_resolution`)."""

    factors_xyz: Tuple[int, int, int] = (2, 2, 4)
    slice_thickness_mm: Optional[float] = None
    inplane_fwhm_mm: Optional[float] = None

    def __call__(self, volume: Volume) -> Volume:
        return low_resolution(volume, self.factors_xyz, self.slice_thickness_mm, self.inplane_fwhm_mm)

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IterativeReconstruction:
    """Deterministic iterative-reconstruction step (see :func:`iterative_reconstruction`):
    applied to an FBP-like image whose noise standard deviation is ``noise_std_hu``."""

    noise_std_hu: float
    strength: float = IR_STRENGTH
    edge_threshold: float = IR_EDGE_THRESHOLD
    iterations: int = IR_ITERATIONS

    def __call__(self, fbp: Volume) -> Volume:
        return iterative_reconstruction(fbp, self.noise_std_hu, self.strength, self.edge_threshold, self.iterations)

    def describe(self) -> dict:
        return {"method": "penalised least squares, Huber prior on in-plane neighbour differences, "
                          "Nesterov-accelerated gradient descent from the FBP image",
                "noise_std_hu": self.noise_std_hu, "strength": self.strength,
                "edge_threshold_noise_std": self.edge_threshold,
                "huber_delta_hu": self.edge_threshold * self.noise_std_hu, "iterations": self.iterations}


# =========================================================================== random classes


def _uniform(rng: np.random.Generator, bounds: Tuple[float, float], what: str) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low <= high):
        raise ConfigError(f"{what} range must be 0 <= low <= high, got {tuple(bounds)}")
    return float(rng.uniform(low, high)) if high > low else low


@dataclass(frozen=True)
class RandomKernelPair:
    """Samples a :class:`KernelPair` (noise level and noise seed) from ``rng``."""

    noise_std_range_hu: Tuple[float, float] = (12.0, 30.0)
    sharp: KernelMTF = SHARP_KERNEL
    smooth: KernelMTF = SMOOTH_KERNEL

    def sample(self, rng: np.random.Generator) -> KernelPair:
        return KernelPair(_uniform(rng, self.noise_std_range_hu, "noise"), int(rng.integers(0, 2 ** 31 - 1)),
                          self.sharp, self.smooth)

    def __call__(self, clean: Volume, seed: int) -> Tuple[Volume, Volume]:
        return self.sample(np.random.default_rng(seed))(clean)


@dataclass(frozen=True)
class RandomReconstruction:
    """Samples a :class:`Reconstruction` (noise level and seed) from ``rng``."""

    kernel: KernelMTF = SMOOTH_KERNEL
    noise_std_range_hu: Tuple[float, float] = (5.0, 15.0)

    def sample(self, rng: np.random.Generator) -> Reconstruction:
        return Reconstruction(self.kernel, _uniform(rng, self.noise_std_range_hu, "noise"),
                              int(rng.integers(0, 2 ** 31 - 1)))

    def __call__(self, clean: Volume, seed: int) -> Volume:
        return self.sample(np.random.default_rng(seed))(clean)


@dataclass(frozen=True)
class RandomLowResolution:
    """Samples a :class:`LowResolution` whose slice thickness is a random multiple of the
    new slice spacing (1.0 = FWHM equal to the spacing)."""

    factors_xyz: Tuple[int, int, int] = (2, 2, 4)
    thickness_to_spacing_range: Tuple[float, float] = (1.0, 1.25)

    def sample(self, rng: np.random.Generator, volume: Volume) -> LowResolution:
        ratio = _uniform(rng, self.thickness_to_spacing_range, "thickness ratio")
        return LowResolution(tuple(self.factors_xyz), ratio * self.factors_xyz[2] * volume.spacing[2])  # type: ignore[arg-type]

    def __call__(self, volume: Volume, seed: int) -> Volume:
        return self.sample(np.random.default_rng(seed), volume)(volume)
