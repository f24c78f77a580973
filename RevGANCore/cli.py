"""The ``revgan`` command line: a thin caller of the library.

Each command adds its own sub-parser in a ``_setup_<command>`` function and imports the
heavy modules it needs inside its handler, so ``revgan --help`` is instant. Errors a user
can cause are :class:`RevGANError` subclasses: they are printed as one line, without a
traceback, and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from . import __version__
from .errors import RevGANError
from .printable import printable

EXIT_USER_ERROR = 1
#: A command stopped by signal N exits with 128 + N (130 for Ctrl-C, 143 for SIGTERM).
EXIT_SIGNAL_BASE = 128
EXIT_INTERRUPTED = 130
#: ``--progress`` values of the commands that report progress.
PROGRESS_STYLES = ("auto", "jsonl")


def _print_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False))


def _print_result(args: argparse.Namespace, result: dict, format_table: Callable[[dict], str],
                  json_safe: bool = False) -> int:
    """A command's result as one JSON object (``--json``; ``json_safe``: NaN and infinities as
    null) or as its text table; the command's exit status (0)."""
    if args.json:
        _print_json(_json_safe(result) if json_safe else result)
    else:
        print(format_table(result))
    return 0


# --------------------------------------------------------------------------- bench


def _setup_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="memory, speed, tiling, quality and physical-scale benchmarks")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="KIND")
    kinds.required = True

    memory = kinds.add_parser(
        "memory", help="activation memory of the generator vs core depth (the seed's Table 1)")
    memory.add_argument("--depths", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    memory.add_argument("--patch", type=int, default=64, help="cubic patch edge in voxels")
    memory.add_argument("--batch", type=int, default=1, help="patches per batch")
    memory.add_argument("--ngf", type=int, default=16, help="generator base channels")
    memory.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    memory.add_argument("--json", action="store_true", help="print one JSON object")
    memory.set_defaults(handler=_run_bench_memory)

    speed = kinds.add_parser(
        "speed", help="training-step time: naive vs reversible vs checkpointing")
    speed.add_argument("--depths", type=int, nargs="+", default=[0, 8])
    speed.add_argument("--patch", type=int, default=40, help="cubic patch edge in voxels")
    speed.add_argument("--batch", type=int, default=4, help="patches per batch")
    speed.add_argument("--ngf", type=int, default=16)
    speed.add_argument("--repeats", type=int, default=7, help="timed steps per variant")
    speed.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    speed.add_argument("--json", action="store_true", help="print one JSON object")
    speed.set_defaults(handler=_run_bench_speed)

    quality = kinds.add_parser(
        "quality", help="the seed's Table 2 on held-out phantoms: RevGAN variants vs classical baselines")
    quality.add_argument("--models", nargs="+", default=None, metavar="FOLDER",
                         help="folder(s) with table2.json and the variant models, pooled into one table (default: "
                              "the shipped table2 folder)")
    quality.add_argument("--data", default="data", help="where the test phantoms are generated (default: data)")
    quality.add_argument("--cases", type=int, default=5, help="held-out test cases (default 5)")
    quality.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    quality.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                         help="phantom voxel counts (quick checks only; the README table uses the default)")
    quality.add_argument("--worlds", nargs="+", default=["linear", "nonlinear"], choices=["linear", "nonlinear"],
                         help="phantom worlds to evaluate (default: both)")
    quality.add_argument("--json", action="store_true", help="print one JSON object")
    quality.set_defaults(handler=_run_bench_quality)

    scale = kinds.add_parser(
        "scale", help="kernel transfer at 0.3 and 0.5 cycles/mm for one scan at 0.3, 0.6 and 0.9 mm pixels")
    scale.add_argument("--model", default="revgan-kernel-phantom-paired2r", help="registry name or model file")
    scale.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    scale.add_argument("--json", action="store_true", help="print one JSON object")
    scale.set_defaults(handler=_run_bench_scale)

    _setup_bench_tiling(kinds)
    _setup_bench_inference(kinds)
    _setup_bench_real(kinds)


def _setup_bench_real(kinds: argparse._SubParsersAction) -> None:
    real = kinds.add_parser(
        "real", help="super-resolution (z-consistent, vs interpolation), HU bias, z behaviour, kernel scale and "
                     "field of view on a real chest CT (default: the held-out lung2; see docs/bench.md)")
    real.add_argument("--scan", default=None, metavar="PATH",
                      help="scan file, or lung1 / lung2 from the cache of tools/fetch_real_ct.py (default: lung2)")
    real.add_argument("--model", default=None, help="super-resolution model (default: the shipped default)")
    real.add_argument("--kernel-model", default=None, help="kernel model (default: the shipped default)")
    real.add_argument("--crop", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                      help="use the centred box of this many voxels (development runs)")
    real.add_argument("--slices", type=int, default=None, metavar="N",
                      help="use the N middle slices (overrides the Z of --crop)")
    real.add_argument("--figure", default=None, metavar="PNG",
                      help="write input | B-spline | model | difference (axial and coronal) to this PNG")
    real.add_argument("--tile", type=int, nargs="+", default=None, metavar="N",
                      help="tile edge in voxels including the halo, or Z Y X (default: from the memory budget)")
    real.add_argument("--degradation", default="gaussian", choices=("gaussian", "box"),
                      help="in-plane degradation of the input: Gaussian (FWHM = new pixel, the default) or box "
                           "(pixel binning)")
    real.add_argument("--single-slices", nargs="*", default=None, metavar="DCM",
                      help="instead of a scan: in-plane super-resolution of single real slices (these DICOM files; "
                           "none given: those of tools/fetch_real_ct.py --slices)")
    real.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    real.add_argument("--json", action="store_true", help="print one JSON object")
    real.set_defaults(handler=_run_bench_real)


