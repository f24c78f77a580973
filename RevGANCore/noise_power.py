"""A domain's noise, measured without pairs: its 3D noise power spectrum (NPS) in the flattest
blocks of its volumes, and stationary noise drawn with that spectrum.

CT quality assurance measures the NPS in uniform regions (ICRU Report 87); a patient scan has
them too (air around the body, soft tissue). A block counts as flat when its local means vary
least: after a 5-voxel box filter the noise is mostly gone and what varies is anatomy. The flat
blocks, each minus its linear trend, give the noise's autocorrelation and so its NPS.
Drawn noise is white noise shaped by the NPS's square root (periodic over the patch), so its
variance and correlations (in-plane texture, slice to slice) are those measured.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import ConfigError
from .tensor_filters import local_mean

#: NPS block (z, y, x) in voxels: 16 x 16 pixels in-plane (12.8 mm at 0.8 mm) hold a kernel's
#: noise correlations (a few pixels) and fit between a body and the edge of the field of view
#: (32 x 32 blocks found none in a 96 x 96 phantom); 8 slices hold the correlation along z.
NPS_BLOCK_ZYX = (8, 16, 16)
#: The share of each volume's blocks used: those whose local means vary least.
FLAT_FRACTION = 0.25
#: ... and of those, the blocks whose local means vary at most this many times as much as in the
#: flattest block.
FLAT_TOLERANCE = 1.5


def _blocks(values: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """The non-overlapping ``block``-sized blocks of ``values`` from its first voxel, (n, *block),
    in z, y, x order."""
    counts = [n // b for n, b in zip(values.shape, block)]
    cropped = values[tuple(slice(0, c * b) for c, b in zip(counts, block))]
    grid = cropped.reshape(counts[0], block[0], counts[1], block[1], counts[2], block[2])
    return grid.transpose(0, 2, 4, 1, 3, 5).reshape(-1, *block)


def flat_blocks(array: np.ndarray, block: Sequence[int] = NPS_BLOCK_ZYX,
                fraction: float = FLAT_FRACTION) -> np.ndarray:
    """Of the non-overlapping ``block``-sized blocks of ``array``, the ``fraction`` whose local
    means (5-voxel box filter) vary least, less those that vary more than
    :data:`FLAT_TOLERANCE` times the flattest; each minus its linear trend: (n, *block) float64."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim != 3 or any(n < b for n, b in zip(values.shape, block)):
        raise ConfigError(f"noise power spectrum: a volume of {values.shape} voxels holds no {tuple(block)} block")
    means = local_mean(torch.from_numpy(values.astype(np.float32))[None, None], 5)[0, 0].double().numpy()
    spread = _blocks(means, block).std(axis=(1, 2, 3))
    order = np.argsort(spread, kind="stable")
    # At most ``fraction`` of the blocks, and only those nearly as flat as the flattest: what is
    # left of the noise after the box filter sets the scale, anatomy adds to it (a volume with
    # little air around the body has few flat blocks, and an edge is not noise).
    most = max(1, int(round(fraction * len(spread))))
    keep = [i for i in order[:most] if spread[i] <= FLAT_TOLERANCE * spread[order[0]]]
    return _detrended(_blocks(values, block)[keep])


