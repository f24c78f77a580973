"""The side-by-side layout on a real MRML scene (the nodes Slicer's layout manager uses)."""

import numpy as np
import pytest

from slicer_helpers import (  # noqa: F401
    addVolumeNode, assertVolumeUnchanged, ctLikeArray, obliqueIjkToRas, scene, slicer, volumeState)

from RevGANSlicerLib import layout  # noqa: E402


def _addViews(scene, names=("Red", "Yellow", "Green")):
    """What Slicer's layout manager creates at start-up: a slice node and a slice composite
    node per view, plus the layout node and the crosshair."""
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    orientations = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
    for name in names:
        view = slicer.vtkMRMLSliceNode()
        view.SetName(name)
        view.SetLayoutName(name)
        view.SetSingletonTag(name)
        scene.AddNode(view)
        view.SetOrientation(orientations[name])
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composite.SetSingletonTag(name)
        scene.AddNode(composite)
    layoutNode = slicer.vtkMRMLLayoutNode()
    layoutNode.SetSingletonTag("layout")
    scene.AddNode(layoutNode)
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetSingletonTag("default")
    scene.AddNode(crosshair)
    return layoutNode, crosshair


def test_side_by_side_shows_input_left_and_result_right_linked(scene):
    layoutNode, crosshair = _addViews(scene)
    original = addVolumeNode(scene, ctLikeArray((8, 16, 16)), obliqueIjkToRas(spacing=(1.6, 1.6, 5.0)), "CT")
    result = addVolumeNode(scene, ctLikeArray((32, 32, 32), seed=3), obliqueIjkToRas(spacing=(0.8, 0.8, 1.25)),
                           "CT super-resolved")
    foreground = addVolumeNode(scene, ctLikeArray((2, 2, 2)), np.eye(4), "overlay")
    layout.sliceCompositeNode(scene, "Yellow").SetForegroundVolumeID(foreground.GetID())

    layout.showSideBySide(original, result, scene=scene)

    assert layoutNode.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    red = layout.sliceCompositeNode(scene, "Red")
    yellow = layout.sliceCompositeNode(scene, "Yellow")
    assert red.GetBackgroundVolumeID() == original.GetID()
    assert yellow.GetBackgroundVolumeID() == result.GetID()
    assert yellow.GetForegroundVolumeID() is None
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    # Same orientation in both views (Yellow is sagittal by default in Slicer).
    assert layout.sliceNode(scene, "Yellow").GetOrientation() == layout.sliceNode(scene, "Red").GetOrientation()
    assert crosshair.GetCrosshairMode() != slicer.vtkMRMLCrosshairNode.NoCrosshair
    # Both views on the same slice through the centre of the original.
    redSlice, yellowSlice = layout.sliceNode(scene, "Red"), layout.sliceNode(scene, "Yellow")
    assert redSlice.GetSliceOffset() == yellowSlice.GetSliceOffset()
    # Fitted: the field of view is of the volume's size, not the 250 mm default.
    assert max(redSlice.GetFieldOfView()[:2]) < 200


def _nodeIds(scene):
    return sorted(scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes()))


@pytest.mark.parametrize("views", [None, ("Red",)], ids=["bare scene", "Yellow not created yet"])
def test_side_by_side_sets_only_the_views_that_exist_and_creates_nothing(scene, views):
    """Without the application (or before the layout manager made the Yellow view), the
    views present are set and nothing else in the scene changes: no node is added or
    removed, the volumes keep their voxels, geometry and window."""
    layoutNode = _addViews(scene, views)[0] if views is not None else None
    original = addVolumeNode(scene, ctLikeArray(), obliqueIjkToRas(), "CT")
    result = addVolumeNode(scene, ctLikeArray(seed=4), obliqueIjkToRas(), "CT result")
    nodesBefore = _nodeIds(scene)
    statesBefore = [volumeState(original), volumeState(result)]

    layout.showSideBySide(original, result, scene=scene)

    assert _nodeIds(scene) == nodesBefore
    assertVolumeUnchanged(original, statesBefore[0])
    assertVolumeUnchanged(result, statesBefore[1])
    assert layout.sliceCompositeNode(scene, "Yellow") is None
    if views is None:
        assert layout.sliceCompositeNode(scene, "Red") is None and layout.layoutNode(scene) is None
    else:
        red = layout.sliceCompositeNode(scene, "Red")
        assert red.GetBackgroundVolumeID() == original.GetID() and red.GetLinkedControl()
        assert layoutNode.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
