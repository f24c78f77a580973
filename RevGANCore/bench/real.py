"""``revgan bench real``: the shipped models on a real chest CT (held out: pyradiomics' lung2).

Five measurements, each documented in docs/bench.md (JSON keys there):

1. Super-resolution, z-consistently. The real scan (5 mm slices) is degraded in-plane by the
   model's in-plane factors (:func:`RevGANCore.real_degradation.degrade_in_plane`: a Gaussian
   blur with FWHM = the new pixel by default, or ``degradation="box"``: pixel binning), its real
   slices kept as the low-resolution z, super-resolved by the model through
   :func:`RevGANCore.inference.translate` (what ``revgan super-resolve`` runs), and each
   result is averaged over the real slabs (:func:`~RevGANCore.real_degradation.slab_average`)
   and scored against the real scan (:mod:`RevGANCore.bench.real_scoring`). Baselines, scored
   the same way: cubic B-spline and linear interpolation onto the model's output grid,
   in-plane B-spline onto the real grid (which keeps the real slices), and an in-plane
   upsampler fitted on the other pyradiomics scan degraded the same way (:mod:`.real_fitted`;
   the strongest classical method for this data, the bar the model must clear).
2. HU bias of the slab averages in bone, soft tissue and (contrast-enhanced) aorta.
3. z behaviour: period-2 alternation between the output's slices on flat regions, and the
   first/last 10 mm against the middle.
4. Kernel scale-invariance: the default kernel model's transfer at 0.3 and 0.5 cycles/mm on
   the scan's middle slice (a centred square) Fourier-resampled to about 0.3, 0.6 and 0.9 mm
   pixels (:func:`RevGANCore.bench.scale.measure_transfers`).
5. Field of view: the scan padded with -2000 or -3024 HU outside the inscribed circle,
   translated by both models; the output minus that of the same scan with air outside the
   circle in a 6-pixel band inside the circle, the output range over the anatomy, and
   whether the padding came back exactly.

The scan is read whole and cropped (``crop_zyx``, centred; in-plane sizes rounded down to a
multiple of the in-plane factors) before anything else, so a development run takes seconds.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError

__all__ = ["REAL_CT_DIR_ENV", "REAL_SCAN_FILES", "HELD_OUT_SCAN", "real_ct_dir", "resolve_scan", "centre_crop",
           "run_real_benchmark", "format_real_table"]

REAL_CT_DIR_ENV = "REVGAN_REAL_CT_DIR"
REAL_SCAN_FILES = {"lung1": "lung1_image.nrrd", "lung2": "lung2_image.nrrd"}
#: Reported on only; lung1 is for development and training.
HELD_OUT_SCAN = "lung2"
KERNEL_PIXELS_MM = (0.3, 0.6, 0.9)
KERNEL_FREQUENCIES = (0.3, 0.5)
FOV_PADDING_HU = (-2000.0, -3024.0)
RING_BAND_PIXELS = 6
#: Slices (of the model's input) the field-of-view check translates, from the middle.
FOV_SLICES = 4

Logger = Optional[Callable[[str], None]]


def real_ct_dir() -> Path:
    """Where tools/fetch_real_ct.py puts the scans: $REVGAN_REAL_CT_DIR or ~/.cache/revgan/real_ct."""
    folder = os.environ.get(REAL_CT_DIR_ENV)
    return Path(os.path.expanduser(folder)) if folder else Path.home() / ".cache" / "revgan" / "real_ct"


def resolve_scan(scan=None) -> Path:
    """A scan file: a path, or "lung1"/"lung2" in the cache (default: the held-out lung2)."""
    name = HELD_OUT_SCAN if scan is None else str(scan)
    path = real_ct_dir() / REAL_SCAN_FILES[name] if name in REAL_SCAN_FILES else Path(name)
    if not path.is_file():
        hint = " (fetch it with: python tools/fetch_real_ct.py)" if name in REAL_SCAN_FILES else ""
        raise ConfigError(f"{path}: no such scan file{hint}")
    return path


def centre_crop(volume, crop_zyx: Optional[Sequence[Optional[int]]], multiple_yx: Tuple[int, int] = (1, 1)):
    """The centred box of ``crop_zyx`` voxels (None or larger than the volume: all of that
    axis), in-plane sizes rounded down to ``multiple_yx``; geometry follows the crop."""
    from ..volume import Volume

    crop = list(crop_zyx) if crop_zyx is not None else [None, None, None]
    if len(crop) != 3 or any(c is not None and int(c) < 1 for c in crop):
        raise ConfigError(f"a crop needs three positive sizes Z Y X, got {crop_zyx}")
    sizes = [volume.shape[a] if c is None else min(int(c), volume.shape[a]) for a, c in enumerate(crop)]
    for axis, multiple in ((1, multiple_yx[0]), (2, multiple_yx[1])):
        sizes[axis] -= sizes[axis] % multiple
        if sizes[axis] < multiple:
            raise ConfigError(f"the crop leaves fewer than {multiple} voxels along axis {axis}")
    starts = [(n - s) // 2 for n, s in zip(volume.shape, sizes)]
    box = tuple(slice(b, b + s) for b, s in zip(starts, sizes))
    origin = volume.index_to_physical_matrix() @ np.array([starts[2], starts[1], starts[0], 1.0])
    return Volume(np.ascontiguousarray(volume.array[box]), volume.spacing, tuple(origin[:3]), volume.direction,
                  volume.source)


def _say(log: Logger, text: str) -> None:
    if log is not None:
        log(text)


# --------------------------------------------------------------------------- 1-3 super-resolution


def _super_resolution(model, real, device: str, tile_size, log: Logger,
                      degradation: str = "gaussian", fitted=None) -> Tuple[dict, dict]:
    from ..metrics import body_mask
    from ..real_degradation import describe_degradation, in_plane_fwhm_mm, slab_average
    from . import real_scoring as scoring

    low, predictions, model_seconds = degrade_and_super_resolve(model, real, degradation, tile_size, device, log,
                                                                fitted)
    factors = tuple(int(f) for f in model.metadata.scale_factors_xyz)

    body = body_mask(real.array)
    regions = scoring.hu_regions(real, body)
    flat = scoring.flat_slabs(real, regions["soft_tissue"]["mask"])
    methods, bias, alternation, borders = {}, {}, {}, {}
    for name, prediction in predictions.items():
        slabs = slab_average(prediction, real)
        methods[name] = scoring.slab_scores(slabs, real, body)
        bias[name] = {region: scoring.hu_bias(slabs, real, values["mask"]) for region, values in regions.items()}
        borders[name] = scoring.border_scores(slabs, real, body)
        if name not in ("inplane_bspline", "inplane_fitted"):  # no slices finer than the real ones
            alternation[name] = scoring.z_alternation(prediction, real, flat)
    result = {
        "degradation": {"name": degradation, "factors_xy": list(factors[:2]),
                        "fwhm_mm_xy": ([round(f, 4) for f in in_plane_fwhm_mm(real, factors[:2])]
                                       if degradation == "gaussian" else None),
                        "low_resolution_zyx": list(low.shape),
                        "method": describe_degradation(degradation)},
        "output_zyx": list(predictions["model"].shape),
        "output_spacing_xyz_mm": [round(s, 5) for s in predictions["model"].spacing],
        "model_seconds": round(model_seconds, 2),
        "methods": methods,
        "model_minus_best_baseline": _margins(methods),
        "hu_bias": {"regions": {name: {"voxels": values["voxels"], "definition": values["definition"]}
                                for name, values in regions.items()},
                    "methods": bias},
        "z_alternation": alternation,
        "borders": borders,
    }
    return result, {"low": low, **predictions}


def degrade_and_super_resolve(model, real, degradation: str, tile_size, device: str, log: Logger = None,
                              fitted=None):
    """``real`` degraded in-plane by the model's factors, then brought back by the model and
    by each baseline: (the degraded volume, {method: prediction}, the model's seconds).
    In-plane B-spline and the ``fitted`` in-plane upsampler (:mod:`.real_fitted`; none: no
    such row) keep the real slices; the others predict on the model's output grid."""
    from ..baselines import interpolate_super_resolution
    from ..inference import translate
    from ..real_degradation import degrade_in_plane
    from ..volume import resample_to_grid

    factors = tuple(int(f) for f in model.metadata.scale_factors_xyz)
    low = degrade_in_plane(real, factors[:2], degradation)
    _say(log, f"super-resolving {low.shape[::-1]} voxels (x, y, z) with {model.name}")
    started = time.perf_counter()
    predictions = {"model": translate(model, low, "forward", tile_size=tile_size, device=device)}
    seconds = time.perf_counter() - started
    predictions["bspline"] = interpolate_super_resolution(low, factors, "bspline")
    predictions["linear"] = interpolate_super_resolution(low, factors, "linear")
    predictions["inplane_bspline"] = resample_to_grid(low, real.grid, "bspline")
    if fitted is not None:
        from .real_fitted import apply_in_plane_upsampler

        predictions["inplane_fitted"] = apply_in_plane_upsampler(low, fitted, factors[:2])
    return low, predictions, seconds


def _fitted_baseline(scored: Path, factors_xyz, degradation: str, log: Logger):
    """(the in-plane upsampler fitted on the other real scan, or None, and its record)."""
    from ..volume_io import read_volume
    from .real_fitted import FITTED_TAPS, fit_in_plane_upsampler, fit_scan_for

    path, reason = fit_scan_for(scored)
    record = {"method": f"{FITTED_TAPS}^3 polyphase in-plane upsampler, Huber fit", "fit_scan": reason}
    if path is None:
        _say(log, f"no fitted in-plane upsampler: {reason}")
        return None, dict(record, fitted=False)
    started = time.perf_counter()
    _say(log, f"fitting the in-plane upsampler on {path.name} ({reason})")
    weights = fit_in_plane_upsampler(read_volume(path), factors_xyz[:2], degradation)
    return weights, dict(record, fitted=True, seconds=round(time.perf_counter() - started, 2))


def _margins(methods: Dict[str, dict]) -> dict:
    """The model's PSNR/SSIM/MAE minus the best baseline's (positive PSNR/SSIM, negative MAE: better)."""
    baselines = [m for name, m in methods.items() if name != "model"]
    model = methods["model"]
    margins = {"psnr_db": model["psnr_db"] - max(b["psnr_db"] for b in baselines),
               "mae_hu": model["mae_hu"] - min(b["mae_hu"] for b in baselines)}
    ssims = [b["ssim"] for b in baselines if b["ssim"] is not None]
    margins["ssim"] = model["ssim"] - max(ssims) if model["ssim"] is not None and ssims else None
    return margins


# --------------------------------------------------------------------------- 4 kernel scale


def _kernel_scale(kernel_model, real, device: str) -> dict:
    from ..physical_scale import fourier_resample
    from .scale import measure_transfers

    middle = np.asarray(real.array[real.shape[0] // 2], dtype=np.float32)
    side = min(middle.shape) - min(middle.shape) % 2
    top, left = (middle.shape[0] - side) // 2, (middle.shape[1] - side) // 2
    square = middle[top:top + side, left:left + side]
    period = side * float(real.spacing[0])

    def slice_at(pixel: float):
        count = max(8, int(round(period / pixel)))
        return fourier_resample(fourier_resample(square, count, 0), count, 1), period / count

    # z-constant stacks are edge-padded along z, so 4 slices give what 8 would, in half the time
    result = measure_transfers(kernel_model, slice_at, KERNEL_PIXELS_MM, KERNEL_FREQUENCIES, device, slices=4,
                               slice_mm=float(real.spacing[2]))
    result["square_mm"] = round(period, 3)
    return result


# --------------------------------------------------------------------------- 5 field of view


def _corner_distances(grid, centre_mm: Tuple[float, float]) -> np.ndarray:
    """In-plane distance (mm) of each pixel centre from ``centre_mm`` (x, y from the box corner)."""
    x = (np.arange(grid.shape[2]) + 0.5) * grid.spacing[0] - centre_mm[0]
    y = (np.arange(grid.shape[1]) + 0.5) * grid.spacing[1] - centre_mm[1]
    return np.hypot(y[:, None], x[None, :])


def _fov_check(model, volume, device: str, tile_size) -> dict:
    from ..field_of_view import AIR_HU
    from ..inference import translate

    part = centre_crop(volume, (FOV_SLICES, None, None))
    extent = part.physical_extent
    centre = (extent[0] / 2, extent[1] / 2)
    radius = min(extent[0], extent[1]) / 2
    outside = _corner_distances(part.grid, centre) > radius

    def with_outside(value: float):
        array = np.array(part.array, dtype=np.float32)
        array[:, outside] = value
        return part.with_array(array)

    reference = translate(model, with_outside(AIR_HU), "forward", tile_size=tile_size, device=device)
    grid = reference.grid
    # an output pixel is padding when the input pixel it lies in is (geometry, not factors)
    rows = np.minimum((np.arange(grid.shape[1]) + 0.5) * grid.spacing[1] // part.spacing[1], part.shape[1] - 1)
    columns = np.minimum((np.arange(grid.shape[2]) + 0.5) * grid.spacing[0] // part.spacing[0], part.shape[2] - 1)
    padding_out = outside[np.ix_(rows.astype(int), columns.astype(int))]
    band = ~padding_out & (_corner_distances(grid, centre) >= radius - RING_BAND_PIXELS * grid.spacing[0])
    result = {"slices": part.shape[0], "radius_mm": round(radius, 3)}
    for value in FOV_PADDING_HU:
        output = translate(model, with_outside(value), "forward", tile_size=tile_size, device=device).array
        deviation = output[:, band].astype(np.float64) - reference.array[:, band]
        anatomy = output[:, ~padding_out]
        result[f"{value:g}"] = {"ring_mean_hu": float(deviation.mean()),
                                "ring_max_abs_hu": float(np.abs(deviation).max()),
                                "output_min_hu": float(anatomy.min()), "output_max_hu": float(anatomy.max()),
                                "padding_kept": bool(np.all(output[:, padding_out] == value))}
    return result


# --------------------------------------------------------------------------- figure


def write_figure(path, volumes: Dict[str, object]) -> Path:
    """input (nearest, on the output grid) | B-spline | model | model - B-spline: the middle
    axial slice above the middle coronal slice (z stretched to square millimetres)."""
    from ..preview import (MEDIASTINAL_WINDOW, side_by_side, stacked, window_to_uint8, write_png)
    from ..volume import resample_to_grid

    model = volumes["model"]
    shown = [resample_to_grid(volumes["low"], model.grid, "nearest").array, volumes["bspline"].array, model.array]
    step = max(1, model.shape[1] // 256)
    stretch = max(1, int(round(model.spacing[2] / (model.spacing[1] * step))))
    rows = []
    for plane in (lambda a: a[a.shape[0] // 2, ::step, ::step],
                  lambda a: np.repeat(a[::-1, a.shape[1] // 2, ::step], stretch, axis=0)):
        images = [window_to_uint8(plane(a), *MEDIASTINAL_WINDOW) for a in shown]
        images.append(window_to_uint8(plane(model.array.astype(np.float32) - shown[1]), 0.0, 200.0))
        rows.append(side_by_side(images))
    return write_png(path, stacked(rows))


# --------------------------------------------------------------------------- the benchmark


def run_real_benchmark(scan=None, model=None, kernel_model=None, crop_zyx=None, device: str = "cpu",
                       tile_size=None, figure=None, log: Logger = None, degradation: str = "gaussian") -> dict:
    """All five measurements on ``scan`` (see the module documentation); ``degradation``:
    the in-plane degradation of measurement 1 ("gaussian" or "box")."""
    from ..real_degradation import IN_PLANE_DEGRADATIONS

    if degradation not in IN_PLANE_DEGRADATIONS:
        raise ConfigError(f"--degradation must be one of {IN_PLANE_DEGRADATIONS}, got {degradation!r}")
    from ..modelfile import as_model, check_task
    from ..registry import default_model
    from ..volume_io import read_volume

    timings = {}
    started = time.perf_counter()
    path = resolve_scan(scan)
    if figure is not None:  # checked before the work, not after
        from ..output import check_writable_location, refuse_overlap

        check_writable_location(Path(figure))
        refuse_overlap([Path(figure)], [path])
    model = as_model(model if model is not None else default_model("super_resolution").path)
    check_task(model, "super_resolution")
    kernel_model = as_model(kernel_model if kernel_model is not None else default_model("kernel").path)
    check_task(kernel_model, "kernel")
    whole = read_volume(path)
    factors = model.metadata.scale_factors_xyz
    real = centre_crop(whole, crop_zyx, (int(factors[1]), int(factors[0])))
    real = real.with_array(real.array.astype(np.float32, copy=False))
    _say(log, f"{path.name}: {whole.shape[::-1]} voxels (x, y, z), using {real.shape[::-1]}")

    result = {"scan": {"path": str(path), "name": path.name, "shape_zyx": list(whole.shape),
                       "used_zyx": list(real.shape), "spacing_xyz_mm": [round(s, 5) for s in real.spacing],
                       "held_out": path.name == REAL_SCAN_FILES[HELD_OUT_SCAN]},
              "model": model.name, "kernel_model": kernel_model.name}
    fitted, fitted_record = _fitted_baseline(path, factors, degradation, log)
    super_resolution, volumes = _super_resolution(model, real, device, tile_size, log, degradation, fitted)
    super_resolution["fitted_baseline"] = fitted_record
    result["super_resolution"] = super_resolution
    timings["super_resolution"] = time.perf_counter() - started

    mark = time.perf_counter()
    _say(log, f"kernel transfer of {kernel_model.name} at {', '.join(map(str, KERNEL_PIXELS_MM))} mm pixels")
    result["kernel_scale"] = _kernel_scale(kernel_model, real, device)
    timings["kernel_scale"] = time.perf_counter() - mark

    mark = time.perf_counter()
    _say(log, "field of view: padding outside the reconstruction circle")
    result["fov"] = {"super_resolution": _fov_check(model, volumes["low"], device, tile_size),
                     "kernel": _fov_check(kernel_model, real, device, tile_size)}
    timings["fov"] = time.perf_counter() - mark

    result["figure"] = str(write_figure(figure, volumes)) if figure is not None else None
    timings["total"] = time.perf_counter() - started
    result["seconds"] = {key: round(value, 2) for key, value in timings.items()}
    return result


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def format_real_table(result: dict) -> str:
    scan = result["scan"]
    block = result["super_resolution"]
    lines = [f"{scan['name']} ({' x '.join(map(str, scan['used_zyx'][::-1]))} voxels used), model {result['model']}",
             f"super-resolution, slab averages vs the real slices (body); input: {block['degradation']['method']}:",
             "method            PSNR dB   SSIM     MAE HU   bias bone  soft  aorta"]
    for name, scores in block["methods"].items():
        bias = block["hu_bias"]["methods"][name]
        lines.append(f"{name:16s}  {_number(scores['psnr_db']):>7s}  {_number(scores['ssim'], 4):>6s}  "
                     f"{_number(scores['mae_hu']):>7s}  {_number(bias['bone'], 1):>9s}  "
                     f"{_number(bias['soft_tissue'], 1):>4s}  {_number(bias['aorta'], 1):>5s}")
    lines.append(f"aorta region: {block['hu_bias']['regions']['aorta']['definition']}")
    for name, values in block["z_alternation"].items():
        border = block["borders"][name]
        lines.append(f"{name}: z alternation {_number(values['alternation_hu'])} HU (mean |step| "
                     f"{_number(values['mean_abs_step_hu'])}); MAE first/middle/last 10 mm "
                     f"{_number(border['first_10mm_mae_hu'])}/{_number(border['middle_mae_hu'])}/"
                     f"{_number(border['last_10mm_mae_hu'])} HU")
    kernel = result["kernel_scale"]
    for direction, values in kernel["directions"].items():
        lines.append(f"kernel {direction}: transfer at {kernel['cycles_per_mm']} /mm for pixels {kernel['pixels_mm']} "
                     f"mm: {values['transfer']}, spread {values['spread']}")
    for task, values in result["fov"].items():
        for pad in (f"{v:g}" for v in FOV_PADDING_HU):
            check = values[pad]
            lines.append(f"fov {task} {pad}: ring {_number(check['ring_mean_hu'])} HU (max |.| "
                         f"{_number(check['ring_max_abs_hu'])}), output {_number(check['output_min_hu'], 0)}.."
                         f"{_number(check['output_max_hu'], 0)} HU, padding kept {check['padding_kept']}")
    lines.append(f"seconds: {result['seconds']}")
    return "\n".join(lines)
