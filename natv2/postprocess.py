"""Post-processing of a chosen subnet (paper §3): two-phase fine-tuning, plain or AEP.

Both methods run on the materialised plain module, BatchNorm first recalibrated on training
images exactly as the search evaluated the subnet, and have two phases:

1. **Phase 1** fine-tunes on the training split and evaluates on validation after every epoch;
   the best epoch ``e`` is the one with the lowest validation loss (epoch 0, the starting
   weights, counts too: fine-tuning that only hurts gives e = 0), and training stops once
   ``patience`` epochs pass without a new best.
2. **Phase 2** fine-tunes a fresh copy of the starting weights on train + validation for exactly
   ``e`` epochs, with the same learning-rate schedule as phase 1 (cosine annealing over
   ``max_epochs`` epochs, stepped per epoch, cut after epoch ``e``: the trajectory that ``e``
   was chosen on), and reports test top-1.

Methods:

* ``finetune``: the single-exit subnet as it is (SGD by default).
* ``aep`` (subnets of exit supernets): exits 1..X re-attached from the supernet
  (:mod:`natv2.aep`), trained jointly with the loss-weighted sum of their cross-entropies;
  the prediction is the weighted sum of the exits' logits. After phase 1 the exits that do not
  help validation accuracy are pruned (:func:`natv2.aep.select_exits`, on the weights of the
  best phase-1 epoch); phase 2 trains the pruned model. AdamW by default. The validation loss
  that picks ``e`` is the cross-entropy of the ensemble's output (what the model predicts).

Settings (:data:`PRESETS`): ``paper`` is the paper's tuned setting (lr 1e-4, cosine, batch 64,
at most 150 epochs, patience 30); ``cpu`` (the CLI default) finishes in about a minute on
``digits``/``mnist5k`` with the tiny supernet: at most 6 epochs of at most 15 steps, patience 2,
lr 1e-2 for SGD and 1e-3 for AdamW/Ranger (1e-4 barely moves a network in 90 steps). Every value
can be overridden.

The result is a plain ``nn.Module`` saved under ``RUN_DIR/postprocessed/ID/``: ``model.pt``
(state dict), ``arch.json`` (``natv2-subnet/1`` for ``finetune``, ``natv2-aep/1`` for AEP) and
``result.json``; :func:`load_postprocessed` rebuilds either without the supernet.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from natv2.accelerator import Accelerator
from natv2.aep import (
    AEP_FORMAT,
    AEPNet,
    aep_cost,
    aep_description,
    aep_from_description,
    build_aep,
    check_aep_applicable,
    pruned,
    select_exits,
)
from natv2.atomic import atomic_torch_save, atomic_write_bytes, json_text
from natv2.data import DatasetSplits, ImageSet, make_loader
from natv2.distill import WEIGHTINGS
from natv2.errors import Natv2Error
from natv2.evaluate import EvalData, recalibrate_bn, top1_and_loss
from natv2.optim import OPTIMIZERS, make_optimizer
from natv2.schedules import cosine_lr
from natv2.supernet.materialize import SUBNET_FORMAT, load_subnet, save_subnet
from natv2.supernet.network import OFAv2Supernet
from natv2.supernet.plain import Subnet
from natv2.untrusted import (
    check_out_folder,
    load_weights,
    output_folder,
    read_json,
)

METHODS: tuple[str, ...] = ("finetune", "aep")
RESULT_FORMAT = "natv2-postprocess/1"
#: what a post-processed model folder holds (``save_postprocessed``)
MODEL_FILES = frozenset({"model.pt", "arch.json", "result.json"})
DEFAULT_CALIBRATION_IMAGES = 500

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's tuned setting (§4, post-processing optimisation).
    "paper": {
        "lr": 1e-4,
        "max_epochs": 150,
        "patience": 30,
        "batch_size": 64,
        "steps_per_epoch": None,
    },
    # A CPU demo: about a minute on digits/mnist5k with the tiny supernet; lr by optimizer.
    "cpu": {"lr": None, "max_epochs": 6, "patience": 2, "batch_size": 64, "steps_per_epoch": 15},
}
# The cpu preset's learning rates: 90 steps are too few for 1e-4 to move a network, and SGD
# needs a larger step than the Adam family for the same progress.
CPU_LR: dict[str, float] = {"sgd": 1e-2, "adamw": 1e-3, "ranger": 1e-3}
DEFAULT_PRESET = "cpu"


@dataclass(frozen=True)
class PostprocessSettings:
    """Everything that decides a post-processing run (recorded in ``result.json``)."""

    method: str = "finetune"
    optimizer: str = "sgd"
    lr: float = 1e-4
    max_epochs: int = 150
    patience: int = 30
    batch_size: int = 64
    steps_per_epoch: int | None = None
    weighting: str = "unif"
    weight_decay: float | None = None
    prune: bool = True
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    eval_batch: int = 250
    seed: int = 0
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise Natv2Error(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.optimizer not in OPTIMIZERS:
            raise Natv2Error(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.weighting not in WEIGHTINGS:
            raise Natv2Error(
                f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}"
            )
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise Natv2Error(f"--lr must be a positive number, got {self.lr}")
        if self.max_epochs < 0 or self.patience < 1 or self.batch_size < 2:
            raise Natv2Error(
                "need --max-epochs >= 0, --patience >= 1 and --batch-size >= 2 "
                f"(got {self.max_epochs}, {self.patience}, {self.batch_size})"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise Natv2Error(f"steps per epoch must be at least 1, got {self.steps_per_epoch}")
        if self.calibration_images < 1:
            raise Natv2Error("BatchNorm recalibration needs at least 1 image")


def default_optimizer(method: str) -> str:
    """The paper's finding: SGD for single-exit networks, AdamW for early-exit ones."""
    return "adamw" if method == "aep" else "sgd"


