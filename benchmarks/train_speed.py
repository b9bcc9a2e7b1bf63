"""Where the main job's time goes: images/s of a training step, of evaluation and of adaptation.

Prints, for the tiny-w1.0 exits+parallel supernet on mnist5k batches (CPU):

1. one forward+backward of the maximal and the minimal subnet and of NATv2-sampled subnets, at
   batch 32 and 64, contiguous against channels-last input;
2. a whole ``scratch`` sandwich step (maximal + minimal + 2 random, batch 32 in two BatchNorm
   groups of 16) in one process with 2 threads, in one with 1 thread, and in 2 local
   data-parallel processes of 1 thread (``natv2.launch``), as the main job runs it;
3. subnet evaluation (materialise, BatchNorm recalibration on 128 images, top-1 on 500) with 1
   and 2 threads, and an adaptation step (4 front subnets, batch 64);
4. ``torch.compile`` of the maximal subnet's plain module (compile time, then step time).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_speed.py
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY before torch's OpenMP starts)
from natv2.accelerator import Accelerator, resolve_accelerator
from natv2.data import load_dataset
from natv2.evaluate import EvalData, evaluate_subnet
from natv2.launch import spawn_data_parallel
from natv2.supernet import build_supernet, config_for_encoding
from natv2.supernet.materialize import materialize
from natv2.train import SupernetTrainer, adaptation_schedule, front_sampler, make_schedule

CONFIG = config_for_encoding("exits+parallel", preset="tiny", width=1.0)
STEPS = 12


def best_of(fn, n: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def forward_backward(net, arch, batch: int, channels_last: bool) -> float:
    net.train().set_active(arch)
    x = torch.randn(batch, 3, arch.resolution, arch.resolution)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    return best_of(lambda: F.cross_entropy(net(x), y).backward())


def sandwich_steps(acc: Accelerator, data, report: dict | None = None) -> float:
    net = build_supernet(CONFIG, seed=0)
    sched = replace(make_schedule("scratch", net.space), steps_per_epoch=STEPS + 2)
    sched = replace(sched, phases=(replace(sched.phases[0], epochs=1),))
    trainer = SupernetTrainer(net, data, acc, sched, 0, show_progress=False)
    trainer.run(max_steps=2)
    t0 = time.perf_counter()
    trainer.run()
    seconds = (time.perf_counter() - t0) / STEPS
    if acc.is_main:
        print(
            f"  {acc.world_size} process(es) x {torch.get_num_threads()} thread(s): "
            f"{seconds:.3f} s/step, {sched.batch_size / seconds:.0f} images/s",
            flush=True,
        )
    return seconds


def main() -> None:
    torch.set_flush_denormal(True)
    data = load_dataset("mnist5k")
    acc = resolve_accelerator("cpu")
    net = build_supernet(CONFIG, seed=0)
    space = net.space
    rng = np.random.default_rng(0)
    randoms = [space.decode(v) for v in space.sample(4, rng, "natv2")]
    print(
        f"{platform.node()}: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("1. forward+backward of one subnet (s; images/s)")
    for batch in (32, 64):
        for label, archs in (
            ("maximal", [space.maximal()]),
            ("minimal", [space.minimal()]),
            ("4 random (mean)", randoms),
        ):
            for cl in (False, True):
                t = float(np.mean([forward_backward(net, a, batch, cl) for a in archs]))
                layout = "channels-last" if cl else "contiguous"
                print(f"  batch {batch} {label:<16} {layout:<13} {t:.3f} s  {batch / t:6.0f}/s")
    print("2. scratch sandwich step, batch 32")
    sandwich_steps(acc, data)
    spawn_data_parallel(sandwich_steps, (data,), 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sandwich_steps(acc, data)
    print("3. evaluation and adaptation")
    cache = EvalData(data, data.val, data.calibration_subset(128), acc)
    archs = [space.decode(v) for v in space.sample(8, np.random.default_rng(1), "natv2")]
    for n in (1, threads):
        torch.set_num_threads(n)
        t = best_of(lambda: [evaluate_subnet(net, a, cache) for a in archs], n=2) / len(archs)
        print(f"  evaluation, {n} thread(s): {t:.3f} s/subnet ({(128 + 500) / t:.0f} images/s)")
    sched = adaptation_schedule(1, 0.002, 64, STEPS, 4)
    trainer = SupernetTrainer(net, data, acc, sched, 0, show_progress=False)
    vectors = [space.encode(a) for a in archs]
    t0 = time.perf_counter()
    trainer.run(sampler=front_sampler(vectors, space))
    t = (time.perf_counter() - t0) / STEPS
    print(
        f"  adaptation step (4 subnets, batch 64), {threads} threads: {t:.3f} s "
        f"({64 / t:.0f} images/s)"
    )
    print("4. torch.compile of the maximal plain module, batch 32")
    plain = materialize(net, space.maximal()).train()
    x = torch.randn(32, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    eager = best_of(lambda: F.cross_entropy(plain(x), y).backward())
    try:
        compiled = torch.compile(plain)
        t0 = time.perf_counter()
        F.cross_entropy(compiled(x), y).backward()
        first = time.perf_counter() - t0
        step = best_of(lambda: F.cross_entropy(compiled(x), y).backward())
        print(
            f"  eager {eager:.3f} s/step; compiled {step:.3f} s/step after {first:.0f} s of "
            "compilation (one compilation per subnet shape)"
        )
    except Exception as exc:  # a missing compiler toolchain is a result here, not a crash
        print(f"  eager {eager:.3f} s/step; torch.compile failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
