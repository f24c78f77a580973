"""``revgan bench scale``: is a kernel model's transfer the same at every pixel size?

One random texture, defined in millimetres (every frequency a whole number of cycles over a
72 mm period, all below 0.54 cycles/mm, so every grid samples it exactly), is sampled at
0.3, 0.6 and 0.9 mm pixels, stacked into a z-constant slab and translated. The transfer
at a frequency is the output's amplitude spectrum over the input's, summed over the ring
of in-plane frequencies within 0.03 cycles/mm (radial average). A model acting in
millimetres gives the same figure at every pixel size (``spread``: largest over smallest).
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from ..volume import Volume

__all__ = ["PERIOD_MM", "band_limited_slice", "z_constant_volume", "radial_transfer", "measure_transfers",
           "run_scale_benchmark", "format_scale_table"]

PERIOD_MM = 72.0  # divisible by 0.3, 0.6, 0.8 and 0.9 mm


def band_limited_slice(period_mm: float, pixel_mm: float, max_cycles_per_mm: float = 0.54,
                       std_hu: float = 40.0, base_hu: float = 40.0, seed: int = 0) -> np.ndarray:
    """One (y, x) slice of a random texture whose frequencies (whole numbers of cycles over
    ``period_mm``) are all below ``max_cycles_per_mm``: the same continuous pattern, sampled
    exactly at ``pixel_mm`` (which must divide the period)."""
    count = int(round(period_mm / pixel_mm))
    if abs(count * pixel_mm - period_mm) > 1e-9:
        raise ValueError(f"the pixel size {pixel_mm} mm does not divide the period {period_mm} mm")
    top = int(np.ceil(max_cycles_per_mm * period_mm))
    k = np.arange(-top, top + 1)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    keep = np.hypot(ky, kx) / period_mm < max_cycles_per_mm
    rng = np.random.default_rng(seed)
    coefficients = (rng.normal(size=keep.shape) + 1j * rng.normal(size=keep.shape)) * keep
    waves = np.exp(2j * np.pi * np.outer(k, np.arange(count) * pixel_mm) / period_mm)  # (k, position)
    image = np.real(waves.T @ coefficients @ waves)
    return (image / image.std() * std_hu + base_hu).astype(np.float32)


def z_constant_volume(slice_yx: np.ndarray, slices: int, spacing_xyz: Sequence[float]) -> Volume:
    """``slice_yx`` repeated ``slices`` times along z."""
    array = np.ascontiguousarray(np.repeat(slice_yx[None], slices, axis=0))
    return Volume(array, tuple(float(s) for s in spacing_xyz), (0.0, 0.0, 0.0))


def radial_transfer(before: np.ndarray, after: np.ndarray, pixel_mm: float, cycles_per_mm: float,
                    half_width: float = 0.03) -> float:
    """Amplitude of ``after`` over that of ``before`` (two (y, x) slices) over the ring of
    in-plane frequencies within ``half_width`` of ``cycles_per_mm``."""
    fy = np.fft.fftfreq(before.shape[0], d=pixel_mm)[:, None]
    fx = np.fft.fftfreq(before.shape[1], d=pixel_mm)[None, :]
    ring = np.abs(np.hypot(fy, fx) - cycles_per_mm) <= half_width
    spectrum_before = np.abs(np.fft.fft2(before - before.mean()))[ring]
    spectrum_after = np.abs(np.fft.fft2(after - after.mean()))[ring]
    return float(spectrum_after.sum() / spectrum_before.sum())


def measure_transfers(model, slice_at: Callable[[float], Tuple[np.ndarray, float]], pixels_mm: Sequence[float],
                      frequencies: Sequence[float], device: str = "cpu", slices: int = 8,
                      slice_mm: float = 1.25) -> Dict[str, object]:
    """Transfer of ``model`` (both directions) at ``frequencies`` for each pixel size:
    ``slice_at(pixel)`` gives the (y, x) slice sampled at (about) that pixel size and the
    pixel size it really has; it is stacked ``slices`` times along z and translated."""
    from ..inference import translate
    from ..modelfile import as_model

    model = as_model(model)
    scans = {pixel: slice_at(pixel) for pixel in pixels_mm}
    directions = {}
    for direction in ("forward", "inverse"):
        rows = []
        for pixel in pixels_mm:
            scan, size = scans[pixel]
            result = translate(model, z_constant_volume(scan, slices, (size, size, slice_mm)), direction, device=device)
            middle = result.array[result.shape[0] // 2]
            rows.append([round(radial_transfer(scan, middle, size, f), 4) for f in frequencies])
        table = np.array(rows)
        directions[direction] = {"transfer": rows,
                                 "spread": [round(float(s), 4) for s in table.max(axis=0) / table.min(axis=0)]}
    return {"model": model.name, "training_spacing_xyz": model.metadata.training_spacing_xyz,
            "pixels_mm": [round(scans[p][1], 4) for p in pixels_mm], "cycles_per_mm": list(frequencies),
            "directions": directions}


def run_scale_benchmark(model="revgan-kernel-phantom-paired2r", pixels_mm: Sequence[float] = (0.3, 0.6, 0.9),
                        frequencies: Sequence[float] = (0.3, 0.5), device: str = "cpu") -> Dict[str, object]:
    """Transfer of ``model`` (both directions) at ``frequencies`` for each pixel size."""
    return measure_transfers(model, lambda pixel: (band_limited_slice(PERIOD_MM, pixel), pixel), pixels_mm,
                             frequencies, device)


def format_scale_table(result: Dict[str, object]) -> str:
    frequencies = result["cycles_per_mm"]
    lines = [f"kernel transfer of {result['model']} (trained at {result['training_spacing_xyz']} mm)",
             "direction  pixel mm  " + "  ".join(f"T({f:g}/mm)" for f in frequencies)]
    for direction, values in result["directions"].items():  # type: ignore[union-attr]
        for pixel, row in zip(result["pixels_mm"], values["transfer"]):  # type: ignore[arg-type]
            lines.append(f"{direction:9s}  {pixel:8.2f}  " + "  ".join(f"{t:9.3f}" for t in row))
        lines.append(f"{direction:9s}  spread    " + "  ".join(f"{s:9.3f}" for s in values["spread"]))
    return "\n".join(lines)
