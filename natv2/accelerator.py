"""Where computation runs (``--accelerator``) and how processes cooperate under torchrun.

``--device`` always names a device profile; the compute device is the accelerator, so the two
never collide.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from natv2.errors import Natv2Error


@dataclass(frozen=True)
class Accelerator:
    """The compute device and this process's place in a (possibly distributed) run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0

    def autocast(self):
        """bf16 autocast on CUDA (faster, no loss scaling needed); a no-op on CPU."""
        if self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def loader_kwargs(self) -> dict:
        """Pinned memory and workers on CUDA; on CPU the batches are built in-process."""
        if self.is_cuda:
            return {"num_workers": min(8, os.cpu_count() or 1), "pin_memory": True}
        return {"num_workers": 0, "pin_memory": False}

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.is_cuda and x.ndim == 4 else x
        )

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_accelerator(spec: str = "auto") -> Accelerator:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; joins torchrun's process group when run by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        device = torch.device("cpu")
    elif spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise Natv2Error(
                f"--accelerator {spec}: no CUDA device is available here; use --accelerator cpu"
            )
        index = local if spec == "cuda" else int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise Natv2Error(
                f"--accelerator {spec}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        raise Natv2Error(f"--accelerator {spec!r}: use auto, cpu, cuda or cuda:N")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Accelerator(device=device, rank=rank, world_size=world, local_rank=local)


def shutdown(acc: Accelerator) -> None:
    if acc.distributed and dist.is_initialized():
        dist.destroy_process_group()
