"""The NATv2 search loop under a device profile (paper section 3).

pre-processing: sample 10 x As subnets with the NATv2 sampler (feasible ones only), evaluate
them, keep the best As - 2 plus the maximal and minimal subnet. Each iteration: fit the predictor
on the archive; run NSGA-III on (predicted error, profile costs) with every budget a hard
constraint computed by the cost model; evaluate candidates spread across the predicted front;
replace the weakest archive members; adapt the supernet on subnets drawn from the front's
per-gene distribution (KD / ENS-KD from the maximal subnet); re-evaluate the archive, whose
scores adaptation made stale. ``mode="nat"`` keeps NAT's policies for comparison (uniform
sampler, small archive that grows, no pre-processing).

Every random choice of iteration i is seeded from ``(seed, i)``, and the state after each
iteration is checkpointed, so ``resume`` continues to the same archive and front. Under
torchrun, evaluations are sharded across ranks and adaptation uses DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch.distributed as dist
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.algorithms.soo.nonconvex.ga import GA
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from pymoo.util.ref_dirs import get_reference_directions
from tqdm.auto import tqdm

from natv2 import __version__, rundir
from natv2.accelerator import Accelerator
from natv2.archive import front, high_tradeoff, keep_best, select_candidates
from natv2.atomic import atomic_torch_save
from natv2.data import DatasetSplits
from natv2.data.splits import SPLIT_SEED
from natv2.device_profiles import Costs, Profile
from natv2.errors import Natv2Error
from natv2.evaluate import EvalData, evaluate_int8, evaluate_subnet
from natv2.export.quantize import CALIBRATION_IMAGES as INT8_CALIBRATION_IMAGES
from natv2.predictors import SEARCH_FEATURES, make_predictor
from natv2.profiling.cost import subnet_cost
from natv2.profiling.latency_model import LatencyModel, fit_from_records, latency_features
from natv2.space import SearchSpace
from natv2.supernet.checkpoint import save_supernets
from natv2.supernet.network import OFAv2Supernet
from natv2.train import SupernetTrainer, adaptation_schedule, front_sampler
from natv2.transfer import PAPER_WARMUP_LR
from natv2.untrusted import MAX_COUNT, Field, check_fields, file_errors, load_torch

SEARCH_STATE_FORMAT = "natv2-search/1"
#: most validation images the returned front is measured on
FINAL_EVAL_IMAGES = 10_000
#: what a search checkpoint must hold, checked before the search reads it
SEARCH_STATE_SCHEMA = {
    "format": Field(str),
    "iteration": Field(int, lo=0, hi=MAX_COUNT),
    "archive": Field(list),
    "evaluations": Field(int, lo=0, hi=MAX_COUNT),
    "history": Field(list),
    "supernets": Field(dict),
    # latency = "measure" profiles: [vector, median ms] of every subnet timed so far
    "latency_samples": Field(list, required=False),
}
ARCHIVE_RECORD_SCHEMA = {"vector": Field(list), "accuracy": Field((float, int))}
#: the fix for a run-directory file that cannot be written (disk full, permissions)
RESUME_FIX = "fix that and continue with --resume"


@dataclass(frozen=True)
class SearchSettings:
    """How much work a search does; ``demo`` fits in minutes on two CPU cores."""

    iterations: int
    archive_size: int
    candidates: int  # new subnets evaluated per iteration
    preprocess_factor: int = 10  # NATv2 pre-processing samples factor x archive size
    nat_initial: int = 0  # NAT mode: initial archive size (grows by `candidates` a step)
    population: int = 100
    generations: int = 60
    adapt_epochs: int = 1
    adapt_steps: int | None = None  # cap per adaptation epoch
    adapt_batch: int = 256
    adapt_lr: float = 2.5e-3
    adapt_subnets: int = 4
    # BatchNorm groups of an adaptation batch, split among the ranks: with a multiple of the
    # process count the search gives the same archive and front on 1 or N processes (tested
    # under torchrun); 1 = one group per rank, so the result depends on the process count
    adapt_micro_batches: int = 1
    # accuracy-only searches: adaptation samples the genes of the archive's best this many
    # (NAT: its top 150 by rank and crowding)
    adapt_pool: int = 150
    # multi-objective searches: adapt on the archive's ``adapt_pool`` best ("archive", NAT's
    # policy and the accuracy-only one) or on the front's gene distribution ("front");
    # benchmarks/adaptation_pool.py measured the archive better (hypervolume 0.9704 +- 0.0001
    # against 0.9694 +- 0.0005, main job's search, seeds 0 and 1)
    adapt_from: str = "archive"
    calibration_images: int = 2000
    eval_batch: int = 250
    # validation images every subnet is ranked on while searching (a fixed, seeded slice, so
    # that the search's cost does not grow with the dataset); None: the whole split. The
    # returned front is measured on the whole split (at most FINAL_EVAL_IMAGES)
    eval_images: int | None = None
    # latency = "measure" profiles: timed onnxruntime runs of each evaluated subnet (median)
    latency_runs: int = 30
    # transfer warm-up of the maximal networks when the supernet was pretrained on another
    # dataset (natv2.transfer; the paper's lr 7.5e-3 and batch 256, its length is not given)
    transfer_epochs: int = 5
    transfer_steps: int | None = None  # cap per warm-up epoch
    transfer_batch: int = 256
    transfer_lr: float = PAPER_WARMUP_LR
    transfer_recipe: str = "maximal"  # or "sandwich" (natv2.transfer)

    @staticmethod
    def preset(name: str) -> SearchSettings:
        if name == "demo":
            return SearchSettings(
                iterations=3,
                archive_size=20,
                candidates=8,
                nat_initial=12,
                population=40,
                generations=25,
                adapt_epochs=1,
                adapt_steps=10,
                adapt_batch=64,
                adapt_lr=0.002,
                adapt_pool=10,
                calibration_images=128,
                eval_images=1000,
                transfer_epochs=3,
                transfer_steps=25,
                transfer_batch=64,
                transfer_lr=3e-3,
                transfer_recipe="sandwich",
            )
        if name == "smoke":  # tests and CI: seconds; pre-processing factor cut to 3
            return SearchSettings(
                iterations=1,
                archive_size=6,
                candidates=3,
                preprocess_factor=3,
                nat_initial=4,
                population=16,
                generations=5,
                adapt_epochs=1,
                adapt_steps=2,
                adapt_batch=16,
                adapt_lr=0.02,
                adapt_micro_batches=2,
                adapt_pool=4,
                calibration_images=64,
                latency_runs=10,
                transfer_epochs=1,
                transfer_steps=6,
                transfer_batch=16,
                transfer_lr=3e-3,
                transfer_recipe="sandwich",
            )
        if name == "paper":
            return SearchSettings(
                iterations=30,
                archive_size=300,
                candidates=25,
                nat_initial=100,
                population=100,
                generations=100,
                adapt_epochs=5,
            )
        raise Natv2Error(f"unknown search preset {name!r}; choose demo, paper or smoke")


@dataclass(frozen=True)
class SearchJob:
    """Everything one search needs besides the data and the supernets."""

    profile: Profile
    space: SearchSpace
    settings: SearchSettings
    predictor: str = "lgbm"
    mode: str = "natv2"
    seed: int = 0
    objectives: tuple[str, ...] = ("accuracy", "params")
    # NAT's fixed number of high trade-off subnets (top-k by the trade-off measure); None:
    # pymoo's HighTradeoffPoints outliers
    high_tradeoff_k: int | None = None

    @property
    def objective_keys(self) -> tuple[str, ...]:
        """The record keys that measure the objectives (the profile's runtime decides peak SRAM
        and flash: ``Profile.objective_key``), as the archive functions take them."""
        return tuple(self.profile.objective_key(name) for name in self.objectives)

    def __post_init__(self) -> None:
        if self.mode not in ("natv2", "nat"):
            raise Natv2Error(f"unknown mode {self.mode!r}; choose natv2 or nat")


@dataclass
class SearchState:
    iteration: int = 0  # iterations finished (0 after pre-processing)
    archive: list[dict] = field(default_factory=list)
    evaluations: int = 0
    history: list[dict] = field(default_factory=list)
    latency_samples: list[list] = field(default_factory=list)  # [vector, ms] (measure profiles)


def val_slice(data: DatasetSplits, n: int | None):
    """The validation split, or a fixed seeded slice of ``n`` of its images (in split order)
    when it holds more."""
    if n is None or len(data.val) <= n:
        return data.val
    pick = np.random.default_rng(SPLIT_SEED).choice(len(data.val), n, replace=False)
    return data.val.subset(np.sort(pick))


def _distributed(acc: Accelerator) -> bool:
    return acc.distributed and dist.is_initialized()


class NATv2Search:
    """One search: archive, predictor, NSGA-III and adaptation over a supernet family."""

    def __init__(
        self,
        job: SearchJob,
        nets: dict[float, OFAv2Supernet],
        data: DatasetSplits,
        acc: Accelerator,
        run_dir: Path,
        log: Callable[[str], None] = print,
        show_progress: bool = True,
    ) -> None:
        self.job = job
        self.nets = {w: n.to(acc.device) for w, n in nets.items()}
        self.data = data
        self.acc = acc
        self.run_dir = run_dir
        self.log = log if acc.is_main else (lambda _m: None)
        self.show_progress = show_progress and acc.is_main
        self.state = SearchState()
        self.config = next(iter(nets.values())).config
        s = job.settings
        cal = data.calibration_subset(s.calibration_images)
        quant = data.calibration_subset(INT8_CALIBRATION_IMAGES)
        self.cache = EvalData(data, val_slice(data, s.eval_images), cal, acc, s.eval_batch, quant)
        whole = val_slice(data, FINAL_EVAL_IMAGES)
        self.final_cache = (
            self.cache
            if len(whole) == len(self.cache.split)
            else EvalData(data, whole, cal, acc, s.eval_batch, quant)
        )
        self._scores: dict[tuple[int, ...], dict] = {}
        self.latency_model: LatencyModel | None = None

    # --- costs and evaluation ------------------------------------------------------------------
    def describe(self, vector: np.ndarray) -> dict:
        """The record of a canonical vector: id, costs at the profile's dtype, feasibility."""
        arch = self.job.space.decode(vector)
        profile = self.job.profile
        cost = subnet_cost(arch, self.config, profile.dtype)
        estimate = profile.estimate_latency_ms(cost.macs)
        # latency = "measure": the latency model until the subnet is timed (``evaluate``)
        model = self.latency_model
        predicted = None if model is None else model.predict(latency_features(arch, cost.macs))
        rec = {
            "id": arch.id,
            "encoding": self.job.space.encoding,
            "vector": [int(x) for x in vector],
            **{k: v for k, v in cost.as_dict().items() if k != "dtype"},
            "latency_ms": profile.judged_latency_ms(estimate, predicted),
        }
        rec["feasible"] = profile.judge(Costs.of(rec)).fits
        return rec

    @property
    def measures_latency(self) -> bool:
        return self.job.profile.latency_basis == "this host"

    def costs_matrix(self, vectors: np.ndarray) -> list[dict]:
        return [self.describe(v) for v in vectors]

    def evaluate(self, records: list[dict], desc: str) -> None:
        """Fill ``accuracy`` (validation top-1) of every record, sharded across ranks."""
        todo = [r for r in records if tuple(r["vector"]) not in self._scores]
        self._scores.update(
            self._sharded(todo, desc, lambda a: evaluate_subnet(self.nets[a.width], a, self.cache))
        )
        if self.measures_latency:
            self._time(records, desc)
        self.state.evaluations += len(todo)
        self._log_evaluations(todo, desc)
        for rec in records:
            score = self._scores[tuple(rec["vector"])]
            rec["accuracy"] = score["top1"]
            rec["val_loss"] = score["loss"]

    def _sharded(self, records: list[dict], desc: str, work: Callable) -> dict:
        """``work(arch)`` for this rank's share of ``records`` (a progress bar), gathered from
        every rank: {vector: result} of all of them."""
        results = {}
        mine = records[self.acc.rank :: self.acc.world_size]
        for rec in tqdm(mine, desc=desc, disable=not self.show_progress, leave=False):
            results[tuple(rec["vector"])] = work(self.job.space.decode(rec["vector"]))
        if _distributed(self.acc):
            gathered: list = [None] * self.acc.world_size
            dist.all_gather_object(gathered, results)
            for part in gathered:
                results.update(part)
        return results

    def _time(self, records: list[dict], desc: str) -> None:
        """latency = "measure": time the subnets not timed yet (onnxruntime on this host, the
        float ONNX file of the plain module, as export and validate time it), refit the
        latency model and judge the records on their measured latency."""
        from natv2.export.onnx import to_onnx
        from natv2.profiling.latency import measure_latency
        from natv2.supernet.materialize import materialize

        def median_ms(arch) -> float:
            module = materialize(self.nets[arch.width], arch).cpu()
            runs = self.job.settings.latency_runs
            return measure_latency(to_onnx(module, arch.resolution), warmup=5, runs=runs).median_ms

        timed = {tuple(v): ms for v, ms in self.state.latency_samples}
        todo = [r for r in records if tuple(r["vector"]) not in timed]
        results = self._sharded(todo, f"{desc}: latency", median_ms)
        for rec in todo:  # in record order, so every rank keeps the same list
            key = tuple(rec["vector"])
            if key in results and key not in timed:
                timed[key] = results[key]
                self.state.latency_samples.append([list(key), results[key]])
        for rec in records:
            rec["latency_ms"] = timed[tuple(rec["vector"])]
            rec["feasible"] = self.job.profile.judge(Costs.of(rec)).fits
        if todo:
            self._fit_latency_model()

    def _latency_stats(self) -> dict:
        """The latency model in the run's history (measure profiles only)."""
        if not self.measures_latency or self.latency_model is None:
            return {}
        return {"latency_model": self.latency_model.to_dict()}

    def _fit_latency_model(self) -> None:
        space = self.job.space
        samples = []
        for vector, ms in self.state.latency_samples:
            arch = space.decode(vector)
            samples.append((arch, subnet_cost(arch, self.config).macs, float(ms)))
        self.latency_model = fit_from_records(samples)
        if self.latency_model is not None:
            m = self.latency_model
            self.log(
                f"latency model: {m.samples} subnets timed on this host, leave-one-out error "
                f"{100 * m.loo_mape:.1f} %"
            )

    def _log_evaluations(self, records: list[dict], stage: str) -> None:
        """Every evaluation, appended to evaluations.jsonl (predictor studies, auditing)."""
        if not self.acc.is_main or not records:
            return
        path = self.run_dir / rundir.EVALUATIONS
        with file_errors(path, "append to", RESUME_FIX), path.open("a") as fh:
            for rec in records:
                score = self._scores[tuple(rec["vector"])]
                fh.write(
                    json.dumps(
                        {
                            **rec,
                            "accuracy": score["top1"],
                            "val_loss": score["loss"],
                            "stage": stage,
                        }
                    )
                    + "\n"
                )

    # --- sampling ----------------------------------------------------------------------------
    def sample_feasible(self, n: int, sampler: str, rng: np.random.Generator) -> list[dict]:
        """Up to ``n`` distinct feasible subnets (rejection sampling against the budgets)."""
        out: dict[tuple[int, ...], dict] = {}
        for _ in range(50):
            for v in self.job.space.sample(max(2 * n, 64), rng, sampler):
                key = tuple(int(x) for x in v)
                if key in out:
                    continue
                rec = self.describe(v)
                if rec["feasible"]:
                    out[key] = rec
                if len(out) >= n:
                    return list(out.values())
        if not out:
            raise Natv2Error(
                f"no subnet sampled from the {self.job.space.encoding} space fits "
                f"{self.job.profile.source}; relax its budgets"
            )
        return list(out.values())

    def preprocess(self) -> None:
        """Build the initial archive (NATv2 pre-processing, or NAT's small uniform archive)."""
        s, space = self.job.settings, self.job.space
        rng = np.random.default_rng([self.job.seed, 0])
        if self.job.mode == "nat":
            pool = self.sample_feasible(s.nat_initial, "uniform", rng)
            self.evaluate(pool, "initial archive")
            self.state.archive = pool
            return
        pool = self.sample_feasible(s.preprocess_factor * s.archive_size, "natv2", rng)
        anchors = [self.describe(space.encode(a)) for a in (space.maximal(), space.minimal())]
        anchor_keys = {tuple(a["vector"]) for a in anchors}
        pool = [r for r in pool if tuple(r["vector"]) not in anchor_keys]
        self.evaluate(pool + anchors, "pre-processing")
        best = keep_best(pool, s.archive_size - len(anchors), self.job.objective_keys)
        self.state.archive = best + anchors

    # --- one iteration -------------------------------------------------------------------------
    def propose(self, iteration: int) -> list[dict]:
        """Fit the predictor, run NSGA-III on it, return new candidates spread over its front."""
        s, space = self.job.settings, self.job.space
        archive = self.state.archive
        X = np.array([r["vector"] for r in archive])
        y = np.array([r["accuracy"] for r in archive])
        predictor = make_predictor(
            self.job.predictor,
            seed=self.job.seed + iteration,
            features=SEARCH_FEATURES,
            space=space,
        )
        predictor.fit(X, y)
        problem = SubnetProblem(self, predictor)
        n_obj = len(self.job.objectives)
        mutation = PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair())
        crossover = SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair())
        if n_obj == 1:
            algorithm = GA(
                pop_size=s.population,
                sampling=IntegerRandomSampling(),
                crossover=crossover,
                mutation=mutation,
                eliminate_duplicates=True,
            )
        else:
            ref_dirs = reference_directions(n_obj, s.population)
            algorithm = NSGA3(
                ref_dirs=ref_dirs,
                pop_size=max(s.population, len(ref_dirs)),
                sampling=IntegerRandomSampling(),
                crossover=crossover,
                mutation=mutation,
                eliminate_duplicates=True,
            )
        result = minimize(
            problem,
            algorithm,
            ("n_gen", s.generations),
            seed=int(np.random.SeedSequence([self.job.seed, iteration]).generate_state(1)[0]),
            verbose=False,
        )
        pop = result.pop
        X_pop = space.canonical_batch(np.rint(pop.get("X")).astype(np.int64))
        F_pop, G_pop = pop.get("F"), pop.get("G")
        feasible = (
            (G_pop <= 0).all(axis=1)
            if G_pop is not None and G_pop.size
            else np.ones(len(pop), bool)
        )
        known = {tuple(r["vector"]) for r in archive}
        seen: set[tuple[int, ...]] = set()
        rows = []
        for i in np.flatnonzero(feasible):
            key = tuple(int(x) for x in X_pop[i])
            if key not in known and key not in seen:
                seen.add(key)
                rows.append(i)
        if not rows:
            return []
        F_rows = F_pop[rows]
        picks = select_candidates(F_rows, s.candidates)
        cands = [self.describe(X_pop[rows[i]]) for i in picks]
        for c, pick in zip(cands, picks, strict=True):
            c["predicted_accuracy"] = float(1.0 - F_rows[pick, 0])
        return [c for c in cands if c["feasible"]]

    def adaptation_pool(self) -> list[dict]:
        """The records whose per-gene distribution adaptation samples from: NAT's archive best
        (the ``adapt_pool`` best by rank and crowding, as the archive keeps them), or with
        ``adapt_from = "front"`` and several objectives the current front."""
        archive, objectives = self.state.archive, self.job.objective_keys
        if len(objectives) == 1 or self.job.settings.adapt_from == "archive":
            feasible = [r for r in archive if r.get("feasible", True)] or archive
            return keep_best(feasible, self.job.settings.adapt_pool, objectives)
        return front(archive, objectives) or archive

    def adapt(self, iteration: int) -> None:
        """NAT's adaptation: train on subnets drawn from ``adaptation_pool``'s gene distribution."""
        s = self.job.settings
        if s.adapt_epochs == 0:  # search-strategy comparisons keep the supernet fixed
            return
        fr = self.adaptation_pool()
        for width, net in self.nets.items():
            vectors = [r["vector"] for r in fr if self.job.space.decode(r["vector"]).width == width]
            if not vectors:
                continue
            space = replace(self.job.space, widths=(width,))
            schedule = adaptation_schedule(
                s.adapt_epochs,
                s.adapt_lr,
                s.adapt_batch,
                s.adapt_steps,
                s.adapt_subnets,
                s.adapt_micro_batches,
            )
            trainer = SupernetTrainer(
                net,
                self.data,
                self.acc,
                schedule,
                seed=int(
                    np.random.SeedSequence([self.job.seed, iteration, 7]).generate_state(1)[0] >> 1
                ),
                show_progress=self.show_progress,
            )
            trainer.run(sampler=front_sampler(vectors, space))
        self._scores.clear()  # the supernet changed: every score is stale

    def iterate(self, iteration: int) -> dict:
        t0 = time.perf_counter()
        cands = self.propose(iteration)
        self.evaluate(cands, f"iteration {iteration}: candidates")
        s = self.job.settings
        merged = self.state.archive + cands
        if self.job.mode == "natv2":
            self.state.archive = keep_best(merged, s.archive_size, self.job.objective_keys)
        else:
            self.state.archive = merged
        self.adapt(iteration)
        self.evaluate(self.state.archive, f"iteration {iteration}: re-evaluation")
        fr = front(self.state.archive, self.job.objective_keys)
        stats = {
            "iteration": iteration,
            "candidates": len(cands),
            "archive": len(self.state.archive),
            "front": len(fr),
            "best_accuracy": max((r["accuracy"] for r in fr), default=None),
            "evaluations": self.state.evaluations,
            "seconds": round(time.perf_counter() - t0, 1),
            **self._latency_stats(),
        }
        self.state.history.append(stats)
        return stats

    # --- checkpoints ---------------------------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.run_dir / rundir.CHECKPOINTS / f"iter-{iteration:03d}.pt"

    def save_state(self) -> None:
        if not self.acc.is_main:
            return
        doc = {
            "format": SEARCH_STATE_FORMAT,
            "iteration": self.state.iteration,
            "archive": self.state.archive,
            "evaluations": self.state.evaluations,
            "history": self.state.history,
            "latency_samples": self.state.latency_samples,
            "supernets": {f"{w:.1f}": n.state_dict() for w, n in self.nets.items()},
        }
        atomic_torch_save(doc, self.checkpoint_path(self.state.iteration))
        rundir.write_jsonl(self.run_dir / rundir.ARCHIVE, self.state.archive)

    def load_latest(self) -> bool:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        doc = load_search_checkpoint(path)
        fix = _CHECKPOINT_FIX
        for i, rec in enumerate(doc["archive"]):
            check_fields(rec, ARCHIVE_RECORD_SCHEMA, f"{path}: archive[{i}]", fix)
            self.job.space.check(rec["vector"])
        try:
            for w, net in self.nets.items():
                net.load_state_dict(doc["supernets"][f"{w:.1f}"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise Natv2Error(
                f"{path}: corrupt search checkpoint ({type(exc).__name__}); {fix}"
            ) from None
        samples = doc.get("latency_samples", [])
        for i, sample in enumerate(samples):
            ok = isinstance(sample, list) and len(sample) == 2 and isinstance(sample[0], list)
            ms = sample[1] if ok else None
            if not ok or isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
                raise Natv2Error(f"{path}: latency_samples[{i}] is not [vector, ms]; {fix}")
            self.job.space.check(sample[0])
        self.state = SearchState(
            doc["iteration"],
            list(doc["archive"]),
            doc["evaluations"],
            list(doc["history"]),
            [list(s) for s in samples],
        )
        if self.measures_latency:
            self._fit_latency_model()
        return True

    # --- the whole search ------------------------------------------------------------------------
    def run(self, resume: bool = False, on_iteration: Callable[[int], None] | None = None) -> dict:
        s = self.job.settings
        resumed = resume and self.load_latest()
        if self.acc.is_main:
            # evaluations.jsonl keeps what the checkpoint counted: the records of an iteration
            # interrupted after it (or of a pre-processing never checkpointed) are dropped, as
            # that work is done again now
            rundir.trim_jsonl(self.run_dir / rundir.EVALUATIONS, self.state.evaluations)
        if resumed:
            self.log(
                f"resumed after iteration {self.state.iteration} "
                f"({len(self.state.archive)} in archive)"
            )
        else:
            t0 = time.perf_counter()
            self.preprocess()
            self.state.history.append(
                {
                    "iteration": 0,
                    "archive": len(self.state.archive),
                    "evaluations": self.state.evaluations,
                    "seconds": round(time.perf_counter() - t0, 1),
                    **self._latency_stats(),
                }
            )
            self.log(
                f"pre-processing: {self.state.evaluations} subnets evaluated, archive of "
                f"{len(self.state.archive)} ({time.perf_counter() - t0:.0f} s)"
            )
            self.save_state()
        while self.state.iteration < s.iterations:
            it = self.state.iteration + 1
            stats = self.iterate(it)
            self.state.iteration = it
            self.save_state()
            best = stats["best_accuracy"]
            self.log(
                f"iteration {it}/{s.iterations}: +{stats['candidates']} candidates, front "
                f"{stats['front']}, best val top-1 "
                f"{'n/a' if best is None else f'{100 * best:.2f}%'} ({stats['seconds']:.0f} s)"
            )
            if on_iteration is not None:
                on_iteration(it)
        return self.finish()

    def measured_front(self, fr: list[dict]) -> list[dict]:
        """The front measured on the whole validation split when the search ranked subnets on
        a slice of it: each record's ``accuracy`` becomes the whole split's (the slice's stays
        as ``search_accuracy``) and the front is what stays non-dominated on it."""
        if self.final_cache is self.cache or not fr:
            return fr
        results = self._sharded(
            fr,
            "front on the whole validation split",
            lambda a: evaluate_subnet(self.nets[a.width], a, self.final_cache),
        )
        for rec in fr:
            rec["search_accuracy"] = rec["accuracy"]
            rec["accuracy"] = results[tuple(rec["vector"])]["top1"]
            rec["val_images"] = len(self.final_cache.split)
        return front(fr, self.job.objective_keys)

    def int8_front(self, fr: list[dict]) -> list[dict]:
        """int8 profiles: the device runs the int8 file, so the front is what survives
        quantization. Every float-front subnet's int8 validation top-1 (``int8_accuracy``,
        the file ``natv2 export`` writes, run by onnxruntime) is measured, and the front
        returned is the non-dominated set on (int8 top-1, costs); a subnet that loses its
        place in int8 is logged with its figures."""
        if self.job.profile.dtype != "int8" or not fr:
            return fr
        results = self._sharded(
            fr,
            "int8 top-1 of the front",
            lambda a: evaluate_int8(self.nets[a.width], a, self.final_cache),
        )
        for rec in fr:
            rec["int8_accuracy"] = results[tuple(rec["vector"])]
        as_int8 = [{**r, "accuracy": r["int8_accuracy"]} for r in fr]
        kept = {r["id"] for r in front(as_int8, self.job.objective_keys)}
        for r in fr:
            if r["id"] not in kept:
                self.log(
                    f"{r['id']} left the front in int8: val top-1 {100 * r['accuracy']:.2f} % "
                    f"float, {100 * r['int8_accuracy']:.2f} % int8"
                )
        return [r for r in fr if r["id"] in kept]

    def finish(self) -> dict:
        fr = front(self.state.archive, self.job.objective_keys)
        fr = self.int8_front(self.measured_front(fr))
        # the trade-offs of what the device runs: int8 top-1 where it was measured
        by_id = {r["id"]: r for r in fr}
        deployed = [{**r, "accuracy": r.get("int8_accuracy", r["accuracy"])} for r in fr]
        ht_ids = high_tradeoff(deployed, self.job.objective_keys, self.job.high_tradeoff_k)
        ht = [by_id[r["id"]] for r in ht_ids]
        if self.acc.is_main:
            rundir.write_json(self.run_dir / f"{rundir.FRONT}.json", fr)
            rundir.write_csv(self.run_dir / f"{rundir.FRONT}.csv", fr)
            rundir.write_json(self.run_dir / f"{rundir.HIGH_TRADEOFF}.json", ht)
            rundir.write_csv(self.run_dir / f"{rundir.HIGH_TRADEOFF}.csv", ht)
            rundir.write_jsonl(self.run_dir / rundir.ARCHIVE, self.state.archive)
            save_supernets(
                self.run_dir / rundir.SUPERNET,
                self.nets,
                {"adapted_by": "natv2 search", "dataset": self.data.name, "natv2": __version__},
            )
            plot_front(self.run_dir / rundir.PLOT, self.state.archive, fr, ht, self.job)
        return {
            "front": fr,
            "high_tradeoff": ht,
            "history": self.state.history,
            "evaluations": self.state.evaluations,
        }


_CHECKPOINT_FIX = (
    "delete it to resume from the previous iteration, or start a new run without --resume"
)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the last finished iteration (``--resume`` continues from it)."""
    folder = run_dir / rundir.CHECKPOINTS
    files = sorted(folder.glob("iter-*.pt")) if folder.is_dir() else []
    return files[-1] if files else None


def load_search_checkpoint(path: Path) -> dict:
    """A search checkpoint whose metadata passed ``SEARCH_STATE_SCHEMA`` (checked by
    ``check_run_dir`` before a resume does any work, and again when the search loads it)."""
    doc = load_torch(path, "search checkpoint", _CHECKPOINT_FIX)
    if not isinstance(doc, dict) or doc.get("format") != SEARCH_STATE_FORMAT:
        raise Natv2Error(f"{path}: not a natv2 search checkpoint; {_CHECKPOINT_FIX}")
    return check_fields(doc, SEARCH_STATE_SCHEMA, str(path), _CHECKPOINT_FIX)


class SubnetProblem(Problem):
    """NSGA-III's view: integer genes, predicted error + costs, budgets as constraints."""

    def __init__(self, search: NATv2Search, predictor) -> None:
        space = search.job.space
        self.search = search
        self.predictor = predictor
        # (record key, budget key) of every budget the profile sets
        # (the SRAM budget is judged on the runtime's figure: Profile.budget_pairs)
        profile = search.job.profile
        # latency: the MAC-based estimate, or (latency = "measure") the latency model
        has_latency = profile.latency_basis == "estimate" or search.latency_model is not None
        if "latency" in search.job.objectives and not has_latency:
            raise Natv2Error(
                f"{profile.source}: latency is an objective but neither an estimate "
                "(hardware.macs_per_second) nor a latency model (too few subnets timed) gives "
                "it; raise --archive-size"
            )
        self.constraint_keys = [
            (c, b) for c, b in profile.budget_pairs() if c != "latency_ms" or has_latency
        ]
        super().__init__(
            n_var=space.length,
            n_obj=len(search.job.objectives),
            n_ieq_constr=len(self.constraint_keys),
            xl=space.lower,
            xu=space.upper,
            vtype=int,
        )

    def _evaluate(self, X, out, *args, **kwargs):
        space = self.search.job.space
        V = space.canonical_batch(np.rint(X).astype(np.int64))
        recs = self.search.costs_matrix(V)
        pred = np.clip(self.predictor.predict(V), 0.0, 1.0)
        cols = []
        for key in self.search.job.objective_keys:
            if key == "accuracy":
                cols.append(1.0 - pred)
            else:
                cols.append(np.array([float(r[key]) for r in recs]))
        out["F"] = np.stack(cols, axis=1)
        if self.constraint_keys:
            budgets = self.search.job.profile.budgets
            out["G"] = np.array(
                [[r[c] / budgets[b] - 1.0 for c, b in self.constraint_keys] for r in recs]
            )


def reference_directions(n_obj: int, population: int) -> np.ndarray:
    """Das-Dennis directions, as many partitions as fit in the population."""
    partitions = 1
    while True:
        nxt = get_reference_directions("das-dennis", n_obj, n_partitions=partitions + 1)
        if len(nxt) > population:
            break
        partitions += 1
    return get_reference_directions("das-dennis", n_obj, n_partitions=partitions)


def plot_front(path: Path, archive: Sequence[dict], fr: Sequence[dict], ht, job: SearchJob) -> None:
    """Accuracy against the first cost objective: archive, front, high trade-off subnets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = job.objectives[1] if len(job.objectives) > 1 else "params"
    key = job.objective_keys[1] if len(job.objectives) > 1 else "params"
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    feas = [r for r in archive if r.get("feasible", True)]
    infeas = [r for r in archive if not r.get("feasible", True)]
    ax.scatter(
        [r[key] for r in feas], [100 * r["accuracy"] for r in feas], s=12, c="#9bb", label="archive"
    )
    if infeas:
        ax.scatter(
            [r[key] for r in infeas],
            [100 * r["accuracy"] for r in infeas],
            s=12,
            marker="x",
            c="#d88",
            label="archive (over budget)",
        )
    ax.plot(
        [r[key] for r in fr], [100 * r["accuracy"] for r in fr], "-o", ms=4, c="#136", label="front"
    )
    ax.scatter(
        [r[key] for r in ht],
        [100 * r["accuracy"] for r in ht],
        s=70,
        facecolors="none",
        edgecolors="#c60",
        label="high trade-off",
    )
    ax.set_xlabel(cost + (" (estimated)" if cost == "latency" else ""))
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"NATv2 front on {job.profile.name} ({job.space.encoding})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        with file_errors(path, "write", RESUME_FIX):
            fig.savefig(tmp)
            tmp.replace(path)
    finally:
        plt.close(fig)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def settings_with(settings: SearchSettings, **overrides) -> SearchSettings:
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def job_json(job: SearchJob) -> dict:
    return {
        "profile": job.profile.to_dict(),
        "encoding": job.space.encoding,
        "resolutions": list(job.space.allowed_resolutions),
        "widths": list(job.space.widths),
        "settings": asdict(job.settings),
        "predictor": job.predictor,
        "mode": job.mode,
        "seed": job.seed,
        "objectives": list(job.objectives),
    }
