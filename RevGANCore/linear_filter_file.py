"""Fitted linear kernel converters as model files: a radial gain table in cycles/mm.

For FBP kernel pairs the least-squares radial filter (:func:`RevGANCore.linear_filter.fit_radial_filter`)
is near-optimal, so it is offered as a model of its own (``revgan fit-kernel-filter``), loaded
by the same :func:`RevGANCore.modelfile.load_model` as the generators and run by the same
``revgan translate`` and Slicer module. The file is a safetensors file with two float64
tensors, ``frequency_per_mm`` (bin centres, from 0, increasing) and ``gain`` (same length),
and the usual ``"revgan"`` metadata JSON (:class:`RevGANCore.modelmetadata.ModelMetadata`)
with ``"model_type": "radial-kernel-filter"``, ``"task": "kernel"``, an empty ``generator``,
``training_spacing_xyz`` = the pixel spacing it was fitted at (for the record: the filter acts
in cycles/mm, so any pixel size works), and a ``"filter"`` object::

    {"frequency_unit": "cycles/mm", "bins": 129, "inverse_gain_floor": 0.1, "pad_mm": 16.0}

``forward`` applies the gain to every axial slice (mirror-padded by ``pad_mm``); ``inverse``
applies its reciprocal with |gain| floored at ``inverse_gain_floor`` (at most 1/floor
amplification where the forward filter all but removes a frequency). Above the last
frequency of the table the last gain is held. Everything is validated before use; a bad file
raises :class:`ModelFileError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from .errors import ConfigError, ModelFileError, VolumeError
from .linear_filter import RadialFilter
from .printable import printable

#: ``model_type`` of a radial kernel filter file (generators: "revgan-generator", the default).
FILTER_MODEL_TYPE = "radial-kernel-filter"
FREQUENCY_UNIT = "cycles/mm"
FILTER_TENSORS = ("frequency_per_mm", "gain")
MAX_BINS = 65536
DEFAULT_PAD_MM = 16.0


def check_filter_settings(settings: Any) -> Dict[str, Any]:
    """The ``filter`` metadata object, validated (:class:`ConfigError` naming the field)."""
    if not isinstance(settings, dict):
        raise ConfigError(f"filter must be a JSON object, got {type(settings).__name__}")
    unknown = sorted(set(settings) - {"frequency_unit", "bins", "inverse_gain_floor", "pad_mm"})
    if unknown:
        raise ConfigError(f"filter has unknown keys {unknown}")
    if settings.get("frequency_unit") != FREQUENCY_UNIT:
        raise ConfigError(f"filter.frequency_unit must be {FREQUENCY_UNIT!r}, got {settings.get('frequency_unit')!r}")
    bins = settings.get("bins")
    if not (isinstance(bins, int) and not isinstance(bins, bool) and 2 <= bins <= MAX_BINS):
        raise ConfigError(f"filter.bins must be an integer from 2 to {MAX_BINS}, got {bins!r}")
    for key, low, high in (("inverse_gain_floor", 1e-4, 1.0), ("pad_mm", 0.0, 1000.0)):
        value = settings.get(key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and low <= value <= high and (key == "pad_mm" or value > 0)):
            raise ConfigError(f"filter.{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return dict(settings)


def check_filter_tensors(path: Path, header: dict, settings: Dict[str, Any]) -> None:
    """The header's tensors are exactly the two float64 tables of ``settings['bins']`` values."""
    names = sorted(header)
    if names != sorted(FILTER_TENSORS):
        raise ModelFileError(f"{path}: a radial kernel filter holds the tensors {', '.join(FILTER_TENSORS)}, "
                             f"this file holds {printable(', '.join(names)) or 'none'}")
    for name in FILTER_TENSORS:
        entry = header[name]
        if entry["dtype"] != "F64" or list(entry["shape"]) != [settings["bins"]]:
            raise ModelFileError(f"{path}: tensor {name!r} must be F64 of shape [{settings['bins']}], got "
                                 f"{entry['dtype']} {list(entry['shape'])}")


