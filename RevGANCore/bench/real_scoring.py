"""Scores of a super-resolved real scan against its real slabs (``revgan bench real``).

Every score compares the prediction's slab averages (:func:`RevGANCore.real_degradation.slab_average`)
with the real scan, voxel for voxel, so a method is judged only on what the real slices can
tell: nothing finer than a slab along z is rewarded or punished.

- :func:`slab_scores`: MAE (HU) and PSNR (dB) inside the real scan's body mask
  (:func:`RevGANCore.metrics.body_mask`); PSNR on the window-normalised values (the HU window
  of :mod:`RevGANCore.volume` clipped and mapped to [-1, 1], data range 2). SSIM: the 3D SSIM
  of :mod:`RevGANCore.metrics` (window-normalised, data range 2) over the body's in-plane
  bounding box and every slab; None when that box has fewer than 11 voxels along an axis.
- :func:`hu_regions`: bone = above 300 HU in the real scan, eroded by 1 pixel in-plane (away
  from partial-volume edges); soft tissue = 0 to 100 HU, eroded by 2 pixels; aorta = the
  largest 3D blob of 100 to 300 HU (contrast-enhanced blood), eroded by 1 pixel, that does not
  touch bone (above 300 HU, dilated 2 pixels: this rejects the vertebral bodies' cancellous
  bone), spans 3 slabs or more and is round in its middle slab (at least 1 cm2, filling at
  least 60 % of its bounding ellipse). Without contrast there is no such blob and the region
  is None (a note says so). All within the body mask; erosions are in-plane only (slabs are thick).
- :func:`hu_bias`: mean (prediction - real) of the slab averages over a region.
- :func:`z_alternation`: on the prediction's own (finer) slices, over flat regions (soft
  tissue whose real slab differs by less than 20 HU from its neighbours, after a 5 x 5
  in-plane mean). For every 4 consecutive slices inside one slab, the third difference
  ``(s0 - 3 s1 + 3 s2 - s3) / 8`` of their region means is the amplitude ``A`` of a pattern
  ``A (-1)^j`` and is blind to anything quadratic along z (trends, curvature) and to the
  steps between slabs. ``alternation_hu`` = ``2 |mean A|``: the step between neighbouring slices
  (None when a slab holds fewer than 4 slices). ``mean_abs_step_hu``: mean over neighbouring
  slices of ``|mean difference|`` over the flat region (trend and alternation together).
- :func:`border_scores`: slab-average MAE and bias (HU, body) of the slabs whose centres lie
  within 10 mm of the volume's first or last face, and of the slabs between.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from ..metrics import body_mask, mae, ssim3d
from ..real_degradation import slab_weights
from ..volume import DEFAULT_HU_WINDOW, Volume, hu_to_unit

__all__ = ["BONE_HU", "SOFT_TISSUE_HU", "AORTA_HU", "BORDER_MM", "FLAT_STEP_HU", "slab_scores", "hu_regions",
           "hu_bias", "z_alternation", "border_scores"]

BONE_HU = 300.0
SOFT_TISSUE_HU = (0.0, 100.0)
AORTA_HU = (100.0, 300.0)
BORDER_MM = 10.0
FLAT_STEP_HU = 20.0
SSIM_MIN_VOXELS = 11  # 3D SSIM, Gaussian sigma 1.5 truncated at 3.5 sigma: 11 taps
_AORTA_MIN_AREA_MM2 = 100.0
_AORTA_MIN_FILL = 0.6
_AORTA_MIN_SLABS = 3


def _mean_or_none(values: np.ndarray) -> Optional[float]:
    return float(values.mean()) if values.size else None


def slab_scores(slabs: Volume, real: Volume, body: np.ndarray, window=DEFAULT_HU_WINDOW) -> Dict[str, Optional[float]]:
    """MAE (HU), PSNR (dB) and SSIM of slab averages against the real scan (module docs)."""
    prediction = np.asarray(slabs.array)
    truth = np.asarray(real.array)
    unit_prediction = hu_to_unit(prediction, window)
    unit_truth = hu_to_unit(truth, window)
    squared = np.square(unit_prediction[body].astype(np.float64) - unit_truth[body].astype(np.float64)).mean()
    psnr = math.inf if squared == 0 else 10.0 * math.log10(4.0 / squared)
    rows = np.nonzero(body.any(axis=(0, 2)))[0]
    columns = np.nonzero(body.any(axis=(0, 1)))[0]
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    ssim = None
    if min(truth[box].shape) >= SSIM_MIN_VOXELS:
        ssim = ssim3d(unit_prediction[box], unit_truth[box], 2.0)
    return {"psnr_db": psnr, "ssim": ssim, "mae_hu": mae(prediction, truth, body)}


def _in_plane(mask: np.ndarray, radius: int, operation: str) -> np.ndarray:
    import SimpleITK as sitk

    if radius <= 0:
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    filter_ = sitk.BinaryErode if operation == "erode" else sitk.BinaryDilate
    return sitk.GetArrayFromImage(filter_(image, [radius, radius, 0], sitk.sitkBall, 0, 1)).astype(bool)


def _enhanced_aorta(real: np.ndarray, body: np.ndarray, spacing) -> Tuple[Optional[np.ndarray], str]:
    import SimpleITK as sitk

    candidates = _in_plane((real > AORTA_HU[0]) & (real < AORTA_HU[1]) & body, 1, "erode")
    near_bone = _in_plane(real > BONE_HU, 2, "dilate")
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(candidates.astype(np.uint8))))
    touching = np.unique(labels[near_bone & (labels > 0)])
    labels[np.isin(labels, touching)] = 0
    if not labels.any():
        return None, "no 100-300 HU blob away from bone (a non-contrast scan?)"
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    blob = labels == int(np.argmax(counts))
    slabs = np.nonzero(blob.any(axis=(1, 2)))[0]
    if slabs.size < _AORTA_MIN_SLABS:
        return None, f"largest 100-300 HU blob spans {slabs.size} slab(s), fewer than {_AORTA_MIN_SLABS}"
    middle = blob[slabs[slabs.size // 2]]
    area = middle.sum() * spacing[0] * spacing[1]
    rows, columns = np.nonzero(middle)
    ellipse = math.pi / 4 * (np.ptp(rows) + 1) * spacing[1] * (np.ptp(columns) + 1) * spacing[0]
    if area < _AORTA_MIN_AREA_MM2 or area / ellipse < _AORTA_MIN_FILL:
        return None, (f"largest 100-300 HU blob is not a vessel cross-section ({area:.0f} mm2, fills "
                      f"{area / ellipse:.0%} of its bounding ellipse)")
    return blob, f"largest round 100-300 HU blob ({int(blob.sum())} voxels, {slabs.size} slabs)"


def hu_regions(real: Volume, body: Optional[np.ndarray] = None) -> Dict[str, dict]:
    """name -> {"mask": boolean array or None, "voxels": count, "definition": text}."""
    array = np.asarray(real.array, dtype=np.float32)
    body = body_mask(array) if body is None else body
    bone = _in_plane((array > BONE_HU) & body, 1, "erode")
    soft = _in_plane((array >= SOFT_TISSUE_HU[0]) & (array <= SOFT_TISSUE_HU[1]) & body, 2, "erode")
    aorta, note = _enhanced_aorta(array, body, real.spacing)
    regions = {"bone": (bone, f"> {BONE_HU:g} HU, eroded 1 pixel in-plane"),
               "soft_tissue": (soft, f"{SOFT_TISSUE_HU[0]:g} to {SOFT_TISSUE_HU[1]:g} HU, eroded 2 pixels in-plane"),
               "aorta": (aorta, note)}
    return {name: {"mask": mask if mask is not None and mask.any() else None,
                   "voxels": int(mask.sum()) if mask is not None else 0, "definition": text}
            for name, (mask, text) in regions.items()}


def hu_bias(slabs: Volume, real: Volume, mask: Optional[np.ndarray]) -> Optional[float]:
    """Mean (slab average - real) in HU over ``mask`` (None for no region)."""
    if mask is None:
        return None
    return _mean_or_none(np.asarray(slabs.array, dtype=np.float64)[mask] - np.asarray(real.array, np.float64)[mask])


def flat_slabs(real: Volume, soft_tissue: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Soft tissue whose (5 x 5 in-plane mean) real slab is within FLAT_STEP_HU of its neighbours."""
    import SimpleITK as sitk

    if soft_tissue is None:
        return None
    smooth = sitk.GetArrayFromImage(sitk.Mean(sitk.GetImageFromArray(np.asarray(real.array, np.float32)), [2, 2, 0]))
    flat = soft_tissue.copy()
    if smooth.shape[0] > 1:
        step = np.abs(np.diff(smooth, axis=0)) < FLAT_STEP_HU
        flat[1:] &= step
        flat[:-1] &= step
    return flat