def _run_bench_real(args: argparse.Namespace) -> int:
    from .bench.real import format_real_table, run_real_benchmark

    def log(text: str) -> None:
        print(f"bench real: {text}", file=sys.stderr)

    if args.single_slices is not None:
        from .bench.real_slices import format_slice_table, run_slice_benchmark

        result = run_slice_benchmark(args.single_slices, model=args.model, degradation=args.degradation,
                                     device=args.device, tile_size=_tile_argument(args.tile), log=log)
        return _print_result(args, result, format_slice_table, json_safe=True)
    crop = list(args.crop) if args.crop else [None, None, None]
    if args.slices is not None:
        crop[0] = args.slices
    result = run_real_benchmark(scan=args.scan, model=args.model, kernel_model=args.kernel_model, crop_zyx=crop,
                                device=args.device, tile_size=_tile_argument(args.tile), figure=args.figure,
                                log=log, degradation=args.degradation)
    return _print_result(args, result, format_real_table, json_safe=True)


def _run_bench_scale(args: argparse.Namespace) -> int:
    from .bench.scale import format_scale_table, run_scale_benchmark

    result = run_scale_benchmark(args.model, device=args.device)
    return _print_result(args, result, format_scale_table)


def _run_bench_memory(args: argparse.Namespace) -> int:
    from .bench.memory import format_memory_table, run_memory_benchmark

    result = run_memory_benchmark(depths=args.depths, patch=args.patch, ngf=args.ngf,
                                  device=args.device, batch=args.batch)
    return _print_result(args, result, format_memory_table)


def _run_bench_quality(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench.quality import format_quality_table, run_quality_benchmark

    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    result = run_quality_benchmark(models_dir=[Path(folder) for folder in args.models] if args.models else None,
                                   data_dir=Path(args.data), test_cases=args.cases, device=args.device, log=log,
                                   shape=tuple(args.shape) if args.shape else None, worlds=args.worlds)
    return _print_result(args, result, format_quality_table, json_safe=True)  # one case: std NaN, null


def _run_bench_speed(args: argparse.Namespace) -> int:
    from .bench.speed import format_speed_table, run_speed_benchmark

    result = run_speed_benchmark(depths=args.depths, patch=args.patch, ngf=args.ngf,
                                 repeats=args.repeats, device=args.device, batch=args.batch)
    return _print_result(args, result, format_speed_table)


# --------------------------------------------------------------------------- phantom


def _setup_phantom(commands: argparse._SubParsersAction) -> None:
    phantom = commands.add_parser(
        "phantom", help="write a synthetic chest-CT dataset (hr, lr, sharp, smooth per case)")
    phantom.add_argument("out_dir", metavar="OUT_DIR", help="new or empty folder for the dataset")
    phantom.add_argument("--cases", type=int, default=2, help="number of cases (default 2)")
    phantom.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same files)")
    phantom.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                         help="high-resolution grid in voxels (default 64 128 128)")
    phantom.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), default=None,
                         help="high-resolution spacing in mm (default 0.8 0.8 1.25)")
    phantom.add_argument("--world", default="linear", choices=["linear", "nonlinear"],
                         help="linear: FBP-like images only; nonlinear: hr and smooth are iterative-"
                              "reconstruction-like (docs/data.md)")
    phantom.add_argument("--overwrite", action="store_true", help="allow a non-empty OUT_DIR")
    phantom.add_argument("--json", action="store_true", help="print one JSON object")
    phantom.set_defaults(handler=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    import time

    from .phantom_dataset import PhantomRecipe, write_phantom_dataset

    recipe = PhantomRecipe(world=args.world)
    if args.shape is not None:
        recipe = PhantomRecipe(shape=tuple(args.shape), spacing=recipe.spacing, world=args.world)
    if args.spacing is not None:
        recipe = PhantomRecipe(shape=recipe.shape, spacing=tuple(args.spacing), world=args.world)

    def progress(index: int, total: int, case_id: str) -> None:
        if not args.json:
            print(f"phantom: case {index + 1}/{total} ({case_id})", file=sys.stderr)

    started = time.perf_counter()
    manifest = write_phantom_dataset(args.out_dir, cases=args.cases, seed=args.seed, recipe=recipe,
                                     overwrite=args.overwrite, progress=progress)
    result = {"manifest": str(manifest), "cases": args.cases, "seed": args.seed,
              "shape_zyx": list(recipe.shape), "spacing_xyz_mm": list(recipe.spacing), "world": recipe.world,
              "seconds": round(time.perf_counter() - started, 2)}
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {args.cases} phantom case(s) to {args.out_dir} in {result['seconds']} s; "
              f"manifest: {manifest}")
    return 0


