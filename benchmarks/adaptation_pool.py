"""Which subnets should a multi-objective search adapt the supernet on? The front or the archive.

NAT adapts on subnets drawn from the per-gene distribution of its archive's best (top 150 by
rank and crowding); natv2 does so for accuracy-only searches, whose front is one subnet. For
multi-objective searches it adapts on the current front. This runs the main job's search
(``demo`` preset, microcontroller-profile, the cached mnist5k supernet, adaptation on) once per
pool and seed and prints the hypervolume of each final front (validation error x MACs / budget,
reference (1, 1)), its size and best accuracy, re-evaluated on that run's adapted supernet.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/adaptation_pool.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY)
from natv2.accelerator import resolve_accelerator
from natv2.data import load_dataset
from natv2.device_profiles import load_profile
from natv2.pipeline import SearchRequest, pretrained_path, resolve_supernets, search_space
from natv2.search import NATv2Search, SearchJob, SearchSettings
from natv2.supernet.checkpoint import load_supernets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="microcontroller-profile")
    args = parser.parse_args()
    from search_quality import hypervolume  # same folder: the same hypervolume

    acc = resolve_accelerator("cpu")
    data = load_dataset("mnist5k")
    profile = load_profile(args.device)
    req = SearchRequest(device=args.device, supernet="tiny-w1.0")
    resolved = resolve_supernets(req, profile, data, acc, log=print)
    space = search_space(profile, resolved.encoding, sorted(resolved.nets))
    macs_ref = float(profile.budgets.get("max_macs", 0)) or 1e8
    print(
        f"machine: {platform.processor() or platform.machine()}; mnist5k val split, tiny-w1.0, "
        f"{profile.name}, demo preset with adaptation"
    )
    print(f"{'pool':<8} {'seed':>4} {'front':>6} {'HV':>8} {'best acc':>9} {'s':>6}")
    results: dict[str, list[float]] = {}
    for pool in ("front", "archive"):
        settings = replace(SearchSettings.preset("demo"), adapt_from=pool)
        for seed in args.seeds:
            job = SearchJob(profile, space, settings, seed=seed, objectives=("accuracy", "macs"))
            with TemporaryDirectory() as tmp:
                # a fresh copy of the pretrained supernet for every run: adaptation changes it
                nets, _ = load_supernets(pretrained_path(req, data))
                search = NATv2Search(
                    job, nets, data, acc, Path(tmp), log=lambda m: None, show_progress=False
                )
                t0 = time.perf_counter()
                result = search.run()
                seconds = time.perf_counter() - t0
            fr = result["front"]
            hv = hypervolume(fr, macs_ref)
            results.setdefault(pool, []).append(hv)
            best = max(r["accuracy"] for r in fr)
            row = f"{pool:<8} {seed:>4} {len(fr):>6} {hv:>8.4f} {100 * best:>8.2f}%"
            print(f"{row} {seconds:>6.0f}", flush=True)
    print("\nhypervolume, mean ± std over seeds:")
    for pool, hvs in results.items():
        print(f"  {pool:<8} {np.mean(hvs):.4f} ± {np.std(hvs):.4f}")


if __name__ == "__main__":
    main()
