"""Radial in-plane filters in cycles/mm: fitted from paired or unpaired CT volumes.

A reconstruction kernel acts in-plane as a rotationally symmetric transfer function of the
spatial frequency f (cycles/mm), so converting one FBP kernel into another is, to first order,
one radial gain curve g(f) applied to every axial slice. This module estimates g:

- :func:`fit_radial_filter` from PAIRED volumes (the same raw data reconstructed with both
  kernels): per radial frequency bin, the least-squares gain
  ``g = sum Re(conj(X) Y) / sum |X|^2`` over every slice of every pair (X, Y the 2D spectra of
  source and target slices). It is the linear filter with the smallest squared error on the
  pairs (a Wiener filter when noise is shared), the ceiling of any linear method in the
  "linear" phantom world.
- :func:`fit_spectral_ratio_filter` from UNPAIRED volumes (different patients, one set per
  kernel): ``g = sqrt(P_target / P_source)``, the square root of the ratio of radially averaged
  power spectra. They are measured on differences of adjacent axial slices inside the body (a
  tapered body window keeps the skin-air outline out): the anatomy, which differs between
  patients, changes little from slice to slice and mostly cancels, while the noise, which
  both kernels filter from the same kind of raw data, does not. The curve is smoothed over
  0.05 cycles/mm; below 0.05 cycles/mm g rises linearly from 1 at DC (both kernels pass the
  mean) to the first measured value.

A :class:`RadialFilter` holds the gain at bin centres; between them it is interpolated
linearly, above the last bin the last gain is held (a finer scan than the fit's has
frequencies the fit never saw). Because it lives in cycles/mm, the same filter serves scans
of any pixel size. :meth:`RadialFilter.inverse` is the reciprocal gain, with the forward gain
floored at ``floor`` in magnitude so that frequencies the forward filter all but removes are
amplified at most ``1 / floor`` times (noise would otherwise explode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .degradations import filter_inplane
from .errors import ConfigError, VolumeError
from .volume import Volume

#: Default floor of |forward gain| in :meth:`RadialFilter.inverse`: at most 10x amplification.
INVERSE_GAIN_FLOOR = 0.1
#: Taper (mm) of the body window the unpaired power spectra are measured in.
SPECTRUM_TAPER_MM = 3.0
#: Below this frequency (structures over 20 mm) the spectra are anatomy, which differs between
#: patients: the unpaired gain is not measured there but rises linearly from 1 at DC.
SPECTRUM_LOW_CUTOFF = 0.05
#: Width (cycles/mm) of the running mean that smooths the unpaired gain curve.
SPECTRUM_SMOOTHING = 0.05


@dataclass(frozen=True)
class RadialFilter:
    """A radial gain table: ``gain[i]`` at ``frequency_per_mm[i]`` (increasing, from 0)."""

    frequency_per_mm: np.ndarray
    gain: np.ndarray

    def __post_init__(self) -> None:
        frequency = np.asarray(self.frequency_per_mm, dtype=np.float64)
        gain = np.asarray(self.gain, dtype=np.float64)
        if frequency.ndim != 1 or gain.shape != frequency.shape or frequency.size < 2:
            raise ConfigError(f"a radial filter needs two equally long 1D tables of at least 2 values, got "
                              f"shapes {frequency.shape} and {gain.shape}")
        if not (np.all(np.isfinite(frequency)) and np.all(np.isfinite(gain))):
            raise ConfigError("a radial filter's frequencies and gains must be finite")
        if frequency[0] != 0.0 or np.any(np.diff(frequency) <= 0):
            raise ConfigError("a radial filter's frequencies must start at 0 and increase")
        object.__setattr__(self, "frequency_per_mm", frequency)
        object.__setattr__(self, "gain", gain)

    def __call__(self, frequency) -> np.ndarray:
        """The gain at ``frequency`` (cycles/mm; any shape)."""
        return np.interp(np.asarray(frequency, dtype=np.float64), self.frequency_per_mm, self.gain)

    def inverse(self, floor: float = INVERSE_GAIN_FLOOR) -> "RadialFilter":
        """The reciprocal filter, |forward gain| floored at ``floor`` (keeping its sign)."""
        if not (0 < floor <= 1):
            raise ConfigError(f"the inverse gain floor must be in (0, 1], got {floor}")
        sign = np.where(self.gain < 0, -1.0, 1.0)
        return RadialFilter(self.frequency_per_mm, sign / np.maximum(np.abs(self.gain), floor))

    def apply(self, volume: Volume, pad_mm: float = 16.0) -> Volume:
        """Every axial slice of ``volume`` filtered (mirror-padded by ``pad_mm``)."""
        return filter_inplane(volume, self, pad_mm, source=f"radial filter of {volume.source or 'a volume'}")


def _rfft_weights(width: int) -> np.ndarray:
    """How many full-spectrum frequencies each rfft column stands for (1 or 2)."""
    weight = np.full(width // 2 + 1, 2.0)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    return weight


def _radial(shape_yx: Tuple[int, int], spacing_xy: Sequence[float]) -> np.ndarray:
    fy = np.fft.fftfreq(shape_yx[0], d=spacing_xy[1])[:, None]
    fx = np.fft.rfftfreq(shape_yx[1], d=spacing_xy[0])[None, :]
    return np.sqrt(fy * fy + fx * fx)


def _bin_width(volumes: Sequence[Volume]) -> float:
    """The coarsest frequency step of the volumes' slice grids: every bin of that width
    holds samples of every volume."""
    steps = []
    for volume in volumes:
        steps.extend(1.0 / (n * s) for n, s in zip((volume.shape[2], volume.shape[1]), volume.spacing[:2]))
    return float(max(steps))


def _fill_empty(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bins without samples take the linear interpolation of their neighbours."""
    good = counts > 0
    if not good.any():
        raise VolumeError("no frequency sample fell into any bin")
    index = np.arange(values.size)
    return np.interp(index, index[good], values[good])


