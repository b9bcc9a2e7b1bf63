"""Data-parallel training on this machine's CPU cores, without torchrun.

On a small CPU machine one training process with two threads runs no faster than with one: the
tiny supernet's layers are too small to split across cores (``benchmarks/train_speed.py``: a
``scratch`` step took 1.09 s with 1 thread, 1.12 s with 2). Two processes of one thread each,
every one computing half of each batch and averaging gradients through gloo (torch
DistributedDataParallel, the code path torchrun uses), took 0.69 s. ``spawn_data_parallel``
starts them on 127.0.0.1 and waits; a ``Natv2Error`` in a worker comes back as the same one-line
error in the caller.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from natv2.accelerator import Accelerator, resolve_accelerator, shutdown
from natv2.errors import Natv2Error


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn, args: tuple, world: int, port: int, errors) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    acc = resolve_accelerator("cpu")
    try:
        fn(acc, *args)
    except Natv2Error as exc:
        errors.put(str(exc))
        sys.exit(2)
    finally:
        shutdown(acc)


def spawn_data_parallel(fn: Callable[..., Any], args: tuple, processes: int) -> None:
    """Run ``fn(acc, *args)`` in ``processes`` CPU processes of one DDP group (rank 0 writes).

    ``fn`` and ``args`` must pickle (a module-level function, plain data)."""
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    try:
        mp.spawn(
            _worker,
            args=(fn, args, processes, _free_port(), errors),
            nprocs=processes,
            join=True,
        )
    except mp.ProcessExitedException:
        if not errors.empty():
            raise Natv2Error(errors.get()) from None
        raise


def run_local(acc: Accelerator, processes: int) -> bool:
    """Whether to spread this CPU training over ``processes`` local processes."""
    return processes > 1 and acc.device.type == "cpu" and not acc.distributed


def default_processes(acc: Accelerator, micro_batches: int) -> int:
    """Local CPU processes for a schedule that splits each batch into ``micro_batches``: one
    per micro-batch while cores last (1 on CUDA or under torchrun, where ranks exist already)."""
    if acc.device.type != "cpu" or acc.distributed:
        return 1
    n = min(usable_cores(), micro_batches)
    while micro_batches % n:  # every process must get the same number of micro-batches
        n -= 1
    return max(n, 1)
