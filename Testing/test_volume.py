"""Volume IO, HU window, grids and resampling (RevGANCore.volume)."""

import gzip
import hashlib
import math
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RevGANCore.errors import ConfigError, OutputError, VolumeError
from RevGANCore.volume import Grid, Volume, hu_to_unit, low_resolution_grid, resample_to_grid, super_resolution_grid, unit_to_hu
from RevGANCore.volume_io import read_volume, write_volume


def oblique_direction(handed: int = 1) -> tuple:
    """A rotation about two axes (no axis aligned with LPS); handed=-1 flips k."""
    a, b = 0.3, 0.2
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    matrix = rz @ rx
    matrix[:, 2] *= handed
    return tuple(matrix.ravel())


def ct_like(shape=(6, 10, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1024, 1500, shape).astype(np.float32)
    array[0, 0, 0] = -1000.0
    return array


def oblique_volume(array=None) -> Volume:
    return Volume(ct_like() if array is None else array, (0.7, 0.8, 2.5), (10.5, -20.25, 30.0),
                  oblique_direction(), source="test")


def file_digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_round_trip_keeps_geometry_and_values(tmp_path, suffix, dtype):
    volume = oblique_volume()
    path = write_volume(volume, tmp_path / f"v{suffix}", dtype=dtype)
    back = read_volume(path)
    # NIfTI stores spacing and direction as float32; the others keep doubles.
    tolerance = 1e-5 if suffix.startswith(".nii") else 1e-12
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=tolerance)
    np.testing.assert_allclose(back.origin, volume.origin, atol=tolerance * 100)
    np.testing.assert_allclose(back.direction, volume.direction, atol=tolerance)
    assert back.array.dtype == np.float32
    expected = np.rint(volume.array) if dtype == "int16" else volume.array
    np.testing.assert_array_equal(back.array, expected)
    assert back.source == str(path)
    # Nothing but the result is left in the folder (the staging folder is gone).
    names = sorted(p.name for p in tmp_path.iterdir())
    data_file = {".mhd": ["v.zraw"], ".nhdr": ["v.raw.gz"]}.get(suffix, [])
    assert names == sorted([f"v{suffix}"] + data_file)


@pytest.mark.parametrize("suffix, data_name", [(".nhdr", "v.raw.gz"), (".mhd", "v.zraw")])
def test_a_header_output_never_replaces_a_data_file_it_does_not_own(tmp_path, suffix, data_name):
    """Writing v.nhdr also writes v.raw.gz: an unrelated v.raw.gz already there is someone
    else's file and is refused; the data file of a v.nhdr being replaced is replaced with it."""
    foreign = tmp_path / data_name
    foreign.write_bytes(b"someone else's data")
    with pytest.raises(OutputError, match=f"data file {data_name}.*does not name"):
        write_volume(oblique_volume(), tmp_path / f"v{suffix}")
    assert foreign.read_bytes() == b"someone else's data" and not (tmp_path / f"v{suffix}").exists()

    foreign.unlink()
    first = oblique_volume()
    write_volume(first, tmp_path / f"v{suffix}")
    second = first.with_array(first.array + 7.0)
    back = read_volume(write_volume(second, tmp_path / f"v{suffix}"))  # its own data file: replaced
    np.testing.assert_array_equal(back.array, np.rint(second.array))


def test_int16_writing_rounds_and_refuses_values_it_cannot_hold(tmp_path):
    array = ct_like()
    array[1, 1, 1:5] = [1.6, -2.5, 32767.0, -32768.0]
    back = read_volume(write_volume(oblique_volume(array), tmp_path / "v.nrrd"))
    np.testing.assert_array_equal(back.array[1, 1, 1:5], [2.0, -2.0, 32767.0, -32768.0])
    stored = sitk.ReadImage(str(tmp_path / "v.nrrd"))
    assert stored.GetPixelID() == sitk.sitkInt16
    array[1, 1, 1] = 40000.0  # saturating to 32767 would pass a broken result for a real one
    with pytest.raises(OutputError, match="to 40000, beyond what int16"):
        write_volume(oblique_volume(array), tmp_path / "w.nrrd")
    assert not (tmp_path / "w.nrrd").exists()


def test_writing_never_touches_the_input(tmp_path):
    source = write_volume(oblique_volume(), tmp_path / "in.nrrd")
    before = file_digest(source)
    volume = read_volume(source)
    with pytest.raises(OutputError, match="input of this command"):
        write_volume(volume, source)
    write_volume(volume.with_array(volume.array + 1), tmp_path / "out.nrrd")
    assert file_digest(source) == before


