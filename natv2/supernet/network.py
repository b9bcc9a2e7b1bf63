"""The OFAv2 elastic MobileNetV3 supernet (one width multiplier) and the per-width family.

``set_active(arch)`` selects a subnet; ``forward`` runs it and returns the logits of its exit;
``forward_exits`` returns the logits of every exit up to it (ENS-KD teachers, AEP warm-up).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from natv2.errors import Natv2Error
from natv2.space import (
    LEVELS_PER_STAGE,
    N_STAGES,
    Arch,
    Block,
    SearchSpace,
)
from natv2.supernet.config import STAGE_ACTS, STAGE_SE, SupernetConfig, encoding_of
from natv2.supernet.elastic import ElasticIRB, sliced_batch_norm
from natv2.supernet.plain import (
    FirstBlock,
    dense_stage_forward,
    make_act,
    make_exit_head,
    make_stem,
)


class PointwiseWeights(nn.Module):
    """A parallel level's pointwise branch: strided 1x1 conv, then BN (keys ``conv.*, bn.*``)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class TransformWeights(nn.Module):
    """A parallel level's transformation branch: BN and, only when the channels change, a 1x1
    conv (registered in this order: ``bn.*`` before ``conv.*`` in state dicts and parameters)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cout)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None


class ElasticLevel(nn.Module):
    """One level: the elastic IRB and, in parallel supernets, the pointwise and transform branch."""

    def __init__(self, config: SupernetConfig, stage: int, index: int) -> None:
        super().__init__()
        cin, cout, stride = config.level_io(stage, index)
        act = STAGE_ACTS[stage]
        self.irb = ElasticIRB(
            cin,
            cout,
            stride,
            act,
            STAGE_SE[stage],
            config.mid_channels,
            config.se_channels,
            config.max_expand,
        )
        self.pointwise: PointwiseWeights | None = None
        self.transform: TransformWeights | None = None
        if config.parallel:
            self.pointwise = PointwiseWeights(cin, cout, stride)
            self.transform = TransformWeights(cin, cout)
        self.stride = stride
        self.act = make_act(act)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        outs = []
        if block.has_irb:
            outs.append(self.irb(x, block.expand, block.kernel))
        if block.has_pointwise:
            pw = self.pointwise
            assert pw is not None, "only parallel supernets have this branch (set_active checks)"
            outs.append(self.act(sliced_batch_norm(pw.bn, pw.conv(x))))
        if block.has_transform:
            tr = self.transform
            assert tr is not None, "only parallel supernets have this branch (set_active checks)"
            h = nn.functional.max_pool2d(x, 3, self.stride, 1) if self.stride > 1 else x
            if tr.conv is not None:
                h = tr.conv(h)
            outs.append(self.act(sliced_batch_norm(tr.bn, h)))
        out = outs[0]
        for o in outs[1:]:
            out = out + o
        return out


class OFAv2Supernet(nn.Module):
    """Elastic resolution (via the input), kernel, expand, depth, level (branches) and exit."""

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__()
        self.config = config
        self.space = SearchSpace(
            encoding_of(config), widths=(config.width,), grid=config.resolutions
        )
        self.stem = make_stem(config)
        self.first_block = FirstBlock(config.stem_channels)
        self.stages = nn.ModuleList(
            nn.ModuleList(ElasticLevel(config, s, i) for i in range(LEVELS_PER_STAGE))
            for s in range(N_STAGES)
        )
        self.exits = nn.ModuleDict(
            {str(s + 1): make_exit_head(config, s) for s in config.exit_stages}
        )
        self.active: Arch = self.space.maximal()

    @property
    def encoding(self) -> str:
        return self.space.encoding

    def set_active(self, arch: Arch) -> None:
        """Select the subnet that ``forward`` runs; raises when this supernet cannot run it."""
        self.space.encode(arch)  # validates against encoding and width
        self.active = arch

    def _stage_output(self, stage: int, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        levels = self.stages[stage]
        assert isinstance(levels, nn.ModuleList)  # built so in __init__
        blocks = arch.active_blocks(stage)
        runners = [(lambda h, lvl=levels[i], b=b: lvl(h, b)) for i, b in enumerate(blocks)]
        return dense_stage_forward(runners, x, self.config.dense_skips)

    def stage_features(self, x: torch.Tensor, arch: Arch | None = None) -> list[torch.Tensor]:
        arch = self.active if arch is None else arch
        x = self.first_block(self.stem(x))
        outs = []
        for s in range(arch.exit):
            x = self._stage_output(s, x, arch)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor, all_exits: bool = False, features: bool = False):
        """Logits of the active exit; with ``all_exits``, the list of every exit's logits up to
        it (through ``forward`` so that DistributedDataParallel sees the call). With
        ``features``, a pair: those logits and the output of every stage up to the exit."""
        feats = self.stage_features(x)
        if all_exits:
            out = [
                self.exits[str(s + 1)](f) for s, f in enumerate(feats) if str(s + 1) in self.exits
            ]
        else:
            out = self.exits[str(self.active.exit)](feats[-1])
        return (out, feats) if features else out

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit head up to the active exit (only the last in a no-exit supernet)."""
        return self.forward(x, all_exits=True)

    @torch.no_grad()
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """OFA's channel re-ordering before elastic expand: most important channels first
        (``optimizer``'s state is permuted with the weights)."""
        for irb in self.irbs():
            irb.reorder_channels(optimizer)

    def level(self, stage: int, index: int) -> ElasticLevel:
        """Level ``index`` (0-based) of stage ``stage`` (0-based)."""
        levels = self.stages[stage]
        assert isinstance(levels, nn.ModuleList)  # built so in __init__
        level = levels[index]
        assert isinstance(level, ElasticLevel)
        return level

    def irbs(self) -> Iterable[ElasticIRB]:
        for s in range(len(self.stages)):
            for i in range(LEVELS_PER_STAGE):
                yield self.level(s, i).irb


def build_supernet(config: SupernetConfig, seed: int = 0) -> OFAv2Supernet:
    """A freshly initialised supernet; ``seed`` makes the initial weights reproducible."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = OFAv2Supernet(config)
        # zero-init the last BatchNorm of every residual IRB: each starts as an identity, which
        # trains deep MobileNets much faster from scratch (Goyal et al., 2017)
        for irb in net.irbs():
            if irb.residual:
                nn.init.zeros_(irb.project_bn.weight)
    finally:
        torch.random.set_rng_state(gen_state)
    return net


def check_runnable(net: OFAv2Supernet, arch: Arch) -> None:
    try:
        net.set_active(arch)
    except Natv2Error as exc:
        raise Natv2Error(f"supernet {net.config.name} cannot run {arch.id}: {exc}") from None
