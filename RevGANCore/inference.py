"""Whole-volume translation: exact, tiled, bounded-memory inference with a RevGAN model.

``translate(model, volume)`` maps a CT :class:`~RevGANCore.volume.Volume` (HU) through the
model's generator and returns a new Volume; the input is never modified.

1. Grid. A super-resolution model (``scale_factors_xyz`` in its metadata) translating
   forward first resamples the input (cubic B-spline) onto the high-resolution grid:
   same physical box and direction, spacing divided by the factors, voxel counts
   multiplied (``super_resolution_grid``). The resampling is done one z-slab of windows at
   a time, so the high-resolution input never exists whole in memory. Kernel models, and
   the inverse direction of a super-resolution model (high-resolution grid in and out),
   keep the input grid.
   Reconstruction-circle padding (<= -1500 HU) is replaced by air first, and metal above
   3071 HU (an extended HU scale) by 3071 HU; both are restored in the output
   (:mod:`RevGANCore.field_of_view`). A kernel model that records its training pixel
   size runs on the scan's slices resampled in-plane to that size, and its change is brought
   back onto the scan's grid (:mod:`RevGANCore.physical_scale`); a spacing that would make
   that grid absurd (wider than any CT, narrower than one model pixel, or beyond the memory
   available) is refused before anything is allocated.
2. Intensities. Each window is mapped from HU to [-1, 1] with the model's HU window
   (clipped), run through the generator, and mapped back to HU, clipped to the CT scale
   widened to the input's range (below the metal ceiling) plus 200 HU (reported through ``log``).
3. Tiling (:mod:`RevGANCore.tiling`). Windows overlap by a halo of the generator's
   receptive-field radius, start on its stride, are clamped to the volume and cropped
   to their cores, which are written once each into the output array: the result equals
   a whole-volume pass over the volume edge-padded by the halo (to float rounding; on the
   CPU it has been bit-identical). Edge padding at the volume's first and last slices,
   instead of the network's zero padding, keeps them as good as the middle ones.
4. Device. ``"auto"`` is CUDA when available, else the CPU. On CUDA the generator runs
   under float16 autocast (``precision="bfloat16"`` is coarser; ``precision="float32"`` turns
   it off, and then TF32 is disabled too, so windows are computed in IEEE float32). On
   CUDA out-of-memory the window edge is halved and the translation restarts;
   when even the smallest window does not fit, it restarts on the CPU. Both are reported
   through ``log``. The model's generator is moved to the device used.

Default tile size (``tile_size=None``): per-axis tile counts that minimise the recomputed
halo volume while one window's activations fit a budget -- on the CPU a quarter of the
memory available now, between 1 and 4 GiB (``default_cpu_window_mib``), on CUDA half the
free GPU memory -- at an estimated peak per window voxel (:func:`bytes_per_window_voxel`) --
and, on the CPU, whose z*y face keeps PyTorch on its oneDNN convolution
(``batch * channels * depth * height > 20480`` for 3x3x3 kernels, else a ~20x slower
fallback). On the CPU the generator runs with channels-last weights and windows (less
memory, 20-30% faster), and on Linux freed memory is reused instead of page-faulted anew
(:mod:`heap_reuse`, ~40% less time per window). An explicit ``tile_size`` (edge, or
(z, y, x)) is the window size *including* the halo; along every axis it does not cover whole, it must be at least
``2 * halo + stride`` (46 voxels for depth 2), else it is refused.

Memory. Peak = the input volume + the output array (or a memory-mapped file, see
:func:`translate_file`) + one window's activations (+ one resampled z-slab for
super-resolution) + a boolean padding mask and, when there is padding, a float32
copy of the input with air in it + for a resampled kernel model the working-grid result
(float32, (working pixels / scan pixels) times the input). No weight or count buffer, no
padded copy of the input: windows on the volume's first/last slices are edge-padded by the
halo along z, and the window budget includes that padding.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .devices import describe_device, resolve_device
from .errors import ConfigError, RevGANError, ValueRangeError, VolumeError
from .modelfile import TranslationModel, as_model
from .networks import DIRECTIONS, GeneratorConfig, receptive_field
from .printable import printable
from .field_of_view import CEILING_HU, network_view, output_limits, restore_block_means, restore_padding
from .heap_reuse import reuse_freed_memory
from .machine_memory import available_memory_bytes
from .orientation import AxisOrder, axis_order
from .physical_scale import InPlaneScale, in_plane_scale, scale_warning, working_grid_bytes
from .tiling import (TilePlan, auto_window_shape, halo_for, minimum_window, padded_window_shape, plan_tiles,
                     run_tiled, write_core)
from .volume import (Grid, Volume, hu_to_unit, low_resolution_grid, resample_to_grid, super_resolution_grid,
                     unit_to_hu)
from .output import allocate_scratch, check_room, nearest_existing_folder
from .volume_io import CT_VALUE_RANGE, check_volume_output, estimated_file_bytes, read_volume, write_volume

__all__ = ["translate", "translate_file", "output_grid", "make_plan", "window_budget_voxels",
           "bytes_per_window_voxel", "OUT_DTYPES", "DEFAULT_CPU_TILE_MIB", "MAX_CPU_TILE_MIB",
           "default_cpu_window_mib",
           "PRECISIONS", "OUTPUT_FORMATS", "check_translation_output", "read_input"]

OUT_DTYPES = ("float32", "int16")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
DEFAULT_CPU_TILE_MIB = 1024
#: Where the machine says how much memory is free, the CPU window budget is a quarter of it,
#: between DEFAULT_CPU_TILE_MIB and this: larger windows recompute less halo (a 512 x 512 x 48
#: super-resolution recomputes 41% with 1 GiB, 15% with 4 GiB), and beyond 4 GiB the gain is
#: a few percent while a laptop running Slicer needs the memory.
MAX_CPU_TILE_MIB = 4096
#: An explicit tile size that computes the volume more than this many times over (halos
#: recomputed by neighbouring tiles) AND wastes more than MAX_WASTED_VOXELS voxel
#: computations (~40 s on 2 CPU cores) is refused: it only costs time. (The documented
#: minimum tile, 46, on a 64x128x128 volume: 17,640 tiles, 1,637 times over, 728 s for 5 s.)
MAX_TILE_OVERHEAD = 4.0
MAX_WASTED_VOXELS = 2 ** 24
# Largest window on CUDA: keeps every activation tensor (2 * ngf channels) well below the
# 2**31 elements where some cuDNN 3D kernels fail.
_CUDA_MAX_ELEMENTS = 2 ** 30
# PyTorch (aten Convolution.cpp) uses oneDNN for a 3x3x3 conv on CPU only when
# batch * channels * depth * height > 20480; the core convs run at half resolution.
_ONEDNN_MIN_NCDH = 20480

Logger = Optional[Callable[[str], None]]


def _say(log: Logger, message: str) -> None:
    if log is not None:
        log(message)


# --------------------------------------------------------------------------- planning


def bytes_per_window_voxel(config: GeneratorConfig) -> float:
    """Estimated peak activation bytes per window voxel (the plan's grid, the coarse one for
    super-resolution) of one float32 generator pass: for a generator that upsamples inside,
    each coarse voxel also carries its block of fine voxels through the head."""
    coarse = 4.0 * (3.5 * config.ngf + 6.0)
    block = int(np.prod(config.upscale_zyx))
    if block == 1:
        return coarse
    # Measured for ngf 16, head 8, factors (4, 2, 2): 940 B per coarse voxel with channels-last
    # weights (the CPU), 1,320 B without (a few fine-grid images and the head's phase
    # convolution output, head_channels per fine voxel, plus its layout copy).
    return coarse + block * 4.0 * (2.0 * config.head_channels + 2.0)


def default_cpu_window_mib(workers: int = 1) -> float:
    """The CPU window budget of each of ``workers`` processes translating at once: a quarter
    of the memory available now, shared among them, at most MAX_CPU_TILE_MIB and at least
    DEFAULT_CPU_TILE_MIB / workers (DEFAULT_CPU_TILE_MIB / workers also when the machine
    does not say)."""
    workers = max(1, int(workers))
    floor = max(64.0, DEFAULT_CPU_TILE_MIB / workers)
    available = available_memory_bytes()
    if available is None:
        return floor
    return float(min(MAX_CPU_TILE_MIB, max(floor, available / 4 / workers / 2 ** 20)))


def window_budget_voxels(config: GeneratorConfig, device: torch.device, memory_mib: Optional[float] = None,
                         half_precision: bool = False) -> int:
    """Voxels per window that fit ``memory_mib`` (default: :func:`default_cpu_window_mib` on
    the CPU, half the free memory on CUDA)."""
    per_voxel = bytes_per_window_voxel(config) * (0.5 if half_precision else 1.0)
    if memory_mib is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = 0.5 * free
        else:
            budget = default_cpu_window_mib() * 2.0 ** 20
    else:
        budget = float(memory_mib) * 2.0 ** 20
    voxels = int(budget / per_voxel)
    if device.type == "cuda":
        voxels = min(voxels, _CUDA_MAX_ELEMENTS // (2 * config.ngf))
    return max(voxels, 1)


def _min_plane(config: GeneratorConfig, device: torch.device) -> int:
    if device.type != "cpu":
        return 0
    channels = min(config.ngf, config.coupling_channels or config.ngf)
    stride = receptive_field(config).stride  # the core's convs see the window shrunk by it
    return (stride * stride * _ONEDNN_MIN_NCDH) // channels


def make_plan(config: GeneratorConfig, shape: Sequence[int], device: torch.device,
              tile_size: Union[None, int, Sequence[int]] = None, memory_mib: Optional[float] = None,
              half_precision: bool = False, scan_shape: Optional[Sequence[int]] = None) -> TilePlan:
    """The tile plan :func:`translate` uses for a volume of ``shape`` (z, y, x); ``scan_shape``:
    the scan's own shape when ``shape`` is a working grid it was resampled to (named in errors)."""
    field = receptive_field(config)
    halo = halo_for(field.radius, field.stride)

    def automatic() -> TilePlan:
        # The budget holds the window as the network sees it, edge padding at the volume's
        # faces included: shrink the windows until that fits.
        budget = window_budget_voxels(config, device, memory_mib, half_precision)
        target = budget
        for _ in range(16):
            window_ = auto_window_shape(shape, halo, field.stride, target, min_plane=_min_plane(config, device))
            plan_ = plan_tiles(shape, window_, halo, field.stride)
            if np.prod(padded_window_shape(plan_, border_padding(config, halo)), dtype=np.int64) <= budget:
                break
            target = max(1, int(target * 0.8))
        return plan_

    if tile_size is None:
        return automatic()
    else:
        sizes = (tile_size,) * 3 if isinstance(tile_size, (int, np.integer)) else tuple(tile_size)
        if len(sizes) != 3 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
            raise ConfigError(f"tile size must be an integer or three integers (z, y, x), got {tile_size!r}")
        if min(sizes) < 1:
            raise ConfigError(f"tile size must be positive, got {tile_size!r}")
        window = tuple(int(s) for s in sizes)
    plan = plan_tiles(shape, window, halo, field.stride, scan_shape=scan_shape)
    wasted = plan.computed_voxels - int(np.prod(shape, dtype=np.int64))
    if plan.overhead > MAX_TILE_OVERHEAD and wasted > MAX_WASTED_VOXELS:
        suggestion = automatic()
        raise ConfigError(
            f"tile size {_fmt(window)} computes this {_fmt(shape)} volume {plan.overhead:.1f} times over "
            f"({len(plan)} tiles, {100.0 * (plan.overhead - 1.0):.0f}% recomputed halos); use a larger tile, "
            f"e.g. {_fmt(suggestion.window_shape)} ({100.0 * (suggestion.overhead - 1.0):.0f}% recomputed, "
            "chosen automatically when no tile size is given)")
    return plan