# --------------------------------------------------------------------------- fit-kernel-filter


def _setup_fit_kernel_filter(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser(
        "fit-kernel-filter",
        help="fit a linear kernel converter (radial filter in cycles/mm) on paired volumes; "
             "`revgan translate --model` runs it")
    fit.add_argument("output", metavar="OUT.safetensors", help="model file to write (a card OUT.md goes beside it)")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="dataset manifest (or its folder) with a kernel task, e.g. from "
                                           "`revgan dataset` or `revgan phantom`")
    source.add_argument("--pairs", nargs=2, metavar=("SOURCE_DIR", "TARGET_DIR"),
                        help="two folders whose equally named volumes are pairs (source kernel, target kernel)")
    fit.add_argument("--cases", nargs="+", default=None, help="manifest cases to fit on (default: all)")
    fit.add_argument("--domains", nargs=2, metavar=("SOURCE", "TARGET"), default=("sharp", "smooth"),
                     help="domain names with --pairs (default: sharp smooth)")
    fit.add_argument("--name", default="", help="model name (default: the file name)")
    fit.add_argument("--inverse-floor", type=float, default=0.1,
                     help="the inverse direction floors |gain| at this value: at most 1/floor amplification "
                          "(default 0.1)")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.set_defaults(handler=_run_fit_kernel_filter)


def _run_fit_kernel_filter(args: argparse.Namespace) -> int:
    from .linear_filter_file import (fit_kernel_filter_file, paired_volumes_from_folders,
                                     paired_volumes_from_manifest)

    if args.manifest:
        names, pairs, inputs, domains = paired_volumes_from_manifest(args.manifest, args.cases)
    else:
        names, pairs, inputs = paired_volumes_from_folders(*args.pairs)
        domains = {"x": args.domains[0], "y": args.domains[1]}
    written = fit_kernel_filter_file(args.output, pairs, names, domains, inputs, name=args.name,
                                     inverse_gain_floor=args.inverse_floor)
    result = {"model": str(written), "card": str(written.with_suffix(".md")), "pairs": names,
              "domains": domains}
    if args.json:
        _print_json(result)
    else:
        print(f"fitted a radial kernel filter on {len(names)} pair(s); wrote {written} and its card")
    return 0


# --------------------------------------------------------------------------- dataset


def _setup_dataset(commands: argparse._SubParsersAction) -> None:
    dataset = commands.add_parser(
        "dataset", help="scan a DICOM folder, group series by reconstruction kernel, write a dataset")
    dataset.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder searched recursively for DICOM series")
    dataset.add_argument("out_dir", metavar="OUT_DIR", help="new or empty folder for volumes and manifest.json")
    dataset.add_argument("--source-kernel", default=None,
                         help="domain translated from (default: the sharpest kernel found)")
    dataset.add_argument("--target-kernel", default=None,
                         help="domain translated to (default: the smoothest kernel found)")
    dataset.add_argument("--overwrite", action="store_true", help="allow a non-empty OUT_DIR")
    dataset.add_argument("--json", action="store_true", help="print one JSON object")
    dataset.set_defaults(handler=_run_dataset)


def _run_dataset(args: argparse.Namespace) -> int:
    from .dicom_dataset import write_dicom_dataset

    def progress(message: str) -> None:
        if not args.json:
            print(f"dataset: {message}", file=sys.stderr)

    summary = write_dicom_dataset(args.dicom_dir, args.out_dir, source_kernel=args.source_kernel,
                                  target_kernel=args.target_kernel, overwrite=args.overwrite,
                                  progress=progress)
    if args.json:
        _print_json(summary)
    else:
        kernel = summary.get("task")
        pairing = (f"; task kernel: {kernel['source']} -> {kernel['target']}, {summary['paired_cases']} paired "
                   "case(s)") if kernel else ""
        unpaired = sum(len(ids) for ids in summary["unpaired"].values())
        for line in summary["found"]:
            print(line)
        print(f"wrote {summary['series_written']} series in {summary['cases']} case(s), domains "
              f"{', '.join(summary['domains'])}{pairing}, {unpaired} unpaired case(s); "
              f"manifest: {summary['manifest']}")
        for note in summary["skipped"]:
            print(f"skipped: {note}")
    return 0


# --------------------------------------------------------------------------- inference


def _add_translation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, nargs="+", default=None, metavar="N",
                        help="tile (window) edge in voxels including the halo, or three values Z Y X "
                             "(default: chosen from the memory budget)")
    parser.add_argument("--tile-memory", type=float, default=None, metavar="MIB",
                        help="memory budget of one window's activations in MiB (default: on the CPU a quarter "
                             "of the available memory, 1024-4096, divided among batch --jobs; on CUDA half "
                             "the free GPU memory); larger windows recompute less overlap")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="CUDA autocast precision (auto: float16; float32 for IEEE float32 throughout)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for PyTorch (0, the default: PyTorch's choice, usually one per core; "
                             "with batch --jobs J each worker gets N // J)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages (warnings still show)")
    parser.add_argument("--progress", default="auto", choices=PROGRESS_STYLES,
                        help="auto: a bar on a terminal, plain lines otherwise; jsonl: one JSON object per line "
                             "on standard output (progress, messages, error, done) for programs")
    parser.add_argument("--no-air-check", action="store_true",
                        help="accept a scan without any air-like voxel (none below -500 HU), such as a soft-tissue "
                             "crop; values must still be CT in HU (default: refused, as it may be MR or CT "
                             "without its rescale intercept)")


