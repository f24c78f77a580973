"""Volume nodes <-> :class:`RevGANCore.volume.Volume`, with exact geometry.

Slicer places voxel (i, j, k) at ``IJKToRAS @ (i, j, k, 1)`` in RAS millimetres; a Volume
places it at ``origin + direction @ (spacing * (i, j, k))`` in LPS (SimpleITK's and
DICOM's convention). The two frames differ by a sign on the first two axes, so::

    IJKToRAS = diag(-1, -1, 1, 1) @ Volume.index_to_physical_matrix()

and the voxel arrays are the same (k, j, i) arrays, with no flip or transpose. Oblique
directions go through unchanged. A node's parent transform is not part of its IJKToRAS:
results are put under the same transform as their input so they overlay exactly.

Nothing here modifies an input node: :func:`volumeFromNode` copies the voxels
(``slicer.util.arrayFromVolume`` returns a view into the node's memory).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .corepath import ensureRevGANCoreImportable

ensureRevGANCoreImportable()

from RevGANCore.errors import VolumeError  # noqa: E402
from RevGANCore.volume import Volume  # noqa: E402

#: Multiplying by this matrix converts LPS to RAS and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"


def _vtkMatrixToArray(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _arrayToVtkMatrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def ijkToRasArray(node) -> np.ndarray:
    """The node's IJKToRAS matrix as a 4x4 numpy array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _vtkMatrixToArray(matrix)


def ijkToRasFromVolume(volume: Volume) -> np.ndarray:
    """The IJKToRAS matrix that places ``volume``'s voxels where its LPS geometry says."""
    return LPS_TO_RAS @ volume.index_to_physical_matrix()


def isScalarVolumeNode(node) -> bool:
    """True for a scalar (grey-level) volume node; False for labelmaps, vectors, tensors."""
    return bool(node is not None and node.GetClassName() == SCALAR_VOLUME_CLASS)


