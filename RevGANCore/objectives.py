"""The training objectives of a 3D RevGAN: their terms, weights and discriminator inputs.

G = the generator's "forward" direction (X -> Y), F = its "inverse" (Y -> X).

- paired (pix2pix-style): L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda_l1 (|G(x) - y| + |F(y) - x|);
  conditional discriminators see the input beside the image.
- unpaired (CycleGAN-style, extended so that it learns; docs/training.md gives the reasons and
  sources): L_GAN(G, D_Y) + L_GAN(F, D_X)
    + lambda_cycle (|F(G(x)) - x| + |G(F(y)) - y|)
    + lambda_cycle * lambda_identity (|G(y) - y| + |F(x) - x|)          (default weight 0)
    + lambda_physics (physics consistency, both directions, see :func:`physics_terms`)
    + lambda_spectrum (noise-power-spectrum distance of G(x) to y and of F(y) to x)
    + lambda_degraded_pairs |G(LR(y)) - y| (super-resolution: target patches degraded by the
      known operator LR serve as their own sources, as in SMORE, Zhao et al. 2021; no pair
      is used, and the classical-unpaired upsampler is fitted on the same kind of pairs)
    + lambda_degraded_means |low_pass(G(LR(y)) - y)| (the same pairs' local-mean error: an L1
      fit is a median and misses the mean where the target's values are skewed, e.g. at bone)
    + lambda_recorrupted_pairs |G(x1) - answer|^2 (kernel: source patches recorrupted with
      the source domain's measured noise, :mod:`RevGANCore.recorrupted_pairs`; squared error,
      whose minimiser is the expected answer: the answers are noisy but unbiased);
  discriminators see generated patches from a history pool.
- either, with real-scan pairs (super-resolution, :mod:`RevGANCore.real_pairs`):
    + lambda_slab |slab_average(G(x_real)) - y_real|, the forward output on a real scan's
      in-plane-degraded slices, each block of z-factor output slices averaged, against the
      real slices (see :meth:`Objective.slab_terms`).
With ``texture_discriminator`` each discriminator also sees the image's high-pass (the image
minus its local mean), so noise texture is as visible to it as intensity.

Every voxelwise comparison or concatenation of a source-grid tensor with a target-grid tensor
goes through :func:`~RevGANCore.tensor_filters.on_grid`, so the objectives hold whether the
generator keeps the grid (today) or changes it (super-resolution with in-network upsampling).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional

from .config import ObjectiveConfig
from .errors import ConfigError
from .losses import GANLoss, ImagePool
from .recorrupted_pairs import RecorruptedPairs
from .tensor_filters import LowResolution, high_pass, low_pass, on_grid, spectrum_distance

Outputs = Dict[str, torch.Tensor]
#: Coarse voxels left out at each face when the super-resolution degradation is compared: a
#: patch's mirrored edges differ from the neighbours the whole volume had.
DEGRADATION_MARGIN = 2
#: Real-scan target voxels (z, y, x) left out at each face by the slab term: one real slice
#: and 4 pixels, where a patch's replicated borders stand in for the scan's real context.
SLAB_MARGIN_ZYX = (1, 4, 4)


def _interior(tensor: torch.Tensor, margin: int) -> torch.Tensor:
    """``tensor`` without ``margin`` voxels at each face of every axis long enough to keep some."""
    slices = [slice(None), slice(None)]
    for length in tensor.shape[2:]:
        keep = margin if length > 2 * margin else 0
        slices.append(slice(keep, length - keep))
    return tensor[tuple(slices)]


def forward_on_degraded(generator: nn.Module, degrade: LowResolution, y: torch.Tensor) -> torch.Tensor:
    """G(LR(y)): the forward direction on target patches degraded by the known low-resolution
    operator, the source side of the degraded-pairs term (in training and in validation alike)."""
    return generator(degrade(y.float()).to(y.dtype), "forward")


def forward_on_recorrupted(generator: nn.Module, pairs: RecorruptedPairs, x: torch.Tensor,
                           noise: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(G(x1), answer) of the recorrupted-pairs term, with the generator's own forward prior;
    the noise is drawn from ``noise`` when given (validation) or the default generator."""
    source, answer = pairs(x, generator.prior_forward, noise)
    return generator(source.to(x.dtype), "forward"), answer


