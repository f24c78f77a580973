"""Multi-process training through PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m RevGANCore train CONFIG`` sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`distributed_context` reads them and joins the process group (NCCL on
CUDA, gloo on the CPU). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_floats(self, values: List[float]) -> List[List[float]]:
        """Every rank's ``values`` (same length on each), on every rank."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if not self.enabled:
            return [tensor.tolist()]
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        gathered = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return [t.cpu().tolist() for t in gathered]

    def broadcast_flag(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (e.g. a stop request)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0])
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)


def distributed_context(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        # Leave together: rank 0 still writes the summary while the others would already tear
        # down their gloo connections (seen as an abort, "terminate called without an active
        # exception", of a rank that had finished its work).
        dist.barrier()
        dist.destroy_process_group()
