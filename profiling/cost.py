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

* **TFLM arena** (``tflm_arena_bytes``: what TensorFlow Lite Micro needs for the int8 TFLite
  file of ``natv2.export.tflite``; profiles with ``runtime = "tflm"`` judge their SRAM budget
  on it). Activations: the same live-tensor rule on the converted graph's ops, which TFLM's
  greedy planner achieved on every graph measured: a REVERSE_V2 copies the input; HardSwish is
  its own op (input and output both live; ReLU fuses into the conv); squeeze-excite is MEAN,
  two convs, a MUL (hard-sigmoid) and the MUL by the gate; a loose BatchNorm is SUB, MUL, MUL,
  ADD by per-channel constants; every buffer is rounded up to 16 bytes. Persistent part, per
  op: a 64-byte node struct, 24 bytes per tensor (its output and its constants; the MEAN axes
  and the hard-sigmoid scalar are one shared tensor each), the kernel's op data
  (``TFLM_OP_DATA_BYTES``, 16-byte aligned), its parsed options
  (``TFLM_BUILTIN_DATA_BYTES``) and, for conv/depthwise/linear, 2 x 4 bytes per output
  channel (multiplier and shift, each array 16-byte aligned); plus ``TFLM_GRAPH_BYTES`` once.
  Measured with tflite-micro's recording allocator on 16 untrained subnets of every encoding
  and on the 3 of ``tests/test_tflite.py``: activations equal, and the figure is 0 to 12 bytes
  over the arena (allocations aligned to 4 or 8 bytes that the model rounds up). The host
  interpreter is 64-bit; a 32-bit device's structs are smaller, so the figure is an upper
  bound there. A BatchNorm whose parameters make a step vanish (the default init) converts to
  fewer ops: the figure is then an upper bound too.

* **TFLite file** (``tflite_bytes``: the int8 file of ``natv2.export.tflite``, which TFLM
  flashes; profiles with ``runtime = "tflm"`` judge their flash budget on it). Its constant
  data is the deployed weights as int8, an int32 bias per output channel of every conv and
  linear, a loose BatchNorm's four per-channel int8 constants, and the zero taps of a strided
  1x1 conv on an even-sized map (a 2x2 kernel in the mirrored graph). Its records: per op
  ``TFLITE_OP_BYTES``, per tensor ``TFLITE_TENSOR_BYTES`` and per quantization entry (a float32
  scale and an int64 zero point; per output channel for a conv's weight and bias, else one per
  tensor) ``TFLITE_QUANT_BYTES``, plus ``TFLITE_GRAPH_BYTES`` once. Per-channel quantization
  is why the file is 1.4-2x the deployed weights. Fitted on 10 converted graphs (9 untrained
  random subnets of every encoding, dense skips and width 1.2 among them, and the main job's
  maximal subnet): constant data and the op, tensor and quantization counts equal, the figure
  23 to 297 bytes over the file (names and alignment vary a little), so an upper bound.
  Trained weights can convert to fewer ops (as for the arena, below), and the figure is then
  further over: 1,051 B (1.8 %) on the main job's r56-w10-x2-d22-ca96f2.