def make_settings(
    method: str = "finetune", preset: str = DEFAULT_PRESET, **overrides: Any
) -> PostprocessSettings:
    """Settings of ``preset`` (``cpu`` or ``paper``) for ``method``; keyword arguments that are
    not None override (``optimizer`` defaults to :func:`default_optimizer`)."""
    preset = preset.lower()
    if preset not in PRESETS:
        raise Natv2Error(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    method = method.lower()
    values: dict[str, Any] = {"method": method, "preset": preset, **PRESETS[preset]}
    values["optimizer"] = default_optimizer(method)
    for key, value in overrides.items():
        if value is not None:
            values[key] = value.lower() if key in ("optimizer", "weighting") else value
    if values["lr"] is None:
        values["lr"] = CPU_LR.get(values["optimizer"], 1e-3)
    return PostprocessSettings(**values)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

EpochCallback = Callable[[int, dict], None]

#: what post-processing trains, saves and loads: a plain subnet or its AEP model
Model = Subnet | AEPNet


def _loss(module: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; for AEP the loss-weighted sum of every exit's cross-entropy."""
    if isinstance(module, AEPNet):
        outs = module.exit_outputs(x)
        terms = [
            w * F.cross_entropy(o.float(), y)
            for w, o in zip(module.loss_weights, outs, strict=True)
        ]
        return functools.reduce(operator.add, terms)  # as sum(), without its int start
    return F.cross_entropy(module(x).float(), y)


def _train_one_epoch(
    module: Model,
    opt: torch.optim.Optimizer,
    loader,
    data: DatasetSplits,
    resolution: int,
    acc: Accelerator,
    steps: int,
    gen: torch.Generator,
    desc: str,
    progress: bool,
) -> tuple[float, int]:
    from tqdm import tqdm

    module.train()
    total, n = torch.zeros((), device=acc.device), 0
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    it = iter(loader)
    for _ in range(steps):
        try:
            xb, yb = next(it)
        except StopIteration:  # pragma: no cover - steps never exceed the loader's length
            break
        x = acc.to_device(data.prepare_batch(xb, resolution, train=True, generator=gen))
        y = yb.to(acc.device)
        with acc.autocast():
            loss = _loss(module, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        n += 1
        if progress:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return (float(total) / max(n, 1)), n


def fit(
    module: Model,
    data: DatasetSplits,
    train_set: ImageSet,
    settings: PostprocessSettings,
    acc: Accelerator,
    *,
    epochs: int,
    val: EvalData | None = None,
    phase: int = 1,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``module`` in place for up to ``epochs`` epochs (cosine over
    ``settings.max_epochs``). With ``val``: evaluate after every epoch, stop after ``patience``
    epochs without a lower validation loss, and return the best epoch and its state dict.

    Returns ``{"history", "best_epoch", "best_state", "epochs_run", "stopped_early"}``;
    ``history[0]`` is epoch 0 (the starting weights) when ``val`` is given.
    """
    resolution = module.arch.resolution
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    loader = make_loader(
        train_set,
        settings.batch_size,
        shuffle=True,
        seed=seed,
        drop_last=len(train_set) > settings.batch_size,
        **acc.loader_kwargs,
    )
    steps = len(loader)
    if settings.steps_per_epoch is not None:
        steps = min(steps, settings.steps_per_epoch)
    opt = make_optimizer(
        settings.optimizer, module.parameters(), settings.lr, settings.weight_decay
    )
    history: list[dict] = []
    best_epoch, best_loss, best_state = 0, math.inf, None
    if val is not None:
        top1, loss = top1_and_loss(module, val.batches("eval", resolution), acc)
        history.append({"epoch": 0, "val_loss": loss, "val_accuracy": top1})
        best_loss, best_state = loss, copy.deepcopy(module.state_dict())
        if on_epoch is not None:
            on_epoch(phase, history[-1])
    stopped_early = False
    for epoch in range(1, epochs + 1):
        lr = cosine_lr(settings.lr, epoch - 1, settings.max_epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        desc = f"phase {phase} epoch {epoch}/{epochs}"
        train_loss, n_steps = _train_one_epoch(
            module, opt, loader, data, resolution, acc, steps, gen, desc, progress
        )
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "steps": n_steps,
        }
        if val is not None:
            top1, loss = top1_and_loss(module, val.batches("eval", resolution), acc)
            record.update(val_loss=loss, val_accuracy=top1)
            if loss < best_loss:
                best_epoch, best_loss = epoch, loss
                best_state = copy.deepcopy(module.state_dict())
        record["seconds"] = round(time.perf_counter() - start, 3)
        history.append(record)
        if on_epoch is not None:
            on_epoch(phase, record)
        if val is not None and epoch - best_epoch >= settings.patience and epoch < epochs:
            stopped_early = True
            break
    module.eval()
    return {
        "history": history,
        "best_epoch": best_epoch if val is not None else epochs,
        "best_state": best_state,
        "epochs_run": len([h for h in history if h["epoch"] > 0]),
        "stopped_early": stopped_early,
    }


# ---------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------


def module_costs(module: Model) -> dict[str, Any]:
    """Params (``sum(p.numel())``) and MACs counted by fvcore, and by the cost model."""
    from natv2.profiling.cost import subnet_cost
    from natv2.profiling.counters import fvcore_macs

    r = module.arch.resolution
    out: dict[str, Any] = {
        "params": int(sum(p.numel() for p in module.parameters())),
        "macs_fvcore": int(fvcore_macs(module, (1, 3, r, r))),
    }
    if isinstance(module, AEPNet):
        model = aep_cost(module, module.config)
        out.update(
            params_cost_model=model["params"],
            macs_cost_model=model["macs"],
            extra_heads={str(k): v for k, v in model["extra_heads"].items()},
            stages_run=module.depth,
        )
    else:
        cost = subnet_cost(module.arch, module.config)
        out.update(params_cost_model=cost.params, macs_cost_model=cost.macs)
    out["macs"] = out["macs_fvcore"]
    return out


# ---------------------------------------------------------------------------------------------
# The two phases
# ---------------------------------------------------------------------------------------------


@dataclass
class PostprocessResult:
    module: Model
    result: dict[str, Any]


@torch.no_grad()
def _exit_logits(net: AEPNet, batches, acc: Accelerator):
    net.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in net.exits]
    labels = []
    for x, y in batches:
        with acc.autocast():
            logits = net.exit_outputs(x)
        for i, o in enumerate(logits):
            outs[i].append(o.float().cpu())
        labels.append(y.cpu())
    return [torch.cat(o) for o in outs], torch.cat(labels)


def prune_exits(
    net: AEPNet, batches, acc: Accelerator
) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """The exits of ``net`` to keep (by validation accuracy on ``batches``; see
    :func:`natv2.aep.select_exits`; ties go to the fewest MACs), and every subset tried."""
    logits, labels = _exit_logits(net, batches, acc)
    weights = net.ensemble_weights.tolist()

    def macs(positions: tuple[int, ...]) -> tuple[int, int]:
        exits = [net.exits[i] for i in positions]
        return aep_cost(net.arch, net.config, exits)["macs"], len(exits)

    keep, tried = select_exits(logits, labels, weights, macs)
    table = [
        {"exits": [net.exits[i] for i in t["positions"]], "val_accuracy": t["val_accuracy"]}
        for t in tried
    ]
    return tuple(net.exits[i] for i in keep), table


@dataclass(frozen=True)
class _Baseline:
    """The subnet as the search evaluated it: what post-processing starts from and what the
    result's ``before`` reports."""

    module: Subnet  # a recalibrated copy on the accelerator, in eval mode
    costs: dict[str, Any]  # module_costs
    test_accuracy: float
    val_accuracy: float
    val_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.costs,
            "test_accuracy": self.test_accuracy,
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
        }


def _evaluation_sets(
    data: DatasetSplits, settings: PostprocessSettings, acc: Accelerator
) -> tuple[EvalData, EvalData]:
    """Validation and test batches, both recalibrating on the same fixed training images, so
    every model here is measured the way the search measured the subnet."""
    calib = data.calibration_subset(settings.calibration_images)
    val = EvalData(data, data.val, calib, acc, settings.eval_batch)
    test = EvalData(data, data.test, calib, acc, settings.eval_batch)
    return val, test


def _baseline(
    subnet: Subnet,
    val: EvalData,
    test: EvalData,
    acc: Accelerator,
    calibrated: bool,
    log: Callable[[str], None],
) -> _Baseline:
    """A copy of the subnet with BatchNorm recalibrated (unless it already is), measured before
    any training: the "before" of the result and the weights both methods start from."""
    arch = subnet.arch
    resolution = arch.resolution
    base = copy.deepcopy(subnet).to(acc.device)
    if not calibrated:
        recalibrate_bn(base, val.batches("calib", resolution))
    base.eval()
    test_before, _ = top1_and_loss(base, test.batches("eval", resolution), acc)
    val_before, val_loss_before = top1_and_loss(base, val.batches("eval", resolution), acc)
    before = module_costs(base)
    log(
        f"{arch.id}: test top-1 {test_before:.2%}, val top-1 {val_before:.2%} before "
        f"post-processing ({before['params']:,} params, {before['macs']:,} MACs)"
    )
    return _Baseline(base, before, test_before, val_before, val_loss_before)


def _starting_model(
    subnet: Subnet,
    base: Subnet,
    settings: PostprocessSettings,
    supernet: OFAv2Supernet | None,
    val: EvalData,
) -> Model:
    """What both phases train from: the recalibrated subnet, or for AEP that subnet with the
    supernet's exits 1..X re-attached (in eval mode)."""
    arch = subnet.arch
    if settings.method == "aep":
        check_aep_applicable(subnet.config, arch)
        start: Model = build_aep(base, supernet, settings.weighting)
        # The re-attached heads' BatchNorm statistics come from the supernet: recalibrate the
        # whole model (the backbone gets the same statistics again, the heads their own).
        recalibrate_bn(start, val.batches("calib", arch.resolution))
    else:
        start = base
    start.eval()
    return start


def _phase1(
    start: Model,
    data: DatasetSplits,
    settings: PostprocessSettings,
    acc: Accelerator,
    val: EvalData,
    on_epoch: EpochCallback | None,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[Model, dict[str, Any]]:
    """Phase 1 on a copy of ``start``: train, and choose e, the epoch of the lowest validation
    loss (early stopping after ``patience`` epochs). Returns the copy and ``fit``'s result."""
    log(
        f"phase 1: {settings.method} with {settings.optimizer} lr {settings.lr:g} on "
        f"{len(data.train)} train images, up to {settings.max_epochs} epochs, "
        f"patience {settings.patience}"
    )
    phase1_net = copy.deepcopy(start)
    p1 = fit(
        phase1_net,
        data,
        data.train,
        settings,
        acc,
        epochs=settings.max_epochs,
        val=val,
        phase=1,
        seed=settings.seed,
        on_epoch=on_epoch,
        progress=progress,
    )
    e = p1["best_epoch"]
    best_rec = p1["history"][e]
    log(
        f"phase 1: best epoch e = {e} (val loss {best_rec['val_loss']:.4f}, val top-1 "
        f"{best_rec['val_accuracy']:.2%}), {p1['epochs_run']} epochs run"
    )
    return phase1_net, p1


def _prune_after_phase1(
    start: Model,
    phase1_net: Model,
    p1: dict[str, Any],
    settings: PostprocessSettings,
    val: EvalData,
    acc: Accelerator,
    log: Callable[[str], None],
) -> tuple[Model, dict[str, Any] | None]:
    """AEP only: the exits to keep, judged on the best phase-1 weights, and the result's
    ``exits`` section. Returns the model phase 2 trains (``start`` itself when nothing is
    pruned or the method is not AEP) and that section (None without AEP)."""
    if not isinstance(start, AEPNet):
        return start, None
    phase1_net.load_state_dict(p1["best_state"])
    candidates = list(start.exits)
    if settings.prune and len(candidates) > 1:
        batches = val.batches("eval", start.arch.resolution)
        assert isinstance(phase1_net, AEPNet)  # a copy of ``start``
        keep, table = prune_exits(phase1_net, batches, acc)
    else:
        keep, table = tuple(candidates), []
    template = pruned(start, keep) if keep != start.exits else start
    exits_doc = {
        "candidates": candidates,
        "kept": list(keep),
        "pruned": [c for c in candidates if c not in keep],
        "weighting": settings.weighting,
        "loss_weights": list(template.loss_weights),
        "ensemble_weights": template.ensemble_weights.tolist(),
        "ensemble": "weighted sum of the kept exits' logits",
        "subsets": table,
    }
    log(f"AEP exits: kept {list(keep)} of {candidates}")
    return template, exits_doc


def _phase2(
    template: Model,
    start: Model,
    start_state: dict[str, Any],
    e: int,
    data: DatasetSplits,
    settings: PostprocessSettings,
    acc: Accelerator,
    on_epoch: EpochCallback | None,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[Model, dict[str, Any], ImageSet]:
    """Phase 2: a fresh copy of the starting weights trained on train + validation for exactly
    e epochs (the trajectory e was chosen on, now with the validation images too). Returns the
    model (eval mode), ``fit``'s result and the train + validation set."""
    final = copy.deepcopy(template)
    if template is start:
        final.load_state_dict(start_state)
    train_val = data.train_val()
    log(f"phase 2: {e} epochs on train + val ({len(train_val)} images)")
    p2 = fit(
        final,
        data,
        train_val,
        settings,
        acc,
        epochs=e,
        phase=2,
        seed=settings.seed + 1,
        on_epoch=on_epoch,
        progress=progress,
    )
    final.eval()
    return final, p2, train_val


def _added_costs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What post-processing added (AEP's extra heads), absolute and in percent of before."""
    return {
        "params": after["params"] - before["params"],
        "macs": after["macs"] - before["macs"],
        "params_pct": 100.0 * (after["params"] - before["params"]) / before["params"],
        "macs_pct": 100.0 * (after["macs"] - before["macs"]) / max(before["macs"], 1),
    }


def _measure_after(
    final: Model,
    test: EvalData,
    acc: Accelerator,
    before: _Baseline,
    best_rec: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result's ``after`` (costs, test top-1 and loss of the final model; its validation
    accuracy is phase 1's at epoch e, since phase 2 trains on the validation split) and
    ``added`` sections."""
    batches = test.batches("eval", final.arch.resolution)
    test_after, test_loss_after = top1_and_loss(final, batches, acc)
    costs = module_costs(final)
    added = _added_costs(before.costs, costs)
    log(
        f"test top-1 {before.test_accuracy:.2%} -> {test_after:.2%}; params "
        f"{before.costs['params']:,} -> {costs['params']:,} ({added['params_pct']:+.1f}%), MACs "
        f"{before.costs['macs']:,} -> {costs['macs']:,} ({added['macs_pct']:+.1f}%)"
    )
    after = {
        **costs,
        "test_accuracy": test_after,
        "test_loss": test_loss_after,
        "val_accuracy": best_rec["val_accuracy"],
        "val_accuracy_note": "phase 1 at epoch e (phase 2 trains on the validation split)",
    }
    return after, added


def postprocess_subnet(
    subnet: Subnet,
    data: DatasetSplits,
    settings: PostprocessSettings,
    acc: Accelerator,
    *,
    supernet: OFAv2Supernet | None = None,
    calibrated: bool = False,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> PostprocessResult:
    """Post-process a materialised subnet (left untouched; the work is done on copies).

    ``supernet``: the exit supernet the AEP heads come from (``method == "aep"``).
    ``calibrated``: the subnet's BatchNorm already holds statistics recalibrated on training
    data; otherwise they are recalibrated here on ``settings.calibration_images`` images.
    ``on_epoch(phase, record)`` is called after every epoch (and for phase 1's epoch 0).
    """
    t0 = time.perf_counter()
    arch = subnet.arch
    val, test = _evaluation_sets(data, settings, acc)
    before = _baseline(subnet, val, test, acc, calibrated, log)
    start = _starting_model(subnet, before.module, settings, supernet, val)
    start_state = copy.deepcopy(start.state_dict())

    phase1_net, p1 = _phase1(start, data, settings, acc, val, on_epoch, progress, log)
    e = p1["best_epoch"]
    best_rec = p1["history"][e]
    template, exits_doc = _prune_after_phase1(start, phase1_net, p1, settings, val, acc, log)
    final, p2, train_val = _phase2(
        template, start, start_state, e, data, settings, acc, on_epoch, progress, log
    )

    after, added = _measure_after(final, test, acc, before, best_rec, log)
    doc: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "subnet": arch.id,
        "method": settings.method,
        "optimizer": settings.optimizer,
        "lr": settings.lr,
        "weighting": settings.weighting if settings.method == "aep" else None,
        "settings": asdict(settings),
        "epochs_chosen": e,
        "phase1": {
            "data": f"train ({len(data.train)} images), validation ({len(data.val)} images)",
            "epochs_run": p1["epochs_run"],
            "stopped_early": p1["stopped_early"],
            "best_epoch": e,
            "best_val_loss": best_rec["val_loss"],
            "best_val_accuracy": best_rec["val_accuracy"],
            "history": p1["history"],
        },
        "phase2": {
            "data": f"train + validation ({len(train_val)} images)",
            "epochs_run": p2["epochs_run"],
            "history": p2["history"],
        },
        "exits": exits_doc,
        "before": before.to_dict(),
        "after": after,
        "added": added,
        "dataset": {"name": data.name, "test_images": len(data.test)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return PostprocessResult(final.cpu().eval(), doc)


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------


def save_postprocessed(directory: str | Path, module: Model, result: dict | None) -> Path:
    """``model.pt``, ``arch.json`` (natv2-subnet/1 or natv2-aep/1) and ``result.json``, each
    written atomically."""
    directory = Path(directory)
    module = module.cpu().eval()
    if isinstance(module, AEPNet):
        atomic_torch_save(module.state_dict(), directory / "model.pt")
        desc = json_text(aep_description(module))
        atomic_write_bytes(directory / "arch.json", desc.encode())
    elif isinstance(module, Subnet):
        save_subnet(module, directory)
    else:
        raise TypeError(f"cannot save a {type(module).__name__}: expected a Subnet or an AEPNet")
    if result is not None:
        atomic_write_bytes(directory / "result.json", json_text(result).encode())
    return directory


def load_postprocessed(directory: str | Path) -> Model:
    """Rebuild a post-processed model (either format) without the supernet, in eval mode.

    ``natv2-subnet/1`` gives a ``Subnet``, ``natv2-aep/1`` an :class:`~natv2.aep.AEPNet`;
    weights load with ``weights_only=True``. A missing or corrupt file raises Natv2Error.
    """
    directory = Path(directory)
    fix = "rerun `natv2 postprocess RUN_DIR --subnet ID` to write it again"
    if not directory.is_dir():
        raise Natv2Error(f"{directory} does not exist; post-process the subnet first ({fix})")
    desc = read_json(directory / "arch.json", "model description", fix)
    try:
        if not isinstance(desc, dict):
            raise ValueError("not a JSON object")
        fmt = desc.get("format")
        if fmt == SUBNET_FORMAT:
            return load_subnet(directory)
        net = aep_from_description(desc)
    except Natv2Error:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Natv2Error(
            f"{directory / 'arch.json'}: cannot read the model description ({exc}); "
            f"expected format {SUBNET_FORMAT!r} or {AEP_FORMAT!r}; {fix}"
        ) from None
    load_weights(net, directory / "model.pt", "AEP state dict", net.arch.id, fix)
    stored = desc.get("ensemble_weights")
    if stored is not None and not torch.allclose(
        net.ensemble_weights, torch.tensor(stored, dtype=torch.float32), atol=1e-6
    ):
        raise Natv2Error(
            f"{directory}: model.pt and arch.json disagree on the ensemble weights; {fix}"
        )
    return net.eval()


# ---------------------------------------------------------------------------------------------
# A run directory
# ---------------------------------------------------------------------------------------------


def default_method(config, arch) -> str:
    """AEP for subnets of exit supernets with X > 1, plain fine-tuning otherwise."""
    return "aep" if config.exits and arch.exit > 1 else "finetune"


def postprocess_run(
    run_dir: str | Path,
    subnet_id: str,
    *,
    method: str | None = None,
    preset: str = DEFAULT_PRESET,
    acc: Accelerator | None = None,
    data: DatasetSplits | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
    **overrides: Any,
) -> tuple[PostprocessResult, Path]:
    """Post-process subnet ``subnet_id`` of a search run and save it to
    ``RUN_DIR/postprocessed/ID`` (or ``out``). ``overrides``: any
    :class:`PostprocessSettings` field (None keeps the preset's value).

    ``data``: the run's dataset, already loaded; otherwise it is loaded as the run recorded
    it, from ``data_dir`` when given (:func:`natv2.rundir.run_dataset`)."""
    from natv2 import rundir
    from natv2.supernet.checkpoint import load_supernets
    from natv2.supernet.materialize import materialize
    from natv2.supernet.network import check_runnable

    found = rundir.run_subnet(run_dir, subnet_id)
    run_dir, config, record, encoding = found.run_dir, found.config, found.record, found.encoding
    arch = found.space.decode(found.vector)
    if arch.id != subnet_id:
        raise Natv2Error(
            f"{run_dir}: the record {subnet_id} decodes to {arch.id}; the run directory is "
            "inconsistent (rerun the search with --resume)"
        )
    nets, _ = load_supernets(found.supernet_path)
    if arch.width not in nets:
        raise Natv2Error(
            f"{found.supernet_path} has no supernet of width {arch.width:g} for {subnet_id}"
        )
    supernet = nets[arch.width].eval()
    check_runnable(supernet, arch)
    method = (method or default_method(supernet.config, arch)).lower()
    if method == "aep":
        check_aep_applicable(supernet.config, arch)
    if overrides.get("calibration_images") is None:
        overrides["calibration_images"] = (config.get("settings") or {}).get(
            "calibration_images", DEFAULT_CALIBRATION_IMAGES
        )
    settings = make_settings(method, preset, **overrides)
    folder = Path(out) if out is not None else run_dir / rundir.POSTPROCESSED / subnet_id
    flag = "--out" if out is not None else ""
    check_out_folder(folder, "a post-processed model folder", MODEL_FILES, flag)
    with output_folder(folder, "choose another --out"):
        if data is None:
            data = _run_dataset(run_dir, config, data_dir)
        if acc is None:
            from natv2.accelerator import resolve_accelerator

            acc = resolve_accelerator("auto")
        supernet = supernet.to(acc.device)
        subnet = materialize(supernet, arch).eval()
        log(f"post-processing {subnet_id} ({encoding}, exit {arch.exit}) with method {method}")
        res = postprocess_subnet(
            subnet,
            data,
            settings,
            acc,
            supernet=supernet,
            on_epoch=on_epoch,
            progress=progress,
            log=log,
        )
        res.result.update(
            {"run_dir": str(run_dir), "encoding": encoding, "vector": list(record["vector"])}
        )
        res.result["search_val_accuracy"] = record.get("accuracy")
        save_postprocessed(folder, res.module, res.result)
    res.result["folder"] = str(folder)
    return res, folder


def _run_dataset(run_dir: Path, config: dict, data_dir: str | Path | None) -> DatasetSplits:
    """The dataset a search run used, as its configuration records it."""
    from natv2.data import load_dataset
    from natv2.rundir import run_dataset

    which = run_dataset(config, data_dir=data_dir)
    if not which.name:
        raise Natv2Error(f"{run_dir}: the run configuration names no dataset")
    return load_dataset(which.name, data_dir=which.data_dir)


__all__ = [
    "METHODS",
    "PRESETS",
    "PostprocessResult",
    "PostprocessSettings",
    "default_method",
    "fit",
    "load_postprocessed",
    "make_settings",
    "module_costs",
    "postprocess_run",
    "postprocess_subnet",
    "prune_exits",
]
