"""Synthetic scans defined in millimetres, sampled at any pixel size, and their in-plane
transfer measurement: the physics checks of inference (scale, field of view, z)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from RevGANCore.volume import Volume


def band_limited_slice(period_mm: float, pixel_mm: float, max_cycles_per_mm: float = 0.54,
                       std_hu: float = 40.0, base_hu: float = 40.0, seed: int = 0) -> np.ndarray:
    """One (y, x) slice of a random texture whose every frequency (a whole number of cycles
    over ``period_mm``) is below ``max_cycles_per_mm``: the same continuous pattern,
    sampled exactly at ``pixel_mm`` (which must divide the period)."""
    count = int(round(period_mm / pixel_mm))
    assert abs(count * pixel_mm - period_mm) < 1e-9, "the pixel size must divide the period"
    top = int(np.ceil(max_cycles_per_mm * period_mm))
    k = np.arange(-top, top + 1)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    keep = np.hypot(ky, kx) / period_mm < max_cycles_per_mm
    rng = np.random.default_rng(seed)
    coefficients = (rng.normal(size=keep.shape) + 1j * rng.normal(size=keep.shape)) * keep
    positions = np.arange(count) * pixel_mm
    waves = np.exp(2j * np.pi * np.outer(k, positions) / period_mm)  # (k, position)
    image = np.real(waves.T @ coefficients @ waves)
    image = image / image.std() * std_hu + base_hu
    return image.astype(np.float32)


def z_constant_volume(slice_yx: np.ndarray, slices: int, spacing_xyz: Sequence[float]) -> Volume:
    array = np.repeat(slice_yx[None], slices, axis=0)
    return Volume(np.ascontiguousarray(array), tuple(spacing_xyz), (0.0, 0.0, 0.0))


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
