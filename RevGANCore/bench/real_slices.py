"""``revgan bench real --single-slices``: in-plane super-resolution on single real CT slices.

Real slices from other scanners, kernels and body regions than the two chest scans (pydicom's
and pydicom-data's CT files, fetched by ``tools/fetch_real_ct.py --slices``) test the model on
data it has never seen, in-plane only:

1. The slice (a multi-frame file: its middle frame) is cropped in-plane, centred, to a
   multiple of the model's in-plane factors and stacked into a volume that is constant along
   z: :data:`STACK_SLICES` copies of the slice, each the model's training slice thickness
   thick (5 mm when the file records none), so the model sees the geometry it was trained on.
2. That volume is degraded in-plane (:func:`RevGANCore.real_degradation.degrade_in_plane`,
   Gaussian or box binning), super-resolved by the model and, as baselines, interpolated
   (cubic B-spline and linear onto the model's output grid; in-plane B-spline onto the
   slice's own grid).
3. Each result is averaged over the middle slab (:func:`RevGANCore.real_degradation.slab_average`)
   and scored against the real slice inside its body mask (:mod:`RevGANCore.bench.real_scoring`):
   PSNR, MAE, 2D SSIM (the 3D SSIM of the slab repeated along z, which is the 2D SSIM with
   the same Gaussian window), and the mean bias over bone and soft tissue.

Reconstruction-circle padding (<= -1500 HU, e.g. GE's -3024) is air for the degradation and
lies outside the body mask, so it is never scored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import VolumeError

__all__ = ["SLICE_DIR", "STACK_SLICES", "read_real_slice", "slice_volume", "cached_slices", "score_slice",
           "run_slice_benchmark", "format_slice_table"]

#: Folder under the real-CT cache that tools/fetch_real_ct.py --slices fills.
SLICE_DIR = "slices"
#: Copies of the slice along z; the middle slab is scored (a z-constant stack gives the same
#: slab everywhere when the model keeps z-constant input z-constant).
STACK_SLICES = 4
#: The slab thickness when neither the model nor the file says (mm).
DEFAULT_THICKNESS_MM = 5.0
#: 3D SSIM needs this many voxels along z (11 Gaussian taps).
_SSIM_REPEAT = 11
_TAGS = {"manufacturer": "0008|0070", "kernel": "0018|1210", "slice_thickness_mm": "0018|0050",
         "body_part": "0018|0015", "image_type": "0008|0008"}

Logger = Optional[Callable[[str], None]]


def read_real_slice(path) -> tuple:
    """(HU array (y, x) float32, pixel spacing (x, y) mm, description dict) of one DICOM
    slice (a multi-frame file: its middle frame), rescale slope and intercept applied."""
    import SimpleITK as sitk

    location = Path(path)
    if not location.is_file():
        raise VolumeError(f"{location}: no such slice file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(location))
    try:
        reader.ReadImageInformation()
        image = reader.Execute()
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise VolumeError(f"{location}: cannot read it as an image ({first})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{location}: has {image.GetNumberOfComponentsPerPixel()} components per pixel; a CT "
                          "slice has one")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if array.ndim == 3:
        array = array[array.shape[0] // 2]
    if array.ndim != 2 or min(array.shape) < 8:
        raise VolumeError(f"{location}: a slice of {array.shape[::-1]} pixels is not a CT slice")
    if not (array < -500).any():
        raise VolumeError(f"{location}: no air-like value (below -500 HU): not a CT slice in HU")
    info = {"file": location.name}
    for key, tag in _TAGS.items():
        value = reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        info[key] = value or None
    if info["slice_thickness_mm"] is not None:
        try:
            info["slice_thickness_mm"] = float(info["slice_thickness_mm"])
        except ValueError:
            info["slice_thickness_mm"] = None
    spacing = tuple(float(s) for s in image.GetSpacing()[:2])
    info["pixel_mm"] = [round(s, 6) for s in spacing]
    info["pixels_xy"] = [int(array.shape[1]), int(array.shape[0])]
    return array, spacing, info


def slice_volume(array: np.ndarray, spacing_xy: Sequence[float], factors_xy: Sequence[int],
                 thickness_mm: float, source: str = "slice"):
    """The z-constant Volume of :data:`STACK_SLICES` copies of ``array``, cropped in-plane
    (centred) to a multiple of ``factors_xy``."""
    from ..volume import Volume

    fx, fy = (int(f) for f in factors_xy)
    ny, nx = array.shape[0] - array.shape[0] % fy, array.shape[1] - array.shape[1] % fx
    top, left = (array.shape[0] - ny) // 2, (array.shape[1] - nx) // 2
    crop = np.ascontiguousarray(array[top:top + ny, left:left + nx], dtype=np.float32)
    stack = np.repeat(crop[None], STACK_SLICES, axis=0)
    return Volume(stack, (float(spacing_xy[0]), float(spacing_xy[1]), float(thickness_mm)), source=source)


def cached_slices(folder: Path) -> List[Path]:
    """The slice files tools/fetch_real_ct.py --slices put in ``folder`` (sorted by name)."""
    if not folder.is_dir():
        raise VolumeError(f"{folder}: no cached slices (fetch them with: python tools/fetch_real_ct.py --slices)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise VolumeError(f"{folder}: holds no .dcm slice (fetch them with: python tools/fetch_real_ct.py --slices)")
    return files


def _slab(array: np.ndarray, volume, copies: int = 1):
    """A Volume of ``copies`` copies of one slice ``array`` (1, y, x), with ``volume``'s spacing."""
    from ..volume import Volume

    return Volume(np.repeat(np.asarray(array, dtype=np.float32), copies, axis=0), volume.spacing,
                  source=volume.source)


