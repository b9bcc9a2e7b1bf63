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
from natv2.space import Arch, Block
from natv2.supernet.config import SupernetConfig
from natv2.supernet.elastic import ElasticIRB, conv_bias, running_stats
from natv2.supernet.network import ElasticLevel, OFAv2Supernet
from natv2.supernet.plain import (
    ConvBNAct,
    InvertedResidual,
    ParallelLevel,
    Stage,
    Subnet,
    TransformBranch,
)
from natv2.untrusted import load_weights, read_json, shown

SUBNET_FORMAT = "natv2-subnet/1"


def _conv_bn(unit: nn.Sequential) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The convolution and BatchNorm that open a ``ConvBNAct``."""
    conv, bn = unit[0], unit[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return conv, bn


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    c = dst.num_features
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst_mean, dst_var, dst_count = running_stats(dst)
    src_mean, src_var, src_count = running_stats(src)
    dst_mean.copy_(src_mean[:c])
    dst_var.copy_(src_var[:c])
    dst_count.copy_(src_count)
    dst.eps, dst.momentum = src.eps, src.momentum


def _copy_irb(dst: InvertedResidual, src: ElasticIRB, kernel: int) -> None:
    expand_conv, expand_bn = _conv_bn(dst.expand)
    mid = expand_conv.out_channels
    expand_conv.weight.copy_(src.expand_conv.weight[:mid])
    _copy_bn(expand_bn, src.expand_bn)
    depthwise_conv, depthwise_bn = _conv_bn(dst.depthwise)
    depthwise_conv.weight.copy_(src.depthwise.active_weight(mid, kernel))
    _copy_bn(depthwise_bn, src.depthwise_bn)
    if dst.se is not None:
        src_se = src.se
        assert src_se is not None, "a plain IRB with SE comes from an elastic IRB with SE"
        se_mid = dst.se.reduce.out_channels
        dst.se.reduce.weight.copy_(src_se.reduce.weight[:se_mid, :mid])
        conv_bias(dst.se.reduce).copy_(conv_bias(src_se.reduce)[:se_mid])
        dst.se.expand.weight.copy_(src_se.expand.weight[:mid, :se_mid])
        conv_bias(dst.se.expand).copy_(conv_bias(src_se.expand)[:mid])
    project_conv, project_bn = _conv_bn(dst.project)
    project_conv.weight.copy_(src.project_conv.weight[:, :mid])
    _copy_bn(project_bn, src.project_bn)


def _copy_level(dst: nn.Module, src: ElasticLevel, arch_block: Block) -> None:
    branches = list(dst.branches) if isinstance(dst, ParallelLevel) else [dst]
    for branch in branches:
        if isinstance(branch, InvertedResidual):
            _copy_irb(branch, src.irb, arch_block.kernel)
        elif isinstance(branch, TransformBranch):
            transform = src.transform
            assert transform is not None, "only parallel supernets have this branch"
            if branch.conv is not None:
                assert transform.conv is not None, "both convolve exactly when channels change"
                branch.conv.weight.copy_(transform.conv.weight)
            _copy_bn(branch.bn, transform.bn)
        elif isinstance(branch, ConvBNAct):
            pointwise = src.pointwise
            assert pointwise is not None, "only parallel supernets have this branch"
            conv, bn = _conv_bn(branch)
            conv.weight.copy_(pointwise.conv.weight)
            _copy_bn(bn, pointwise.bn)
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
        assert isinstance(stage, Stage)  # plain.make_stages builds only these
        for i, (dst, block) in enumerate(zip(stage.blocks, arch.active_blocks(s), strict=True)):
            _copy_level(dst, supernet.level(s, i), block)
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
    load_weights(net, directory / "model.pt", "subnet state dict", arch.id, fix)
    return net.eval()
