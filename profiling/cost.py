"""Analytical cost of a subnet: params, MACs, peak activation memory and flash, without torch.

The search calls this for every candidate (thousands per second), so it is pure Python with
per-segment caching; tests hold it equal to the parameter count of the materialised module,
to fvcore and to the ONNX graph of its export.

Definitions (shared with ``natv2.profiling.counters``):

* **MACs**: multiply-accumulates of convolutions (depthwise included) and linear layers,
  squeeze-excite included, batch 1. BatchNorm, activations, additions, multiplications and
  pooling are not MACs.
* **params**: parameters of the plain PyTorch module (BatchNorm weight and bias count).
* **flash** (bytes of the deployed weights, BatchNorm folded into the preceding conv): float32 is
  4 bytes per weight and bias; int8 is 1 byte per weight plus 4 bytes (int32) per bias and 4 bytes
  (float32 scale) per output channel of every conv/linear. A BatchNorm with no conv before it
  (the transformation branch on a same-shape level) stays a per-channel scale and shift:
  2 values of 4 bytes per channel. The runtime's own flash is the profile's business.
* **peak activation memory**: nodes run in the module's forward order; a tensor is alive from
  the node that makes it to its last consumer; activations, BatchNorm and flatten run in place;
  the network input counts. Peak = largest sum of live tensors at any node, batch 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from natv2.space import Arch, Block, SearchSpace
from natv2.supernet.config import STAGE_SE, SupernetConfig

DTYPE_BYTES: dict[str, int] = {"int8": 1, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class SubnetCost:
    """What a subnet costs on a device storing activations and weights at ``dtype``."""

    params: int
    macs: int
    peak_activation_bytes: int
    flash_bytes: int
    dtype: str

    def as_dict(self) -> dict[str, int | str]:
        return {
            "params": self.params,
            "macs": self.macs,
            "peak_sram_bytes": self.peak_activation_bytes,
            "flash_bytes": self.flash_bytes,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class _Seg:
    """Counts of one segment of the network (stem, a stage, a head)."""

    params: int = 0
    macs: int = 0
    weights: int = 0  # conv/linear weights after BN folding
    biases: int = 0  # biases after BN folding (one per channel of a folded conv)
    channels: int = 0  # output channels of convs/linears (int8 per-channel scales)
    loose_bn: int = 0  # channels of BatchNorms with no conv to fold into
    peak: int = 0  # peak live elements inside the segment, its input included

    def __add__(self, o: _Seg) -> _Seg:
        return _Seg(
            self.params + o.params,
            self.macs + o.macs,
            self.weights + o.weights,
            self.biases + o.biases,
            self.channels + o.channels,
            self.loose_bn + o.loose_bn,
            max(self.peak, o.peak),
        )


def conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _conv(cin: int, cout: int, k: int, hw_out: int, groups: int = 1, bn: bool = True, bias=False):
    """A conv (+ BN): params, MACs and its folded weights/biases."""
    w = cout * (cin // groups) * k * k
    params = w + (2 * cout if bn else 0) + (cout if bias else 0)
    return _Seg(
        params=params,
        macs=hw_out * hw_out * w,
        weights=w,
        biases=cout if (bn or bias) else 0,
        channels=cout,
    )


class _Live:
    """Peak of live elements over a node sequence (the rule in the module docstring).

    Buffers are ids with sizes and a last-use position; nodes that allocate are recorded in
    order. In-place ops create no node: their output is the same buffer as their input.
    """

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.born: list[int] = []
        self.last: list[int] = []
        self.n = 0

    def input(self, size: int) -> int:
        self.sizes.append(size)
        self.born.append(-1)
        self.last.append(-1)
        return len(self.sizes) - 1

    def node(self, inputs: Iterable[int], size: int) -> int:
        for b in inputs:
            self.last[b] = max(self.last[b], self.n)
        self.sizes.append(size)
        self.born.append(self.n)
        self.last.append(self.n)
        self.n += 1
        return len(self.sizes) - 1

    def keep(self, b: int) -> None:
        """``b`` leaves the segment: alive to its end."""
        self.last[b] = self.n

    def peak(self) -> int:
        delta = [0] * (self.n + 2)
        for size, born, last in zip(self.sizes, self.born, self.last, strict=True):
            delta[max(born, 0)] += size
            delta[last + 1] -= size
        best = running = 0
        for d in delta[: self.n]:
            running += d
            best = max(best, running)
        return best


def _irb(live: _Live, x: int, cfg, stage, cin, cout, stride, hw, block: Block) -> tuple[int, _Seg]:
    mid = cfg.mid_channels(cin, block.expand)
    hw2 = conv_out(hw, block.kernel, stride)
    seg = _conv(cin, mid, 1, hw) + _conv(mid, mid, block.kernel, hw2, groups=mid)
    h = live.node([x], mid * hw * hw)
    h = live.node([h], mid * hw2 * hw2)
    if STAGE_SE[stage]:
        se = cfg.se_channels(mid)
        seg = (
            seg
            + _conv(mid, se, 1, 1, bn=False, bias=True)
            + _conv(se, mid, 1, 1, bn=False, bias=True)
        )
        pooled = live.node([h], mid)
        g = live.node([pooled], se)
        g = live.node([g], mid)
        h = live.node([h, g], mid * hw2 * hw2)
    seg = seg + _conv(mid, cout, 1, hw2)
    out = live.node([h], cout * hw2 * hw2)
    if stride == 1 and cin == cout:
        out = live.node([out, x], cout * hw2 * hw2)
    return out, seg


def _level(live: _Live, x: int, cfg, stage: int, index: int, hw: int, block: Block):
    cin, cout, stride = cfg.level_io(stage, index)
    hw2 = conv_out(hw, 1, stride)
    outs: list[int] = []
    seg = _Seg()
    out = None
    if block.has_irb:
        b, s = _irb(live, x, cfg, stage, cin, cout, stride, hw, block)
        seg, out = seg + s, b
        outs.append(b)
    if block.has_pointwise:
        seg = seg + _conv(cin, cout, 1, hw2)
        b = live.node([x], cout * hw2 * hw2)
        out = b if out is None else live.node([out, b], cout * hw2 * hw2)
    if block.has_transform:
        h = x
        if stride > 1:
            h = live.node([h], cin * hw2 * hw2)
        if cin != cout:
            seg = seg + _conv(cin, cout, 1, hw2)
            h = live.node([h], cout * hw2 * hw2)
        else:
            seg = seg + _Seg(params=2 * cout, loose_bn=cout)
        out = h if out is None else live.node([out, h], cout * hw2 * hw2)
    return out, seg, hw2


@lru_cache(maxsize=200_000)
def _level_alone(cfg: SupernetConfig, stage: int, index: int, hw: int, block: Block):
    cin = cfg.level_io(stage, index)[0]
    live = _Live()
    x = live.input(cin * hw * hw)
    out, seg, hw2 = _level(live, x, cfg, stage, index, hw, block)
    live.keep(out)
    return replace(seg, peak=live.peak()), hw2


@lru_cache(maxsize=200_000)
def _stage(cfg: SupernetConfig, stage: int, blocks: tuple[Block, ...], hw: int) -> tuple[_Seg, int]:
    """A stage's counts and its output size; the peak includes the stage input while alive."""
    if not cfg.dense_skips:
        # each level's input dies inside the level: the stage peak is the largest level peak
        seg = _Seg()
        for index, block in enumerate(blocks):
            level, hw = _level_alone(cfg, stage, index, hw, block)
            seg = seg + level
        return seg, hw
    live = _Live()
    x = live.input(cfg.stage_in_channels(stage) * hw * hw)
    seg = _Seg()
    outs: list[int] = []
    size = hw
    cout = cfg.stage_channels[stage]
    for k, block in enumerate(blocks, start=1):
        if not cfg.dense_skips or k == 1:
            inp = x if k == 1 else outs[-1]
        elif k <= 3:
            inp = outs[k - 2]
        else:
            inp = outs[k - 2]
            for o in outs[: k - 3]:
                inp = live.node([inp, o], cout * size * size)
        out, s, size = _level(live, inp, cfg, stage, k - 1, size, block)
        seg = seg + s
        outs.append(out)
    out = outs[-1]
    if cfg.dense_skips and len(outs) >= 3:
        out = outs[len(outs) - 1]
        for o in outs[: len(outs) - 2]:
            out = live.node([out, o], cout * size * size)
    live.keep(out)
    return replace(seg, peak=live.peak()), size


