"""A linear super-resolution filter fitted by least squares on the B-spline-upsampled grid.

The paired classical baseline for super-resolution: the low-resolution volume is resampled
onto the high-resolution grid (cubic B-spline), then every output voxel is an affine
combination of its (2r+1)^3 neighbours. Upsampling by integer factors makes the problem
periodic, not shift-invariant: a fine voxel sitting on a coarse sample and one between two
coarse samples need different filters. So there is one filter per *phase* (the voxel index
modulo the factor along each axis; 4 x 2 x 2 = 16 for factors (2, 2, 4)), a polyphase FIR,
each fitted by ridge-regularised least squares on the body voxels of training pairs. It is the
best linear upsampler of its support, the ceiling of linear methods in the "linear" phantom
world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError, VolumeError
from .volume import Volume

#: Filter radius (voxels, per axis): a 5 x 5 x 5 neighbourhood.
DEFAULT_RADIUS = 2
#: Ridge weight relative to the mean diagonal of each phase's normal matrix.
DEFAULT_RIDGE = 1e-4
#: Largest number of body voxels per phase used in the fit (evenly strided sample).
MAX_SAMPLES_PER_PHASE = 12_000


def _offsets(radius: int) -> np.ndarray:
    span = np.arange(-radius, radius + 1)
    return np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3)


@dataclass(frozen=True)
class PolyphaseFilter:
    """Taps ``(phases_z, phases_y, phases_x, (2r+1)^3)`` and a bias per phase."""

    phases_zyx: Tuple[int, int, int]
    radius: int
    taps: np.ndarray
    bias: np.ndarray

    def apply(self, upsampled: Volume) -> Volume:
        """The filter run over ``upsampled`` (the B-spline-upsampled volume; edges replicated)."""
        shape = upsampled.shape
        if any(n % p for n, p in zip(shape, self.phases_zyx)):
            raise VolumeError(f"a volume of {shape} voxels (z, y, x) is not a whole number of {self.phases_zyx} "
                              "phase blocks")
        r = self.radius
        padded = np.pad(upsampled.array.astype(np.float32), r, mode="edge")
        pz, py, px = self.phases_zyx
        blocks = (shape[0] // pz, pz, shape[1] // py, py, shape[2] // px, px)
        # Phase (a, b, c) of voxel (z, y, x) = its index modulo the phases; in the block view
        # (z // pz, a, y // py, b, x // px, c) a per-phase table broadcasts as [None, :, None, :, None, :].
        out = np.zeros(blocks, dtype=np.float32)
        out += self.bias.astype(np.float32)[None, :, None, :, None, :]
        for index, (dz, dy, dx) in enumerate(_offsets(r)):
            shifted = padded[r + dz:r + dz + shape[0], r + dy:r + dy + shape[1], r + dx:r + dx + shape[2]]
            weight = self.taps[..., index].astype(np.float32)[None, :, None, :, None, :]
            out += shifted.reshape(blocks) * weight
        return upsampled.with_array(out.reshape(shape), source=f"fitted linear filter of {upsampled.source or 'a volume'}")


def fit_polyphase_filter(pairs: Iterable[Tuple[Volume, Volume]], phases_zyx: Sequence[int],
                         radius: int = DEFAULT_RADIUS, ridge: float = DEFAULT_RIDGE,
                         masks: Optional[Sequence[np.ndarray]] = None) -> PolyphaseFilter:
    """Least-squares polyphase filter from (upsampled, target) pairs on the same grid;
    ``masks`` (default: the targets' body masks) choose the voxels that count."""
    from .metrics import body_mask

    pairs = list(pairs)
    if not pairs:
        raise ConfigError("fitting the upsampling filter needs at least one (upsampled, target) pair")
    phases = tuple(int(p) for p in phases_zyx)
    offsets = _offsets(int(radius))
    taps = np.zeros(phases + (len(offsets),))
    bias = np.zeros(phases)
    padded = []
    chosen = []
    for number, (upsampled, target) in enumerate(pairs):
        if upsampled.shape != target.shape:
            raise VolumeError(f"pair {number}: upsampled {upsampled.shape} and target {target.shape} differ in shape")
        mask = body_mask(target.array) if masks is None else np.asarray(masks[number], dtype=bool)
        padded.append(np.pad(upsampled.array.astype(np.float64), radius, mode="edge"))
        chosen.append(np.argwhere(mask))
    for phase in np.ndindex(*phases):
        rows, values = [], []
        for (upsampled, target), source, where in zip(pairs, padded, chosen):
            here = where[np.all(where % np.asarray(phases) == np.asarray(phase), axis=1)]
            rows.append((source, here))
            values.append(target.array[here[:, 0], here[:, 1], here[:, 2]].astype(np.float64))
        total = sum(len(here) for _, here in rows)
        if total < 4 * (len(offsets) + 1):
            raise VolumeError(f"only {total} body voxels of phase {phase}: too few to fit the upsampling filter")
        stride = max(1, total // MAX_SAMPLES_PER_PHASE)
        design = np.concatenate([
            np.stack([source[here[::stride, 0] + radius + dz, here[::stride, 1] + radius + dy,
                             here[::stride, 2] + radius + dx] for dz, dy, dx in offsets] + [np.ones(len(here[::stride]))],
                     axis=1)
            for source, here in rows])
        target_values = np.concatenate([v[::stride] for v in values])
        normal = design.T @ design
        penalty = ridge * np.trace(normal) / len(normal) * np.eye(len(normal))
        penalty[-1, -1] = 0.0  # the bias is not shrunk
        solution = np.linalg.solve(normal + penalty, design.T @ target_values)
        taps[phase] = solution[:-1]
        bias[phase] = solution[-1]
    return PolyphaseFilter(phases, int(radius), taps, bias)
