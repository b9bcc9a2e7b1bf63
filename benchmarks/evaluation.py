"""Subnet evaluation speed: materialised plain module vs the supernet with the arch active.

natv2.evaluate uses materialised modules; this prints both timings so the choice can be
re-checked on other machines.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/evaluation.py --n 10
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY)
from natv2.accelerator import resolve_accelerator
from natv2.data import load_dataset
from natv2.evaluate import EvalData, evaluate_subnet, recalibrate_bn
from natv2.supernet import build_supernet, config_for_encoding


@torch.no_grad()
def supernet_evaluation(net, arch, cache: EvalData) -> float:
    """The same work (BN recalibration + validation) on the sliced supernet itself."""
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    net.set_active(arch)
    recalibrate_bn(net, cache.batches("calib", arch.resolution))
    correct = n = 0
    for x, y in cache.batches("eval", arch.resolution):
        correct += int((net(x).argmax(1) == y).sum())
        n += len(y)
    net.load_state_dict(saved)
    return correct / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    acc = resolve_accelerator("cpu")
    data = load_dataset(args.dataset)
    net = build_supernet(config_for_encoding("exits+parallel", preset=args.preset, width=1.0))
    cache = EvalData(data, data.val, data.calibration_subset(256), acc)
    archs = [net.space.decode(v) for v in net.space.sample(args.n, np.random.default_rng(0))]
    for a in archs[:2]:
        evaluate_subnet(net, a, cache)
        supernet_evaluation(net, a, cache)
    t0 = time.perf_counter()
    for a in archs:
        evaluate_subnet(net, a, cache)
    plain = (time.perf_counter() - t0) / len(archs)
    t0 = time.perf_counter()
    for a in archs:
        supernet_evaluation(net, a, cache)
    sliced = (time.perf_counter() - t0) / len(archs)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"{args.dataset}: {len(data.val)} val + 256 calibration images, {args.preset} preset")
    print(f"materialised module: {plain:.3f} s per subnet")
    print(f"supernet, arch active: {sliced:.3f} s per subnet ({sliced / plain:.2f}x)")


if __name__ == "__main__":
    main()
