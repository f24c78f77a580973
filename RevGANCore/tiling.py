"""Exact overlap-tile evaluation of a convolutional network over a 3D array.

Why tiling can be exact (docs/design.md, decision 4). For a network without per-sample
statistics, output voxel ``p`` depends only on input voxels within ``radius`` voxels of
``p`` along each axis (its receptive field), and the network's strided layers sample the
input on a lattice of period ``stride`` starting at index 0. A *window* of the input that

1. starts at a multiple of ``stride`` (or at 0), so its strided layers sample the same
   lattice as a pass over the whole volume, and
2. reaches at least ``halo >= radius`` voxels beyond the *core* we keep from it, except
   where it is clamped to the volume border (where the whole-volume pass sees the same
   zero padding as the window),

gives, on its core, the values of the whole-volume pass: every voxel of the core sees the
same input values through the same arithmetic. Padding effects inside the window (its
own zero padding at cut faces, the odd-size crop of the decoder) reach at most
``radius`` voxels inwards and are cropped away with the halo.

A :class:`TilePlan` splits each axis into cores whose boundaries are multiples of
``stride``; the cores partition the volume, so each output voxel is written exactly once,
straight into the preallocated output. No input padding, no weight or count buffers:
peak memory is the output plus one window's activations, whatever the volume size.
Windows along an axis are balanced (equal up to the stride), so a border tile is never a
sliver; a border window extends only inwards (it is clamped to the volume).

Volume borders. The network's own zero padding at the volume's faces is a fake edge on
CT (zero in window units is -400 HU), which spoils the first and last slices. With
``border_padding`` (inference uses the halo along z, the slice axis, where the volume's
faces cut through anatomy; in-plane faces of CT are air or reconstruction padding), a
window face lying on the volume's border is extended by copies of the border voxels, and
the result is exactly that of a whole-volume pass over the edge-padded volume; it costs up
to ``2 * halo`` extra voxels per padded axis in the border windows, never a padded copy of
the volume.

Grids of different resolution (super-resolution inside the network). The plan is made on
the coarse grid. With ``out_scale`` f the network turns a window into one f times larger
per axis (its core lands on ``f * core`` in the output); with ``source_scale`` f the input
is the finer grid and a window reads ``f * window`` of it (the last block of a volume may be
incomplete; the network completes it). The receptive-field radius and the stride are then
counted in coarse voxels, and the argument above holds unchanged.

Cost: each window computes ``halo`` extra voxels on every cut face, so the computed
volume is ``prod_axis(N + 2 * halo * (n_axis - 1)) / prod(N)`` times the volume. Larger
windows mean less overhead and more memory; :func:`auto_window_shape` picks per-axis
tile counts that minimise the computed volume under a voxel budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CancelledError, ConfigError, ValueRangeError, VolumeError

Shape3 = Tuple[int, int, int]
Slices3 = Tuple[slice, slice, slice]

__all__ = [
    "Tile",
    "TilePlan",
    "halo_for",
    "minimum_window",
    "axis_boundaries",
    "plan_tiles",
    "auto_window_shape",
    "run_tiled",
    "border_pads",
    "padded_window_shape",
    "write_core",
]


def halo_for(radius: int, stride: int) -> int:
    """The halo: the receptive-field radius rounded up to a multiple of the stride, so a
    window starting ``halo`` before a stride-aligned core boundary is itself aligned."""
    if radius < 0 or stride < 1:
        raise ConfigError(f"need radius >= 0 and stride >= 1, got radius={radius}, stride={stride}")
    return int(math.ceil(radius / stride) * stride)


def minimum_window(halo: int, stride: int) -> int:
    """Smallest window edge that still keeps a core (one stride) between two halos."""
    return 2 * halo + stride


@dataclass(frozen=True)
class Tile:
    """One unit of work: read ``window`` (volume coordinates), run the network on it, keep
    ``crop`` of its output (window coordinates), which lands on ``core`` (volume coordinates)."""

    index: int
    window: Slices3
    core: Slices3
    crop: Slices3

    @property
    def window_shape(self) -> Shape3:
        return tuple(s.stop - s.start for s in self.window)  # type: ignore[return-value]


def axis_boundaries(length: int, window: int, halo: int, stride: int) -> Tuple[int, ...]:
    """Core boundaries ``(0, b1, ..., length)`` along one axis for windows of at most
    ``window`` voxels. Interior boundaries are multiples of ``stride``; the windows
    (core plus ``halo`` on each side, clamped to ``[0, length)``) are balanced."""
    if length < 1:
        raise ConfigError(f"axis length must be positive, got {length}")
    if window >= length:
        return (0, length)
    if window < minimum_window(halo, stride):
        raise ConfigError(
            f"a window of {window} voxels is too small: the halo is {halo} voxels per side and the "
            f"stride {stride}, so windows need at least {minimum_window(halo, stride)} voxels")
    # n balanced windows of length (length + 2*halo*(n-1)) / n must fit in `window`.
    count = max(2, int(math.ceil((length - 2 * halo) / (window - 2 * halo))))
    while count <= length:
        step = (length - 2 * halo) / count
        bounds = [0]
        for i in range(1, count):
            bounds.append(int(stride * round((i * step + halo) / stride)))
        bounds.append(length)
        if _valid_bounds(bounds, length, window, halo):
            return tuple(bounds)
        count += 1
    raise ConfigError(f"cannot split an axis of {length} voxels into windows of {window}")  # pragma: no cover


def _valid_bounds(bounds: Sequence[int], length: int, window: int, halo: int) -> bool:
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop <= start:
            return False
        if min(length, stop + halo) - max(0, start - halo) > window:
            return False
    return True


def _axis_windows(bounds: Sequence[int], length: int, halo: int) -> List[Tuple[int, int]]:
    return [(max(0, a - halo), min(length, b + halo)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class TilePlan:
    """How a volume of ``shape`` (z, y, x) is cut: per-axis core boundaries, the halo and
    the stride. Iterating gives the tiles in z-major order (z slowest)."""

    shape: Shape3
    halo: int
    stride: int
    boundaries: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]

    @property
    def counts(self) -> Shape3:
        return tuple(len(b) - 1 for b in self.boundaries)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def _windows(self) -> List[List[Tuple[int, int]]]:
        return [_axis_windows(b, n, self.halo) for b, n in zip(self.boundaries, self.shape)]

    @property
    def window_shape(self) -> Shape3:
        """The largest window along each axis."""
        return tuple(max(b - a for a, b in axis) for axis in self._windows())  # type: ignore[return-value]

    @property
    def computed_voxels(self) -> int:
        """Voxels the network computes over all windows (cores plus halos)."""
        return int(np.prod([sum(b - a for a, b in axis) for axis in self._windows()], dtype=np.int64))

    @property
    def overhead(self) -> float:
        """Computed voxels over volume voxels (1.0 for a single tile)."""
        return self.computed_voxels / float(np.prod(self.shape, dtype=np.int64))

    def __iter__(self) -> Iterator[Tile]:
        windows = self._windows()
        index = 0
        for kz, (wz, cz) in enumerate(zip(windows[0], _pairs(self.boundaries[0]))):
            for ky, (wy, cy) in enumerate(zip(windows[1], _pairs(self.boundaries[1]))):
                for kx, (wx, cx) in enumerate(zip(windows[2], _pairs(self.boundaries[2]))):
                    window = (slice(*wz), slice(*wy), slice(*wx))
                    core = (slice(*cz), slice(*cy), slice(*cx))
                    crop = tuple(slice(c[0] - w[0], c[1] - w[0]) for c, w in ((cz, wz), (cy, wy), (cx, wx)))
                    yield Tile(index, window, core, crop)  # type: ignore[arg-type]
                    index += 1

    def describe(self) -> str:
        counts = "x".join(str(c) for c in self.counts)
        window = "x".join(str(w) for w in self.window_shape)
        return (f"{len(self)} tile(s) ({counts} in z, y, x), windows up to {window} voxels, "
                f"halo {self.halo}, {100.0 * (self.overhead - 1.0):.0f}% recomputed")


def _pairs(bounds: Sequence[int]) -> List[Tuple[int, int]]:
    return list(zip(bounds[:-1], bounds[1:]))


def _as_shape3(value: Union[int, Sequence[int]], what: str) -> Shape3:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * 3
    else:
        try:
            values = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be an integer or three integers (z, y, x), got {value!r}") from None
        if len(values) != 3 or any(float(v) != float(w) for v, w in zip(values, value)):  # type: ignore[arg-type]
            raise ConfigError(f"{what} must be an integer or three integers (z, y, x), got {value!r}")
    if min(values) < 1:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return values  # type: ignore[return-value]


def plan_tiles(shape: Sequence[int], window: Union[int, Sequence[int]], halo: int, stride: int,
               scan_shape: Optional[Sequence[int]] = None) -> TilePlan:
    """Cut a volume of ``shape`` (z, y, x) into windows of at most ``window`` voxels per axis
    (an int for cubes, or (z, y, x)). Raises :class:`ConfigError` when a window is smaller
    than :func:`minimum_window` along an axis that has to be cut. ``scan_shape``: the scan's
    own shape when ``shape`` is a grid it was resampled to (a kernel model's working grid);
    the refusal then names both, as the user knows the scan's."""
    shape3 = _as_shape3(shape, "volume shape")
    window3 = _as_shape3(window, "tile size")
    if halo < 0 or stride < 1 or halo % stride:
        raise ConfigError(f"the halo ({halo}) must be a non-negative multiple of the stride ({stride})")
    needed = minimum_window(halo, stride)
    for axis, (n, w) in enumerate(zip(shape3, window3)):
        if w < n and w < needed:
            where = f"axis {'zyx'[axis]} of {n} voxels"
            if scan_shape is not None and int(scan_shape[axis]) != n:
                where = (f"axis {'zyx'[axis]}: the scan's {int(scan_shape[axis])} voxels are {n} on the grid the "
                         "model works on, resampled to its pixel size; tile sizes count voxels of that grid")
            raise ConfigError(
                f"tile size {w} is too small for this model ({where}): its receptive "
                f"field needs a halo of {halo} voxels on each side of a tile and tiles start on multiples of "
                f"{stride}, so tiles must be at least {needed} voxels (or cover the whole axis)")
    bounds = tuple(axis_boundaries(n, w, halo, stride) for n, w in zip(shape3, window3))
    return TilePlan(shape3, int(halo), int(stride), bounds)  # type: ignore[arg-type]


def _axis_options(length: int, halo: int, stride: int, max_count: int) -> List[Tuple[int, int, int]]:
    """(count, largest window, computed length) for each feasible tile count of one axis."""
    options = {}
    options[1] = (1, length, length)
    needed = minimum_window(halo, stride)
    for count in range(2, max_count + 1):
        window = int(math.ceil((length + 2 * halo * (count - 1)) / count))
        window = max(needed, window + (-window) % stride)
        if window >= length:
            continue
        bounds = axis_boundaries(length, window, halo, stride)
        windows = _axis_windows(bounds, length, halo)
        real_count = len(windows)
        largest = max(b - a for a, b in windows)
        computed = sum(b - a for a, b in windows)
        if real_count not in options or largest < options[real_count][1]:
            options[real_count] = (real_count, largest, computed)
        if largest <= needed:
            break
    return sorted(options.values())


def auto_window_shape(shape: Sequence[int], halo: int, stride: int, max_voxels: int,
                      min_plane: int = 0, max_count: int = 64) -> Shape3:
    """Window shape (z, y, x) whose tiling computes the fewest voxels while each window has
    at most ``max_voxels`` voxels (the memory budget). Windows whose z*y plane is at most
    ``min_plane`` voxels are avoided where possible (CPU: PyTorch then leaves oneDNN for a
    ~20x slower 3x3x3 convolution); when nothing fits the budget, the smallest windows."""
    shape3 = _as_shape3(shape, "volume shape")
    per_axis = [_axis_options(n, halo, stride, max_count) for n in shape3]
    best = None
    for nz, wz, cz in per_axis[0]:
        for ny, wy, cy in per_axis[1]:
            for nx, wx, cx in per_axis[2]:
                voxels = wz * wy * wx
                computed = cz * cy * cx
                slow = wz * wy <= min_plane and (wz < shape3[0] or wy < shape3[1])
                key = (voxels > max_voxels, slow, computed if voxels <= max_voxels else voxels)
                if best is None or key < best[0]:
                    best = (key, (wz, wy, wx))
                if voxels <= max_voxels:
                    break  # more tiles along x only add work
    assert best is not None
    return best[1]


def write_core(out: np.ndarray, core: Slices3, values) -> None:
    """Store ``values`` (numpy or torch, float) into ``out[core]``, rounded to the nearest
    integer when ``out`` is an integer array. Values the dtype cannot hold are an error,
    never clipped: a saturated result must not pass for a real one."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values)
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        low, high = float(values.min()), float(values.max())
        if not (info.min - 0.5 <= low and high <= info.max + 0.5):  # also false for NaN
            raise ValueRangeError(f"the result has values from {low:g} to {high:g}, beyond what {out.dtype} can "
                              f"hold ({info.min} to {info.max}): the input holds such values (float32 output "
                              "keeps them: --dtype float32), or the input or the model is broken")
        values = np.rint(values)
    out[core] = values


def border_pads(tile: Tile, shape: Sequence[int], padding: Union[int, Sequence[int]]) -> Tuple[Tuple[int, int], ...]:
    """(before, after) voxels added to ``tile``'s window along each axis: ``padding``
    (voxels, or (z, y, x)) on every face that lies on the volume's border."""
    return tuple((p if w.start == 0 else 0, p if w.stop == n else 0)
                 for w, n, p in zip(tile.window, shape, _padding3(padding)))


def _padding3(padding: Union[int, Sequence[int]]) -> Shape3:
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 3  # type: ignore[return-value]
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def padded_window_shape(plan: TilePlan, padding: Union[int, Sequence[int]]) -> Shape3:
    """The largest window the network sees when border windows are edge-padded by
    ``padding`` (voxels, or (z, y, x)): a whole axis gets it on both faces, a split axis on one."""
    return tuple(w + (2 if count == 1 else 1) * p for w, count, p
                 in zip(plan.window_shape, plan.counts, _padding3(padding)))  # type: ignore[return-value]


def _scale3(value: Union[int, Sequence[int]], what: str) -> Shape3:
    scale = _padding3(value)
    if min(scale) < 1:
        raise ConfigError(f"{what} must be positive integers, got {value!r}")
    return scale


def run_tiled(function: Callable[[np.ndarray], object], source, out: np.ndarray, plan: TilePlan,
              progress: Optional[Callable[[int, int], None]] = None,
              cancel: Optional[Callable[[], bool]] = None,
              border_padding: Union[int, Sequence[int]] = 0,
              source_scale: Union[int, Sequence[int]] = 1,
              out_scale: Union[int, Sequence[int]] = 1) -> None:
    """Evaluate ``function`` on every window of ``plan`` and write each tile's core into
    ``out`` (shape ``plan.shape`` times ``out_scale``, float or integer dtype).

    ``border_padding`` (voxels, or (z, y, x); each 0 or a multiple of the stride at least the
    receptive-field radius, e.g. ``plan.halo``) extends window faces on the volume's border
    along those axes by that many copies
    of the border voxels, so the network continues the image instead of meeting its own
    zero padding there (on CT, zero in the window's units is a fake -400 HU edge); the
    result is then that of a whole-volume pass over the edge-padded volume. Same-grid plans
    only (networks that pad by replication need none).

    ``source[window]`` (a numpy array or any object sliceable with three slices) gives the
    input of a window; ``source`` has the plan's shape, or with ``source_scale`` f (per axis)
    a shape whose f-blocks cover it (``ceil(n / f) == plan.shape``). ``function`` returns an
    array or tensor of the window's shape (in plan voxels) times ``out_scale``.
    ``progress(done, total)`` is called before the first and after each tile; ``cancel()``
    is checked before each tile and raises :class:`CancelledError` when true."""
    source_scale3 = _scale3(source_scale, "source_scale")
    out_scale3 = _scale3(out_scale, "out_scale")
    expected_out = tuple(n * f for n, f in zip(plan.shape, out_scale3))
    if tuple(out.shape) != expected_out:
        raise ConfigError(f"output array shape {tuple(out.shape)} does not match the plan's {expected_out}")
    source_shape = tuple(int(n) for n in source.shape)
    if tuple(-(-n // f) for n, f in zip(source_shape, source_scale3)) != plan.shape:
        raise ConfigError(f"input shape {source_shape} does not match the plan's {plan.shape}"
                          + (f" (in blocks of {source_scale3})" if source_scale3 != (1, 1, 1) else ""))
    padding3 = _padding3(border_padding)
    if any(padding3) and (source_scale3 != (1, 1, 1) or out_scale3 != (1, 1, 1)):
        raise ConfigError("border padding is only available for same-grid tiling")
    total = len(plan)
    if progress is not None:
        progress(0, total)
    for done, tile in enumerate(plan, 1):
        if cancel is not None and cancel():
            raise CancelledError(f"cancelled after {done - 1} of {total} tiles")
        window = source[tuple(slice(w.start * f, min(w.stop * f, n))
                              for w, f, n in zip(tile.window, source_scale3, source_shape))]
        crop = tile.crop
        if any(padding3):
            pads = border_pads(tile, plan.shape, padding3)
            if any(before or after for before, after in pads):
                window = np.pad(window, pads, mode="edge")
                crop = tuple(slice(c.start + before, c.stop + before) for c, (before, _) in zip(crop, pads))
        result = function(window)
        window_plan_shape = tuple(-(-n // f) for n, f in zip(window.shape, source_scale3))
        expected = tuple(n * f for n, f in zip(window_plan_shape, out_scale3))
        if tuple(result.shape) != expected:
            raise ConfigError(f"the network returned shape {tuple(result.shape)} for a window of "
                              f"{tuple(window.shape)}; tiling needs an output of {expected}")
        core = tuple(slice(c.start * f, c.stop * f) for c, f in zip(tile.core, out_scale3))
        crop = tuple(slice(c.start * f, c.stop * f) for c, f in zip(crop, out_scale3))
        write_core(out, core, result[crop])
        if progress is not None:
            progress(done, total)
