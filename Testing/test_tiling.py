"""The exact tiler: plans partition the volume on the stride, and tiled network output
equals a whole-volume pass, for odd shapes, several tile sizes and both directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.errors import CancelledError, ConfigError, VolumeError
from RevGANCore.networks import GeneratorConfig, receptive_field
from RevGANCore.tiling import (auto_window_shape, axis_boundaries, halo_for, minimum_window, plan_tiles,
                               run_tiled)

from model_helpers import random_generator


def _network(generator, direction):
    def run(window: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return generator(torch.from_numpy(np.ascontiguousarray(window))[None, None], direction)[0, 0]
    return run


def _whole(generator, array, direction):
    with torch.no_grad():
        return generator(torch.from_numpy(array)[None, None], direction)[0, 0].numpy()


@pytest.mark.parametrize("length,window,halo,stride", [
    (50, 48, 22, 2), (100, 60, 22, 2), (37, 100, 14, 2), (129, 50, 22, 2), (1024, 160, 22, 2),
    (77, 33, 14, 2), (301, 47, 10, 1), (64, 64, 14, 2), (65, 64, 14, 2)])
def test_axis_boundaries_partition_on_the_stride_within_the_window(length, window, halo, stride):
    bounds = axis_boundaries(length, window, halo, stride)
    assert bounds[0] == 0 and bounds[-1] == length
    assert all(b > a for a, b in zip(bounds[:-1], bounds[1:]))
    assert all(b % stride == 0 for b in bounds[1:-1])
    windows = [min(length, b + halo) - max(0, a - halo) for a, b in zip(bounds[:-1], bounds[1:])]
    assert max(windows) <= window
    if len(windows) > 1:  # balanced: no sliver at the border
        assert max(windows) - min(windows) <= 2 * stride + 1


def test_plan_writes_every_voxel_exactly_once_and_windows_start_on_the_stride():
    shape = (41, 53, 29)
    plan = plan_tiles(shape, (36, 40, 33), halo=14, stride=2)
    count = np.zeros(shape, dtype=np.int32)
    for tile in plan:
        count[tile.core] += 1
        for window, core, crop, size in zip(tile.window, tile.core, tile.crop, shape):
            assert window.start % 2 == 0
            assert crop.start == core.start - window.start and crop.stop == core.stop - window.start
            # a halo on every cut face; clamped (no padding) at the volume's faces
            assert window.start == 0 or core.start - window.start >= 14
            assert window.stop == size or window.stop - core.stop >= 14
            assert 0 <= window.start and window.stop <= size
        assert all(w <= m for w, m in zip(tile.window_shape, (36, 40, 33)))
    assert count.min() == 1 and count.max() == 1
    assert len(plan) == int(np.prod(plan.counts)) > 1
    assert plan.computed_voxels > np.prod(shape)


def test_receptive_field_halo_and_minimum_window():
    field = receptive_field(GeneratorConfig(depth=2))
    assert (field.radius, field.stride) == (20, 2)
    assert receptive_field(GeneratorConfig(depth=2, architecture="transposed")).radius == 22
    assert halo_for(21, 2) == 22 and halo_for(22, 2) == 22 and halo_for(0, 2) == 0
    assert minimum_window(22, 2) == 46


@pytest.mark.parametrize("border_padding", [False, True])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("shape,windows", [
    ((33, 45, 27), [30, 36, (33, 30, 50)]),   # odd everywhere; 30 is the smallest window
    ((20, 17, 23), [30, 64]),                      # volume smaller than a tile: one clamped tile
    ((31, 29, 60), [32, (40, 40, 35)]),
])
def test_tiled_equals_whole_volume(direction, shape, windows, border_padding):
    """... and with border padding, a whole-volume pass over the edge-padded volume."""
    generator = random_generator(ngf=3, depth=1, seed=sum(shape))
    field = receptive_field(generator.config)
    halo = halo_for(field.radius, field.stride)
    array = np.random.default_rng(len(direction)).uniform(-1, 1, size=shape).astype(np.float32)
    if border_padding:
        whole = _whole(generator, np.pad(array, halo, mode="edge"), direction)[halo:-halo, halo:-halo, halo:-halo]
    else:
        whole = _whole(generator, array, direction)
    for window in windows:
        plan = plan_tiles(shape, window, halo, field.stride)
        out = np.full(shape, np.nan, dtype=np.float32)
        run_tiled(_network(generator, direction), array, out, plan, border_padding=halo if border_padding else 0)
        assert np.isfinite(out).all(), f"window {window}: voxels not written"
        assert np.abs(out - whole).max() <= 1e-5, f"window {window}, plan {plan.describe()}"


def test_tiled_equals_whole_for_a_residual_deeper_generator():
    generator = random_generator(ngf=2, depth=2, seed=3, residual=True)
    field = receptive_field(generator.config)
    halo = halo_for(field.radius, field.stride)
    shape = (25, 61, 63)
    array = np.random.default_rng(5).uniform(-1, 1, size=shape).astype(np.float32)
    whole = _whole(generator, array, "forward")
    plan = plan_tiles(shape, 2 * halo + 6, halo, field.stride)
    assert plan.counts[1] > 1 and plan.counts[2] > 1
    out = np.empty(shape, dtype=np.float32)
    run_tiled(_network(generator, "forward"), array, out, plan)
    assert np.abs(out - whole).max() <= 1e-5


def test_a_halo_below_the_receptive_field_is_visibly_wrong():
    """The exactness tests can fail: two voxels less of halo change the output."""
    generator = random_generator(ngf=3, depth=1, seed=1)
    field = receptive_field(generator.config)
    shape = (21, 40, 40)
    array = np.random.default_rng(2).uniform(-1, 1, size=shape).astype(np.float32)
    whole = _whole(generator, array, "forward")
    plan = plan_tiles(shape, 32, field.radius - 2, field.stride)
    out = np.empty(shape, dtype=np.float32)
    run_tiled(_network(generator, "forward"), array, out, plan)
    assert np.abs(out - whole).max() > 1e-4  # 10x the exactness tests' tolerance


def test_odd_window_origin_would_break_stride_alignment():
    """Windows shifted by one voxel (what a 'last patch shifted back' tiler does) differ."""
    generator = random_generator(ngf=3, depth=1, seed=4)
    array = np.random.default_rng(3).uniform(-1, 1, size=(17, 17, 40)).astype(np.float32)
    whole = _whole(generator, array, "forward")
    shifted = _whole(generator, np.ascontiguousarray(array[..., 1:]), "forward")
    # same input voxels, but sampled by the stride-2 layers on the other lattice
    assert np.abs(shifted[..., 20:30] - whole[..., 21:31]).max() > 1e-3


def test_too_small_tile_is_refused_with_the_minimum():
    with pytest.raises(ConfigError, match="at least 46"):
        plan_tiles((100, 100, 100), 40, halo=22, stride=2)
    with pytest.raises(ConfigError):
        plan_tiles((100, 100, 100), 0, halo=22, stride=2)
    with pytest.raises(ConfigError):
        plan_tiles((100, 100, 100), 64, halo=21, stride=2)  # halo not on the stride


def test_a_too_small_tile_on_a_resampled_grid_names_the_scans_axis_too():
    """A kernel model's working grid (the scan's 128 rows at 0.57 mm are 91 at 0.8 mm): the
    refusal once named only the 91, an axis length the user's scan does not have."""
    with pytest.raises(ConfigError) as refused:
        plan_tiles((8, 91, 91), 16, halo=22, stride=2, scan_shape=(8, 128, 128))
    message = str(refused.value)
    assert "axis y: the scan's 128 voxels are 91 on the grid the model works on" in message
    assert "tile sizes count voxels of that grid" in message and "at least 46" in message
    with pytest.raises(ConfigError, match=r"\(axis y of 91 voxels\)"):  # the scan's own grid: as before
        plan_tiles((8, 91, 91), 16, halo=22, stride=2, scan_shape=(8, 91, 91))