@lru_cache(maxsize=4096)
def _stem(cfg: SupernetConfig, resolution: int) -> tuple[_Seg, int]:
    c = cfg.stem_channels
    hw = conv_out(resolution, 3, 2)
    live = _Live()
    x = live.input(cfg.in_channels * resolution * resolution)
    h = live.node([x], c * hw * hw)  # stem conv (+ BN + hswish in place)
    d = live.node([h], c * hw * hw)  # first block: depthwise
    p = live.node([d], c * hw * hw)  # pointwise
    out = live.node([p, h], c * hw * hw)  # + identity
    live.keep(out)
    seg = (
        _conv(cfg.in_channels, c, 3, hw)
        + _conv(c, c, 3, hw, groups=c)
        + _conv(c, c, 1, hw)
        + _Seg(peak=live.peak())
    )
    return seg, hw


@lru_cache(maxsize=4096)
def _head(cfg: SupernetConfig, stage: int, hw: int) -> _Seg:
    c = cfg.stage_channels[stage]
    expand, mix = cfg.exit_channels(stage)
    live = _Live()
    x = live.input(c * hw * hw)
    h = live.node([x], expand * hw * hw)
    h = live.node([h], expand)  # global pool
    h = live.node([h], mix)  # 1x1 mix conv (+ hswish, flatten in place)
    out = live.node([h], cfg.num_classes)  # linear
    live.keep(out)
    return (
        _conv(c, expand, 1, hw)
        + _conv(expand, mix, 1, 1, bn=False)
        + _Seg(
            params=mix * cfg.num_classes + cfg.num_classes,
            macs=mix * cfg.num_classes,
            weights=mix * cfg.num_classes,
            biases=cfg.num_classes,
            channels=cfg.num_classes,
        )
        + _Seg(peak=live.peak())
    )


