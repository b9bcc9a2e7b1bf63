"""GPU smoke test: a few EPS steps and subnet evaluations of ofa-mbv3-w1.0 at batch 256.

Synthetic 64x64 data (no download), bf16 autocast and channels-last on CUDA; prints images/s.
Short enough to run in one go on a lent GPU machine:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/gpu_smoke.py --accelerator cuda --steps 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY)
from natv2.accelerator import resolve_accelerator
from natv2.data import BatchTransform, DatasetSplits, TensorImageSet
from natv2.evaluate import EvalData, evaluate_subnet
from natv2.supernet import build_supernet, config_for_encoding
from natv2.train import SupernetTrainer, make_schedule


def synthetic(n: int, classes: int, seed: int) -> DatasetSplits:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    full = TensorImageSet(x, y, "synthetic")
    k = n // 10
    return DatasetSplits(
        name="synthetic64",
        num_classes=classes,
        storage_size=64,
        mean=mean,
        std=std,
        train=full.subset(np.arange(2 * k, n)),
        val=full.subset(np.arange(0, k)),
        test=full.subset(np.arange(k, 2 * k)),
        transform=BatchTransform(mean, std, "crop_flip", pad=4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--evals", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--encoding", default="exits+parallel")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    acc = resolve_accelerator(args.accelerator)
    data = synthetic(args.batch * (args.steps + 2), 200, 0)
    cfg = config_for_encoding(args.encoding, preset="ofa-mbv3", width=1.0, num_classes=200)
    net = build_supernet(cfg, seed=0)
    sched = make_schedule("paper", net.space)
    last = sched.phases[-1]  # everything unlocked, 4 subnets per batch, teacher KD
    from dataclasses import replace

    sched = replace(
        sched, phases=(replace(last, epochs=1),), steps_per_epoch=args.steps, batch_size=args.batch
    )
    trainer = SupernetTrainer(net, data, acc, sched, seed=0)
    trainer.extract_teacher()
    if acc.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.run()
    if acc.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    images = args.steps * args.batch
    print(
        f"device: {acc.device} ({torch.cuda.get_device_name(acc.device) if acc.is_cuda else 'cpu'})"
    )
    print(
        f"EPS training ({last.subnets_per_batch} subnets + teacher per batch): "
        f"{images / seconds:,.0f} images/s ({seconds:.1f} s for {args.steps} steps)"
    )
    cache = EvalData(data, data.val, data.calibration_subset(args.batch), acc, args.batch)
    space = net.space
    archs = [space.decode(v) for v in space.sample(args.evals, np.random.default_rng(0))]
    evaluate_subnet(net, archs[0], cache)  # warm-up (cuDNN autotuning, caches)
    t0 = time.perf_counter()
    for arch in archs:
        evaluate_subnet(net, arch, cache)
    seconds = time.perf_counter() - t0
    per = len(data.val) + args.batch
    print(
        f"subnet evaluation (BN recalibration + val): {args.evals * per / seconds:,.0f} images/s, "
        f"{seconds / args.evals:.2f} s per subnet"
    )


if __name__ == "__main__":
    main()
