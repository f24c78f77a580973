"""The strongest classical method for a real scan's in-plane super-resolution: an upsampler
fitted on ANOTHER real scan, degraded exactly as the benchmarked one is.

The shipped default model learned from pyradiomics' lung1 (self-supervised in-plane pairs,
docs/training.md "Real-scan pairs"); interpolation is not the bar for it. The same pairs
(lung1 degraded in-plane by the benchmark's degradation -> lung1) fit a polyphase upsampler,
5^3 coarse voxels per fine in-plane phase (the real slices along z are kept: z factor 1),
by the Huber fit of the generators' priors (:mod:`RevGANCore.upsampler_fit`). It predicts on
the real grid, so it is scored like in-plane B-spline. The fit scan is never the scored one:
lung1 for any scan but lung1, lung2 for lung1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["FITTED_TAPS", "fit_scan_for", "fit_in_plane_upsampler", "apply_in_plane_upsampler"]

FITTED_TAPS = 5


def fit_scan_for(scored: Path) -> Tuple[Optional[Path], str]:
    """(the scan to fit on, or None, and why): the other of pyradiomics' two chest scans."""
    from .real import REAL_SCAN_FILES, real_ct_dir

    folder = real_ct_dir()
    name = "lung2" if Path(scored).name == REAL_SCAN_FILES["lung1"] else "lung1"
    path = folder / REAL_SCAN_FILES[name]
    if not path.is_file():
        return None, f"{path} is missing (python tools/fetch_real_ct.py fetches it)"
    if path.resolve() == Path(scored).resolve():
        return None, f"{path} is the scored scan"
    return path, f"{name}, degraded in-plane like the scored scan"


def fit_in_plane_upsampler(scan, factors_xy: Sequence[int], degradation: str) -> np.ndarray:
    """Huber-fitted (phases, 5, 5, 5) in-plane upsampler (network units) from ``scan`` (a
    Volume) degraded by ``degradation`` to the scan itself, reconstruction-circle padding
    replaced by air on both sides (the degraded input has none)."""
    from ..field_of_view import padding_mask, without_padding
    from ..linear_prior import fit_upsampler
    from ..real_degradation import degrade_in_plane

    fx, fy = (int(f) for f in factors_xy)
    scan = scan.with_array(scan.array[:, :scan.shape[1] // fy * fy, :scan.shape[2] // fx * fx])
    padding = padding_mask(scan)
    target = scan if padding is None else without_padding(scan, padding)
    return fit_upsampler([(degrade_in_plane(scan, (fx, fy), degradation), target)], (1, fy, fx), FITTED_TAPS)


def apply_in_plane_upsampler(low, weights: np.ndarray, factors_xy: Sequence[int]):
    """``low`` (a Volume) upsampled in-plane by ``weights`` onto its fine in-plane grid."""
    from ..linear_prior import apply_upsampler

    fx, fy = (int(f) for f in factors_xy)
    return apply_upsampler(low, weights, (1, fy, fx))
