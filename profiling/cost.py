"""Analytical cost of a subnet: params, MACs, peak activation memory and flash, without torch.

The search calls this for every candidate (tens of thousands per second), so it is pure Python:
each level is counted once per (stage, level, input size, block) and kept in a per-config table,
and a subnet is a sum (a max, for the peak) over its segments. Tests hold it equal to the plain
module (params), to fvcore and to the ONNX graph of its export (MACs, and per segment the peak
activation memory and the flash bytes) on hundreds of random subnets of every encoding.

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

  *What the exporter folds.* The ONNX exporter (``torch.onnx.export``, eval mode) folds a
  BatchNorm into the Conv whose output it reads when that output has no other consumer, and it
  does so again after a fold. So the loose BatchNorm of a transformation-only level (A = 4) is
  folded away too when its input is a bare Conv + BN: that is level 2 of a stage whose level 1 is
  an IRB alone without residual (its output is the project conv + BN, no activation, no add),
  and level 1's output feeds nothing else (no dense skips, or a stage of depth 2). That BN costs
  no flash (the conv keeps its one bias per channel). ``counters.params_after_bn_folding`` and
  ``flash_bytes_of_module`` apply the same rule to a module's data flow.
* **peak activation memory**: nodes run in the module's forward order (the order of the
  exported graph); a tensor is alive from the node that makes it to its last consumer;
  activations, BatchNorm, flatten and dropout run in place; the network input counts. Peak =
  largest sum of live tensors at any node, batch 1 (``counters.peak_live_bytes``). Branches of a
  parallel level run IRB, pointwise, transformation, summed left to right; SE's ``x * gate``
  allocates its output. A transformation branch alone on a same-shape level is BatchNorm and
  activation, both in place: the level has no node and its output is its input buffer. With
  dense skips, the outputs a later block or the stage output still needs stay alive across the
  levels in between (see ``_dense_peak``); when such an output is the input of a
  transformation-only level, the rule (like ``counters.peak_live_bytes`` on the exported graph)
  still runs that level in place, so the later add reads the same buffer: a runtime that must
  keep the original would need one more tensor there.

Segments: ``stem`` (stem conv and the fixed first block), ``stage1`` .. ``stageX`` (X = exit),
``head`` (the exit's classifier). Params, MACs and flash add up over segments; the peak of a
subnet is the largest segment peak, where each segment's peak counts its input while alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from natv2.errors import Natv2Error
from natv2.space import BRANCH_IRB, BRANCH_TRANSFORM, LEVELS_PER_STAGE, Arch, Block, SearchSpace
from natv2.supernet.config import STAGE_SE, STAGE_STRIDES, SupernetConfig

if TYPE_CHECKING:
    from natv2.device_profiles import Profile

DTYPE_BYTES: dict[str, int] = {"int8": 1, "float16": 2, "float32": 4}

# Level tables are bounded by the space (20 levels x 5 sizes x 39 blocks per config); the memo of
# dense-stage peaks is cleared when it reaches this size.
_MAX_STAGES = 400_000


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


class _Seg(NamedTuple):
    """Counts of one segment of the network (stem, a level, a stage, a head)."""

    params: int = 0
    macs: int = 0
    weights: int = 0  # conv/linear weights after BN folding
    biases: int = 0  # biases after BN folding (one per channel of a folded conv)
    channels: int = 0  # output channels of convs/linears (int8 per-channel scales)
    loose_bn: int = 0  # channels of BatchNorms with no conv to fold into
    peak: int = 0  # peak live elements inside the segment, its input included

    def __add__(self, o: _Seg) -> _Seg:  # type: ignore[override]
        return _Seg(
            self[0] + o[0],
            self[1] + o[1],
            self[2] + o[2],
            self[3] + o[3],
            self[4] + o[4],
            self[5] + o[5],
            max(self[6], o[6]),
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

    def profile(self) -> list[int]:
        """Live elements at each node."""
        delta = [0] * (self.n + 2)
        for size, born, last in zip(self.sizes, self.born, self.last, strict=True):
            delta[max(born, 0)] += size
            delta[last + 1] -= size
        live = []
        running = 0
        for d in delta[: self.n]:
            running += d
            live.append(running)
        return live

    def peak(self) -> int:
        return max(self.profile(), default=0)


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


def _level(live: _Live, x: int, cfg, stage: int, io: tuple[int, int, int], hw: int, block: Block):
    cin, cout, stride = io
    hw2 = conv_out(hw, 1, stride)
    seg = _Seg()
    out = None
    if block.has_irb:
        out, seg = _irb(live, x, cfg, stage, cin, cout, stride, hw, block)
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


# A level's entry in the tables: its counts (params, macs, weights, biases, channels, loose_bn),
# then peak with the input dying at its last use, peak with the input kept to the end, the output
# size in elements and spatial size, whether its output is a bare conv + BN (an IRB alone without
# residual), the channels of a loose BN the exporter folds into such an output before it, and
# whether the level has no nodes (its output is its input buffer).
_Level = tuple[int, int, int, int, int, int, int, int, int, int, bool, int, bool]


def _count_level(cfg: SupernetConfig, stage: int, io: tuple[int, int, int], hw: int, block: Block):
    """A level's ``_Level`` entry; ``io`` is ``cfg.level_io(stage, index)``."""
    cin, cout, stride = io
    live = _Live()
    x = live.input(cin * hw * hw)
    out, seg, hw2 = _level(live, x, cfg, stage, io, hw, block)
    live.keep(out)
    profile = live.profile()
    die = max(profile, default=0)
    # with the input kept to the end of the level, it adds to every node after its last use
    keep = max([die, *(v + cin * hw * hw for v in profile[live.last[x] + 1 :])])
    same = stride == 1 and cin == cout
    return (
        *seg[:6],
        die,
        keep,
        cout * hw2 * hw2,
        hw2,
        block.branches == BRANCH_IRB and not same,
        cout if block.branches == BRANCH_TRANSFORM and same else 0,
        block.branches == BRANCH_TRANSFORM and same,
    )


