"""The classical filter a generator starts from (its "linear prior", ``prior_taps`` > 0).

The network learns, as a residual, only what the filter cannot do. The filters are the
strongest classical method the training data allows, fitted once before training:

- kernel conversion: an in-plane ``taps`` x ``taps`` filter in front of each direction
  (networks.py). Paired: the kernel with the least squared error on the training pairs, one
  per direction. Unpaired: the spectral-ratio filter (:mod:`RevGANCore.linear_filter`) from
  source volumes of the first half of the training cases and target volumes of the second
  half, so no pair enters the fit, cut to ``taps`` x ``taps`` by least squares against its own
  full-band output;
- super-resolution: a polyphase upsampler (``taps``^3 coarse voxels per fine phase) as the
  forward residual path, by a Huber fit (:mod:`RevGANCore.upsampler_fit`) on the training
  pairs (paired) or on high-resolution volumes of the second half of the training cases
  degraded by the known low-resolution operator (unpaired: no low-resolution volume, so no
  pair, enters the fit).

An untrained generator is therefore the classical filter, and every improvement on it is
learned. Why: on 2 CPU cores a kernel generator that starts as the identity spent 400
iterations getting from 60 to 34 HU mean error on the nonlinear-world phantoms, where one
least-squares solve gives 12 HU (docs/training.md, "Linear prior").

The filters are fitted at the training data's voxel size; inference brings a scan to that
size first (the model file records it), so the prior, like the network, acts in millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceBase
from functools import partial
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
import torch

from .errors import ConfigError
from .linear_filter import RadialFilter, fit_spectral_ratio_filter
from .upsampler_fit import HUBER_DELTA, check_odd_taps, fit_upsampling_huber
from .volume import Volume

__all__ = ["PRIOR_TAPS", "UPSAMPLER_TAPS", "fit_fir_least_squares", "fit_fir_both_ways", "fit_spectral_ratio_kernel", "cut_to_taps",
           "fit_prior_kernels", "unpaired_halves", "unpaired_fit_halves", "install_prior", "apply_kernel", "fit_upsampler", "fit_degraded_upsampler", "apply_upsampler", "degraded_pair", "degraded_pairs"]

#: The prior's width in the shipped configurations and the quality bench's FIR rows: 11 taps
#: (8.8 mm at 0.8 mm pixels) come within 0.1 HU of the full-band least-squares filter on the
#: phantoms; 7 taps lose 0.3 HU.
PRIOR_TAPS = 11
#: The super-resolution prior's width in the shipped configurations and the quality bench:
#: 5^3 coarse voxels per fine phase (7^3 and 9^3 fit no better on the phantoms).
UPSAMPLER_TAPS = 5
#: What lies around a slice, in HU, for the least-squares FIR fit.
AIR_HU = -1000.0


def unpaired_halves(case_ids: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(source cases, target cases) of an unpaired prior fit: the first and second half of the
    training cases, disjoint, so the spectral ratio never sees both kernels of one case."""
    ids = list(case_ids)
    if len(ids) < 2:
        raise ConfigError(f"an unpaired prior needs at least 2 training cases (sources and targets from "
                          f"different cases), got {len(ids)}")
    middle = len(ids) // 2
    return ids[:middle], ids[middle:]


def unpaired_fit_halves(manifest, train_ids: Sequence[str]) -> Tuple[List[str], List[str]]:
    """:func:`unpaired_halves` of the training cases in the manifest's order: the cases an
    unpaired prior takes its sources and targets from (and the kernel task's recorrupted
    pairs their noise measurements), whatever order ``train_ids`` lists them in."""
    chosen = set(train_ids)
    return unpaired_halves([c.id for c in manifest.cases if c.id in chosen])


def fit_prior_kernels(sources: Sequence[Volume], targets: Sequence[Volume], paired: bool,
                      taps: int) -> Tuple[np.ndarray, np.ndarray]:
    """(forward, inverse) (taps, taps) kernels: least squares on the pairs
    ``zip(sources, targets)`` (paired, both directions from one pass); or (unpaired)
    :func:`fit_spectral_ratio_kernel` each way."""
    if paired:
        return fit_fir_both_ways(zip(sources, targets), taps)
    return fit_spectral_ratio_kernel(sources, targets, taps), fit_spectral_ratio_kernel(targets, sources, taps)


def fit_spectral_ratio_kernel(sources: Sequence[Volume], targets: Sequence[Volume], taps: int) -> np.ndarray:
    """The spectral-ratio filter from ``sources`` towards ``targets`` (unrelated volumes: no
    pairs), cut to (taps, taps) by :func:`cut_to_taps`."""
    return cut_to_taps(fit_spectral_ratio_filter(sources, targets), sources, taps)


