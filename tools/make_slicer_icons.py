"""Draw the Slicer module/extension icon (128 x 128 PNG) with numpy alone.

    python tools/make_slicer_icons.py            # writes the icons
    python tools/make_slicer_icons.py --check    # exits 1 if a committed icon differs

The picture: a round CT "slice" on a dark tile, its left half drawn in coarse blocks
(low resolution), its right half smooth and fine (the translated result), with a light
arrow between the halves: one-click super-resolution, side by side.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ICON_PATHS = (ROOT / "RevGANSlicer" / "Resources" / "Icons" / "RevGANSlicer.png",
              ROOT / "Resources" / "Icons" / "RevGANSlicer.png")
SIZE = 128


def png_bytes(rgba: np.ndarray) -> bytes:
    """An 8-bit RGBA PNG of an (H, W, 4) uint8 array (no compression settings to tune)."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError("expected an (H, W, 4) uint8 array")
    height, width = rgba.shape[:2]
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def _smooth_step(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _slice_intensity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A stylised axial chest slice in [0, 1] on coordinates in [-1, 1]."""
    body = 1 - _smooth_step(0.95, 1.0, np.hypot(x / 0.80, y / 0.58))
    lungs = np.zeros_like(x)
    for side in (-1, 1):
        lungs = np.maximum(lungs, 1 - _smooth_step(0.9, 1.0, np.hypot((x - side * 0.34) / 0.25, (y + 0.02) / 0.40)))
    spine = 1 - _smooth_step(0.85, 1.0, np.hypot(x / 0.09, (y - 0.43) / 0.09))
    heart = 1 - _smooth_step(0.9, 1.0, np.hypot((x + 0.04) / 0.15, (y - 0.08) / 0.17))
    vessels = 0.5 + 0.5 * np.sin(16 * x + 3 * np.sin(9 * y)) * np.cos(13 * y)
    value = 0.62 * body
    value = value * (1 - lungs) + lungs * body * (0.05 + 0.12 * vessels)
    value = np.maximum(value, 0.78 * heart * body)
    value = np.maximum(value, spine)
    return np.clip(value, 0, 1)


def draw_icon(size: int = SIZE) -> np.ndarray:
    """The icon as an (size, size, 4) uint8 RGBA array."""
    scale = 4  # supersampling for smooth edges
    n = size * scale
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    # Rounded dark tile.
    corner = 0.22
    qx, qy = np.maximum(np.abs(x) - (1 - corner), 0), np.maximum(np.abs(y) - (1 - corner), 0)
    tile = 1 - _smooth_step(corner - 0.01, corner, np.hypot(qx, qy))
    slice_fine = _slice_intensity(x, y)
    # Left half: the same slice, averaged in 8 x 8 icon-pixel blocks (coarse resolution).
    block = 8 * scale
    coarse = slice_fine.reshape(n // block, block, n // block, block).mean(axis=(1, 3))
    coarse = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)
    value = np.where(x < 0, coarse, slice_fine)
    grey = 0.04 + 0.92 * value
    rgb = np.stack([grey * 0.92, grey * 0.97, grey], axis=-1)
    background = np.array([0.11, 0.16, 0.24])
    disc = 1 - _smooth_step(0.86, 0.88, np.hypot(x, y))
    rgb = rgb * disc[..., None] + background * (1 - disc[..., None])
    # Divider and arrow (accent colour) from left to right.
    accent = np.array([0.98, 0.62, 0.15])
    divider = (np.abs(x) < 0.012) & (np.abs(y) < 0.86)
    shaft = (np.abs(y + 0.0) < 0.035) & (x > -0.30) & (x < 0.16)
    head = (x >= 0.12) & (x < 0.34) & (np.abs(y) < (0.34 - x) * 0.9)
    arrow = shaft | head
    outline = np.zeros_like(arrow)
    for dy in (-2, 0, 2):
        for dx in (-2, 0, 2):
            outline |= np.roll(np.roll(arrow, dy * scale, axis=0), dx * scale, axis=1)
    rgb[divider] = accent * 0.8
    rgb[outline & ~arrow] = background * 0.6
    rgb[arrow] = accent
    rgba = np.concatenate([rgb, tile[..., None]], axis=-1)
    small = rgba.reshape(size, scale, size, scale, 4).mean(axis=(1, 3))
    return np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed icons")
    args = parser.parse_args(argv)
    data = png_bytes(draw_icon())
    status = 0
    for path in ICON_PATHS:
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                print(f"{path}: differs from tools/make_slicer_icons.py's drawing")
                status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)} ({len(data)} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