def _air_check(args: argparse.Namespace):
    """``--no-air-check``: whether scans read in the block must hold air; a refusal names the option."""
    from .volume_io import COMMAND_LINE_AIR_HINT, air_check

    return air_check(not args.no_air_check, hint=COMMAND_LINE_AIR_HINT)


def _add_input_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="output_format", default="volume", choices=["volume", "dicom"],
                        help="volume: a file whose ending names its type; dicom: OUT is a new or empty folder "
                             "that gets a derived DICOM CT series (int16), in the source's study for DICOM input")
    parser.add_argument("--series", default=None, metavar="UID_OR_NUMBER",
                        help="the series of a DICOM folder to read, by SeriesInstanceUID or SeriesNumber "
                             "(default: the largest)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a DICOM series whose reconstruction kernel looks like the model's target "
                             "domain (default: a warning)")


def _setup_translate(commands: argparse._SubParsersAction) -> None:
    translate = commands.add_parser(
        "translate", help="translate a CT volume with a model (exact tiled inference)")
    translate.add_argument("input", metavar="IN", help="input volume file or DICOM folder (HU)")
    translate.add_argument("output", metavar="OUT",
                           help="output file (.nii.gz, .nii, .nrrd, .mha, ...), or a folder with --format dicom")
    translate.add_argument("--model", required=True, help="model file (.safetensors) or shipped model name")
    translate.add_argument("--direction", default="forward", choices=["forward", "inverse"],
                           help="forward: the model's domain x -> y; inverse: y -> x")
    translate.add_argument("--dtype", default="int16", choices=["int16", "float32"],
                           help="output voxel type (int16: whole HU)")
    _add_translation_options(translate)
    _add_input_output_options(translate)
    translate.set_defaults(handler=_run_translate)

    resolve = commands.add_parser(
        "super-resolve", help="super-resolve a CT volume (default: the shipped super-resolution model)")
    resolve.add_argument("input", metavar="IN", help="input volume file or DICOM folder (HU)")
    resolve.add_argument("output", metavar="OUT",
                         help="output file (.nii.gz, .nii, .nrrd, .mha, ...), or a folder with --format dicom")
    resolve.add_argument("--model", default=None, help="super-resolution model file or shipped model name")
    resolve.add_argument("--dtype", default="int16", choices=["int16", "float32"],
                         help="output voxel type (int16: whole HU)")
    resolve.add_argument("--adapt", type=float, default=None, metavar="SECONDS",
                         help="first fine-tune a copy of the model on this scan for about SECONDS, at most 3600 "
                              "(its own slices degraded in-plane as pairs; the model file is not changed)")
    _add_translation_options(resolve)
    _add_input_output_options(resolve)
    resolve.set_defaults(handler=_run_super_resolve)


