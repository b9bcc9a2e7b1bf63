"""Learning-rate schedules shared by supernet training and post-processing.

One rule lives here so the two cannot drift apart: supernet training (``natv2.train``, per
optimizer step after its warm-up) and post-processing (``natv2.postprocess``, per epoch) anneal
with the same half-cosine. Torch-free: a schedule is arithmetic on numbers.
"""

from __future__ import annotations

import math


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    """The learning rate at (0-based) ``step`` of ``total`` under half-cosine annealing: a half
    period of a cosine from ``base_lr`` at step 0 down to 0 at step ``total``.

    Steps past the end stay at 0 (the step is clamped to ``total``); a schedule of no steps
    (``total <= 0``) is constant at ``base_lr``.
    """
    if total <= 0:
        return base_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total) / total))


__all__ = ["cosine_lr"]
