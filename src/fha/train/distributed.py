"""Several processes (``torchrun --nproc_per_node N -m fha train ...``): who am I, and collectives.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
without them the run is a single process and every helper here is a no-op. The process
group uses NCCL between GPUs and Gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fha.errors import FhaError, one_line


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints progress."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"])), world_size)


def local_device(info: DistInfo, device: torch.device) -> torch.device:
    """On CUDA each process drives the GPU of its local rank."""
    if info.enabled and device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def init_process_group(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        with peers_alive(info.rank):
            dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class PeerFailed(FhaError):
    """Another process of the run stopped, so a collective operation could not complete."""


@contextlib.contextmanager
def peers_alive(rank: int | None = None) -> Iterator[None]:
    """Report a collective that fails because another process died as one line, not a traceback;
    that process prints the actual cause. `rank`: this process's, for failures before the
    process group exists (while joining it)."""
    try:
        yield
    except (RuntimeError, dist.DistError) as err:
        if dist.is_initialized():
            rank = dist.get_rank()
        who = "?" if rank is None else rank
        raise PeerFailed(
            f"process {who}: another process of this run stopped ({one_line(err)}); its own message says why"
        ) from None


def barrier() -> None:
    if dist.is_initialized():
        with peers_alive():
            dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over all processes (in place; returned for convenience)."""
    if dist.is_initialized():
        with peers_alive():
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