def _dense_peak(levels: Sequence[_Level], in_size: int) -> int:
    """Peak of a stage with dense skips (REFERENCE.md), from its levels' own peaks.

    The stage runs as steps: a level (its nodes, with its input kept to the end of the level
    when a later step reads it again) or an add of two tensors. Block 1 reads the stage input,
    blocks 2 and 3 read o1 and o2, block 4 reads ``o3 + o1``; the stage output is o2 (D = 2),
    ``o3 + o1`` (D = 3) or ``(o4 + o1) + o2`` (D = 4). A buffer made before a step and read
    after it adds its size to every node of the step. A level of no nodes (a transformation
    branch alone on a same-shape level: BN and activation run in place) returns its input
    buffer itself, as the graph's in-place rule says, even when a later add reads that input.
    """
    d = len(levels)
    z = levels[0][8]
    if not any(lv[12] for lv in levels):  # every level allocates its output: closed form
        if d == 3:
            return max(levels[0][6], levels[1][7], z + levels[2][6], 3 * z)
        if d == 4:
            return max(levels[0][6], levels[1][7], z + levels[2][7], 4 * z, 2 * z + levels[3][6])
    size = [in_size]
    born = [-1]
    last = [-1]
    steps: list[tuple[int, _Level | None]] = []  # (input buffer or -1 for an add, level)

    def new(n: int) -> int:
        size.append(n)
        born.append(len(steps))
        last.append(len(steps))
        return len(size) - 1

    def add(a: int, b: int) -> int:
        last[a] = last[b] = len(steps)
        out = new(z)
        steps.append((-1, None))
        return out

    outs: list[int] = []
    for k, lv in enumerate(levels, start=1):
        inp = 0 if k == 1 else outs[k - 2]
        for o in outs[: max(k - 3, 0)]:
            inp = add(inp, o)
        if lv[12]:  # no nodes: the output is the input buffer
            outs.append(inp)
            continue
        last[inp] = len(steps)
        outs.append(new(lv[8]))
        steps.append((inp, lv))
    out = outs[-1]
    if len(outs) >= 3:
        for o in outs[: len(outs) - 2]:
            out = add(out, o)
    last[out] = len(steps)
    best = 0
    for j, (inp, lv) in enumerate(steps):
        if lv is None:  # an add: every buffer alive at it
            live = sum(s for s, b, e in zip(size, born, last, strict=True) if b <= j <= e)
        else:
            waiting = sum(
                s
                for i, (s, b, e) in enumerate(zip(size, born, last, strict=True))
                if b < j < e and i != inp
            )
            live = waiting + (lv[7] if last[inp] > j else lv[6])
        best = max(best, live)
    return best


