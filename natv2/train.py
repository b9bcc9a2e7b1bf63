"""Supernet training: from-scratch sandwich training, OFAv2 Extended Progressive Shrinking (EPS)
and NAT's adaptation steps.

Two recipes, chosen by the schedule's name:

- **From scratch** (``scratch``, the CPU default; ``scratch-full`` at GPU scale): every step
  trains all subnets at once by the *sandwich rule* of slimmable networks / BigNAS: the maximal
  subnet (at the largest resolution), the minimal subnet (at the smallest) and ``k - 2`` subnets
  drawn with NATv2's sampler (uniform in stage and network depth, every exit, branch mask,
  kernel, expand and resolution live from the first step), gradients accumulated, one optimizer
  step. The maximal subnet learns from the labels with label-smoothed cross-entropy, its
  earlier exits jointly (``early_exit_weight`` each: otherwise exit heads 2..4 are trained only
  when a random subnet stops there); every other subnet learns by *in-place distillation* from
  the maximal subnet's detached soft output of the same step, so no teacher copy and no separate
  teacher forward exist, and by *stage-output distillation*: its output of every stage up to
  its exit is pulled towards the maximal subnet's detached output of that stage (squared
  distance relative to the target's mean square, the target average-pooled to the subnet's
  resolution: ``distill.feature_distillation_loss``). Stage outputs are what the shared weights
  downstream (the next stage, the exit heads) read, and a subnet whose stage outputs drift from
  the maximal subnet's is served badly by them: the middle subnets' top-1 on their own training
  images equals their test top-1 (90-92 %), they underfit. The students' losses weigh half the
  maximal subnet's (``kd_ratio`` 0.5, ``feature_kd_weight`` 1.5: distillation and stage outputs
  1 : 3). The optimizer suits training from random weights: on CPUs
  (``scratch``) AdamW at lr 2e-2 per 128 images, decoupled weight decay 0.01; at GPU scale
  (``scratch-full``) SGD Nesterov at lr 0.2 per 256 images, weight decay 5e-5; both with a
  linear warm-up over 10 % of the steps and cosine decay, gradients clipped by value 1.0, no
  weight decay on BatchNorm and biases, zero-initialised residual BatchNorm
  (``build_supernet``). Sources: Yu et al., "Universally Slimmable Networks"
  (ICCV 2019: sandwich rule, in-place distillation); Yu et al., "BigNAS" (ECCV 2020: from
  scratch without progressive shrinking, one resolution per subnet); Wang et al., "AttentiveNAS"
  (CVPR 2021: label smoothing, clipping, warm-up and decay used here); stage-output
  distillation in the manner of FitNets (Romero et al., ICLR 2015) and of DNA's block-wise
  supervision of a supernet by a teacher's features (Li et al., CVPR 2020).

  Measured on mnist5k (tiny-w1.0, 400 steps of batch 32 unless said; test top-1 of the maximal
  and minimal subnets, mean over 12 fixed NATv2-sampled subnets of 0.8-3 M MACs): batch 64 for
  250 steps without joint exits 96.9 / 51.1 / 32 %; batch 32 with early-exit weight 0.1
  95.7 / 55.1 / 49 %, 0.25 95.5 / 55.5 / 60 %, 0.5 95.4 / 60.6 / 65 % (the default); lr 0.05
  95.8 / 45.1 / 45 %, lr 0.2 95.5 / 52.4 / 56 %; the others' loss half labels, half KD
  95.2 / 56.8 / 57 %; three random subnets a step 95.5 / 53.6 / 61 % (1.45x the time).
  The optimizer (test top-1 of maximal / minimal / mean of the 12, 2 processes): SGD 0.1 for
  400 steps 96.0 / 56.6 / 62.3 %, for 600 steps 97.0 / 68.5 / 77.7 %; AdamW for 400 steps at
  lr 3e-3 96.2 / 53.7 / 50.6 %, 6e-3 96.3 / 62.5 / 65.5 %, 1e-2 96.6 / 61.6 / 72.0 %; for 600
  steps at 6e-3 96.8 / 61.1 / 77.2 %, at 1e-2 with weight decay 0.01 97.4 / 65.0 / 80.5 %
  (the previous ``scratch``: 12 epochs of 50 steps of batch 32, warm-up 60).
  Images per step, then (600 steps, AdamW; test top-1 of the five fixed subnets of
  ``benchmarks/supernet_quality.py``: minimal / MACs q25 / q50 / q75 / maximal; one seed, so a
  point or two is noise): batch 32 at lr 1e-2 68.0 / 82.7 / 86.5 / 79.3 / 97.5 %; batch 128 at
  lr 1e-2 78.1 / 90.4 / 92.0 / 91.1 / 97.3 %, at 2e-2 86.7 / 90.8 / 90.4 / 92.0 / 97.4 % (the
  default: ``scratch``), at 3e-2 84.5 / 86.9 / 89.1 / 91.2 / 97.4 %; batch 192 at 2.5e-2
  85.3 / 89.9 / 93.1 / 91.4 / 97.4 %. More work per step stops paying at batch 128: 900 steps
  (1.5x the time) gave 86.7 / 90.8 / 90.5 / 92.6 / 97.7 % in that session (a later one
  measured 900 steps at 84.4 / 92.5 / 92.9 / 92.1 / 97.8 % against 80.7 / 90.6 / 91.7 /
  89.8 / 96.6 % for 600, below: more steps do pay), six subnets a step (1.4x)
  79.7 / 92.8 / 88.7 / 93.0 / 98.4 %. A step of batch 128 costs about twice one of batch 32
  here (the tiny supernet's step is dominated by per-layer overhead), so four times the images
  cost about twice the time.
  Where the rest of the gap to the same architectures trained alone sits (one supernet of
  this schedule): the maximal subnet stopped at exits 1..5 gives 93.3 / 96.8 / 97.3 / 97.6 /
  97.6 %, so the exit heads are sound; setting every branch mask of the three quantile subnets
  to 7 lifts them from 90.2 / 93.3 / 90.4 % to 93.9 / 94.0 / 92.9 %, so branch interference
  costs 1-4 points and weight sharing across expand, kernel, depth and resolution the rest.
  Averaging a parallel level's branches instead of summing them (skip kept) gave
  84.8 / 91.9 / 89.3 / 90.7 / 97.7 % against 81.2 / 90.2 / 93.3 / 90.4 / 97.6 % for the sum on
  the same day: within the run-to-run noise of two AdamW processes, so not adopted.
  Private BatchNorm affine offsets per block choice (slimmable networks' switchable
  BatchNorm, one weight and bias offset per branch mask, expand and kernel at every level;
  +352 k supernet parameters) gave 80.7 / 87.3 / 89.8 / 90.8 / 97.8 % against
  86.7 / 90.8 / 90.4 / 92.0 / 97.4 % without (mean of 20 random subnets 87.5 against
  88.7 %), so not adopted. Tuning the quantile subnets alone for 54 steps (AdamW, batch 64)
  lifts them by 3-5 points whether only their BatchNorm affine parameters train (lr 1e-2:
  93.7 / 95.4 / 95.0 %) or every weight (lr 1e-3: 94.4 / 95.7 / 94.7 %): what the shared
  weights lack is specialisation to each subnet, not a per-choice scale and shift. Varying
  one dimension of a quantile subnet toward the maximal (same exit and depth) locates it:
  every block at branch mask 7, expand 6, kernel 7 gives 96.1 / 94.8 / 97.2 % (97.3 % for
  the q50 subnet at resolution 64), any one of the three alone at most 93.8 %.
  Stage-output distillation and the step count (test top-1 of the five fixed subnets, then the
  mean over 30 NATv2-sampled subnets, seed 123, ``supernet_quality.py --random``; two supernet
  seeds, 0 / 1; all with the maximal subnet's early exits): the previous ``scratch`` (600
  steps, plain in-place distillation) 80.7 / 90.6 / 91.7 / 89.8 / 96.6 %, mean 85.7 (seed 1:
  81.5 / 90.8 / 86.7 / 90.3 / 97.5 %, mean 83.7); with stage outputs at weight 1 (distillation
  1) 84.0 / 91.2 / 91.8 / 93.2 / 97.7 %, mean 87.0; weight 3: 83.2 / 91.5 / 92.7 / 93.3 /
  97.5 %, mean 87.5 (seed 1: 83.4 / 93.2 / 90.6 / 90.9 / 97.7 %, mean 87.3); weight 10:
  80.7 / 92.7 / 92.7 / 92.4 / 96.9 %, mean 86.5; stage outputs compared after scaling each to
  unit mean square (invariant to a subnet's overall scale) 79.4 / 86.6 / 91.8 / 90.8 / 96.3 %,
  mean 85.7, no better than none; distillation 0.5 and stage outputs 1.5 (the students at half
  the maximal subnet's weight) 82.0 / 92.6 / 93.1 / 92.7 / 97.9 %, mean 87.6 (seed 1:
  82.3 / 94.5 / 93.2 / 93.2 / 97.9 %, mean 86.9), the default; distillation 3 and stage
  outputs 3 (the students at three times the weight) 79.5 / 89.4 / 90.7 / 86.6 / 95.7 %, mean
  83.0: the maximal subnet teaches every other one, and it suffers first. AttentiveNAS'
  WorstUp (each random subnet the worst, by cross-entropy on 16 images a micro-batch, of
  three candidates; stage outputs 3) lifted the worst of the 30 from 48.7 to 60.0 % but
  lowered the rest: 79.2 / 89.7 / 89.7 / 88.7 / 97.2 %, mean 86.4, at 1.15x the step time,
  so not adopted. On their own training images (no augmentation) the middle subnets score
  what they score on the test split (e.g. 90.1 / 91.1 %, 90.8 / 92.2 % test / train; the
  maximal subnet 97.7 / 99.0 %): they underfit, and more steps help where more images per
  step did not (batch 192, above): with stage outputs 3, 900 steps 88.0 / 92.7 / 92.7 /
  93.3 / 97.2 %, mean 89.4, and 1,200 steps 87.9 / 94.3 / 94.7 / 94.1 / 98.2 %, mean 90.9;
  the default at 900 steps (``scratch``: 12 epochs of 75, warm-up 90) 86.4 / 94.2 / 94.7 /
  94.5 / 98.1 %, mean 90.0, against 84.4 / 92.5 / 92.9 / 92.1 / 97.8 %, mean 88.5, for 900
  steps of plain in-place distillation (distillation 1, no stage outputs). A step's time goes
  mostly to the backward pass of the maximal subnet (58 % of a step; on a CPU oneDNN's weight
  gradient of a 7x7 depthwise convolution alone takes about ten times its forward pass), so
  900 steps are what the main job's ten minutes leave room for (12 epochs of 75 steps took
  465 s here).
  ``benchmarks/supernet_quality.py`` compares fixed subnets with the same architectures trained
  alone.
- **EPS** (``paper``; ``cpu-demo`` is its CPU miniature): OFAv2's recipe for a supernet whose
  maximal network is already trained (OFA's ImageNet weights). The maximal network first
  (``teacher``: plain cross-entropy on its final exit; natv2 trains it from scratch when there is
  none), its warm-up (AEP joint training of its exits with DESC weights, exit supernets only),
  then elastic resolution, kernel, depth, expand, level (parallel branches) and exit, each step
  unlocking its values progressively. Each batch trains several sampled subnets with gradients
  accumulated and one optimizer step, with knowledge distillation from the teacher (ENS-KD on
  exit supernets: the ensemble of the teacher's exits, weighted by their accuracy on the batch);
  the teacher is re-extracted (frozen copy of the maximal network) at the end of each step and
  runs with batch statistics, as OFA's teacher does (its running statistics were accumulated by
  other subnets).

Reproducibility: every random draw of a step (subnets, augmentation) is derived from
``(seed, global step, rank)``, and each epoch's data order from ``(seed, epoch)``, so a run
resumed from a checkpoint continues exactly as if it had never stopped, and a torchrun run
equals a single-process run that splits each batch into the same per-rank micro-batches: with
SGD to float tolerance; with AdamW only up to the summation order of the gradients, because
Adam turns a gradient that is zero in exact arithmetic (a BatchNorm bias whose shift the next
BatchNorm removes) into a step of +-lr whose sign is that order's rounding noise.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from natv2.accelerator import Accelerator
from natv2.atomic import atomic_torch_save
from natv2.data import DatasetSplits, make_loader
from natv2.distill import (
    feature_distillation_loss,
    inplace_distillation_target,
    joint_exit_loss,
    soft_cross_entropy,
    teacher_probs,
)
from natv2.errors import Natv2Error
from natv2.runtime import warn_if_openmp_busy_waits
from natv2.schedules import cosine_lr
from natv2.space import (
    EXITS,
    EXPANDS,
    KERNELS,
    LEVELS_PER_STAGE,
    N_STAGES,
    RESOLUTIONS,
    Arch,
    Block,
    SearchSpace,
)
from natv2.supernet.network import OFAv2Supernet
from natv2.untrusted import Field, check_fields, load_torch

TRAIN_FORMAT = "natv2-train/1"
#: what a training checkpoint must hold, checked before ``SupernetTrainer.load`` reads it
TRAIN_STATE_SCHEMA = {
    "config": Field(dict),
    "schedule": Field(str),
    "supernet": Field(dict),
    "teacher": Field((dict, type(None))),
    "optimizer": Field(dict),
    "progress": Field(dict),
    "history": Field(list),
}
TRAIN_PROGRESS_SCHEMA = dict.fromkeys(("phase", "epoch", "step"), Field(int, lo=0, hi=2**62))
ArchSampler = Callable[[np.random.Generator, int], list[Arch]]


@dataclass(frozen=True)
class ElasticChoices:
    """The values an EPS phase may sample for each elastic dimension."""

    resolutions: tuple[int, ...] = RESOLUTIONS
    kernels: tuple[int, ...] = KERNELS
    expands: tuple[int, ...] = EXPANDS
    depths: tuple[int, ...] = (2, 3, 4)
    branch_masks: tuple[int, ...] = tuple(range(1, 8))
    exits: tuple[int, ...] = EXITS

    def sample(self, space: SearchSpace, rng: np.random.Generator, resolution: int) -> Arch:
        width = space.widths[-1]
        masks = self.branch_masks if space.parallel else (1,)
        exits = self.exits if space.has_exits else (EXITS[-1],)
        levels: list[Block | None] = []
        for _ in range(N_STAGES):
            depth = int(rng.choice(self.depths))
            for i in range(LEVELS_PER_STAGE):
                if i < depth:
                    levels.append(
                        Block(
                            int(rng.choice(masks)),
                            int(rng.choice(self.expands)),
                            int(rng.choice(self.kernels)),
                        )
                    )
                else:
                    levels.append(None)
        arch = Arch(resolution, width, int(rng.choice(exits)), tuple(levels))
        return space.decode(space.encode(arch))


@dataclass(frozen=True)
class Phase:
    """One EPS phase: which values are unlocked, for how long, at what learning rate."""

    # sandwich | teacher | warmup | resolution | kernel | depth | expand | level | exit | adapt
    step: str
    epochs: int
    lr: float
    choices: ElasticChoices
    subnets_per_batch: int = 1
    warmup_steps: int = 0  # linear learning-rate warm-up at the start of the phase


@dataclass(frozen=True)
class Schedule:
    name: str
    phases: tuple[Phase, ...]
    batch_size: int = 256
    # ``sgd`` (Nesterov, ``momentum``) or ``adamw`` (torch's betas; ``weight_decay`` decoupled)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 3e-4
    kd_ratio: float = 1.0
    exit_weighting: str = "desc"  # AEP joint warm-up of the maximal network's exits (OFAv2)
    # ENS-KD: how the teacher's exits are ensembled into the soft target. The paper leaves it
    # open; rising weights keep the target closest to the teacher's strongest (deepest) exit.
    ens_kd_weighting: str = "asc"
    # an epoch's length in steps (CPU demos and tests; a short split is passed over again);
    # None = one pass over the train split
    steps_per_epoch: int | None = None
    # BatchNorm groups of a batch: each batch is split into this many micro-batches, by ranks
    # or (in one process) one after another, so the weights do not depend on the process count
    micro_batches: int = 1
    label_smoothing: float = 0.0  # on the labels' cross-entropy (the maximal subnet's)
    grad_clip_value: float | None = None
    decay_norm_and_bias: bool = True  # weight decay on BatchNorm weights and biases too
    # sandwich: the maximal subnet's earlier exits are trained jointly with its final one, each
    # with this weight on its cross-entropy (exit heads 2..4 are otherwise trained only when a
    # random subnet happens to stop there)
    early_exit_weight: float = 0.0
    # sandwich: every other subnet also learns the maximal subnet's stage outputs, with this
    # weight (``distill.feature_distillation_loss``)
    feature_kd_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in TRAIN_OPTIMIZERS:
            raise Natv2Error(
                f"schedule {self.name}: unknown optimizer {self.optimizer!r}; choose one of "
                f"{', '.join(TRAIN_OPTIMIZERS)}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


TRAIN_OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")


def _eps_phases(
    epochs: dict[str, int],
    lrs: tuple[float, float],
    subnets: int,
    resolutions: tuple[int, ...],
    progressive: bool = True,
) -> tuple[Phase, ...]:
    """The EPS sequence; ``epochs[step]`` is the length of each phase of that step.

    ``progressive``: depth, expand, level and exit unlock their values in two phases each (OFA);
    otherwise in one (the CPU demo, where every step counts).
    """

    def stages(values: tuple) -> tuple:
        return values if progressive else values[-1:]

    full = ElasticChoices(
        resolutions=(max(resolutions),),
        kernels=(7,),
        expands=(6,),
        depths=(4,),
        branch_masks=(7,),
        exits=(5,),
    )
    warm_lr, lr = lrs
    phases = [
        Phase("teacher", epochs["teacher"], warm_lr, full),
        Phase("warmup", epochs["warmup"], warm_lr, full),
    ]
    c = replace(full, resolutions=tuple(resolutions))
    phases.append(Phase("resolution", epochs["resolution"], lr, c, subnets))
    c = replace(c, kernels=(7, 5, 3))
    phases.append(Phase("kernel", epochs["kernel"], lr, c, subnets))
    for depths in stages(((4, 3), (4, 3, 2))):
        c = replace(c, depths=depths)
        phases.append(Phase("depth", epochs["depth"], lr, c, subnets))
    for expands in stages(((6, 4), (6, 4, 3))):
        c = replace(c, expands=expands)
        phases.append(Phase("expand", epochs["expand"], lr, c, subnets))
    for masks in stages(((7, 5, 3, 1), tuple(range(1, 8)))):
        c = replace(c, branch_masks=masks)
        phases.append(Phase("level", epochs["level"], lr, c, subnets))
    for exits in stages(((5, 4, 3), (5, 4, 3, 2, 1))):
        c = replace(c, exits=exits)
        phases.append(Phase("exit", epochs["exit"], lr, c, subnets))
    return tuple(phases)


SCHEDULES: tuple[str, ...] = ("scratch", "scratch-full", "cpu-demo", "paper")


def sandwich_schedule(
    name: str,
    epochs: int,
    lr: float,
    batch_size: int,
    steps_per_epoch: int | None,
    warmup_steps: int,
    subnets: int = 4,
    early_exit_weight: float = 0.5,
    micro_batches: int = 1,
    optimizer: str = "sgd",
    weight_decay: float = 5e-5,
    kd_ratio: float = 0.5,
    feature_kd_weight: float = 1.5,
) -> Schedule:
    """From-scratch training: one sandwich phase with everything elastic (module docstring)."""
    phase = Phase("sandwich", epochs, lr, ElasticChoices(), subnets, warmup_steps=warmup_steps)
    return Schedule(
        name,
        (phase,),
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=weight_decay,
        kd_ratio=kd_ratio,
        steps_per_epoch=steps_per_epoch,
        label_smoothing=0.1,
        grad_clip_value=1.0,
        decay_norm_and_bias=False,
        early_exit_weight=early_exit_weight,
        feature_kd_weight=feature_kd_weight,
        micro_batches=micro_batches,
    )


def make_schedule(name: str, space: SearchSpace) -> Schedule:
    """A training schedule by name (``SCHEDULES``).

    ``scratch``: minutes on two CPU cores (tiny supernet, mnist5k), all subnets at once;
    ``scratch-full``: the same recipe at GPU scale (120 epochs of batch 256); ``cpu-demo`` and
    ``paper``: EPS, OFAv2's progressive recipe (``paper``: OFA's EPS epochs with NATv2's
    hyper-parameters: SGD 0.9, wd 3e-4, lr 2.5e-3 cosine, warm-up 7.5e-3, batch 256, 4 subnets
    per batch, KD ratio 1), meant for a supernet whose maximal network is pretrained.
    """
    if name == "scratch":
        # two BatchNorm groups of 64: what two CPU processes compute (natv2.launch)
        # AdamW, not SGD; batch 128 at lr 2e-2, 900 steps: measured (module docstring)
        return sandwich_schedule(
            name, 12, 2e-2, 128, 75, 90, micro_batches=2, optimizer="adamw", weight_decay=0.01
        )
    if name == "scratch-full":
        return sandwich_schedule(name, 120, 0.2, 256, None, 500)
    if name == "scratch-test":  # tests: two steps, two BatchNorm groups as on a CPU
        # SGD, so that two processes equal one to float tolerance (module docstring)
        return sandwich_schedule(name, 1, 0.1, 16, 2, 1, micro_batches=2)
    if name == "cpu-demo":
        epochs = dict.fromkeys(("resolution", "kernel", "depth", "expand", "level", "exit"), 1)
        epochs |= {"teacher": 5, "warmup": 3}
        phases = _eps_phases(epochs, (0.1, 0.02), 2, space.allowed_resolutions, progressive=False)
        schedule = Schedule("cpu-demo", phases, batch_size=64, steps_per_epoch=12)
    elif name == "paper":
        epochs = {"teacher": 180, "warmup": 25, "resolution": 25, "kernel": 120, "depth": 120}
        epochs |= {"expand": 120, "level": 120, "exit": 120}
        schedule = Schedule(
            "paper", _eps_phases(epochs, (7.5e-3, 2.5e-3), 4, space.allowed_resolutions)
        )
    elif name == "test":
        epochs = dict.fromkeys(("resolution", "kernel", "depth", "expand", "level", "exit"), 1)
        epochs |= {"teacher": 1, "warmup": 1}
        phases = _eps_phases(epochs, (0.05, 0.02), 2, space.allowed_resolutions)
        schedule = Schedule("test", phases, batch_size=32, steps_per_epoch=2)
    else:
        raise Natv2Error(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    # drop the steps this supernet has no dimension for
    keep = [
        p
        for p in schedule.phases
        if not (p.step == "level" and not space.parallel)
        and not (p.step in ("exit", "warmup") and not space.has_exits)
    ]
    return replace(schedule, phases=tuple(keep))


def phase_sampler(phase: Phase, space: SearchSpace) -> ArchSampler:
    """EPS: ``k`` subnets sharing one resolution (OFA: one resolution per batch). Sandwich: the
    maximal and minimal subnets and ``k - 2`` from NATv2's sampler, each at its own resolution."""
    if phase.step == "sandwich":
        return sandwich_sampler(space)

    def sample(rng: np.random.Generator, k: int) -> list[Arch]:
        resolution = int(rng.choice(phase.choices.resolutions))
        if phase.step in ("teacher", "warmup"):
            return [replace(space.maximal(), resolution=resolution)]
        return [phase.choices.sample(space, rng, resolution) for _ in range(k)]

    return sample