def cut_to_taps(full_band: RadialFilter, volumes: Sequence[Volume], taps: int) -> np.ndarray:
    """The (taps, taps) kernel closest, in least squares on ``volumes``, to the full-band
    radial filter's output."""
    return fit_fir_least_squares([(v, full_band.apply(v)) for v in volumes], taps)


def install_prior(generator, manifest, task_spec: dict, train_ids: Sequence[str], paired: bool) -> str:
    """Fit the prior filters on the training cases of ``manifest`` (see the module
    documentation), install them in ``generator`` and return a one-line account of the fit."""
    from .volume_io import read_volume

    source, target = task_spec["source"], task_spec["target"]
    cases = [c for c in manifest.cases if c.id in set(train_ids)]
    taps = generator.config.prior_taps
    if generator.config.upscale_zyx != (1, 1, 1):
        return _install_upsampling_prior(generator, cases, source, target, paired, taps)
    if paired:
        chosen = [c for c in cases if source in c.files and target in c.files]
        if not chosen:
            raise ConfigError(f"{manifest.path}: the linear prior needs training pairs of {source!r} and {target!r}")
        # One pair in memory at a time (real training scans can be large), read once for both directions.
        generator.set_prior(*(torch.from_numpy(k) for k in fit_fir_both_ways(_pairs_of(chosen, source, target), taps)))
        return f"linear prior ({taps} x {taps} in-plane taps): least squares on {len(chosen)} training pairs"
    first, second = unpaired_fit_halves(manifest, train_ids)
    sources = [read_volume(c.files[source]) for c in cases if c.id in first and source in c.files]
    targets = [read_volume(c.files[target]) for c in cases if c.id in second and target in c.files]
    if not sources or not targets:
        raise ConfigError(f"{manifest.path}: the linear prior needs training volumes of both {source!r} "
                          f"and {target!r}")
    generator.set_prior(*(torch.from_numpy(k) for k in fit_prior_kernels(sources, targets, False, taps)))
    return (f"linear prior ({taps} x {taps} in-plane taps): spectral ratio of {len(sources)} {source} volumes "
            f"({first[0]}..{first[-1]}) and {len(targets)} {target} volumes ({second[0]}..{second[-1]}), no pairs")


def _pairs_of(cases, source: str, target: str):
    """(source, target) volumes of each case, read one pair at a time, shapes checked."""
    from .volume_io import read_volume

    for case in cases:
        pair = read_volume(case.files[source]), read_volume(case.files[target])
        if pair[0].shape != pair[1].shape:
            raise ConfigError(f"{case.files[source]} and {case.files[target]}: a pair for the linear prior must "
                              f"share its grid; shapes {pair[0].shape} and {pair[1].shape}")
        yield pair


def fit_fir_least_squares(pairs: Iterable[Tuple[Volume, Volume]], taps: int, slice_step: int = 2) -> np.ndarray:
    """The (taps, taps) in-plane kernel ``w`` minimising ``sum (target - conv(source, w))^2`` over
    every ``slice_step``-th axial slice of every pair (``conv`` as torch's conv2d: a
    correlation). Solved from the slices' auto- and cross-correlations (normal equations);
    cutting the full-band least-squares filter to a few taps instead would lose its long,
    noisy tail unevenly (measured: 8 HU off at 15 taps)."""
    auto_source, _, cross = _correlations(pairs, taps, slice_step, both_ways=False)
    return _solve_fir(auto_source, cross, taps)


