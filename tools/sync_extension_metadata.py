#!/usr/bin/env python3
"""Write the extension metadata derived from RevGANSlicer.json, the one source of truth.

    python tools/sync_extension_metadata.py            # rewrite the derived files
    python tools/sync_extension_metadata.py --check    # exit 1 naming each stale file

RevGANSlicer.json is the ExtensionsIndex entry (current Slicer reads only it). Its
``scm_url`` (without ``.git``) is the project's home URL; its category, revision and build
dependencies are the extension's. From it this tool writes:

- the EXTENSION_* URL, category and dependency lines of the top-level CMakeLists.txt;
- RevGANSlicer.s4ext, the legacy description (whole file: JSON fields plus the CMake
  description and contributors);
- the documentation link in the Slicer module's help text;
- the home URL in pyproject.toml and CITATION.cff.

The screenshot is a mock made from a phantom (tools/make_slicer_screenshot.py), so no
catalog file names it (docs/slicer.md says why).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict

ROOT = Path(__file__).resolve().parents[1]
CATALOG_ENTRY = "RevGANSlicer.json"
S4EXT = "RevGANSlicer.s4ext"
TOP_CMAKE = "CMakeLists.txt"
MODULE_FILE = "RevGANSlicer/RevGANSlicer.py"
PYPROJECT = "pyproject.toml"
CITATION = "CITATION.cff"
ICON = "Resources/Icons/RevGANSlicer.png"
DOCUMENTATION = "docs/slicer.md"


def home_url(entry: dict) -> str:
    """The project's home: the catalog entry's repository URL without ``.git``."""
    url = entry["scm_url"].rstrip("/")
    return url[:-len(".git")] if url.endswith(".git") else url


def derived_urls(entry: dict) -> Dict[str, str]:
    home = home_url(entry)
    revision = entry.get("scm_revision", "main")
    owner_and_name = home.split("github.com/", 1)[1]
    return {"home": home,
            "homepage": f"{home}/blob/{revision}/{DOCUMENTATION}",
            "icon": f"https://raw.githubusercontent.com/{owner_and_name}/{revision}/{ICON}"}


def _set_cmake(text: str, name: str, value: str) -> str:
    pattern = re.compile(r'^set\(' + name + r' "[^"]*"\)', re.MULTILINE)
    if not pattern.search(text):
        raise SystemExit(f"{TOP_CMAKE}: no set({name} \"...\") line to update")
    return pattern.sub(lambda _: f'set({name} "{value}")', text, count=1)


def cmake_value(text: str, name: str) -> str:
    match = re.search(r'^set\(' + name + r' "([^"]*)"\)', text, re.MULTILINE)
    if not match:
        raise SystemExit(f"{TOP_CMAKE}: no set({name} \"...\") line")
    return match.group(1)


def render_cmake(text: str, entry: dict) -> str:
    urls = derived_urls(entry)
    text = _set_cmake(text, "EXTENSION_HOMEPAGE", urls["homepage"])
    text = _set_cmake(text, "EXTENSION_CATEGORY", entry["category"])
    text = _set_cmake(text, "EXTENSION_ICONURL", urls["icon"])
    text = _set_cmake(text, "EXTENSION_SCREENSHOTURLS", "")
    return _set_cmake(text, "EXTENSION_DEPENDS", " ".join(entry.get("build_dependencies", [])) or "NA")


def render_s4ext(cmake_text: str, entry: dict) -> str:
    urls = derived_urls(entry)
    fields = [
        ("scm", entry.get("scm_type", "git")),
        ("scmurl", entry["scm_url"]),
        ("scmrevision", entry.get("scm_revision", "main")),
        ("depends", " ".join(entry.get("build_dependencies", [])) or "NA"),
        ("build_subdirectory", entry.get("build_subdirectory", ".")),
        ("homepage", urls["homepage"]),
        ("contributors", cmake_value(cmake_text, "EXTENSION_CONTRIBUTORS")),
        ("category", entry["category"]),
        ("iconurl", urls["icon"]),
        ("status", "Beta"),
        ("description", cmake_value(cmake_text, "EXTENSION_DESCRIPTION")),
        ("enabled", "1" if entry.get("enabled", True) else "0"),
        ("tier", str(entry.get("tier", 1))),
    ]
    header = ("#\n# RevGANSlicer: extension description in the legacy .s4ext format, for older tooling.\n"
              f"# Generated from {CATALOG_ENTRY} (the source of truth) and {TOP_CMAKE} by\n"
              "# tools/sync_extension_metadata.py: edit those, then run the tool.\n#\n\n")
    return header + "".join(f"{key} {value}\n" for key, value in fields)


def render_help_text(text: str, entry: dict) -> str:
    link = re.compile(r'<a href="[^"]*">the documentation</a>')
    if not link.search(text):
        raise SystemExit(f"{MODULE_FILE}: no documentation link in the help text")
    return link.sub(lambda _: f'<a href="{derived_urls(entry)["homepage"]}">the documentation</a>', text)


def _replace_line(path: str, text: str, pattern: str, line: str) -> str:
    compiled = re.compile(pattern, re.MULTILINE)
    if not compiled.search(text):
        raise SystemExit(f"{path}: no line matching {pattern!r} to update")
    return compiled.sub(lambda _: line, text, count=1)


def render_pyproject(text: str, entry: dict) -> str:
    return _replace_line(PYPROJECT, text, r"^urls = .*$", f'urls = {{ Homepage = "{home_url(entry)}" }}')


def render_citation(text: str, entry: dict) -> str:
    home = home_url(entry)
    text = _replace_line(CITATION, text, r"^repository-code: .*$", f'repository-code: "{home}"')
    return _replace_line(CITATION, text, r"^url: .*$", f'url: "{home}"')


def rendered_files(root: Path) -> Dict[str, str]:
    """Each derived file's expected content, computed from the files under ``root``."""
    entry = json.loads((root / CATALOG_ENTRY).read_text(encoding="utf-8"))
    cmake = render_cmake((root / TOP_CMAKE).read_text(encoding="utf-8"), entry)
    renderers: Dict[str, Callable[[str, dict], str]] = {
        MODULE_FILE: render_help_text, PYPROJECT: render_pyproject, CITATION: render_citation}
    files = {TOP_CMAKE: cmake, S4EXT: render_s4ext(cmake, entry)}
    for path, render in renderers.items():
        files[path] = render((root / path).read_text(encoding="utf-8"), entry)
    return files


def stale_files(root: Path) -> list:
    return [path for path, text in rendered_files(root).items()
            if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this repository)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            print(f"{path}: out of date with {CATALOG_ENTRY}; run python tools/sync_extension_metadata.py")
        return 1 if stale else 0
    for path, text in rendered_files(args.root).items():
        target = args.root / path
        if target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")  # a repository maintenance tool, not the product
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
