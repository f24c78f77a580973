#!/usr/bin/env python3
"""GPU check of whole-volume inference (issue 4): the CUDA paths the CPU tests cannot reach.

Run from the repository root on a CUDA machine (needs torch with CUDA and numpy; not
SimpleITK, which the GPU image lacks -- no file IO or super-resolution resampling here):

    PYTHONUNBUFFERED=1 python3 tools/gpu_check_inference.py            # ~30-60 s on an H100

Prints one line per check and a JSON summary (also written to $OUT/gpu_check_inference.json
when OUT is set); exits 1 if a check fails. Checks, with a random-weight ngf 16 / depth 2
generator (every layer random) on smooth random CT-like volumes:

1. exact:     translate(precision="float32", tile 96) on CUDA == the whole volume through
              the generator on CUDA (TF32 off), <= 1e-5 network units (0.0075 HU);
2. cpu_cuda:  CUDA float32 vs CPU float32 (report; expected ~1e-5 HU-level);
3. autocast:  precision auto (float16), bfloat16 and float16 vs float32: max and
              mean |difference| in HU, all finite; the log names the autocast dtype;
4. oom_halve: with a per-process memory cap between the peak of a whole-volume window and
              of a half-edge window, translate(tile = whole volume) logs "retrying with" and
              still equals the float32 result;
5. oom_cpu:   with a cap below any window, translate logs "continuing on the CPU" and equals
              the CPU result;
6. timing:    a 256 x 512 x 512 volume, default plan, autocast: translate() seconds and
              voxels/s, against the whole volume through the generator at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from RevGANCore.bench.tiling import randomize_weights, smooth_random_volume  # noqa: E402
from RevGANCore.inference import translate  # noqa: E402
from RevGANCore.modelfile import ModelMetadata, TranslationModel  # noqa: E402
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d  # noqa: E402
from RevGANCore.volume import Volume, hu_to_unit, unit_to_hu  # noqa: E402

HU_PER_UNIT = 750.0
results: dict = {}
failures: list = []


def report(name: str, ok: bool, **values) -> None:
    results[name] = dict(values, ok=bool(ok))
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"{'PASS' if ok else 'FAIL'} {name}: {shown}", flush=True)
    if not ok:
        failures.append(name)


def sync() -> None:
    torch.cuda.synchronize()


def whole(model: TranslationModel, hu: np.ndarray, device: str, amp=None) -> np.ndarray:
    """The reference: the whole volume through the generator at once (TF32 off)."""
    generator = model.generator.to(device)
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        autocast = torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            x = hu_to_unit(torch.from_numpy(hu).to(device), model.metadata.hu_window)[None, None]
            y = generator(x, "forward")[0, 0].float()
            return unit_to_hu(y, model.metadata.hu_window).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def ct_volume(shape, seed) -> Volume:
    return Volume(np.ascontiguousarray(unit_to_hu(smooth_random_volume(shape, seed))), (0.7, 0.7, 1.0))


class Context:
    """What the steps share: the model and the float32 reference of the test volume."""

    def __init__(self) -> None:
        generator = randomize_weights(RevGANGenerator3d(config=GeneratorConfig(ngf=16, depth=2)), seed=0).eval()
        self.model = TranslationModel(generator, ModelMetadata(
            task="custom", domains={"x": "a", "y": "b"}, generator=generator.config.to_dict(), name="gpu-check"))
        self.volume = ct_volume((96, 192, 192), 1)
        self.tiled = None  # float32 tiled result on CUDA (step 1)
        self.started = time.perf_counter()

    def float32_result(self) -> np.ndarray:
        if self.tiled is None:
            self.tiled = translate(self.model, self.volume, tile_size=96, device="cuda", precision="float32").array
        return self.tiled


def step_exact(c: Context) -> None:
    reference = whole(c.model, c.volume.array, "cuda")
    log: list = []
    sync()
    t0 = time.perf_counter()
    c.tiled = translate(c.model, c.volume, tile_size=96, device="cuda", precision="float32",
                        log=log.append).array
    sync()
    seconds = time.perf_counter() - t0
    diff = float(np.abs(c.tiled - reference).max()) / HU_PER_UNIT
    report("exact", diff <= 1e-5, max_abs_diff_units=diff, seconds=seconds, plan=log[-1])


def step_cpu_cuda(c: Context) -> None:
    small = ct_volume((48, 96, 96), 2)
    cpu = translate(c.model, small, device="cpu").array
    cuda = translate(c.model, small, device="cuda", precision="float32").array
    diff = float(np.abs(cpu - cuda).max())
    report("cpu_cuda", diff <= 0.05, max_abs_diff_hu=diff)


def step_autocast(c: Context) -> None:
    reference = c.float32_result()
    for precision in ("auto", "bfloat16", "float16"):
        log: list = []
        sync()
        t0 = time.perf_counter()
        result = translate(c.model, c.volume, device="cuda", precision=precision, log=log.append).array
        sync()
        difference = np.abs(result - reference)
        report(f"autocast_{precision}", bool(np.isfinite(result).all()) and "autocast" in log[-1],
               max_abs_diff_hu=float(difference.max()), mean_abs_diff_hu=float(difference.mean()),
               seconds=time.perf_counter() - t0, log=log[-1].split(";")[0])


def step_oom_halve(c: Context) -> None:
    """A memory cap between the peaks of a whole-volume window and a half-edge window."""
    reference = c.float32_result()
    total = torch.cuda.get_device_properties(0).total_memory

    def window_peak(edge_zyx) -> int:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        part = Volume(np.ascontiguousarray(c.volume.array[:edge_zyx[0], :edge_zyx[1], :edge_zyx[2]]))
        translate(c.model, part, tile_size=edge_zyx, device="cuda", precision="float32")
        return torch.cuda.max_memory_allocated() - base

    big = window_peak((96, 192, 192))
    half = window_peak((48, 96, 96))
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_reserved() + int((big * half) ** 0.5) + 64 * 2 ** 20
    log: list = []
    try:
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        halved = translate(c.model, c.volume, tile_size=(96, 192, 192), device="cuda", precision="float32",
                           log=log.append).array
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    diff = float(np.abs(halved - reference).max()) / HU_PER_UNIT
    report("oom_halve", any("retrying with" in m for m in log) and diff <= 1e-5,
           peak_big_mib=big / 2 ** 20, peak_half_mib=half / 2 ** 20, cap_mib=cap / 2 ** 20,
           max_abs_diff_units=diff, log=" | ".join(m for m in log if "memory" in m))


def step_oom_cpu(c: Context) -> None:
    """A memory cap below any window: the translation ends on the CPU."""
    total = torch.cuda.get_device_properties(0).total_memory
    tiny = ct_volume((40, 64, 64), 3)
    cpu_reference = translate(c.model, tiny, device="cpu").array
    c.model.generator.to("cuda")
    torch.cuda.empty_cache()
    log: list = []
    try:
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + 2 ** 20) / total))
        fallback = translate(c.model, tiny, tile_size=48, device="cuda", precision="float32",
                             log=log.append).array
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        c.model.generator.to("cuda")
        torch.cuda.empty_cache()
    diff = float(np.abs(fallback - cpu_reference).max())
    report("oom_cpu", any("continuing on the CPU" in m for m in log) and diff <= 1e-3,
           max_abs_diff_hu=diff, log=" | ".join(m for m in log if "memory" in m))


def step_timing(c: Context) -> None:
    if time.perf_counter() - c.started > 40:
        print("skipped timing: over 40 s already", flush=True)
        return
    large = ct_volume((256, 512, 512), 4)
    voxels = large.array.size
    amp = torch.float16  # what precision="auto" uses
    translate(c.model, ct_volume((64, 128, 128), 5), device="cuda")  # warm-up of the autocast kernels
    sync()
    t0 = time.perf_counter()
    whole_result = whole(c.model, large.array, "cuda", amp)
    sync()
    whole_seconds = time.perf_counter() - t0
    log: list = []
    sync()
    t0 = time.perf_counter()
    tiled_result = translate(c.model, large, device="cuda", log=log.append).array
    sync()
    tiled_seconds = time.perf_counter() - t0
    report("timing", bool(np.isfinite(tiled_result).all()), voxels=voxels, whole_seconds=whole_seconds,
           translate_seconds=tiled_seconds, translate_mvox_per_s=voxels / tiled_seconds / 1e6,
           ratio=tiled_seconds / whole_seconds,
           max_abs_diff_hu_vs_whole=float(np.abs(tiled_result - whole_result).max()), plan=log[-1])


STEPS = (step_exact, step_cpu_cuda, step_autocast, step_oom_halve, step_oom_cpu, step_timing)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    props = torch.cuda.get_device_properties(0)
    results["device"] = f"{props.name}, {props.total_memory / 2 ** 30:.0f} GiB, torch {torch.__version__}"
    results["bf16_supported"] = torch.cuda.is_bf16_supported()
    print(results["device"], flush=True)
    context = Context()
    translate(context.model, ct_volume((48, 48, 48), 9), device="cuda", precision="float32")  # warm-up
    for step in STEPS:
        try:
            step(context)
        except Exception as error:  # report and go on: one run should show every problem
            message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            report(step.__name__[5:], False, error=f"{type(error).__name__}: {message}")
            traceback.print_exc()
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            context.model.generator.to("cuda")
            torch.cuda.empty_cache()
    results["total_seconds"] = time.perf_counter() - context.started
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check_inference.json").write_text(text)
    print("FAILED: " + ", ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
