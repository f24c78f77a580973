"""Image-quality metrics for translated CT volumes: body mask, MAE in HU, PSNR, 3D SSIM.

Definitions (all explicit; nothing is inferred from the dtype):

- ``body_mask(hu)``: voxels above -500 HU, the largest 6-connected component, with the
  holes of each axial (array axis 0) slice filled. Slice-wise filling closes the lungs and
  airways, which in 3D are open to the outside through the trachea.
- ``mae(a, b, mask)``: mean absolute difference over the mask (HU in, HU out).
- ``psnr(a, b, data_range)``: ``10 log10(data_range^2 / MSE)`` over all voxels; ``inf`` for
  identical inputs.
- ``ssim3d(a, b, data_range)``: SSIM (Wang et al. 2004) with a 3D Gaussian window (sigma
  1.5, truncated at 3.5 sigma: 11 taps), K1 = 0.01, K2 = 0.03, population covariances,
  averaged over the voxels whose window lies inside the volume (5 voxels from every face).
  This is what scikit-image's ``structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=...)`` computes on a 3D array; the
  tests check the two agree. Computed in float64 in slabs, so memory stays bounded.
- ``summarize(values)``: mean and sample standard deviation (ddof = 1; NaN, undefined, for one
  value).

Every function reads its inputs only; metrics over big volumes are accumulated slab by slab.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional

import numpy as np
import torch

from .errors import ConfigError, VolumeError

__all__ = ["BODY_THRESHOLD_HU", "body_mask", "mae", "mse", "psnr", "ssim3d", "gaussian_kernel",
           "Summary", "summarize", "compare_volumes", "METRIC_NAMES", "METRIC_DEFINITIONS"]

BODY_THRESHOLD_HU = -500.0
_SLAB_ELEMENTS = 1 << 23  # float64 elements per quantity per slab (64 MiB)


def _as_array(values, what: str) -> np.ndarray:
    array = getattr(values, "array", values)  # a Volume or an array
    array = np.asarray(array)
    if array.ndim != 3:
        raise VolumeError(f"{what} must be a 3D array (z, y, x), got shape {array.shape}")
    return array


def _pair(a, b):
    a = _as_array(a, "first volume")
    b = _as_array(b, "second volume")
    if a.shape != b.shape:
        raise VolumeError(f"volumes to compare have different shapes {a.shape} and {b.shape}")
    return a, b


def _slabs(depth: int, plane: int, margin: int = 0):
    step = max(1, _SLAB_ELEMENTS // max(plane, 1) - 2 * margin)
    for start in range(0, depth, step):
        yield start, min(depth, start + step)


def body_mask(hu, threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Boolean (z, y, x) mask of the patient's body (see the module documentation)."""
    import SimpleITK as sitk

    array = _as_array(hu, "volume")
    above = np.ascontiguousarray(array > threshold, dtype=np.uint8)
    if not above.any():
        return np.zeros(array.shape, dtype=bool)
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(above), False)
    largest = sitk.GetArrayFromImage(sitk.RelabelComponent(components, 0, True)) == 1
    mask = np.empty(array.shape, dtype=bool)
    for k in range(array.shape[0]):
        if largest[k].any():
            filled = sitk.BinaryFillhole(sitk.GetImageFromArray(largest[k].astype(np.uint8)), False, 1)
            mask[k] = sitk.GetArrayFromImage(filled).astype(bool)
        else:
            mask[k] = False
    return mask


