"""Tiny random-weight RevGAN models and volumes for the inference and Slicer tests.

Every layer gets random weights (also the zero-initialised last convolutions), so each
output voxel depends on its whole receptive field and a tiling error cannot hide, and the
two directions differ, so a forward/inverse mix-up cannot hide either."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from RevGANCore.bench.tiling import randomize_weights
from RevGANCore.modelfile import ModelMetadata, TranslationModel, save_model
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d
from RevGANCore.tensorfile import load_safetensors, save_safetensors
from RevGANCore.volume import Volume

DOMAINS = {
    "super_resolution": {"x": "low_resolution", "y": "high_resolution"},
    "kernel": {"x": "sharp_b50f", "y": "smooth_b30f"},
    "custom": {"x": "a", "y": "b"},
}


def random_generator(ngf: int = 3, depth: int = 1, seed: int = 0, residual: bool = False) -> RevGANGenerator3d:
    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=ngf, depth=depth, residual=residual))
    return randomize_weights(generator, seed).eval()


def two_way_generator(ngf: int = 2, depth: int = 1, seed: int = 0, strength: float = 0.75) -> RevGANGenerator3d:
    """A residual generator whose forward and inverse are different, fixed maps: every weight
    is random (seeded), the last convolutions too, scaled by ``strength`` so that each direction
    moves CT voxels by tens of HU rather than hundreds. An untrained generator is the identity
    both ways, which hides a forward/inverse mix-up; this one does not."""
    generator = random_generator(ngf, depth, seed, residual=True)
    with torch.no_grad():
        for decoder in (generator.decoder_x, generator.decoder_y):
            decoder.to_image.weight.mul_(strength)
            decoder.to_image.bias.mul_(strength)
    return generator


def save_two_way_model(path: Path, task: str = "kernel", seed: int = 0,
                       domains: Optional[Dict[str, str]] = None) -> Path:
    """A model file of :func:`two_way_generator`; ``domains`` replaces the task's usual names."""
    metadata = metadata_for(task)
    if domains is not None:
        metadata = replace(metadata, domains=dict(domains))
    return save_model(path, two_way_generator(seed=seed), metadata)


def metadata_for(task: str, factors: Optional[Tuple[int, int, int]] = None, **extra) -> ModelMetadata:
    if task == "super_resolution" and factors is None:
        factors = (2, 2, 4)
    return ModelMetadata(task=task, domains=DOMAINS[task], scale_factors_xyz=factors,
                         name=f"tiny-{task}", **extra)


def tiny_model(task: str = "kernel", ngf: int = 3, depth: int = 1, seed: int = 0,
               factors: Optional[Tuple[int, int, int]] = None) -> TranslationModel:
    """A residual random model: its outputs stay CT-like (the input plus tens of HU), as
    files written from them must read back as CT."""
    generator = two_way_generator(ngf, depth, seed)
    metadata = replace(metadata_for(task, factors), generator=generator.config.to_dict())
    return TranslationModel(generator, metadata)


def save_tiny_model(path: Path, task: str = "kernel", ngf: int = 3, depth: int = 1, seed: int = 0,
                    factors: Optional[Tuple[int, int, int]] = None) -> Path:
    return save_model(path, two_way_generator(ngf, depth, seed), metadata_for(task, factors))


def rewrite_model(source: Path, target: Path, change_metadata: Optional[Callable[[dict], None]] = None,
                  change_tensors: Optional[Callable[[Dict[str, torch.Tensor]], None]] = None,
                  metadata_text: Optional[str] = None) -> Path:
    """A copy of the model file ``source`` at ``target`` whose metadata JSON (a dict, changed in
    place) or tensors (a dict, changed in place) were altered, or whose metadata string is
    replaced by ``metadata_text`` verbatim: hostile model files built from a real one."""
    tensors, strings = load_safetensors(source)
    values = json.loads(strings["revgan"])
    if change_metadata is not None:
        change_metadata(values)
    if change_tensors is not None:
        change_tensors(tensors)
    text = json.dumps(values) if metadata_text is None else metadata_text
    return save_safetensors(target, tensors, {"revgan": text})


def write_raw_safetensors(path: Path, header, data: bytes = b"", length: Optional[int] = None) -> Path:
    """A safetensors file with any header (a JSON value, or raw bytes) and data buffer,
    however inconsistent; ``length`` overrides the header length field."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


def random_hu(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """float32 HU values spread over (and a little beyond) the [-1150, 350] window."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1200.0, 500.0, size=tuple(shape)).astype(np.float32)


def random_volume(shape: Sequence[int], seed: int = 0, spacing=(0.7, 0.8, 1.5), origin=(-10.0, 5.0, 30.0),
                  direction=None) -> Volume:
    if direction is None:
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return Volume(random_hu(shape, seed), spacing, origin, direction)


def oblique_direction(angle_deg: float = 30.0) -> Tuple[float, ...]:
    """A rotation about z by ``angle_deg`` then about x by half of it (row-major 3x3)."""
    a = np.radians(angle_deg)
    b = a / 2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


def whole_volume_hu(model: TranslationModel, hu: np.ndarray, direction: str = "forward") -> np.ndarray:
    """The reference: the generator on the whole (window-normalised) volume at once, edge-
    padded along z as inference does at the volume's first and last slices for generators
    that pad with zeros (the "transposed" layout; "resize" generators pad every layer)."""
    from RevGANCore.inference import border_padding
    from RevGANCore.networks import receptive_field
    from RevGANCore.tiling import halo_for
    from RevGANCore.volume import hu_to_unit, unit_to_hu

    config = model.generator.config
    field = receptive_field(config)
    pad = border_padding(config, halo_for(field.radius, field.stride))[0]
    window = model.metadata.hu_window
    padded = np.pad(hu, ((pad, pad), (0, 0), (0, 0)), mode="edge")
    with torch.no_grad():
        # residual models see HU beyond the window unclipped, as in inference
        unit = hu_to_unit(torch.from_numpy(np.ascontiguousarray(padded)), window, clip=not config.residual)[None, None]
        result = model.generator.cpu()(unit, direction)[0, 0]
    return unit_to_hu(result, window).numpy()[pad:result.shape[0] - pad]
