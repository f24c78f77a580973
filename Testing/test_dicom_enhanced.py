"""Enhanced (multi-frame) CT files, written here with pydicom, read with the geometry of
their functional groups (RevGANCore.dicom_enhanced through RevGANCore.dicom)."""

import re

import numpy as np
import pytest
from enhanced_ct_writer import write_enhanced_ct
from test_dicom import volume_with

from RevGANCore.cli import main
from RevGANCore.dicom import find_series, read_dicom_series
from RevGANCore.errors import VolumeError


def physical_point(volume, index_ijk):
    return volume.index_to_physical_matrix() @ np.append(np.asarray(index_ijk, dtype=float), 1.0)


@pytest.mark.parametrize("handed, slope, intercept", [(1, 1.0, -1024.0), (-1, 2.0, -2048.0)])
def test_frames_out_of_order_land_where_the_functional_groups_put_them(tmp_path, handed, slope, intercept):
    written = volume_with(handed=handed, shape=(5, 10, 12), seed=3)
    marker_ijk = (9, 2, 3)
    array = written.array.copy()
    array[marker_ijk[2], marker_ijk[1], marker_ijk[0]] = 3000.0  # above every other voxel
    written = written.with_array(np.round(array / slope) * slope)
    write_enhanced_ct(tmp_path / "ct" / "enhanced.dcm", written, frame_order=[3, 0, 4, 1, 2], slope=slope,
                      intercept=intercept)
    read = read_dicom_series(tmp_path / "ct")
    assert read.shape == written.shape
    found = np.unravel_index(int(np.argmax(read.array)), read.shape)
    assert read.array[found] == 3000.0
    np.testing.assert_allclose(physical_point(read, found[::-1]), physical_point(written, marker_ijk), atol=1e-4)
    # The k axis points along the slice normal, so a left-handed volume comes back flipped.
    expected = written.array if handed == 1 else written.array[::-1]
    np.testing.assert_array_equal(read.array, expected)
    assert np.allclose(read.spacing, written.spacing) and find_series(tmp_path / "ct")[0].kernel == "B30f"


ROW_DIRECTION = volume_with().direction_matrix[:, 0]


@pytest.mark.parametrize("options, reason", [
    ({"time_points": 2}, "holds 10 frames at 5 position(s): a time series"),
    ({"moved_mm": {2: tuple(3.0 * ROW_DIRECTION)}}, "not stacked on a straight line: frame"),
    ({"frame_order": [0, 1, 3, 4]}, "uneven slice spacing: frame 2 to frame 3 is 5.000 mm"),
    ({"modality": "MR"}, "MR, not CT"),
])
def test_what_is_not_one_ct_volume_is_refused_with_the_true_reason(tmp_path, capsys, options, reason):
    path = write_enhanced_ct(tmp_path / "ct" / "enhanced.dcm", volume_with(shape=(5, 10, 12)), **options)
    with pytest.raises(VolumeError, match=re.escape(reason)) as error:
        read_dicom_series(tmp_path / "ct")
    assert str(path) in str(error.value) and "0028,0030" not in str(error.value)
    assert main(["dataset", str(tmp_path / "ct"), str(tmp_path / "out")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("revgan: error:")]
    assert len(errors) == 1 and reason in errors[0]
