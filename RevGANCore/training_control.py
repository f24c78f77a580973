"""The controls of a training run: the learning-rate schedule, stopping on SIGINT/SIGTERM,
weight fingerprints (ranks in step) and the code's git commit (provenance)."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn


def learning_rate_factor(step: int, iterations: int, decay_start: float) -> float:
    """Constant, then linear decay to zero at the last iteration (pix2pix/CycleGAN)."""
    start = int(round(decay_start * iterations))
    if step < start or iterations <= start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / float(iterations - start))


def parameter_fingerprint(module: nn.Module) -> List[float]:
    """Two numbers that differ when any weight differs (sum and position-weighted sum)."""
    total, weighted = 0.0, 0.0
    for index, parameter in enumerate(module.parameters()):
        values = parameter.detach().double().flatten()
        total += float(values.sum())
        weights = torch.linspace(1.0, 2.0, values.numel(), dtype=torch.float64, device=values.device)
        weighted += float((values * weights).sum()) * (index + 1)
    return [total, weighted]


def git_commit() -> Optional[str]:
    try:
        folder = Path(__file__).resolve().parent.parent
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=5)
        return result.stdout.strip() or None if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals only work there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
