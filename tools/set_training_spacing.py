"""Record the training voxel spacing and slice thickness in the shipped models' metadata.

Every Table-2 model in Resources/Models/table2 was trained on the chest phantoms of
configs/table2/base.toml (``[data.generate]``: 16 cases, seed 0, the default
PhantomRecipe), i.e. at RevGANCore.phantom.DEFAULT_SPACING = 0.8 x 0.8 x 1.25 mm (x, y, z),
as the model cards say. Kernel pairs are reconstructed with a slice FWHM equal to the z
spacing (RevGANCore.degradations.kernel_pair), 1.25 mm; the super-resolution input is
the high-resolution grid degraded by factors (2, 2, 4), so its slices are 4 x 1.25 = 5 mm
thick (RevGANCore.phantom_dataset.phantom_generator_description). The generator of a
super-resolution model runs on the high-resolution grid, hence 0.8 x 0.8 x 1.25 mm too.

The metadata is rewritten with the project's model-file code; the tensor bytes are checked
to be unchanged. Run from the repository root:
    python tools/set_training_spacing.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from RevGANCore.modelmetadata import METADATA_KEY, ModelMetadata  # noqa: E402
from RevGANCore.phantom import DEFAULT_SPACING  # noqa: E402
from RevGANCore.phantom_dataset import SUPER_RESOLUTION_FACTORS  # noqa: E402
from RevGANCore.tensorfile import load_safetensors, read_safetensors_header, save_safetensors  # noqa: E402

MODELS = ROOT / "Resources" / "Models" / "table2"


def tensor_bytes(path: Path) -> bytes:
    _, _, start, size = read_safetensors_header(path)
    with path.open("rb") as stream:
        stream.seek(start)
        return stream.read(size)


def main() -> None:
    for path in sorted(MODELS.glob("*.safetensors")):
        tensors, strings = load_safetensors(path)
        values = json.loads(strings[METADATA_KEY])
        values["training_spacing_xyz"] = list(DEFAULT_SPACING)
        super_resolution = values["task"] == "super_resolution"
        values["training_slice_thickness_mm"] = (SUPER_RESOLUTION_FACTORS[2] * DEFAULT_SPACING[2]
                                                 if super_resolution else DEFAULT_SPACING[2])
        metadata = ModelMetadata.from_dict(values)  # validated
        before = tensor_bytes(path)
        save_safetensors(path, tensors, {METADATA_KEY: metadata.to_json()})
        if tensor_bytes(path) != before:
            raise SystemExit(f"{path}: the weights changed; restore the file from git")
        print(f"{path.relative_to(ROOT)}: training_spacing_xyz {metadata.training_spacing_xyz}, "
              f"training_slice_thickness_mm {metadata.training_slice_thickness_mm}")


if __name__ == "__main__":
    main()