def _detrended(blocks: np.ndarray) -> np.ndarray:
    """Each block minus its least-squares linear trend (a + b z + c y + d x): a slowly varying
    background (a gradient across soft tissue, beam hardening) is not noise (ICRU Report 87
    detrends its regions likewise)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) - (n - 1) / 2.0 for n in blocks.shape[1:]], indexing="ij")
    design = np.stack([np.ones(grids[0].size)] + [g.ravel() for g in grids], axis=1)
    flat = blocks.reshape(len(blocks), -1).T
    coefficients, *_ = np.linalg.lstsq(design, flat, rcond=None)
    return (flat - design @ coefficients).T.reshape(blocks.shape)


def noise_power_spectrum(arrays: Iterable[np.ndarray], block: Sequence[int] = NPS_BLOCK_ZYX,
                         fraction: float = FLAT_FRACTION) -> np.ndarray:
    """The NPS of the flat blocks of every array on the block's frequency grid (numpy's fftn
    layout), in the arrays' units squared: its mean is the noise variance.

    Estimated through the autocorrelation: each lag's products averaged over the voxel pairs
    that have it (a block's plain periodogram shrinks the lag-k correlation by (n - k) / n, a
    quarter too little slice-to-slice correlation over 8 slices), kept to lags shorter than
    half the block, then transformed (negative powers from the cut set to 0)."""
    block = tuple(int(b) for b in block)
    padded = tuple(2 * b for b in block)
    sums, count = None, 0
    for array in arrays:
        blocks = flat_blocks(array, block, fraction)
        products = np.real(np.fft.ifftn(np.abs(np.fft.fftn(blocks, s=padded, axes=(1, 2, 3))) ** 2,
                                        axes=(1, 2, 3))).sum(axis=0)
        sums = products if sums is None else sums + products
        count += len(blocks)
    if sums is None:
        raise ConfigError("noise power spectrum: no volumes to measure")
    overlaps = np.real(np.fft.ifftn(np.abs(np.fft.fftn(np.ones(block), s=padded, axes=(0, 1, 2))) ** 2))
    autocorrelation = sums / (np.maximum(np.round(overlaps), 1.0) * count)
    kept = np.zeros(block)
    lags = [np.arange(-(b // 2) + 1, b // 2) for b in block]
    kept[np.ix_(*[lag % b for lag, b in zip(lags, block)])] = \
        autocorrelation[np.ix_(*[lag % p for lag, p in zip(lags, padded)])]
    return np.maximum(np.real(np.fft.fftn(kept)), 0.0)


class NoiseSynthesis:
    """Stationary noise with a measured NPS (``power``, fftn layout, units squared), for patches
    at least as large as the NPS block along each axis (smaller ones get a cropped shaping
    kernel)."""

    def __init__(self, power: np.ndarray):
        power = np.asarray(power, dtype=np.float64)
        if power.ndim != 3 or not np.all(np.isfinite(power)) or power.min() < 0:
            raise ConfigError("noise synthesis needs a finite, non-negative 3D noise power spectrum")
        # The shaping kernel in wrap-around layout: its circular convolution with unit white noise
        # has the power spectrum ``power`` (sampled on the block grid).
        self.kernel = torch.from_numpy(np.real(np.fft.ifftn(np.sqrt(power))).astype(np.float32))
        self._transfers: Dict[Tuple[Tuple[int, ...], str], torch.Tensor] = {}

    @property
    def std(self) -> float:
        return float(self.kernel.pow(2).sum().sqrt())

    def _transfer(self, shape: Tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """The rfftn of the shaping kernel placed on a ``shape`` grid, wrap-around layout kept
        (offsets up to half the smaller of the two sizes per axis); one per patch shape."""
        key = (shape, str(device))
        if key not in self._transfers:
            sizes = [min(n, b) for n, b in zip(shape, self.kernel.shape)]
            centred = torch.fft.fftshift(self.kernel)
            crop = tuple(slice(b // 2 - m // 2, b // 2 - m // 2 + m) for b, m in zip(self.kernel.shape, sizes))
            padded = torch.zeros(shape, dtype=torch.float32)
            padded[tuple(slice(0, m) for m in sizes)] = centred[crop]
            placed = torch.roll(padded, shifts=tuple(-(m // 2) for m in sizes), dims=(0, 1, 2))
            self._transfers[key] = torch.fft.rfftn(placed.to(device), dim=(-3, -2, -1))
        return self._transfers[key]

    def sample(self, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Noise shaped like ``like`` (N, C, D, H, W), float32 on its device; drawn from the
        device's default generator, or from ``generator`` (a CPU one: validation draws the same
        noise every time)."""
        shape = tuple(like.shape[2:])
        if generator is None:
            white = torch.randn(like.shape, dtype=torch.float32, device=like.device)
        else:
            white = torch.randn(like.shape, generator=generator, dtype=torch.float32).to(like.device)
        transfer = self._transfer(shape, like.device)
        return torch.fft.irfftn(torch.fft.rfftn(white, dim=(-3, -2, -1)) * transfer, s=shape, dim=(-3, -2, -1))


def flat_noise_level(arrays: Iterable[np.ndarray], block: Sequence[int] = NPS_BLOCK_ZYX,
                     fraction: float = FLAT_FRACTION) -> float:
    """The noise standard deviation in the flat blocks of every array (root mean square of the
    detrended blocks, all blocks weighted alike), in the arrays' units."""
    squares, count = 0.0, 0
    for array in arrays:
        blocks = flat_blocks(array, block, fraction)
        squares += float((blocks ** 2).sum())
        count += blocks.size
    if not count:
        raise ConfigError("noise level: no volumes to measure")
    return float(np.sqrt(squares / count))


def _domain_arrays(manifest, domain: str, case_ids: Sequence[str]) -> Iterator[np.ndarray]:
    """The ``domain`` volumes of ``case_ids`` in network units, unclipped, read one at a time."""
    from .volume import hu_to_unit
    from .volume_io import read_volume

    chosen = [c for c in manifest.cases if c.id in set(case_ids) and domain in c.files]
    if not chosen:
        raise ConfigError(f"{manifest.path}: no {domain!r} volumes to measure the noise of")
    return (hu_to_unit(read_volume(c.files[domain]).array, clip=False) for c in chosen)


def source_noise(manifest, task_spec: dict, case_ids: Sequence[str]) -> NoiseSynthesis:
    """Noise of the source domain (network units, unclipped), measured in the source volumes of
    ``case_ids`` (the same cases that give an unpaired prior its sources): no target is read."""
    return NoiseSynthesis(noise_power_spectrum(_domain_arrays(manifest, task_spec["source"], case_ids)))


def target_noise_level(manifest, task_spec: dict, case_ids: Sequence[str]) -> float:
    """The target domain's flat-region noise level (network units), measured in the target
    volumes of ``case_ids`` (the cases that give an unpaired prior its targets)."""
    return flat_noise_level(_domain_arrays(manifest, task_spec["target"], case_ids))