def border_padding(config: GeneratorConfig, halo: int) -> Tuple[int, int, int]:
    """Edge padding (z, y, x) of windows on the volume's faces. "resize" generators pad every
    layer by replicating the border, so they need none. "transposed" generators pad with
    zeros (a fake -400 HU edge): the halo along z, so the first and last slices are computed
    like the middle ones; none in-plane, where CT's faces are air or reconstruction padding
    (which the network sees as air) and padding would cost about a quarter more computation
    on a 512 x 512 slice for nothing."""
    if config.architecture == "resize":
        return (0, 0, 0)
    return (halo, 0, 0)


def _halved(plan: TilePlan) -> Optional[Tuple[int, int, int]]:
    """Window edges halved (and stride-aligned); None when they cannot shrink further."""
    smallest = minimum_window(plan.halo, plan.stride)
    current = plan.window_shape
    smaller = tuple(max(smallest, (w // 2) - (w // 2) % plan.stride) for w in current)
    if all(s >= c for s, c in zip(smaller, current)):
        return None
    return smaller  # type: ignore[return-value]


# --------------------------------------------------------------------------- grids and sources


def output_grid(model: TranslationModel, volume: Volume, direction: str = "forward") -> Grid:
    """The grid of ``translate(model, volume, direction)``'s result: finer for the forward
    direction of super-resolution; coarser for its inverse when the generator changes the
    grid itself (an older "transposed" model degrades on the same grid)."""
    order = axis_order(volume.direction)
    if not order.is_identity:  # computed in the models' axis order, as translate runs
        return order.stored_grid(output_grid(model, order.canonical(volume), direction))
    factors = model.metadata.scale_factors_xyz
    if factors is not None and direction == "forward":
        return super_resolution_grid(volume, factors)
    if factors is not None and model.generator.config.upscale_zyx != (1, 1, 1):
        return low_resolution_grid(volume, factors, round_up=True)
    return volume.grid


class _SlabSource:
    """A volume of ``shape`` produced one z-range (all of y and x) at a time by
    ``load(start, stop)``; tiles come in z-major order, so each range is made once."""

    def __init__(self, shape, load: Callable[[int, int], np.ndarray]):
        self.shape = tuple(shape)
        self._load_range = load
        self._start = 0
        self._stop = 0
        self._slab: Optional[np.ndarray] = None

    def __getitem__(self, slices):
        zs, ys, xs = slices
        if self._slab is None or zs.start < self._start or zs.stop > self._stop:
            self._slab = None
            self._slab = self._load_range(zs.start, zs.stop)
            self._start, self._stop = zs.start, zs.stop
        return self._slab[zs.start - self._start:zs.stop - self._start, ys, xs]


def _resampled_source(volume: Volume, grid: Grid) -> _SlabSource:
    """The input resampled onto ``grid`` one z-range at a time: every slab is a B-spline
    resampling of the whole input at the slab's voxel positions, so the values are those of
    a whole-grid resampling."""

    def load(start: int, stop: int) -> np.ndarray:
        origin = np.asarray(grid.origin) + grid.direction_matrix @ (np.asarray(grid.spacing) * (0, 0, start))
        slab = Grid((stop - start, grid.shape[1], grid.shape[2]), grid.spacing, tuple(origin), grid.direction)
        return resample_to_grid(volume, slab, interpolation="bspline").array

    return _SlabSource(grid.shape, load)


def _check_finite(volume: Volume) -> None:
    array = volume.array
    for start in range(0, array.shape[0], 16):
        if not np.isfinite(array[start:start + 16]).all():
            raise VolumeError(f"{volume.source or 'input volume'}: contains NaN or infinite voxels")


# --------------------------------------------------------------------------- running windows


def _is_cuda_oom(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)


def _autocast_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda" or precision == "float32":
        if precision in ("bfloat16", "float16") and device.type != "cuda":
            raise ConfigError(f"precision {precision!r} is only used on CUDA; the device is {device}")
        return None
    if precision == "auto":
        # float16, not bfloat16: measured on an H200 with a random-weight generator, bfloat16
        # autocast moved outputs by 1.2 HU on average (11 HU at most), float16 by 0.15 HU (1.6
        # at most) at the same speed; the networks' activations stay far below float16's range.
        return torch.float16
    return torch.bfloat16 if precision == "bfloat16" else torch.float16


@contextlib.contextmanager
def _ieee_float32(device: torch.device, active: bool):
    """Without autocast on CUDA, run convolutions and matmuls in true float32: PyTorch lets
    cuDNN use TF32 (10-bit mantissa) by default on Ampere and later, whose rounding would
    depend on the algorithm cuDNN picks for each window shape."""
    if device.type != "cuda" or not active:
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def _cpu_channels_last(generator: torch.nn.Module, device: torch.device):
    """On the CPU, run the generator with channels-last weights and windows: oneDNN then
    skips reordering every activation into its blocked layout (measured on 2 cores: 20-30%
    faster for both default models; the super-resolution inverse, a small coarse output, is
    ~15% slower). The weights are put back in the standard layout afterwards, so the model
    can still be saved (safetensors wants contiguous tensors) or trained."""
    if device.type != "cpu":
        yield
        return
    generator.to(memory_format=torch.channels_last_3d)
    try:
        yield
    finally:
        generator.to(memory_format=torch.contiguous_format)


class _WindowRunner:
    """HU window (numpy) -> translated HU window (torch, on the device)."""

    def __init__(self, model: TranslationModel, direction: str, device: torch.device,
                 amp_dtype: Optional[torch.dtype], clip: Optional[Callable] = None):
        self.clip_output = clip
        self.generator = model.generator
        self.direction = direction
        self.device = device
        self.amp_dtype = amp_dtype
        self.window = model.metadata.hu_window
        # Residual models see HU beyond the window unclipped (trained that way), so dense
        # bone keeps its values; tanh models are bounded to the window anyway.
        self.clip = not model.generator.config.residual

    def __call__(self, window: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).to(self.device)
        tensor = hu_to_unit(tensor, self.window, clip=self.clip)[None, None]
        if self.device.type == "cpu":  # the weights' layout (_cpu_channels_last)
            tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
        autocast = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            result = self.generator(tensor, self.direction)
        hu = unit_to_hu(result[0, 0].float(), self.window)
        low, high = float(hu.min()), float(hu.max())
        if not (CT_VALUE_RANGE[0] <= low and high <= CT_VALUE_RANGE[1]):  # also false for NaN
            raise VolumeError(f"the model produced values from {low:g} to {high:g} HU, outside any CT scale "
                              f"({CT_VALUE_RANGE[0]:g} to {CT_VALUE_RANGE[1]:g}); the model file or the input "
                              "is broken; nothing was written")
        return hu if self.clip_output is None else self.clip_output(hu)


# --------------------------------------------------------------------------- public API


def translate(model, volume: Volume, direction: str = "forward",
              tile_size: Union[None, int, Sequence[int]] = None, device: Union[str, torch.device] = "auto",
              progress: Optional[Callable[[int, int], None]] = None,
              cancel: Optional[Callable[[], bool]] = None, out: Optional[np.ndarray] = None,
              out_dtype: str = "float32", log: Logger = None, precision: str = "auto",
              tile_memory_mib: Optional[float] = None, warn: Logger = None) -> Volume:
    """Translate ``volume`` (HU) with ``model`` (a :class:`TranslationModel`, a model file
    or a registry name) in ``direction`` ("forward" x -> y, "inverse" y -> x).

    ``out``: a preallocated float32 or int16 array (or ``numpy.memmap``) of the output
    grid's shape (see :func:`output_grid`), which the result then wraps; otherwise one of
    ``out_dtype`` is allocated. int16 output is rounded to whole HU and clipped.
    ``progress(done, total)`` is called per tile, ``cancel()`` before each tile
    (:class:`CancelledError`; a caller-supplied ``out`` is then partly written),
    ``log(message)`` receives the plan, the device and any out-of-memory fallback;
    ``warn(message)`` what the user should know about the result (a voxel spacing outside
    the model's supported range), without a "warning:" label (the caller adds its own);
    without ``warn`` that goes to ``log``, labelled "warning: ".
    A fitted radial kernel filter (:mod:`RevGANCore.linear_filter_file`) filters the slices
    instead (no tiles or device)."""
    model = as_model(model)
    order = axis_order(volume.direction) if isinstance(volume, Volume) else AxisOrder()
    if not order.is_identity:
        # Run in the models' axis order (orientation.py) and give the result back in the input's.
        if out is not None:
            _check_out_shape(out, output_grid(model, volume, direction))
        _say(log, "the scan stores its axes in another order than the models' (LPS, axial): run in that "
                  "order, the result stored back in the scan's")
        result = translate(model, order.canonical(volume), direction, tile_size=tile_size, device=device,
                           progress=progress, cancel=cancel, out=None if out is None else order.canonical_array(out),
                           out_dtype=out_dtype, log=log, precision=precision, tile_memory_mib=tile_memory_mib,
                           warn=warn)
        return order.restore(result)
    if not isinstance(model, TranslationModel):  # a fitted KernelFilterModel: no tiles, no device
        if isinstance(volume, Volume):
            _check_finite(volume)
        return model.translate(volume, direction, out=out, out_dtype=out_dtype, progress=progress, log=log)
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    if not isinstance(volume, Volume):
        raise VolumeError(f"translate needs a Volume, got {type(volume).__name__}")
    _check_finite(volume)
    grid = output_grid(model, volume, direction)
    # Before anything is allocated: a spacing no CT has is refused here, not by numpy's allocator.
    scale = in_plane_scale(model.metadata, grid, volume.source)
    if out is None:
        if out_dtype not in OUT_DTYPES:
            raise ConfigError(f"out_dtype must be one of {', '.join(OUT_DTYPES)}, got {out_dtype!r}")
        out = np.empty(grid.shape, dtype=out_dtype)
    else:
        _check_out_shape(out, grid)
        if out.dtype not in (np.float32, np.int16):
            raise ConfigError(f"out must be float32 or int16, got {out.dtype}")
        if not out.flags.writeable:
            raise ConfigError("out is read-only")
    warning = scale_warning(model.metadata, volume.spacing, direction)
    if warning is not None:
        if warn is not None:
            warn(warning)
        else:
            _say(log, f"warning: {warning}")
    # Padding (as air) and metal (at the ceiling) stay out of the network; their values come
    # back at the end. The limits are the clean volume's, so metal does not widen them.
    clean, padding, above = network_view(volume)
    limits = output_limits(clean)
    resampled = grid.shape != volume.shape
    upscale = model.generator.config.upscale_zyx
    # The plan is made on the coarse grid: the input's for the forward direction of a
    # generator that upsamples inside, the output's for its inverse.
    source_scale, out_scale = (1, 1, 1), (1, 1, 1)
    if scale is not None:
        work_grid = scale.working_grid(grid)
        plan_shape = work_grid.shape
        source = _SlabSource(work_grid.shape, lambda start, stop: scale.to_working(clean.array[start:stop]))
        work_out = None  # allocated once the plan says how many slices are resampled at once
    elif upscale != (1, 1, 1):
        work_grid = grid
        source, work_out = clean.array, out
        if direction == "forward":
            plan_shape, out_scale = volume.shape, upscale
        else:
            plan_shape, source_scale = grid.shape, upscale
    else:
        work_grid = grid
        plan_shape = grid.shape
        source = _resampled_source(clean, grid) if resampled else clean.array
        work_out = out

    device_ = resolve_device(str(device))
    amp_dtype = _autocast_dtype(device_, precision)
    config = model.generator.config
    plan = make_plan(config, plan_shape, device_, tile_size, tile_memory_mib, amp_dtype is not None,
                     scan_shape=volume.shape if scale is not None else None)
    if scale is not None:
        _check_working_memory(scale, grid, plan, volume.source, model.metadata.training_spacing_xyz)
        work_out = np.empty(work_grid.shape, dtype=np.float32)
    source_name, target_name = model.metadata.domain_names(direction)
    onto = ""
    if resampled:
        how = ("resampled " if upscale == (1, 1, 1) else
               "upsampled inside the network " if direction == "forward" else "")
        onto = f", {how}onto {grid.shape[::-1]} voxels (x, y, z)"
    _say(log, printable(f"{model.name}: {source_name} -> {target_name}") + onto
              + (f"; {scale.describe(grid)}" if scale is not None else "")
              + (f"; {int(padding.sum())} padding voxels kept out of the network" if padding is not None else "")
              + (f"; {int(above.sum())} voxels above {CEILING_HU:g} HU (metal) seen at {CEILING_HU:g} HU and "
                 "kept as they were" if above is not None else ""))
    clip = _Clip(*limits)

    def attempt(plan_: TilePlan, device__: torch.device, amp: Optional[torch.dtype]) -> None:
        model.generator.to(device__)
        precision_text = f", autocast {str(amp).replace('torch.', '')}" if amp is not None else ""
        _say(log, f"device {describe_device(device__)}{precision_text}; {plan_.describe()}")
        runner = _WindowRunner(model, direction, device__, amp, clip)
        with _ieee_float32(device__, amp is None), _cpu_channels_last(model.generator, device__), \
                reuse_freed_memory():
            run_tiled(runner, source, work_out, plan_, progress=progress, cancel=cancel,
                      border_padding=border_padding(config, plan_.halo), source_scale=source_scale,
                      out_scale=out_scale)

    _run_with_fallback(attempt, plan, device_, amp_dtype, config, plan_shape, log)
    if scale is not None:
        _back_to_scan_grid(scale, clean.array, work_out, out, clip)
        work_out = None
    clipped = _count_clipped(out, clip)
    if clipped:
        _say(log, f"{clipped} output voxels clipped to [{limits[0]:g}, {limits[1]:g}] HU (the CT scale "
                  "and the input's range, plus a margin)")
    factors = model.metadata.scale_factors_xyz if resampled else None
    coarser = factors is not None and direction == "inverse"
    if above is not None:
        if coarser:
            restore_block_means(out, volume.array, above, factors[::-1])
        else:
            restore_padding(out, volume.array, above, factors[::-1] if factors else (1, 1, 1))
    if padding is not None:
        if coarser:  # a coarse voxel takes its block's first voxel
            step = tuple(slice(None, None, f) for f in factors[::-1])
            restore_padding(out, volume.array[step], padding[step])
        else:
            restore_padding(out, volume.array, padding, factors[::-1] if factors else (1, 1, 1))
    return Volume(out, grid.spacing, grid.origin, grid.direction)


class _Clip:
    """Clips translated HU (a tensor or an array) to the output limits."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def __call__(self, values):
        if hasattr(values, "clamp"):
            return values.clamp(self.low, self.high)
        return np.clip(values, self.low, self.high)


def _count_clipped(out: np.ndarray, clip: _Clip, slab: int = 16) -> int:
    """Output voxels at the clipping limits (rounded like the output), before the padding
    is restored."""
    low, high = clip.low, clip.high
    if np.issubdtype(out.dtype, np.integer):
        low, high = float(np.rint(low)), float(np.rint(high))
    return sum(int(np.count_nonzero((out[start:start + slab] <= low) | (out[start:start + slab] >= high)))
               for start in range(0, out.shape[0], slab))


def _check_out_shape(out, grid: Grid) -> None:
    if not isinstance(out, np.ndarray) or tuple(out.shape) != grid.shape:
        raise ConfigError(f"out must be a numpy array of shape {grid.shape} (the output grid), got "
                          f"{getattr(out, 'shape', type(out).__name__)}")


def _check_working_memory(scale: InPlaneScale, grid: Grid, plan: TilePlan, source: str, trained_xyz,
                          available: Optional[int] = None) -> None:
    """Refuse a working grid that does not fit the memory available now (``available``
    bytes; asked of the machine when None, not checked when it does not say)."""
    needed = working_grid_bytes(scale, grid, plan.window_shape[0])
    available = available_memory_bytes() if available is None else available
    if available is not None and needed > available:
        my, mx = scale.working_shape_yx
        raise VolumeError(f"{source or 'the scan'}: in-plane spacing {grid.spacing[0]:.3g} x {grid.spacing[1]:.3g} mm "
                          f"brought to this model's {trained_xyz[0]:.3g} x {trained_xyz[1]:.3g} mm pixels is "
                          f"{mx} x {my} x {grid.shape[0]} voxels, about {needed / 2 ** 30:.1f} GiB; "
                          f"{available / 2 ** 30:.1f} GiB of memory is available")


def _back_to_scan_grid(scale: InPlaneScale, scan: np.ndarray, work_out: np.ndarray, out: np.ndarray,
                       clip: _Clip, slab: int = 16) -> None:
    """out = scan + the model's change on the working grid, brought onto the scan's grid."""
    for start in range(0, scan.shape[0], slab):
        stop = min(start + slab, scan.shape[0])
        change = work_out[start:stop] - scale.to_working(scan[start:stop])
        values = scan[start:stop] + scale.to_scan(change)
        write_core(out, (slice(start, stop), slice(None), slice(None)), clip(values))


def _run_with_fallback(attempt: Callable[[TilePlan, torch.device, Optional[torch.dtype]], None], plan: TilePlan,
                       device: torch.device, amp_dtype: Optional[torch.dtype], config: GeneratorConfig,
                       shape: Sequence[int], log: Logger) -> torch.device:
    """Run ``attempt(plan, device, amp_dtype)``; on CUDA out-of-memory halve the windows and
    restart, and when they cannot shrink, restart on the CPU. Returns the device used."""
    while True:
        try:
            attempt(plan, device, amp_dtype)
            return device
        except RevGANError:
            raise
        except (RuntimeError, MemoryError) as error:
            if device.type != "cuda" or not _is_cuda_oom(error):
                raise
            # Drop the failed window's tensors (the traceback's frames hold them) before
            # asking the caching allocator to give memory back.
            traceback.clear_frames(error.__traceback__)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        smaller = _halved(plan)
        if smaller is not None:
            _say(log, f"CUDA out of memory with windows of {_fmt(plan.window_shape)} voxels; "
                      f"retrying with {_fmt(smaller)}")
            plan = plan_tiles(shape, smaller, plan.halo, plan.stride)
            continue
        _say(log, f"CUDA out of memory even with windows of {_fmt(plan.window_shape)} voxels; "
                  "continuing on the CPU (slower)")
        device = torch.device("cpu")
        amp_dtype = None
        plan = make_plan(config, shape, device, None, None, False)


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


OUTPUT_FORMATS = ("volume", "dicom")


def check_translation_output(output_path, inputs: Sequence, output_format: str = "volume",
                             dtype: str = "int16") -> Path:
    """Refuse, before any work, an output that cannot be written: a volume file
    (:func:`~RevGANCore.volume_io.check_volume_output`) or a DICOM series folder
    (:func:`~RevGANCore.dicom_writer.check_dicom_output`). Creates nothing."""
    if output_format == "volume":
        return check_volume_output(output_path, inputs=inputs)
    if output_format != "dicom":
        raise ConfigError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if dtype != "int16":
        raise ConfigError(f"{output_path}: DICOM output stores whole HU (int16); dtype {dtype!r} applies to "
                          "volume files only")
    from .dicom_writer import check_dicom_output

    return check_dicom_output(output_path, inputs=inputs)


def read_input(input_path, model: TranslationModel, direction: str = "forward",
               series: Union[None, str, int] = None, strict: bool = False, log: Logger = None,
               warn: Logger = None):
    """(Volume, DicomSeriesInfo or None): the input file, or the chosen series of a DICOM
    folder (by SeriesInstanceUID or SeriesNumber; else the largest). The chosen series is
    reported through ``log``; a reconstruction kernel that looks like the model's target
    domain rather than its source (:mod:`RevGANCore.kernel_match`) is a warning through
    ``warn`` (Python's ``warnings`` without one), or with ``strict`` a :class:`VolumeError`."""
    location = Path(input_path)
    if not location.is_dir():
        return read_volume(location, series_uid=series), None
    from .dicom import choose_series, read_chosen_series
    from .kernel_match import kernel_mismatch
    from .volume_io import check_ct_range

    info = choose_series(location, series)
    _say(log, printable(f"input {info.summary()}"))
    mismatch = kernel_mismatch(info.kernel, *model.metadata.domain_names(direction))
    if mismatch is not None:
        mismatch = printable(f"{location}: series {info.series_uid}: {mismatch}")
        if strict:
            raise VolumeError(f"{mismatch} (refused in strict mode)")
        if warn is not None:
            warn(mismatch)
        else:
            import warnings

            warnings.warn(mismatch, stacklevel=3)
    volume = read_chosen_series(info)
    check_ct_range(volume)
    return volume, info


def translate_file(model, input_path, output_path, direction: str = "forward",
                   tile_size: Union[None, int, Sequence[int]] = None, device: Union[str, torch.device] = "auto",
                   dtype: str = "int16", progress: Optional[Callable[[int, int], None]] = None,
                   cancel: Optional[Callable[[], bool]] = None, log: Logger = None, precision: str = "auto",
                   tile_memory_mib: Optional[float] = None, memmap: bool = True, output_format: str = "volume",
                   series: Union[None, str, int] = None, strict: bool = False, warn: Logger = None) -> Path:
    """Read ``input_path`` (file or DICOM folder), translate it and write ``output_path``
    atomically as ``dtype`` ("int16" HU or "float32").

    ``output_format="dicom"`` writes a new or empty folder holding a derived DICOM series
    (int16; see :mod:`RevGANCore.dicom_writer`), in the source's study when the input is
    DICOM. ``series`` chooses the series of a DICOM folder (SeriesInstanceUID or
    SeriesNumber); ``strict`` makes a kernel that does not fit the model an error (see
    :func:`read_input`, which also describes ``log`` and ``warn``; ``warn`` also gets
    :func:`translate`'s warnings, such as a voxel spacing outside the supported range).

    With ``memmap`` (the default) the result is computed into a temporary memory-mapped
    file beside the output, so during the translation only the input, one window and the
    OS's page cache are in memory; the temporary file is always removed, and a cancelled
    or failed run leaves no output file."""
    model = as_model(model)
    if dtype not in OUT_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(OUT_DTYPES)}, got {dtype!r}")
    inputs = [input_path, model.path]
    target = check_translation_output(output_path, inputs, output_format, dtype)
    volume, source_series = read_input(input_path, model, direction, series, strict, log, warn)
    grid = output_grid(model, volume, direction)
    file_bytes = estimated_file_bytes(grid.shape, dtype)
    # The scratch goes beside the output (or into its nearest existing ancestor: a missing
    # output folder is only created once the result is complete and verified).
    scratch_dir = nearest_existing_folder(target)
    check_room(scratch_dir, [file_bytes, file_bytes] if memmap else [file_bytes], target)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(allocate_scratch(scratch_dir, grid.shape, dtype, target)) if memmap else None
        try:
            result = translate(model, volume, direction, tile_size=tile_size, device=device, progress=progress,
                               cancel=cancel, out=out, out_dtype=dtype, log=log, precision=precision,
                               tile_memory_mib=tile_memory_mib, warn=warn)
            volume = None
            if output_format == "dicom":
                from .dicom_writer import derived_series_text, write_dicom_series

                text = derived_series_text(model, direction, source_series.kernel if source_series else "")
                write_dicom_series(result, target, source=source_series, inputs=inputs, **text)
            else:
                write_volume(result, target, dtype=dtype, inputs=inputs)
        except ValueRangeError as error:
            traceback.clear_frames(error.__traceback__)
            raise ValueRangeError(f"{input_path}: {error}") from None
        except BaseException as error:
            # The traceback's frames still reference the memory map; clear them so that the
            # scratch file can be deleted on every platform (Windows refuses to delete a
            # mapped file).
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            result = out = None
    return target
