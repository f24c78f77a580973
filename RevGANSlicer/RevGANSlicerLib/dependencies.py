"""Python packages the computation needs, checked on first use and never at import.

What goes wrong most with deep-learning extensions in Slicer: a plain ``pip install torch``
picks a build for the wrong CUDA (or a multi-GB CUDA build on a machine without a GPU), a
torch built against NumPy 2 next to Slicer's NumPy 1 (or the other way round), installs
started at import time that freeze Slicer's start-up. So:

- torch is found without importing it (``importlib.util.find_spec``); it is installed only
  when a computation is about to start, after asking the user;
- the PyTorch extension (``PyTorchUtils``), when present, installs torch: it asks
  light-the-torch for the build that matches the NVIDIA driver (or a CPU build);
- otherwise Slicer's own pip helper installs ``torch>=2.1`` (a range, never a pin);
- after import, torch and numpy are checked to work together, with a clear message if not;
  where no PyTorch build can work with Slicer's NumPy (Intel macOS: PyTorch stops at 2.2,
  which needs NumPy 1; Slicer 5.10+ ships NumPy 2), nothing is installed and the message
  says what does work.

:func:`missingPackages` and :func:`checkTorchWorks` run anywhere; :func:`ensureDependencies`
needs Slicer (message boxes, pip helpers).
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from typing import Callable, Dict, List, Optional

#: Import name -> pip requirement: the packages RevGANCore imports that Slicer does not
#: ship (model files are read by RevGANCore's own safetensors reader; tqdm is optional).
#: Ranges only: inside Slicer the PyTorch extension may bring its own torch, and pinning
#: would fight it.
REQUIREMENTS: Dict[str, str] = {
    "torch": "torch>=2.1",
}
#: Packages Slicer itself ships (checked, never installed by this module).
BUNDLED = ("numpy", "SimpleITK", "pydicom")  # pydicom: DICOM output (Slicer's DICOM module uses it)
#: Packages RevGANCore imports only when present, for extras the module never uses:
#: tqdm (terminal bars), tomli/yaml (training configuration files), monai (a benchmark).
OPTIONAL = ("monai", "tomli", "tqdm", "yaml")
MINIMUM_TORCH = (2, 1)


class DependencyError(RuntimeError):
    """A needed package is missing or broken, and was not (or could not be) installed."""


def isInstalled(importName: str) -> bool:
    """Whether ``importName`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(importName) is not None
    except (ImportError, ValueError):
        return False


def missingPackages(names=None) -> List[str]:
    """Import names (of :data:`REQUIREMENTS` by default) that are not installed."""
    return [name for name in (names or REQUIREMENTS) if not isInstalled(name)]


def _versionTuple(text: str) -> tuple:
    numbers = []
    for part in text.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


#: First PyTorch release built against NumPy 2 (earlier builds need NumPy 1).
FIRST_TORCH_FOR_NUMPY2 = (2, 3)


def _isIntelMac(system: str, machine: str) -> bool:
    # An x86_64 Slicer under Rosetta on an Apple-silicon Mac reports x86_64 too: same wheels.
    return system == "Darwin" and machine.lower() in ("x86_64", "amd64", "i386")


def torchNumpyProblem(system: str, machine: str, numpyVersion: str, torchVersion: Optional[str]) -> Optional[str]:
    """Why PyTorch cannot work in this Slicer, or None. ``system`` and ``machine`` as
    ``platform.system()`` / ``platform.machine()`` name them; ``torchVersion`` None when
    torch is not installed. Pure, so each combination is testable anywhere."""
    if _versionTuple(numpyVersion)[:1] < (2,):
        return None
    tooOld = torchVersion is not None and _versionTuple(torchVersion) < FIRST_TORCH_FOR_NUMPY2
    if _isIntelMac(system, machine) and (torchVersion is None or tooOld):
        # PyTorch publishes no builds for Intel macOS after 2.2, and 2.2 needs NumPy 1:
        # installing or reinstalling torch cannot fix this Slicer.
        return (f"PyTorch cannot run in this Slicer: its NumPy is {numpyVersion}, and the newest PyTorch "
                "for Intel (x86_64) macOS, 2.2, needs NumPy 1; reinstalling PyTorch will not help. "
                "Use RevGAN in Slicer 5.8 (NumPy 1) on this Mac, or, on an Apple-silicon Mac, "
                "in a native Apple-silicon (arm64) Slicer, where newer PyTorch builds support NumPy 2.")
    if tooOld:
        return (f"PyTorch {torchVersion} was built for NumPy 1 and cannot run with this Slicer's NumPy "
                f"{numpyVersion}: update PyTorch to {'.'.join(map(str, FIRST_TORCH_FOR_NUMPY2))} or newer "
                "with the PyTorch Utils module (PyTorch extension), then restart Slicer.")
    return None


def _thisPlatformProblem(torchVersion: Optional[str]) -> Optional[str]:
    import numpy

    return torchNumpyProblem(platform.system(), platform.machine(), numpy.__version__, torchVersion)


def checkTorchWorks() -> str:
    """Import torch and check it can exchange arrays with numpy; returns a one-line
    description ("torch 2.5.1, CUDA 12.4, numpy 1.26.4"). Raises DependencyError with an
    explanation when torch is too old or was built for another NumPy major version."""
    import numpy

    try:
        import torch
    except ImportError as error:
        raise DependencyError(f"PyTorch cannot be imported: {error}") from error
    problem = _thisPlatformProblem(torch.__version__)
    if problem:
        raise DependencyError(problem)
    if _versionTuple(torch.__version__) < MINIMUM_TORCH:
        raise DependencyError(
            f"PyTorch {torch.__version__} is too old; version "
            f"{'.'.join(map(str, MINIMUM_TORCH))} or newer is needed. Update it with the PyTorch Utils "
            "module (PyTorch extension) or uninstall it so RevGANSlicer can install a current one.")
    try:
        tensor = torch.from_numpy(numpy.arange(4, dtype=numpy.float32))
        back = (tensor * 2).numpy()
        if float(back[3]) != 6.0:
            raise RuntimeError("wrong values")
    except Exception as error:  # numpy ABI mismatch shows up here
        raise DependencyError(
            f"PyTorch {torch.__version__} does not work with NumPy {numpy.__version__} ({error}). This usually "
            "means torch was built for another NumPy major version: reinstall torch with the PyTorch Utils "
            "module, then restart Slicer.") from error
    cuda = getattr(torch.version, "cuda", None)
    return f"torch {torch.__version__}, {'CUDA ' + cuda if cuda else 'CPU build'}, numpy {numpy.__version__}"


def _confirm(text: str, details: str = "") -> bool:
    import slicer

    if getattr(slicer, "app", None) is not None and slicer.app.testingEnabled():
        return True
    return bool(slicer.util.confirmOkCancelDisplay(text, "RevGANSlicer: install Python packages",
                                                   detailedText=details))


def _installTorch(askUser: bool) -> None:
    try:
        import PyTorchUtils  # the PyTorch extension
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None:
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if logic.torchInstalled():
            return
        if askUser and not _confirm(
                "RevGANSlicer needs PyTorch. The PyTorch extension will download the build that matches "
                "this computer's GPU driver (or a CPU build). This needs a network connection and can "
                "take several minutes. Install now?"):
            raise DependencyError("PyTorch is needed and its installation was cancelled")
        torch = logic.installTorch(askConfirmation=False,
                                   torchVersionRequirement=">=" + ".".join(map(str, MINIMUM_TORCH)))
        if torch is None:
            raise DependencyError("PyTorch could not be installed by the PyTorch extension")
        return
    if askUser and not _confirm(pipFallbackQuestion()):
        raise DependencyError("PyTorch is needed and its installation was cancelled; install the PyTorch "
                              "extension from the Extensions Manager, or allow the pip installation")
    _pipInstall([REQUIREMENTS["torch"]])


def pipFallbackQuestion(system: Optional[str] = None) -> str:
    """What a plain ``pip install torch`` gets on this operating system (``system`` as
    ``platform.system()`` names it), asked before doing it."""
    system = system or platform.system()
    builds = {
        "Windows": "On Windows, pip installs a CPU-only PyTorch (PyPI has no CUDA builds for Windows): "
                   "it will not use an NVIDIA GPU.",
        "Linux": "On Linux, pip downloads a large (several GB) CUDA build, whether or not this computer "
                 "has an NVIDIA GPU, and its CUDA version may not match the driver.",
        "Darwin": "On macOS, pip installs the build for Apple computers (CPU, and Apple GPUs through MPS).",
    }
    return ("RevGANSlicer needs PyTorch, and the PyTorch extension (which picks the build matching your GPU "
            "driver) is not installed. Install PyTorch with pip now? (Needs a network connection.) "
            + builds.get(system, "")
            + " Cancel to install the PyTorch extension from the Extensions Manager first.")


def _pipInstall(requirements: List[str]) -> None:
    import slicer

    try:
        import slicer.packaging as packaging  # Slicer 5.12+: progress dialog, restart advice
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_install"):
        packaging.pip_install(requirements, requester="RevGANSlicer")
    else:
        slicer.util.pip_install(" ".join(requirements))


def ensureDependencies(askUser: bool = True, log: Optional[Callable[[str], None]] = None) -> str:
    """Inside Slicer: make sure torch (and the other :data:`REQUIREMENTS`) are installed
    and working, installing them after asking; nothing is installed when they are there. Returns :func:`checkTorchWorks`'s summary.
    Raises :class:`DependencyError` when something is missing and not installed."""
    report = log or logging.info
    for name in BUNDLED:
        if not isInstalled(name):
            raise DependencyError(f"{name} is missing from this Python; it normally ships with Slicer")
    if not isInstalled("torch"):
        problem = _thisPlatformProblem(None)
        if problem:  # no download of a torch that cannot run here
            raise DependencyError(problem)
        report("RevGANSlicer: PyTorch is not installed; installing it")
        _installTorch(askUser)
        importlib.invalidate_caches()
    others = [REQUIREMENTS[name] for name in missingPackages() if name != "torch"]
    if others:
        if askUser and not _confirm("RevGANSlicer needs these Python packages: " + ", ".join(others)
                                    + ". Install them now (needs a network connection)?"):
            raise DependencyError("needed packages were not installed: " + ", ".join(others))
        report("RevGANSlicer: installing " + ", ".join(others))
        _pipInstall(others)
        importlib.invalidate_caches()
    still = missingPackages()
    if still:
        raise DependencyError("still missing after installation: " + ", ".join(still)
                              + " (a restart of Slicer may be needed)")
    summary = checkTorchWorks()
    report("RevGANSlicer: " + summary)
    return summary
