"""Materialisation: copy a subnet's active weights out of the supernet into a plain ``Subnet``.

The plain module is what gets evaluated, fine-tuned, counted and exported: it holds only the
active slices (so an ONNX export contains only them) and rebuilds from ``arch.json`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from natv2.atomic import atomic_torch_save, atomic_write_bytes
from natv2.errors import Natv2Error
from natv2.space import Arch
from natv2.supernet.config import SupernetConfig
from natv2.supernet.elastic import ElasticIRB
from natv2.supernet.network import ElasticLevel, OFAv2Supernet
from natv2.supernet.plain import (
    ConvBNAct,
    InvertedResidual,
    ParallelLevel,
    Subnet,
    TransformBranch,
)
from natv2.untrusted import load_torch, read_json, require_finite, shown

SUBNET_FORMAT = "natv2-subnet/1"


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    c = dst.num_features
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def _copy_irb(dst: InvertedResidual, src: ElasticIRB, kernel: int) -> None:
    mid = dst.expand[0].out_channels
    dst.expand[0].weight.copy_(src.expand_conv.weight[:mid])
    _copy_bn(dst.expand[1], src.expand_bn)
    dst.depthwise[0].weight.copy_(src.depthwise.active_weight(mid, kernel))
    _copy_bn(dst.depthwise[1], src.depthwise_bn)
    if dst.se is not None:
        se_mid = dst.se.reduce.out_channels
        dst.se.reduce.weight.copy_(src.se.reduce.weight[:se_mid, :mid])
        dst.se.reduce.bias.copy_(src.se.reduce.bias[:se_mid])
        dst.se.expand.weight.copy_(src.se.expand.weight[:mid, :se_mid])
        dst.se.expand.bias.copy_(src.se.expand.bias[:mid])
    dst.project[0].weight.copy_(src.project_conv.weight[:, :mid])
    _copy_bn(dst.project[1], src.project_bn)


def _copy_level(dst: nn.Module, src: ElasticLevel, arch_block) -> None:
    branches = list(dst.branches) if isinstance(dst, ParallelLevel) else [dst]
    for branch in branches:
        if isinstance(branch, InvertedResidual):
            _copy_irb(branch, src.irb, arch_block.kernel)
        elif isinstance(branch, TransformBranch):
            if branch.conv is not None:
                branch.conv.weight.copy_(src.transform["conv"].weight)
            _copy_bn(branch.bn, src.transform["bn"])
        elif isinstance(branch, ConvBNAct):
            branch[0].weight.copy_(src.pointwise["conv"].weight)
            _copy_bn(branch[1], src.pointwise["bn"])
        else:  # pragma: no cover - plain.make_level builds only the three kinds
            raise TypeError(f"unexpected branch {type(branch).__name__}")


@torch.no_grad()
def materialize(supernet: OFAv2Supernet, arch: Arch) -> Subnet:
    """A standalone plain module equal (in eval mode) to ``supernet`` with ``arch`` active."""
    supernet.set_active(arch)
    net = Subnet(arch, supernet.config)
    net.stem.load_state_dict(supernet.stem.state_dict())
    net.first_block.load_state_dict(supernet.first_block.state_dict())
    for s, stage in enumerate(net.stages):
        for i, (dst, block) in enumerate(zip(stage.blocks, arch.active_blocks(s), strict=True)):
            _copy_level(dst, supernet.stages[s][i], block)
    net.head.load_state_dict(supernet.exits[str(arch.exit)].state_dict())
    net.train(supernet.training)
    return net.to(next(supernet.parameters()).device)


def subnet_description(net: Subnet) -> dict:
    """What ``arch.json`` holds: enough to rebuild the module without the supernet."""
    return {"format": SUBNET_FORMAT, "arch": net.arch.to_dict(), "config": net.config.to_dict()}


def save_subnet(net: Subnet, directory: str | Path) -> None:
    """``model.pt`` (state dict) and ``arch.json`` (arch + supernet config), written atomically."""
    directory = Path(directory)
    atomic_torch_save(net.state_dict(), directory / "model.pt")
    atomic_write_bytes(
        directory / "arch.json", json.dumps(subnet_description(net), indent=2).encode()
    )


def load_subnet(directory: str | Path) -> Subnet:
    """Rebuild a saved subnet without any supernet (checkpoints load with weights_only=True)."""
    directory = Path(directory)
    fix = "re-export the subnet with natv2"
    desc = read_json(directory / "arch.json", "subnet description", fix)
    try:
        if not isinstance(desc, dict) or desc.get("format") != SUBNET_FORMAT:
            found = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
            raise ValueError(f"format is {shown(found)}, expected {SUBNET_FORMAT!r}")
        arch = Arch.from_dict(desc["arch"])
        config = SupernetConfig.from_dict(desc["config"], source=str(directory / "arch.json"))
    except (ValueError, KeyError, TypeError) as exc:
        raise Natv2Error(
            f"{directory / 'arch.json'}: cannot read the subnet description ({shown(exc, 160)}); "
            f"{fix}"
        ) from None
    net = Subnet(arch, config)
    state = load_torch(directory / "model.pt", "subnet state dict", fix)
    if not isinstance(state, dict):
        raise Natv2Error(f"{directory / 'model.pt'}: not a state dict; {fix}")
    require_finite(state, str(directory / "model.pt"), fix)
    try:
        net.load_state_dict(state)
    except Exception as exc:
        raise Natv2Error(
            f"{directory / 'model.pt'}: not a valid subnet state dict for {arch.id} "
            f"({shown(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)}); {fix}"
        ) from None
    return net.eval()
