"""Preview images without extra dependencies: HU windowing, slices side by side, PNG files.

The PNG writer uses only zlib and struct (8-bit grayscale or RGB, no interlace), so
training and demo code can save "input | output | target" strips anywhere.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from .output import write_bytes_atomic
from .errors import ConfigError

#: Common CT display windows as (level, width) in HU.
LUNG_WINDOW: Tuple[float, float] = (-600.0, 1500.0)
MEDIASTINAL_WINDOW: Tuple[float, float] = (40.0, 400.0)
BONE_WINDOW: Tuple[float, float] = (400.0, 1800.0)


def window_to_uint8(hu, level: float, width: float) -> np.ndarray:
    """Map HU to 0-255 for display: ``level - width/2`` -> 0, ``level + width/2`` -> 255,
    clipped outside."""
    if not width > 0:
        raise ConfigError(f"a display window needs a positive width, got {width}")
    low = level - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float64) - low) * (255.0 / width)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def side_by_side(images: Sequence[np.ndarray], gap: int = 4, gap_value: int = 255) -> np.ndarray:
    """Lay 2D uint8 images (H, W) or RGB images (H, W, 3) left to right with ``gap``
    columns of ``gap_value`` between them; shorter images are centred vertically."""
    if not images:
        raise ConfigError("side_by_side needs at least one image")
    arrays = [np.asarray(image) for image in images]
    rgb = any(a.ndim == 3 for a in arrays)
    prepared = []
    for array in arrays:
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
            raise ConfigError(f"side_by_side takes uint8 (H, W) or (H, W, 3) images, got {array.dtype} {array.shape}")
        if rgb and array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        prepared.append(array)
    height = max(a.shape[0] for a in prepared)
    width = sum(a.shape[1] for a in prepared) + gap * (len(prepared) - 1)
    canvas = np.full((height, width) + ((3,) if rgb else ()), gap_value, dtype=np.uint8)
    column = 0
    for array in prepared:
        top = (height - array.shape[0]) // 2
        canvas[top:top + array.shape[0], column:column + array.shape[1]] = array
        column += array.shape[1] + gap
    return canvas


def stacked(images: Sequence[np.ndarray], gap: int = 4, gap_value: int = 255) -> np.ndarray:
    """Images one above the other (centred horizontally) with ``gap`` pixels between them."""
    return side_by_side([np.asarray(image).T for image in images], gap=gap, gap_value=gap_value).T


def slices_side_by_side(volumes: Sequence, index: int, level: float, width: float, axis: int = 0,
                        gap: int = 4, zoom: int = 1) -> np.ndarray:
    """One slice (``index`` along array ``axis``: 0 axial, 1 coronal, 2 sagittal) of each
    volume, windowed and laid side by side, e.g. input | output | target. Volumes are
    :class:`~RevGANCore.volume.Volume` objects or 3D HU arrays of the same shape (resample
    a low-resolution volume onto the others' grid first). Coronal and sagittal slices are
    shown head up. ``zoom`` enlarges by pixel repetition."""
    arrays = [np.asarray(getattr(v, "array", v)) for v in volumes]
    if not arrays or any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        raise ConfigError("slices_side_by_side needs 3D volumes of one shape, got "
                          f"{[a.shape for a in arrays]}")
    if not 0 <= index < arrays[0].shape[axis]:
        raise ConfigError(f"slice {index} is outside 0..{arrays[0].shape[axis] - 1} along axis {axis}")
    images = []
    for array in arrays:
        plane = np.take(array, index, axis=axis)
        if axis != 0:
            plane = plane[::-1]  # k (superior) grows upwards on screen
        images.append(upscale(window_to_uint8(plane, level, width), zoom))
    return side_by_side(images, gap=gap)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge by pixel repetition (keeps voxels visible as squares in a preview)."""
    if int(factor) < 1:
        raise ConfigError(f"zoom factor must be a positive integer, got {factor}")
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG encoding of a uint8 (H, W) grayscale or (H, W, 3) RGB image."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ConfigError(f"PNG images must be uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    # Each scanline starts with filter type 0 (none).
    rows = np.ascontiguousarray(array).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write_png(path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG file atomically (temporary file beside it, then rename)."""
    return write_bytes_atomic(path, png_bytes(image))