def sandwich_sampler(space: SearchSpace) -> ArchSampler:
    """The sandwich rule: maximal first (it teaches the others), minimal second, then random."""
    biggest, smallest = space.maximal(), space.minimal()

    def sample(rng: np.random.Generator, k: int) -> list[Arch]:
        randoms = [space.decode(v) for v in space.sample(max(k - 2, 0), rng, "natv2")]
        return [biggest, smallest, *randoms][: max(k, 1)]

    return sample


@dataclass
class TrainState:
    """Where a training run is: restored from a checkpoint by ``--resume``."""

    phase: int = 0
    epoch: int = 0  # epochs finished in the current phase
    step: int = 0  # global optimizer steps
    history: list[dict] = field(default_factory=list)


def phase_lr(phase: Phase, t: int, total: int) -> float:
    """Learning rate at step ``t`` of ``total`` in a phase: linear warm-up, then cosine to 0."""
    warm = min(phase.warmup_steps, total)
    if t < warm:
        return phase.lr * (t + 1) / warm
    return cosine_lr(phase.lr, t - warm, total - warm)


def _param_groups(net: nn.Module, schedule: Schedule) -> list[dict]:
    """One group, or (``decay_norm_and_bias=False``) weights with decay and BatchNorm weights
    and biases (every 1-d parameter) without, as AttentiveNAS trains."""
    params = list(net.parameters())
    if schedule.decay_norm_and_bias:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _optimizer(net: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    """The schedule's optimizer; its learning rate is set before every step (``phase_lr``)."""
    groups = _param_groups(net, schedule)
    lr = schedule.phases[0].lr if schedule.phases else 0.0
    if schedule.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=schedule.weight_decay)
    return torch.optim.SGD(
        groups, lr=lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay, nesterov=True
    )


