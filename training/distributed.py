"""This process's place in a torchrun job: rank, world size and device."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process validates, logs and saves."""
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group if RANK/WORLD_SIZE say so; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        device = (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Distributed(dist.get_rank(), world_size, device)
    return Distributed(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
