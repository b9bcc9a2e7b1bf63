"""AEP (Anticipate, Ensemble and Prune) models: a subnet with several exits and one output.

The exits of stages 1..X (X = the subnet's exit) are copied from an exit supernet's ``exits``
heads and re-attached to the subnet's stages (head i reads the output of stage i). The module's
prediction is the **weighted sum of the kept exits' logits** (not of their probabilities): one
logits tensor, so the model trains with an ordinary cross-entropy, exports as one ONNX graph and
its argmax is the ensemble's decision. Ensemble weights live in the module (a buffer, so they are
in ``model.pt`` too) and sum to 1.

Pruning keeps only the exits that help: exits whose removal does not lower validation accuracy
are dropped (:func:`select_exits`), any of them, the last one (X) included: its head is pruned
like any other when the ensemble of the earlier exits is at least as accurate. Stages deeper
than the deepest kept exit are then removed from the module, since nothing reads them. At
least one exit is always kept. The kept exits' ensemble weights (and loss weights) are the
original ones renormalised to sum to 1.

An :class:`AEPNet` is plain torch (no supernet reference) and rebuilds from its description
(:func:`aep_description`, ``"format": "natv2-aep/1"``) alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from natv2.distill import exit_weights
from natv2.errors import Natv2Error
from natv2.space import Arch
from natv2.supernet.config import SupernetConfig
from natv2.supernet.network import OFAv2Supernet
from natv2.supernet.plain import (
    FirstBlock,
    Subnet,
    make_exit_head,
    make_stages,
    make_stem,
    stage_outputs,
)

AEP_FORMAT = "natv2-aep/1"
EXHAUSTIVE_MAX_EXITS = 5


def _normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {list(weights)}")
    return [float(w) / total for w in weights]


class AEPNet(nn.Module):
    """Stem, first block, stages 1..D and the heads of the kept exits (D = the deepest kept).

    ``arch`` is the subnet's Arch as the search found it (exit X); ``exits`` the kept exits
    (1-based stage numbers, ascending); ``ensemble_weights`` and ``loss_weights`` one weight per
    kept exit. ``forward`` returns ``sum_i w_i * head_i(stage_i output)``.
    """

    ensemble_weights: torch.Tensor  # a buffer (registered in __init__)

    def __init__(
        self,
        arch: Arch,
        config: SupernetConfig,
        exits: Sequence[int],
        ensemble_weights: Sequence[float],
        loss_weights: Sequence[float] | None = None,
        weighting: str = "unif",
    ) -> None:
        super().__init__()
        exits = sorted(int(e) for e in exits)
        if not exits:
            raise ValueError("an AEP model keeps at least one exit")
        if len(set(exits)) != len(exits) or exits[0] < 1 or exits[-1] > arch.exit:
            raise ValueError(f"exits {exits} must be distinct stages in 1..{arch.exit}")
        if not config.exits and exits != [arch.exit]:
            raise ValueError("a supernet without early exits has only its final exit")
        if len(ensemble_weights) != len(exits):
            raise ValueError(f"{len(exits)} exits but {len(ensemble_weights)} ensemble weights")
        loss_weights = ensemble_weights if loss_weights is None else loss_weights
        if len(loss_weights) != len(exits):
            raise ValueError(f"{len(exits)} exits but {len(loss_weights)} loss weights")
        self.arch = arch
        self.config = config
        self.exits = tuple(exits)
        self.weighting = weighting
        self.loss_weights = tuple(_normalised(loss_weights))
        self.stem = make_stem(config)
        self.first_block = FirstBlock(config.stem_channels)
        self.stages = make_stages(arch, config, self.depth)
        self.heads = nn.ModuleDict({str(e): make_exit_head(config, e - 1) for e in exits})
        self.register_buffer(
            "ensemble_weights", torch.tensor(_normalised(ensemble_weights), dtype=torch.float32)
        )

    @property
    def depth(self) -> int:
        """Stages the module runs: up to the deepest kept exit."""
        return self.exits[-1]

    @property
    def resolution(self) -> int:
        return self.arch.resolution

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every stage the module runs (stage i at index i - 1)."""
        return stage_outputs(self.stem, self.first_block, self.stages, x)

    def exit_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every kept exit, shallowest first."""
        feats = self.features(x)
        return [self.heads[str(e)](feats[e - 1]) for e in self.exits]

    def ensemble(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.ensemble_weights[0] * outputs[0]
        for i in range(1, len(outputs)):
            out = out + self.ensemble_weights[i] * outputs[i]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ensemble(self.exit_outputs(x))

    def extra_repr(self) -> str:
        w = ", ".join(f"{v:.4f}" for v in self.ensemble_weights.tolist())
        return f"arch={self.arch.id}, exits={list(self.exits)}, ensemble_weights=[{w}]"


def check_aep_applicable(config: SupernetConfig, arch: Arch) -> None:
    if not config.exits:
        raise Natv2Error(
            f"AEP needs a supernet with early exits, and the supernet of {arch.id} has none "
            "(encoding baseline/parallel); use --method finetune, or search with an exits "
            "encoding (exits, exits+parallel)"
        )


@torch.no_grad()
def build_aep(subnet: Subnet, supernet: OFAv2Supernet | None, weighting: str = "unif") -> AEPNet:
    """The AEP model of a materialised subnet: its stem and stages (weights copied from
    ``subnet``), and exits 1..X, exit X's head from ``subnet.head`` and the others copied from
    ``supernet.exits``. ``weighting``: unif, asc, desc or mix (``natv2.distill.exit_weights``).
    """
    arch, config = subnet.arch, subnet.config
    check_aep_applicable(config, arch)
    n = arch.exit
    loss_w, ens_w = exit_weights(n, weighting)
    net = AEPNet(arch, config, range(1, n + 1), ens_w, loss_w, weighting.lower())
    net.stem.load_state_dict(subnet.stem.state_dict())
    net.first_block.load_state_dict(subnet.first_block.state_dict())
    for dst, src in zip(net.stages, subnet.stages, strict=True):
        dst.load_state_dict(src.state_dict())
    for e in range(1, n):
        if supernet is None or str(e) not in supernet.exits:
            raise Natv2Error(f"the supernet has no exit {e} to re-attach; use --method finetune")
        net.heads[str(e)].load_state_dict(supernet.exits[str(e)].state_dict())
    net.heads[str(n)].load_state_dict(subnet.head.state_dict())
    net.train(subnet.training)
    return net.to(next(subnet.parameters()).device)


@torch.no_grad()
def pruned(net: AEPNet, keep: Sequence[int]) -> AEPNet:
    """A copy of ``net`` with only the exits ``keep`` (weights renormalised) and the stages up
    to the deepest of them."""
    keep = sorted(int(e) for e in keep)
    missing = [e for e in keep if e not in net.exits]
    if not keep or missing:
        raise ValueError(f"cannot keep exits {keep} of a model with exits {list(net.exits)}")
    idx = [net.exits.index(e) for e in keep]
    ens = net.ensemble_weights.tolist()
    out = AEPNet(
        net.arch,
        net.config,
        keep,
        [ens[i] for i in idx],
        [net.loss_weights[i] for i in idx],
        net.weighting,
    )
    out.stem.load_state_dict(net.stem.state_dict())
    out.first_block.load_state_dict(net.first_block.state_dict())
    for dst, src in zip(out.stages, net.stages, strict=False):
        dst.load_state_dict(src.state_dict())
    for e in keep:
        out.heads[str(e)].load_state_dict(net.heads[str(e)].state_dict())
    out.train(net.training)
    return out.to(net.ensemble_weights.device)


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------


def subset_accuracy(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    weights: Sequence[float],
    subset: Sequence[int],
) -> float:
    """Top-1 of the ensemble of the exits at positions ``subset`` (weights renormalised)."""
    w = _normalised([weights[i] for i in subset])
    terms = [wi * exit_logits[i].float() for wi, i in zip(w, subset, strict=True)]
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return int((out.argmax(1) == labels).sum()) / len(labels)


def select_exits(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    weights: Sequence[float],
    cost: Callable[[tuple[int, ...]], float | tuple[float, ...]] | None = None,
) -> tuple[tuple[int, ...], list[dict]]:
    """Positions of the exits to keep, and the subsets tried with their accuracy.

    With at most 5 exits every non-empty subset is tried and the most accurate is kept; among
    equally accurate subsets the cheapest (``cost``, default: the fewest and shallowest exits)
    wins, so an exit whose removal does not lower accuracy is dropped. With more exits a greedy
    backward elimination removes, one at a time, the exit whose removal leaves the highest
    accuracy, while that accuracy is not lower than the current one.
    """
    n = len(exit_logits)
    if n < 1:
        raise ValueError("at least one exit")

    def fewest_shallowest(s: tuple[int, ...]) -> tuple[int, int]:
        return len(s), sum(s)

    rank: Callable[[tuple[int, ...]], float | tuple[float, ...]] = cost or fewest_shallowest
    tried: list[dict] = []

    def score(subset: tuple[int, ...]) -> float:
        acc = subset_accuracy(exit_logits, labels, weights, subset)
        tried.append({"positions": list(subset), "val_accuracy": acc})
        return acc

    if n <= EXHAUSTIVE_MAX_EXITS:
        best: tuple[int, ...] | None = None
        best_key = None
        for r in range(1, n + 1):
            for subset in itertools.combinations(range(n), r):
                key = (-score(subset), rank(subset))
                if best_key is None or key < best_key:
                    best, best_key = subset, key
        assert best is not None
        return best, tried
    current = tuple(range(n))
    acc = score(current)
    while len(current) > 1:
        options = [tuple(i for i in current if i != drop) for drop in current]
        scored = [(score(s), s) for s in options]
        top = max(a for a, _ in scored)
        if top < acc:
            break
        current = min((s for a, s in scored if a == top), key=rank)
        acc = top
    return current, tried


# ---------------------------------------------------------------------------------------------
# Costs and description
# ---------------------------------------------------------------------------------------------


def aep_cost(net_or_arch: AEPNet | Arch, config: SupernetConfig, exits: Sequence[int] = ()):
    """Analytical params and MACs of an AEP model: the cost model's figures of the subnet
    truncated at the deepest kept exit (its head included) plus each shallower kept head."""
    from natv2.profiling.cost import segment_costs, subnet_cost

    if isinstance(net_or_arch, AEPNet):
        arch, exits = net_or_arch.arch, net_or_arch.exits
    else:
        arch = net_or_arch
    exits = sorted(exits)
    body = subnet_cost(dataclasses.replace(arch, exit=exits[-1]), config)
    params, macs = body.params, body.macs
    heads = {}
    for e in exits[:-1]:
        head = segment_costs(dataclasses.replace(arch, exit=e), config)["head"]
        heads[e] = {"params": head.params, "macs": head.macs}
        params += head.params
        macs += head.macs
    return {"params": params, "macs": macs, "extra_heads": heads, "truncated_exit": exits[-1]}


def aep_description(net: AEPNet) -> dict:
    """What ``arch.json`` holds for an AEP model (rebuilds it without the supernet)."""
    return {
        "format": AEP_FORMAT,
        "arch": net.arch.to_dict(),
        "arch_id": net.arch.id,
        "config": net.config.to_dict(),
        "exits": list(net.exits),
        "ensemble_weights": [float(w) for w in net.ensemble_weights.tolist()],
        "loss_weights": list(net.loss_weights),
        "weighting": net.weighting,
        "ensemble": "weighted sum of the kept exits' logits",
    }


def aep_from_description(desc: dict) -> AEPNet:
    """Rebuild an (untrained) AEPNet from :func:`aep_description`; raises on a bad document."""
    if desc.get("format") != AEP_FORMAT:
        raise ValueError(f"format is {desc.get('format')!r}, expected {AEP_FORMAT!r}")
    arch = Arch.from_dict(desc["arch"])
    config = SupernetConfig.from_dict(desc["config"])
    return AEPNet(
        arch,
        config,
        [int(e) for e in desc["exits"]],
        [float(w) for w in desc["ensemble_weights"]],
        [float(w) for w in desc.get("loss_weights") or desc["ensemble_weights"]],
        str(desc.get("weighting", "unif")),
    )