def test_integer_output_is_rounded_and_refuses_to_saturate_progress_and_cancel():
    array = np.linspace(-30000, 30000, 20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20)
    plan = plan_tiles(array.shape, 12, halo=2, stride=2)
    out = np.zeros(array.shape, dtype=np.int16)
    calls = []
    run_tiled(lambda w: w + 0.4, array, out, plan, progress=lambda d, t: calls.append((d, t)))
    assert np.array_equal(out, np.rint(array + np.float32(0.4)).astype(np.int16))
    assert calls[0] == (0, len(plan)) and calls[-1] == (len(plan), len(plan)) and len(calls) == len(plan) + 1
    # A result int16 cannot hold, or NaN, is an error: clipping would pass it for a real one.
    for broken in (lambda w: w * 2, lambda w: w * np.nan):
        with pytest.raises(VolumeError, match="beyond what int16 can hold"):
            run_tiled(broken, array, np.zeros(array.shape, dtype=np.int16), plan)

    seen = []

    def function(window):
        seen.append(window.shape)
        return window

    with pytest.raises(CancelledError, match="after 3 of"):
        run_tiled(function, array, np.zeros_like(array), plan, cancel=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_auto_window_fits_the_budget_and_prefers_fewer_cuts():
    shape = (48, 192, 256)
    window = auto_window_shape(shape, 22, 2, max_voxels=1_500_000, min_plane=5120)
    assert np.prod(window) <= 1_500_000
    plan = plan_tiles(shape, window, 22, 2)
    # cutting x once (256 -> 2 x 150) is the cheapest split that fits
    assert plan.counts == (1, 1, 2) and plan.overhead < 1.2
    # everything fits: one tile
    assert auto_window_shape((30, 40, 50), 22, 2, max_voxels=10 ** 6) == (30, 40, 50)
    # a CPU-unfriendly (slow-path) z*y face is avoided when a fast one fits the budget
    window = auto_window_shape((40, 400, 400), 22, 2, max_voxels=2_000_000, min_plane=40 * 100)
    assert window[0] * window[1] > 40 * 100
    # nothing fits: the smallest windows
    window = auto_window_shape((200, 200, 200), 22, 2, max_voxels=1000)
    assert max(window) <= 60