def _code(block: Block) -> int:
    return block.branches << 8 | block.expand << 4 | block.kernel


class _Tables:
    """Per-config memo of level, stem, head and (dense) stage counts, width fixed.

    Keys are small ints: hashing the frozen dataclasses (Block, Arch) in Python costs more
    than counting a stage from its levels.
    """

    __slots__ = ("cfg", "heads", "in_sizes", "io", "levels", "stages", "stems")

    def __init__(self, cfg: SupernetConfig) -> None:
        self.cfg = cfg
        self.levels: dict[int, _Level] = {}
        self.stems: dict[int, tuple[tuple[int, ...], int]] = {}
        self.heads: dict[tuple[int, int], tuple[int, ...]] = {}
        self.stages: dict[tuple[int, ...], tuple[int, ...]] = {}
        stages = range(len(STAGE_STRIDES))
        self.in_sizes = tuple(cfg.stage_in_channels(s) for s in stages)
        self.io = tuple(tuple(cfg.level_io(s, i) for i in range(LEVELS_PER_STAGE)) for s in stages)

    def stem(self, resolution: int) -> tuple[tuple[int, ...], int]:
        got = self.stems.get(resolution)
        if got is None:
            seg, hw = _stem(self.cfg, resolution)
            got = self.stems[resolution] = (tuple(seg), hw)
        return got

    def head(self, stage: int, hw: int) -> tuple[int, ...]:
        got = self.heads.get((stage, hw))
        if got is None:
            got = self.heads[(stage, hw)] = tuple(_head(self.cfg, stage, hw))
        return got

    def stage(self, stage: int, slots: Sequence[Block | None], hw: int) -> tuple[int, ...]:
        """(params, macs, weights, biases, channels, loose_bn, peak, output size) of a stage
        given its four level slots (skips as None) and its input size."""
        table = self.levels
        hw_in = hw
        levels: list[_Level] = []
        codes: list[int] = []
        for index, block in enumerate(slots):
            if block is None:
                break
            code = _code(block)
            key = ((stage << 2 | index) << 16 | hw) << 12 | code
            lv = table.get(key)
            if lv is None:
                io = self.io[stage][index]
                lv = table[key] = _count_level(self.cfg, stage, io, hw, block)
            hw = lv[9]
            levels.append(lv)
            codes.append(code)
        p = m = w = b = c = loose = peak = 0
        for lv in levels:
            p += lv[0]
            m += lv[1]
            w += lv[2]
            b += lv[3]
            c += lv[4]
            loose += lv[5]
            if lv[6] > peak:
                peak = lv[6]
        dense = self.cfg.dense_skips
        if levels[0][10] and levels[1][11] and (not dense or len(levels) == 2):
            loose -= levels[1][11]  # folded by the exporter into level 1's project conv
        if dense and len(levels) > 2:  # depth 2 runs as without dense skips
            key = (stage, hw_in, *codes)
            got = self.stages.get(key)
            if got is None:
                if len(self.stages) >= _MAX_STAGES:
                    self.stages.clear()
                in_size = self.in_sizes[stage] * hw_in * hw_in
                got = self.stages[key] = _dense_peak(levels, in_size)
            peak = got
        return (p, m, w, b, c, loose, peak, hw)


_TABLES: dict[tuple[SupernetConfig, float], _Tables] = {}


def _tables(config: SupernetConfig, width: float) -> _Tables:
    t = _TABLES.get((config, width))
    if t is None:
        cfg = config if config.width == width else _with_width(config, width)
        t = _TABLES[(config, width)] = _Tables(cfg)
    return t


def _with_width(config: SupernetConfig, width: float) -> SupernetConfig:
    d = config.to_dict()
    d["width"] = width
    return SupernetConfig(**d)


def clear_caches() -> None:
    """Forget every memoised count (benchmarks measure the cold path with this)."""
    _TABLES.clear()


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


