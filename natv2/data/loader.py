"""DataLoader construction: batch order fixed by a seed, single process or distributed."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from natv2.errors import Natv2Error


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of uint8 batches whose order depends only on ``seed`` (and the epoch).

    Single process: a seeded ``torch.Generator`` drives the shuffle (each epoch continues the
    stream, so epochs differ but runs repeat). Distributed: a ``DistributedSampler`` with
    ``seed``; call ``loader.sampler.set_epoch(epoch)`` each epoch, as usual.
    """
    if batch_size < 1:
        raise Natv2Error(f"batch size must be at least 1, got {batch_size}")
    sampler: DistributedSampler[Any] | None = None
    generator: torch.Generator | None = None
    if distributed:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        sampler = DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
    else:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=None if distributed else shuffle,  # the sampler shuffles
        sampler=sampler,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
