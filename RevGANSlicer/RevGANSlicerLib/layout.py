"""The side-by-side comparison: Red = original (left), Yellow = translated (right).

The MRML part (layout arrangement, which volume each view shows, linked views, same
orientation, slices centred on the volume, crosshair) works on any scene, with or without
the Slicer application; fitting the views to the volume uses the application's layout
manager when there is one and MRML's slice logic otherwise.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import numpy as np

COMPARE_VIEWS = ("Red", "Yellow")


def _nodesByClass(scene, className: str) -> List:
    collection = scene.GetNodesByClass(className)
    nodes = [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]
    return [node for node in nodes if node is not None]


def sliceCompositeNode(scene, layoutName: str):
    """The slice composite node of the view called ``layoutName`` ("Red", "Yellow", ...)."""
    for node in _nodesByClass(scene, "vtkMRMLSliceCompositeNode"):
        if node.GetLayoutName() == layoutName:
            return node
    return None


def sliceNode(scene, layoutName: str):
    for node in _nodesByClass(scene, "vtkMRMLSliceNode"):
        if node.GetLayoutName() == layoutName:
            return node
    return None


def layoutNode(scene):
    nodes = _nodesByClass(scene, "vtkMRMLLayoutNode")
    return nodes[0] if nodes else None


def _application():
    try:
        import slicer

        return getattr(slicer, "app", None)
    except ImportError:
        return None


def _volumeCentreRas(volumeNode) -> Optional[np.ndarray]:
    image = volumeNode.GetImageData() if volumeNode is not None else None
    if image is None:
        return None
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    dimensions = np.asarray(image.GetDimensions(), dtype=float)
    centre = list((dimensions - 1) / 2) + [1.0]
    return np.asarray(matrix.MultiplyPoint(centre)[:3])


def showSideBySide(leftVolumeNode, rightVolumeNode, scene=None, views: Iterable[str] = COMPARE_VIEWS,
                   orientation: Optional[str] = None) -> None:
    """Show ``leftVolumeNode`` in Red and ``rightVolumeNode`` in Yellow, side by side.

    Both views get the same orientation (Red's, or ``orientation``), are linked (moving
    the slice or zooming in one moves the other) and centred on the volume; the crosshair
    is switched on (shift + mouse move shows the same point in both views)."""
    if scene is None:
        scene = leftVolumeNode.GetScene()
    import slicer

    layout = layoutNode(scene)
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    application = _application()
    if application is not None and hasattr(application, "processEvents"):
        application.processEvents()  # let the layout manager create the Yellow view's nodes
    left, right = tuple(views)
    redSlice = sliceNode(scene, left)
    if orientation is None and redSlice is not None:
        orientation = redSlice.GetOrientation() if hasattr(redSlice, "GetOrientation") else None
    for name, volume in ((left, leftVolumeNode), (right, rightVolumeNode)):
        composite = sliceCompositeNode(scene, name)
        if composite is None:
            continue
        composite.SetBackgroundVolumeID(volume.GetID() if volume is not None else None)
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        composite.SetLinkedControl(True)
        view = sliceNode(scene, name)
        if view is not None and orientation and name != left:
            try:
                view.SetOrientation(orientation)
            except (TypeError, AttributeError):
                pass
    _showCrosshair(scene)
    fitViews(scene, views, leftVolumeNode)


def _showCrosshair(scene) -> None:
    import slicer

    for crosshair in _nodesByClass(scene, "vtkMRMLCrosshairNode"):
        if crosshair.GetCrosshairMode() == slicer.vtkMRMLCrosshairNode.NoCrosshair:
            crosshair.SetCrosshairMode(slicer.vtkMRMLCrosshairNode.ShowBasic)


def fitViews(scene, views: Iterable[str] = COMPARE_VIEWS, centreOn=None) -> None:
    """Fit the named views to their volumes and put them on the same slice (the centre of
    ``centreOn``)."""
    views = tuple(views)
    application = _application()
    manager = application.layoutManager() if application is not None and hasattr(application, "layoutManager") \
        else None
    centre = _volumeCentreRas(centreOn)
    import slicer

    for name in views:
        node = sliceNode(scene, name)
        if node is None:
            continue
        widget = manager.sliceWidget(name) if manager is not None else None
        if widget is not None:
            widget.sliceLogic().FitSliceToAll()
        else:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(scene)
            logic.SetSliceNode(node)
            logic.FitSliceToAll()
        if centre is not None:
            node.JumpSliceByCentering(*centre)