def test_write_rejects_unknown_type_and_bad_values(tmp_path):
    with pytest.raises(OutputError, match="unknown output file type"):
        write_volume(oblique_volume(), tmp_path / "v.png")
    with pytest.raises(OutputError, match="dtype"):
        write_volume(oblique_volume(), tmp_path / "v.nrrd", dtype="uint8")
    array = ct_like()
    array[2, 2, 2] = np.nan
    with pytest.raises(OutputError, match="non-finite"):
        write_volume(Volume(array), tmp_path / "v.nrrd")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------- HU window


def test_hu_window_round_trip_and_clipping():
    hu = np.linspace(-1150, 350, 301, dtype=np.float32)
    unit = hu_to_unit(hu)
    assert unit.dtype == np.float32
    assert unit[0] == -1.0 and unit[-1] == 1.0
    np.testing.assert_allclose(unit_to_hu(unit), hu, atol=1e-3)
    # Outside the window values clip to the window's ends.
    np.testing.assert_array_equal(hu_to_unit(np.array([-3000.0, 2000.0])), [-1.0, 1.0])
    assert hu_to_unit(-400.0) == pytest.approx(0.0)
    assert unit_to_hu(0.5) == pytest.approx(-25.0)
    # unit_to_hu does not clip: a slightly out-of-range output keeps its value.
    assert unit_to_hu(1.1) == pytest.approx(425.0)


