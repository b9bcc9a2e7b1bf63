"""Knowledge distillation for supernets: KD, ENS-KD and the AEP exit weightings.

AEP weightings (authors' code), for n exits with m = 1 + ... + n:
UNIF all 1/n; ASC loss and ensemble weights i/m (rising); DESC both falling;
MIX loss weights falling and ensemble weights rising.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

WEIGHTINGS: tuple[str, ...] = ("unif", "asc", "desc", "mix")


def exit_weights(n: int, weighting: str) -> tuple[list[float], list[float]]:
    """(loss weights, ensemble weights) of ``n`` exits, exit 1 first."""
    if n < 1:
        raise ValueError("at least one exit")
    weighting = weighting.lower()
    m = n * (n + 1) / 2
    rising = [i / m for i in range(1, n + 1)]
    falling = rising[::-1]
    if weighting == "unif":
        return [1 / n] * n, [1 / n] * n
    if weighting == "asc":
        return rising, rising
    if weighting == "desc":
        return falling, falling
    if weighting == "mix":
        return falling, rising
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """OFA's KD loss: cross-entropy against the teacher's probabilities."""
    return torch.sum(-target_probs * F.log_softmax(logits, dim=1), dim=1).mean()


def teacher_probs(
    exit_logits: Sequence[torch.Tensor],
    weighting: str = "desc",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The teacher's soft target: its one exit's softmax, or (ENS-KD) the weighted ensemble of
    every exit's softmax.

    With ``labels``, each exit's ensemble weight is also scaled by its top-1 on this batch (and
    the weights renormalised): an exit still near chance, as early exits are at the start of a
    step, then adds almost nothing to the target instead of its fixed share of noise. The paper
    leaves the ensemble weights open; this keeps them at the weighting's ratios once every exit
    is accurate.
    """
    if len(exit_logits) == 1:
        return F.softmax(exit_logits[0].float(), dim=1)
    _, ens = exit_weights(len(exit_logits), weighting)
    probs = torch.stack([F.softmax(o.float(), dim=1) for o in exit_logits])  # exits x B x C
    weights = torch.tensor(ens, dtype=probs.dtype, device=probs.device)
    if labels is not None:
        hits = torch.stack([(o.argmax(1) == labels).float().mean() for o in exit_logits])
        scaled = weights * hits
        # no exit right on this batch: keep the fixed weights
        weights = torch.where(scaled.sum() > 0, scaled / scaled.sum().clamp_min(1e-12), weights)
    return torch.einsum("e,ebc->bc", weights, probs)


def inplace_distillation_target(logits: torch.Tensor) -> torch.Tensor:
    """In-place distillation (US-Nets, BigNAS): the maximal subnet's soft output of this step
    teaches the other subnets of the step. Detached: the students' losses must not train the
    maximal subnet towards them."""
    return F.softmax(logits.detach().float(), dim=1)


def joint_exit_loss(
    exit_logits: Sequence[torch.Tensor], labels: torch.Tensor, weighting: str
) -> torch.Tensor:
    """AEP joint training: the loss-weighted sum of every exit's cross-entropy."""
    loss_w, _ = exit_weights(len(exit_logits), weighting)  # raises without exits
    losses = [w * F.cross_entropy(o, labels) for w, o in zip(loss_w, exit_logits, strict=True)]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total


def feature_distillation_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Stage-output distillation: the mean over the student's stages of the squared distance to
    the teacher's (detached) output of the same stage, relative to the teacher's mean square.
    Each stage output feeds shared weights (the next stage, an exit head), so a subnet whose
    stage outputs stay close to the maximal subnet's keeps those weights' inputs alike. The
    teacher's map is average-pooled to the student's size when their resolutions differ."""
    losses = []
    for s, t in zip(student, teacher, strict=False):
        t = t.detach().float()
        if t.shape[-2:] != s.shape[-2:]:
            t = F.adaptive_avg_pool2d(t, (s.shape[-2], s.shape[-1]))
        losses.append(F.mse_loss(s.float(), t) / t.pow(2).mean().clamp_min(1e-8))
    return torch.stack(losses).mean()
