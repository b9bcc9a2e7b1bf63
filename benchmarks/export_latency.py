"""The files of an export on this machine: onnxruntime latency and size of float, int8 and int8
host ONNX, and the size of the int8 TFLite file; or (``--torch``) onnxruntime against PyTorch.

    python benchmarks/export_latency.py                      # tiny supernet built here
    python benchmarks/export_latency.py RUN_DIR              # three subnets of a search's front
    python benchmarks/export_latency.py --threads 1 --runs 200
    python benchmarks/export_latency.py --torch              # onnxruntime vs PyTorch eager

Three subnets (small, medium, large): of the ``tiny`` preset (a supernet built in the script,
untrained: latency does not depend on the weights), or the smallest, median and largest (by
MACs) of a run directory's front, materialised from its adapted supernet. Each is exported as
``natv2 export`` does: ``natv2.export.onnx.to_onnx`` (``model.onnx``), ``quantize_int8`` with
int8 activations (``model.int8.onnx``, the microcontroller file) and with uint8 activations
(``model.int8-host.onnx``), calibrated on ``--calibration`` train images of ``--dataset`` (the
run's, else digits), and ``natv2.export.tflite.convert_int8`` (``model.int8.tflite``, when the
``tflite`` extra is installed; ``--no-tflite`` skips it). Each ONNX file is timed at batch 1 by
``natv2.profiling.latency.measure_latency``; sizes are the serialised files' bytes (without the
metadata ``natv2 export`` adds: a few hundred bytes more per ONNX file).

``--torch``: the earlier comparison, float ONNX in onnxruntime against PyTorch eager
(``module(x)`` under ``torch.inference_mode()``) at batch 1 and 32, the same thread count in both.

Median and p90 of ``--runs`` timed calls after ``--warmup`` untimed ones. Prints a markdown table
and the machine it ran on. The figures are measurements of this machine at this moment (shared
machines are noisy: look at p90); nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import numpy as np
import onnxruntime as ort
import torch

from natv2.export.onnx import INPUT_NAME, to_onnx
from natv2.export.quantize import quantize_int8
from natv2.profiling.counters import fvcore_macs
from natv2.profiling.latency import measure_latency, physical_cores
from natv2.rundir import load_config, run_space
from natv2.space import Arch, Block, SearchSpace
from natv2.supernet import Subnet, build_supernet, config_for_encoding, materialize

BATCHES = (1, 32)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tiny_subnets() -> list[tuple[str, Subnet]]:
    encoding = "baseline"
    space = SearchSpace(encoding, widths=(1.0,))
    net = build_supernet(config_for_encoding(encoding, preset="tiny", width=1.0), seed=0).eval()
    medium_levels = (Block(1, 4, 5), Block(1, 4, 5), Block(1, 4, 5), None) * 5
    archs = {
        "small": space.minimal(),
        "medium": Arch(56, 1.0, 5, medium_levels),
        "large": Arch(64, 1.0, 5, space.maximal().levels),
    }
    return [(f"{k} {a.id}", materialize(net, a).eval()) for k, a in archs.items()]


def run_dataset(run_dir: Path) -> tuple[str | None, str | None]:
    """The dataset and data folder a run's config.json names (None, None if it names none)."""
    from natv2.rundir import load_config, require_run_dir

    config = load_config(require_run_dir(run_dir))
    stored = config.get("request")
    request = stored if isinstance(stored, dict) else {}
    return config.get("dataset"), config.get("data_dir") or request.get("data_dir")