def test_hu_window_on_torch_tensors_and_custom_window():
    tensor = torch.tensor([-2000.0, -1000.0, 0.0, 1000.0], dtype=torch.float64)
    unit = hu_to_unit(tensor, window=(-1000, 1000))
    assert isinstance(unit, torch.Tensor) and unit.dtype == torch.float64
    assert torch.allclose(unit, torch.tensor([-1.0, -1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(unit_to_hu(unit, window=(-1000, 1000)), torch.tensor([-1000.0, -1000.0, 0.0, 1000.0],
                                                                             dtype=torch.float64))
    with pytest.raises(ConfigError):
        hu_to_unit(tensor, window=(350, -1150))


# ------------------------------------------------------------------- grids and resampling


@pytest.mark.parametrize("handed", [1, -1])
def test_super_resolution_grid_keeps_the_physical_box(handed):
    coarse = Grid((5, 7, 9), (1.4, 1.6, 5.0), (3.0, -4.0, 7.5), oblique_direction(handed))
    fine = super_resolution_grid(coarse, (2, 2, 4))
    assert fine.shape == (20, 14, 18)
    np.testing.assert_allclose(fine.spacing, (0.7, 0.8, 1.25))
    np.testing.assert_allclose(fine.physical_extent, coarse.physical_extent)
    np.testing.assert_allclose(fine.corner(), coarse.corner(), atol=1e-12)
    assert fine.direction == coarse.direction
    # The far corner matches too, and going back gives the coarse grid.
    far = lambda g: g.index_to_physical_matrix() @ np.append(np.asarray(g.size_xyz) - 0.5, 1.0)  # noqa: E731
    np.testing.assert_allclose(far(fine), far(coarse), atol=1e-9)
    assert low_resolution_grid(fine, (2, 2, 4)).same_as(coarse, tolerance=1e-12)
    with pytest.raises(VolumeError, match="divisible"):
        low_resolution_grid(Grid((5, 7, 9)), (2, 2, 4))
    with pytest.raises(VolumeError, match="integers"):
        super_resolution_grid(coarse, (2, 2, 0))


def test_resampling_keeps_extent_and_is_exact_on_linear_data():
    # A linear ramp in physical x: linear interpolation reproduces it exactly.
    coarse_grid = Grid((6, 8, 10), (2.0, 1.5, 4.0), (1.0, 2.0, 3.0), oblique_direction())
    matrix = coarse_grid.index_to_physical_matrix()
    k, j, i = np.meshgrid(*(np.arange(n) for n in coarse_grid.shape), indexing="ij")
    physical = np.einsum("ab,bzyx->azyx", matrix[:3, :3], np.stack([i, j, k])) + matrix[:3, 3, None, None, None]
    ramp = Volume((5.0 * physical[0] - 2.0 * physical[2]).astype(np.float32), coarse_grid.spacing,
                  coarse_grid.origin, coarse_grid.direction)
    fine_grid = super_resolution_grid(ramp, (2, 2, 2))
    fine = resample_to_grid(ramp, fine_grid, interpolation="linear")
    assert fine.grid.same_as(fine_grid)
    np.testing.assert_allclose(fine.physical_extent, ramp.physical_extent)
    fm = fine_grid.index_to_physical_matrix()
    k, j, i = np.meshgrid(*(np.arange(n) for n in fine_grid.shape), indexing="ij")
    fine_physical = np.einsum("ab,bzyx->azyx", fm[:3, :3], np.stack([i, j, k])) + fm[:3, 3, None, None, None]
    expected = 5.0 * fine_physical[0] - 2.0 * fine_physical[2]
    inner = (slice(1, -1),) * 3  # half-voxel border: outside the coarse centres' hull
    np.testing.assert_allclose(fine.array[inner], expected[inner], atol=2e-3)
    # B-spline keeps a constant exactly, up to the outer border of the fine grid: every
    # fine voxel centre lies inside the coarse box, so none gets the default value.
    constant = resample_to_grid(ramp.with_array(np.full(ramp.shape, 40.0, np.float32)), fine_grid)
    np.testing.assert_allclose(constant.array, 40.0, atol=1e-3)


def test_resampling_onto_a_flipped_grid_is_a_permutation():
    volume = oblique_volume()
    matrix = volume.direction_matrix.copy()
    matrix[:, 2] *= -1
    last = volume.index_to_physical_matrix() @ np.array([0, 0, volume.shape[0] - 1, 1.0])
    flipped = Grid(volume.shape, volume.spacing, tuple(last[:3]), tuple(matrix.ravel()))
    result = resample_to_grid(volume, flipped, interpolation="nearest")
    np.testing.assert_array_equal(result.array, volume.array[::-1])
    with pytest.raises(ConfigError):
        resample_to_grid(volume, flipped, interpolation="cubic")


# ------------------------------------------------------------------- bad input


def write_image(path, array, dimension_4=False, vector=False):
    if dimension_4:
        image = sitk.Image([4, 5, 6, array], sitk.sitkFloat32)
    else:
        image = sitk.GetImageFromArray(array, isVector=vector)
    sitk.WriteImage(image, str(path))
    return path


def test_missing_and_empty_and_corrupt_files(tmp_path):
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "empty.nrrd").write_bytes(b"")
    with pytest.raises(VolumeError, match="empty.nrrd: the file is empty"):
        read_volume(tmp_path / "empty.nrrd")
    (tmp_path / "garbage.nii.gz").write_bytes(b"not an image at all" * 20)
    with pytest.raises(VolumeError, match="garbage.nii.gz: (cannot be read|is corrupt)"):
        read_volume(tmp_path / "garbage.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_truncated_files(tmp_path, suffix):
    path = write_volume(oblique_volume(ct_like((8, 16, 16))), tmp_path / f"whole{suffix}")
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VolumeError, match=f"cut{suffix}"):
        read_volume(cut)


def test_truncated_uncompressed_nifti(tmp_path):
    path = write_volume(oblique_volume(ct_like((8, 16, 16))), tmp_path / "whole.nii")
    cut = tmp_path / "cut.nii"
    cut.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(VolumeError, match="cut.nii: is truncated"):
        read_volume(cut)


def test_wrong_dimensions(tmp_path):
    with pytest.raises(VolumeError, match="flat.nii.gz: is a 2D image"):
        read_volume(write_image(tmp_path / "flat.nii.gz", ct_like((1, 10, 12))[0]))
    with pytest.raises(VolumeError, match="single slice"):
        read_volume(write_image(tmp_path / "slice.nrrd", ct_like((1, 10, 12))))
    with pytest.raises(VolumeError, match="series.nrrd: is a 4D image"):
        read_volume(write_image(tmp_path / "series.nrrd", 3, dimension_4=True))
    with pytest.raises(VolumeError, match="colour.nii.gz: has 3 components"):
        read_volume(write_image(tmp_path / "colour.nii.gz", ct_like((4, 5, 6, 3)), vector=True))


def test_a_unit_fourth_axis_is_accepted(tmp_path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(ct_like((4, 5, 6)))])
    assert image.GetDimension() == 4 and image.GetSize()[3] == 1
    sitk.WriteImage(image, str(tmp_path / "t1.nrrd"))
    assert read_volume(tmp_path / "t1.nrrd").shape == (4, 5, 6)


def test_non_finite_voxels_and_mr_intensities(tmp_path):
    array = ct_like()
    array[3, 4, 5] = np.inf
    array[1, 1, 1] = np.nan
    with pytest.raises(VolumeError, match="nan.mha: contains 2 non-finite voxels"):
        read_volume(write_image(tmp_path / "nan.mha", array))
    mr = np.random.default_rng(1).uniform(0, 4000, (6, 10, 12)).astype(np.float32)
    path = write_image(tmp_path / "mr.nii.gz", mr)
    with pytest.raises(VolumeError, match="mr.nii.gz: values range from .* MR image"):
        read_volume(path)
    assert read_volume(path, expect_ct=False).shape == (6, 10, 12)


def test_gzip_of_nifti_is_deterministic(tmp_path):
    """Same volume, same bytes (no time stamps in the gzip header)."""
    a = write_volume(oblique_volume(), tmp_path / "a.nii.gz")
    b = write_volume(oblique_volume(), tmp_path / "b.nii.gz")
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes())[:4] == (348).to_bytes(4, "little")
    assert os.stat(a).st_size > 0