def fit_fir_both_ways(pairs: Iterable[Tuple[Volume, Volume]], taps: int,
                      slice_step: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """(source -> target, target -> source) kernels of :func:`fit_fir_least_squares`, from one
    pass over ``pairs`` (each slice transformed once)."""
    auto_source, auto_target, cross = _correlations(pairs, taps, slice_step, both_ways=True)
    # The way back correlates the other way round: its cross-correlation is the reflection.
    reflected = np.roll(cross[::-1, ::-1], (1, 1), axis=(0, 1))
    return _solve_fir(auto_source, cross, taps), _solve_fir(auto_target, reflected, taps)


def _correlations(pairs: Iterable[Tuple[Volume, Volume]], taps: int, slice_step: int, both_ways: bool):
    """Sums over the slices of every pair of the source's autocorrelation, the target's (with
    ``both_ways``; else None) and ``C(d) = sum_p target(p) source(p + d)``, on a grid padded so
    that lags up to ``taps`` do not wrap."""
    check_odd_taps(taps, "an FIR fit")
    sums = None
    for source, target in pairs:
        if source.shape != target.shape:
            raise ConfigError(f"paired volumes differ in shape: {source.shape} and {target.shape}")
        height, width = source.shape[1:]
        size = (height + 2 * taps, width + 2 * taps)  # zero padding: no wrap-around within the lags
        for k in range(0, source.shape[0], slice_step):
            # Relative to air: the zero padding is then air, as around a scan's field of view.
            x = np.fft.rfft2(source.array[k].astype(np.float64) - AIR_HU, s=size)
            y = np.fft.rfft2(target.array[k].astype(np.float64) - AIR_HU, s=size)
            terms = [np.fft.irfft2(np.abs(x) ** 2, s=size),
                     np.fft.irfft2(np.abs(y) ** 2, s=size) if both_ways else None,
                     np.fft.irfft2(np.conj(y) * x, s=size)]
            sums = terms if sums is None else [None if t is None else a + t for a, t in zip(sums, terms)]
    if sums is None:
        raise ConfigError("an FIR fit needs at least one pair")
    return sums


def _solve_fir(auto: np.ndarray, cross: np.ndarray, taps: int) -> np.ndarray:
    """The normal equations ``sum_p x(p+u) x(p+v) w(v) = sum_p y(p) x(p+u)``, i.e.
    ``R(v - u) w(v) = C(u)``, over the taps x taps lags."""
    lags = np.arange(-(taps // 2), taps // 2 + 1)
    dy, dx = (grid.ravel() for grid in np.meshgrid(lags, lags, indexing="ij"))
    matrix = auto[(dy[None, :] - dy[:, None]) % auto.shape[0], (dx[None, :] - dx[:, None]) % auto.shape[1]]
    rhs = cross[dy % cross.shape[0], dx % cross.shape[1]]
    return np.linalg.solve(matrix, rhs).reshape(taps, taps)


def apply_kernel(volume: Volume, kernel: np.ndarray) -> Volume:
    """``volume`` with every axial slice filtered by the in-plane ``kernel`` exactly as the
    generator's prior does it (:func:`networks.filter_slices`), in float64."""
    from .networks import filter_slices

    with torch.no_grad():
        filtered = filter_slices(torch.from_numpy(volume.array.astype(np.float64))[None, None],
                                 torch.from_numpy(np.asarray(kernel, np.float64))[None, None, None])
    return volume.with_array(filtered[0, 0].numpy().astype(np.float32),
                             source=f"{kernel.shape[0]}x{kernel.shape[1]} filter of {volume.source or 'a volume'}")


def fit_upsampler(pairs: Iterable[Tuple[Volume, Volume]], factors_zyx: Sequence[int], taps: int = UPSAMPLER_TAPS
                  ) -> np.ndarray:
    """The Huber-fitted upsampler (:func:`upsampler_fit.fit_upsampling_huber`, network units,
    unclipped) from (coarse, fine) Volumes in HU: what :func:`apply_upsampler` applies."""
    from .volume import hu_to_unit

    return fit_upsampling_huber([(hu_to_unit(coarse.array, clip=False), hu_to_unit(fine.array, clip=False))
                                 for coarse, fine in pairs], factors_zyx, taps)


def fit_degraded_upsampler(fine_volumes: Iterable[Volume], factors_zyx: Sequence[int],
                           taps: int = UPSAMPLER_TAPS) -> np.ndarray:
    """The Huber-fitted upsampler from high-resolution Volumes in HU alone, each degraded by the
    known operator (:func:`degraded_pair`): the unpaired generators' prior, what
    :func:`apply_upsampler` applies."""
    from .volume import hu_to_unit

    return fit_upsampling_huber(degraded_pairs([hu_to_unit(fine.array, clip=False) for fine in fine_volumes],
                                               factors_zyx), factors_zyx, taps)


def apply_upsampler(volume: Volume, weights: np.ndarray, factors_zyx: Sequence[int]) -> Volume:
    """``volume`` upsampled by the polyphase ``weights`` (phases, taps, taps, taps; network
    units) exactly as the generator's prior does it (:func:`networks.upsample_polyphase`), in
    float64, on the super-resolution grid of ``factors_zyx``."""
    from .networks import upsample_polyphase
    from .volume import hu_to_unit, super_resolution_grid, unit_to_hu

    with torch.no_grad():
        fine = upsample_polyphase(hu_to_unit(torch.from_numpy(volume.array.astype(np.float64)), clip=False)[None, None],
                                  torch.from_numpy(np.asarray(weights, np.float64))[:, None], factors_zyx)
    grid = super_resolution_grid(volume, tuple(factors_zyx)[::-1])
    return Volume(unit_to_hu(fine[0, 0].numpy()).astype(np.float32), grid.spacing, grid.origin, grid.direction,
                  source=f"{weights.shape[-1]}^3 polyphase upsampler of {volume.source or 'a volume'}")


def degraded_pair(fine: np.ndarray, factors_zyx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """A (coarse, fine) pair made from one high-resolution volume alone (network units): the
    volume cropped to whole blocks and its degradation by the known low-resolution operator
    (:class:`tensor_filters.LowResolution`: the slice profile and in-plane blur the physics term
    of unpaired training also uses). No low-resolution volume enters."""
    from .tensor_filters import LowResolution

    degrade = LowResolution(factors_zyx)
    blocks = tuple(n // f * f for n, f in zip(np.shape(fine), degrade.factors))
    if min(blocks) < 1:
        raise ConfigError(f"a high-resolution volume of {np.shape(fine)} voxels holds no whole "
                          f"{degrade.factors} (z, y, x) block")
    fine = np.asarray(fine)[tuple(slice(0, n) for n in blocks)]
    with torch.no_grad():
        coarse = degrade(torch.from_numpy(fine.astype(np.float64))[None, None])[0, 0].numpy()
    return coarse, fine


def degraded_pairs(fine_volumes: Iterable[np.ndarray], factors_zyx: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """:func:`degraded_pair` of each volume."""
    return [degraded_pair(fine, factors_zyx) for fine in fine_volumes]


class _LoadedOnAccess(SequenceBase):
    """A sequence whose items are made by their loader on each access: a fit that reads its
    pairs one at a time (:func:`upsampler_fit.fit_upsampling_huber`) holds one in memory."""

    def __init__(self, loaders: Sequence[Callable[[], Tuple[np.ndarray, np.ndarray]]]):
        self._loaders = list(loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def __getitem__(self, index):
        return self._loaders[index]()


def _install_upsampling_prior(generator, cases, source: str, target: str, paired: bool, taps: int) -> str:
    """Super-resolution: the polyphase upsampler fitted (Huber, network units) on the training
    pairs (paired), or on high-resolution volumes of the second half of the training cases
    degraded by the known low-resolution operator (unpaired: :func:`degraded_pairs`, no
    low-resolution volume and so no pair is used)."""
    factors_zyx = generator.config.upscale_zyx
    if not paired:
        _, second = unpaired_halves([c.id for c in cases])
        chosen = [c for c in cases if c.id in second and target in c.files]
        if not chosen:
            raise ConfigError(f"the linear prior needs training volumes of {target!r}")
        pairs = _LoadedOnAccess([partial(_degraded_case, case.files[target], factors_zyx) for case in chosen])
        generator.set_prior(torch.from_numpy(fit_upsampling_huber(pairs, factors_zyx, taps)))
        return (f"linear prior ({taps}^3 polyphase upsampler): Huber fit on {len(chosen)} {target} volumes "
                f"({chosen[0].id}..{chosen[-1].id}) degraded by the known low-resolution operator, no pairs")
    chosen = [c for c in cases if source in c.files and target in c.files]
    if not chosen:
        raise ConfigError(f"the linear prior needs training pairs of {source!r} and {target!r}")
    pairs = _LoadedOnAccess([partial(_unit_pair, case.files[source], case.files[target], factors_zyx)
                             for case in chosen])
    generator.set_prior(torch.from_numpy(fit_upsampling_huber(pairs, factors_zyx, taps)))
    return (f"linear prior ({taps}^3 polyphase upsampler): Huber fit (threshold {HUBER_DELTA} network units) "
            f"on {len(chosen)} training pairs")


def _degraded_case(path, factors_zyx) -> Tuple[np.ndarray, np.ndarray]:
    from .volume import hu_to_unit
    from .volume_io import read_volume

    return degraded_pair(hu_to_unit(read_volume(path).array, clip=False), factors_zyx)


def _unit_pair(source_path, target_path, factors_zyx) -> Tuple[np.ndarray, np.ndarray]:
    """One training pair in network units, its grids checked against the factors."""
    from .volume import hu_to_unit
    from .volume_io import read_volume

    coarse, fine = read_volume(source_path), read_volume(target_path)
    if fine.shape != tuple(n * f for n, f in zip(coarse.shape, factors_zyx)):
        raise ConfigError(f"{target_path}: the linear prior needs {tuple(factors_zyx)} (z, y, x) x the "
                          f"low-resolution grid {coarse.shape} of {source_path}, got {fine.shape}")
    return hu_to_unit(coarse.array, clip=False), hu_to_unit(fine.array, clip=False)
