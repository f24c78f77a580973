"""Chest phantoms generated on this computer (no download), for trying the module.

One seeded phantom case from RevGANCore gives four volumes of the same anatomy, exactly as
the project's synthetic training data are made:

- "low resolution": thick slices (4x in z) and 2x coarser pixels, the super-resolution input;
- "high resolution": its thin-slice reference (what super-resolution should approach);
- "sharp kernel": a B50f-like reconstruction, the kernel-conversion input;
- "smooth kernel": the B30f-like reconstruction of the same raw data (the reference).

In Slicer the two inputs are also offered in the Sample Data module (category "RevGAN"):
generated on click, shown in the slice views and selected in the module; nothing is
downloaded.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


def showInSliceViews(node, scene=None) -> None:
    """Show ``node`` as the background of every slice view (MRML only, so it also works
    without Slicer's GUI), then fit the views to it where Slicer runs."""
    from .layout import _application, _nodesByClass

    if scene is None:
        import slicer

        scene = slicer.mrmlScene
    for composite in _nodesByClass(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(node.GetID())
    if _application() is not None:
        import slicer

        slicer.util.resetSliceViews()


def sampleSources(iconPath: Optional[str] = None, shape: Sequence[int] = DEFAULT_SHAPE,
                  onLoaded: Optional[Callable[[object, str], None]] = None) -> List[Dict[str, Any]]:
    """Arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for the two phantom
    inputs. No URI, file or node name is given: Sample Data would fetch each URI (its
    ``downloadSample`` ignores custom loaders), so the phantom exists only through the
    local ``customDownloader``, which generates it, shows it and passes it to ``onLoaded``
    (the module selects it as its input)."""

    def loaderFor(kind: str):
        def load(source=None):
            node = loadPhantomNodes((kind,), shape=shape)[kind]
            showInSliceViews(node)
            if onLoaded is not None:
                onLoaded(node, kind)
            return node
        return load

    return [dict(category=SAMPLE_CATEGORY, sampleName=PHANTOMS[kind], uris=[], fileNames=[], nodeNames=[],
                 checksums=[], thumbnailFileName=iconPath, customDownloader=loaderFor(kind))
            for kind in INPUT_KINDS]


def loadSample(sampleName: str, shape: Sequence[int] = DEFAULT_SHAPE):
    """Load a phantom sample by its Sample Data name (what ``SampleData.downloadSample``
    cannot do for generated data); returns the shown node."""
    for source in sampleSources(shape=shape):
        if source["sampleName"] == sampleName:
            return source["customDownloader"]()
    raise ValueError(f"no RevGAN sample named {sampleName!r}; choose from {[PHANTOMS[k] for k in INPUT_KINDS]}")


def registerSampleData(iconPath: Optional[str] = None,
                       onLoaded: Optional[Callable[[object, str], None]] = None) -> None:
    """Offer the two phantom inputs in Slicer's Sample Data module (generated on click)."""
    import SampleData

    logic = SampleData.SampleDataLogic
    registered = {source.sampleName for source in logic.sampleDataSourcesByCategory(SAMPLE_CATEGORY)}
    for source in sampleSources(iconPath, onLoaded=onLoaded):
        if source["sampleName"] not in registered:  # a module reload registers again
            logic.registerCustomSampleDataSource(**source)
