"""Classical baselines the learned models are compared with (all fitted on TRAINING cases,
never on test cases).

- super-resolution: nearest-neighbour, linear or B-spline interpolation of the
  low-resolution volume onto the high-resolution grid (no pairs needed); the polyphase
  linear filter on the B-spline grid fitted on pairs (:mod:`RevGANCore.upsampling_filter`);
- kernel conversion sharp -> smooth: the identity; the spectral-ratio filter from unpaired
  volumes and the least-squares radial filter from pairs (:mod:`RevGANCore.linear_filter`);
  the in-plane Gaussian (:func:`~RevGANCore.degradations.gaussian_inplane`) whose sigma is
  fitted on pairs; and the oracle (:func:`~RevGANCore.degradations.kernel_oracle`), the
  MTF-ratio filter the simulation implies.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import numpy as np

from .degradations import gaussian_inplane
from .linear_filter import RadialFilter, fit_radial_filter, fit_spectral_ratio_filter
from .metrics import body_mask, mae
from .upsampling_filter import PolyphaseFilter, fit_polyphase_filter
from .volume import Volume, resample_to_grid, super_resolution_grid

#: Candidate in-plane sigmas (mm) for the Gaussian baseline: 0 (identity) to 1.5 mm.
GAUSSIAN_SIGMAS_MM = tuple(round(0.05 * i, 2) for i in range(31))


def interpolate_super_resolution(low_resolution: Volume, factors_xyz: Sequence[int],
                                 interpolation: str = "bspline") -> Volume:
    """The low-resolution volume resampled onto its high-resolution grid."""
    return resample_to_grid(low_resolution, super_resolution_grid(low_resolution, factors_xyz),
                            interpolation=interpolation)


def fit_gaussian_sigma(pairs: Iterable[Tuple[Volume, Volume]],
                       candidates: Sequence[float] = GAUSSIAN_SIGMAS_MM) -> Tuple[float, float]:
    """The in-plane sigma (mm) minimising the mean body-mask MAE (HU) from sharp to smooth
    over ``pairs`` of (sharp, smooth) training volumes; returns (sigma, its MAE)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("fitting the Gaussian baseline needs at least one (sharp, smooth) pair")
    masks = [body_mask(smooth.array) for _, smooth in pairs]
    best_sigma, best_error = 0.0, float("inf")
    for sigma in candidates:
        errors = [mae(gaussian_inplane(sharp, sigma).array, smooth.array, mask)
                  for (sharp, smooth), mask in zip(pairs, masks)]
        error = float(np.mean(errors))
        if error < best_error:
            best_sigma, best_error = float(sigma), error
    return best_sigma, best_error


def fit_kernel_filter(pairs: Iterable[Tuple[Volume, Volume]]) -> RadialFilter:
    """The least-squares radial filter from (sharp, smooth) training pairs."""
    return fit_radial_filter(pairs)


def fit_spectral_ratio(sharp_volumes: Iterable[Volume], smooth_volumes: Iterable[Volume]) -> RadialFilter:
    """The spectral-ratio filter from UNPAIRED sharp and smooth training volumes (of different cases)."""
    return fit_spectral_ratio_filter(sharp_volumes, smooth_volumes)


def fit_super_resolution_filter(pairs: Iterable[Tuple[Volume, Volume]], factors_xyz: Sequence[int]) -> PolyphaseFilter:
    """The polyphase linear filter on the B-spline grid from (low-resolution, high-resolution)
    training pairs; apply it to :func:`interpolate_super_resolution`'s output."""
    upsampled = [(interpolate_super_resolution(low, factors_xyz), high) for low, high in pairs]
    return fit_polyphase_filter(upsampled, tuple(int(f) for f in factors_xyz)[::-1])
