"""Chest phantoms generated on this computer (no download), for trying the module.

One seeded phantom case from RevGANCore gives four volumes of the same anatomy, exactly as
the project's synthetic training data are made:

- "low resolution": thick slices (4x in z) and 2x coarser pixels, the super-resolution input;
- "high resolution": its thin-slice reference (what super-resolution should approach);
- "sharp kernel": a B50f-like reconstruction, the kernel-conversion input;
- "smooth kernel": the B30f-like reconstruction of the same raw data (the reference).

In Slicer the two inputs are also offered in the Sample Data module (category "RevGAN").
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from .corepath import ensureRevGANCoreImportable

ensureRevGANCoreImportable()

#: Phantom kinds, in the order they are loaded, with their node names.
PHANTOMS: Dict[str, str] = {
    "lr": "RevGAN phantom low resolution",
    "hr": "RevGAN phantom high resolution (reference)",
    "sharp": "RevGAN phantom sharp kernel",
    "smooth": "RevGAN phantom smooth kernel (reference)",
}
INPUT_KINDS = ("lr", "sharp")
#: (z, y, x) voxels of the high-resolution grid; divisible by the (4, 2, 2) factors.
DEFAULT_SHAPE: Tuple[int, int, int] = (64, 128, 128)
SAMPLE_CATEGORY = "RevGAN"


def generatePhantomVolumes(seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE, spacing=None) -> Dict[str, object]:
    """The four RevGANCore Volumes (HU) of one phantom case, keyed "lr", "hr", "sharp",
    "smooth" (a few seconds on a laptop at the default size)."""
    from RevGANCore.phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case

    options = {"shape": tuple(int(n) for n in shape)}
    if spacing is not None:
        options["spacing"] = tuple(float(s) for s in spacing)
    return make_phantom_case(case_seeds(int(seed), 0), PhantomRecipe(**options))


def loadPhantomNodes(kinds: Sequence[str] = INPUT_KINDS, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
                     scene=None, volumes: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Add phantom volumes to the scene as new volume nodes (CT window); returns the nodes
    by kind. ``volumes`` reuses already generated ones."""
    from .nodes import createOutputNode

    unknown = [kind for kind in kinds if kind not in PHANTOMS]
    if unknown:
        raise ValueError(f"unknown phantom kinds {unknown}; choose from {list(PHANTOMS)}")
    if scene is None:
        import slicer

        scene = slicer.mrmlScene
    if volumes is None:
        volumes = generatePhantomVolumes(seed, shape)
    nodes = {}
    for kind in kinds:
        node = createOutputNode(volumes[kind], PHANTOMS[kind], scene=scene)
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(1500.0, -600.0)  # lung window: shows both lung and soft tissue
        nodes[kind] = node
    return nodes


def registerSampleData(iconPath: Optional[str] = None) -> None:
    """Offer the two phantom inputs in Slicer's Sample Data module (generated on click)."""
    import SampleData

    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):
        logic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title="RevGAN (generated, no download)")

    def loader(kind: str):
        def load(source):
            return loadPhantomNodes((kind,))[kind]
        return load

    for kind in INPUT_KINDS:
        logic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY,
            sampleName=PHANTOMS[kind],
            uris=f"revgan-phantom:{kind}",  # never downloaded: the custom loader generates it
            fileNames=f"{kind}.nrrd",
            nodeNames=PHANTOMS[kind],
            thumbnailFileName=iconPath,
            customDownloader=loader(kind),
        )