@dataclass
class KernelFilterModel:
    """A loaded radial kernel filter: the same surface as a generator model where callers
    need it (``metadata``, ``name``, ``task``, ``path``, ``describe``), plus :meth:`translate`."""

    filter: RadialFilter
    metadata: Any  # ModelMetadata
    path: Optional[Path] = None
    known_as: Optional[str] = None  # as TranslationModel.known_as

    @property
    def name(self) -> str:
        return self.known_as or self.metadata.name or (self.path.name if self.path else "kernel filter")

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def settings(self) -> Dict[str, Any]:
        return self.metadata.filter

    def describe(self) -> str:
        domains = self.metadata.domains
        return printable(f"{self.name}: fitted radial kernel filter ({domains['x']} <-> {domains['y']}), "
                         f"{self.filter.gain.size} bins up to {self.filter.frequency_per_mm[-1]:.2f} cycles/mm")

    def filter_for(self, direction: str) -> RadialFilter:
        if direction == "forward":
            return self.filter
        if direction == "inverse":
            return self.filter.inverse(self.settings["inverse_gain_floor"])
        raise ConfigError(f"direction must be 'forward' or 'inverse', got {direction!r}")

    def translate(self, volume, direction: str = "forward", out: Optional[np.ndarray] = None,
                  out_dtype: str = "float32", progress: Optional[Callable[[int, int], None]] = None,
                  log: Optional[Callable[[str], None]] = None):
        """``volume`` with every axial slice filtered (see the module documentation);
        reconstruction-circle padding and metal above the CT scale are kept out and restored,
        like the generators do (:func:`field_of_view.network_view`)."""
        from .field_of_view import network_view, restore_padding
        from .volume import Volume

        if not isinstance(volume, Volume):
            raise VolumeError(f"translate needs a Volume, got {type(volume).__name__}")
        radial = self.filter_for(direction)
        source, target = self.metadata.domain_names(direction)
        if log is not None:
            log(printable(f"{self.name}: {source} -> {target} (radial filter in cycles/mm at "
                          f"{volume.spacing[0]:g} x {volume.spacing[1]:g} mm pixels)"))
        clean, padding, above = network_view(volume)
        filtered = radial.apply(clean, self.settings["pad_mm"]).array
        if out is None:
            out = np.empty(volume.shape, dtype=out_dtype)
        elif tuple(out.shape) != volume.shape:
            raise ConfigError(f"out must have the input's shape {volume.shape}, got {tuple(out.shape)}")
        if out.dtype == np.int16:
            out[...] = np.clip(np.rint(filtered), -32768, 32767)
        else:
            out[...] = filtered
        for mask in (padding, above):
            if mask is not None:
                restore_padding(out, volume.array, mask, (1, 1, 1))
        if progress is not None:
            progress(1, 1)
        return Volume(out, volume.spacing, volume.origin, volume.direction)


def save_kernel_filter(path, radial: RadialFilter, metadata) -> Path:
    """Write ``radial`` with ``metadata`` (a ModelMetadata of model_type
    :data:`FILTER_MODEL_TYPE`; its ``filter.bins`` must match the table) atomically."""
    import torch

    from .modelmetadata import METADATA_KEY
    from .tensorfile import save_safetensors

    if getattr(metadata, "model_type", None) != FILTER_MODEL_TYPE:
        raise ConfigError(f"a kernel filter file needs metadata of model_type {FILTER_MODEL_TYPE!r}")
    if metadata.filter.get("bins") != radial.gain.size:
        raise ConfigError(f"metadata filter.bins {metadata.filter.get('bins')} does not match the table's "
                          f"{radial.gain.size} bins")
    tensors = {"frequency_per_mm": torch.from_numpy(radial.frequency_per_mm.copy()),
               "gain": torch.from_numpy(radial.gain.copy())}
    return save_safetensors(Path(path), tensors, {METADATA_KEY: metadata.to_json()})


def load_kernel_filter(path: Path, header: dict, start: int, size: int, metadata,
                       known_as: Optional[str] = None) -> KernelFilterModel:
    """The :class:`KernelFilterModel` of a file whose header :func:`read_model_header` has
    already validated; ``known_as``: the name the registry lists it under."""
    from .tensorfile import read_safetensors_tensors

    tensors = read_safetensors_tensors(path, header, start, size)
    try:
        radial = RadialFilter(tensors["frequency_per_mm"].numpy(), tensors["gain"].numpy())
    except ConfigError as error:
        raise ModelFileError(f"{path}: {error}") from None
    return KernelFilterModel(radial, metadata, Path(path), known_as=known_as)


def filter_metadata(name: str, domains: Dict[str, str], radial: RadialFilter, spacing_xyz, pairs: int,
                    description: str = "", inverse_gain_floor: float = 0.1, pad_mm: float = DEFAULT_PAD_MM,
                    training: Optional[dict] = None):
    """The ModelMetadata of a radial kernel filter fitted on ``pairs`` pairs at ``spacing_xyz``."""
    from .modelmetadata import ModelMetadata

    return ModelMetadata(
        task="kernel", domains=dict(domains), name=name, model_type=FILTER_MODEL_TYPE,
        filter={"frequency_unit": FREQUENCY_UNIT, "bins": int(radial.gain.size),
                "inverse_gain_floor": float(inverse_gain_floor), "pad_mm": float(pad_mm)},
        training_spacing_xyz=tuple(float(s) for s in spacing_xyz),
        description=description or (f"linear kernel converter {domains['x']} -> {domains['y']}: a radial filter "
                                    f"in cycles/mm fitted by least squares on {pairs} paired volume(s)"),
        caveats=("A linear filter: exact for two FBP reconstructions of the same raw data, approximate for "
                 "iterative or AI reconstructions (their noise reduction depends on the image). The inverse "
                 f"direction amplifies frequencies the forward filter damps, at most {1 / inverse_gain_floor:g}x."),
        training=dict(training or {}))


