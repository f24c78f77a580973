"""``revgan bench tiling``: exactness, time and memory of tiled inference, against a
whole-volume pass and (when installed) MONAI's ``sliding_window_inference``.

One random-weight generator (every layer random, including the zero-initialised ones,
so each output voxel really depends on its whole receptive field) and one smooth random
volume in network units ([-1, 1]) are written to a temporary folder. Each method then
runs in its own fresh Python process:

- ``whole``: the generator on the whole volume at once (the reference);
- ``tiled``: :func:`RevGANCore.tiling.run_tiled` with the plan :func:`translate` would use
  -- one row per requested window edge, plus the default (``tile_size=None``);
- ``monai``: ``sliding_window_inference(roi_size=<the default plan's window>,
  sw_batch_size=1, overlap=0.25, mode="gaussian")``, the usual way to tile 3D inference.

Why one process per method: peak memory is the high-water mark of the process
(``ru_maxrss``), which only a fresh process can attribute to one method, and it sees every
allocation (numpy, torch, oneDNN scratch), which Python-level tracers do not. Each worker
imports torch (and MONAI for its row), loads the model and runs a small warm-up before
its baseline is read; ``peak_rss_mib`` is the peak minus that baseline, so it counts the
input, the output and the method's working memory, not the libraries. ``seconds`` is the
fastest of ``repeats`` (default 2) runs of the method alone: the workers run one after
another, and on a shared 2-core VM a single run of the same work varied by up to 2x
between workers.

``max_abs_diff`` is the largest absolute difference from the whole-volume output, in
network units (1 unit = 750 HU with the default window).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import RevGANError

# numpy and torch are imported inside the functions: the CLI imports this module for its
# defaults while building the parser, and `revgan --help` must stay instant.

DEFAULT_SHAPE = (64, 160, 448)
DEFAULT_TILES = (160,)


def randomize_weights(generator, seed: int = 0):
    """Give every parameter random values (fan-in scaled), zero-initialised layers included."""
    import numpy as np
    import torch

    generator_state = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(generator.named_parameters()):
            if parameter.dim() > 1:
                fan_in = parameter.shape[1] * int(np.prod(parameter.shape[2:]))
                if "upsample" in name:  # ConvTranspose weights are (in, out, k, k, k)
                    fan_in = parameter.shape[0] * int(np.prod(parameter.shape[2:])) // 8
                std = 1.0 / math.sqrt(max(fan_in, 1))
                parameter.copy_(torch.randn(parameter.shape, generator=generator_state) * std)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator_state) * 0.05)
    return generator


def smooth_random_volume(shape: Sequence[int], seed: int = 0):
    """A float32 numpy volume in (-1, 1): smooth blobs plus fine noise."""
    import numpy as np
    import torch

    state = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 1) + tuple(max(2, n // 8) for n in shape), generator=state)
    smooth = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=False)
    fine = 0.2 * torch.randn(tuple(shape), generator=state)
    return torch.tanh(smooth[0, 0] + fine).numpy().astype(np.float32)


def _peak_rss_mib() -> Optional[float]:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2.0 ** 20 if sys.platform == "darwin" else peak / 1024.0


# --------------------------------------------------------------------------- worker


def _method(method: str, generator, config, direction: str, tile: str):
    """The callable ``volume (numpy) -> output (numpy)`` of one method, and its details."""
    import numpy as np
    import torch

    from ..inference import make_plan
    from ..tiling import run_tiled

    device = torch.device("cpu")

    def network(window):
        return generator(torch.from_numpy(np.ascontiguousarray(window))[None, None], direction)[0, 0]

    if method == "whole":
        return lambda volume: network(volume).numpy(), {}
    if method == "tiled":
        tile_size = None if tile == "default" else int(tile)
        details = {}

        def tiled(volume):
            plan = make_plan(config, volume.shape, device, tile_size)
            output = np.empty(volume.shape, dtype=np.float32)
            run_tiled(network, volume, output, plan)
            details.update(window=list(plan.window_shape), tiles=len(plan), overhead=round(plan.overhead, 4))
            return output

        return tiled, details
    if method == "monai":
        from monai.inferers import sliding_window_inference

        details = {}

        def monai(volume):
            roi = make_plan(config, volume.shape, device, None).window_shape
            details["window"] = list(roi)
            output = sliding_window_inference(
                torch.from_numpy(volume)[None, None], roi_size=roi, sw_batch_size=1,
                predictor=lambda batch: generator(batch, direction), overlap=0.25, mode="gaussian")
            return np.asarray(output)[0, 0]

        return monai, details
    raise RevGANError(f"unknown method {method!r}")


def _worker(method: str, model_path: str, input_path: str, output_path: str, tile: str,
            direction: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from ..modelfile import load_model

    torch.set_grad_enabled(False)
    generator = load_model(model_path).generator
    function, details = _method(method, generator, generator.config, direction, tile)
    # Warm-up through the same code path (lazy imports, oneDNN set-up) before the baseline.
    function(np.zeros((48, 24, 24), dtype=np.float32))
    baseline = _peak_rss_mib()
    volume = np.load(input_path)
    times = []
    output = None
    for _ in range(max(1, repeats)):
        output = None  # each run allocates its own output, as a single run would
        started = time.perf_counter()
        output = function(volume)
        times.append(time.perf_counter() - started)
    peak = _peak_rss_mib()
    np.save(output_path, np.asarray(output, dtype=np.float32))
    return dict(details, seconds=min(times), all_seconds=times,
                peak_rss_mib=None if peak is None or baseline is None else peak - baseline)


def _run_worker(method: str, model_path: Path, input_path: Path, output_path: Path, tile: str,
                direction: str, repeats: int) -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-m", "RevGANCore.bench.tiling", method, str(model_path), str(input_path),
               str(output_path), tile, direction, str(repeats)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no message"])[-1]
        raise RevGANError(f"bench tiling: the {method} worker failed: {last}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _max_abs_diff(a_path: Path, b_path: Path) -> float:
    import numpy as np

    a = np.load(a_path, mmap_mode="r")
    b = np.load(b_path, mmap_mode="r")
    if a.shape != b.shape:
        return math.inf
    worst = 0.0
    for start in range(0, a.shape[0], 16):
        difference = np.abs(np.asarray(a[start:start + 16], dtype=np.float64) - b[start:start + 16])
        worst = max(worst, float(difference.max()))
    return worst


def monai_available() -> bool:
    try:
        import monai.inferers  # noqa: F401
    except Exception:  # ImportError, or a MONAI that fails to import beside this torch
        return False
    return True


def run_tiling_benchmark(shape: Sequence[int] = DEFAULT_SHAPE, tiles: Sequence[int] = DEFAULT_TILES,
                         ngf: int = 16, depth: int = 2, seed: int = 0, use_monai: bool = True,
                         direction: str = "forward", repeats: int = 2, progress=None) -> dict:
    """Run every method in its own process; returns ``{"json": the --json dictionary,
    "context": details for the text table}``."""
    import numpy as np
    import torch

    from ..inference import make_plan
    from ..networks import GeneratorConfig, RevGANGenerator3d
    from ..modelfile import ModelMetadata, save_model

    config = GeneratorConfig(ngf=ngf, depth=depth)
    generator = randomize_weights(RevGANGenerator3d(config=config), seed)
    shape = tuple(int(n) for n in shape)
    with tempfile.TemporaryDirectory(prefix="revgan-bench-tiling-") as folder:
        workdir = Path(folder)
        model_path = save_model(workdir / "model.safetensors", generator, ModelMetadata(
            task="custom", domains={"x": "a", "y": "b"}, name="bench-random",
            description="random weights for the tiling benchmark"))
        input_path = workdir / "input.npy"
        np.save(input_path, smooth_random_volume(shape, seed))
        methods: List[tuple] = [("whole", "-")] + [("tiled", str(int(t))) for t in tiles] + [("tiled", "default")]
        if use_monai and monai_available():
            methods.append(("monai", "-"))
        results = {}
        for index, (method, tile) in enumerate(methods):
            if progress is not None:
                progress(index, len(methods), f"{method} {tile}")
            output_path = workdir / f"{method}-{tile}.npy"
            info = _run_worker(method, model_path, input_path, output_path, tile, direction, repeats)
            if method != "whole":
                info["max_abs_diff"] = _max_abs_diff(workdir / "whole--.npy", output_path)
            results[(method, tile)] = info
    whole = results[("whole", "-")]
    rows = []
    details = []
    for method, tile in methods:
        if method != "tiled":
            continue
        info = results[(method, tile)]
        rows.append({"tile": int(tile) if tile != "default" else info["window"],
                     "max_abs_diff": info["max_abs_diff"], "seconds": round(info["seconds"], 3),
                     "peak_rss_mib": _round(info["peak_rss_mib"])})
        details.append({"tiles": info["tiles"], "window": info["window"], "overhead": info["overhead"]})
    monai = None
    if ("monai", "-") in results:
        info = results[("monai", "-")]
        monai = {"max_abs_diff": info["max_abs_diff"], "seconds": round(info["seconds"], 3),
                 "peak_rss_mib": _round(info["peak_rss_mib"])}
    result = {"rows": rows, "whole_seconds": round(whole["seconds"], 3), "monai": monai}
    # Not part of the JSON: context for the text table.
    result_context = {"shape": list(shape), "ngf": ngf, "depth": depth, "details": details,
                      "whole_peak_rss_mib": _round(whole["peak_rss_mib"]),
                      "monai_window": results.get(("monai", "-"), {}).get("window"),
                      "halo": make_plan(config, shape, torch.device("cpu"), None).halo}
    return {"json": result, "context": result_context}


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


def format_tiling_table(result: dict) -> str:
    data, context = result["json"], result["context"]
    lines = [f"volume {'x'.join(map(str, context['shape']))} (z, y, x), generator ngf {context['ngf']} depth "
             f"{context['depth']} (halo {context['halo']}), random weights; CPU, one process per method",
             f"{'method':<28} {'tiles':>6} {'recomputed':>10} {'max |diff|':>11} {'seconds':>8} "
             f"{'x whole':>8} {'peak MiB':>9}",
             f"{'whole volume':<28} {1:>6} {'0%':>10} {0.0:>11.2e} {data['whole_seconds']:>8.2f} {1.0:>8.2f} "
             f"{_fmt(context['whole_peak_rss_mib']):>9}"]
    for row, detail in zip(data["rows"], context["details"]):
        label = (f"tiled, default {'x'.join(map(str, row['tile']))}" if isinstance(row["tile"], list)
                 else f"tiled, tile {row['tile']}")
        lines.append(f"{label:<28} {detail['tiles']:>6} {100 * (detail['overhead'] - 1):>9.0f}% "
                     f"{row['max_abs_diff']:>11.2e} {row['seconds']:>8.2f} "
                     f"{row['seconds'] / data['whole_seconds']:>8.2f} {_fmt(row['peak_rss_mib']):>9}")
    if data["monai"] is not None:
        monai = data["monai"]
        label = f"MONAI gaussian 0.25, roi {'x'.join(map(str, context['monai_window']))}"
        lines.append(f"{label:<28} {'':>6} {'':>10} {monai['max_abs_diff']:>11.2e} {monai['seconds']:>8.2f} "
                     f"{monai['seconds'] / data['whole_seconds']:>8.2f} {_fmt(monai['peak_rss_mib']):>9}")
    else:
        lines.append("MONAI not installed: no sliding_window_inference row")
    lines.append("max |diff| in network units (1 = 750 HU); peak MiB = peak RSS above the worker's baseline "
                 "after imports")
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    _, method_, model_, input_, output_, tile_, direction_, repeats_ = sys.argv
    print(json.dumps(_worker(method_, model_, input_, output_, tile_, direction_, int(repeats_))))
