"""``revgan bench memory``: the seed's Table 1 (model MiB | activations, reversible |
activations, naive), plus per-block checkpointing, for several core depths.

Activations are measured as the bytes of the unique storages saved for backward during the
generator's forward passes in both directions (``torch.autograd.graph.saved_tensors_hooks``),
parameters excluded; this includes the one tensor the reversible function keeps. On CUDA the
peak of ``torch.cuda.max_memory_allocated`` over a whole training step, minus what was
allocated before it, is reported as well.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import torch

from ..devices import describe_device, resolve_device
from .variants import VARIANTS, build_variants

MIB = 2.0 ** 20


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of distinct non-parameter storages autograd keeps after both generator passes."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out_y = model(x, "forward")
        out_x = model(y, "inverse")
    del out_y, out_x  # frees the graphs; backward itself is checked by the tests
    return sum(storages.values())


def cuda_peak_step_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out_y = model(x, "forward")
    out_x = model(y, "inverse")
    (out_y.sum() + out_x.sum()).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    model.zero_grad(set_to_none=True)
    return peak


def run_memory_benchmark(depths: Iterable[int] = (0, 1, 2, 4, 8), patch: int = 64, ngf: int = 16,
                         device: str = "cpu", batch: int = 1) -> dict:
    torch_device = resolve_device(device)
    rows: List[dict] = []
    for depth in depths:
        models = build_variants(ngf, depth, torch_device)
        generator = torch.Generator(device="cpu").manual_seed(depth)
        x = torch.randn(batch, 1, patch, patch, patch, generator=generator).to(torch_device)
        y = torch.randn(batch, 1, patch, patch, patch, generator=generator).to(torch_device)
        params = sum(p.numel() * p.element_size() for p in models["reversible"].parameters())
        row = {"depth": int(depth), "params_mib": round(params / MIB, 3)}
        for name in VARIANTS:
            row[f"activations_{name}_mib"] = round(saved_activation_bytes(models[name], x, y) / MIB, 2)
        if torch_device.type == "cuda":
            for name in VARIANTS:
                row[f"cuda_peak_{name}_mib"] = round(cuda_peak_step_bytes(models[name], x, y) / MIB, 2)
        rows.append(row)
        del models
    return {"device": describe_device(torch_device), "patch": [batch, 1, patch, patch, patch],
            "ngf": ngf, "rows": rows}


def format_memory_table(result: dict) -> str:
    cuda = any("cuda_peak_naive_mib" in row for row in result["rows"])
    header = ["depth", "model MiB", "activations reversible", "activations naive", "activations checkpoint"]
    if cuda:
        header += ["CUDA peak reversible", "CUDA peak naive", "CUDA peak checkpoint"]
    lines = [f"Generator activation memory (MiB), both directions, patch {result['patch']}, "
             f"ngf {result['ngf']}, {result['device']}",
             " | ".join(header), " | ".join("---" for _ in header)]
    for row in result["rows"]:
        cells = [str(row["depth"]), f"{row['params_mib']:.2f}", f"{row['activations_reversible_mib']:.1f}",
                 f"{row['activations_naive_mib']:.1f}", f"{row['activations_checkpoint_mib']:.1f}"]
        if cuda:
            cells += [f"{row[f'cuda_peak_{name}_mib']:.1f}" for name in ("reversible", "naive", "checkpoint")]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
