"""Neural Architecture *Transfer*: move a supernet pretrained on one dataset to another.

NAT and NATv2 search a target dataset with a supernet pretrained elsewhere (OFA/OFAv2 on
ImageNet). Two steps come before the search:

1. **Re-heading** (:func:`rehead`): when the class counts differ, the classifier ``Linear`` of
   every exit head is re-created for the target's classes (seeded); everything else is kept.
   With equal class counts the heads are kept (their outputs are re-learned by the warm-up).
2. **Warm-up** (:func:`warm_up`) on the target data before pre-processing, by one of two
   recipes (``SearchSettings.transfer_recipe``):

   * ``maximal`` (the paper, §4; the ``paper`` preset): the maximal network of each width alone,
     AEP joint training of its exits with DESC weights on exit supernets (plain cross-entropy
     of the final exit otherwise); SGD 0.9, wd 3e-4, lr 7.5e-3 cosine, batch 256. The paper's
     long adaptation then trains the other subnets.
   * ``sandwich`` (the CPU presets): the ``scratch`` recipe's sandwich rule on the target
     (maximal, minimal and two random subnets a step, in-place distillation), AdamW with
     weight decay 0.01, so the small subnets move to the target too, which a few adaptation
     steps cannot do. Measured (mnist5k ``scratch`` supernet to digits, 75 steps of batch 64,
     val top-1 of the 5 fixed subnets of ``benchmarks/supernet_quality.py``, minimal to
     maximal): before 27.2 / 55.0 / 55.0 / 31.7 / 79.4 %; ``maximal`` at lr 0.02
     22.2 / 66.1 / 70.0 / 33.9 / 95.6 %; ``sandwich`` SGD 0.02 52.8 / 66.1 / 78.3 / 60.6 / 94.4 %,
     AdamW 3e-3 48.9 / 72.8 / 80.6 / 62.8 / 96.1 % (the default), each 21-29 s on 2 cores.

   The paper gives no warm-up length; the search presets set it (``SearchSettings.transfer_*``).
   It checkpoints every epoch and resumes.

A supernet needs transfer when its checkpoint was made on another dataset (its ``meta``
records the dataset; one without a record, such as an ``import-ofa`` file, counts as another)
or has another class count (:func:`needs_transfer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from natv2.accelerator import Accelerator
from natv2.data import DatasetSplits
from natv2.errors import Natv2Error
from natv2.evaluate import EvalData, evaluate_subnet
from natv2.supernet.network import OFAv2Supernet
from natv2.supernet.plain import ExitHead
from natv2.train import ElasticChoices, Phase, Schedule, SupernetTrainer, sandwich_schedule

#: the paper's warm-up learning rate (§4)
PAPER_WARMUP_LR = 7.5e-3


@dataclass(frozen=True)
class WarmupResult:
    """What the warm-up did to one width's maximal network (validation top-1, fractions)."""

    width: float
    steps: int
    top1_before: float
    top1_after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "steps": self.steps,
            "top1_before": self.top1_before,
            "top1_after": self.top1_after,
        }


def needs_transfer(meta: Mapping[str, Any], config_classes: int, data: DatasetSplits) -> bool:
    """Was the checkpoint made for another dataset (or another class count)?"""
    return meta.get("dataset") != data.name or config_classes != data.num_classes


def rehead(net: OFAv2Supernet, num_classes: int, seed: int = 0) -> bool:
    """Give every exit head a fresh classifier for ``num_classes`` (in place, seeded).

    Returns whether anything changed (False when the class count is already right)."""
    if net.config.num_classes == num_classes:
        return False
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for head in net.exits.values():
            assert isinstance(head, ExitHead)  # the supernet's exits are plain ExitHeads
            old = head.classifier
            head.classifier = nn.Linear(old.in_features, num_classes).to(old.weight.device)
    finally:
        torch.random.set_rng_state(gen_state)
    net.config = replace(net.config, num_classes=num_classes)
    return True


TRANSFER_RECIPES: tuple[str, ...] = ("maximal", "sandwich")


def warmup_schedule(
    net: OFAv2Supernet,
    epochs: int,
    lr: float,
    batch_size: int,
    steps_per_epoch: int | None,
    recipe: str = "maximal",
) -> Schedule:
    """The warm-up's schedule by recipe (module docstring)."""
    if recipe == "sandwich":
        steps = epochs * (steps_per_epoch or 1)
        return sandwich_schedule(
            "transfer-warmup",
            epochs,
            lr,
            batch_size,
            steps_per_epoch,
            warmup_steps=max(1, steps // 10),
            optimizer="adamw",
            weight_decay=0.01,
        )
    if recipe != "maximal":
        raise Natv2Error(
            f"unknown transfer recipe {recipe!r}; choose one of {', '.join(TRANSFER_RECIPES)}"
        )
    step = "warmup" if net.space.has_exits else "teacher"
    resolution = max(net.space.allowed_resolutions)
    full = ElasticChoices(
        resolutions=(resolution,),
        kernels=(7,),
        expands=(6,),
        depths=(4,),
        branch_masks=(7,),
        exits=(5,),
    )
    return Schedule(
        "transfer-warmup",
        (Phase(step, epochs, lr, full),),
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        exit_weighting="desc",
    )


def warm_up(
    nets: Mapping[float, OFAv2Supernet],
    data: DatasetSplits,
    acc: Accelerator,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    steps_per_epoch: int | None,
    calibration_images: int,
    recipe: str = "maximal",
    checkpoint_dir: Path | None = None,
    seed: int = 0,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[WarmupResult]:
    """Warm up each width's supernet on ``data`` by ``recipe``; log and return its maximal
    network's val top-1 before and after (BatchNorm recalibrated, as the search evaluates).
    ``checkpoint_dir``: one training checkpoint per width there, resumed when present."""
    cache = EvalData(data, data.val, data.calibration_subset(calibration_images), acc)
    results = []
    for width, net in sorted(nets.items()):
        maximal = net.space.maximal()
        before = evaluate_subnet(net, maximal, cache)["top1"]
        schedule = warmup_schedule(net, epochs, lr, batch_size, steps_per_epoch, recipe)
        trainer = SupernetTrainer(net, data, acc, schedule, seed=seed, show_progress=show_progress)
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = checkpoint_dir / f"transfer-w{width:.1f}.pt"
            if ckpt.is_file():
                trainer.load(ckpt)
        state = trainer.run(checkpoint=ckpt)
        after = evaluate_subnet(net, maximal, cache)["top1"]
        results.append(WarmupResult(width, state.step, before, after))
        log(
            f"transfer warm-up ({recipe}) of the w{width:.1f} supernet on {data.name}: "
            f"{state.step} steps, maximal subnet val top-1 {100 * before:.2f}% -> "
            f"{100 * after:.2f}%"
        )
    return results
