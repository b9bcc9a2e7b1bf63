"""Pretraining a supernet family: the library call behind ``natv2 train-supernet``.

Each width multiplier is its own supernet, trained in turn; a per-width training checkpoint
(written every epoch) lets ``resume`` pick up an interrupted run, and the finished family is
saved as one supernet checkpoint.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from natv2.accelerator import Accelerator
from natv2.data import DatasetSplits
from natv2.evaluate import EvalData, evaluate_subnet
from natv2.launch import default_processes, run_local, spawn_data_parallel
from natv2.space import SearchSpace
from natv2.supernet.checkpoint import load_supernets, save_supernets
from natv2.supernet.config import (
    DEFAULT_LAYOUT,
    config_for_encoding,
    layout_of,
    parse_supernet_name,
)
from natv2.supernet.network import OFAv2Supernet, build_supernet
from natv2.train import SupernetTrainer, make_schedule


@dataclass(frozen=True)
class PretrainConfig:
    supernet: str = "tiny"
    encoding: str = "exits+parallel"
    schedule: str = "scratch"
    dense_skips: bool = False
    seed: int = 0
    calibration_images: int = 500
    layout: str = DEFAULT_LAYOUT  # strides and resolutions: the data's or OFA's (LAYOUTS)


def training_checkpoint(out: Path, width: float) -> Path:
    return out.with_name(f"{out.name}.w{width:.1f}.train.pt")


def pretrain(
    cfg: PretrainConfig,
    data: DatasetSplits,
    acc: Accelerator,
    out: Path,
    resume: bool = False,
    show_progress: bool = True,
    log=print,
    processes: int | None = None,
) -> dict:
    """Train every width of ``cfg.supernet``, save the family to ``out``, and report the
    maximal and minimal subnets' top-1 on the test split.

    ``processes`` > 1 on a CPU (outside torchrun) trains data-parallel in that many local
    processes of one thread each (``natv2.launch``; default: one per micro-batch of the
    schedule while cores last); the weights are those of a single one-thread process, since
    the schedule fixes how each batch is split (``Schedule.micro_batches``). Their progress
    lines go to stderr."""
    if processes is None:
        micro = make_schedule(cfg.schedule, SearchSpace(cfg.encoding)).micro_batches
        processes = default_processes(acc, micro)
    if run_local(acc, processes):
        spawn_data_parallel(_pretrain_worker, (cfg, data, out, resume, show_progress), processes)
        _, meta = load_supernets(out)
        return {"supernet": cfg.supernet, "schedule": cfg.schedule, "widths": meta["report"]}
    return _pretrain(cfg, data, acc, out, resume, show_progress, log)


def _pretrain_worker(acc: Accelerator, cfg, data, out, resume, show_progress) -> None:
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if acc.is_main else (lambda m: None)
    _pretrain(cfg, data, acc, out, resume, show_progress, log)


def _pretrain(cfg, data, acc, out, resume, show_progress, log) -> dict:
    torch.set_flush_denormal(True)
    preset, widths = parse_supernet_name(cfg.supernet)
    nets: dict[float, OFAv2Supernet] = {}
    report: dict = {"supernet": cfg.supernet, "schedule": cfg.schedule, "widths": {}}
    for width in widths:
        config = config_for_encoding(
            cfg.encoding,
            preset=preset,
            width=width,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
            dense_skips=cfg.dense_skips,
            **layout_of(cfg.layout, data.storage_size),
        )
        net = build_supernet(config, seed=cfg.seed)
        trainer = SupernetTrainer(
            net,
            data,
            acc,
            make_schedule(cfg.schedule, net.space),
            cfg.seed,
            show_progress=show_progress,
        )
        ckpt = training_checkpoint(out, width)
        if resume and ckpt.is_file():
            trainer.load(ckpt)
            log(f"resuming {config.name} at step {trainer.state.step}")
        t0 = time.perf_counter()
        trainer.run(checkpoint=ckpt, on_epoch=functools.partial(_log_epoch, log, config.name))
        seconds = time.perf_counter() - t0
        nets[width] = net
        cache = EvalData(data, data.test, data.calibration_subset(cfg.calibration_images), acc)
        space = net.space
        top_max = evaluate_subnet(net, space.maximal(), cache)["top1"]
        top_min = evaluate_subnet(net, space.minimal(), cache)["top1"]
        figures = {
            "seconds": round(seconds, 1),
            "steps": trainer.state.step,
            "maximal_test_top1": top_max,
            "minimal_test_top1": top_min,
            "history": trainer.state.history,
        }
        report["widths"][f"{width:.1f}"] = figures
        log(
            f"{config.name}: {seconds:.0f} s, test top-1 maximal {100 * top_max:.2f}%, "
            f"minimal {100 * top_min:.2f}%"
        )
    if acc.is_main:
        meta = {
            "dataset": data.name,
            "encoding": cfg.encoding,
            "schedule": cfg.schedule,
            "seed": cfg.seed,
            "layout": cfg.layout,
            "report": report["widths"],
        }
        save_supernets(out, nets, meta)
        for width in nets:  # the family is saved: the per-epoch training state is not needed
            training_checkpoint(out, width).unlink(missing_ok=True)
    acc.barrier()
    return report


def _log_epoch(log, name: str, state) -> None:
    h = state.history[-1]
    log(
        f"{name} {h['step_name']:<10} epoch {h['epoch'] + 1}: loss {h['loss']:.3f} "
        f"({h['steps']} steps, {h['seconds']:.1f} s)"
    )