def run_subnets(run_dir: Path) -> list[tuple[str, Subnet]]:
    from natv2.rundir import FRONT, SUPERNET, read_records, require_run_dir
    from natv2.supernet.checkpoint import load_supernets

    run_dir = require_run_dir(run_dir)
    front = [r for r in read_records(run_dir, FRONT) if "vector" in r]
    if not front:
        sys.exit(f"{run_dir}: front.json holds no subnets")
    front.sort(key=lambda r: r.get("macs", 0))
    picks = {"small": front[0], "medium": front[len(front) // 2], "large": front[-1]}
    nets, _ = load_supernets(run_dir / SUPERNET)
    out = []
    for label, rec in picks.items():
        arch = run_space(load_config(run_dir), rec["encoding"]).decode(rec["vector"])
        out.append((f"{label} {arch.id}", materialize(nets[arch.width], arch).eval()))
    return out


def torch_latency(module, x: torch.Tensor, warmup: int, runs: int) -> tuple[float, float]:
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            module(x)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times), float(np.percentile(times, 90))


def machine(args) -> str:
    return (
        f"machine: {cpu_model()} ({platform.processor() or platform.machine()}), "
        f"{physical_cores()} physical cores / {os.cpu_count()} logical; "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; {args.threads} threads; "
        f"{args.runs} timed runs after {args.warmup} warm-up"
    )


def calibration_images(args):
    """The dataset and the stacked uint8 train images the int8 files are calibrated on."""
    from natv2.data import load_dataset

    name, data_dir = (None, None)
    if args.run_dir is not None:
        name, data_dir = run_dataset(args.run_dir)
    data = load_dataset(args.dataset or name or "digits", data_dir=data_dir)
    images = data.calibration_subset(args.calibration)
    return data, torch.stack([images[i][0] for i in range(len(images))])


def files_table(args, subnets) -> None:
    from natv2.export.tflite import convert_int8, tflite_available

    tflite = args.tflite and tflite_available()
    data, images = calibration_images(args)
    print(machine(args))
    print(
        f"int8 calibration: {len(images)} {data.name} train images; TFLite: "
        + ("natv2.export.tflite.convert_int8" if tflite else "not measured (-)")
    )
    print()
    print(
        "| subnet | MACs | float ms (med / p90) | int8 ms (med / p90) | int8-host ms (med / p90) "
        "| ONNX float B | ONNX int8 B | ONNX int8-host B | TFLite int8 B |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, module in subnets:
        r = module.arch.resolution
        shape = (1, 3, r, r)
        macs = fvcore_macs(module, shape)
        calib = [data.prepare_batch(images, r, train=False)]
        batches = [b.numpy() for b in calib]
        float_model = to_onnx(module, r)
        files = {"float": float_model.SerializeToString()}
        for key, activations in (("int8", "int8"), ("int8-host", "uint8")):
            q = quantize_int8(float_model, batches, input_name=INPUT_NAME, activations=activations)
            files[key] = q.SerializeToString()
        cells = []
        for key in ("float", "int8", "int8-host"):
            o = measure_latency(
                files[key], shape, intra_op_threads=args.threads, warmup=args.warmup, runs=args.runs
            )
            cells.append(f"{o.median_ms:.3f} / {o.p90_ms:.3f}")
        tfl = "-"
        if tflite:
            tfl = f"{len(convert_int8(module, r, calib).model):,}"
        sizes = [f"{len(files[k]):,}" for k in ("float", "int8", "int8-host")]
        print(f"| {label} | {macs:,} | " + " | ".join([*cells, *sizes, tfl]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a natv2 search run directory")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--dataset", help="int8 calibration images (default: the run's, digits)")
    parser.add_argument("--calibration", type=int, default=100, help="calibration images")
    parser.add_argument("--no-tflite", dest="tflite", action="store_false", help="skip TFLite")
    parser.add_argument("--torch", action="store_true", help="onnxruntime vs PyTorch eager")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    subnets = run_subnets(args.run_dir) if args.run_dir else tiny_subnets()
    if not args.torch:
        files_table(args, subnets)
        return
    print(machine(args) + " (the same in both runtimes)")
    head = f"{'subnet':<36}{'MACs':>12}{'batch':>7}{'torch med/p90 ms':>22}{'ORT med/p90 ms':>22}"
    print(head + f"{'torch/ORT':>11}")
    print("-" * (len(head) + 11))
    for label, module in subnets:
        r = module.arch.resolution
        macs = fvcore_macs(module, (1, 3, r, r))
        model = to_onnx(module, r).SerializeToString()
        for batch in BATCHES:
            x = torch.randn(batch, 3, r, r)
            t_med, t_p90 = torch_latency(module, x, args.warmup, args.runs)
            o = measure_latency(
                model,
                (batch, 3, r, r),
                intra_op_threads=args.threads,
                warmup=args.warmup,
                runs=args.runs,
            )
            print(
                f"{label:<36}{macs:>12,}{batch:>7}"
                f"{f'{t_med:.3f} / {t_p90:.3f}':>22}"
                f"{f'{o.median_ms:.3f} / {o.p90_ms:.3f}':>22}"
                f"{t_med / o.median_ms:>10.1f}x"
            )


if __name__ == "__main__":
    main()
