"""From a command line to a finished search: profile, data, supernet (pretrained or reused),
feasibility check, run directory, search, report.

Kept apart from ``natv2.search`` (the algorithm) so that the algorithm can be driven from Python
with objects, and the CLI stays a thin layer over this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from natv2 import __version__, rundir
from natv2.accelerator import Accelerator
from natv2.data import DatasetSplits
from natv2.device_profiles import Profile
from natv2.errors import Natv2Error
from natv2.pretrain import PretrainConfig, pretrain
from natv2.profiling.cost import ensure_feasible
from natv2.search import (
    NATv2Search,
    SearchJob,
    SearchSettings,
    job_json,
    settings_with,
)
from natv2.space import SearchSpace
from natv2.supernet.checkpoint import load_supernets
from natv2.supernet.config import config_for_encoding, encoding_of, parse_supernet_name
from natv2.supernet.network import OFAv2Supernet
from natv2.train import make_schedule


@dataclass(frozen=True)
class SearchRequest:
    """What the user asked for (the CLI options), resolved later against profile and data."""

    device: str = "microcontroller-profile"
    dataset: str = "mnist5k"
    supernet: str = "tiny-w1.0"
    encoding: str = "exits+parallel"
    preset: str = "demo"
    iterations: int | None = None
    archive_size: int | None = None
    predictor: str = "lgbm"
    mode: str = "natv2"
    seed: int = 0
    dense_skips: bool = False
    pretrain_schedule: str = "scratch"


def cache_dir() -> Path:
    """Where pretrained demo supernets are kept for reuse ($NATV2_CACHE_DIR, else ~/.cache)."""
    root = os.environ.get("NATV2_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "natv2"


def pretrained_path(req: SearchRequest, data: DatasetSplits) -> Path:
    # the schedule's full content is in the key: a changed preset means a new pretraining
    schedule = make_schedule(req.pretrain_schedule, SearchSpace(req.encoding)).to_dict()
    key = json.dumps(
        [
            req.supernet,
            req.encoding,
            data.name,
            schedule,
            req.seed,
            req.dense_skips,
            data.num_classes,
            __version__,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_dir() / f"{req.supernet}-{req.encoding.replace('+', '_')}-{digest}.pt"


def search_space(profile: Profile, encoding: str, widths) -> SearchSpace:
    allowed = tuple(r for r in profile.resolutions)
    return SearchSpace(encoding, resolutions=allowed, widths=tuple(widths))


def resolve_supernets(
    req: SearchRequest, profile: Profile, data: DatasetSplits, acc: Accelerator, log
) -> tuple[dict[float, OFAv2Supernet], str]:
    """Load a checkpoint, reuse a cached pretrained preset, or pretrain one now."""
    path = Path(req.supernet)
    if path.suffix == ".pt" or path.is_file():
        nets, _meta = load_supernets(path, device=acc.device)
        config = next(iter(nets.values())).config
        if config.num_classes != data.num_classes:
            raise Natv2Error(
                f"{path} has {config.num_classes} classes but {data.name} has {data.num_classes}; "
                "re-import it with `natv2 import-ofa --classes N` or train one on this dataset"
            )
        space = search_space(profile, encoding_of(config), sorted(nets))
        ensure_feasible(profile, space, config)
        return nets, encoding_of(config)
    preset, widths = parse_supernet_name(req.supernet)
    config = config_for_encoding(
        req.encoding,
        preset=preset,
        width=widths[0],
        num_classes=data.num_classes,
        dense_skips=req.dense_skips,
    )
    ensure_feasible(profile, search_space(profile, req.encoding, widths), config)
    ckpt = pretrained_path(req, data)
    if not ckpt.is_file():
        log(f"no pretrained {req.supernet} supernet for {data.name} yet: training one ({ckpt})")
        cfg = PretrainConfig(
            req.supernet, req.encoding, req.pretrain_schedule, req.dense_skips, req.seed
        )
        pretrain(cfg, data, acc, ckpt, resume=True, log=log)
    else:
        log(f"reusing the pretrained supernet {ckpt}")
    nets, _meta = load_supernets(ckpt, device=acc.device)
    return nets, req.encoding


def run_search(
    req: SearchRequest,
    profile: Profile,
    data: DatasetSplits,
    acc: Accelerator,
    out: Path,
    resume: bool = False,
    log=print,
    on_iteration=None,
) -> dict:
    """The whole job behind ``natv2 search``; returns the summary the CLI prints."""
    t0 = time.perf_counter()
    if out.exists() and any(out.iterdir()) and not resume:
        if (out / rundir.CONFIG).is_file():
            raise Natv2Error(
                f"{out} already holds a search; pass --resume to continue it "
                "or choose another --out"
            )
        raise Natv2Error(f"{out} exists and is not empty; choose another --out")
    objectives = tuple(profile.objectives)
    settings = settings_with(
        SearchSettings.preset(req.preset), iterations=req.iterations, archive_size=req.archive_size
    )
    if settings.archive_size < 4:
        raise Natv2Error("--archive-size must be at least 4")
    nets, encoding = resolve_supernets(req, profile, data, acc, log)
    space = search_space(profile, encoding, sorted(nets))
    job = SearchJob(profile, space, settings, req.predictor, req.mode, req.seed, objectives)
    config_doc = {
        "natv2": __version__,
        "request": asdict(req),
        "encoding": encoding,
        "dataset": data.name,
        "dataset_summary": data.summary(),
        "device": req.device,
        "supernet_config": next(iter(nets.values())).config.to_dict(),
        **job_json(job),
    }
    if acc.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / rundir.CONFIG).is_file():
            old = rundir.load_config(out)
            if old.get("request", {}).get("seed") != req.seed or old.get("encoding") != encoding:
                raise Natv2Error(
                    f"{out} was made with other options (seed/encoding); "
                    "resume it with the same ones"
                )
        rundir.write_json(out / rundir.CONFIG, config_doc)
    acc.barrier()
    search = NATv2Search(job, nets, data, acc, out, log=log)
    log(
        f"searching {encoding} on {data.name} for {profile.name} "
        f"(objectives: {', '.join(objectives)}; {settings.iterations} iterations, archive "
        f"{settings.archive_size}, predictor {req.predictor}, mode {req.mode})"
    )
    result = search.run(resume=resume, on_iteration=on_iteration)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["run_dir"] = str(out)
    return result