def paired_volumes_from_folders(source_dir, target_dir):
    """(names, [(source, target)], input paths) of the volumes with the same file name in both folders."""
    from .volume_io import read_volume

    source_dir, target_dir = Path(source_dir), Path(target_dir)
    for folder in (source_dir, target_dir):
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder")
    names = sorted(p.name for p in source_dir.iterdir() if p.is_file() and (target_dir / p.name).is_file())
    if not names:
        raise ConfigError(f"{source_dir} and {target_dir}: no file name appears in both folders (pairs are "
                          "matched by name)")
    pairs = [(read_volume(source_dir / n), read_volume(target_dir / n)) for n in names]
    return names, pairs, [folder / n for n in names for folder in (source_dir, target_dir)]


def paired_volumes_from_manifest(manifest_path, cases=None):
    """(case ids, [(source, target)], input paths, domains) of the manifest's "kernel" task."""
    from .manifest import load_manifest, pick_cases
    from .volume_io import read_volume

    manifest = load_manifest(manifest_path)
    if "kernel" not in manifest.tasks:
        raise ConfigError(f"{manifest.path}: the dataset has no 'kernel' task (source and target kernels)")
    source, target = manifest.tasks["kernel"]["source"], manifest.tasks["kernel"]["target"]
    chosen = [c for c in pick_cases(manifest, cases) if source in c.files and target in c.files]
    if not chosen:
        raise ConfigError(f"{manifest.path}: no case has both {source!r} and {target!r} volumes")
    pairs = [(read_volume(c.files[source]), read_volume(c.files[target])) for c in chosen]
    inputs = [Path(c.files[d]) for c in chosen for d in (source, target)]
    return [c.id for c in chosen], pairs, inputs, {"x": source, "y": target}


def kernel_filter_card(model_path: Path, metadata, radial: RadialFilter, sources) -> str:
    """A model card (Markdown) for a fitted kernel filter: what it is and when to prefer it."""
    rows = " | ".join(f"{f:.2f}: {g:.3f}" for f, g in zip(*_card_samples(radial)))
    return f"""# {metadata.name}

{metadata.description}.

| | |
|---|---|
| file | `{model_path.name}` (safetensors tables + JSON metadata; model_type `{FILTER_MODEL_TYPE}`) |
| directions | `forward`: {metadata.domains['x']} -> {metadata.domains['y']}; `inverse`: the reciprocal gain, amplifying at most {1 / metadata.filter['inverse_gain_floor']:g}x |
| fitted on | {len(sources)} pair(s): {printable(', '.join(sources))[:400]} at {' x '.join(f'{s:g}' for s in metadata.training_spacing_xyz)} mm |
| units | cycles/mm: the same conversion at any pixel size |
| gain (cycles/mm: gain) | {rows} |

## When to prefer it

Two filtered-back-projection reconstructions of the same raw data differ by a linear in-plane
filter: this file is then the least-squares answer, exact up to noise, with no training, no GPU
and no risk of invented structure. Prefer a learned RevGAN model when the target is not a
linear function of the source (iterative or AI reconstructions, different doses, different
scanners), and check either on paired cases you hold out.

## Caveats

{metadata.caveats}
"""


def _card_samples(radial: RadialFilter):
    frequencies = [f for f in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0) if f <= radial.frequency_per_mm[-1]]
    return frequencies, [float(radial(f)) for f in frequencies]


def fit_kernel_filter_file(out_path, pairs, sources, domains: Dict[str, str], inputs=(), name: str = "",
                           inverse_gain_floor: float = 0.1) -> Path:
    """Fit the radial filter on ``pairs`` (source, target Volumes; ``sources`` names them,
    ``inputs`` are their files, which no output may replace), write it to ``out_path``
    (.safetensors) and its card beside it (.md); returns the model path."""
    from .linear_filter import fit_radial_filter
    from .output import refuse_overlap, write_text_atomic

    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"{out_path}: a kernel filter file ends in .safetensors")
    card_path = out_path.with_suffix(".md")
    refuse_overlap([out_path, card_path], inputs)
    radial = fit_radial_filter(pairs)
    spacing = pairs[0][0].spacing
    metadata = filter_metadata(name or out_path.stem, domains, radial, spacing, len(pairs),
                               inverse_gain_floor=inverse_gain_floor,
                               training={"pairs": list(sources), "method": "least squares per radial bin "
                                         "(sum Re(conj(X) Y) / sum |X|^2 over all slices)"})
    written = save_kernel_filter(out_path, radial, metadata)
    write_text_atomic(card_path, kernel_filter_card(written, metadata, radial, sources))
    return written