def mae(a, b, mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute difference of ``a`` and ``b`` over ``mask`` (all voxels if None)."""
    a, b = _pair(a, b)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise VolumeError(f"mask shape {mask.shape} does not match the volumes' {a.shape}")
    total = 0.0
    count = 0
    for start, stop in _slabs(a.shape[0], a.shape[1] * a.shape[2]):
        difference = np.abs(a[start:stop].astype(np.float64) - b[start:stop].astype(np.float64))
        if mask is None:
            total += float(difference.sum())
            count += difference.size
        else:
            total += float(difference[mask[start:stop]].sum())
            count += int(mask[start:stop].sum())
    if count == 0:
        raise VolumeError("the mask is empty: no voxel to average over (no body above "
                          f"{BODY_THRESHOLD_HU:g} HU?)")
    return total / count


def mse(a, b) -> float:
    """Mean squared difference over all voxels (float64 accumulation)."""
    a, b = _pair(a, b)
    total = 0.0
    for start, stop in _slabs(a.shape[0], a.shape[1] * a.shape[2]):
        difference = a[start:stop].astype(np.float64) - b[start:stop].astype(np.float64)
        total += float(np.square(difference).sum())
    return total / a.size


def _checked_range(data_range) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.integer, np.floating)):
        raise ConfigError(f"data_range must be a positive number, got {data_range!r}")
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"data_range must be a positive number, got {data_range!r}")
    return value


def psnr(a, b, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for an explicit ``data_range`` (max - min of the scale)."""
    value_range = _checked_range(data_range)
    error = mse(a, b)
    if error == 0:
        return math.inf
    return 10.0 * math.log10(value_range ** 2 / error)


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """Normalised 1D Gaussian taps with radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(volume: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable correlation of the last three axes, keeping only fully covered voxels."""
    width = taps.numel()
    for axis in (-3, -2, -1):
        length = volume.shape[axis] - width + 1
        result = taps[0] * volume.narrow(axis, 0, length)
        for k in range(1, width):
            result = result + taps[k] * volume.narrow(axis, k, length)
        volume = result
    return volume


def ssim3d(a, b, data_range: float, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
           truncate: float = 3.5) -> float:
    """Mean 3D SSIM of ``a`` and ``b`` with an explicit ``data_range``."""
    a, b = _pair(a, b)
    value_range = _checked_range(data_range)
    taps = torch.from_numpy(gaussian_kernel(sigma, truncate))
    width = taps.numel()
    radius = width // 2
    if min(a.shape) < width:
        raise VolumeError(f"3D SSIM with sigma {sigma} needs at least {width} voxels per axis; "
                          f"the volumes are {a.shape}")
    c1 = (k1 * value_range) ** 2
    c2 = (k2 * value_range) ** 2
    depth = a.shape[0] - 2 * radius  # output slices
    total = 0.0
    count = 0
    for start, stop in _slabs(depth, a.shape[1] * a.shape[2], margin=radius):
        x = torch.from_numpy(np.asarray(a[start:stop + 2 * radius], dtype=np.float64))
        y = torch.from_numpy(np.asarray(b[start:stop + 2 * radius], dtype=np.float64))
        stacked = torch.stack([x, y, x * x, y * y, x * y])
        del x, y
        ux, uy, uxx, uyy, uxy = _filter_valid(stacked, taps)
        del stacked
        vx = uxx - ux * ux
        vy = uyy - uy * uy
        vxy = uxy - ux * uy
        ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        total += float(ssim_map.sum())
        count += ssim_map.numel()
    return total / count


class Summary(NamedTuple):
    mean: float
    std: float
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean and sample standard deviation (ddof 1); the std is NaN where it is undefined: for a
    single value (a spread of 0 would claim a certainty one value cannot give), and when a
    value is non-finite (PSNR of identical volumes is inf; the mean is then inf or NaN).
    JSON outputs write NaN as null."""
    numbers = [float(v) for v in values]
    if not numbers:
        raise ConfigError("no values to summarise")
    array = np.asarray(numbers, dtype=np.float64)
    if not np.all(np.isfinite(array)):  # e.g. PSNR of identical volumes is inf
        mean = float(array.mean()) if not np.isnan(array).any() else math.nan
        return Summary(mean, math.nan, len(numbers))
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, len(numbers))


METRIC_NAMES = ("mae_hu", "psnr_unit_db", "psnr_hu_db", "ssim")

METRIC_DEFINITIONS = {
    "mae_hu": "mean |prediction - target| in HU inside the target's body mask (HU > -500, largest "
              "component, holes filled per axial slice); raw HU, not clipped",
    "psnr_unit_db": "PSNR in dB of the window-normalised volumes (HU window clipped and mapped to "
                    "[-1, 1]), data range 2 (the seed paper's convention)",
    "psnr_hu_db": "PSNR in dB of the raw HU volumes, data range = the HU window width (1500 HU for "
                  "[-1150, 350])",
    "ssim": "3D SSIM (Gaussian sigma 1.5, K1 0.01, K2 0.03) of the window-normalised volumes, data "
            "range 2",
}


def compare_volumes(prediction, target, window=(-1150.0, 350.0), mask: Optional[np.ndarray] = None) -> dict:
    """The four metrics of one prediction against its target (both HU, same grid)."""
    from .volume import Volume, hu_to_unit

    if isinstance(prediction, Volume) and isinstance(target, Volume) and not prediction.same_geometry(target):
        raise VolumeError(f"prediction and target lie on different grids ({prediction!r} vs {target!r}); "
                          "resample the prediction onto the target's grid first")
    a, b = _pair(prediction, target)
    low, high = float(window[0]), float(window[1])
    if mask is None:
        mask = body_mask(b)
    unit_a = hu_to_unit(np.asarray(a, dtype=np.float32), (low, high))
    unit_b = hu_to_unit(np.asarray(b, dtype=np.float32), (low, high))
    return {
        "mae_hu": mae(a, b, mask),
        "psnr_unit_db": psnr(unit_a, unit_b, 2.0),
        "psnr_hu_db": psnr(a, b, high - low),
        "ssim": ssim3d(unit_a, unit_b, 2.0),
    }