def _apply_threads(args: argparse.Namespace) -> None:
    """``--threads N``: PyTorch's intra-op thread count for this process (0: leave it)."""
    threads = getattr(args, "threads", 0)
    if threads < 0:
        raise RevGANError(f"--threads must be 0 (automatic) or a positive number, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _tile_argument(values: Optional[List[int]]):
    if values is None:
        return None
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return tuple(values)
    raise RevGANError(f"--tile takes one value or three (Z Y X), got {len(values)}")


def _adapted(args: argparse.Namespace, model, reporter=None):
    """``--adapt SECONDS``: a copy of ``model`` fine-tuned on the input scan
    (:func:`RevGANCore.scan_adaptation.adapt_to_scan`), with progress."""
    from .inference import read_input
    from .progress import progress_bar
    from .scan_adaptation import adapt_to_scan

    volume, _ = read_input(args.input, model, "forward", args.series, args.strict)
    if reporter is not None:
        return adapt_to_scan(model, volume, args.adapt, progress=reporter, log=reporter.message)
    with progress_bar("adapt", unit="s", enabled=not args.quiet) as bar:
        def log(message: str) -> None:
            if not args.quiet:
                bar.write(f"revgan: {message}")

        return adapt_to_scan(model, volume, args.adapt, progress=bar, log=log)


def _tile_memory(args: argparse.Namespace) -> Optional[float]:
    value = getattr(args, "tile_memory", None)
    if value is not None and not (16 <= value <= 2 ** 20):
        raise RevGANError(f"--tile-memory is in MiB, from 16 to 1048576; got {value:g}")
    return value


def _run_translation(args: argparse.Namespace, model_name: str, task: Optional[str], direction: str) -> int:
    from .inference import check_translation_output, translate_file
    from .modelfile import check_task, load_model
    from .progress import JsonLinesReporter, progress_bar
    from .registry import get_model_path

    _apply_threads(args)
    tile = _tile_argument(args.tile)
    model_path = get_model_path(model_name)
    check_translation_output(args.output, [args.input, model_path], args.output_format, args.dtype)
    model = load_model(model_path)
    if task is not None:
        check_task(model, task)

    options = dict(direction=direction, tile_size=tile, tile_memory_mib=_tile_memory(args), device=args.device,
                   dtype=args.dtype, precision=args.precision, output_format=args.output_format, series=args.series,
                   strict=args.strict)
    adapt = getattr(args, "adapt", None) is not None
    if args.progress == "jsonl":
        reporter = JsonLinesReporter()
        if adapt:
            model = _adapted(args, model, reporter)
        written = translate_file(model, args.input, args.output, progress=reporter, log=reporter.message,
                                 warn=lambda text: reporter.message(text, level="warning"), **options)
        reporter.done(written)
        return 0

    if adapt:
        model = _adapted(args, model)
    with progress_bar("translate", unit="tile", enabled=not args.quiet) as bar:
        def log(message: str) -> None:
            if not args.quiet:
                bar.write(f"revgan: {message}")

        def warn(message: str) -> None:
            bar.write(f"revgan: warning: {message}")

        written = translate_file(model, args.input, args.output, progress=bar, log=log, warn=warn, **options)
    if not args.quiet:
        print(f"wrote {written}")
    return 0


def _run_translate(args: argparse.Namespace) -> int:
    with _air_check(args):
        return _run_translation(args, args.model, None, args.direction)


def _run_super_resolve(args: argparse.Namespace) -> int:
    if args.adapt is not None:  # before any work: the run would last that long
        from .scan_adaptation import check_adapt_seconds

        check_adapt_seconds(args.adapt, "--adapt")
    model = args.model
    if model is None:
        from .registry import default_model

        model = str(default_model("super_resolution").path)
    with _air_check(args):
        return _run_translation(args, model, "super_resolution", "forward")


# --------------------------------------------------------------------------- batch

#: ``revgan batch --task`` values and the model task each stands for.
BATCH_TASKS = {"super-resolution": "super_resolution", "kernel": "kernel"}


def _setup_batch(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="translate many scans (files, DICOM trees, manifests) with a resumable ledger",
        description="Translate every scan of the inputs into OUT with one model. Writes OUT/ledger-K-of-N.jsonl "
                    "(one JSON line per finished scan); --resume skips scans it records as done; a bad scan is "
                    "recorded as failed and skipped. Exit status 1 if any scan failed. See docs/batch.md.")
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="volume files, DICOM folders, folder trees (one output per file or series) or "
                            "dataset manifests")
    which = batch.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", choices=sorted(BATCH_TASKS), help="use the shipped default model of this task")
    which.add_argument("--model", help="model file (.safetensors) or shipped model name")
    batch.add_argument("--direction", default="forward", choices=["forward", "inverse"],
                       help="forward: the model's domain x -> y; inverse: y -> x (not for super-resolution)")
    batch.add_argument("--out", required=True, metavar="DIR", help="output folder (outputs and ledgers)")
    batch.add_argument("--format", dest="batch_format", default="nifti", choices=["nifti", "nrrd", "dicom"],
                       help="nifti (.nii.gz, default), nrrd, or dicom (a derived series folder per scan)")
    batch.add_argument("--dtype", default="int16", choices=["int16", "float32"],
                       help="output voxel type of volume files (int16: whole HU)")
    batch.add_argument("--shard", default="1/1", metavar="K/N",
                       help="take the K-th of N deterministic shares of the scans (SLURM arrays, torchrun ranks)")
    batch.add_argument("--jobs", type=int, default=1, metavar="J",
                       help="scans translated in parallel worker processes (default 1)")
    batch.add_argument("--resume", action="store_true",
                       help="continue: skip scans a ledger in DIR records as done with their output intact")
    batch.add_argument("--strict", action="store_true",
                       help="fail a DICOM series whose kernel looks like the model's target domain")
    batch.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _add_translation_options(batch)
    batch.set_defaults(handler=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, run_batch
    from .batch_plan import parse_shard
    from .progress import JsonLinesReporter, progress_bar

    _apply_threads(args)
    shard = parse_shard(args.shard)
    task = BATCH_TASKS.get(args.task) if args.task else None
    model = args.model
    if task is not None:
        from .registry import default_model

        model = str(default_model(task).path)
    if task == "super_resolution" and args.direction != "forward":
        raise RevGANError("--task super-resolution translates forward only; use --model for another direction")
    options = BatchOptions(direction=args.direction, output_format=args.batch_format, dtype=args.dtype,
                           device=args.device, tile_size=_tile_argument(args.tile), precision=args.precision,
                           strict=args.strict, tile_memory_mib=_tile_memory(args), air_check=not args.no_air_check)
    run = dict(model=model, inputs=args.inputs, out_dir=args.out, options=options, task=task, shard=shard,
               jobs=args.jobs, resume=args.resume, threads=args.threads)
    if args.progress == "jsonl":
        reporter = JsonLinesReporter()

        def progress(done: int, total: int, postfix: str = "") -> None:
            reporter.emit("progress", done=int(done), total=int(total), rate=postfix)

        summary = run_batch(**run, progress=progress, log=reporter.message,
                            on_record=lambda record: reporter.emit("scan", **record))
        reporter.emit("summary", **summary.as_dict())
        return 1 if summary.failed else 0

    with progress_bar("batch", unit="scan", enabled=not args.quiet) as bar:
        def log(message: str) -> None:
            if not args.quiet:
                bar.write(f"revgan: {message}")

        def report_failure(record: dict) -> None:
            for text in record["warnings"]:
                bar.write(f"revgan: warning: {record['job']}: {text}")
            if record["status"] != "ok":
                bar.write(f"revgan: failed: {record['job']}: {record['error']}")

        summary = run_batch(**run, progress=bar, log=log, on_record=report_failure)
    if args.json:
        _print_json(summary.as_dict())
    else:
        failed = (f", {summary.failed} FAILED (their errors are in the ledger)" if summary.failed else "")
        torn = (f"; {summary.unreadable_ledger_lines} torn ledger line(s) ignored"
                if summary.unreadable_ledger_lines else "")
        print(f"batch: {summary.done} done, {summary.skipped} skipped as already done{failed} of "
              f"{summary.total} scan(s) in {summary.seconds:.1f} s; ledger {summary.ledger}{torn}")
    return 1 if summary.failed else 0


def _setup_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="metrics (MAE, PSNR, SSIM) of a model on a dataset manifest")
    evaluate.add_argument("--model", required=True, help="model file (.safetensors) or shipped model name")
    evaluate.add_argument("--data", required=True, metavar="DIR_OR_MANIFEST",
                          help="dataset folder holding manifest.json, or the manifest file")
    evaluate.add_argument("--direction", default="forward", choices=["forward", "inverse"])
    evaluate.add_argument("--cases", nargs="+", default=None, metavar="ID", help="only these case ids")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _add_translation_options(evaluate)
    evaluate.set_defaults(handler=_run_evaluate)


