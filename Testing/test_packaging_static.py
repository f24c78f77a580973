"""Static checks of what a package and an extension catalog need: the licence, the
citation, one version string, one home URL (RevGANSlicer.json's scm_url) from which every
extension file is derived, and no placeholders."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import RevGANCore

ROOT = Path(__file__).resolve().parents[1]
SYNC_TOOL = ROOT / "tools" / "sync_extension_metadata.py"
CATALOG_ENTRY = ROOT / "RevGANSlicer.json"
#: Files derived from RevGANSlicer.json by tools/sync_extension_metadata.py.
DERIVED = ("CMakeLists.txt", "RevGANSlicer.s4ext", "RevGANSlicer/RevGANSlicer.py", "pyproject.toml", "CITATION.cff")
PLACEHOLDERS = re.compile(r"\bOWNER\b|\bTODO\b|\bFIXME\b|\bXXX\b|example\.(com|org)|your[-_]?(name|account|org)",
                          re.IGNORECASE)
APACHE_SECTIONS = ("Definitions", "Grant of Copyright License", "Grant of Patent License", "Redistribution",
                   "Submission of Contributions", "Trademarks", "Disclaimer of Warranty", "Limitation of Liability",
                   "Accepting Warranty or Additional Liability")


def _home() -> str:
    return json.loads(CATALOG_ENTRY.read_text())["scm_url"].removesuffix(".git")


def _s4ext(path: Path) -> dict:
    fields = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
    return fields


def test_licence_is_the_full_apache_2_text_declared_in_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    positions = [text.find(f"{number}. {title}.") for number, title in enumerate(APACHE_SECTIONS, start=1)]
    assert -1 not in positions and positions == sorted(positions), "the nine sections, in order"
    assert "END OF TERMS AND CONDITIONS" in text and "http://www.apache.org/licenses/LICENSE-2.0" in text
    assert re.search(r'^license = \{ text = "Apache-2\.0" \}$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert re.search(r"^license: Apache-2\.0$", (ROOT / "CITATION.cff").read_text(), re.MULTILINE)


def _top_level_blocks(text: str) -> dict:
    """A tiny reader for the CFF file's top-level keys (PyYAML is not a dependency): each
    key with the text of its value, indented lines included."""
    blocks, key = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([a-z-]+):(.*)$", line)
        if match:
            key = match.group(1)
            assert key not in blocks, f"CITATION.cff: {key} twice"
            blocks[key] = match.group(2).strip()
        else:
            assert key is not None and line.startswith("  "), f"CITATION.cff: unexpected line {line!r}"
            blocks[key] += "\n" + line
    return blocks


def test_citation_file_is_cff_1_2_and_names_both_seed_papers():
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert "\t" not in text, "YAML does not allow tabs"
    blocks = _top_level_blocks(text)
    for key in ("cff-version", "message", "title", "authors", "type", "repository-code", "preferred-citation",
                "references"):
        assert blocks.get(key), f"CITATION.cff lacks {key}"
    assert blocks["cff-version"] == "1.2.0" and blocks["type"] == "software"
    assert "version" not in blocks, "the one version string is RevGANCore.__version__"
    midl, cvpr = blocks["preferred-citation"], blocks["references"]
    assert "Chest CT super-resolution and domain-adaptation using memory-efficient 3D reversible GANs" in midl
    assert "Medical Imaging with Deep Learning" in midl and "London" in midl and "year: 2019" in midl
    assert "Reversible GANs for memory-efficient image-to-image translation" in cvpr
    assert "Computer Vision and Pattern Recognition" in cvpr and "year: 2019" in cvpr
    for block, families in ((midl, ("Ouderaa", "Worrall", "Ginneken")), (cvpr, ("Ouderaa", "Worrall"))):
        assert re.findall(r'family-names: "([^"]+)"', block) == list(families)


def _project_files():
    """The project's own files: what git tracks (not a virtual environment or build output
    inside the checkout), or every file outside hidden folders where there is no git."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=str(ROOT), capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        return sorted(ROOT / name for name in listed.stdout.decode().split("\0") if name)
    return sorted(p for p in ROOT.glob("**/*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def test_one_version_string():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.MULTILINE), "pyproject must take the version from the package"
    assert re.search(r'^dynamic = \[[^\]]*"version"', project, re.MULTILINE)
    assert re.search(r'^version = \{ attr = "RevGANCore\.__version__" \}$', pyproject, re.MULTILINE)
    assigned = []
    for path in _project_files():
        if path.suffix in (".py", ".toml", ".cff", ".json", ".s4ext", ".txt", ".cfg"):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if re.match(r"^\s*(__version__|version)\s*[=:]\s*['\"]?\d+\.\d+", line):
                    assigned.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert assigned == [f"RevGANCore/__init__.py: __version__ = \"{RevGANCore.__version__}\""]


def test_no_placeholders_in_catalog_cmake_packaging_or_help_text():
    module_cmake = ROOT / "RevGANSlicer" / "CMakeLists.txt"
    for path in [ROOT / name for name in DERIVED] + [CATALOG_ENTRY, module_cmake]:
        found = PLACEHOLDERS.search(path.read_text())
        assert not found, f"{path.relative_to(ROOT)}: placeholder {found.group(0)!r}"


def test_every_extension_file_uses_the_home_url_of_the_catalog_entry():
    """The catalog entry's scm_url is the one home: the derived files carry it, and the
    legacy .s4ext agrees with the JSON entry field by field."""
    home = _home()
    assert re.match(r"^https://github\.com/[\w.-]+/[\w.-]+$", home)
    result = subprocess.run([sys.executable, str(SYNC_TOOL), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    entry = json.loads(CATALOG_ENTRY.read_text())
    fields = _s4ext(ROOT / "RevGANSlicer.s4ext")
    assert fields["scmurl"] == entry["scm_url"] and fields["scmrevision"] == entry["scm_revision"]
    assert fields["category"] == entry["category"] and fields["tier"] == str(entry["tier"])
    assert fields["depends"].split() == entry["build_dependencies"]
    assert fields["build_subdirectory"] == entry["build_subdirectory"]
    assert fields["homepage"].startswith(home + "/")
    assert fields["iconurl"].startswith("https://raw.githubusercontent.com/" + home.split("github.com/")[1] + "/")
    for name in DERIVED:
        assert home in (ROOT / name).read_text(), f"{name} does not name the home {home}"


def test_changing_the_catalog_entry_updates_every_derived_file(tmp_path):
    new_home = "https://github.com/another-account/SlicerRevGAN"
    for name in DERIVED + (CATALOG_ENTRY.name,):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    entry = json.loads(CATALOG_ENTRY.read_text())
    entry["scm_url"] = new_home + ".git"
    (tmp_path / CATALOG_ENTRY.name).write_text(json.dumps(entry, indent=2) + "\n")
    tool = [sys.executable, str(SYNC_TOOL), "--root", str(tmp_path)]
    stale = subprocess.run(tool + ["--check"], capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and all(name in stale.stdout for name in DERIVED), stale.stdout
    subprocess.run(tool, check=True, capture_output=True, timeout=60)
    assert subprocess.run(tool + ["--check"], capture_output=True, timeout=60).returncode == 0
    old_home = _home()
    for name in DERIVED:
        text = (tmp_path / name).read_text()
        assert new_home in text and old_home not in text, name
    assert _s4ext(tmp_path / "RevGANSlicer.s4ext")["scmurl"] == new_home + ".git"


def test_design_citations_point_at_the_design_page_in_the_repository():
    design = (ROOT / "docs" / "design.md").read_text()
    decisions = set(re.findall(r"^(\d+)\. \*\*", design, re.MULTILINE))
    cited = []
    for path in sorted(ROOT.glob("**/*")):
        if path.suffix in (".py", ".md") and ".git" not in path.parts and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not re.search(r"\bDESIGN\.md", text), \
                f"{path.relative_to(ROOT)} cites a design file that is not in the repository"
            for first, last in re.findall(r"docs/design\.md, decisions? (\d+)(?:-(\d+))?", text):
                cited += [str(n) for n in range(int(first), int(last or first) + 1)]
    assert cited and set(cited) <= decisions, f"cited decisions {sorted(set(cited) - decisions)} do not exist"
