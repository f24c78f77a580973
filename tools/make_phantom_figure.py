"""Make docs/phantom.png: one axial phantom slice as hr | lr (B-spline onto the hr grid) |
sharp | smooth, lung window. Run from the repository root:

    python tools/make_phantom_figure.py [--shape Z Y X] [--seed S] [--out docs/phantom.png]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from RevGANCore.phantom import TISSUE_LABELS, generate_chest_phantom  # noqa: E402
from RevGANCore.phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case  # noqa: E402
from RevGANCore.preview import LUNG_WINDOW, slices_side_by_side, write_png  # noqa: E402
from RevGANCore.volume import resample_to_grid  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; case 0 is shown")
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--out", default="docs/phantom.png")
    args = parser.parse_args()
    recipe = PhantomRecipe(shape=tuple(args.shape))
    seeds = case_seeds(args.seed, 0)
    volumes = make_phantom_case(seeds, recipe)
    _, labels = generate_chest_phantom(recipe.shape, recipe.spacing, seeds["anatomy"], with_labels=True)
    # The axial slice with the most nodule, else the most lung.
    per_slice = (labels.array == TISSUE_LABELS["nodule"]).sum(axis=(1, 2)) * 1000 + (
        labels.array == TISSUE_LABELS["lung"]).sum(axis=(1, 2))
    index = int(np.argmax(per_slice))
    lr_on_hr = resample_to_grid(volumes["lr"], volumes["hr"], interpolation="bspline")
    image = slices_side_by_side([volumes["hr"], lr_on_hr, volumes["sharp"], volumes["smooth"]], index,
                                *LUNG_WINDOW, zoom=args.zoom)
    write_png(args.out, image)
    print(f"wrote {args.out}: slice {index} of case 0 (seed {args.seed}), shape {tuple(recipe.shape)}, "
          f"image {image.shape[1]}x{image.shape[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