def _counts(arch: Arch, config: SupernetConfig) -> tuple[int, ...]:
    """(params, macs, weights, biases, channels, loose_bn, peak elements) of ``arch``."""
    t = _tables(config, arch.width)
    (p, m, w, b, c, loose, peak), hw = t.stem(arch.resolution)
    levels = arch.levels
    stage = t.stage
    for s in range(arch.exit):
        sp, sm, sw, sb, sc, sl, spk, hw = stage(s, levels[4 * s : 4 * s + 4], hw)
        p += sp
        m += sm
        w += sw
        b += sb
        c += sc
        loose += sl
        if spk > peak:
            peak = spk
    hp, hm, hw_, hb, hc, hl, hpk = t.head(arch.exit - 1, hw)
    return (p + hp, m + hm, w + hw_, b + hb, c + hc, loose + hl, max(peak, hpk))


def _flash(weights: int, biases: int, channels: int, loose_bn: int, dtype: str) -> int:
    if dtype == "int8":
        return weights + 4 * biases + 4 * channels + 8 * loose_bn
    return DTYPE_BYTES[dtype] * (weights + biases) + 8 * loose_bn


def flash_bytes(seg: _Seg, dtype: str) -> int:
    return _flash(seg.weights, seg.biases, seg.channels, seg.loose_bn, dtype)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")


def _cost(counts: Sequence[int], dtype: str) -> SubnetCost:
    p, m, w, b, c, loose, peak = counts
    return SubnetCost(p, m, peak * DTYPE_BYTES[dtype], _flash(w, b, c, loose, dtype), dtype)


def subnet_cost(arch: Arch, config: SupernetConfig, dtype: str = "float32") -> SubnetCost:
    """Exact costs of ``arch`` in the supernet family of ``config`` (width taken from ``arch``)."""
    if dtype not in DTYPE_BYTES:
        _check_dtype(dtype)
    return _cost(_counts(arch, config), dtype)


def segment_costs(
    arch: Arch, config: SupernetConfig, dtype: str = "float32"
) -> dict[str, SubnetCost]:
    """The costs of each segment of ``arch``: ``stem``, ``stage1`` .. ``stageX``, ``head``.

    Params, MACs and flash add up to ``subnet_cost``; its peak is the largest segment peak
    (each segment's peak counts its input while alive, and its output).
    """
    _check_dtype(dtype)
    t = _tables(config, arch.width)
    counts, hw = t.stem(arch.resolution)
    out = {"stem": _cost(counts, dtype)}
    for s in range(arch.exit):
        *counts, hw = t.stage(s, arch.levels[4 * s : 4 * s + 4], hw)
        out[f"stage{s + 1}"] = _cost(counts, dtype)
    out["head"] = _cost(t.head(arch.exit - 1, hw), dtype)
    return out


def batch_costs(
    archs: Sequence[Arch], config: SupernetConfig, dtype: str = "float32"
) -> list[SubnetCost]:
    _check_dtype(dtype)
    return [_cost(_counts(a, config), dtype) for a in archs]


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


def ensure_feasible(profile: Profile, space: SearchSpace, config: SupernetConfig) -> dict:
    """The smallest achievable costs of ``space`` on ``profile``; raise when nothing fits.

    The space is restricted to the profile's resolutions and costed at the profile's dtype;
    latency is estimated from the cheapest MACs when the profile has ``macs_per_second``.
    Raises ``Natv2Error`` (naming the profile file, each budget broken and the smallest figure
    the space achieves) when even the cheapest subnet breaks a budget, or when the space has
    none of the profile's resolutions. Returns the cheapest figures (keys as ``Profile.check``).
    """
    from natv2.device_profiles import check_feasible

    resolutions = tuple(r for r in space.resolutions if r in profile.resolutions)
    if not resolutions:
        raise Natv2Error(
            f"{profile.source}: device profile '{profile.name}' allows input resolutions "
            f"{list(profile.resolutions)} but the search space has only "
            f"{list(space.resolutions)}; add one of them to task.resolutions"
        )
    restricted = SearchSpace(space.encoding, resolutions=resolutions, widths=space.widths)
    cheapest: dict = dict(cheapest_costs(restricted, config, profile.dtype))
    if profile.macs_per_second:
        cheapest["latency_ms"] = profile.estimate_latency_ms(cheapest["macs"])
    check_feasible(profile, cheapest)
    return cheapest
