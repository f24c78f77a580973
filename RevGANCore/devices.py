"""Choosing the compute device: "auto" prefers CUDA, then the CPU (MPS only when asked)."""

from __future__ import annotations

import torch

from .errors import RevGANError


def resolve_device(name: str = "auto", allow_mps: bool = False) -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:N" or "mps" into an available ``torch.device``.

    "auto" picks CUDA when available, else MPS if ``allow_mps`` (off by default: some 3D
    convolutions are missing or slow there), else the CPU. Asking for a device that is not
    available is an error, not a silent fallback."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if allow_mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise RevGANError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RevGANError(f"device {name!r} asked for, but this PyTorch ({torch.__version__}) sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RevGANError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    elif device.type == "mps" and not _mps_available():
        raise RevGANError("device 'mps' asked for, but MPS is not available in this PyTorch")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RevGANError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: torch.device) -> str:
    """A short human description, e.g. "cuda:0 (NVIDIA H100, 80 GiB)" or "cpu (2 threads)"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