def _checked_pairs(pairs) -> list:
    pairs = list(pairs)
    if not pairs:
        raise ConfigError("fitting a radial filter needs at least one (source, target) pair")
    for source, target in pairs:
        if not (isinstance(source, Volume) and isinstance(target, Volume)):
            raise VolumeError("fitting a radial filter needs pairs of Volumes")
        if source.shape != target.shape or not np.allclose(source.spacing, target.spacing, rtol=1e-4):
            raise VolumeError(f"a pair's volumes lie on different grids ({source.shape} at {source.spacing} mm vs "
                              f"{target.shape} at {target.spacing} mm); resample one onto the other first")
        if source.shape[1] < 8 or source.shape[2] < 8:
            raise VolumeError(f"slices of {source.shape[2]} x {source.shape[1]} pixels are too small to fit a "
                              "frequency response")
    return pairs


def fit_radial_filter(pairs: Iterable[Tuple[Volume, Volume]], bin_width_per_mm: Optional[float] = None) -> RadialFilter:
    """The least-squares radial gain mapping each pair's source slices onto its target's
    (see the module documentation). Pairs may differ in size and pixel spacing."""
    pairs = _checked_pairs(pairs)
    width = float(bin_width_per_mm) if bin_width_per_mm else _bin_width([source for source, _ in pairs])
    top = max(float(_radial(s.shape[1:], s.spacing[:2]).max()) for s, _ in pairs)
    bins = int(np.ceil(top / width)) + 1
    cross = np.zeros(bins)
    power = np.zeros(bins)
    counts = np.zeros(bins)
    for source, target in pairs:
        radial = _radial(source.shape[1:], source.spacing[:2])
        index = np.minimum(np.rint(radial / width).astype(np.int64), bins - 1).ravel()
        weight = np.broadcast_to(_rfft_weights(source.shape[2])[None, :], radial.shape).ravel()
        counts += np.bincount(index, minlength=bins)
        for k in range(source.shape[0]):  # slice by slice: memory stays at one slice's spectrum
            x = np.fft.rfft2(source.array[k].astype(np.float64))
            y = np.fft.rfft2(target.array[k].astype(np.float64))
            cross += np.bincount(index, weights=(weight * (x.conj() * y).real.ravel()), minlength=bins)
            power += np.bincount(index, weights=(weight * (np.abs(x) ** 2).ravel()), minlength=bins)
    usable = (counts > 0) & (power > 1e-12 * max(power.max(), 1e-300))
    gain = np.where(usable, cross / np.where(usable, power, 1.0), 0.0)
    return RadialFilter(np.arange(bins) * width, _fill_empty(gain, usable.astype(np.int64)))


def _body_windows(volume: Volume, threshold_hu: float, taper_mm: float) -> np.ndarray:
    """(z, y, x) weights in [0, 1]: the body mask (:func:`RevGANCore.metrics.body_mask`), shrunk
    by ``2 * taper_mm`` and smoothed with a Gaussian of ``taper_mm``, so the window falls to 0
    before the skin and the body outline does not enter the spectrum."""
    from .metrics import body_mask

    mask = body_mask(volume.array, threshold_hu).astype(np.float64)
    radial = _radial(volume.shape[1:], volume.spacing[:2])
    blur = np.exp(-2.0 * np.pi ** 2 * taper_mm ** 2 * radial ** 2)
    # Shrink: keep voxels whose surroundings (blurred mask) are almost all body, then taper.
    shrunk = np.fft.irfft2(np.fft.rfft2(mask, axes=(1, 2)) * blur, s=volume.shape[1:], axes=(1, 2)) > 0.98
    window = np.fft.irfft2(np.fft.rfft2(shrunk.astype(np.float64), axes=(1, 2)) * blur, s=volume.shape[1:],
                           axes=(1, 2))
    return np.clip(window, 0.0, 1.0)


