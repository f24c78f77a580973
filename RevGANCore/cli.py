"""The ``revgan`` command line: a thin caller of the library.

Each command adds its own sub-parser in a ``_setup_<command>`` function and imports the
heavy modules it needs inside its handler, so ``revgan --help`` is instant. Errors a user
can cause are :class:`RevGANError` subclasses: they are printed as one line, without a
traceback, and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, List, Optional, Sequence

from . import __version__
from .errors import RevGANError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


def _print_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False))


# --------------------------------------------------------------------------- bench


def _setup_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="memory, speed, tiling and quality benchmarks")
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


def _run_bench_memory(args: argparse.Namespace) -> int:
    from .bench.memory import format_memory_table, run_memory_benchmark

    result = run_memory_benchmark(depths=args.depths, patch=args.patch, ngf=args.ngf,
                                  device=args.device, batch=args.batch)
    if args.json:
        _print_json(result)
    else:
        print(format_memory_table(result))
    return 0


def _run_bench_speed(args: argparse.Namespace) -> int:
    from .bench.speed import format_speed_table, run_speed_benchmark

    result = run_speed_benchmark(depths=args.depths, patch=args.patch, ngf=args.ngf,
                                 repeats=args.repeats, device=args.device, batch=args.batch)
    if args.json:
        _print_json(result)
    else:
        print(format_speed_table(result))
    return 0


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
    phantom.add_argument("--overwrite", action="store_true", help="allow a non-empty OUT_DIR")
    phantom.add_argument("--json", action="store_true", help="print one JSON object")
    phantom.set_defaults(handler=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    import time

    from .phantom_dataset import PhantomRecipe, write_phantom_dataset

    recipe = PhantomRecipe()
    if args.shape is not None:
        recipe = PhantomRecipe(shape=tuple(args.shape), spacing=recipe.spacing)
    if args.spacing is not None:
        recipe = PhantomRecipe(shape=recipe.shape, spacing=tuple(args.spacing))

    def progress(index: int, total: int, case_id: str) -> None:
        if not args.json:
            print(f"phantom: case {index + 1}/{total} ({case_id})", file=sys.stderr)

    started = time.perf_counter()
    manifest = write_phantom_dataset(args.out_dir, cases=args.cases, seed=args.seed, recipe=recipe,
                                     overwrite=args.overwrite, progress=progress)
    result = {"manifest": str(manifest), "cases": args.cases, "seed": args.seed,
              "shape_zyx": list(recipe.shape), "spacing_xyz_mm": list(recipe.spacing),
              "seconds": round(time.perf_counter() - started, 2)}
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {args.cases} phantom case(s) to {args.out_dir} in {result['seconds']} s; "
              f"manifest: {manifest}")
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
        print(f"wrote {summary['series_written']} series in {summary['cases']} case(s), domains "
              f"{', '.join(summary['domains'])}{pairing}; manifest: {summary['manifest']}")
        for note in summary["skipped"]:
            print(f"skipped: {note}")
    return 0


# --------------------------------------------------------------------------- parser

_SETUPS: List[Callable[[argparse._SubParsersAction], None]] = [
    _setup_bench,
    _setup_phantom,
    _setup_dataset,
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except RevGANError as error:
        print(f"revgan: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("revgan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
