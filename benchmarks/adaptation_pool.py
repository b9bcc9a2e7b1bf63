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
from natv2.pipeline import pretrained_path
from natv2.search import NATv2Search, SearchJob, SearchSettings
from natv2.supernet.checkpoint import load_supernets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="microcontroller-profile")
    args = parser.parse_args()
    # same folder: the same setup and hypervolume as the search-strategy benchmark
    from search_quality import hypervolume, main_job_setup

    setup = main_job_setup(args.device)
    acc, data, profile, req = setup.acc, setup.data, setup.profile, setup.request
    print(
        f"machine: {platform.processor() or platform.machine()}; mnist5k val split, tiny-w1.0, "
        f"{profile.name}, demo preset with adaptation"
    )
    print(f"{'pool':<8} {'seed':>4} {'front':>6} {'HV':>8} {'best acc':>9} {'s':>6}")
    results: dict[str, list[float]] = {}
    for pool in ("front", "archive"):
        settings = replace(SearchSettings.preset("demo"), adapt_from=pool)
        for seed in args.seeds:
            objectives = ("accuracy", "macs")
            job = SearchJob(profile, setup.space, settings, seed=seed, objectives=objectives)
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
            hv = hypervolume(fr, setup.macs_ref)
            results.setdefault(pool, []).append(hv)
            best = max(r["accuracy"] for r in fr)
            row = f"{pool:<8} {seed:>4} {len(fr):>6} {hv:>8.4f} {100 * best:>8.2f}%"
            print(f"{row} {seconds:>6.0f}", flush=True)
    print("\nhypervolume, mean ± std over seeds:")
    for pool, hvs in results.items():
        print(f"  {pool:<8} {np.mean(hvs):.4f} ± {np.std(hvs):.4f}")


if __name__ == "__main__":
    main()
