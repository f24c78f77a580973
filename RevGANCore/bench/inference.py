"""``revgan bench inference``: what whole-volume translation costs with the default models,
and how much of the machine it uses.

For each default model of the registry (one row each):

- ``flop_per_voxel``: floating-point operations of one generator pass, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on a 48^3 input window (shapes only, on the
  "meta" device) and divided by the voxels of its output (for a super-resolution generator
  that upsamples inside, the fine grid; an older one runs on the input resampled onto
  it). Halos recomputed by tiling are not in it.
- ``mvoxel_per_s``, ``gflop_per_s``: output voxels per second of a timed, tiled
  :func:`~RevGANCore.inference.translate` of a synthetic volume (random HU) and the
  FLOP rate that means (``flop_per_voxel`` x voxels / seconds).
- ``peak_gflop_per_s``: a large float32 matrix multiply timed in the same process, so
  ``fraction_of_peak = gflop_per_s / peak_gflop_per_s`` is a ratio measured together (the
  machines' speed drifts between runs).
- ``sr_512x512x48_seconds`` (super-resolution: 512x512x48 to 1024x1024x192) or
  ``kernel_512x512x300_seconds`` (kernel: 512x512x300). With ``size_scale`` < 1 each axis
  of that volume is scaled, the smaller volume is timed, and the seconds are extrapolated
  by output voxels: the row then has ``"extrapolated_from": [z, y, x]`` (the input timed).
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..devices import describe_device, resolve_device
from ..errors import ConfigError

__all__ = ["FULL_INPUTS_ZYX", "count_flop_per_voxel", "peak_gflop_per_s", "run_inference_benchmark",
           "format_inference_table"]

#: The volume each task is timed on (z, y, x input voxels) and the key its seconds go under.
FULL_INPUTS_ZYX = {"super_resolution": ((48, 512, 512), "sr_512x512x48_seconds"),
                   "kernel": ((300, 512, 512), "kernel_512x512x300_seconds")}
FLOP_WINDOW = 48
#: ``--quick``: a quarter of each axis (1/64 of the voxels).
QUICK_SIZE_SCALE = 0.25


def count_flop_per_voxel(generator: torch.nn.Module, direction: str = "forward", window: int = FLOP_WINDOW) -> float:
    """FLOP of one pass of ``generator`` on a ``window``^3 input per output voxel. Counted on
    a copy on PyTorch's "meta" device: FLOP depend on shapes only, so nothing is computed."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    shapes_only = copy.deepcopy(generator).to("meta")
    sample = torch.zeros(1, 1, window, window, window, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = shapes_only(sample, direction)
    return counter.get_total_flops() / float(output.numel())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gflop_per_s(device: torch.device, size: Optional[int] = None, repeats: int = 2) -> float:
    """Best GFLOP/s of a float32 ``size`` x ``size`` matrix multiply (2 size^3 FLOP)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    torch.matmul(a, b)  # warm-up: thread pools, cuBLAS handles
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def _scaled(shape: Sequence[int], scale: float) -> Tuple[int, int, int]:
    return tuple(max(4, int(round(n * scale))) for n in shape)  # type: ignore[return-value]


def _time_translation(model, shape: Tuple[int, int, int], device: torch.device) -> Tuple[float, Tuple[int, ...]]:
    """Seconds of one tiled translation of random HU of ``shape`` and the output shape."""
    from ..inference import translate
    from ..volume import Volume

    rng = np.random.default_rng(0)
    volume = Volume(rng.uniform(-1000.0, 300.0, size=shape).astype(np.float32), (0.7, 0.7, 5.0))
    translate(model, Volume(volume.array[: min(8, shape[0])].copy(), volume.spacing), device=device,
              out_dtype="int16")  # warm-up: oneDNN primitives, CUDA kernels
    _synchronize(device)
    start = time.perf_counter()
    result = translate(model, volume, device=device, out_dtype="int16")
    _synchronize(device)
    return time.perf_counter() - start, result.shape


def _figures(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant figures (small and large rates alike)."""
    return float(f"{value:.{digits}g}")


def run_inference_benchmark(size_scale: float = 1.0, device: str = "auto",
                            progress: Optional[Callable[[str], None]] = None, task: Optional[str] = None,
                            models: Optional[Sequence[str]] = None) -> dict:
    """Rows for every default model of the registry (see the module documentation), only the
    one of ``task``, or the ``models`` given (files or shipped names)."""
    from ..modelfile import load_model
    from ..registry import list_models

    if not 0 < size_scale <= 1:
        raise ConfigError(f"size scale must be in (0, 1], got {size_scale!r}")
    torch_device = resolve_device(device)
    if models:
        loaded = [(str(name), load_model(name)) for name in models]
    else:
        entries = [entry for entry in list_models() if entry.default and entry.task in FULL_INPUTS_ZYX
                   and (task is None or entry.task == task)]
        if not entries:
            raise ConfigError("no default super-resolution or kernel model is shipped (see `revgan models`)")
        loaded = [(entry.name, load_model(entry.path)) for entry in entries]
    rows: List[dict] = []
    for name, model in loaded:
        if model.task not in FULL_INPUTS_ZYX:
            raise ConfigError(f"{model.name}: a {model.task} model has no benchmark volume")
        model.generator.eval()
        flop_per_voxel = count_flop_per_voxel(model.generator)
        full_input, seconds_key = FULL_INPUTS_ZYX[model.task]
        timed_input = _scaled(full_input, size_scale) if size_scale < 1 else tuple(full_input)
        if progress is not None:
            progress(f"{name}: timing a {'x'.join(map(str, timed_input[::-1]))} (x, y, z) volume")
        seconds, output_shape = _time_translation(model, timed_input, torch_device)
        voxels = float(np.prod(output_shape))
        peak = peak_gflop_per_s(torch_device)
        mvoxel_per_s = voxels / seconds / 1e6
        gflop_per_s = flop_per_voxel * voxels / seconds / 1e9
        factors = model.metadata.scale_factors_xyz or (1, 1, 1)
        full_voxels = float(np.prod(full_input)) * float(np.prod(factors))
        row = {"name": name, "task": model.task, "flop_per_voxel": round(flop_per_voxel),
               "mvoxel_per_s": _figures(mvoxel_per_s), "gflop_per_s": _figures(gflop_per_s),
               "peak_gflop_per_s": _figures(peak), "fraction_of_peak": _figures(gflop_per_s / peak),
               "timed_input_zyx": list(timed_input), "timed_output_zyx": [int(n) for n in output_shape],
               "timed_seconds": _figures(seconds), seconds_key: _figures(seconds * full_voxels / voxels)}
        if tuple(timed_input) != tuple(full_input):
            row["extrapolated_from"] = list(timed_input)
        rows.append(row)
    return {"device": describe_device(torch_device), "threads": torch.get_num_threads(),
            "size_scale": size_scale, "models": rows}


def format_inference_table(result: dict) -> str:
    lines = [f"device {result['device']}, torch threads {result['threads']}",
             f"{'model':<34} {'FLOP/voxel':>11} {'Mvoxel/s':>9} {'GFLOP/s':>8} {'peak':>8} {'of peak':>8}  full size"]
    for row in result["models"]:
        key = next(k for k in row if k.endswith("_seconds") and k != "timed_seconds")
        note = " (extrapolated from {})".format("x".join(map(str, row["extrapolated_from"][::-1]))) \
            if "extrapolated_from" in row else ""
        lines.append(f"{row['name']:<34} {row['flop_per_voxel']:>11,} {row['mvoxel_per_s']:>9.3f} "
                     f"{row['gflop_per_s']:>8.1f} {row['peak_gflop_per_s']:>8.1f} {row['fraction_of_peak']:>8.0%}  "
                     f"{key}: {row[key]:.1f} s{note}")
    return "\n".join(lines)