def radial_power_spectrum(volumes: Sequence[Volume], width: float, bins: int, threshold_hu: float = -500.0,
                          taper_mm: float = SPECTRUM_TAPER_MM) -> Tuple[np.ndarray, np.ndarray]:
    """(mean power per bin, weight per bin) of the differences of adjacent axial slices inside
    the body: each difference minus its body mean, times the two slices' tapered body windows
    (:func:`_body_windows`), its power normalised by the window's energy."""
    total = np.zeros(bins)
    counts = np.zeros(bins)
    for volume in volumes:
        windows = _body_windows(volume, threshold_hu, taper_mm)
        radial = _radial(volume.shape[1:], volume.spacing[:2])
        index = np.minimum(np.rint(radial / width).astype(np.int64), bins - 1).ravel()
        weight = np.broadcast_to(_rfft_weights(volume.shape[2])[None, :], radial.shape).ravel()
        for k in range(volume.shape[0] - 1):
            window = windows[k] * windows[k + 1]
            energy = float((window ** 2).sum())
            if energy < 16.0:  # under ~4 x 4 pixels of body: nothing to measure
                continue
            values = volume.array[k + 1].astype(np.float64) - volume.array[k].astype(np.float64)
            centred = (values - (values * window).sum() / window.sum()) * window
            power = np.abs(np.fft.rfft2(centred)) ** 2 / energy
            total += np.bincount(index, weights=weight * power.ravel(), minlength=bins)
            counts += np.bincount(index, weights=weight, minlength=bins)
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0), counts


def fit_spectral_ratio_filter(sources: Iterable[Volume], targets: Iterable[Volume], threshold_hu: float = -500.0,
                              taper_mm: float = SPECTRUM_TAPER_MM, low_cutoff_per_mm: float = SPECTRUM_LOW_CUTOFF,
                              smoothing_per_mm: float = SPECTRUM_SMOOTHING) -> RadialFilter:
    """``sqrt(P_target / P_source)`` from UNPAIRED volumes of the two kernels (see the module
    documentation and :func:`radial_power_spectrum`), averaged over ``smoothing_per_mm``;
    below ``low_cutoff_per_mm`` it rises linearly from 1 at DC instead."""
    sources, targets = list(sources), list(targets)
    if not sources or not targets:
        raise ConfigError("the spectral-ratio filter needs volumes of both domains")
    everything = sources + targets
    if not all(isinstance(v, Volume) for v in everything):
        raise VolumeError("the spectral-ratio filter needs Volumes")
    width = _bin_width(everything)
    top = max(float(_radial(v.shape[1:], v.spacing[:2]).max()) for v in everything)
    bins = int(np.ceil(top / width)) + 1
    source_power, source_counts = radial_power_spectrum(sources, width, bins, threshold_hu, taper_mm)
    target_power, target_counts = radial_power_spectrum(targets, width, bins, threshold_hu, taper_mm)
    if not (source_counts.any() and target_counts.any()):
        raise VolumeError("no slice of one of the domains holds enough body (HU above "
                          f"{threshold_hu:g}) to measure its spectrum")
    frequency = np.arange(bins) * width
    usable = (source_counts > 0) & (target_counts > 0) & (source_power > 0) & (frequency >= low_cutoff_per_mm)
    gain = np.where(usable, np.sqrt(target_power / np.where(source_power > 0, source_power, 1.0)), 0.0)
    gain = _moving_average(_fill_empty(gain, usable.astype(np.int64)), max(1, int(round(smoothing_per_mm / width))))
    # Both kernels pass the mean (DC): gain 1 there, rising linearly to the first measured bin.
    first = int(np.argmax(frequency >= low_cutoff_per_mm))
    gain[:first + 1] = np.interp(frequency[:first + 1], [0.0, frequency[first]], [1.0, gain[first]])
    return RadialFilter(frequency, gain)


def _moving_average(values: np.ndarray, length: int) -> np.ndarray:
    """Centred running mean over ``length`` bins (edge bins repeated)."""
    if length <= 1:
        return values
    half = length // 2
    padded = np.pad(values, (half, length - 1 - half), mode="edge")
    return np.convolve(padded, np.ones(length) / length, mode="valid")
