"""Worker for the torchrun tests: a few training steps on digits, each rank saves its weights.

Run as ``python -m torch.distributed.run --nproc_per_node 2 ddp_train.py OUT_DIR``; with
``--single`` (no torchrun) it runs the equivalent single process with two micro-batches.
``--schedule eps`` (default) runs two EPS phases without KD; ``--schedule sandwich`` runs
from-scratch sandwich steps with in-place distillation.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from natv2.accelerator import resolve_accelerator, shutdown
from natv2.data import load_dataset
from natv2.space import SearchSpace
from natv2.supernet import build_supernet, config_for_encoding
from natv2.train import ElasticChoices, Phase, Schedule, SupernetTrainer, sandwich_schedule


def eps_schedule() -> Schedule:
    full = ElasticChoices((48,), (7,), (6,), (4,), (7,), (5,))
    elastic = ElasticChoices((48,), (7, 5, 3), (6, 4, 3), (4, 3, 2), tuple(range(1, 8)), (5, 4, 3))
    phases = (Phase("warmup", 1, 0.05, full), Phase("kernel", 1, 0.05, elastic, 2))
    # no KD: BatchNorm running statistics (which a teacher would use) are per rank under DDP
    return Schedule("ddp-test", phases, batch_size=32, steps_per_epoch=2, kd_ratio=0.0)


def main() -> None:
    out = sys.argv[1]
    single = "--single" in sys.argv
    kind = sys.argv[sys.argv.index("--schedule") + 1] if "--schedule" in sys.argv else "eps"
    torch.set_num_threads(1)
    acc = resolve_accelerator("cpu")
    data = load_dataset("digits")
    encoding = "exits+parallel"
    net = build_supernet(config_for_encoding(encoding, preset="tiny", width=1.0), seed=3)
    if kind == "sandwich":
        # in-place distillation is computed per micro-batch (= per rank): KD stays on
        net.space = SearchSpace(encoding, resolutions=(48, 52), widths=(1.0,))
        schedule = sandwich_schedule("ddp-sandwich", 1, 0.1, 32, 2, 1)
    else:
        schedule = eps_schedule()
    trainer = SupernetTrainer(
        net, data, acc, schedule, seed=5, micro_batches=2 if single else 1, show_progress=False
    )
    trainer.run()
    name = "single" if single else f"rank{acc.rank}"
    torch.save({k: v for k, v in net.named_parameters()}, os.path.join(out, f"{name}.pt"))
    shutdown(acc)


if __name__ == "__main__":
    main()
