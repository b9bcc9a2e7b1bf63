"""Search quality at an equal number of subnet evaluations: NATv2 vs NAT vs random search.

Hypervolume of the feasible front (validation error, MACs) each method finds on mnist5k with
the tiny supernet, over several seeds. Adaptation is switched off here, so the three methods
search the same (pretrained) supernet and their evaluations are directly comparable; what is
compared is the archive policy, the sampler and the predictor-guided NSGA-III.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/search_quality.py --seeds 0 1 2 --budget 120
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from pymoo.indicators.hv import HV

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY)
from natv2.accelerator import Accelerator, resolve_accelerator
from natv2.archive import front
from natv2.data import DatasetSplits, load_dataset
from natv2.device_profiles import Profile, load_profile
from natv2.pipeline import SearchRequest, resolve_supernets, search_space
from natv2.search import NATv2Search, SearchJob, SearchSettings
from natv2.space import SearchSpace


def hypervolume(records: list[dict], macs_ref: float) -> float:
    if not records:
        return 0.0
    F = np.array([[1.0 - r["accuracy"], r["macs"] / macs_ref] for r in records])
    return float(HV(ref_point=np.array([1.0, 1.0]))(F))


@dataclass(frozen=True)
class MainJobSetup:
    """What the search benchmarks share: mnist5k, the profile, the main job's cached supernet
    (pretrained now if missing), its search space and the MACs the hypervolume is scaled by."""

    acc: Accelerator
    data: DatasetSplits
    profile: Profile
    request: SearchRequest
    nets: dict
    space: SearchSpace
    macs_ref: float


def main_job_setup(device: str, supernet: str = "tiny-w1.0") -> MainJobSetup:
    acc = resolve_accelerator("cpu")
    data = load_dataset("mnist5k")
    profile = load_profile(device)
    req = SearchRequest(device=device, supernet=supernet)
    resolved = resolve_supernets(req, profile, data, acc, log=print)
    grid = next(iter(resolved.nets.values())).config.resolutions
    space = search_space(profile, resolved.encoding, sorted(resolved.nets), grid)
    macs_ref = float(profile.budgets.get("max_macs", 0)) or 1e8
    return MainJobSetup(acc, data, profile, req, resolved.nets, space, macs_ref)


def run_method(method: str, seed: int, budget: int, job_base: SearchJob, nets, data, acc) -> tuple:
    candidates = 8
    if method == "random":
        job = replace(job_base, seed=seed)
        with TemporaryDirectory() as tmp:
            search = NATv2Search(
                job, nets, data, acc, Path(tmp), log=lambda m: None, show_progress=False
            )
            rng = np.random.default_rng([seed, 99])
            pool = search.sample_feasible(budget, "natv2", rng)
            search.evaluate(pool, "random")
            return front(pool, job.objective_keys), search.state.evaluations
    if method == "natv2":
        archive = max(8, budget // 6)
        factor = 4
        iterations = max(1, (budget - factor * archive - 2) // candidates)
        settings = replace(
            job_base.settings,
            archive_size=archive,
            preprocess_factor=factor,
            iterations=iterations,
            candidates=candidates,
            adapt_epochs=0,
        )
    else:  # nat
        initial = budget // 3
        iterations = max(1, (budget - initial) // candidates)
        settings = replace(
            job_base.settings,
            nat_initial=initial,
            iterations=iterations,
            candidates=candidates,
            adapt_epochs=0,
        )
    job = replace(job_base, settings=settings, mode=method, seed=seed)
    with TemporaryDirectory() as tmp:
        search = NATv2Search(
            job, nets, data, acc, Path(tmp), log=lambda m: None, show_progress=False
        )
        search.run()
        return front(search.state.archive, job.objective_keys), search.state.evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=120, help="subnet evaluations per run")
    parser.add_argument("--device", default="microcontroller-profile")
    parser.add_argument("--supernet", default="tiny-w1.0")
    args = parser.parse_args()
    setup = main_job_setup(args.device, args.supernet)
    acc, data, profile, nets = setup.acc, setup.data, setup.profile, setup.nets
    macs_ref = setup.macs_ref
    settings = replace(SearchSettings.preset("demo"), generations=30, population=40)
    job = SearchJob(profile, setup.space, settings, objectives=("accuracy", "macs"))
    print(
        f"machine: {platform.processor() or platform.machine()}, {acc.device}; dataset mnist5k "
        f"(val split), supernet {args.supernet}, profile {profile.name}, budget {args.budget}"
    )
    print(f"{'method':<8} {'seed':>4} {'evals':>6} {'front':>6} {'HV':>8} {'best acc':>9} {'s':>6}")
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        for method in ("natv2", "nat", "random"):
            t0 = time.perf_counter()
            fr, evals = run_method(method, seed, args.budget, job, nets, data, acc)
            hv = hypervolume(fr, macs_ref)
            table.setdefault(method, []).append(hv)
            best = max((r["accuracy"] for r in fr), default=float("nan"))
            print(
                f"{method:<8} {seed:>4} {evals:>6} {len(fr):>6} {hv:>8.4f} {100 * best:>8.2f}% "
                f"{time.perf_counter() - t0:>6.0f}",
                flush=True,
            )
    print("\nhypervolume (error x MACs/budget, ref (1, 1)), mean ± std over seeds:")
    for method, values in table.items():
        print(f"  {method:<8} {np.mean(values):.4f} ± {np.std(values):.4f}")


if __name__ == "__main__":
    main()
