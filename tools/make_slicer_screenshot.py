"""Draw the placeholder screenshot of the extension (Resources/Screenshots/RevGANSlicer-1.png).

    python tools/make_slicer_screenshot.py

A mock of the module's side-by-side view made from a generated chest phantom, NOT a
screenshot of Slicer and NOT a model's output: left, the low-resolution phantom (thick
slices, coarse pixels) as Slicer shows it; right, its high-resolution reference (what
super-resolution aims at). Replace it with a real Slicer screenshot once the shipped
models exist (EXTENSION_SCREENSHOTURLS in CMakeLists.txt points at this file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from make_slicer_icons import png_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "Resources" / "Screenshots" / "RevGANSlicer-1.png"


def window(hu: np.ndarray, width: float = 1500.0, level: float = -600.0) -> np.ndarray:
    return np.clip((hu - (level - width / 2)) / width, 0, 1)


def main() -> int:
    from RevGANCore.phantom_dataset import case_seeds, make_phantom_case

    case = make_phantom_case(case_seeds(0, 0))
    hr, lr = case["hr"].array, case["lr"].array
    z = hr.shape[0] // 2
    right = window(hr[z])                                   # 128 x 128 at 0.8 mm
    left = window(lr[z // 4])                               # 64 x 64 at 1.6 mm, 5 mm slices
    left = np.repeat(np.repeat(left, 2, axis=0), 2, axis=1)  # nearest, as a coarse view shows it
    scale = 3
    panels = [np.kron(panel, np.ones((scale, scale))) for panel in (left, right)]
    height, width = panels[0].shape
    gap, border = 6, 4
    canvas = np.zeros((height + 2 * border, 2 * width + gap + 2 * border, 3))
    canvas[...] = (0.16, 0.16, 0.18)
    for index, panel in enumerate(panels):
        x0 = border + index * (width + gap)
        canvas[border:border + height, x0:x0 + width] = panel[..., None]
        bar = (0.85, 0.25, 0.25) if index == 0 else (0.93, 0.85, 0.3)  # Red and Yellow view colours
        canvas[border - 3:border, x0:x0 + width] = bar
    rgba = np.concatenate([canvas, np.ones(canvas.shape[:2] + (1,))], axis=-1)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(png_bytes(np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8)))
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