Segments: ``stem`` (stem conv and the fixed first block), ``stage1`` .. ``stageX`` (X = exit),
``head`` (the exit's classifier). Params, MACs and flash add up over segments; the peak of a
subnet is the largest segment peak, where each segment's peak counts its input while alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from natv2.space import BRANCH_IRB, BRANCH_TRANSFORM, LEVELS_PER_STAGE, Arch, Block, SearchSpace
from natv2.supernet.config import STAGE_ACTS, STAGE_SE, STAGE_STRIDES, SupernetConfig

DTYPE_BYTES: dict[str, int] = {"int8": 1, "float16": 2, "float32": 4}

# TFLM's persistent part on the 64-bit host (tflite-micro's recording allocator, measured on
# natv2's converted graphs: README "What a subnet costs"). Device structs use 32-bit pointers and
# are smaller, so these are upper bounds there.
TFLM_NODE_BYTES = 64  # NodeAndRegistration per op
TFLM_TENSOR_BYTES = 24  # TfLiteEvalTensor per tensor, constants included
#: op data each kernel allocates (16-byte aligned), besides per-channel multiplier and shift
TFLM_OP_DATA_BYTES: dict[str, int] = {
    "CONV_2D": 80,
    "DEPTHWISE_CONV_2D": 80,
    "FULLY_CONNECTED": 112,  # with the graph's fixed op data (8 bytes over on some graphs)
    "ADD": 64,
    "SUB": 64,
    "MUL": 48,
    "MEAN": 48,
    "HARD_SWISH": 32,
    "MAX_POOL_2D": 32,
    "REVERSE_V2": 0,
}
#: the op's parsed options (``builtin_data``: TfLiteConvParams etc.), not in the recorded parts
TFLM_BUILTIN_DATA_BYTES: dict[str, int] = {
    "CONV_2D": 28,
    "DEPTHWISE_CONV_2D": 28,
    "ADD": 8,
    "SUB": 8,
    "MUL": 4,
    "MEAN": 28,
    "MAX_POOL_2D": 40,
}
# Once per graph: the TfLiteTensor structs (and their quantization) of the graph input and
# output, which the application reads (128 + 64); the MEAN ops' shared axes constant; and the
# unrecorded rest of the tail that does not grow with the ops (524: the largest seen, so the
# figure is 0-12 bytes over TFLM's arena on natv2's graphs)
TFLM_GRAPH_BYTES = 128 + 64 + TFLM_TENSOR_BYTES + 524
# The int8 TFLite file (``tflite_bytes``: what TFLM flashes): its constant data, and per op, per
# tensor and per quantization entry (a float32 scale and an int64 zero point) the flatbuffer's
# records; fitted on natv2's converted graphs (module docstring, "TFLite file")
TFLITE_OP_BYTES = 23
TFLITE_TENSOR_BYTES = 105
TFLITE_QUANT_BYTES = 12
TFLITE_GRAPH_BYTES = 860
TFLITE_LOOSE_BN_BYTES = 4  # a loose BatchNorm's four per-channel int8 constants
_PER_CHANNEL_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
_LOOSE_BN_OPS = ("SUB", "MUL", "MUL", "ADD")

# Level tables are bounded by the space (20 levels x 5 sizes x 39 blocks per config); the memo of
# dense-stage peaks is cleared when it reaches this size.
_MAX_STAGES = 400_000


@dataclass(frozen=True)
class SubnetCost:
    """What a subnet costs on a device storing activations and weights at ``dtype``."""

    params: int
    macs: int
    peak_sram_bytes: int
    flash_bytes: int
    dtype: str
    tflm_arena_bytes: int = 0  # TFLM's arena: its activations plus its persistent part
    tflm_persistent_bytes: int = 0  # the persistent part alone
    tflite_bytes: int = 0  # the int8 TFLite file (what TFLM flashes)

    def as_dict(self) -> dict[str, int | str]:
        return {
            "params": self.params,
            "macs": self.macs,
            "peak_sram_bytes": self.peak_sram_bytes,
            "tflm_arena_bytes": self.tflm_arena_bytes,
            "flash_bytes": self.flash_bytes,
            "tflite_bytes": self.tflite_bytes,
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


def _align(n: int) -> int:
    """TFLM rounds every buffer up to 16 bytes (``MicroArenaBufferAlignment``)."""
    return -(-n // 16) * 16


def _op_persistent(op: str, channels: int, consts: int) -> int:
    """TFLM's persistent bytes for one op of the converted graph (64-bit host): its node
    struct, its output tensor's and constant tensors' TfLiteEvalTensor, its op data, and for
    conv/depthwise/linear the per-channel multiplier and shift (int32 each, 16-aligned)."""
    per_channel = 2 * _align(4 * channels) if op in _PER_CHANNEL_OPS else 0
    return (
        TFLM_NODE_BYTES
        + TFLM_TENSOR_BYTES * (1 + consts)
        + _align(TFLM_OP_DATA_BYTES[op])
        + TFLM_BUILTIN_DATA_BYTES.get(op, 0)
        + per_channel
    )


def _op_file_bytes(op: str, channels: int, consts: int) -> int:
    """The flatbuffer's records of one op of the TFLite graph: the op, its output tensor and
    constants, and their quantization (per channel for a conv/depthwise/linear's weight and
    bias, else one entry per tensor). Constant data is counted from the segment's counts."""
    quant = 1 + (2 * channels if op in _PER_CHANNEL_OPS else consts)
    return TFLITE_OP_BYTES + TFLITE_TENSOR_BYTES * (1 + consts) + TFLITE_QUANT_BYTES * quant


class _Live:
    """Peak of live elements over a node sequence (the rule in the module docstring).

    Buffers are ids with sizes and a last-use position; nodes that allocate are recorded in
    order. In-place ops create no node: their output is the same buffer as their input.
    With ``tflm``, nodes are the ops of the converted TFLite graph (module docstring, "TFLM"):
    HardSwish and a loose BatchNorm get their own tensors, buffers are 16-byte aligned, and
    ``persistent`` adds up each op's share of TFLM's persistent part.
    """

    def __init__(self, tflm: bool = False) -> None:
        self.sizes: list[int] = []
        self.born: list[int] = []
        self.last: list[int] = []
        self.n = 0
        self.tflm = tflm
        self.persistent = 0
        self.file = 0  # the ops' records in the TFLite file (``_op_file_bytes``)
        self.se = 0  # squeeze-excites: their hard-sigmoid constant is one shared tensor

    def input(self, size: int) -> int:
        self.sizes.append(_align(size) if self.tflm else size)
        self.born.append(-1)
        self.last.append(-1)
        return len(self.sizes) - 1

    def op(
        self,
        inputs: Sequence[int],
        size: int,
        op: str,
        channels: int = 0,
        consts: int = 0,
        data: int = 0,
    ) -> int:
        """A node that is an op of the TFLite graph (counted in TFLM's persistent part);
        ``data``: constant bytes the file holds beyond the segment's counts."""
        if self.tflm:
            self.persistent += _op_persistent(op, channels, consts)
            self.file += _op_file_bytes(op, channels, consts) + data
            size = _align(size)
        return self.node(inputs, size)

    def conv(self, x: int, size: int, channels: int) -> int:
        return self.op([x], size, "CONV_2D", channels, 2)

    def tflm_op(self, inputs: Sequence[int], size: int, op: str, consts: int = 0) -> int:
        """An op only the TFLite graph has (in place, or fused, in the MCUNet-style rule)."""
        if not self.tflm:
            return inputs[0]
        return self.op(inputs, size, op, consts=consts)

    def act(self, x: int, size: int, act: str | None) -> int:
        """The activation after a conv: ReLU fuses into it; HardSwish is its own op."""
        return self.tflm_op([x], size, "HARD_SWISH") if act == "hswish" else x

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
    act = STAGE_ACTS[stage]
    seg = _conv(cin, mid, 1, hw) + _conv(mid, mid, block.kernel, hw2, groups=mid)
    h = live.act(live.conv(x, mid * hw * hw, mid), mid * hw * hw, act)
    h = live.op([h], mid * hw2 * hw2, "DEPTHWISE_CONV_2D", mid, 2)
    h = live.act(h, mid * hw2 * hw2, act)
    if STAGE_SE[stage]:
        se = cfg.se_channels(mid)
        seg = (
            seg
            + _conv(mid, se, 1, 1, bn=False, bias=True)
            + _conv(se, mid, 1, 1, bn=False, bias=True)
        )
        live.se += 1
        pooled = live.op([h], mid, "MEAN")  # its axes: the graph's one shared constant
        g = live.conv(pooled, se, se)
        g = live.conv(g, mid, mid)
        g = live.tflm_op([g], mid, "MUL")  # hard-sigmoid: MUL by a shared scalar constant
        h = live.op([h, g], mid * hw2 * hw2, "MUL")
    seg = seg + _conv(mid, cout, 1, hw2)
    out = live.conv(h, cout * hw2 * hw2, cout)
    if stride == 1 and cin == cout:
        out = live.op([out, x], cout * hw2 * hw2, "ADD")
    return out, seg


def _level(live: _Live, x: int, cfg, stage: int, io: tuple[int, int, int], hw: int, block: Block):
    cin, cout, stride = io
    hw2 = conv_out(hw, 1, stride)
    size = cout * hw2 * hw2
    act = STAGE_ACTS[stage]
    seg = _Seg()
    out = None
    if block.has_irb:
        out, seg = _irb(live, x, cfg, stage, cin, cout, stride, hw, block)
    if block.has_pointwise:
        seg = seg + _conv(cin, cout, 1, hw2)
        # a strided 1x1 conv on an even-sized map is a 2x2 kernel in the TFLite file (three
        # zero taps: natv2.export.tflite._strided_pointwise)
        extra = 3 * cin * cout if stride > 1 and hw % 2 == 0 else 0
        b = live.act(live.op([x], size, "CONV_2D", cout, 2, extra), size, act)
        out = b if out is None else live.op([out, b], size, "ADD")
    if block.has_transform:
        h = x
        if stride > 1:
            h = live.op([h], cin * hw2 * hw2, "MAX_POOL_2D")
        if cin != cout:
            seg = seg + _conv(cin, cout, 1, hw2)
            h = live.conv(h, size, cout)
        else:  # a loose BatchNorm: in place, or in TFLite (x - mean) * rstd * weight + bias
            seg = seg + _Seg(params=2 * cout, loose_bn=cout)
            for op in _LOOSE_BN_OPS:
                h = live.tflm_op([h], size, op, consts=1)
        h = live.act(h, size, act)
        out = h if out is None else live.op([out, h], size, "ADD")
    return out, seg, hw2


# A level's entry in the tables: its counts (params, macs, weights, biases, channels, loose_bn),
# then peak with the input dying at its last use, peak with the input kept to the end, the output
# size in elements and spatial size, whether its output is a bare conv + BN (an IRB alone without
# residual), the channels of a loose BN the exporter folds into such an output before it, and
# whether the level has no nodes (its output is its input buffer).
# Then the TFLM-style columns: the two peaks, the output size (16-byte aligned), TFLM's
# persistent bytes of the level's ops, its number of squeeze-excites and the bytes of its ops'
# records in the TFLite file.
_Level = tuple[
    int, int, int, int, int, int, int, int, int, int, bool, int, bool, int, int, int, int, int, int
]


def _count_level(cfg: SupernetConfig, stage: int, io: tuple[int, int, int], hw: int, block: Block):
    """A level's ``_Level`` entry; ``io`` is ``cfg.level_io(stage, index)``."""
    cin, cout, stride = io
    (die, keep), (seg, hw2) = _level_peaks(cfg, stage, io, hw, block, False)
    (tdie, tkeep), (persistent, se, file) = _level_peaks(cfg, stage, io, hw, block, True)
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
        tdie,
        tkeep,
        _align(cout * hw2 * hw2),
        persistent,
        se,
        file,
    )


def _level_peaks(cfg: SupernetConfig, stage: int, io, hw: int, block: Block, tflm: bool):
    """((peak with the input dying at its last use, peak with it kept to the end), extra):
    extra is (counts, output size) by the MCUNet-style rule, or with ``tflm`` (TFLM's
    persistent bytes of the level's ops, its squeeze-excites, their TFLite file records)."""
    cin = io[0]
    live = _Live(tflm)
    x = live.input(cin * hw * hw)
    out, seg, hw2 = _level(live, x, cfg, stage, io, hw, block)
    live.keep(out)
    profile = live.profile()
    # a level of no nodes (BN and activation in place) holds its input while it runs
    die = max(profile, default=live.sizes[x])
    # with the input kept to the end of the level, it adds to every node after its last use
    keep = max([die, *(v + live.sizes[x] for v in profile[live.last[x] + 1 :])])
    return (die, keep), ((live.persistent, live.se, live.file) if tflm else (seg, hw2))


# columns of a _Level that _dense_peak reads: (peak input dying, peak input kept, output size,
# no nodes), MCUNet-style and TFLM-style (no level is node-free in the TFLite graph)
_MCUNET_COLS = (6, 7, 8, 12)
_TFLM_COLS = (13, 14, 15, -1)


def _dense_peak(levels: Sequence[_Level], in_size: int, cols=_MCUNET_COLS) -> int:
    """Peak of a stage with dense skips, from its levels' own peaks (docs/reference.md,
    "Peak memory of a dense stage").

    The stage runs as steps: a level (its nodes, with its input kept to the end of the level
    when a later step reads it again) or an add of two tensors. Block 1 reads the stage input,
    blocks 2 and 3 read o1 and o2, block 4 reads ``o3 + o1``; the stage output is o2 (D = 2),
    ``o3 + o1`` (D = 3) or ``(o4 + o1) + o2`` (D = 4). A buffer made before a step and read
    after it adds its size to every node of the step. A level of no nodes (a transformation
    branch alone on a same-shape level: BN and activation run in place) returns its input
    buffer itself, as the graph's in-place rule says, even when a later add reads that input.
    """
    d = len(levels)
    die, kept, zc, empty = cols
    z = levels[0][zc]
    if empty < 0 or not any(lv[empty] for lv in levels):  # all allocate their output
        if d == 3:
            return max(levels[0][die], levels[1][kept], z + levels[2][die], 3 * z)
        if d == 4:
            return max(
                levels[0][die], levels[1][kept], z + levels[2][kept], 4 * z, 2 * z + levels[3][die]
            )
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
        if lv[empty]:  # no nodes: the output is the input buffer
            outs.append(inp)
            continue
        last[inp] = len(steps)
        outs.append(new(lv[zc]))
        steps.append((inp, lv))
    out = outs[-1]
    if len(outs) >= 3:
        for o in outs[: len(outs) - 2]:
            out = add(out, o)
    last[out] = len(steps)
    best = 0
    for j, (inp, step) in enumerate(steps):
        if step is None:  # an add: every buffer alive at it
            live = sum(s for s, b, e in zip(size, born, last, strict=True) if b <= j <= e)
        else:
            waiting = sum(
                s
                for i, (s, b, e) in enumerate(zip(size, born, last, strict=True))
                if b < j < e and i != inp
            )
            live = waiting + (step[kept] if last[inp] > j else step[die])
        best = max(best, live)
    return best


def _code(block: Block) -> int:
    return block.branches << 8 | block.expand << 4 | block.kernel


class _Tables:
    """Per-config memo of level, stem, head and (dense) stage counts, width fixed.

    Keys are small ints: hashing the frozen dataclasses (Block, Arch) in Python costs more
    than counting a stage from its levels.
    """

    __slots__ = (
        "add_bytes",
        "add_file",
        "cfg",
        "heads",
        "in_sizes",
        "io",
        "levels",
        "stages",
        "stems",
    )

    def __init__(self, cfg: SupernetConfig) -> None:
        self.cfg = cfg
        self.levels: dict[int, _Level] = {}
        self.stems: dict[int, tuple[tuple[int, ...], int]] = {}
        self.add_bytes = _op_persistent("ADD", 0, 0)
        self.add_file = _op_file_bytes("ADD", 0, 0)
        self.heads: dict[tuple[int, int], tuple[int, ...]] = {}
        self.stages: dict[tuple[int, ...], tuple[int, ...]] = {}
        stages = range(len(STAGE_STRIDES))
        self.in_sizes = tuple(cfg.stage_in_channels(s) for s in stages)
        self.io = tuple(tuple(cfg.level_io(s, i) for i in range(LEVELS_PER_STAGE)) for s in stages)

    def stem(self, resolution: int) -> tuple[tuple[int, ...], int]:
        got = self.stems.get(resolution)
        if got is None:
            got = self.stems[resolution] = _stem(self.cfg, resolution)
        return got

    def head(self, stage: int, hw: int) -> tuple[int, ...]:
        got = self.heads.get((stage, hw))
        if got is None:
            got = self.heads[(stage, hw)] = _head(self.cfg, stage, hw)
        return got

    def stage(self, stage: int, slots: Sequence[Block | None], hw: int) -> tuple[int, ...]:
        """(params, macs, weights, biases, channels, loose_bn, peak, TFLM peak, TFLM
        persistent bytes, squeeze-excites, TFLite file records, output size) of a stage given
        its four level slots (skips as None) and its input size."""
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
        p = m = w = b = c = loose = peak = tpeak = persistent = se = file = 0
        for lv in levels:
            p += lv[0]
            m += lv[1]
            w += lv[2]
            b += lv[3]
            c += lv[4]
            loose += lv[5]
            if lv[6] > peak:
                peak = lv[6]
            if lv[13] > tpeak:
                tpeak = lv[13]
            persistent += lv[16]
            se += lv[17]
            file += lv[18]
        dense = self.cfg.dense_skips
        if levels[0][10] and levels[1][11] and (not dense or len(levels) == 2):
            loose -= levels[1][11]  # folded by the exporter into level 1's project conv
        if dense and len(levels) > 2:  # depth 2 runs as without dense skips
            stage_key = (stage, hw_in, *codes)
            got = self.stages.get(stage_key)
            if got is None:
                if len(self.stages) >= _MAX_STAGES:
                    self.stages.clear()
                in_size = self.in_sizes[stage] * hw_in * hw_in
                got = self.stages[stage_key] = (
                    _dense_peak(levels, in_size),
                    _dense_peak(levels, _align(in_size), _TFLM_COLS),
                )
            peak, tpeak = got
            adds = 1 if len(levels) == 3 else 3  # the dense adds
            persistent += adds * self.add_bytes
            file += adds * self.add_file
        return (p, m, w, b, c, loose, peak, tpeak, persistent, se, file, hw)


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


def _stem_graph(live: _Live, cfg: SupernetConfig, resolution: int) -> int:
    """Stem conv (hswish) and the fixed first block; with ``tflm``, REVERSE_V2 first."""
    c = cfg.stem_channels
    hw = conv_out(resolution, 3, cfg.stem_stride)
    size = c * hw * hw
    x = live.input(cfg.in_channels * resolution * resolution)
    x = live.tflm_op([x], cfg.in_channels * resolution * resolution, "REVERSE_V2", consts=1)
    h = live.act(live.conv(x, size, c), size, "hswish")
    d = live.op([h], size, "DEPTHWISE_CONV_2D", c, 2)  # first block: depthwise (ReLU)
    p = live.conv(d, size, c)  # pointwise
    out = live.op([p, h], size, "ADD")  # + identity
    live.keep(out)
    return hw


def _stem(cfg: SupernetConfig, resolution: int) -> tuple[tuple[int, ...], int]:
    """The stem's counts (as ``_counts``) and its output size; the graph's fixed parts
    (input tensor, the input/output tensors the application reads, the shared constant of
    every MEAN) are TFLM persistent bytes counted here."""
    live, tflm = _Live(), _Live(tflm=True)
    hw = _stem_graph(live, cfg, resolution)
    _stem_graph(tflm, cfg, resolution)
    c = cfg.stem_channels
    seg = (
        _conv(cfg.in_channels, c, 3, hw)
        + _conv(c, c, 3, hw, groups=c)
        + _conv(c, c, 1, hw)
        + _Seg(peak=live.peak())
    )
    fixed = TFLM_TENSOR_BYTES + TFLM_GRAPH_BYTES  # the graph input tensor, and the rest
    return (*seg, tflm.peak(), tflm.persistent + fixed, 0, tflm.file + TFLITE_GRAPH_BYTES), hw


def _head_graph(live: _Live, cfg: SupernetConfig, stage: int, hw: int) -> None:
    c = cfg.stage_channels[stage]
    expand, mix = cfg.exit_channels(stage)
    x = live.input(c * hw * hw)
    h = live.act(live.conv(x, expand * hw * hw, expand), expand * hw * hw, "hswish")
    h = live.op([h], expand, "MEAN")  # global pool
    h = live.act(live.conv(h, mix, mix), mix, "hswish")  # 1x1 mix conv (flatten in place)
    out = live.op([h], cfg.num_classes, "FULLY_CONNECTED", cfg.num_classes, 2)  # linear
    live.keep(out)


def _head(cfg: SupernetConfig, stage: int, hw: int) -> tuple[int, ...]:
    c = cfg.stage_channels[stage]
    expand, mix = cfg.exit_channels(stage)
    live, tflm = _Live(), _Live(tflm=True)
    _head_graph(live, cfg, stage, hw)
    _head_graph(tflm, cfg, stage, hw)
    seg = (
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
    return (*seg, tflm.peak(), tflm.persistent, 0, tflm.file)


def _counts(arch: Arch, config: SupernetConfig) -> tuple[int, ...]:
    """(params, macs, weights, biases, channels, loose_bn, peak elements, TFLM peak bytes at
    int8, TFLM persistent bytes, squeeze-excites, TFLite file records) of ``arch``."""
    t = _tables(config, arch.width)
    (p, m, w, b, c, loose, peak, tpeak, persistent, se, file), hw = t.stem(arch.resolution)
    levels = arch.levels
    stage = t.stage
    for s in range(arch.exit):
        sp, sm, sw, sb, sc, sl, spk, stp, spers, sse, sfile, hw = stage(
            s, levels[4 * s : 4 * s + 4], hw
        )
        p += sp
        m += sm
        w += sw
        b += sb
        c += sc
        loose += sl
        if spk > peak:
            peak = spk
        if stp > tpeak:
            tpeak = stp
        persistent += spers
        se += sse
        file += sfile
    hp, hm, hw_, hb, hc, hl, hpk, htp, hpers, _, hfile = t.head(arch.exit - 1, hw)
    return (
        p + hp,
        m + hm,
        w + hw_,
        b + hb,
        c + hc,
        loose + hl,
        max(peak, hpk),
        max(tpeak, htp),
        persistent + hpers,
        se,
        file + hfile,
    )


def deployed_flash_bytes(
    weights: int, biases: int, channels: int, float32_values: int, dtype: str
) -> int:
    """The flash rule (module docstring, *flash*), the one copy: conv/linear ``weights`` and
    ``biases`` after BatchNorm folding, their output ``channels`` (int8's per-channel scales),
    and per-channel values that stay float32 whatever the dtype (a loose BatchNorm's scale and
    shift). ``counters`` applies it to a module and to an ONNX graph."""
    if dtype == "int8":
        return weights + 4 * biases + 4 * channels + 4 * float32_values
    return DTYPE_BYTES[dtype] * (weights + biases) + 4 * float32_values


def _flash(weights: int, biases: int, channels: int, loose_bn: int, dtype: str) -> int:
    return deployed_flash_bytes(weights, biases, channels, 2 * loose_bn, dtype)


def flash_bytes(seg: _Seg, dtype: str) -> int:
    return _flash(seg.weights, seg.biases, seg.channels, seg.loose_bn, dtype)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")


def _cost(counts: Sequence[int], dtype: str) -> SubnetCost:
    p, m, w, b, c, loose, peak, tpeak, persistent, se, file = counts
    # the squeeze-excites' hard-sigmoid scalar is one tensor shared by the whole graph
    persistent += TFLM_TENSOR_BYTES if se else 0
    file += TFLITE_TENSOR_BYTES + TFLITE_QUANT_BYTES + 1 if se else 0  # its int8 scalar
    return SubnetCost(
        p,
        m,
        peak * DTYPE_BYTES[dtype],
        _flash(w, b, c, loose, dtype),
        dtype,
        tpeak * DTYPE_BYTES[dtype] + persistent,
        persistent,
        w + 4 * c + TFLITE_LOOSE_BN_BYTES * loose + file,
    )


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
        *stage_counts, hw = t.stage(s, arch.levels[4 * s : 4 * s + 4], hw)
        out[f"stage{s + 1}"] = _cost(stage_counts, dtype)
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
    The TFLM arena's two parts may be smallest on different candidates: its figure is the
    smallest activations plus the smallest persistent part (a lower bound either way).
    """
    base = space.minimal()
    kinds = [Block(1, 3, 3)] + ([Block(2, 3, 3), Block(4, 3, 3)] if space.parallel else [])
    exits = range(1, 6) if space.has_exits else (5,)
    best: dict[str, int] = {}
    parts: dict[str, int] = {}
    for kind in kinds:
        for x in exits:
            arch = space.decode(
                space.encode(Arch(base.resolution, base.width, x, (kind, kind, None, None) * 5))
            )
            cost = subnet_cost(arch, config, dtype)
            for key in ("params", "macs", "peak_sram_bytes", "flash_bytes", "tflite_bytes"):
                value: int = getattr(cost, key)
                best[key] = min(best.get(key, value), value)
            act = cost.tflm_arena_bytes - cost.tflm_persistent_bytes
            parts["act"] = min(parts.get("act", act), act)
            p = cost.tflm_persistent_bytes
            parts["persistent"] = min(parts.get("persistent", p), p)
    best["tflm_arena_bytes"] = parts["act"] + parts["persistent"]
    return best
