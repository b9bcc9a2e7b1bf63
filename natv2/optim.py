"""Optimisers of post-processing: SGD, AdamW and Ranger (Lookahead over RAdam).

The paper (§4, post-processing optimisation) tried SGD (momentum 0.9, weight decay 3e-4, the
search's values), AdamW and Ranger with "no additional hyperparameters" for the latter two, i.e.
their library defaults (AdamW weight decay 0.01; RAdam none). Ranger is written here as a small
:class:`Lookahead` wrapper around ``torch.optim.RAdam`` (k = 6, alpha = 0.5, Ranger's values)
rather than depending on an unmaintained package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from natv2.errors import Natv2Error

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "ranger")
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 3e-4
LOOKAHEAD_K = 6
LOOKAHEAD_ALPHA = 0.5


class Lookahead(Optimizer):
    """Lookahead (Zhang et al. 2019) around any optimiser: every ``k`` steps of the inner
    ("fast") optimiser, the slow weights move ``alpha`` of the way towards the fast ones and the
    fast weights are reset to them.

    It shares the inner optimiser's ``param_groups`` (so LR schedulers see and set the same
    learning rates) and its ``state``; ``state_dict`` holds the inner state, the slow weights
    and the step counter, so a resumed run continues exactly.
    """

    def __init__(self, base: Optimizer, k: int = LOOKAHEAD_K, alpha: float = LOOKAHEAD_ALPHA):
        if k < 1:
            raise ValueError(f"Lookahead k must be at least 1, got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead alpha must be in (0, 1], got {alpha}")
        super().__init__(base.param_groups, base.defaults)
        self.base = base
        self.k = k
        self.alpha = alpha
        self.fast_steps = 0
        self._link()
        self.slow: dict[int, torch.Tensor] = {
            i: p.detach().clone() for i, p in enumerate(self._params())
        }

    def _link(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for i, p in enumerate(self._params()):
                slow = self.slow[i]
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.state_dict(),
            "slow": {i: t.clone() for i, t in self.slow.items()},
            "fast_steps": self.fast_steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict["base"])
        self._link()  # the inner load replaces its param_groups list
        params = self._params()
        slow = state_dict["slow"]
        if len(slow) != len(params):
            raise ValueError(
                f"Lookahead state has {len(slow)} slow weights, expected {len(params)}"
            )
        self.slow = {int(i): t.to(params[int(i)].device).clone() for i, t in slow.items()}
        self.fast_steps = int(state_dict["fast_steps"])
        self.k = int(state_dict["k"])
        self.alpha = float(state_dict["alpha"])


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    lr: float,
    weight_decay: float | None = None,
) -> Optimizer:
    """``sgd`` (momentum 0.9, weight decay 3e-4), ``adamw`` (torch defaults) or ``ranger``
    (Lookahead k=6, alpha=0.5 over RAdam, torch defaults); ``weight_decay`` overrides."""
    name = name.lower()
    params = [p for p in params if p.requires_grad]
    if lr <= 0:
        raise Natv2Error(f"the learning rate must be positive, got {lr}")
    if name == "sgd":
        decay = SGD_WEIGHT_DECAY if weight_decay is None else weight_decay
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=decay)
    if name == "adamw":
        if weight_decay is None:
            return torch.optim.AdamW(params, lr=lr)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "ranger":
        if weight_decay is None:
            return Lookahead(torch.optim.RAdam(params, lr=lr))
        return Lookahead(torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay))
    raise Natv2Error(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
