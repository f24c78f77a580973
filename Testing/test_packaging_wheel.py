"""The installed package, as a user gets it: build the wheel from a copy of the sources,
install it into a fresh virtual environment (reusing this environment's torch, numpy and
SimpleITK through a .pth file: no network, no reinstall) and run ``revgan`` from a folder
outside the source tree."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import RevGANCore

ROOT = Path(__file__).resolve().parents[1]
#: What the wheel is built from (a copy, so the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "RevGANCore", "Resources/Models")
DEPENDENCIES = ("torch", "numpy", "SimpleITK") + (("tomli",) if sys.version_info < (3, 11) else ())
MAX_WHEEL_BYTES = 10 * 2 ** 20


def _run(command, cwd, env, timeout=300):
    result = subprocess.run([str(part) for part in command], cwd=str(cwd), env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _dependency_folders():
    """The folders that hold this environment's dependencies (each package's parent)."""
    import importlib

    folders = []
    for name in DEPENDENCIES:
        folder = str(Path(importlib.import_module(name).__file__).resolve().parents[1])
        if folder not in folders:
            folders.append(folder)
    return folders


def _clean_environment(tmp_path: Path) -> dict:
    """No PYTHONPATH (it would put the source tree first) and no model folder override."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REVGAN_MODELS_DIR", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", HOME=str(tmp_path / "home"),
               PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, wheel path, environment) of the wheel installed into a fresh venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    env = _clean_environment(tmp_path)
    source = tmp_path / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist, source], tmp_path, env)
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              tmp_path, env).strip())
    (site_packages / "revgan_test_dependencies.pth").write_text("\n".join(_dependency_folders()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheels[0]],
         tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return bin_dir, wheels[0], env, elsewhere, site_packages


@pytest.mark.slow
def test_wheel_holds_the_package_its_models_and_the_licence(installed):
    import zipfile

    _, wheel, _, _, _ = installed
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"{wheel.name}: {wheel.stat().st_size} bytes"
    assert wheel.name.startswith(f"revgan_slicer-{RevGANCore.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("RevGANCore/registry.py", "RevGANCore/shipped_models/models.json",
                     "RevGANCore/shipped_models/table2/table2.json"):
        assert expected in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
               for name in names)
    registry = json.loads((ROOT / "Resources" / "Models" / "models.json").read_text())
    for entry in registry["models"].values():
        assert f"RevGANCore/shipped_models/{entry['file']}" in names
        assert f"RevGANCore/shipped_models/{entry['card']}" in names


@pytest.mark.slow
def test_installed_revgan_lists_its_models_from_the_package(installed):
    bin_dir, _, env, elsewhere, site_packages = installed
    where = _run([bin_dir / "python", "-c", "import RevGANCore; print(RevGANCore.__file__)"], elsewhere, env)
    assert Path(where.strip()).resolve().is_relative_to(site_packages.resolve())
    assert _run([bin_dir / "revgan", "--version"], elsewhere, env).strip() == f"revgan {RevGANCore.__version__}"
    listing = json.loads(_run([bin_dir / "revgan", "models", "--json"], elsewhere, env))
    assert Path(listing["models_dir"]) == site_packages / "RevGANCore" / "shipped_models"
    assert {model["task"] for model in listing["models"] if model["default"]} == {"super_resolution", "kernel"}
    assert all(model["available"] for model in listing["models"])


@pytest.mark.slow
def test_installed_revgan_runs_the_demo_outside_the_source_tree(installed):
    bin_dir, _, env, elsewhere, _ = installed
    printed = _run([bin_dir / "revgan", "demo", "--device", "cpu", "--out", "demo"], elsewhere, env, timeout=600)
    assert "RevGAN (revgan-sr-phantom-lung1)" in printed and "RevGAN (revgan-kernel-phantom-paired2r)" in printed
    for name in ("super_resolved.nii.gz", "kernel_converted.nii.gz", "super_resolution.png"):
        assert (elsewhere / "demo" / name).stat().st_size > 0, name
