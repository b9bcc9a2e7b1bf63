"""How good are the supernet's subnets? Side by side with the physical limit.

For 5 fixed subnets spanning the space (minimal, maximal, and three at the 25/50/75 % MAC
quantiles of 400 subnets from NATv2's sampler with seed 0), this prints the test top-1 of

(a) the subnet taken from a pretrained supernet (BatchNorm recalibrated on 500 train images, no
    fine-tuning), once per training schedule given, and
(b) the same architecture trained alone from random weights for ``--alone-seconds`` (default 60)
    on this machine: AdamW 3e-3, batch 64, the dataset's training augmentation, the subnet's own
    resolution; BatchNorm recalibrated the same way,

with the wall time and steps of each, and (``--random``) the mean, min and max of (a) over 30
NATv2-sampled subnets per schedule, a figure of the whole space that is less noisy than five
subnets when schedules are compared. The supernets are trained by the same code the CLI uses
(``natv2.pretrain``) and kept in the natv2 cache, so the main job's supernet is reused when the
options match (``natv2 search`` on mnist5k pretrains ``scratch`` for ``tiny-w1.0``, seed 0).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/supernet_quality.py --dataset mnist5k \\
        --schedules scratch cpu-demo
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY before torch's OpenMP starts)
from natv2.accelerator import resolve_accelerator
from natv2.data import DatasetSplits, load_dataset, make_loader
from natv2.evaluate import EvalData, evaluate_subnet, recalibrate_bn, top1_and_loss
from natv2.pipeline import SearchRequest, pretrained_path
from natv2.pretrain import PretrainConfig, pretrain
from natv2.profiling.cost import subnet_cost
from natv2.space import Arch, SearchSpace
from natv2.supernet import build_supernet, config_for_encoding
from natv2.supernet.checkpoint import load_supernets
from natv2.supernet.config import layout_of
from natv2.supernet.materialize import materialize

ENCODING = "exits+parallel"
SUPERNET = "tiny-w1.0"


def fixed_subnets(space: SearchSpace, config) -> list[tuple[str, Arch]]:
    """Minimal, three MAC quantiles of a seeded NATv2 sample, maximal (in that order)."""
    rng = np.random.default_rng(0)
    sample = [space.decode(v) for v in space.sample(400, rng, "natv2")]
    sample.sort(key=lambda a: subnet_cost(a, config, "float32").macs)
    picks = [("minimal", space.minimal())]
    for q in (0.25, 0.5, 0.75):
        picks.append((f"MACs q{int(q * 100)}", sample[int(q * (len(sample) - 1))]))
    picks.append(("maximal", space.maximal()))
    return picks


def supernet_for(schedule: str, data: DatasetSplits, acc, seed: int):
    """The cached supernet of ``natv2 search`` for these options, trained now if missing."""
    req = SearchRequest(dataset=data.name, supernet=SUPERNET, pretrain_schedule=schedule, seed=seed)
    path = pretrained_path(req, data)
    t0 = time.perf_counter()
    if not path.is_file():
        cfg = PretrainConfig(SUPERNET, ENCODING, schedule, False, seed)
        pretrain(cfg, data, acc, path, resume=True, show_progress=False, log=print)
    nets, meta = load_supernets(path)
    report = meta.get("report", {}).get("1.0", {})
    seconds = report.get("seconds", time.perf_counter() - t0)
    return nets[1.0], seconds, report.get("steps")


def train_alone(arch: Arch, config, data: DatasetSplits, acc, seconds: float, seed: int):
    """``arch`` from random weights for ``seconds`` of wall time (AdamW 3e-3, batch 64)."""
    torch.manual_seed(seed)
    net = materialize(build_supernet(config, seed=seed), arch).train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    steps, epoch = 0, 0
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loader = make_loader(data.train, 64, shuffle=True, seed=seed + epoch, drop_last=True)
        for xb, yb in loader:
            if time.perf_counter() - t0 >= seconds:
                break
            x = data.prepare_batch(xb, arch.resolution, True, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(x), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        epoch += 1
    return net, time.perf_counter() - t0, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--schedules", nargs="+", default=["scratch", "cpu-demo"])
    ap.add_argument("--alone-seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--random",
        type=int,
        default=30,
        help="also print each schedule's mean, min and max (a) over this many subnets from "
        "NATv2's sampler (seed 123): a figure of the whole space, less noisy than 5 subnets "
        "(0: skip)",
    )
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    acc = resolve_accelerator("cpu")
    data = load_dataset(args.dataset)
    # the main job's layout: fitted to the dataset's image size (natv2.supernet.config)
    layout = layout_of("data", data.storage_size)
    config = config_for_encoding(
        ENCODING, preset="tiny", width=1.0, num_classes=data.num_classes, **layout
    )
    space = SearchSpace(ENCODING, widths=(1.0,), grid=config.resolutions)
    cache = EvalData(data, data.test, data.calibration_subset(500), acc)
    picks = fixed_subnets(space, config)

    supernets = {}
    for schedule in args.schedules:
        net, seconds, steps = supernet_for(schedule, data, acc, args.seed)
        supernets[schedule] = net
        print(
            f"supernet {SUPERNET} {schedule} on {data.name}: {seconds:.0f} s, {steps} steps",
            flush=True,
        )

    print(
        f"\n{data.name} test top-1 ({len(data.test)} images); {platform.node()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    head = ["subnet", "id", "MACs"] + [f"(a) {s}" for s in args.schedules]
    head += ["(b) alone", "alone s", "alone steps"]
    rows = []
    for label, arch in picks:
        macs = subnet_cost(arch, config, "float32").macs
        row = [label, arch.id, f"{macs / 1e6:.2f} M"]
        for schedule in args.schedules:
            top1 = evaluate_subnet(supernets[schedule], arch, cache)["top1"]
            row.append(f"{100 * top1:.1f}%")
        alone, secs, steps = train_alone(arch, config, data, acc, args.alone_seconds, args.seed)
        recalibrate_bn(alone, cache.batches("calib", arch.resolution))
        top1, _ = top1_and_loss(alone, cache.batches("eval", arch.resolution), acc)
        row += [f"{100 * top1:.1f}%", f"{secs:.0f}", str(steps)]
        rows.append(row)
        print("  done:", " | ".join(row), flush=True)
    if args.random > 0:
        sample = space.sample(args.random, np.random.default_rng(123), "natv2")
        print(f"\n(a) over {args.random} NATv2-sampled subnets (seed 123), mean / min / max:")
        for schedule in args.schedules:
            tops = [
                100 * evaluate_subnet(supernets[schedule], space.decode(v), cache)["top1"]
                for v in sample
            ]
            print(
                f"  {schedule}: {np.mean(tops):.1f}% / {min(tops):.1f}% / {max(tops):.1f}%",
                flush=True,
            )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