def _segments(arch: Arch, config: SupernetConfig) -> _Seg:
    cfg = config if config.width == arch.width else replace(config, width=arch.width)
    total, hw = _stem(cfg, arch.resolution)
    for s in range(arch.exit):
        seg, hw = _stage(cfg, s, arch.active_blocks(s), hw)
        total = total + seg
    return total + _head(cfg, arch.exit - 1, hw)


def flash_bytes(seg: _Seg, dtype: str) -> int:
    if dtype == "int8":
        return seg.weights + 4 * seg.biases + 4 * seg.channels + 8 * seg.loose_bn
    return DTYPE_BYTES[dtype] * (seg.weights + seg.biases) + 8 * seg.loose_bn


def subnet_cost(arch: Arch, config: SupernetConfig, dtype: str = "float32") -> SubnetCost:
    """Exact costs of ``arch`` in the supernet family of ``config`` (width taken from ``arch``)."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    seg = _segments(arch, config)
    return SubnetCost(
        params=seg.params,
        macs=seg.macs,
        peak_activation_bytes=seg.peak * DTYPE_BYTES[dtype],
        flash_bytes=flash_bytes(seg, dtype),
        dtype=dtype,
    )


def batch_costs(
    archs: Sequence[Arch], config: SupernetConfig, dtype: str = "float32"
) -> list[SubnetCost]:
    return [subnet_cost(a, config, dtype) for a in archs]


def cheapest_costs(space: SearchSpace, config: SupernetConfig, dtype: str) -> dict[str, int]:
    """The smallest figure of each cost over the space (each may come from a different subnet).

    Every cost grows with resolution, width and depth, so the candidates are the minimal-depth,
    smallest-resolution, smallest-width subnets with the cheapest level kinds and every exit.
    """
    base = space.minimal()
    kinds = [Block(1, 3, 3)] + ([Block(2, 3, 3), Block(4, 3, 3)] if space.parallel else [])
    exits = range(1, 6) if space.has_exits else (5,)
    best: dict[str, int] = {}
    for kind in kinds:
        for x in exits:
            arch = space.decode(
                space.encode(Arch(base.resolution, base.width, x, (kind, kind, None, None) * 5))
            )
            c = subnet_cost(arch, config, dtype).as_dict()
            for key in ("params", "macs", "peak_sram_bytes", "flash_bytes"):
                best[key] = min(best.get(key, c[key]), c[key])
    return best
