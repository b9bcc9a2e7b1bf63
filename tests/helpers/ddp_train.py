"""Worker for the torchrun test: a few EPS steps on digits, each rank saves its weights.

Run as ``python -m torch.distributed.run --nproc_per_node 2 ddp_train.py OUT_DIR``; with
``--single`` (no torchrun) it runs the equivalent single process with two micro-batches.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from natv2.accelerator import resolve_accelerator, shutdown
from natv2.data import load_dataset
from natv2.supernet import build_supernet, config_for_encoding
from natv2.train import ElasticChoices, Phase, Schedule, SupernetTrainer


def schedule() -> Schedule:
    full = ElasticChoices((48,), (7,), (6,), (4,), (7,), (5,))
    elastic = ElasticChoices((48,), (7, 5, 3), (6, 4, 3), (4, 3, 2), tuple(range(1, 8)), (5, 4, 3))
    phases = (Phase("warmup", 1, 0.05, full), Phase("kernel", 1, 0.05, elastic, 2))
    # no KD: BatchNorm running statistics (which a teacher would use) are per rank under DDP
    return Schedule("ddp-test", phases, batch_size=32, steps_per_epoch=2, kd_ratio=0.0)


def main() -> None:
    out = sys.argv[1]
    single = "--single" in sys.argv
    torch.set_num_threads(1)
    acc = resolve_accelerator("cpu")
    data = load_dataset("digits")
    net = build_supernet(config_for_encoding("exits+parallel", preset="tiny", width=1.0), seed=3)
    trainer = SupernetTrainer(
        net, data, acc, schedule(), seed=5, micro_batches=2 if single else 1, show_progress=False
    )
    trainer.run()
    name = "single" if single else f"rank{acc.rank}"
    torch.save({k: v for k, v in net.named_parameters()}, os.path.join(out, f"{name}.pt"))
    shutdown(acc)


if __name__ == "__main__":
    main()
