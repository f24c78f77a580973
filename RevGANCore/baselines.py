"""Classical baselines the learned models are compared with.

- super-resolution: B-spline (or linear) interpolation of the low-resolution volume onto the
  high-resolution grid;
- kernel conversion sharp -> smooth: identity; the in-plane Gaussian
  (:func:`~RevGANCore.degradations.gaussian_inplane`) whose sigma is fitted here on TRAINING
  cases (never on test cases); and the linear oracle
  (:func:`~RevGANCore.degradations.kernel_oracle`), the MTF-ratio filter the simulation
  implies (a ceiling: with shared noise it is nearly exact).
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import numpy as np

from .degradations import gaussian_inplane
from .metrics import body_mask, mae
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