def z_alternation(prediction: Volume, real: Volume, flat: Optional[np.ndarray], min_voxels: int = 50) -> dict:
    """Period-2 alternation of ``prediction``'s slices over ``flat`` (see the module docs)."""
    result = {"alternation_hu": None, "mean_abs_step_hu": None, "windows": 0}
    if flat is None or prediction.shape[0] < 2:
        return result
    slab_of = np.argmax(slab_weights(prediction.grid, real.grid), axis=0)  # each slice's main slab
    array = prediction.array
    steps, patterns = [], []
    for j in range(prediction.shape[0] - 1):
        region = flat[slab_of[j]] & flat[slab_of[j + 1]]
        if region.sum() >= min_voxels:
            steps.append(abs(float((array[j + 1][region].astype(np.float64) - array[j][region]).mean())))
        window = slab_of[j:j + 4]
        if len(window) == 4 and np.all(window == window[0]) and flat[window[0]].sum() >= min_voxels:
            region = flat[window[0]]
            values = [array[j + i][region].astype(np.float64) for i in range(4)]
            third = (values[0] - 3 * values[1] + 3 * values[2] - values[3]).mean() / 8.0  # A for A(-1)^j
            patterns.append(third if j % 2 == 0 else -third)
    if steps:
        result["mean_abs_step_hu"] = float(np.mean(steps))
    if patterns:
        result["alternation_hu"] = 2.0 * abs(float(np.mean(patterns)))
        result["windows"] = len(patterns)
    return result


def border_scores(slabs: Volume, real: Volume, body: np.ndarray, border_mm: float = BORDER_MM) -> dict:
    """MAE and bias of the slabs within ``border_mm`` of the first/last face, and between."""
    count = real.shape[0]
    offsets = (np.arange(count) + 0.5) * real.spacing[2]  # slab centre from the first face
    first = offsets <= border_mm
    last = offsets[::-1] <= border_mm
    middle = ~(first | last)
    difference = np.asarray(slabs.array, np.float64) - np.asarray(real.array, np.float64)
    result = {}
    for name, which in (("first_10mm", first), ("last_10mm", last), ("middle", middle)):
        values = difference[which][body[which]]
        result[f"{name}_mae_hu"] = _mean_or_none(np.abs(values))
        result[f"{name}_bias_hu"] = _mean_or_none(values)
    return result