def volumeFromNode(node, dtype=np.float32) -> Volume:
    """A :class:`Volume` with a copy of the node's voxels (as ``dtype``) and its geometry.

    Raises :class:`RevGANCore.errors.VolumeError` for a missing node, a node without
    voxels, or a node that is not a scalar volume (labelmap, vector or tensor volume)."""
    if node is None:
        raise VolumeError("no input volume selected")
    name = node.GetName() or node.GetID()
    if not isScalarVolumeNode(node):
        raise VolumeError(f"{name}: is a {node.GetClassName()}; a scalar (grey-level) CT volume is needed")
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise VolumeError(f"{name}: has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise VolumeError(f"{name}: has {image.GetNumberOfScalarComponents()} components per voxel; "
                          "a scalar CT volume is needed")
    import slicer.util

    view = slicer.util.arrayFromVolume(node)  # a view into the node's memory: copy it
    array = np.array(view, dtype=dtype, copy=True)
    physical = LPS_TO_RAS @ ijkToRasArray(node)
    columns = physical[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise VolumeError(f"{name}: has a degenerate IJKToRAS matrix (zero spacing)")
    direction = columns / spacing
    return Volume(array, tuple(spacing), tuple(physical[:3, 3]), tuple(direction.ravel()), source=name)


def updateNodeFromVolume(node, volume: Volume, dtype=None) -> None:
    """Write ``volume``'s voxels (as ``dtype``, default: the volume's) and geometry into
    ``node``. Floats become an integer ``dtype`` rounded and clipped to its range."""
    import slicer.util

    array = volume.array if dtype is None else _converted(volume.array, np.dtype(dtype))
    wasModifying = node.StartModify()
    try:
        node.SetIJKToRASMatrix(_arrayToVtkMatrix(ijkToRasFromVolume(volume)))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    finally:
        node.EndModify(wasModifying)


def _converted(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu" and array.dtype.kind == "f":
        limits = np.iinfo(dtype)
        return np.clip(np.rint(array), limits.min, limits.max).astype(dtype)
    return array.astype(dtype, copy=False)


def copyDisplaySettings(source, target) -> None:
    """Give ``target`` the window/level, colour table and interpolation of ``source``
    (both volume nodes); creates ``target``'s display node when it has none."""
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    targetDisplay = target.GetDisplayNode()
    sourceDisplay = source.GetDisplayNode() if source is not None else None
    if targetDisplay is None or sourceDisplay is None:
        return
    wasModifying = targetDisplay.StartModify()
    try:
        if sourceDisplay.GetColorNodeID():
            targetDisplay.SetAndObserveColorNodeID(sourceDisplay.GetColorNodeID())
        # Fixed window/level: an automatic one would be recomputed from the new voxels
        # and make the two views look different for reasons unrelated to the translation.
        targetDisplay.AutoWindowLevelOff()
        targetDisplay.SetWindowLevel(sourceDisplay.GetWindow(), sourceDisplay.GetLevel())
        if hasattr(sourceDisplay, "GetInterpolate"):
            targetDisplay.SetInterpolate(sourceDisplay.GetInterpolate())
    finally:
        targetDisplay.EndModify(wasModifying)


def placeLikeReference(node, reference) -> None:
    """Same parent transform and same subject-hierarchy parent as ``reference``: for a
    series loaded from DICOM, its study, where Slicer's DICOM export looks for it."""
    if reference is None:
        return
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    hierarchy = _subjectHierarchy(node.GetScene())
    if hierarchy is None:
        return
    referenceItem = hierarchy.GetItemByDataNode(reference)
    parent = hierarchy.GetItemParent(referenceItem) if referenceItem else 0
    if not parent:
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # Slicer's subject-hierarchy plugins add an item for every new node; bare MRML does not
        hierarchy.CreateItem(parent, node)


#: Subject-hierarchy attributes that Slicer's DICOM export reads as the series' tags
#: ("DICOM." + tag name, vtkMRMLSubjectHierarchyConstants::GetDICOMAttributePrefix()).
SERIES_DESCRIPTION_ATTRIBUTE = "DICOM.SeriesDescription"
MODALITY_ATTRIBUTE = "DICOM.Modality"
#: DICOM's SeriesDescription is an LO value: at most 64 characters.
SERIES_DESCRIPTION_LENGTH = 64


def _subjectHierarchy(scene):
    try:
        import slicer

        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    except (AttributeError, ImportError):
        return None


def describeSeries(node, description: str) -> None:
    """Give ``node``'s subject-hierarchy item the series description (and CT modality)
    that Slicer's DICOM export writes, so an exported result says what made it."""
    hierarchy = _subjectHierarchy(node.GetScene())
    if hierarchy is None:
        return
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    hierarchy.SetItemAttribute(item, SERIES_DESCRIPTION_ATTRIBUTE, description[:SERIES_DESCRIPTION_LENGTH])
    hierarchy.SetItemAttribute(item, MODALITY_ATTRIBUTE, "CT")


def createOutputNode(volume: Volume, name: str, referenceNode=None, outputNode=None, scene=None, dtype=None):
    """Put ``volume`` into the scene: into ``outputNode`` when given, else a NEW scalar
    volume node named ``name``, with voxels of ``dtype`` (default: the volume's). Display settings (window/level, colours) are copied from
    ``referenceNode``; the node goes under the reference's transform and folder.

    ``outputNode`` must not be ``referenceNode``: the input is never overwritten."""
    if scene is None:
        scene = referenceNode.GetScene() if referenceNode is not None else None
    if scene is None:
        import slicer

        scene = slicer.mrmlScene
    if outputNode is not None and referenceNode is not None and outputNode.GetID() == referenceNode.GetID():
        raise VolumeError("the output volume must not be the input volume; choose 'Create new volume'")
    if outputNode is not None and not isScalarVolumeNode(outputNode):
        raise VolumeError(f"{outputNode.GetName()}: is a {outputNode.GetClassName()}; the output must be a "
                          "scalar volume")
    created = outputNode is None
    node = scene.AddNewNodeByClass(SCALAR_VOLUME_CLASS, name) if created else outputNode
    try:
        updateNodeFromVolume(node, volume, dtype=dtype)
        if referenceNode is not None:
            copyDisplaySettings(referenceNode, node)
        elif node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if created:
            placeLikeReference(node, referenceNode)
    except Exception:
        if created:
            scene.RemoveNode(node)
        raise
    return node


def sameGeometry(node, volume: Volume, tolerance: float = 1e-6) -> bool:
    """Whether ``node`` has ``volume``'s grid (dimensions and IJKToRAS)."""
    image = node.GetImageData()
    if image is None or tuple(image.GetDimensions()) != volume.size_xyz:
        return False
    return bool(np.allclose(ijkToRasArray(node), ijkToRasFromVolume(volume), rtol=0, atol=tolerance))


def nodeCorner(node) -> np.ndarray:
    """RAS position of the outer corner of voxel (0, 0, 0) (half a voxel before its centre)."""
    matrix = ijkToRasArray(node)
    return (matrix @ np.array([-0.5, -0.5, -0.5, 1.0]))[:3]


def nodeExtent(node) -> np.ndarray:
    """Edge lengths (mm) along i, j, k of the box covered by the node's voxels."""
    matrix = ijkToRasArray(node)
    dimensions = np.asarray(node.GetImageData().GetDimensions(), dtype=float)
    return np.linalg.norm(matrix[:3, :3], axis=0) * dimensions


def nodeDirections(node) -> np.ndarray:
    """Unit RAS directions of the i, j, k axes, as the columns of a 3x3 matrix."""
    columns = ijkToRasArray(node)[:3, :3]
    return columns / np.linalg.norm(columns, axis=0)


def findNodeByID(scene, nodeID: Optional[str]):
    return scene.GetNodeByID(nodeID) if nodeID else None
