"""Shapes for the chest phantom: a canvas with anti-aliased painting, tapered capsules
rasterised in bulk, and randomly branching trees (airways, vessels).

Everything is in the phantom's anatomical frame, in "adult millimetres" (see
:mod:`RevGANCore.phantom`): x to the patient's left, y posterior, z superior (LPS).
Edges are anti-aliased over one in-plane voxel, so structures keep a partial-volume rim
as a real scanner would give them instead of a staircase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

# Largest number of voxels evaluated at once while rasterising capsules (memory bound).
_CHUNK_VOXELS = 2_000_000


class Canvas:
    """An HU volume and a label volume being painted, with the coordinates (adult mm) of
    every voxel centre along each axis."""

    def __init__(self, shape: Tuple[int, int, int], voxel_mm: Tuple[float, float, float],
                 first_mm: Tuple[float, float, float], background_hu: float) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.voxel = np.asarray(voxel_mm, dtype=np.float64)  # (z, y, x)
        self.first = np.asarray(first_mm, dtype=np.float64)
        self.z, self.y, self.x = (
            (self.first[a] + self.voxel[a] * np.arange(self.shape[a])).astype(np.float32) for a in range(3))
        self.hu = np.full(self.shape, background_hu, dtype=np.float32)
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        # Edge width for anti-aliasing: the in-plane voxel size, which carries the detail.
        self.edge = float(min(self.voxel[1], self.voxel[2]))

    def coverage(self, signed_distance: np.ndarray) -> np.ndarray:
        """Fraction of a voxel inside a shape, from the signed distance (mm, negative inside)
        of its centre to the shape's surface: a linear ramp one voxel wide."""
        return np.clip(0.5 - signed_distance / np.float32(self.edge), 0.0, 1.0).astype(np.float32, copy=False)

    def paint(self, coverage: np.ndarray, value, label: int, region=(slice(None),) * 3) -> None:
        """Blend ``value`` (HU, scalar or array) into the voxels of ``region`` by
        ``coverage``; voxels at least half covered take ``label``."""
        hu = self.hu[region]
        hu += coverage * (np.asarray(value, dtype=np.float32) - hu)
        labels = self.labels[region]
        labels[coverage >= 0.5] = label


@dataclass
class Capsules:
    """Tapered capsules (cone segments with spherical caps): start and end points (N, 3)
    as (x, y, z) adult mm, radii at each end (N,) and a contrast factor (N,)."""

    starts: np.ndarray
    ends: np.ndarray
    start_radii: np.ndarray
    end_radii: np.ndarray
    contrast: np.ndarray

    @staticmethod
    def empty() -> "Capsules":
        return Capsules(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0))

    @staticmethod
    def polyline(points, radii) -> "Capsules":
        """Consecutive points joined by capsules whose radii follow ``radii`` (per point)."""
        points = np.asarray(points, dtype=np.float64)
        radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(points),))
        return Capsules(points[:-1], points[1:], radii[:-1].copy(), radii[1:].copy(),
                        np.ones(len(points) - 1))

    def __len__(self) -> int:
        return len(self.starts)

    def __add__(self, other: "Capsules") -> "Capsules":
        return Capsules(*(np.concatenate([a, b]) for a, b in zip(
            (self.starts, self.ends, self.start_radii, self.end_radii, self.contrast),
            (other.starts, other.ends, other.start_radii, other.end_radii, other.contrast))))

    def offset(self, delta_radius: float) -> "Capsules":
        """The same capsules with radii grown by ``delta_radius`` (e.g. for a wall)."""
        return Capsules(self.starts, self.ends, self.start_radii + delta_radius,
                        self.end_radii + delta_radius, self.contrast)

    def visible_at(self, edge: float) -> "Capsules":
        """Capsules thinner than one voxel drawn one voxel wide with proportionally lower
        contrast (their partial-volume signal: cross-section area over voxel area)."""
        thickest = np.maximum(self.start_radii, self.end_radii)
        contrast = self.contrast * np.minimum(1.0, (2.0 * thickest / edge) ** 2)
        floor = edge / 2.0
        return Capsules(self.starts, self.ends, np.maximum(self.start_radii, floor),
                        np.maximum(self.end_radii, floor), contrast)


