"""Dependency-free previews (RevGANCore.preview)."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from RevGANCore.errors import ConfigError
from RevGANCore.preview import png_bytes, side_by_side, slices_side_by_side, upscale, window_to_uint8, write_png
from RevGANCore.volume import Volume


def decode_png(data: bytes) -> np.ndarray:
    """A minimal independent decoder for what png_bytes writes (filter 0, 8-bit)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour = header[:4]
    channels = 3 if colour == 2 else 1
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    assert np.all(rows[:, 0] == 0)
    return rows[:, 1:].reshape(height, width, channels).squeeze(-1) if channels == 1 else \
        rows[:, 1:].reshape(height, width, 3)


def test_png_round_trip_gray_and_rgb(tmp_path):
    gray = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12) * 3
    rgb = np.random.default_rng(0).integers(0, 256, (5, 9, 3)).astype(np.uint8)
    for image in (gray, rgb):
        np.testing.assert_array_equal(decode_png(png_bytes(image)), image)
        path = write_png(tmp_path / "sub" / "x.png", image)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), image)  # a real PNG reader agrees
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]
    with pytest.raises(ConfigError):
        png_bytes(np.zeros((4, 4), np.float32))


def test_window_and_layout():
    hu = np.array([[-2000.0, -1350.0, -600.0, 150.0, 3000.0]])
    np.testing.assert_array_equal(window_to_uint8(hu, -600, 1500), [[0, 0, 128, 255, 255]])
    with pytest.raises(ConfigError):
        window_to_uint8(hu, 0, 0)
    a = np.full((4, 3), 10, np.uint8)
    b = np.full((2, 5), 20, np.uint8)
    strip = side_by_side([a, b], gap=2, gap_value=255)
    assert strip.shape == (4, 10)
    assert np.all(strip[:, 3:5] == 255) and np.all(strip[1:3, 5:] == 20) and np.all(strip[0, 5:] == 255)
    assert side_by_side([a, np.zeros((4, 3, 3), np.uint8)]).shape == (4, 10, 3)
    assert upscale(a, 2).shape == (8, 6)


def test_slices_side_by_side_orientation():
    array = np.zeros((4, 6, 8), np.float32)
    array[3, :, :] = 1000.0  # the most superior slice is bright
    volume = Volume(array)
    axial = slices_side_by_side([volume, array], 3, 500, 1000, gap=1)
    assert axial.shape == (6, 17) and np.all(axial[:, :8] == 255)
    coronal = slices_side_by_side([volume], 2, 500, 1000, axis=1)
    assert coronal.shape == (4, 8) and np.all(coronal[0] == 255) and np.all(coronal[1:] == 0)  # head up
    with pytest.raises(ConfigError):
        slices_side_by_side([volume, np.zeros((4, 6, 7))], 0, 0, 100)
    with pytest.raises(ConfigError):
        slices_side_by_side([volume], 4, 0, 100)
