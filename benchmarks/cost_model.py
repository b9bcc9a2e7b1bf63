"""How fast the analytical cost model is, and how much faster than counting with fvcore.

    python benchmarks/cost_model.py [--archs 5000] [--fvcore-subnets 10] [--repeats 3]

For each preset (ofa-mbv3, tiny) and dense skips off/on, on ``--archs`` archs sampled from the
exits+parallel space at both widths (NATv2's sampler, fixed seed):

* **cold**: every memo cleared (``clear_caches``), then each arch once: this includes filling the
  per-config level tables (a few thousand levels, counted once each);
* **warm**: the same archs again, tables full (the search's steady state: a new candidate
  reuses the tables, not a memo of whole subnets).

Archs/s is the best of ``--repeats`` runs (other processes on a shared machine only slow a run
down). The fvcore column times ``fvcore_macs`` (a torch.jit trace of the materialised plain
module) on a few of the same archs; the speed-up compares it with the cold cost model. Building
the module is not included in the fvcore time. Not a pass/fail test: a printed table.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from natv2.profiling.cost import clear_caches, subnet_cost
from natv2.profiling.counters import fvcore_macs
from natv2.space import SearchSpace
from natv2.supernet.config import config_for_encoding
from natv2.supernet.plain import Subnet

ENCODING = "exits+parallel"


def rate(archs, config, cold: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if cold:
            clear_caches()
        else:
            for a in archs:
                subnet_cost(a, config)
        t0 = time.perf_counter()
        for a in archs:
            subnet_cost(a, config)
        best = min(best, time.perf_counter() - t0)
    return len(archs) / best


def fvcore_seconds(archs, preset: str, n: int) -> float:
    """Median seconds of fvcore_macs per subnet on the first n archs (module build excluded)."""
    times = []
    for arch in archs[:n]:
        config = config_for_encoding(ENCODING, preset=preset, width=arch.width)
        net = Subnet(arch, config).eval()
        r = arch.resolution
        t0 = time.perf_counter()
        macs = fvcore_macs(net, (1, 3, r, r))
        times.append(time.perf_counter() - t0)
        assert macs == subnet_cost(arch, config).macs
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, default=5000)
    parser.add_argument("--fvcore-subnets", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = SearchSpace(ENCODING)
    archs = [space.decode(v) for v in space.sample(args.archs, np.random.default_rng(0))]
    rows = []
    for preset in ("ofa-mbv3", "tiny"):
        fv = fvcore_seconds(archs, preset, args.fvcore_subnets) if args.fvcore_subnets else None
        for dense in (False, True):
            config = config_for_encoding(ENCODING, preset=preset, width=1.0, dense_skips=dense)
            cold = rate(archs, config, cold=True, repeats=args.repeats)
            warm = rate(archs, config, cold=False, repeats=args.repeats)
            rows.append((preset, dense, cold, warm, fv))

    print(
        f"cost model: {args.archs} {ENCODING} archs (widths 1.0 and 1.2), best of "
        f"{args.repeats}; fvcore: median of {args.fvcore_subnets} subnets"
    )
    header = (
        f"{'preset':<9} {'dense':<6} {'cold Archs/s':>13} {'warm Archs/s':>13} "
        f"{'fvcore s/subnet':>16} {'speed-up (cold)':>16}"
    )
    print(header)
    print("-" * len(header))
    for preset, dense, cold, warm, fv in rows:
        fv_text = f"{fv:.3f}" if fv else "-"
        speedup = f"{cold * fv:,.0f}x" if fv else "-"
        print(
            f"{preset:<9} {'on' if dense else 'off':<6} {cold:>13,.0f} {warm:>13,.0f} "
            f"{fv_text:>16} {speedup:>16}"
        )


if __name__ == "__main__":
    main()
