"""Volume node <-> Volume conversion against the real MRML library (slicer-core)."""

import numpy as np
import pytest

from slicer_helpers import addVolumeNode, ctLikeArray, ijkToRas, obliqueIjkToRas, scene, slicer  # noqa: F401

from RevGANSlicerLib import nodes  # noqa: E402
from RevGANCore.errors import VolumeError  # noqa: E402
from RevGANCore.volume import Volume  # noqa: E402


def test_oblique_node_round_trip_keeps_geometry_and_voxels(scene):
    array = ctLikeArray((7, 9, 11))
    matrix = obliqueIjkToRas()
    node = addVolumeNode(scene, array, matrix)

    volume = nodes.volumeFromNode(node)
    assert volume.shape == (7, 9, 11)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    np.testing.assert_allclose(volume.spacing, (0.7, 0.8, 2.5), atol=1e-12)
    # LPS: the first two rows of IJKToRAS change sign, the voxel order does not.
    np.testing.assert_allclose(volume.index_to_physical_matrix(), np.diag([-1, -1, 1, 1]) @ matrix, atol=1e-12)

    back = nodes.createOutputNode(volume, "round trip", referenceNode=node)
    assert back.GetID() != node.GetID()
    np.testing.assert_allclose(ijkToRas(back), matrix, atol=1e-12)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array.astype(np.float32))
    assert nodes.sameGeometry(back, volume)


def test_conversion_matches_slicers_own_file_reader(scene, tmp_path):
    """Independent check of the RAS/LPS convention: a file written by SimpleITK (LPS) and
    read by MRML's own storage node gives the IJKToRAS that volumeFromNode inverts."""
    import SimpleITK as sitk

    from slicer_helpers import rotation

    array = ctLikeArray((5, 6, 7)).astype(np.float32)
    direction = rotation(20.0, 10.0, -35.0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.6, 0.9, 3.0))
    image.SetOrigin((-80.0, 20.5, -300.0))
    image.SetDirection(tuple(direction.ravel()))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by MRML")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)

    volume = nodes.volumeFromNode(node)
    np.testing.assert_allclose(volume.spacing, image.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(np.reshape(volume.direction, (3, 3)), direction, atol=1e-9)
    np.testing.assert_array_equal(volume.array, array)

    # And the other way: a Volume put into a node lands where MRML puts the file.
    made = nodes.createOutputNode(Volume(array, image.GetSpacing(), image.GetOrigin(), tuple(direction.ravel())),
                                  "from volume")
    np.testing.assert_allclose(ijkToRas(made), ijkToRas(node), atol=1e-9)


def test_volume_is_a_copy_and_input_is_never_modified(scene):
    array = ctLikeArray((4, 5, 6))
    node = addVolumeNode(scene, array, obliqueIjkToRas())
    before = ijkToRas(node).copy()
    volume = nodes.volumeFromNode(node)
    volume.array[...] = 123.0  # arrayFromVolume is a view: the conversion must have copied
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)

    out = nodes.createOutputNode(volume, "result", referenceNode=node)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    np.testing.assert_array_equal(ijkToRas(node), before)
    assert slicer.util.arrayFromVolume(out).dtype == np.float32

    with pytest.raises(VolumeError, match="must not be the input"):
        nodes.createOutputNode(volume, "x", referenceNode=node, outputNode=node)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)


def test_window_level_colour_and_transform_are_copied(scene):
    node = addVolumeNode(scene, ctLikeArray(), np.diag([0.8, 0.8, 1.25, 1.0]), window=(350.0, 40.0))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetAndObserveTransformNodeID(transform.GetID())
    volume = nodes.volumeFromNode(node)

    out = nodes.createOutputNode(volume.with_array(volume.array * 2), "doubled", referenceNode=node)
    display = out.GetDisplayNode()
    assert display is not None
    assert display.GetWindow() == pytest.approx(350.0)
    assert display.GetLevel() == pytest.approx(40.0)
    assert not display.GetAutoWindowLevel()
    assert display.GetColorNodeID() == node.GetDisplayNode().GetColorNodeID()
    assert out.GetTransformNodeID() == transform.GetID()
    assert out.GetName() == "doubled"


def test_existing_output_node_is_overwritten_with_the_new_grid(scene):
    node = addVolumeNode(scene, ctLikeArray((4, 5, 6)), np.diag([1.0, 1.0, 2.0, 1.0]))
    target = addVolumeNode(scene, ctLikeArray((2, 2, 2), seed=1), np.eye(4), name="old result")
    fine = Volume(np.zeros((8, 10, 12), np.float32), (0.5, 0.5, 1.0), (-1.0, 2.0, 3.0))
    out = nodes.createOutputNode(fine, "ignored name", referenceNode=node, outputNode=target)
    assert out.GetID() == target.GetID()
    assert out.GetName() == "old result"
    assert out.GetImageData().GetDimensions() == (12, 10, 8)
    assert nodes.sameGeometry(out, fine)


def test_non_scalar_or_empty_nodes_are_refused(scene):
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(VolumeError, match="scalar"):
        nodes.volumeFromNode(label)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(VolumeError, match="no voxels"):
        nodes.volumeFromNode(empty)
    with pytest.raises(VolumeError, match="no input"):
        nodes.volumeFromNode(None)


def test_extent_and_corner_helpers(scene):
    node = addVolumeNode(scene, ctLikeArray((4, 5, 6)), obliqueIjkToRas(spacing=(1.0, 2.0, 3.0)))
    np.testing.assert_allclose(nodes.nodeExtent(node), (6.0, 10.0, 12.0))
    directions = nodes.nodeDirections(node)
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
    corner = nodes.nodeCorner(node)
    matrix = ijkToRas(node)
    np.testing.assert_allclose(corner, matrix[:3, 3] - matrix[:3, :3] @ np.full(3, 0.5))