def score_slice(model, volume, degradation: str = "gaussian", device: str = "cpu", tile_size=None) -> dict:
    """Degrade, super-resolve and score the z-constant ``volume`` (module documentation)."""
    from ..metrics import body_mask
    from ..real_degradation import slab_average
    from . import real_scoring as scoring
    from .real import degrade_and_super_resolve

    low, predictions, seconds = degrade_and_super_resolve(model, volume, degradation, tile_size, device)
    middle = STACK_SLICES // 2
    real = _slab(volume.array[middle:middle + 1], volume)
    body = body_mask(real.array)
    if not body.any():
        raise VolumeError(f"{volume.source}: no body voxel (above -500 HU) to score")
    regions = scoring.hu_regions(real, body)
    methods = {}
    for name, prediction in predictions.items():
        slab = slab_average(prediction, volume).array[middle:middle + 1]
        slab_volume = _slab(slab, volume)
        scores = scoring.slab_scores(_slab(slab, volume, _SSIM_REPEAT), _slab(real.array, volume, _SSIM_REPEAT),
                                     np.repeat(body, _SSIM_REPEAT, axis=0))
        scores["bone_bias_hu"] = scoring.hu_bias(slab_volume, real, regions["bone"]["mask"])
        scores["soft_tissue_bias_hu"] = scoring.hu_bias(slab_volume, real, regions["soft_tissue"]["mask"])
        methods[name] = scores
    return {"used_xy": [int(volume.shape[2]), int(volume.shape[1])], "body_pixels": int(body.sum()),
            "bone_pixels": regions["bone"]["voxels"], "model_seconds": round(seconds, 2), "methods": methods}


def run_slice_benchmark(files: Optional[Sequence] = None, model=None, degradation: str = "gaussian",
                        device: str = "cpu", tile_size=None, log: Logger = None) -> dict:
    """Every slice of ``files`` (default: the cached ones) scored with ``model`` (default:
    the shipped default super-resolution model); see the module documentation."""
    from ..modelfile import as_model, check_task
    from ..real_degradation import describe_degradation
    from ..registry import default_model
    from .real import real_ct_dir

    paths = [Path(f) for f in files] if files else cached_slices(real_ct_dir() / SLICE_DIR)
    model = as_model(model if model is not None else default_model("super_resolution").path)
    check_task(model, "super_resolution")
    thickness = model.metadata.training_slice_thickness_mm or DEFAULT_THICKNESS_MM
    factors = tuple(int(f) for f in model.metadata.scale_factors_xyz)
    started = time.perf_counter()
    slices = []
    for path in paths:
        array, spacing, info = read_real_slice(path)
        volume = slice_volume(array, spacing, factors[:2], thickness, source=str(path))
        if log is not None:
            log(f"{path.name}: {info['pixels_xy'][0]} x {info['pixels_xy'][1]} pixels of {spacing[0]:.3g} mm, "
                f"{degradation}")
        slices.append({**info, **score_slice(model, volume, degradation, device, tile_size)})
    return {"model": model.name, "degradation": {"name": degradation, "factors_xy": list(factors[:2]),
                                                 "method": describe_degradation(degradation)},
            "stack": {"slices": STACK_SLICES, "slice_mm": thickness, "scored": "the middle slab"},
            "slices": slices, "seconds": round(time.perf_counter() - started, 2)}


def format_slice_table(result: dict) -> str:
    lines = [f"single real slices, model {result['model']}, {result['degradation']['method']}",
             "slice                  pixel mm  method            PSNR dB   SSIM     MAE HU   bone   soft"]
    for entry in result["slices"]:
        for name, scores in entry["methods"].items():
            bone, soft = scores["bone_bias_hu"], scores["soft_tissue_bias_hu"]
            ssim = "-" if scores["ssim"] is None else f"{scores['ssim']:.4f}"
            lines.append(f"{entry['file'][:22]:22s} {entry['pixel_mm'][0]:8.3f}  {name:16s}  {scores['psnr_db']:7.2f}  "
                         f"{ssim:>6s}  {scores['mae_hu']:7.2f}  {'-' if bone is None else f'{bone:+.1f}':>5s}  "
                         f"{'-' if soft is None else f'{soft:+.1f}':>5s}")
    lines.append(f"seconds: {result['seconds']}")
    return "\n".join(lines)
