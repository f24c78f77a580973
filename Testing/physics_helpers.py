"""Synthetic scans defined in millimetres for the physics checks of inference (scale, field
of view, z): the pattern and measurement of ``revgan bench scale``."""

from __future__ import annotations

from RevGANCore.bench.scale import PERIOD_MM, band_limited_slice, radial_transfer, z_constant_volume

__all__ = ["PERIOD_MM", "band_limited_slice", "radial_transfer", "z_constant_volume"]
