"""The NATv2 search end to end on digits with the tiny supernet (smoke settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from natv2.accelerator import resolve_accelerator
from natv2.archive import front
from natv2.device_profiles import Costs, list_profiles, load_profile
from natv2.pipeline import SearchRequest, run_search
from natv2.profiling.counters import fvcore_macs
from natv2.search import SearchJob, SearchSettings
from natv2.space import SearchSpace
from natv2.supernet import materialize
from natv2.supernet.checkpoint import load_supernets

RUN_FILES = [
    "config.json",
    "archive.jsonl",
    "front.json",
    "front.csv",
    "high_tradeoff.json",
    "high_tradeoff.csv",
    "pareto.png",
    "supernet.pt",
    "search.log",
    "checkpoints/iter-000.pt",
    "checkpoints/iter-001.pt",
]


@pytest.fixture(scope="session")
def search_run(tmp_path_factory, supernet_ckpt, tight_profile):
    from natv2.cli import main

    out = tmp_path_factory.mktemp("search") / "run"
    args = [
        "search",
        "--device",
        str(tight_profile),
        "--dataset",
        "digits",
        "--supernet",
        str(supernet_ckpt),
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--accelerator",
        "cpu",
        "--json",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    return out


def test_search_writes_every_output(search_run):
    for name in RUN_FILES:
        assert (search_run / name).is_file(), name
    front = json.loads((search_run / "front.json").read_text())
    assert front, "empty front"
    high = json.loads((search_run / "high_tradeoff.json").read_text())
    assert {r["id"] for r in high} <= {r["id"] for r in front}
    archive = [json.loads(line) for line in (search_run / "archive.jsonl").read_text().splitlines()]
    assert len(archive) == 6
    assert (search_run / "front.csv").read_text().splitlines()[0].startswith("id,encoding,vector")
    assert (search_run / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_an_int8_profile_ranks_the_front_on_the_int8_files_top1(search_run):
    """What the device runs is the int8 file: every front subnet carries its int8 validation
    top-1, and none is dominated by another on (int8 top-1, MACs)."""
    front = json.loads((search_run / "front.json").read_text())
    assert all(0.0 <= r["int8_accuracy"] <= 1.0 for r in front)
    for a in front:
        for b in front:
            dominated = b["int8_accuracy"] >= a["int8_accuracy"] and b["macs"] <= a["macs"]
            strictly = b["int8_accuracy"] > a["int8_accuracy"] or b["macs"] < a["macs"]
            assert not (dominated and strictly), (a["id"], b["id"])


def test_every_returned_subnet_fits_the_profile_counted_with_fvcore(search_run, tight_profile):
    profile = load_profile(tight_profile)
    nets, _ = load_supernets(search_run / "supernet.pt")
    space = nets[1.0].space  # the run's layout (fitted to digits' 8-px images)
    records = json.loads((search_run / "front.json").read_text())
    records += json.loads((search_run / "high_tradeoff.json").read_text())
    for rec in records:
        arch = space.decode(rec["vector"])
        assert arch.id == rec["id"]
        module = materialize(nets[arch.width], arch).eval()
        macs = fvcore_macs(module, (1, 3, arch.resolution, arch.resolution))
        params = sum(p.numel() for p in module.parameters())
        assert macs == rec["macs"] and params == rec["params"]
        checks = profile.judge(Costs.of({**rec, "macs": macs, "params": params})).checks
        assert checks and all(c.passed for c in checks), rec["id"]


def test_every_returned_subnet_exports_validates_and_runs(cli, search_run, tight_profile, digits):
    """The user's path on the user's own output: each subnet of the front and of the
    high-trade-off set exports (the export checks counts and parity itself), validates against
    the profile with the same figures, and its ONNX file classifies real images."""
    import numpy as np

    from natv2.export.onnx import ort_session, run_session

    records = json.loads((search_run / "front.json").read_text())
    records += json.loads((search_run / "high_tradeoff.json").read_text())
    x = torch.stack([digits.test[i][0] for i in range(8)])
    for rec in {r["id"]: r for r in records}.values():
        # the int8 profile makes export write and check model.int8.tflite too (~10-20 s each)
        res = cli("export", search_run, "--subnet", rec["id"], "--runs", "0")
        assert res.code == 0, (rec["id"], res.out, res.err)
        folder = search_run / "exports" / rec["id"]
        report = json.loads((folder / "report.json").read_text())
        assert (folder / "model.int8.tflite").is_file(), rec["id"]
        tflm = report["tflm"]
        assert tflm["arena_bytes"] == tflm["activations_bytes"] + tflm["persistent_bytes"]
        assert tflm["activations_bytes"] >= report["memory"]["peak_sram_bytes"]["cost_model"]
        assert report["params"]["graph"] == report["params"]["folded"], rec["id"]
        assert report["params"]["cost_model"] == report["params"]["module"] == rec["params"]
        assert len(set(report["macs"].values())) == 1 and report["macs"]["fvcore"] == rec["macs"]
        for key in ("flash_bytes", "peak_sram_bytes"):
            assert len(set(report["memory"][key].values())) == 1, (rec["id"], key)
        assert report["verdict"]["passed"], rec["id"]
        # the int8 self-check ran on every file the device runs (digits' whole test split)
        checked = {c["file"] for c in report["verdict"]["top1_checks"]}
        assert checked == {"model.int8.onnx", "model.int8.tflite (TFLM)"}
        assert "max_top1_drop" not in report["verdict"]["unchecked"]
        deployed = folder / report["verdict"]["deployed_file"]
        res = cli("validate", deployed, "--device", tight_profile, "--runs", "1", "--json")
        assert res.code == 0, (rec["id"], res.err)
        assert res.json()["macs"] == rec["macs"]
        session = ort_session(str(folder / "model.onnx"), threads=1)
        batch = digits.prepare_batch(x, report["resolution"], train=False)
        logits = run_session(session, batch)
        assert logits.shape == (8, digits.num_classes) and np.isfinite(logits).all()


def test_nat_mode_runs(cli, supernet_ckpt, tmp_path):
    res = cli(
        "search",
        "--supernet",
        supernet_ckpt,
        "--dataset",
        "digits",
        "--preset",
        "smoke",
        "--mode",
        "nat",
        "--high-tradeoff-k",
        "1",
        "--out",
        tmp_path / "nat",
        "--accelerator",
        "cpu",
        "--json",
    )
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["front"] and all(r["encoding"] == "exits+parallel" for r in doc["front"])
    archive = (tmp_path / "nat" / "archive.jsonl").read_text().splitlines()
    assert len(archive) > 4  # NAT's archive grows from its initial 4
    # NAT's fixed top-k trade-off set: the front's two extremes and at most one more
    high = {r["id"] for r in doc["high_tradeoff"]}
    assert high <= {r["id"] for r in doc["front"]} and len(high) <= min(3, len(doc["front"]))


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(supernet_ckpt, digits, tmp_path):
    acc = resolve_accelerator("cpu")
    profile = load_profile("microcontroller-profile")
    req = SearchRequest(supernet=str(supernet_ckpt), dataset="digits", preset="smoke", iterations=2)
    quiet = lambda m: None  # noqa: E731
    run_search(req, profile, digits, acc, tmp_path / "a", log=quiet)

    def killed(iteration):
        if iteration == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(req, profile, digits, acc, tmp_path / "b", log=quiet, on_iteration=killed)
    assert not (tmp_path / "b" / "front.json").exists()
    run_search(req, profile, digits, acc, tmp_path / "b", resume=True, log=quiet)
    for name in ("archive.jsonl", "front.json", "high_tradeoff.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    a = torch.load(tmp_path / "a" / "checkpoints" / "iter-002.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "iter-002.pt", weights_only=True)
    for key, t in a["supernets"]["1.0"].items():
        assert torch.equal(t, b["supernets"]["1.0"][key]), key


def test_a_profile_nothing_fits_exits_2_before_training(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("NATV2_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "impossible.toml"
    bad.write_text(
        'name = "impossible"\ndescription = "nothing fits"\n'
        '[hardware]\ndtype = "int8"\nmacs_per_second = 1e8\n'
        '[task]\nobjectives = ["accuracy", "params"]\n[budgets]\nmax_params = 1000\n'
    )
    res = cli(
        "search",
        "--device",
        bad,
        "--dataset",
        "digits",
        "--out",
        tmp_path / "run",
        "--accelerator",
        "cpu",
    )
    assert res.code == 2
    assert "impossible.toml" in res.err and "max_params" in res.err
    assert "Traceback" not in res.err
    assert not (tmp_path / "cache").exists()  # nothing was trained
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_needs_resume(cli, search_run):
    res = cli("search", "--dataset", "digits", "--out", search_run, "--accelerator", "cpu")
    assert res.code == 2 and "--resume" in res.err


def test_predictors_compare_on_a_search_archive(cli, search_run):
    res = cli(
        "predictors", "compare", search_run, "--folds", "3", "--predictors", "lgbm,ridge", "--json"
    )
    assert res.code == 0, res.err
    doc = res.json()
    assert doc


def test_default_run_dir_never_collides(tmp_path):
    from natv2.commands.search import free_run_dir

    assert free_run_dir(tmp_path, "search") == tmp_path / "search"
    (tmp_path / "search").mkdir()
    (tmp_path / "search-2").mkdir()
    assert free_run_dir(tmp_path, "search") == tmp_path / "search-3"


def test_candidates_are_the_predicted_best_for_one_objective_and_spread_for_two():
    from natv2.archive import select_candidates

    rng = np.random.default_rng(0)
    F1 = rng.random((30, 1))
    assert select_candidates(F1, 5) == list(np.argsort(F1[:, 0])[:5])
    F2 = np.column_stack([np.linspace(0, 1, 30), np.linspace(1, 0, 30)])
    picks = select_candidates(F2, 3)
    assert picks[0] == 0 and {0, 29} <= set(picks)  # the most accurate, then both ends


def test_an_accuracy_only_search_proposes_the_predicted_best_and_adapts_on_many(
    supernet_ckpt, digits, tmp_path, monkeypatch
):
    import natv2.search as search_mod
    from natv2.archive import front
    from natv2.search import NATv2Search, SearchJob, SearchSettings

    profile_path = tmp_path / "acc.toml"
    profile_path.write_text(
        'name = "accuracy-only"\ndescription = "test"\n'
        '[hardware]\ndtype = "float32"\nmacs_per_second = 1e8\n'
        '[task]\nobjectives = ["accuracy"]\n[budgets]\nmax_macs = 3000000\n'
    )
    profile = load_profile(profile_path)
    nets, _ = load_supernets(supernet_ckpt)
    space = nets[1.0].space
    settings = SearchSettings.preset("smoke")
    job = SearchJob(profile, space, settings, "lgbm", "natv2", 0, ("accuracy",))
    acc = resolve_accelerator("cpu")
    (tmp_path / "run").mkdir()
    search = NATv2Search(job, nets, digits, acc, tmp_path / "run", log=lambda m: None)
    search.preprocess()
    chosen = []
    real_select = search_mod.select_candidates

    def spy(F, k):
        picks = real_select(F, k)
        chosen.append((F[:, 0].copy(), picks))
        return picks

    monkeypatch.setattr(search_mod, "select_candidates", spy)
    cands = search.propose(1)
    ((predicted_error, picks),) = chosen
    assert len(picks) == min(settings.candidates, len(predicted_error)) and cands
    worst_picked = max(predicted_error[picks])
    assert (np.delete(predicted_error, picks) >= worst_picked).all()  # nothing better left out
    # the front of one objective is one subnet; adaptation draws from the archive's best
    assert len(front(search.state.archive, ("accuracy",))) == 1
    pool = search.adaptation_pool()
    assert len({tuple(r["vector"]) for r in pool}) == min(settings.adapt_pool, len(pool)) > 1
    sampled = []
    real_sampler = search_mod.front_sampler

    def sampler_spy(vectors, sp):
        sampled.append(len({tuple(v) for v in vectors}))
        return real_sampler(vectors, sp)

    monkeypatch.setattr(search_mod, "front_sampler", sampler_spy)
    search.adapt(1)
    assert sampled and sampled[0] > 1


# (budget, the figure a TFLM profile judges it on, the figure other runtimes judge, objective)
TFLM_JUDGED = {
    "sram": ("max_peak_sram_bytes", "tflm_arena_bytes", "peak_sram_bytes", "peak_sram"),
    "flash": ("max_flash_bytes", "tflite_bytes", "flash_bytes", "flash"),
}


@pytest.mark.parametrize("what", list(TFLM_JUDGED))
@pytest.mark.parametrize("as_objective", [False, True])
def test_a_tflm_profile_constrains_the_search_on_what_tflm_needs(what, as_objective, tmp_path):
    """The search's feasibility, NSGA-III constraint and objective judge a TFLM profile's SRAM
    budget on the TFLM arena and its flash budget on the int8 TFLite file: subnets whose
    MCUNet-style peak (or deployed weights) fit but whose arena (or file) does not are out."""
    from types import SimpleNamespace

    from natv2.profiling.cost import subnet_cost
    from natv2.search import NATv2Search, SubnetProblem
    from natv2.supernet.config import config_for_encoding

    budget_key, tflm_key, other_key, objective = TFLM_JUDGED[what]
    space = SearchSpace("exits+parallel", widths=(1.0,))
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0, num_classes=10)
    vectors = space.canonical_batch(space.sample(300, np.random.default_rng(5)))
    costs = [subnet_cost(space.decode(v), cfg, "int8") for v in vectors]
    tflm = [getattr(c, tflm_key) for c in costs]
    budget = int(np.median(tflm))
    between = [getattr(c, other_key) <= budget < t for c, t in zip(costs, tflm, strict=True)]
    assert sum(between) >= 10  # the other runtimes' figure alone would let these through
    path = tmp_path / "tflm-board.toml"
    path.write_text(
        'name = "tflm-board"\ndescription = "a TFLM board"\n[hardware]\ndtype = "int8"\n'
        'runtime = "tflm"\nmacs_per_second = 1.0e8\n[task]\nobjectives = ["accuracy", "macs"]\n'
        f"[budgets]\n{budget_key} = {budget}\n"
    )
    objectives = ("accuracy", objective if as_objective else "macs")
    job = SearchJob(
        load_profile(path), space, SearchSettings.preset("smoke"), objectives=objectives
    )
    search: Any = SimpleNamespace(job=job, config=cfg, latency_model=None)  # a stand-in
    search.costs_matrix = lambda V: [NATv2Search.describe(search, v) for v in V]
    records = search.costs_matrix(vectors)
    fits = [t <= budget for t in tflm]
    assert [r["feasible"] for r in records] == fits
    assert [r[tflm_key] for r in records] == tflm
    problem = SubnetProblem(search, SimpleNamespace(predict=lambda V: np.full(len(V), 0.5)))
    assert problem.constraint_keys == [(tflm_key, budget_key)]
    out: dict = {}
    problem._evaluate(vectors.astype(float), out)
    assert list(out["G"][:, 0] <= 0) == fits
    if as_objective:  # the objective is the same figure: NSGA-III minimises it
        assert job.objective_keys == ("accuracy", tflm_key)
        assert list(out["F"][:, 1]) == tflm


def test_search_under_torchrun_equals_a_single_process(supernet_ckpt, tight_profile, tmp_path):
    """A 2-rank gloo torchrun of `natv2 search` (smoke preset: sharded evaluation, DDP
    adaptation with two BatchNorm groups per batch) returns the archive and front of one
    process with the same seed."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    args = ["search", "--device", str(tight_profile), "--dataset", "digits"]
    args += ["--supernet", str(supernet_ckpt), "--preset", "smoke", "--accelerator", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    runs = {"single": [sys.executable, "-m", "natv2.cli"], "ddp": [*torchrun, "-m", "natv2.cli"]}
    for name, cmd in runs.items():
        r = subprocess.run(
            [*cmd, *args, "--out", str(tmp_path / name)],
            env=env,
            timeout=600,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, (name, r.stderr[-3000:])

    def archive(name: str) -> list[tuple[str, float]]:
        lines = (tmp_path / name / "archive.jsonl").read_text().splitlines()
        return [(r["id"], r["accuracy"]) for r in map(json.loads, lines)]

    def front_ids(name: str) -> list[str]:
        return [r["id"] for r in json.loads((tmp_path / name / "front.json").read_text())]

    assert archive("ddp") == archive("single")
    assert front_ids("ddp") == front_ids("single")
    assert len(archive("single")) == 6


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_searches_end_to_end(name, cli, supernet_ckpt, digits, tmp_path):
    """`natv2 search --device NAME` (smoke preset; pre-processing only for the profiles that
    estimate latency, where their objectives and constraints act, a full iteration for
    host-cpu-profile, whose NSGA-III runs on the latency model) exits 0 with a front that fits;
    for host-cpu-profile, which times latency on this host, the front's subnets export and
    `natv2 validate` measures them within its latency budget."""
    profile = load_profile(name)
    out = tmp_path / "run"
    args = ["search", "--device", name, "--dataset", "digits", "--supernet", supernet_ckpt]
    if profile.latency != "measure":
        args += ["--iterations", "0"]
    res = cli(*args, "--preset", "smoke", "--out", out, "--json")
    assert res.code == 0, (name, res.err)
    front_records = res.json()["front"]
    assert front_records, name
    for rec in front_records:
        assert rec["feasible"] and profile.judge(Costs.of(rec)).fits, (name, rec["id"])
    if profile.latency != "measure":
        return
    log = (out / "search.log").read_text()
    assert "latency model:" in log and "leave-one-out error" in log, log
    assert "iteration 1/1" in log, log
    budget = profile.budgets["max_latency_ms"]
    for rec in front_records:
        assert rec["latency_ms"] is not None and rec["latency_ms"] <= budget
        r = cli("export", out, "--subnet", rec["id"], "--runs", "5", "--limit", "16", "--json")
        assert r.code == 0, (rec["id"], r.err)
        model = out / "exports" / rec["id"] / "model.onnx"
        v = cli("validate", model, "--device", name, "--runs", "20", "--json")
        assert v.code == 0, (rec["id"], v.out, v.err)
        (lat,) = [c for c in v.json()["checks"] if c["budget_key"] == "max_latency_ms"]
        assert lat["passed"] and lat["value"] <= budget


@pytest.mark.parametrize("adapt_from", ["front", "archive"])
def test_a_multi_objective_search_adapts_on_the_front_or_the_archive_best(adapt_from):
    """``adapt_from``: the front's records, or (NAT's policy, as accuracy-only searches) the
    archive's ``adapt_pool`` best by rank and crowding, infeasible ones last."""
    from types import SimpleNamespace

    from natv2.search import NATv2Search

    rng = np.random.default_rng(0)
    accs, macs = rng.uniform(0.5, 0.99, 12), rng.integers(1, 99, 12)
    archive: list[dict[str, Any]] = [
        {"id": f"s{i}", "accuracy": float(accs[i]), "macs": int(macs[i]), "feasible": i != 3}
        for i in range(12)
    ]
    settings = replace(SearchSettings.preset("demo"), adapt_from=adapt_from, adapt_pool=5)
    job = SimpleNamespace(objective_keys=("accuracy", "macs"), settings=settings)
    search: Any = SimpleNamespace(state=SimpleNamespace(archive=archive), job=job)  # a stand-in
    pool = NATv2Search.adaptation_pool(search)
    fr = front(archive, ("accuracy", "macs"))
    if adapt_from == "front":
        assert pool == fr
    else:
        assert len(pool) == 5 and all(r["feasible"] for r in pool)
        best = max((r for r in archive if r["feasible"]), key=lambda r: r["accuracy"])
        assert best in pool  # a front extreme: rank 0, infinite crowding
        assert len(fr) == 5 or pool != fr


def test_nat_top_k_high_tradeoff_picks_the_knee():
    """NAT's fixed number of trade-off subnets: the K highest trade-offs plus the extremes; on
    a front with one clear knee, K = 1 adds exactly the knee."""
    from natv2.archive import high_tradeoff, tradeoff_measure

    points = [(0.99, 100), (0.97, 20), (0.95, 16), (0.90, 13), (0.85, 11), (0.60, 10)]
    records = [{"id": f"p{i}", "accuracy": a, "macs": m} for i, (a, m) in enumerate(points)]
    keys = ("accuracy", "macs")
    picked = [r["id"] for r in high_tradeoff(records, keys, top_k=1)]
    assert picked == ["p0", "p1", "p5"]  # extremes p0 (most accurate), p5 (cheapest); knee p1
    assert len(high_tradeoff(records, keys, top_k=len(records))) == len(records)
    F = np.array([[1 - a, m] for a, m in points], dtype=float)
    mu = tradeoff_measure((F - F.min(0)) / (F.max(0) - F.min(0)))
    assert int(np.argmax(mu[1:-1])) + 1 == 1
