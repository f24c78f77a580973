"""The networks, optimizers, image pools and mixed-precision settings of one training run,
and their checkpoint state (through :mod:`RevGANCore.checkpoints`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .checkpoints import pack_training_state, unpack_training_state
from .config import TrainConfig
from .errors import ConfigError
from .losses import ImagePool
from .networks import GeneratorConfig, PatchDiscriminator3d, RevGANGenerator3d
from .objectives import DiscriminatorPhase, Objective


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``optim.amp`` on ``device`` (None: full float32)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("optim.amp = fp16 needs a CUDA device (use bf16 on the CPU)")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class TrainingModels:
    generator: RevGANGenerator3d
    d_x: PatchDiscriminator3d
    d_y: PatchDiscriminator3d
    g_phase: nn.Module          # Objective.generator_phase, wrapped in DDP when distributed
    d_phase: nn.Module          # DiscriminatorPhase, likewise
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    pool_x: ImagePool
    pool_y: ImagePool
    amp_dtype: Optional[torch.dtype]
    scaler: torch.amp.GradScaler
    device: torch.device

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def to_device(self, tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last_3d) if channels_last else tensor

    # ---------------------------------------------------------------- checkpoint state
    def _parts(self):
        return ({"d_x": self.d_x, "d_y": self.d_y}, {"opt_g": self.opt_g, "opt_d": self.opt_d},
                {"pool_x": self.pool_x, "pool_y": self.pool_y})

    def state(self, scalars: dict) -> Tuple[Dict[str, torch.Tensor], dict]:
        """Tensors and JSON of everything but the generator (which goes to the model file)."""
        modules, optimizers, pools = self._parts()
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        return pack_training_state(modules, optimizers, pools, self.device, {**scalars, "scaler": scaler})

    def load_state(self, generator_state: dict, tensors: Dict[str, torch.Tensor], state: dict) -> dict:
        self.generator.load_state_dict(generator_state)
        modules, optimizers, pools = self._parts()
        scalars = unpack_training_state(tensors, state, modules, optimizers, pools, self.device)
        if scalars.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(scalars["scaler"])
        return scalars


def build_training_models(config: TrainConfig, objective: Objective, device: torch.device,
                          distributed: bool, generator_config: Optional[GeneratorConfig] = None) -> TrainingModels:
    """Networks seeded with ``config.seed``, Adam for the generator and for both discriminators.
    ``generator_config``: the generator to build (default ``config.model.generator``; training
    passes the one with the task's in-network upsampling, see config.generator_for_task)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick the fastest 3D convs
    torch.manual_seed(config.seed)
    generator = RevGANGenerator3d(config=generator_config or config.model.generator).to(device)
    d_config = dataclasses.replace(config.model.discriminator, in_channels=objective.discriminator_channels)
    d_x = PatchDiscriminator3d(config=d_config).to(device)
    d_y = PatchDiscriminator3d(config=d_config).to(device)
    if config.optim.channels_last:
        for module in (generator, d_x, d_y):
            module.to(memory_format=torch.channels_last_3d)
    g_phase: nn.Module = objective.generator_phase(generator)
    d_phase: nn.Module = DiscriminatorPhase(d_x, d_y)
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_phase = nn.parallel.DistributedDataParallel(g_phase, device_ids=ids)
        d_phase = nn.parallel.DistributedDataParallel(d_phase, device_ids=ids)
    optim = config.optim
    betas = (optim.beta1, optim.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=optim.lr, betas=betas)
    opt_d = torch.optim.Adam(list(d_x.parameters()) + list(d_y.parameters()), lr=optim.lr, betas=betas)
    pool_size = 0 if objective.paired else config.objective.pool_size
    dtype = amp_dtype(optim.amp, device)
    return TrainingModels(generator, d_x, d_y, g_phase, d_phase, opt_g, opt_d,
                          ImagePool(pool_size, seed=config.seed + 1), ImagePool(pool_size, seed=config.seed + 2),
                          dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16), device)
