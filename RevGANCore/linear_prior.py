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
  forward residual path, by least squares on the training pairs (paired) or on each
  low-resolution volume's own B-spline interpolation (unpaired: no high-resolution volume).

An untrained generator is therefore the classical filter, and every improvement on it is
learned. Why: on 2 CPU cores a kernel generator that starts as the identity spent 400
iterations getting from 60 to 34 HU mean error on the nonlinear-world phantoms, where one
least-squares solve gives 12 HU (docs/training.md, "Linear prior").

The filters are fitted at the training data's voxel size; inference brings a scan to that
size first (the model file records it), so the prior, like the network, acts in millimetres.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch

from .errors import ConfigError
from .linear_filter import RadialFilter, fit_spectral_ratio_filter
from .volume import Volume

__all__ = ["PRIOR_TAPS", "fit_fir_least_squares", "fit_fir_both_ways", "fit_spectral_ratio_kernel", "cut_to_taps",
           "fit_prior_kernels", "fit_upsampling_least_squares", "unpaired_halves", "install_prior", "apply_kernel"]

#: The prior's width in the shipped configurations and the quality bench's FIR rows: 11 taps
#: (8.8 mm at 0.8 mm pixels) come within 0.1 HU of the full-band least-squares filter on the
#: phantoms; 7 taps lose 0.3 HU.
PRIOR_TAPS = 11
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
    first, second = unpaired_halves([c.id for c in cases])
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


def _checked_taps(taps, what: str) -> None:
    if not (isinstance(taps, int) and taps >= 1 and taps % 2 == 1):
        raise ConfigError(f"{what} needs an odd number of taps, got {taps!r}")


def _correlations(pairs: Iterable[Tuple[Volume, Volume]], taps: int, slice_step: int, both_ways: bool):
    """Sums over the slices of every pair of the source's autocorrelation, the target's (with
    ``both_ways``; else None) and ``C(d) = sum_p target(p) source(p + d)``, on a grid padded so
    that lags up to ``taps`` do not wrap."""
    _checked_taps(taps, "an FIR fit")
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


def fit_upsampling_least_squares(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], factors_zyx: Sequence[int],
                                 taps: int) -> np.ndarray:
    """The (phases, taps, taps, taps) polyphase upsampler with the least squared error on
    ``pairs`` of (coarse, fine) arrays (fine = coarse x factors per axis): each fine voxel at
    ``coarse index * factor + phase`` is a weighted sum of the taps^3 coarse voxels around its
    coarse voxel (border voxels replicated, as the generator does), each phase's weights
    summing to 1. Phase order as :func:`polyphase.interleave_phases`. One normal matrix serves
    every phase."""
    _checked_taps(taps, "an upsampling fit")
    fz, fy, fx = (int(f) for f in factors_zyx)
    half = taps // 2
    normal = np.zeros((taps ** 3, taps ** 3))
    right = np.zeros((taps ** 3, fz * fy * fx))
    for coarse, fine in pairs:
        coarse = np.asarray(coarse, dtype=np.float64)
        fine = np.asarray(fine, dtype=np.float64)
        depth, height, width = coarse.shape
        if fine.shape != (depth * fz, height * fy, width * fx):
            raise ConfigError(f"a fine volume of {fine.shape} voxels is not {factors_zyx} x its coarse "
                              f"{coarse.shape}")
        padded = np.pad(coarse, half, mode="edge")
        for z in range(depth):  # slab by slab: memory stays at one coarse slice of neighbourhoods
            windows = np.lib.stride_tricks.sliding_window_view(padded[z:z + taps], (taps, taps, taps))
            neighbourhoods = windows.reshape(height * width, taps ** 3)
            phases = fine[z * fz:(z + 1) * fz].reshape(fz, height, fy, width, fx)
            phases = phases.transpose(1, 3, 0, 2, 4).reshape(height * width, fz * fy * fx)
            normal += neighbourhoods.T @ neighbourhoods
            right += neighbourhoods.T @ phases
    if not normal.any():
        raise ConfigError("an upsampling fit needs at least one pair")
    normal = normal + 1e-9 * np.trace(normal) / normal.shape[0] * np.eye(normal.shape[0])
    weights = np.linalg.solve(normal, right)
    # Every phase passes a constant unchanged (sum of weights exactly 1; the least-squares
    # solution under that constraint, by a Lagrange multiplier): phases whose sums differed
    # would print a periodic pattern on a uniform region, the checkerboard the "resize"
    # layout exists to avoid.
    ones = np.ones(normal.shape[0])
    towards = np.linalg.solve(normal, ones)
    weights += np.outer(towards, (1.0 - weights.sum(axis=0)) / towards.sum())
    return weights.T.reshape(fz * fy * fx, taps, taps, taps)


def apply_kernel(volume: Volume, kernel: np.ndarray) -> Volume:
    """``volume`` with every axial slice filtered by the in-plane ``kernel`` exactly as the
    generator's prior does it (:func:`networks.filter_slices`), in float64."""
    from .networks import filter_slices

    with torch.no_grad():
        filtered = filter_slices(torch.from_numpy(volume.array.astype(np.float64))[None, None],
                                 torch.from_numpy(np.asarray(kernel, np.float64))[None, None, None])
    return volume.with_array(filtered[0, 0].numpy().astype(np.float32),
                             source=f"{kernel.shape[0]}x{kernel.shape[1]} filter of {volume.source or 'a volume'}")


def _install_upsampling_prior(generator, cases, source: str, target: str, paired: bool, taps: int) -> str:
    """Super-resolution: the polyphase upsampler fitted in network units on the training pairs
    (paired), or on each training case's low-resolution volume against its own B-spline
    interpolation (unpaired: no high-resolution volume is used)."""
    from .baselines import interpolate_super_resolution
    from .volume import hu_to_unit
    from .volume_io import read_volume

    factors_zyx = generator.config.upscale_zyx
    pairs = []
    for case in cases:
        if source not in case.files or (paired and target not in case.files):
            continue
        coarse = read_volume(case.files[source])
        fine = (read_volume(case.files[target]) if paired
                else interpolate_super_resolution(coarse, factors_zyx[::-1], "bspline"))
        if fine.shape != tuple(n * f for n, f in zip(coarse.shape, factors_zyx)):
            raise ConfigError(f"{case.files[target] if paired else case.files[source]}: the linear prior needs "
                              f"{factors_zyx} (z, y, x) x the low-resolution grid {coarse.shape}, got {fine.shape}")
        pairs.append((hu_to_unit(coarse.array, clip=False), hu_to_unit(fine.array, clip=False)))
    if not pairs:
        raise ConfigError(f"the linear prior needs training volumes of {source!r}"
                          f"{f' and {target!r}' if paired else ''}")
    generator.set_prior(torch.from_numpy(fit_upsampling_least_squares(pairs, factors_zyx, taps)))
    account = (f"least squares on {len(pairs)} training pairs" if paired else
               f"B-spline interpolation of {len(pairs)} {source} volumes, no {target} volume")
    return f"linear prior ({taps}^3 polyphase upsampler): {account}"