def _json_safe(value):
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model, format_evaluation
    from .modelfile import load_model

    _apply_threads(args)
    model = load_model(args.model)
    quiet = args.quiet or args.json

    def progress(index: int, total: int, case_id: str) -> None:
        if not quiet and index < total:
            print(f"evaluate: case {index + 1}/{total} ({case_id})", file=sys.stderr)

    with _air_check(args):
        result = evaluate_model(model, args.data, direction=args.direction, tile_size=_tile_argument(args.tile),
                                device=args.device, cases=args.cases, progress=progress, precision=args.precision)
    return _print_result(args, result, format_evaluation, json_safe=True)


def _setup_models(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser(
        "models", help="list, add, show and remove models (shipped ones and those you added)",
        description="Models you add are copied into your model folder (REVGAN_USER_MODELS_DIR, default: the "
                    "user's data folder) with their SHA-256, which is checked on every use. Without a "
                    "subcommand: list.")
    models.add_argument("--json", action="store_true", help="print one JSON object")
    models.set_defaults(handler=_run_models_list)
    actions = models.add_subparsers(dest="models_action", metavar="ACTION")
    listing = actions.add_parser("list", help="shipped and user models")
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    listing.set_defaults(handler=_run_models_list)
    add = actions.add_parser("add", help="validate a .safetensors model file and copy it into your model folder")
    add.add_argument("file", metavar="FILE", help="model file (.safetensors); a FILE-stem .md card beside it is copied")
    add.add_argument("--name", default=None, help="name to use it by (default: the file name without .safetensors)")
    add.add_argument("--replace", action="store_true", help="replace a user model of the same name")
    add.set_defaults(handler=_run_models_add)
    show = actions.add_parser("show", help="the card of a model: metadata, file, checksum")
    show.add_argument("name", metavar="NAME_OR_FILE")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    show.set_defaults(handler=_run_models_show)
    remove = actions.add_parser("remove", help="remove a model you added (never a shipped one)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=_run_models_remove)


def _model_row(entry) -> dict:
    return {"name": entry.name, "origin": entry.origin, "task": entry.task, "description": entry.description,
            "file": str(entry.path), "card": str(entry.card) if entry.card else None, "default": entry.default,
            "available": entry.available, "sha256": entry.sha256}


def _run_models_list(args: argparse.Namespace) -> int:
    from .model_store import store_dir
    from .registry import MODELS_DIR_ENV, all_models, models_dir, models_dir_candidates

    folder = models_dir()
    entries = all_models()
    if args.json:
        _print_json({"models_dir": str(folder) if folder else None, "user_models_dir": str(store_dir()),
                     "models": [_model_row(e) for e in entries]})
        return 0
    shipped = [entry for entry in entries if entry.origin == "shipped"]
    users = [entry for entry in entries if entry.origin == "user"]
    if not shipped:
        searched = ", ".join(str(path) for path in models_dir_candidates())
        print(f"no models are shipped (searched {searched}; set {MODELS_DIR_ENV} to use another folder)")
    else:
        print(f"models in {folder}:")
    # Columns as wide as the longest name and task, so every description starts in one column.
    name_width = max((len(printable(entry.name)) for entry in entries), default=0)
    task_width = max((len(printable(entry.task)) for entry in entries), default=0)

    def row(entry, flag: str) -> str:
        missing = "" if entry.available else "  [file missing]"
        return (f"  {printable(entry.name):<{name_width}}  {printable(entry.task):<{task_width}}  {flag:<9}  "
                + printable(f"{entry.description}{missing}"))

    for entry in shipped:
        print(row(entry, "(default)" if entry.default else ""))
    if users:
        print(f"user models in {store_dir()}:")
        for entry in users:
            print(row(entry, ""))
    return 0


def _run_models_add(args: argparse.Namespace) -> int:
    from .model_store import add_model

    entry = add_model(args.file, name=args.name, replace=args.replace)
    print(printable(f"added {entry.name} ({entry.task}) as {entry.path}; sha256 {entry.sha256}"))
    return 0


def _run_models_show(args: argparse.Namespace) -> int:
    from .model_store import file_sha256
    from .modelmetadata import read_metadata
    from .registry import all_models, get_model_path

    path = get_model_path(args.name)  # a user model's checksum is verified here
    entry = next((e for e in all_models() if e.name == args.name), None)
    metadata = read_metadata(path)
    card = {"name": args.name if entry else path.stem, "origin": entry.origin if entry else "file",
            "file": str(path), "sha256": file_sha256(path), "card": str(entry.card) if entry and entry.card else None,
            "metadata": metadata.to_dict()}
    if getattr(args, "json", False):
        _print_json(card)
        return 0
    lines = [f"{card['name']} ({card['origin']})", f"  file:        {path}", f"  sha256:      {card['sha256']}",
             f"  task:        {metadata.task}", f"  domains:     x = {metadata.domains['x']}, y = {metadata.domains['y']}"]
    if metadata.scale_factors_xyz:
        lines.append(f"  scale (xyz): {' '.join(str(f) for f in metadata.scale_factors_xyz)}")
    lines.append(f"  HU window:   {metadata.hu_window[0]:g} .. {metadata.hu_window[1]:g}")
    for label, text in (("description", metadata.description), ("caveats", metadata.caveats),
                        ("card", card["card"])):
        if text:
            lines.append(f"  {label + ':':<12} {text}")
    for line in lines:
        print(printable(line))
    return 0


def _run_models_remove(args: argparse.Namespace) -> int:
    from .model_store import remove_model

    entry = remove_model(args.name)
    print(printable(f"removed user model {entry.name} ({entry.path})"))
    return 0


def _setup_bench_tiling(kinds: argparse._SubParsersAction) -> None:
    from .bench.tiling import DEFAULT_SHAPE, DEFAULT_TILES

    tiling = kinds.add_parser(
        "tiling", help="tiled vs whole-volume inference (and MONAI's sliding window): exactness, time, memory")
    tiling.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=list(DEFAULT_SHAPE),
                        help=f"volume size (default {' '.join(map(str, DEFAULT_SHAPE))})")
    tiling.add_argument("--tiles", type=int, nargs="+", default=list(DEFAULT_TILES),
                        help="window edges to test besides the default plan")
    tiling.add_argument("--ngf", type=int, default=16, help="generator base channels")
    tiling.add_argument("--depth", type=int, default=2, help="reversible core depth")
    tiling.add_argument("--repeats", type=int, default=2, help="runs per method; the fastest is reported")
    tiling.add_argument("--no-monai", action="store_true", help="skip MONAI even when installed")
    tiling.add_argument("--json", action="store_true", help="print one JSON object")
    tiling.set_defaults(handler=_run_bench_tiling)


def _run_bench_tiling(args: argparse.Namespace) -> int:
    from .bench.tiling import format_tiling_table, run_tiling_benchmark

    def progress(index: int, total: int, what: str) -> None:
        if not args.json:
            print(f"bench tiling: {index + 1}/{total} {what}", file=sys.stderr)

    result = run_tiling_benchmark(shape=args.shape, tiles=args.tiles, ngf=args.ngf, depth=args.depth,
                                  use_monai=not args.no_monai, repeats=args.repeats, progress=progress)
    if args.json:
        _print_json(_json_safe(result["json"]))
    else:
        print(format_tiling_table(result))
    return 0


def _setup_bench_inference(kinds: argparse._SubParsersAction) -> None:
    inference = kinds.add_parser(
        "inference", help="FLOP per voxel, Mvoxel/s, GFLOP/s and peak of the default models; full-size times")
    inference.add_argument("--quick", action="store_true",
                           help="time a volume of a quarter of each axis and extrapolate the full-size seconds "
                                "(labelled extrapolated_from in the JSON); the default times the full sizes")
    inference.add_argument("--size-scale", type=float, default=None, metavar="F",
                           help="like --quick with another scale of each axis, 0 < F <= 1")
    inference.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    inference.add_argument("--task", choices=sorted(BATCH_TASKS), default=None,
                           help="only the default model of this task")
    inference.add_argument("--model", action="append", default=None, metavar="M",
                           help="time this model (file or shipped name) instead of the defaults; repeatable")
    inference.add_argument("--json", action="store_true", help="print one JSON object")
    inference.set_defaults(handler=_run_bench_inference)


def _run_bench_inference(args: argparse.Namespace) -> int:
    from .bench.inference import QUICK_SIZE_SCALE, format_inference_table, run_inference_benchmark

    scale = args.size_scale if args.size_scale is not None else (QUICK_SIZE_SCALE if args.quick else 1.0)
    result = run_inference_benchmark(size_scale=scale, device=args.device,
                                     progress=lambda text: print(f"bench inference: {text}", file=sys.stderr),
                                     task=BATCH_TASKS.get(args.task) if args.task else None, models=args.model)
    return _print_result(args, result, format_inference_table)


# --------------------------------------------------------------------------- train


def _setup_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train a paired or unpaired 3D RevGAN from a configuration file",
        description="Train a 3D RevGAN. CONFIG is a TOML, YAML or JSON file mapping onto "
                    "RevGANCore.config.TrainConfig; --set overrides single settings. SIGINT/SIGTERM "
                    "save a checkpoint and stop; --resume continues from the newest checkpoint. "
                    "Multi-process: torchrun --nproc_per_node=N -m RevGANCore train CONFIG.")
    train.add_argument("config", help="configuration file (.toml, .yaml, .json)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set optim.iterations=500 --set data.batch_size=2")
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration as JSON and exit")
    train.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import Trainer

    config = load_config(args.config, args.overrides)
    if args.print_config:
        _print_json(config.to_dict())
        return 0
    summary = Trainer(config).fit(resume=args.resume)
    if summary["status"] != "finished":
        return EXIT_INTERRUPTED
    first, last = summary["first_validation"], summary["last_validation"]
    if first and last and summary["rank"] == 0:
        resumed = summary["start_step"]
        this_run = f" ({summary['step'] - resumed} since step {resumed})" if resumed else ""
        print(f"finished {summary['step']} iterations{this_run} in {summary['seconds']:.0f} s; validation L1 "
              f"{first['val_l1']:.4f} -> {last['val_l1']:.4f}, PSNR {first['val_psnr']:.2f} -> "
              f"{last['val_psnr']:.2f} dB; model: {summary['latest_model']}")
    return 0


