"""Differentiable filters on (N, C, D, H, W) patches that the training objectives use.

- :func:`on_grid`: brings a tensor onto another grid of the same box (identity when the
  shapes match; trilinear upsampling or average pooling by integer factors otherwise). Every
  voxelwise comparison or concatenation of a source-grid tensor with a target-grid tensor
  goes through it, so the objectives work whether the generator keeps the grid or changes it.
- :func:`high_pass`: a patch minus its local mean (texture, noise).
- :func:`low_pass`: non-overlapping average pooling (what both reconstruction kernels keep).
- :class:`LowResolution`: the known super-resolution degradation of
  :func:`RevGANCore.degradations.low_resolution` (Gaussian slice profile and in-plane blur of
  FWHM = factor x spacing, sampled at the coarse voxel centres, mirrored edges) as one matrix
  per axis, so it is exact and differentiable.
- :func:`radial_power_spectrum`: noise-power-spectrum profile of high-passed patches.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch.nn import functional

from .degradations import FWHM_PER_SIGMA, _gaussian_resampling_matrix
from .networks import downsample_image, upsample_image

Shape = Tuple[int, int, int]


def on_grid(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``tensor`` (N, C, D, H, W) on the grid of spatial ``shape`` covering the same box:
    unchanged when the shapes agree, trilinear upsampling (coarse samples at the centres of the
    fine voxels they cover) when ``shape`` is an integer multiple per axis, average pooling when
    it is an integer fraction: the generator's own residual paths (networks.upsample_image and
    downsample_image), so training compares on the grids inference produces."""
    have, want = tuple(tensor.shape[2:]), tuple(int(n) for n in shape)
    if have == want:
        return tensor
    if all(w % h == 0 for h, w in zip(have, want)):
        return upsample_image(tensor, tuple(w // h for h, w in zip(have, want)))
    if all(h % w == 0 for h, w in zip(have, want)):
        return downsample_image(tensor, tuple(h // w for h, w in zip(have, want)))
    raise ValueError(f"cannot bring a {have} patch onto a {want} grid: not an integer factor per axis")


def local_mean(tensor: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Mean over a ``size``^3 neighbourhood (edges replicated), same shape as ``tensor``."""
    half = size // 2
    padded = functional.pad(tensor, (half,) * 6, mode="replicate")
    return functional.avg_pool3d(padded, kernel_size=size, stride=1)


def high_pass(tensor: torch.Tensor, size: int = 5) -> torch.Tensor:
    """The texture of a patch: the patch minus its local mean."""
    return tensor - local_mean(tensor, size)


def low_pass(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping ``size``^3 averages (a remainder at the far edges is dropped)."""
    kernel = tuple(min(size, n) for n in tensor.shape[2:])
    return functional.avg_pool3d(tensor, kernel_size=kernel, stride=kernel)


class LowResolution:
    """The phantom's low-resolution operator in torch, by voxel factors (z, y, x).

    Along an axis with factor f > 1: Gaussian of FWHM f voxels centred on each coarse voxel
    centre, mirrored at the edges, then one sample per f voxels; exactly the matrix
    :func:`RevGANCore.degradations.low_resolution` applies with its default FWHMs."""

    def __init__(self, factors_zyx: Sequence[int]):
        self.factors = tuple(int(f) for f in factors_zyx)
        if len(self.factors) != 3 or min(self.factors) < 1:
            raise ValueError(f"low-resolution factors (z, y, x) must be 3 integers >= 1, got {factors_zyx}")
        self._matrices: Dict[Tuple[int, int, str, torch.dtype], torch.Tensor] = {}

    def output_shape(self, shape: Sequence[int]) -> Shape:
        return tuple(int(n) // f for n, f in zip(shape, self.factors))  # type: ignore[return-value]

    def _matrix(self, length: int, factor: int, like: torch.Tensor) -> torch.Tensor:
        key = (length, factor, str(like.device), like.dtype)
        if key not in self._matrices:
            weights = _gaussian_resampling_matrix(length, factor, factor / FWHM_PER_SIGMA)
            self._matrices[key] = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
        return self._matrices[key]

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        result = tensor
        for axis, factor in zip((2, 3, 4), self.factors):
            if factor == 1:
                continue
            matrix = self._matrix(result.shape[axis], factor, result)
            result = torch.movedim(torch.tensordot(result, matrix, dims=([axis], [1])), -1, axis)
        return result


def radial_power_spectrum(tensor: torch.Tensor, bins: int = 8, size: int = 5) -> torch.Tensor:
    """Power spectrum of the high-passed patches, averaged over the batch and over shells of
    radial frequency (cycles per voxel, 0 to 0.5 in ``bins`` shells): (C, bins)."""
    texture = high_pass(tensor.float(), size)
    spatial = texture.shape[2:]
    power = torch.fft.rfftn(texture, dim=(2, 3, 4)).abs().pow(2).mean(dim=0) / float(spatial.numel())
    frequencies = [torch.fft.fftfreq(spatial[0], device=tensor.device), torch.fft.fftfreq(spatial[1], device=tensor.device),
                   torch.fft.rfftfreq(spatial[2], device=tensor.device)]
    fz, fy, fx = torch.meshgrid(*frequencies, indexing="ij")
    radius = torch.sqrt(fz ** 2 + fy ** 2 + fx ** 2)
    shell = torch.clamp((radius / 0.5 * bins).long(), max=bins)  # bins: the corners beyond 0.5
    inside = shell < bins
    counts = torch.bincount(shell[inside], minlength=bins).clamp(min=1).to(power.dtype)
    profiles = [torch.zeros(bins, dtype=power.dtype, device=power.device).index_add(0, shell[inside],
                                                                                   channel[inside]) / counts
                for channel in power]
    return torch.stack(profiles)


def spectrum_distance(generated: torch.Tensor, real: torch.Tensor, bins: int = 8, eps: float = 1e-8) -> torch.Tensor:
    """Mean |log NPS(generated) - log NPS(real)| over the frequency shells (0 when the batches
    carry the same texture, whatever the anatomy). Patches of both may differ in number."""
    return (torch.log(radial_power_spectrum(generated, bins) + eps)
            - torch.log(radial_power_spectrum(real, bins) + eps)).abs().mean()
