"""Synthetic training/benchmark datasets: chest phantoms imaged four ways per case.

Per case, from one noise-free phantom:
- ``hr``: the high-resolution reference, a smooth-kernel (B30f-like) reconstruction with
  thin slices (slice FWHM = z spacing) and modest noise (10 HU). It stands for the
  standard-dose thin-slice scans super-resolution is trained towards: a realistic image
  (blur and noise of a real reconstruction) rather than the infinitely sharp object.
- ``lr``: ``hr`` through the low-resolution operator (factors (2, 2, 4): slice FWHM =
  4 x z spacing, in-plane FWHM = 2 x pixel), so LR and HR are an exactly paired
  thick/thin reconstruction of the same acquisition, as reformatted thick slices are.
- ``sharp`` and ``smooth``: B50f-like and B30f-like reconstructions of a separate,
  low-dose acquisition (smooth-image noise 20 HU), sharing one noise realisation as
  real kernel pairs (NLST style) do.
The same seed always produces byte-identical files.

Two worlds (``PhantomRecipe.world``): "linear" (the default, above: every image is an FBP-like
linear reconstruction, so sharp -> smooth is exactly a filter) and "nonlinear", where the
target of each task is an iterative-reconstruction-like image
(:func:`~RevGANCore.degradations.iterative_reconstruction` of the FBP one, at that
acquisition's noise level): ``smooth`` is the iterative reconstruction of the B30f-like image,
``hr`` that of the thin-slice reconstruction, while ``sharp`` and ``lr`` (thick slices of the
FBP thin-slice image) stay FBP-like. Mapping the sources onto the targets is then not linear.

The Table-2 protocol's seeds and case lists live in :mod:`RevGANCore.phantom_splits`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from . import __version__
from .degradations import SMOOTH_KERNEL, IterativeReconstruction, KernelPair, LowResolution, Reconstruction
from .errors import ConfigError
from .manifest import new_manifest, relative_path, write_manifest
from .output_folder import FolderToFill
from .phantom import DEFAULT_SHAPE, DEFAULT_SPACING, generate_chest_phantom, phantom_scale
from .volume import Volume
from .volume_io import write_volume

PHANTOM_DOMAINS = ("hr", "lr", "sharp", "smooth")
SUPER_RESOLUTION_FACTORS: Tuple[int, int, int] = (2, 2, 4)
#: "linear": FBP-like reconstructions only; "nonlinear": iterative-reconstruction-like targets.
WORLDS = ("linear", "nonlinear")


@dataclass(frozen=True)
class PhantomRecipe:
    """Everything but the seed that determines a phantom dataset."""

    shape: Tuple[int, int, int] = DEFAULT_SHAPE
    spacing: Tuple[float, float, float] = DEFAULT_SPACING
    hr_noise_std_hu: float = 10.0
    kernel_noise_std_hu: float = 20.0
    factors_xyz: Tuple[int, int, int] = SUPER_RESOLUTION_FACTORS
    world: str = "linear"

    def check(self) -> None:
        if self.world not in WORLDS:
            raise ConfigError(f"phantom world must be one of {', '.join(WORLDS)}, got {self.world!r}")
        shape = tuple(int(n) for n in self.shape)
        factors = self.factors_xyz
        if len(shape) != 3 or any(n % f for n, f in zip(shape, factors[::-1])):
            raise ConfigError(f"phantom shape (z, y, x) {tuple(self.shape)} must be divisible by the "
                              f"low-resolution factors (z, y, x) {tuple(factors[::-1])}")


def case_seeds(seed: int, index: int) -> Dict[str, int]:
    """Independent seeds for one case's anatomy and its two acquisitions."""
    state = np.random.SeedSequence([int(seed), int(index), 0x63617365]).generate_state(3)
    return {"anatomy": int(state[0] >> 1), "hr_noise": int(state[1] >> 1), "kernel_noise": int(state[2] >> 1)}


def make_phantom_case(seeds: Dict[str, int], recipe: PhantomRecipe = PhantomRecipe()) -> Dict[str, Volume]:
    """The four volumes of one case (float32 HU), keyed by domain."""
    recipe.check()
    clean = generate_chest_phantom(recipe.shape, recipe.spacing, seeds["anatomy"])
    hr = Reconstruction(SMOOTH_KERNEL, recipe.hr_noise_std_hu, seeds["hr_noise"])(clean)
    lr = LowResolution(recipe.factors_xyz)(hr)
    sharp, smooth = KernelPair(recipe.kernel_noise_std_hu, seeds["kernel_noise"])(clean)
    if recipe.world == "nonlinear":
        hr = IterativeReconstruction(recipe.hr_noise_std_hu)(hr) if recipe.hr_noise_std_hu > 0 else hr
        if recipe.kernel_noise_std_hu > 0:
            smooth = IterativeReconstruction(recipe.kernel_noise_std_hu)(smooth)
    return {"hr": hr, "lr": lr, "sharp": sharp, "smooth": smooth}


