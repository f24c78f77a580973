"""The memory-saving core under DistributedDataParallel (2 CPU processes, gloo) and autocast."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from RevGANCore.networks import RevGANGenerator3d


def _model(memory_saving: bool) -> RevGANGenerator3d:
    torch.manual_seed(0)
    model = RevGANGenerator3d(ngf=4, depth=2, memory_saving=memory_saving)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 8, 8, 8, generator=generator)
    upstream = torch.randn(4, 1, 8, 8, 8, generator=generator)
    return x, upstream


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model(memory_saving=True))
        x, upstream = _batch()
        shard = slice(rank * 2, rank * 2 + 2)
        out = model(x[shard], "forward") + model.module(x[shard], "inverse") * 0  # both directions used
        # DDP averages gradients over ranks: scale so the sum matches the full-batch loss.
        (out * upstream[shard]).sum().mul(world).backward()
        grads = {name: p.grad.clone() for name, p in model.module.named_parameters() if p.grad is not None}
        torch.save(grads, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_equal_single_process(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    reference = _model(memory_saving=False)
    x, upstream = _batch()
    (reference(x, "forward") * upstream).sum().backward()
    for rank in range(world):
        # Our own test artefacts, written a moment ago by the workers (tensors only).
        grads = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        assert grads, "no gradients were produced"
        for name, p in reference.named_parameters():
            if name.startswith(("encoder_x", "decoder_y", "core")):
                assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-6), name


def test_memory_saving_matches_plain_under_cpu_autocast():
    saving = _model(memory_saving=True)
    plain = copy.deepcopy(saving)
    plain.core.memory_saving = False
    x, upstream = _batch()
    grads = []
    for model in (saving, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, "inverse")
        loss = (out.float() * upstream).sum()
        grads.append(torch.autograd.grad(loss, [p for n, p in model.named_parameters()
                                                if n.startswith(("encoder_y", "core", "decoder_x"))]))
    for g_s, g_p in zip(*grads):
        # The backward recomputation replays the forward's autocast state, so it reproduces
        # the forward's bf16 rounding; recomputing in float32 instead differs by ~1e-2.
        assert float((g_s - g_p).norm() / g_p.norm().clamp_min(1e-12)) < 1e-5
