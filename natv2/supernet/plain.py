"""Plain torch modules of one subnet: what ``materialize`` builds and what gets exported.

Nothing here is elastic: every layer has fixed channels and kernels, so the module exports to a
small ONNX graph, counts exactly with fvcore, and rebuilds from its Arch description alone.
The supernet reuses the fixed parts (stem, first block, exit heads) from here, never the reverse.

Execution order matters to peak activation memory, and the cost model follows the same order:
parallel branches run IRB, then pointwise, then transformation, and are summed left to right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from natv2.space import Arch, Block
from natv2.supernet.config import STAGE_ACTS, STAGE_SE, SupernetConfig


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm and an optional activation (the unit every block is made of)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool, 1x1 reduce (ReLU), 1x1 expand, hard-sigmoid gate."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 IRB: 1x1 expand, KxK depthwise, optional SE, 1x1 project, residual if it fits."""

    def __init__(
        self, cin: int, cout: int, mid: int, kernel: int, stride: int, act: str, se_mid: int | None
    ) -> None:
        super().__init__()
        self.expand = ConvBNAct(cin, mid, 1, act=act)
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, se_mid) if se_mid is not None else None
        self.project = ConvBNAct(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(self.expand(x))
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        return h + x if self.residual else h


class TransformBranch(nn.Module):
    """OFAv2's cheap branch: max-pool when strided, 1x1 conv only when channels change, BN, act."""

    def __init__(self, cin: int, cout: int, stride: int, act: str) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else None
        self.conv = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        if self.conv is not None:
            x = self.conv(x)
        return self.act(self.bn(x))


class ParallelLevel(nn.Module):
    """Several branches on the same input, summed (only built when more than one is active)."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def dense_stage_forward(
    blocks: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, dense: bool
) -> torch.Tensor:
    """Run a stage's active blocks; with dense skips, the rule of docs/reference.md, "Dense skips".

    Block k >= 4 takes o(k-1) + o1 + ... + o(k-3); the stage output after D blocks is o2 for
    D = 2 and oD + o1 + ... + o(D-2) for D >= 3 (o(k-2) is already in the residual of k-1).
    """
    if not dense:
        for block in blocks:
            x = block(x)
        return x
    outs: list[torch.Tensor] = []
    for k, block in enumerate(blocks, start=1):
        if k == 1:
            inp = x
        elif k <= 3:
            inp = outs[k - 2]
        else:
            inp = outs[k - 2]
            for o in outs[: k - 3]:
                inp = inp + o
        outs.append(block(inp))
    depth = len(outs)
    if depth <= 2:
        return outs[-1]
    out = outs[depth - 1]
    for o in outs[: depth - 2]:
        out = out + o
    return out


class Stage(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], dense: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.dense = dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_stage_forward(list(self.blocks), x, self.dense)


class FirstBlock(nn.Module):
    """OFA's fixed block after the stem: 3x3 depthwise (ReLU), 1x1 linear, identity residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(channels, channels, 3, groups=channels, act="relu")
        self.project = ConvBNAct(channels, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.depthwise(x)) + x


class ExitHead(nn.Module):
    """Classifier after a stage: 1x1 to 6C (BN, hswish), pool, 1x1 to 8C (hswish), linear."""

    def __init__(
        self, channels: int, expand: int, mix: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.expand = ConvBNAct(channels, expand, 1, act="hswish")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mix = nn.Conv2d(expand, mix, 1, bias=False)
        self.act = nn.Hardswish(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(mix, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.mix(self.pool(self.expand(x))))
        return self.classifier(self.dropout(self.flatten(h)))


def make_stem(config: SupernetConfig) -> ConvBNAct:
    return ConvBNAct(config.in_channels, config.stem_channels, 3, config.stem_stride, act="hswish")


def make_exit_head(config: SupernetConfig, stage: int) -> ExitHead:
    expand, mix = config.exit_channels(stage)
    return ExitHead(config.stage_channels[stage], expand, mix, config.num_classes, config.dropout)


def make_level(config: SupernetConfig, stage: int, index: int, block: Block) -> nn.Module:
    """The plain module of one active level: a single branch, or a ParallelLevel of several."""
    cin, cout, stride = config.level_io(stage, index)
    act = STAGE_ACTS[stage]
    branches: list[nn.Module] = []
    if block.has_irb:
        mid = config.mid_channels(cin, block.expand)
        se_mid = config.se_channels(mid) if STAGE_SE[stage] else None
        branches.append(InvertedResidual(cin, cout, mid, block.kernel, stride, act, se_mid))
    if block.has_pointwise:
        branches.append(ConvBNAct(cin, cout, 1, stride, act=act))
    if block.has_transform:
        branches.append(TransformBranch(cin, cout, stride, act))
    return branches[0] if len(branches) == 1 else ParallelLevel(branches)


def make_stages(arch: Arch, config: SupernetConfig, n_stages: int) -> nn.ModuleList:
    """The plain stages 1..``n_stages`` of ``arch`` (its active levels only)."""
    return nn.ModuleList(
        Stage(
            [make_level(config, s, i, b) for i, b in enumerate(arch.active_blocks(s))],
            config.dense_skips,
        )
        for s in range(n_stages)
    )


def stage_outputs(stem, first_block, stages, x: torch.Tensor) -> list[torch.Tensor]:
    """Output of every stage (stage i at index i - 1): what exit heads are attached to."""
    x = first_block(stem(x))
    outs = []
    for stage in stages:
        x = stage(x)
        outs.append(x)
    return outs


class Subnet(nn.Module):
    """A standalone subnet: stem, first block, the stages up to its exit, and that exit's head.

    ``arch`` and ``config`` are plain data kept for saving and reporting; the module holds no
    reference to any supernet.
    """

    def __init__(self, arch: Arch, config: SupernetConfig) -> None:
        super().__init__()
        self.arch = arch
        self.config = config
        self.stem = make_stem(config)
        self.first_block = FirstBlock(config.stem_channels)
        self.stages = make_stages(arch, config, arch.exit)
        self.head = make_exit_head(config, arch.exit - 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every stage up to the exit (AEP re-attaches heads to these)."""
        return stage_outputs(self.stem, self.first_block, self.stages, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])