def phantom_generator_description(seed: int, recipe: PhantomRecipe) -> dict:
    spacing = recipe.spacing
    description = {
        "name": "chest_phantom",
        "seed": int(seed),
        "world": recipe.world,
        "shape_zyx": list(recipe.shape),
        "spacing_xyz_mm": list(spacing),
        "anatomy_scale": round(phantom_scale(recipe.shape, spacing), 6),
        "hr": Reconstruction(SMOOTH_KERNEL, recipe.hr_noise_std_hu).describe() | {"seed": "per case"},
        "lr": asdict(LowResolution(recipe.factors_xyz)) | {
            "slice_thickness_mm": recipe.factors_xyz[2] * spacing[2],
            "inplane_fwhm_mm": [recipe.factors_xyz[0] * spacing[0], recipe.factors_xyz[1] * spacing[1]],
            "applied_to": "hr"},
        "kernel_pair": KernelPair(recipe.kernel_noise_std_hu).describe() | {"seed": "per case"},
        "noise_model": "NPS ~ |f_inplane| * MTF(f)^2 * slice_profile(f_z)^2; one realisation per "
                       "acquisition, shared by sharp and smooth",
        "file_dtype": "int16",
    }
    if recipe.world == "nonlinear":
        description["iterative_reconstruction"] = {
            "hr": IterativeReconstruction(recipe.hr_noise_std_hu).describe(),
            "smooth": IterativeReconstruction(recipe.kernel_noise_std_hu).describe(),
            "applied_to": "the FBP-like hr and smooth images; lr is made from the FBP-like hr, sharp stays FBP-like"}
    return description


def describe_phantom_manifest(manifest_path) -> Optional[Dict[str, object]]:
    """What phantom dataset a manifest holds: ``{"cases", "seed", "shape"}``, or None when the
    file does not exist or was not written by :func:`write_phantom_dataset`."""
    path = Path(manifest_path)
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    generator = manifest.get("generator", {})
    if generator.get("name") != "chest_phantom":
        return None
    return {"cases": len(manifest.get("cases", [])), "seed": generator.get("seed"),
            "shape": tuple(generator.get("shape_zyx", ()))}


def phantom_world(manifest_path) -> Optional[str]:
    """The world ("linear" or "nonlinear") of a phantom dataset's manifest; datasets written
    before worlds existed are "linear"; None when it is not a phantom dataset."""
    if describe_phantom_manifest(manifest_path) is None:
        return None
    generator = json.loads(Path(manifest_path).read_text(encoding="utf-8")).get("generator", {})
    return str(generator.get("world", "linear"))


def write_phantom_dataset(out_dir, cases: int = 2, seed: int = 0, recipe: PhantomRecipe = PhantomRecipe(),
                          overwrite: bool = False,
                          progress: Optional[Callable[[int, int, str], None]] = None) -> Path:
    """Write ``cases`` phantom cases (hr, lr, sharp, smooth as int16 .nii.gz) and
    ``manifest.json`` into ``out_dir`` (new or empty; with ``overwrite`` it may hold files);
    returns the manifest path. A failure removes what it wrote, and the folder if it created
    it (:class:`~RevGANCore.output_folder.FolderToFill`)."""
    if int(cases) < 1:
        raise ConfigError(f"the number of cases must be at least 1, got {cases}")
    recipe.check()
    target = FolderToFill(out_dir, ("manifest.json", "case[0-9][0-9][0-9]*"), may_hold_files=overwrite,
                          not_empty_hint="(or allow writing into it: --overwrite, overwrite=True in Python)")
    with target as folder:
        return _write_phantom_cases(folder, int(cases), seed, recipe, progress)


def _write_phantom_cases(folder: Path, cases: int, seed: int, recipe: PhantomRecipe,
                         progress: Optional[Callable[[int, int, str], None]]) -> Path:
    hr_grid_note = f"{tuple(recipe.shape)} voxels (z, y, x) at {tuple(recipe.spacing)} mm (x, y, z)"
    iterative = recipe.world == "nonlinear"
    ir_note = "; iterative-reconstruction-like (edge-preserving, nonlinear)" if iterative else ""
    manifest = new_manifest(
        domains={
            "hr": {"description": "high-resolution reference: smooth (B30f-like) kernel, thin slices, "
                                  f"{recipe.hr_noise_std_hu:g} HU noise{ir_note}; {hr_grid_note}"},
            "lr": {"description": f"{'the FBP-like ' if iterative else ''}hr degraded by factors (x, y, z) {tuple(recipe.factors_xyz)}: Gaussian slice "
                                  "profile and in-plane blur, then decimation; same physical extent"},
            "sharp": {"description": "B50f-like (edge-enhancing) kernel, low-dose acquisition, noise shared "
                                     "with smooth"},
            "smooth": {"description": "B30f-like kernel of the same raw data as sharp, "
                                      f"{recipe.kernel_noise_std_hu:g} HU noise{ir_note}"},
        },
        tasks={
            "super_resolution": {"source": "lr", "target": "hr", "factors_xyz": list(recipe.factors_xyz)},
            "kernel": {"source": "sharp", "target": "smooth"},
        },
        created_by=f"RevGANCore {__version__} (revgan phantom"
                   + (", nonlinear world)" if iterative else ")"))
    manifest["generator"] = phantom_generator_description(seed, recipe)
    for index in range(cases):
        case_id = f"case{index:03d}"
        seeds = case_seeds(seed, index)
        if progress is not None:
            progress(index, cases, case_id)
        volumes = make_phantom_case(seeds, recipe)
        files = {}
        for domain in PHANTOM_DOMAINS:
            path = write_volume(volumes[domain], folder / case_id / f"{domain}.nii.gz")
            files[domain] = relative_path(path, folder)
        manifest["cases"].append({"id": case_id, "files": files, "seeds": seeds})
    return write_manifest(manifest, folder)
