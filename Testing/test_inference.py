"""translate(): equals a whole-volume pass, exact super-resolution geometry, int16 and
memory-mapped output, cancellation without leftovers, and bad input refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from RevGANCore.devices import resolve_device
from RevGANCore.errors import CancelledError, ConfigError, OutputError, VolumeError
from RevGANCore.inference import (border_padding, bytes_per_window_voxel, make_plan, output_grid, translate,
                                  translate_file)
from RevGANCore.field_of_view import output_limits
from RevGANCore.tiling import padded_window_shape
from RevGANCore.volume import Volume, resample_to_grid, super_resolution_grid
from RevGANCore.volume_io import check_volume_output, read_volume, write_volume

from model_helpers import oblique_direction, random_volume, tiny_model, whole_volume_hu


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_translate_equals_whole_volume_for_every_tile_size(direction):
    model = tiny_model("kernel", ngf=3, depth=1, seed=2)
    volume = random_volume((27, 35, 33), seed=1)
    original = volume.array.copy()
    whole = whole_volume_hu(model, volume.array, direction)
    messages = []
    for tile in (30, 34, (27, 30, 40), None):
        result = translate(model, volume, direction, tile_size=tile, device="cpu", log=messages.append)
        assert result.same_geometry(volume) and result.array.dtype == np.float32
        assert np.abs(result.array - whole).max() <= 1e-5 * 750, f"tile {tile}"  # 1e-5 network units
    assert np.array_equal(volume.array, original)  # the input is never modified
    assert any("tile(s)" in message for message in messages)
    assert any("smooth_b30f -> sharp_b50f" in m or "sharp_b50f -> smooth_b30f" in m for m in messages)


@pytest.mark.parametrize("direction_matrix", [None, oblique_direction(30.0)])
@pytest.mark.parametrize("z_tiles", [1, 10])
def test_super_resolution_geometry_is_exact(direction_matrix, z_tiles):
    model = tiny_model("super_resolution", ngf=2, depth=1, seed=3)
    volume = random_volume((12, 11, 9), seed=2, spacing=(0.9, 0.7, 3.0), origin=(12.0, -40.0, 100.0),
                           direction=direction_matrix)
    # Ten z-tiles resample the input one slab of windows at a time: a wrong slab origin
    # shows here, and only here.
    tile = 64 if z_tiles == 1 else (26, 32, 32)
    plan = make_plan(model.generator.config, (48, 22, 18), resolve_device("cpu"), tile)
    assert plan.counts[1:] == (1, 1) and (plan.counts[0] >= 10 if z_tiles > 1 else plan.counts[0] == 1)
    result = translate(model, volume, tile_size=tile, device="cpu")
    assert result.shape == (48, 22, 18)                       # z x4, y x2, x x2
    assert result.spacing == pytest.approx((0.45, 0.35, 0.75))  # x /2, y /2, z /4
    assert result.direction == pytest.approx(volume.direction)
    assert result.physical_extent == pytest.approx(volume.physical_extent)

    def corner(v):  # outer corner of voxel (0, 0, 0): same box, same place
        return np.asarray(v.origin) - v.direction_matrix @ (np.asarray(v.spacing) / 2)

    def centre(v):
        return v.index_to_physical_matrix() @ np.append((np.asarray(v.size_xyz) - 1) / 2, 1)

    assert corner(result) == pytest.approx(corner(volume), abs=1e-9)
    assert centre(result) == pytest.approx(centre(volume), abs=1e-9)
    grid = super_resolution_grid(volume, (2, 2, 4))
    assert output_grid(model, volume).same_as(grid) and result.grid.same_as(grid)
    # content: the network on the whole B-spline resampled volume (resampled here in one go,
    # in translate one z-slab of windows at a time)
    resampled = resample_to_grid(volume, grid, interpolation="bspline")
    whole = np.clip(whole_volume_hu(model, resampled.array, "forward"), *output_limits(volume))  # as translate clips
    assert np.abs(result.array - whole).max() <= 1e-3


def test_super_resolution_inverse_and_kernel_models_keep_the_grid():
    volume = random_volume((9, 12, 10), seed=4)
    sr = tiny_model("super_resolution", ngf=2, depth=1)
    assert translate(sr, volume, "inverse", device="cpu").same_geometry(volume)
    kernel = tiny_model("kernel", ngf=2, depth=1)
    assert translate(kernel, volume, device="cpu").same_geometry(volume)


def test_int16_and_memmap_output_equal_rounded_float(tmp_path):
    model = tiny_model("kernel", ngf=3, depth=1, seed=5)
    volume = random_volume((21, 33, 31), seed=6)
    reference = translate(model, volume, tile_size=32, device="cpu").array
    rounded = np.clip(np.rint(reference), -32768, 32767).astype(np.int16)
    as_int16 = translate(model, volume, tile_size=32, device="cpu", out_dtype="int16")
    assert as_int16.array.dtype == np.int16 and np.array_equal(as_int16.array, rounded)
    mapped = np.memmap(tmp_path / "out.raw", dtype=np.int16, mode="w+", shape=volume.shape)
    result = translate(model, volume, tile_size=40, device="cpu", out=mapped)
    assert result.array is mapped and np.array_equal(np.asarray(mapped), rounded)
    mapped_float = np.memmap(tmp_path / "out32.raw", dtype=np.float32, mode="w+", shape=volume.shape)
    translate(model, volume, device="cpu", out=mapped_float)
    assert np.abs(np.asarray(mapped_float) - reference).max() <= 1e-5 * 750
    del mapped, mapped_float, result


def test_translate_file_writes_atomically_with_geometry(tmp_path):
    model = tiny_model("kernel", ngf=2, depth=1, seed=1)
    volume = random_volume((12, 20, 18), seed=3, direction=oblique_direction(20.0))
    source = write_volume(volume, tmp_path / "in.nrrd", dtype="float32")
    expected = translate(model, read_volume(source), device="cpu").array
    written = translate_file(model, source, tmp_path / "out" / "result.nrrd", device="cpu", dtype="int16")
    back = read_volume(written)
    assert back.same_geometry(volume)
    assert np.array_equal(back.array, np.rint(expected).astype(np.float32))
    written32 = translate_file(model, source, tmp_path / "result32.mha", device="cpu", dtype="float32",
                               memmap=False)
    assert np.abs(read_volume(written32).array - expected).max() == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.nrrd"]


def test_cancel_stops_early_and_leaves_no_file(tmp_path):
    model = tiny_model("kernel", ngf=2, depth=1)
    volume = random_volume((20, 40, 40), seed=7)
    calls = []

    def progress(done, total):
        calls.append((done, total))

    with pytest.raises(CancelledError, match="after 2 of"):
        translate(model, volume, tile_size=30, device="cpu", progress=progress, cancel=lambda: len(calls) > 2)
    total = calls[0][1]
    assert total > 4 and calls[-1] == (2, total)
    source = write_volume(volume, tmp_path / "in.nii.gz")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CancelledError):
        translate_file(model, source, tmp_path / "out.nii.gz", tile_size=30, device="cpu",
                       cancel=lambda: True)
    with pytest.raises(CancelledError):
        translate_file(model, source, tmp_path / "new" / "folder" / "out.nii.gz", tile_size=30, device="cpu",
                       cancel=lambda: True)
    assert sorted(os.listdir(tmp_path)) == before  # no output, no scratch file, no new folder


def test_bad_input_is_refused(tmp_path):
    model = tiny_model("kernel", ngf=2, depth=1)
    volume = random_volume((10, 12, 14))
    nan = volume.array.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(VolumeError, match="NaN"):
        translate(model, volume.with_array(nan), device="cpu")
    with pytest.raises(VolumeError, match="needs a Volume"):
        translate(model, volume.array, device="cpu")
    with pytest.raises(ConfigError, match="direction"):
        translate(model, volume, "backward", device="cpu")
    with pytest.raises(ConfigError, match=r"too small for this model.*at least 26"):
        translate(model, random_volume((10, 12, 34)), tile_size=20, device="cpu")
    assert translate(model, volume, tile_size=20, device="cpu").shape == volume.shape  # covers every axis
    with pytest.raises(ConfigError, match="shape"):
        translate(model, volume, device="cpu", out=np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ConfigError, match="float32 or int16"):
        translate(model, volume, device="cpu", out=np.zeros(volume.shape, np.float64))
    with pytest.raises(ConfigError, match="out_dtype"):
        translate(model, volume, device="cpu", out_dtype="uint8")
    with pytest.raises(ConfigError, match="only used on CUDA"):
        translate(model, volume, device="cpu", precision="bfloat16")
    source = write_volume(volume, tmp_path / "in.nrrd")
    with pytest.raises(OutputError, match="input of this command"):
        check_volume_output(source, inputs=[source])
    link = tmp_path / "link.nrrd"
    link.symlink_to(source)
    with pytest.raises(OutputError, match="input of this command"):
        check_volume_output(link, inputs=[source])
    with pytest.raises(OutputError, match="unknown output file type"):
        check_volume_output(tmp_path / "out.png")
    (tmp_path / "dir.nrrd").mkdir()
    with pytest.raises(OutputError, match="folder"):
        check_volume_output(tmp_path / "dir.nrrd")


def test_default_plan_respects_cpu_budget_and_fast_path():
    from RevGANCore.networks import GeneratorConfig
    import torch

    config = GeneratorConfig(ngf=16, depth=2)
    plan = make_plan(config, (300, 512, 512), torch.device("cpu"), memory_mib=1024)
    window = plan.window_shape
    # the budget holds the window with any edge padding at the volume's first/last slices
    padding = border_padding(config, plan.halo)
    assert np.prod(padded_window_shape(plan, padding)) * bytes_per_window_voxel(config) <= 1024 * 2 ** 20
    old = GeneratorConfig(ngf=16, depth=2, architecture="transposed")
    plan = make_plan(old, (300, 512, 512), torch.device("cpu"), memory_mib=1024)
    assert border_padding(old, plan.halo) == (plan.halo, 0, 0)
    assert np.prod(padded_window_shape(plan, (plan.halo, 0, 0))) * 4 * (3.5 * 16 + 6) <= 1024 * 2 ** 20
    assert window[0] * window[1] > 4 * 20480 // 16
    assert make_plan(config, (40, 50, 60), torch.device("cpu")).counts == (1, 1, 1)


def test_cuda_out_of_memory_halves_windows_then_falls_back_to_cpu():
    """The retry logic of translate() with a window runner that runs out of CUDA memory
    (the real CUDA path is exercised by tools/gpu_check_inference.py)."""
    import torch

    from RevGANCore.inference import _run_with_fallback
    from RevGANCore.networks import GeneratorConfig

    config = GeneratorConfig(ngf=3, depth=1)
    shape = (60, 80, 90)
    start = make_plan(config, shape, torch.device("cpu"), 80)
    tried = []

    def fits_40(plan, device, amp):
        tried.append((device.type, plan.window_shape, amp))
        if device.type == "cuda" and max(plan.window_shape) > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    log = []
    used = _run_with_fallback(fits_40, start, torch.device("cuda"), torch.bfloat16, config, shape, log.append)
    assert used.type == "cuda" and len(tried) == 2
    assert tried[0][1] == start.window_shape == (60, 80, 58)
    assert tried[1][1] == (30, 38, 28) and tried[1][2] == torch.bfloat16
    assert "retrying with" in log[0]

    tried.clear()
    log.clear()

    def never_fits(plan, device, amp):
        tried.append((device.type, plan.window_shape, amp))
        if device.type == "cuda":
            raise RuntimeError("CUDNN_STATUS_ALLOC_FAILED")

    used = _run_with_fallback(never_fits, start, torch.device("cuda"), torch.float16, config, shape, log.append)
    assert used.type == "cpu" and tried[-1][0] == "cpu" and tried[-1][2] is None
    assert min(tried[-2][1]) == 26  # the smallest window (2 * halo + stride) was tried on CUDA
    assert "continuing on the CPU" in log[-1]

    def broken(plan, device, amp):
        raise RuntimeError("an unrelated CUDA error")

    with pytest.raises(RuntimeError, match="unrelated"):
        _run_with_fallback(broken, start, torch.device("cuda"), None, config, shape, log.append)

    def cpu_oom(plan, device, amp):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):  # only CUDA memory is retried
        _run_with_fallback(cpu_oom, start, torch.device("cpu"), None, config, shape, log.append)


def test_residual_models_keep_hu_beyond_the_window_and_tanh_models_clip():
    """A new residual generator is the identity: bone at 1000 HU must come back as 1000 HU,
    not clipped to the window's 350 HU; a tanh generator is bounded by the window."""
    from RevGANCore.modelfile import ModelMetadata, TranslationModel
    from RevGANCore.networks import RevGANGenerator3d

    array = np.full((8, 16, 16), -1000.0, dtype=np.float32)
    array[2:6, 4:12, 4:12] = 1000.0
    volume = Volume(array, (0.8, 0.8, 1.25))
    metadata = ModelMetadata(task="kernel", domains={"x": "sharp", "y": "smooth"})
    residual = TranslationModel(RevGANGenerator3d(ngf=2, depth=1, residual=True).eval(), metadata)
    out = translate(residual, volume, device="cpu")
    assert np.allclose(out.array, array, atol=1e-3)
    bounded = TranslationModel(RevGANGenerator3d(ngf=2, depth=1, residual=False).eval(), metadata)
    assert translate(bounded, volume, device="cpu").array.max() <= 350.0 + 1e-3


def test_cpu_translation_leaves_the_weights_in_the_standard_layout(tmp_path):
    """Windows run channels-last on the CPU; afterwards the model saves and reloads as before."""
    from RevGANCore.modelfile import load_model, save_model

    model = tiny_model("kernel", ngf=3, depth=1, seed=2)
    volume = random_volume((12, 20, 20), seed=1)
    first = translate(model, volume, "forward", device="cpu")
    assert all(p.is_contiguous() for p in model.generator.parameters())
    path = save_model(tmp_path / "saved.safetensors", model.generator, model.metadata)
    again = translate(load_model(path, device="cpu"), volume, "forward", device="cpu")
    assert np.array_equal(first.array, again.array)