def recorrupted_error(fake: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """The recorrupted-pairs term, |G(x1) - answer|^2 averaged, in float32: the training term
    and its validation figure alike."""
    return (fake.float() - answer.float()).pow(2).mean()


def check_terms_for_task(config: ObjectiveConfig, task: str, prior_taps: int = 0) -> None:
    """Refuse terms that do not belong to ``task`` and the objective's mode, before any data is
    read or generated (:class:`Objective` checks again). ``prior_taps``: the generator's linear
    prior, which the kernel task's recorrupted pairs are answered with."""
    for name in ("lambda_degraded_pairs", "lambda_degraded_means", "lambda_recorrupted_pairs"):
        if getattr(config, name) > 0 and config.mode == "paired":
            raise ConfigError(f"objective.{name} belongs to unpaired runs (paired runs have real pairs); set it to 0")
    if config.lambda_degraded_pairs > 0 and task != "super_resolution":
        raise ConfigError("objective.lambda_degraded_pairs degrades target patches with the known super-resolution "
                          "operator; the kernel task's self-supervised term is objective.lambda_recorrupted_pairs")
    if config.lambda_recorrupted_pairs > 0 and task != "kernel":
        raise ConfigError("objective.lambda_recorrupted_pairs is for the kernel task; super-resolution has "
                          "objective.lambda_degraded_pairs")
    if config.lambda_recorrupted_pairs > 0 and not prior_taps:
        raise ConfigError("objective.lambda_recorrupted_pairs answers with the linear prior's output; set "
                          "model.generator.prior_taps (e.g. 11) or the weight to 0")
    if config.lambda_degraded_means > 0 and config.lambda_degraded_pairs <= 0:
        raise ConfigError("objective.lambda_degraded_means weighs the degraded pairs' local means; "
                          "it needs objective.lambda_degraded_pairs > 0")


class GeneratorPhase(nn.Module):
    """Every generator output one step's losses need, in ONE module call: DistributedDataParallel
    expects one forward per backward."""

    def __init__(self, generator: nn.Module, unpaired: bool, identity: bool,
                 degrade: Optional[LowResolution] = None, recorrupted: Optional[RecorruptedPairs] = None):
        super().__init__()
        self.generator = generator
        self.unpaired = unpaired
        self.identity = identity
        self.degrade = degrade  # set: the forward direction also runs on degraded targets
        self.recorrupted = recorrupted  # set: ... and on recorrupted sources

    def forward(self, x: torch.Tensor, y: torch.Tensor, real_x: Optional[torch.Tensor] = None) -> Outputs:
        if real_x is not None and real_x.shape[1:] == x.shape[1:]:
            # Real-scan pairs (only the forward direction has a truth to meet) share the
            # forward call: one larger batch keeps more convolutions on the CPU's fast path.
            both = self.generator(torch.cat([x, real_x.to(x.dtype)]), "forward")
            out = {"fake_y": both[:x.shape[0]], "fake_real": both[x.shape[0]:]}
        else:
            out = {"fake_y": self.generator(x, "forward")}
            if real_x is not None:
                out["fake_real"] = self.generator(real_x, "forward")
        out["fake_x"] = self.generator(y, "inverse")
        if self.unpaired:
            out["cycle_x"] = self.generator(out["fake_y"], "inverse")
            out["cycle_y"] = self.generator(out["fake_x"], "forward")
            if self.identity:
                out["identity_y"] = self.generator(y, "forward")
                out["identity_x"] = self.generator(x, "inverse")
            if self.degrade is not None:
                out["fake_degraded"] = forward_on_degraded(self.generator, self.degrade, y)
            if self.recorrupted is not None:
                out["fake_recorrupted"], out["recorrupted_answer"] = forward_on_recorrupted(
                    self.generator, self.recorrupted, x)
        return out


class DiscriminatorPhase(nn.Module):
    """Both discriminators in one module call (one forward per backward under DDP)."""

    def __init__(self, d_x: nn.Module, d_y: nn.Module):
        super().__init__()
        self.d_x = d_x
        self.d_y = d_y

    def forward(self, inputs_y: torch.Tensor, inputs_x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.d_y(inputs_y), self.d_x(inputs_x)


class Objective:
    """The losses of one training configuration for one task.

    ``factors_zyx`` are the super-resolution factors per axis (z, y, x), used by the
    degradation-consistency terms; ignored for the kernel task."""

    def __init__(self, config: ObjectiveConfig, task: str, factors_zyx: Optional[Sequence[int]] = None,
                 recorrupted_pairs: Optional[RecorruptedPairs] = None, prior_taps: int = 0):
        self.config = config
        self.task = task
        self.paired = config.mode == "paired"
        self.gan_loss = GANLoss(config.gan_loss)
        check_terms_for_task(config, task, prior_taps)
        #: The super-resolution operator (physics terms, patch checks, slab term); None for kernels.
        self.degrade: Optional[LowResolution] = None
        #: What makes a target patch a source for the degraded-pairs term, where it is on.
        self.pair_degradation: Optional[LowResolution] = None
        #: The kernel task's recorrupted pairs, where they are on.
        self.recorrupted_pairs: Optional[RecorruptedPairs] = None
        if task == "super_resolution":
            if not factors_zyx:
                raise ConfigError("super-resolution training needs the dataset's factors_xyz (manifest task entry)")
            self.degrade = LowResolution(factors_zyx)
            self.pair_degradation = self.degrade if self.uses_degraded_pairs else None
        elif config.lambda_recorrupted_pairs > 0:
            if recorrupted_pairs is None:
                raise ConfigError("the kernel task's recorrupted pairs need the source domain's measured noise")
            self.recorrupted_pairs = recorrupted_pairs

    # ---------------------------------------------------------------- generator outputs
    @property
    def uses_identity(self) -> bool:
        return not self.paired and self.config.lambda_identity > 0

    @property
    def uses_degraded_pairs(self) -> bool:
        return self.config.lambda_degraded_pairs > 0

    def generator_phase(self, generator: nn.Module) -> GeneratorPhase:
        return GeneratorPhase(generator, unpaired=not self.paired, identity=self.uses_identity,
                              degrade=self.pair_degradation, recorrupted=self.recorrupted_pairs)

    # ---------------------------------------------------------------- discriminator inputs
    @property
    def discriminator_channels(self) -> int:
        return (2 if self.paired else 1) + (1 if self.config.texture_discriminator else 0)

    def discriminator_view(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """What a discriminator sees of ``image``: the condition (paired: the input, on the
        image's grid), the image, and (texture_discriminator) the image's high-pass. Always on
        the finer of the two grids: the coarse patches of a generator that upsamples inside
        (8 voxels in z) are too small for a PatchGAN on their own grid."""
        if image.shape[2:].numel() < condition.shape[2:].numel():
            image = on_grid(image, condition.shape[2:])
        parts: List[torch.Tensor] = []
        if self.paired:
            parts.append(on_grid(condition, image.shape[2:]).to(image.dtype))
        parts.append(image)
        if self.config.texture_discriminator:
            parts.append(high_pass(image))
        return torch.cat(parts, 1) if len(parts) > 1 else image

    def discriminator_batches(self, x: torch.Tensor, y: torch.Tensor, out: Outputs, pool_x: ImagePool,
                              pool_y: ImagePool) -> Tuple[torch.Tensor, torch.Tensor]:
        """(real then generated) inputs of D_Y and of D_X for the discriminator step."""
        fake_y, fake_x = out["fake_y"].detach(), out["fake_x"].detach()
        if not self.paired:  # CycleGAN: the discriminators see a history of generated patches
            fake_y = pool_y.query(fake_y).to(y.dtype)
            fake_x = pool_x.query(fake_x).to(x.dtype)
        inputs_y = torch.cat([self.discriminator_view(y, x), self.discriminator_view(fake_y, x)], 0)
        inputs_x = torch.cat([self.discriminator_view(x, y), self.discriminator_view(fake_x, y)], 0)
        return inputs_y, inputs_x

    def discriminator_loss(self, scores_y: torch.Tensor, scores_x: torch.Tensor, batch: int) -> torch.Tensor:
        gan = self.gan_loss
        return 0.5 * (gan(scores_y[:batch], True) + gan(scores_y[batch:], False)
                      + gan(scores_x[:batch], True) + gan(scores_x[batch:], False))

    # ---------------------------------------------------------------- generator loss
    def generator_loss(self, x: torch.Tensor, y: torch.Tensor, out: Outputs, d_x: nn.Module,
                       d_y: nn.Module, real_y: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The generator's total loss and its named terms (unweighted) for logging.
        ``real_y``: the real slices of the real-scan batch whose output is ``out["fake_real"]``."""
        score_y = d_y(self.discriminator_view(out["fake_y"], x))
        score_x = d_x(self.discriminator_view(out["fake_x"], y))
        terms = {"g_gan": self.gan_loss(score_y, True) + self.gan_loss(score_x, True)}
        terms.update(self.reconstruction_terms(x, y, out))
        if "fake_real" in out and real_y is not None:
            with torch.autocast(x.device.type, enabled=False):
                terms["g_slab"] = self.slab_terms(out["fake_real"], real_y)["l1"]
        return self.weighted_total(terms), terms

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """Refuse target patches the super-resolution degradation cannot tile exactly."""
        if self.degrade is None:
            return
        if any(int(n) % f for n, f in zip(patch_size, self.degrade.factors)):
            raise ConfigError(f"data.patch_size {tuple(patch_size)} (z, y, x) must be divisible by the "
                              f"super-resolution factors {self.degrade.factors} (z, y, x)")

    def reconstruction_terms(self, x: torch.Tensor, y: torch.Tensor, out: Outputs) -> Dict[str, torch.Tensor]:
        """Every generator term except the adversarial one (unweighted), in float32 even under
        autocast: the physics terms compare values a few HU apart."""
        with torch.autocast(x.device.type, enabled=False):
            return self._reconstruction_terms(x, y, out)

    def _reconstruction_terms(self, x: torch.Tensor, y: torch.Tensor, out: Outputs) -> Dict[str, torch.Tensor]:
        l1 = functional.l1_loss
        fake_y, fake_x = out["fake_y"].float(), out["fake_x"].float()
        if self.paired:
            return {"g_l1": l1(fake_y, y.float()) + l1(fake_x, x.float())}
        terms = {"g_cycle": l1(out["cycle_x"].float(), x.float()) + l1(out["cycle_y"].float(), y.float())}
        if "identity_y" in out:
            if x.shape != y.shape:
                raise ConfigError("objective.lambda_identity needs source and target patches on one grid; "
                                  "set it to 0 for this generator")
            terms["g_identity"] = l1(out["identity_y"].float(), y.float()) + l1(out["identity_x"].float(), x.float())
        physics = self.physics_terms(x, y, fake_y, fake_x)
        terms["g_physics"] = physics["forward"] + physics["inverse"]
        if self.config.lambda_spectrum > 0:
            terms["g_spectrum"] = spectrum_distance(fake_y, y) + spectrum_distance(fake_x, x)
        if "fake_degraded" in out:
            error = out["fake_degraded"].float() - y.float()
            terms["g_degraded_pairs"] = error.abs().mean()
            if self.config.lambda_degraded_means > 0:
                terms["g_degraded_means"] = low_pass(error, self.config.physics_pool).abs().mean()
        if "fake_recorrupted" in out:
            terms["g_recorrupted_pairs"] = recorrupted_error(out["fake_recorrupted"], out["recorrupted_answer"])
        return terms

    def weighted_total(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        config = self.config
        weights = {"g_gan": 1.0, "g_l1": config.lambda_l1, "g_cycle": config.lambda_cycle,
                   "g_identity": config.lambda_cycle * config.lambda_identity,
                   "g_physics": config.lambda_physics, "g_spectrum": config.lambda_spectrum,
                   "g_slab": config.lambda_slab, "g_degraded_pairs": config.lambda_degraded_pairs,
                   "g_degraded_means": config.lambda_degraded_means,
                   "g_recorrupted_pairs": config.lambda_recorrupted_pairs}
        return sum(weights[name] * value for name, value in terms.items())

    # ---------------------------------------------------------------- real-scan pairs
    def slab_terms(self, fake: torch.Tensor, real: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The slab-consistency error of an output on a real scan: each block of z-factor
        output slices averaged (exactly the real slab it lies in, on the cell-centred fine
        grid) against the real slices, without :data:`SLAB_MARGIN_ZYX` voxels at each face
        (a patch's replicated borders are not the context the whole scan gives). Returns the
        mean absolute ("l1") and squared ("mse") differences, in network units."""
        if self.degrade is None:
            raise ConfigError("the slab term is for super-resolution")
        depth = self.degrade.factors[0]
        if fake.shape[2] != depth * real.shape[2] or fake.shape[3:] != real.shape[3:]:
            raise ConfigError(f"slab term: an output of {tuple(fake.shape[2:])} voxels (z, y, x) is not "
                              f"{depth} slices per real slice of {tuple(real.shape[2:])}")
        slabs = functional.avg_pool3d(fake.float(), (depth, 1, 1), stride=(depth, 1, 1))
        keep = (Ellipsis,) + tuple(slice(m, n - m) if n > 2 * m else slice(None)
                                   for m, n in zip(SLAB_MARGIN_ZYX, real.shape[2:]))
        difference = slabs[keep] - real.float()[keep]
        return {"l1": difference.abs().mean(), "mse": difference.pow(2).mean()}

    # ---------------------------------------------------------------- pair-free terms
    def physics_terms(self, x: torch.Tensor, y: torch.Tensor, fake_y: torch.Tensor,
                      fake_x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Consistency with the known physics, zero at the right answer, without pairs.

        kernel: both kernels pass the lowest frequencies, so a conversion keeps the local means
        (``physics_pool``^3 averages) of its input, in both directions. super_resolution: the
        output, degraded by the known slice profile and in-plane blur, is the input
        (|LR(G(x)) - x|); the inverse direction is that degradation: |F(y) - LR(y)|."""
        l1 = functional.l1_loss
        x, y = x.float(), y.float()
        if self.degrade is None:
            size = self.config.physics_pool
            return {"forward": l1(low_pass(fake_y, size), low_pass(on_grid(x, fake_y.shape[2:]), size)),
                    "inverse": l1(low_pass(fake_x, size), low_pass(on_grid(y, fake_x.shape[2:]), size))}
        coarse_y = self.degrade(fake_y)
        coarse_shape = coarse_y.shape[2:]
        expected_x = self.degrade(y)
        margin = DEGRADATION_MARGIN
        return {"forward": l1(_interior(coarse_y, margin), _interior(on_grid(x, coarse_shape), margin)),
                "inverse": l1(_interior(on_grid(fake_x, expected_x.shape[2:]), margin), _interior(expected_x, margin))}

    def pair_free_criterion(self, x: torch.Tensor, y: torch.Tensor, fake_y: torch.Tensor,
                            fake_x: torch.Tensor, fake_degraded: Optional[torch.Tensor] = None,
                            recorrupted: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, float]:
        """Checkpoint selection without pairs: physics consistency of both directions plus the
        spectrum distance of G(x) to the targets and of F(y) to the sources, weighted as in
        training (each weight 1 where training gives it none); with degraded pairs also
        |G(LR(y)) - y| (``fake_degraded`` = G(LR(y))) and its local-mean error, with recorrupted
        pairs their squared error (``recorrupted`` = (G(x1), answer)), weighted as in training."""
        physics = self.physics_terms(x, y, fake_y, fake_x)
        physics_value = float(physics["forward"] + physics["inverse"])
        spectrum_value = float(spectrum_distance(fake_y, y) + spectrum_distance(fake_x, x))
        physics_weight = self.config.lambda_physics or 1.0
        spectrum_weight = self.config.lambda_spectrum or 1.0
        metrics = {"val_physics": physics_value, "val_spectrum": spectrum_value,
                   "val_unpaired": physics_weight * physics_value + spectrum_weight * spectrum_value}
        if fake_degraded is not None:
            error = fake_degraded.float() - y.float()
            metrics["val_degraded_pairs"] = float(error.abs().mean())
            metrics["val_degraded_means"] = float(low_pass(error, self.config.physics_pool).abs().mean())
            metrics["val_unpaired"] += (self.config.lambda_degraded_pairs * metrics["val_degraded_pairs"]
                                        + self.config.lambda_degraded_means * metrics["val_degraded_means"])
        if recorrupted is not None:
            metrics["val_recorrupted_pairs"] = float(recorrupted_error(*recorrupted))
            metrics["val_unpaired"] += self.config.lambda_recorrupted_pairs * metrics["val_recorrupted_pairs"]
        return metrics
