"""Axis orders: a stored volume and its canonical (LPS-closest) view hold the same voxels at
the same physical places, and a result comes back in the stored order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from RevGANCore.orientation import axis_order
from RevGANCore.volume import Volume, super_resolution_grid


def _rotation(angle_deg: float) -> np.ndarray:
    """A rotation about the z axis (an oblique scan's residual rotation)."""
    a = np.radians(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _stored_orders():
    """Every axis permutation and sense, each also slightly oblique."""
    for permutation in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            for column, row in enumerate(permutation):
                matrix[row, column] = signs[column]
            yield matrix
            yield _rotation(12.0) @ matrix


def _volume(direction: np.ndarray) -> Volume:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # every voxel's value unique
    return Volume(array, (0.7, 0.9, 2.5), (-12.0, 30.5, 100.0), tuple(direction.ravel()))


def _points_by_value(volume: Volume) -> dict:
    """Physical position of every voxel, keyed by its (unique) value."""
    z, y, x = np.indices(volume.shape)
    index = np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    points = (volume.index_to_physical_matrix() @ index)[:3].T
    return dict(zip(volume.array.ravel().tolist(), map(tuple, points)))


@pytest.mark.parametrize("direction", list(_stored_orders()))
def test_the_canonical_view_keeps_every_voxel_in_place_and_restores_exactly(direction):
    stored = _volume(direction)
    order = axis_order(stored.direction)
    canonical = order.canonical(stored)
    # Closest to LPS: each canonical index axis points along its own patient axis.
    assert np.all(np.diag(canonical.direction_matrix) > 0.9)
    assert np.shares_memory(canonical.array, stored.array)  # a view, no copy
    before, after = _points_by_value(stored), _points_by_value(canonical)
    assert before.keys() == after.keys()
    assert max(np.abs(np.subtract(before[v], after[v])).max() for v in before) < 1e-9
    back = order.restore(canonical)
    np.testing.assert_array_equal(back.array, stored.array)
    np.testing.assert_allclose(back.spacing, stored.spacing)
    np.testing.assert_allclose(back.origin, stored.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, stored.direction, atol=1e-12)


def test_an_lps_volume_is_already_canonical():
    order = axis_order(np.eye(3).ravel())
    assert order.is_identity
    stored = _volume(np.eye(3))
    canonical = order.canonical(stored)
    assert canonical.array is not None and np.shares_memory(canonical.array, stored.array)
    np.testing.assert_array_equal(canonical.array, stored.array)
    assert canonical.grid == stored.grid


def test_a_result_on_a_finer_grid_comes_back_in_the_stored_order():
    """Super-resolution of a mirrored (RAS-stored) volume: refined in canonical order, the
    result's grid restored is the stored volume's own super-resolution grid, physically."""
    stored = _volume(np.diag([-1.0, -1.0, 1.0]))
    order = axis_order(stored.direction)
    canonical = order.canonical(stored)
    fine = super_resolution_grid(canonical, (2, 2, 4))
    result = Volume(np.zeros(fine.shape, np.float32), fine.spacing, fine.origin, fine.direction)
    back = order.restore(result)
    assert order.stored_grid(fine) == back.grid
    expected = super_resolution_grid(stored, (2, 2, 4))
    assert back.shape == expected.shape
    np.testing.assert_allclose(back.spacing, expected.spacing)
    np.testing.assert_allclose(back.origin, expected.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, expected.direction, atol=1e-12)


def test_a_sagittally_stored_volume_is_refined_along_the_patients_z():
    """Stored with its slices along x (array axis 0 = patient x), the canonical view puts the
    patient's z on array axis 0, the axis super-resolution refines four times."""
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # index x->P, y->S, z->L
    stored = _volume(direction)
    canonical = axis_order(stored.direction).canonical(stored)
    assert canonical.spacing == (2.5, 0.7, 0.9)  # the old z spacing (L) now on x, S's on z
    fine = super_resolution_grid(canonical, (2, 2, 4))
    assert fine.spacing[2] == pytest.approx(0.9 / 4)  # patient z refined four times


def _stored_differently(volume: Volume, direction: np.ndarray) -> Volume:
    """``volume``'s image stored with index axes along ``direction`` (a signed permutation in
    LPS): the same voxels at the same physical places."""
    order = axis_order(tuple(direction.ravel()))
    stored_grid = order.stored_grid(volume.grid)
    return Volume(np.ascontiguousarray(order.stored_array(volume.array)), stored_grid.spacing,
                  stored_grid.origin, stored_grid.direction)


@pytest.mark.parametrize("task, factors", [("kernel", None), ("super_resolution", (2, 2, 4))])
@pytest.mark.parametrize("storage", ["mirrored in-plane (RAS)", "sagittal"])
def test_a_scan_gives_the_same_result_however_its_file_orders_the_axes(tmp_path, task, factors, storage):
    """Measured before: a mirrored copy of a real chest CT crop came out up to 183 HU apart,
    and a sagittally stored scan was refined along the wrong axis. Through real files and the
    command line, both now give the axial scan's result, stored back in their own order."""
    from model_helpers import random_volume, save_tiny_model

    from RevGANCore.cli import main
    from RevGANCore.volume_io import read_volume, write_volume

    model = save_tiny_model(tmp_path / "model.safetensors", task, ngf=2, seed=3, factors=factors)
    axial = random_volume((8, 20, 24), seed=4, spacing=(0.8, 0.8, 2.0))
    direction = (np.diag([-1.0, -1.0, 1.0]) if storage.startswith("mirrored") else
                 np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    other = _stored_differently(axial, direction)
    outputs = []
    for name, volume in (("axial", axial), ("other", other)):
        source = write_volume(volume, tmp_path / f"{name}.nrrd", dtype="float32")
        command = "super-resolve" if task == "super_resolution" else "translate"
        assert main([command, str(source), str(tmp_path / f"{name}_out.nrrd"), "--model", str(model),
                     "--device", "cpu", "--dtype", "float32", "--quiet"]) == 0
        outputs.append(read_volume(tmp_path / f"{name}_out.nrrd"))
    expected, got = outputs
    assert got.direction == pytest.approx(other.direction)  # stored back in its own order
    canonical = axis_order(got.direction).canonical(got)
    np.testing.assert_array_equal(canonical.array, expected.array)
    np.testing.assert_allclose(canonical.spacing, expected.spacing)
    np.testing.assert_allclose(canonical.origin, expected.origin, atol=1e-6)
