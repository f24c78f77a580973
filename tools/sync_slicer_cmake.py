"""Rewrite the list of RevGANCore files in RevGANSlicer/CMakeLists.txt from the files on disk.

    python tools/sync_slicer_cmake.py          # rewrite the list
    python tools/sync_slicer_cmake.py --check  # exit 1 if the list is out of date

The installed Slicer extension carries its own copy of RevGANCore (no pip step), so every
file of the package must be listed there; Testing/test_slicer_static.py fails when one is
missing and names this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE = ROOT / "RevGANSlicer" / "CMakeLists.txt"
BLOCK = re.compile(r"(set\(REVGANCORE_FILES\n)(.*?)(  \)\n# END RevGANCore files)", re.DOTALL)


def core_files(root: Path = ROOT) -> list:
    """Every file of the RevGANCore package (sources and data), as POSIX paths from the root."""
    package = root / "RevGANCore"
    files = []
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files.append(path.relative_to(root).as_posix())
    return files


def listed_files(text: str) -> list:
    match = BLOCK.search(text)
    if match is None:
        raise SystemExit(f"{CMAKE}: no 'set(REVGANCORE_FILES ...)' block between the BEGIN/END markers")
    return [line.strip() for line in match.group(2).splitlines() if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = CMAKE.read_text()
    wanted = core_files()
    if args.check:
        if listed_files(text) != wanted:
            print(f"{CMAKE.relative_to(ROOT)}: RevGANCore file list is out of date; run python tools/sync_slicer_cmake.py")
            return 1
        return 0
    body = "".join(f"  {name}\n" for name in wanted)
    CMAKE.write_text(BLOCK.sub(lambda m: m.group(1) + body + m.group(3), text))
    print(f"{CMAKE.relative_to(ROOT)}: {len(wanted)} RevGANCore files listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