def rasterise_capsules(canvas: Canvas, capsules: Capsules, mode: str = "coverage",
                       margin: float = 0.0) -> np.ndarray:
    """Rasterise all capsules into one full-size float32 field.

    mode "coverage": the maximum over capsules of coverage x contrast (0 outside);
    mode "distance": the minimum signed distance to any capsule, evaluated up to ``margin``
    mm outside them (+inf further away). Capsules are grouped by bounding-box size so
    that thousands of small ones cost a few vectorised passes rather than a Python loop."""
    shape = canvas.shape
    field = np.zeros(shape, np.float32) if mode == "coverage" else np.full(shape, np.inf, np.float32)
    if len(capsules) == 0:
        return field
    flat = field.reshape(-1)
    # Work in (z, y, x) order to match the arrays.
    a = capsules.starts[:, ::-1]
    b = capsules.ends[:, ::-1]
    reach = np.maximum(capsules.start_radii, capsules.end_radii) + canvas.edge + margin
    low = np.floor((np.minimum(a, b) - reach[:, None] - canvas.first) / canvas.voxel).astype(np.int64)
    high = np.ceil((np.maximum(a, b) + reach[:, None] - canvas.first) / canvas.voxel).astype(np.int64) + 1
    low = np.clip(low, 0, np.asarray(shape))
    high = np.clip(high, 0, np.asarray(shape))
    sizes = high - low
    keep = np.all(sizes > 0, axis=1)
    buckets = 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
    groups: Dict[Tuple[int, int, int], List[int]] = {}
    for index in np.flatnonzero(keep):
        groups.setdefault(tuple(int(v) for v in buckets[index]), []).append(int(index))
    for bucket, members in sorted(groups.items()):
        per_capsule = bucket[0] * bucket[1] * bucket[2]
        step = max(1, _CHUNK_VOXELS // per_capsule)
        for first in range(0, len(members), step):
            chosen = np.asarray(members[first:first + step])
            _rasterise_group(canvas, capsules, chosen, low[chosen], bucket, flat, mode)
    return field


def _rasterise_group(canvas: Canvas, capsules: Capsules, chosen: np.ndarray, low: np.ndarray,
                     bucket: Tuple[int, int, int], flat: np.ndarray, mode: str) -> None:
    shape = np.asarray(canvas.shape)
    offsets = [np.arange(n) for n in bucket]
    # Voxel indices of each capsule's box, (N, bz, 1, 1), (N, 1, by, 1), (N, 1, 1, bx).
    index = [low[:, axis].reshape(-1, 1, 1, 1)
             + offsets[axis].reshape(*(1 if a != axis else bucket[axis] for a in range(3)))
             for axis in range(3)]
    inside = (index[0] < shape[0]) & (index[1] < shape[1]) & (index[2] < shape[2])
    coords = [(canvas.first[axis] + canvas.voxel[axis] * index[axis]).astype(np.float32) for axis in range(3)]
    a = capsules.starts[chosen][:, ::-1].astype(np.float32)
    b = capsules.ends[chosen][:, ::-1].astype(np.float32)
    axis_vec = b - a
    length2 = np.maximum((axis_vec ** 2).sum(axis=1), 1e-12)

    def per_capsule(values, axis):
        return values[:, axis].reshape(-1, 1, 1, 1)

    rel = [coords[axis] - per_capsule(a, axis) for axis in range(3)]
    t = (rel[0] * per_capsule(axis_vec, 0) + rel[1] * per_capsule(axis_vec, 1)
         + rel[2] * per_capsule(axis_vec, 2)) / length2.reshape(-1, 1, 1, 1)
    t = np.clip(t, 0.0, 1.0)
    dist2 = sum((rel[axis] - t * per_capsule(axis_vec, axis)) ** 2 for axis in range(3))
    r0 = capsules.start_radii[chosen].astype(np.float32).reshape(-1, 1, 1, 1)
    r1 = capsules.end_radii[chosen].astype(np.float32).reshape(-1, 1, 1, 1)
    signed = np.sqrt(dist2) - (r0 + t * (r1 - r0))
    flat_index = (index[0] * shape[1] + index[1]) * shape[2] + index[2]
    flat_index = np.broadcast_to(flat_index, signed.shape)
    inside = np.broadcast_to(inside, signed.shape)
    if mode == "coverage":
        values = canvas.coverage(signed) * capsules.contrast[chosen].astype(np.float32).reshape(-1, 1, 1, 1)
        use = inside & (values > 0)
        np.maximum.at(flat, flat_index[use], values[use])
    else:
        np.minimum.at(flat, flat_index[inside], signed[inside])


# --------------------------------------------------------------------------- trees


def _perpendicular(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to each row of ``directions``."""
    trial = rng.normal(size=directions.shape)
    trial -= (trial * directions).sum(axis=1, keepdims=True) * directions
    norm = np.linalg.norm(trial, axis=1, keepdims=True)
    return trial / np.maximum(norm, 1e-9)


def _rotate_towards(directions: np.ndarray, normals: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return directions * np.cos(angles)[:, None] + normals * np.sin(angles)[:, None]


def _steer(rng: np.random.Generator, tips: np.ndarray, heading: np.ndarray, targets: np.ndarray,
           weight: float, candidates: int = 8) -> np.ndarray:
    """Blend each heading with the direction to one of a few random target points, the one
    most nearly ahead (and not too far); headings with no target ahead are kept."""
    chosen = targets[rng.integers(0, len(targets), (len(tips), candidates))]
    towards = chosen - tips[:, None, :]
    distance = np.maximum(np.linalg.norm(towards, axis=2), 1e-6)
    unit = towards / distance[..., None]
    ahead = (unit * heading[:, None, :]).sum(axis=2)
    score = np.where(ahead > 0.3, ahead - distance / (4.0 * distance.mean() + 1e-6), -np.inf)
    best = np.argmax(score, axis=1)
    usable = np.isfinite(score[np.arange(len(tips)), best])
    pull = unit[np.arange(len(tips)), best]
    blended = np.where(usable[:, None], (1 - weight) * heading + weight * pull, heading)
    return blended / np.maximum(np.linalg.norm(blended, axis=1, keepdims=True), 1e-9)


def grow_tree(rng: np.random.Generator, roots: np.ndarray, directions: np.ndarray, radii: np.ndarray,
              inside: Callable[[np.ndarray], np.ndarray], min_radius: float, length_per_radius: float,
              max_generations: int = 16, targets=None, max_tips: int = 4000) -> Capsules:
    """A randomly branching tree of tapered capsules, grown one generation at a time for
    all tips together.

    Each segment is about ``length_per_radius`` radii long and splits into a major and a
    minor child (radius ratios near 0.89 and 0.76, branching angles near 22 and 45 degrees,
    roughly Murray's law). A segment whose end leaves ``inside`` (a vectorised test of
    (N, 3) points) is shortened once, then dropped; branches end below ``min_radius``.
    ``targets`` (optional, (M, 3) points spread through the organ) steer each child towards
    a point ahead of it, so the tree fills its organ instead of leaving it; at most
    ``max_tips`` tips grow per generation."""
    starts, ends, r_start, r_end = [], [], [], []
    tips = np.asarray(roots, dtype=np.float64).reshape(-1, 3)
    heading = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    heading = heading / np.linalg.norm(heading, axis=1, keepdims=True)
    radius = np.asarray(radii, dtype=np.float64).reshape(-1)
    taper = 0.95
    for generation in range(max_generations):
        if len(tips) == 0:
            break
        length = length_per_radius * radius * rng.uniform(0.75, 1.25, len(tips))
        end = tips + heading * length[:, None]
        if generation > 0:
            ok = inside(end)
            half = tips + heading * (0.5 * length[:, None])
            retry = ~ok
            if retry.any():
                end[retry] = half[retry]
                ok[retry] = inside(half[retry])
        else:
            ok = np.ones(len(tips), bool)
        starts.append(tips[ok])
        ends.append(end[ok])
        r_start.append(radius[ok])
        r_end.append(radius[ok] * taper)
        tips, heading, radius = end[ok], heading[ok], radius[ok] * taper
        if len(tips) == 0:
            break
        normal = _perpendicular(heading, rng)
        major = _rotate_towards(heading, normal, np.radians(rng.uniform(12, 30, len(tips))))
        minor = _rotate_towards(heading, normal, -np.radians(rng.uniform(35, 60, len(tips))))
        if targets is not None and len(targets):
            major = _steer(rng, tips, major, targets, 0.55)
            minor = _steer(rng, tips, minor, targets, 0.55)
        tips = np.concatenate([tips, tips])
        heading = np.concatenate([major, minor])
        radius = np.concatenate([radius * rng.uniform(0.85, 0.93, len(radius)),
                                 radius * rng.uniform(0.7, 0.82, len(radius))])
        alive = radius >= min_radius
        if alive.sum() > max_tips:
            alive[rng.permutation(np.flatnonzero(alive))[max_tips:]] = False
        tips, heading, radius = tips[alive], heading[alive], radius[alive]
    if not starts:
        return Capsules.empty()
    starts_a = np.concatenate(starts)
    return Capsules(starts_a, np.concatenate(ends), np.concatenate(r_start), np.concatenate(r_end),
                    np.ones(len(starts_a)))