def _step_seed(seed: int, step: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, rank])


def _torch_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


class SupernetTrainer:
    """Trains one supernet (one width) through a sequence of phases.

    ``micro_batches`` splits each batch as ``micro_batches`` ranks would: a single process with
    ``micro_batches = N`` computes what N torchrun ranks compute together. By default it is the
    schedule's ``micro_batches`` shared among the ranks.
    """

    def __init__(
        self,
        net: OFAv2Supernet,
        data: DatasetSplits,
        acc: Accelerator,
        schedule: Schedule,
        seed: int = 0,
        micro_batches: int | None = None,
        show_progress: bool = True,
    ) -> None:
        if acc.device.type == "cpu":
            warn_if_openmp_busy_waits()
        self.net = net.to(acc.device)
        self.data = data
        self.acc = acc
        self.schedule = schedule
        self.seed = seed
        if micro_batches is None:  # the schedule's split of a batch, shared among the ranks
            if schedule.micro_batches > 1 and schedule.micro_batches % acc.world_size:
                raise Natv2Error(
                    f"schedule {schedule.name} splits a batch into {schedule.micro_batches} "
                    f"micro-batches, which {acc.world_size} processes cannot share evenly"
                )
            micro_batches = max(1, schedule.micro_batches // acc.world_size)
        self.micro = micro_batches
        self.show_progress = show_progress and acc.is_main
        self.space = net.space
        self.state = TrainState()
        self.teacher: OFAv2Supernet | None = None
        self.optimizer = _optimizer(net, schedule)
        self.model: nn.Module = net
        if acc.distributed:
            # channels-last input makes the gradient of a 1x1 kernel (C, C', 1, 1) channels-last
            # strided: the same memory order as the bucket's contiguous view (its spatial dims
            # are 1), so DDP's layout warning, printed on every rank, says nothing here
            warnings.filterwarnings(
                "ignore", "Grad strides do not match bucket view strides", UserWarning
            )
            self.model = nn.parallel.DistributedDataParallel(
                net,
                device_ids=[acc.device.index] if acc.is_cuda else None,
                find_unused_parameters=True,
            )
        if schedule.batch_size % (acc.world_size * micro_batches):
            raise Natv2Error(
                f"batch size {schedule.batch_size} is not divisible by "
                f"{acc.world_size * micro_batches} processes/micro-batches"
            )
        self.local_batch = schedule.batch_size // acc.world_size

    # --- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": TRAIN_FORMAT,
            "config": self.net.config.to_dict(),
            "schedule": self.schedule.name,
            "recipe": self.schedule.to_dict(),  # a schedule's values may change between versions
            "seed": self.seed,
            "supernet": self.net.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": {
                "phase": self.state.phase,
                "epoch": self.state.epoch,
                "step": self.state.step,
            },
            "history": self.state.history,
        }

    def save(self, path: Path) -> None:
        if self.acc.is_main:
            atomic_torch_save(self.state_dict(), path)
        self.acc.barrier()

    def load(self, path: Path) -> None:
        fix = "delete it and start again without --resume"
        doc = load_torch(path, "training checkpoint", fix)
        if not isinstance(doc, dict) or doc.get("format") != TRAIN_FORMAT:
            raise Natv2Error(f"{path}: not a natv2 training checkpoint; start without --resume")
        check_fields(doc, TRAIN_STATE_SCHEMA, str(path), fix)
        check_fields(doc["progress"], TRAIN_PROGRESS_SCHEMA, f"{path}: progress", fix)
        if doc["config"] != self.net.config.to_dict() or doc["schedule"] != self.schedule.name:
            raise Natv2Error(
                f"{path}: checkpoint was made with another supernet or schedule "
                f"({doc['schedule']}); use the same options as the interrupted run"
            )
        if doc.get("recipe") != self.schedule.to_dict():
            raise Natv2Error(
                f"{path}: checkpoint was made with another recipe of schedule "
                f"{self.schedule.name} (another natv2 version); {fix}"
            )
        self.net.load_state_dict(doc["supernet"])
        if doc["teacher"] is not None:
            self.teacher = copy.deepcopy(self.net)
            self.teacher.load_state_dict(doc["teacher"])
            self.teacher.eval().requires_grad_(False)
        self.optimizer.load_state_dict(doc["optimizer"])
        p = doc["progress"]
        self.state = TrainState(
            int(p["phase"]), int(p["epoch"]), int(p["step"]), list(doc["history"])
        )

    # --- training ---------------------------------------------------------------------------
    def extract_teacher(self) -> None:
        """Freeze a copy of the current supernet; its maximal network teaches from now on."""
        self.teacher = copy.deepcopy(self.net).eval().requires_grad_(False)

    def _teacher_target(self, x: torch.Tensor, y: torch.Tensor, arch: Arch) -> torch.Tensor | None:
        if self.teacher is None or self.schedule.kd_ratio <= 0:
            return None
        self.teacher.set_active(replace(self.teacher.space.maximal(), resolution=arch.resolution))
        # batch statistics (OFA runs its teacher in train mode): the running statistics were
        # accumulated by the random subnets of the step just finished, not by the maximal one
        self.teacher.train()
        with torch.no_grad(), self.acc.autocast():
            outs = self.teacher.forward_exits(x) if self.space.has_exits else [self.teacher(x)]
        return teacher_probs(outs, self.schedule.ens_kd_weighting, labels=y)

    def _subnet_loss(self, x, y, arch: Arch, joint: bool, target) -> torch.Tensor:
        self.net.set_active(arch)
        with self.acc.autocast():
            if joint:
                outs = self.model(x, all_exits=True)
                return joint_exit_loss([o.float() for o in outs], y, self.schedule.exit_weighting)
            out = self.model(x).float()
        loss = F.cross_entropy(out, y, label_smoothing=self.schedule.label_smoothing)
        if target is not None:
            loss = loss + self.schedule.kd_ratio * soft_cross_entropy(out, target)
        return loss

    def _chunk(
        self, xb: torch.Tensor, yb: torch.Tensor, j: int
    ) -> tuple[Callable[[int], torch.Tensor], torch.Tensor]:
        """Micro-batch ``j`` of this rank: a function giving its augmented images at a resolution
        (the same augmentation at every resolution, drawn from one seed) and its labels."""
        chunk = self.acc.rank * self.micro + j
        seed = _torch_seed(self.seed, self.state.step, chunk)
        raw = self.acc.to_device(xb[j :: self.micro])  # uint8 first: 4x less to copy
        prepared: dict[int, torch.Tensor] = {}

        def images(resolution: int) -> torch.Tensor:
            if resolution not in prepared:
                gen = torch.Generator().manual_seed(seed)
                x = self.data.prepare_batch(raw, resolution, True, gen)
                # channels-last runs the convolutions faster on CPU too (train_speed benchmark)
                prepared[resolution] = x.contiguous(memory_format=torch.channels_last)
            return prepared[resolution]

        return images, yb[j :: self.micro].to(self.acc.device, non_blocking=True)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, phase: Phase, sampler) -> torch.Tensor:
        rng = _step_seed(self.seed, self.state.step, 0)
        archs = sampler(rng, phase.subnets_per_batch)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.acc.device)
        for j in range(self.micro):
            images, yc = self._chunk(xb, yb, j)
            last = j == self.micro - 1
            if phase.step == "sandwich":
                total += self._sandwich_losses(images, yc, archs, last)
            else:
                total += self._eps_losses(images, yc, archs, phase, last)
        if self.schedule.grad_clip_value is not None:
            nn.utils.clip_grad_value_(self.net.parameters(), self.schedule.grad_clip_value)
        self.optimizer.step()
        self.state.step += 1
        return total / len(archs)  # mean loss of one subnet (a tensor: no GPU sync here)

    def _sync(self, last: bool):
        """DistributedDataParallel averages gradients once a step, in the step's last backward
        (every other forward-backward accumulates locally): one all-reduce instead of one per
        subnet and micro-batch."""
        if last or not isinstance(self.model, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _eps_losses(
        self, images, y: torch.Tensor, archs: list[Arch], phase: Phase, last_chunk: bool
    ) -> torch.Tensor:
        """One micro-batch of an EPS step (every subnet at the batch's one resolution)."""
        x = images(archs[0].resolution)
        maximal_only = phase.step in ("teacher", "warmup")
        joint = phase.step == "warmup" and self.space.has_exits
        target = None if maximal_only else self._teacher_target(x, y, archs[0])
        total = torch.zeros((), device=y.device)
        for i, arch in enumerate(archs):
            with self._sync(last_chunk and i == len(archs) - 1):
                loss = self._subnet_loss(x, y, arch, joint, target) / self.micro
                loss.backward()
            total += loss.detach()
        return total

    def _sandwich_losses(
        self, images, y: torch.Tensor, archs: list[Arch], last_chunk: bool
    ) -> torch.Tensor:
        """One micro-batch of a sandwich step: the maximal subnet (``archs[0]``) on the labels,
        every other subnet distilled from its detached soft output."""
        total = torch.zeros((), device=y.device)
        target: torch.Tensor | None = None
        target_feats: list[torch.Tensor] = []
        smooth = self.schedule.label_smoothing
        feature_kd = self.schedule.feature_kd_weight
        for i, arch in enumerate(archs):
            self.net.set_active(arch)
            joint = i == 0 and self.space.has_exits and self.schedule.early_exit_weight > 0
            with self._sync(last_chunk and i == len(archs) - 1):
                with self.acc.autocast():
                    x = images(arch.resolution)
                    if feature_kd > 0:
                        outs, feats = self.model(x, all_exits=joint, features=True)
                    else:
                        outs, feats = self.model(x, all_exits=joint), []
                    out = (outs[-1] if joint else outs).float()
                if i == 0:
                    loss = F.cross_entropy(out, y, label_smoothing=smooth)
                    if joint:
                        loss = loss + self.schedule.early_exit_weight * sum(
                            F.cross_entropy(o.float(), y, label_smoothing=smooth) for o in outs[:-1]
                        )
                    target = inplace_distillation_target(out)
                    target_feats = [f.detach() for f in feats]
                else:
                    assert target is not None  # set by the maximal subnet, always first
                    loss = self.schedule.kd_ratio * soft_cross_entropy(out, target)
                    if feature_kd > 0:
                        loss = loss + feature_kd * feature_distillation_loss(feats, target_feats)
                loss = loss / self.micro
                loss.backward()
            total += loss.detach()
        return total

    def run(
        self,
        checkpoint: Path | None = None,
        max_steps: int | None = None,
        on_epoch: Callable[[TrainState], None] | None = None,
        sampler: ArchSampler | None = None,
    ) -> TrainState:
        """Train every remaining phase; checkpoint after each epoch (rank 0, atomically)."""
        phases = self.schedule.phases
        steps_done_at_start = self.state.step
        while self.state.phase < len(phases):
            index = self.state.phase
            phase = phases[index]
            if (
                phase.step == "expand"
                and self.state.epoch == 0
                and phases[index - 1].step != "expand"
            ):
                self.net.reorder_channels(self.optimizer)
            if phase.step not in ("teacher", "warmup", "sandwich") and self.teacher is None:
                self.extract_teacher()
            phase_sample = sampler or phase_sampler(phase, self.space)
            while self.state.epoch < phase.epochs:
                stats = self._epoch(phase, phase_sample, index, max_steps, steps_done_at_start)
                if stats is None:  # max_steps reached mid-epoch (tests, smoke runs)
                    return self.state
                self.state.epoch += 1
                self.state.history.append(stats)
                if checkpoint is not None:
                    self.save(checkpoint)
                if on_epoch is not None:
                    on_epoch(self.state)
            next_step = phases[index + 1].step if index + 1 < len(phases) else None
            if next_step != phase.step and phase.step != "sandwich":
                self.extract_teacher()
            self.state.phase += 1
            self.state.epoch = 0
            if checkpoint is not None:
                self.save(checkpoint)
        return self.state

    def _epoch(self, phase: Phase, sampler, index: int, max_steps, start_step) -> dict | None:
        epoch_id = sum(p.epochs for p in self.schedule.phases[:index]) + self.state.epoch
        loader = make_loader(
            self.data.train,
            self.local_batch,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
            distributed=True,
            rank=self.acc.rank,
            world_size=self.acc.world_size,
            **self.acc.loader_kwargs,
        )
        n_steps = self.schedule.steps_per_epoch or len(loader)
        total_steps = n_steps * phase.epochs
        self.net.train()
        losses = []
        t0 = time.perf_counter()
        bar = tqdm(
            total=n_steps,
            desc=f"{phase.step} {self.state.epoch + 1}/{phase.epochs}",
            disable=not self.show_progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (xb, yb) in enumerate(_passes(loader, epoch_id, n_steps)):
            if max_steps is not None and self.state.step - start_step >= max_steps:
                bar.close()
                return None
            lr = phase_lr(phase, self.state.epoch * n_steps + i, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses.append(self.train_step(xb, yb, phase, sampler))
            if i % 10 == 0:  # the loss is shown per epoch: reading it here would sync the GPU
                bar.set_postfix(lr=f"{lr:.2e}")
            bar.update(1)
        bar.close()
        mean_loss = (
            float(torch.stack([torch.as_tensor(v) for v in losses]).mean()) if losses else 0.0
        )
        return {
            "phase": index,
            "step_name": phase.step,
            "epoch": self.state.epoch,
            "loss": mean_loss,
            "steps": len(losses),
            "seconds": round(time.perf_counter() - t0, 2),
        }


def _passes(loader, epoch_id: int, n_steps: int):
    """``n_steps`` batches: the epoch's pass over the split, then further passes (each with
    its own seeded order) when the split is shorter than an epoch of the schedule."""
    done = 0
    for k in range(n_steps):  # at most n_steps passes (a pass holds at least one batch)
        loader.sampler.set_epoch(epoch_id if k == 0 else (epoch_id + 1) * 1_000_003 + k)
        for batch in loader:
            yield batch
            done += 1
            if done >= n_steps:
                return
        if done == 0:
            return  # fewer images than one batch: nothing to train on


def adaptation_schedule(
    epochs: int,
    lr: float,
    batch_size: int,
    steps_per_epoch: int | None,
    subnets: int = 4,
    micro_batches: int = 1,
) -> Schedule:
    """NAT's adaptation: the last EPS phase (everything unlocked), ``subnets`` per batch;
    ``micro_batches`` BatchNorm groups per batch, shared among the ranks."""
    return Schedule(
        "adapt",
        (Phase("adapt", epochs, lr, ElasticChoices(), subnets),),
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        micro_batches=micro_batches,
    )


def front_sampler(front: Sequence[np.ndarray], space: SearchSpace) -> ArchSampler:
    """NAT: sample each gene from its empirical distribution over the current front."""
    columns = np.asarray(front, dtype=np.int64)

    def sample(rng: np.random.Generator, k: int) -> list[Arch]:
        picks = columns[
            rng.integers(len(columns), size=(k, columns.shape[1])), np.arange(columns.shape[1])
        ]
        picks[:, 0] = picks[0, 0]  # one resolution per batch, as in EPS
        return [space.decode(v) for v in space.canonical_batch(picks)]

    return sample
