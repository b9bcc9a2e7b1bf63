"""From a command line to a finished search: profile, data, supernet (pretrained or reused),
feasibility check, run directory, search, report.

Kept apart from ``natv2.search`` (the algorithm) so that the algorithm can be driven from Python
with objects, and the CLI stays a thin layer over this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from natv2 import __version__, rundir
from natv2.accelerator import Accelerator
from natv2.data import DatasetSplits
from natv2.data.registry import DEFAULT_DATASET
from natv2.device_profiles import Costs, Profile, check_feasible
from natv2.errors import Natv2Error
from natv2.pretrain import PretrainConfig, pretrain
from natv2.profiling.cost import cheapest_costs
from natv2.search import (
    NATv2Search,
    SearchJob,
    SearchSettings,
    job_json,
    latest_checkpoint,
    load_search_checkpoint,
    settings_with,
)
from natv2.space import SearchSpace
from natv2.supernet.checkpoint import load_supernets
from natv2.supernet.config import (
    DEFAULT_LAYOUT,
    SupernetConfig,
    config_for_encoding,
    encoding_of,
    layout_of,
    parse_supernet_name,
)
from natv2.supernet.network import OFAv2Supernet
from natv2.train import make_schedule
from natv2.transfer import needs_transfer, rehead, warm_up
from natv2.untrusted import shown


@dataclass(frozen=True)
class SearchRequest:
    """What the user asked for (the CLI options), resolved later against profile and data."""

    device: str = "microcontroller-profile"
    dataset: str = DEFAULT_DATASET
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
    high_tradeoff_k: int | None = None  # NAT's fixed top-k trade-off subnets
    layout: str = DEFAULT_LAYOUT  # a preset's strides and resolutions (LAYOUTS)


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
            # the layout only when it is not OFA's, so earlier cached supernets keep their key
            *([] if req.layout == "imagenet" else [layout_of(req.layout, data.storage_size)]),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_dir() / f"{req.supernet}-{req.encoding.replace('+', '_')}-{digest}.pt"


def search_space(profile: Profile, encoding: str, widths, grid) -> SearchSpace:
    """The space a search explores: the supernet's resolutions (``grid``) the profile takes,
    every width of the family (``ensure_feasible`` refuses a profile that takes none)."""
    allowed = tuple(r for r in grid if profile.allows_resolution(r)) or None
    return SearchSpace(encoding, resolutions=allowed, widths=tuple(widths), grid=tuple(grid))


def ensure_feasible(profile: Profile, space: SearchSpace, config: SupernetConfig) -> Costs:
    """The smallest achievable costs of ``space`` on ``profile``; raise before any training
    when nothing fits.

    The space is restricted to the profile's resolutions and costed at the profile's dtype;
    latency is estimated from the cheapest MACs when the profile has ``macs_per_second``.
    Raises ``Natv2Error`` (naming the profile file, each budget broken and the smallest figure
    the space achieves) when even the cheapest subnet breaks a budget, or when the space has
    none of the profile's resolutions.
    """
    resolutions = tuple(r for r in space.allowed_resolutions if profile.allows_resolution(r))
    if not resolutions:
        raise Natv2Error(
            f"{profile.source}: device profile '{profile.name}' allows input resolutions "
            f"{list(profile.resolutions or ())} but the search space has only "
            f"{list(space.allowed_resolutions)}; add one of them to task.resolutions, or remove "
            "the list"
        )
    restricted = SearchSpace(
        space.encoding, resolutions=resolutions, widths=space.widths, grid=space.grid
    )
    figures = cheapest_costs(restricted, config, profile.dtype)
    cheapest = Costs.of({**figures, "latency_ms": profile.estimate_latency_ms(figures["macs"])})
    check_feasible(profile, cheapest)
    return cheapest


@dataclass(frozen=True)
class Supernets:
    """The supernets a search starts from; ``transfer``: pretrained on another dataset, so the
    search warms them up on this one first (``natv2.transfer``)."""

    nets: dict[float, OFAv2Supernet]
    encoding: str
    transfer: bool = False
    source_dataset: str | None = None


def resolve_supernets(
    req: SearchRequest, profile: Profile, data: DatasetSplits, acc: Accelerator, log
) -> Supernets:
    """Load a checkpoint (re-headed for this dataset's classes when they differ), reuse a
    cached pretrained preset, or pretrain one now."""
    path = Path(req.supernet)
    if path.suffix == ".pt" or path.is_file():
        nets, meta = load_supernets(path, device=acc.device)
        config = next(iter(nets.values())).config
        transfer = needs_transfer(meta, config.num_classes, data)
        source = meta.get("dataset") if isinstance(meta.get("dataset"), str) else None
        if transfer:
            for width, net in nets.items():
                if rehead(net, data.num_classes, seed=req.seed):
                    log(
                        f"re-headed the w{width:.1f} supernet's exits for {data.name}: "
                        f"{config.num_classes} -> {data.num_classes} classes"
                    )
            config = next(iter(nets.values())).config
        space = search_space(profile, encoding_of(config), sorted(nets), config.resolutions)
        ensure_feasible(profile, space, config)
        return Supernets(nets, encoding_of(config), transfer, source)
    preset, widths = parse_supernet_name(req.supernet)
    config = config_for_encoding(
        req.encoding,
        preset=preset,
        width=widths[0],
        num_classes=data.num_classes,
        dense_skips=req.dense_skips,
        **layout_of(req.layout, data.storage_size),
    )
    ensure_feasible(
        profile, search_space(profile, req.encoding, widths, config.resolutions), config
    )
    ckpt = pretrained_path(req, data)
    if not ckpt.is_file():
        log(f"no pretrained {req.supernet} supernet for {data.name} yet: training one ({ckpt})")
        cfg = PretrainConfig(
            req.supernet,
            req.encoding,
            req.pretrain_schedule,
            req.dense_skips,
            req.seed,
            layout=req.layout,
        )
        pretrain(cfg, data, acc, ckpt, resume=True, log=log)
    else:
        log(f"reusing the pretrained supernet {ckpt}")
    nets, _meta = load_supernets(ckpt, device=acc.device)
    return Supernets(nets, req.encoding)


#: options of ``natv2 search`` that must be the same on ``--resume`` (by SearchRequest field)
RESUME_FLAGS: dict[str, str] = {
    "device": "--device",
    "dataset": "--dataset",
    "supernet": "--supernet",
    "encoding": "--encoding",
    "preset": "--preset",
    "iterations": "--iterations",
    "archive_size": "--archive-size",
    "predictor": "--predictor",
    "mode": "--mode",
    "seed": "--seed",
    "dense_skips": "--dense-skips",
    "pretrain_schedule": "--pretrain-schedule",
    "layout": "--layout",
}
#: what a run made before an option existed used: its value when config.json lacks it
RESUME_DEFAULTS: dict[str, object] = {"layout": "imagenet"}
#: options that may change on ``--resume``: where computation runs and how output is shown
RESUME_FREE: tuple[str, ...] = (
    "--accelerator",
    "--data-dir",
    "--download",
    "--json",
    "--high-tradeoff-k",
)


def resolved_settings(req: SearchRequest) -> SearchSettings:
    """The preset with the request's overrides (what config.json records as ``settings``)."""
    settings = settings_with(
        SearchSettings.preset(req.preset), iterations=req.iterations, archive_size=req.archive_size
    )
    if settings.archive_size < 4:
        raise Natv2Error("--archive-size must be at least 4")
    return settings


def _comparable_profile(doc: object) -> object:
    """A profile's JSON without its source path (the same file may be named two ways)."""
    if not isinstance(doc, dict):
        return doc
    return {k: v for k, v in json.loads(json.dumps(doc)).items() if k != "source"}


def resume_differences(old: dict, req: SearchRequest, profile: Profile) -> list[str]:
    """The options of ``req`` that differ from those the run in config.json ``old`` used."""
    request, recorded = old.get("request"), old.get("settings")
    stored = request if isinstance(request, dict) else {}
    stored_settings = recorded if isinstance(recorded, dict) else {}
    settings = resolved_settings(req)
    new = asdict(req)
    diffs = []
    for field, flag in RESUME_FLAGS.items():
        if field == "device":
            same = _comparable_profile(old.get("profile")) == _comparable_profile(profile.to_dict())
            if not same:
                before = stored.get("device")
                changed = " (the profile's content changed)" if before == req.device else ""
                diffs.append(f"{flag} was {shown(before)}, now {shown(req.device)}{changed}")
            continue
        if field in ("iterations", "archive_size"):
            before, now = stored_settings.get(field), getattr(settings, field)
        else:
            before, now = stored.get(field, RESUME_DEFAULTS.get(field)), new[field]
        if before != now:
            diffs.append(f"{flag} was {shown(before)}, now {shown(now)}")
    return diffs


def check_run_dir(
    out: Path, req: SearchRequest, profile: Profile, resume: bool, check_lock: bool = True
) -> None:
    """May this search use ``out``? Checked before any data is loaded or anything trained, and
    touching nothing: refused are a folder in use by another search, a fresh search into a
    folder holding a run or other files, and a resume of anything but a natv2 run made with
    the same options (``RESUME_FLAGS``; ``RESUME_FREE`` may change)."""
    resolved_settings(req)
    state = rundir.folder_state(out)
    where = shown(str(out))
    if state == "file":
        raise Natv2Error(f"--out {where} is a file, not a folder; choose another --out")
    holder = rundir.lock_holder(out) if check_lock and state != "missing" else None
    if holder is not None:
        raise Natv2Error(
            f"{where} is in use by another search ({holder}); wait for it to finish, or "
            "choose another --out"
        )
    if not resume:
        if state in ("run", "finished"):
            what = "a finished" if state == "finished" else "an interrupted"
            raise Natv2Error(
                f"{where} already holds {what} search; pass --resume to continue it or choose "
                "another --out"
            )
        if state == "foreign":
            raise Natv2Error(
                f"{where} exists and is not empty (and not a natv2 run); a search writes only "
                "into a new or empty folder: choose another --out"
            )
        return
    if state in ("missing", "empty"):
        raise Natv2Error(
            f"--resume: {where} holds no search to continue; run without --resume to start one"
        )
    if state == "foreign":
        raise Natv2Error(
            f"--resume: {where} is not a natv2 run directory (no {rundir.CONFIG}); nothing was "
            "changed there: give the --out folder of an interrupted `natv2 search`"
        )
    diffs = resume_differences(rundir.load_config(out), req, profile)
    if diffs:
        raise Natv2Error(
            f"--resume: {where} was searched with other options: {'; '.join(diffs)}. Resume "
            f"with the run's options (in {where}/{rundir.CONFIG}; only "
            f"{', '.join(RESUME_FREE)} may change), or start a new search with another --out"
        )
    latest = latest_checkpoint(out)
    if latest is not None:
        load_search_checkpoint(latest)  # a damaged checkpoint is found now, not after the work


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
    """The whole job behind ``natv2 search``; returns the summary the CLI prints.

    The main process holds ``out``'s lock (``rundir.RunLock``) for the whole search and checks
    the folder again under it (``check_run_dir``).
    """
    t0 = time.perf_counter()
    lock = rundir.RunLock(out) if acc.is_main else contextlib.nullcontext()
    with lock:
        if acc.is_main:
            check_run_dir(out, req, profile, resume, check_lock=False)
        settings = resolved_settings(req)
        objectives = tuple(profile.objectives)
        supernets = resolve_supernets(req, profile, data, acc, log)
        nets, encoding = supernets.nets, supernets.encoding
        config = next(iter(nets.values())).config
        space = search_space(profile, encoding, sorted(nets), config.resolutions)
        job = SearchJob(
            profile,
            space,
            settings,
            req.predictor,
            req.mode,
            req.seed,
            objectives,
            req.high_tradeoff_k,
        )
        config_doc = {
            "natv2": __version__,
            "request": asdict(req),
            "encoding": encoding,
            "dataset": data.name,
            "dataset_summary": data.summary(),
            "device": req.device,
            "supernet_config": next(iter(nets.values())).config.to_dict(),
            "transfer": (
                {"from_dataset": supernets.source_dataset} if supernets.transfer else None
            ),
            **job_json(job),
        }
        if acc.is_main and not resume:
            rundir.write_json(out / rundir.CONFIG, config_doc)
        acc.barrier()
        if supernets.transfer and latest_checkpoint(out) is None:
            # the search's checkpoints hold the warmed-up weights: a resume after pre-processing
            # starts from them; one before resumes the warm-up from its own checkpoints
            (out / rundir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
            warm_up(
                nets,
                data,
                acc,
                epochs=settings.transfer_epochs,
                lr=settings.transfer_lr,
                batch_size=settings.transfer_batch,
                steps_per_epoch=settings.transfer_steps,
                calibration_images=settings.calibration_images,
                recipe=settings.transfer_recipe,
                checkpoint_dir=out / rundir.CHECKPOINTS,
                seed=req.seed,
                log=log,
            )
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