# --------------------------------------------------------------------------- demo


def _setup_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="super-resolve and kernel-convert a held-out phantom with the shipped models")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--case", type=int, default=0, help="which held-out test phantom (default 0)")
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, device=args.device, case_index=args.case)
    return 0


# --------------------------------------------------------------------------- parser

_SETUPS: List[Callable[[argparse._SubParsersAction], None]] = [
    _setup_bench,
    _setup_phantom,
    _setup_fit_kernel_filter,
    _setup_dataset,
    _setup_translate,
    _setup_evaluate,
    _setup_batch,
    _setup_models,
    _setup_train,
    _setup_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revgan",
        description="Memory-efficient 3D reversible GANs for CT super-resolution and "
                    "reconstruction-kernel conversion.")
    parser.add_argument("--version", action="version", version=f"revgan {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for setup in _SETUPS:
        setup(commands)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP, a closed terminal) unwinds like Ctrl-C, so that every ``finally``
    runs: scratch and staging files are removed and nothing half-written is published."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals only work there
        yield
        return
    numbers = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {number: signal.signal(number, _raise_terminated) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _chosen_command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` chose, e.g. ``revgan bench quality``'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None))
            if chosen is not None:
                return _chosen_command_parser(chosen, args)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's own usage, not revgan's list of commands
        _chosen_command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from .output import recording_published

    published: List[Path] = []
    try:
        with _terminate_as_interrupt(), recording_published() as published:
            return int(handler(args) or 0)
    except RevGANError as error:
        print(f"revgan: error: {printable(error)}", file=sys.stderr)  # one line, whatever a file holds
        if getattr(args, "progress", None) == "jsonl":
            from .progress import JsonLinesReporter

            JsonLinesReporter().error(printable(error))
        return EXIT_USER_ERROR
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"revgan: interrupted ({signal.Signals(signum).name}){_complete_before(published)}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + int(signum)
    except BrokenPipeError:
        # The reader left (`revgan models list | head -1`, a parent that stopped reading): stop
        # quietly with the status of a program ended by SIGPIPE. Outputs are published
        # atomically, so nothing half-written remains.
        _discard_standard_output()
        return EXIT_SIGNAL_BASE + int(getattr(signal, "SIGPIPE", 13))


def _complete_before(published: List[Path]) -> str:
    """What an interrupted command had already written completely (outputs are published
    whole or not at all), so a signal that lands just after the last one says so."""
    if not published:
        return ""
    names = [printable(str(path)) for path in published[-3:]]
    more = f" (and {len(published) - 3} earlier)" if len(published) > 3 else ""
    return f"; written completely before it: {', '.join(names)}{more}"


def _discard_standard_output() -> None:
    """Point standard output at the null device, so the interpreter's last flush of what
    is still buffered for the closed pipe raises nothing."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)  # standard output's descriptor now holds the null device
    except (OSError, ValueError, AttributeError):  # no real file descriptor (an embedding host)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
