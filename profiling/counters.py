"""Counters on real artefacts: fvcore MACs of a module, and the costs of an ONNX graph.

These are the project's definitions; the analytical cost model (``profiling/cost.py``) must agree
with them exactly.

**MACs** -- multiply-accumulates of convolutions (depthwise included:
``out_elements * in_channels / groups * kh * kw``; transposed: ``in_elements * out_channels /
groups * kh * kw``) and of linear layers / matrix products (``in * out`` per sample), the 1x1
convolutions of squeeze-excite included. BatchNorm, activations, additions, multiplications,
pooling, resizing and bias additions are not MACs. Batch 1.

**params** -- ``sum(p.numel() for p in module.parameters())``: BatchNorm weight and bias count,
its running statistics are buffers and do not. In an ONNX graph, params are the elements of the
constant tensors that sit in the weight slots of Conv, ConvTranspose, Gemm, MatMul (and their
integer/QLinear forms), BatchNormalization (scale, bias; not mean/var), Instance/Layer/Group
normalisation, PRelu, and the constant added to a MatMul output (its bias; also after the
Cast/Mul rescale of a dynamically quantised ConvInteger/MatMulInteger). A constant reaches its
slot directly or through Identity, DequantizeLinear (input 0 only: scales and zero points are not
params), QuantizeLinear, Cast, Transpose, Reshape, Squeeze, Unsqueeze or Flatten, so QDQ int8
graphs count their int8 weights and int32 biases. A tensor used in two slots counts twice (once
per use): the legacy exporter stores identical tensors once (e.g. all-zero biases) and hands them
out through Identity nodes, while the module holds one parameter per layer. Int64 shape constants
are never in a weight slot and never count. (The dynamo exporter's optimiser drops all-zero
biases, so an untrained network exported with ``dynamo=True`` can show fewer params.)

**BatchNorm folding** -- an exported eval-mode network has each BatchNorm folded into the
convolution before it: the conv keeps its weight and gains a bias (if it had none), the BN's
weight and bias disappear. So ``params(ONNX) = params(module) - sum(C over BNs folded into a
bias-free conv)``. ``params_after_bn_folding`` applies the exporter's rule to a module's data
flow (``torch.fx``): a BatchNorm folds into the convolution whose output only it reads, and again
after a fold (Conv -> BN -> BN folds both).

**Flash bytes** at a dtype -- float32 (float16): 4 (2) bytes per weight and bias element of
each conv / linear / matmul after BN folding. int8: 1 byte per weight element + 4 bytes (int32)
per bias element + 4 bytes (float32 per-channel scale) per output channel of each conv / linear /
matmul. Every other param (a BatchNorm with no conv before it stays a per-channel scale and shift;
normalisations, PRelu) costs 4 bytes at every dtype. So float32 flash = 4 x params after
folding. The runtime's own code is not included (device profiles budget it separately).

**Peak activation memory** (both here and in the cost model; the rule is ``peak_live_bytes``):
walk the nodes in the graph's order. Each activation tensor lives from the node that produces it
(from the start, for the graph input) to its last consumer (a graph output lives to the end);
weights and constants are not activations. The ops in ``IN_PLACE_OPS`` (unary element-wise ops
and views) run in place: their output is the same buffer as their first input, and the buffer
lives until the last consumer of any alias. Every other node allocates its outputs. At each node,
live bytes = sum of the sizes of all buffers alive there (its inputs, its outputs, and every
buffer produced earlier and consumed later); the peak is the maximum over nodes (the same as
over allocating nodes only: an in-place node's live set is within the previous allocating
node's). The size of a
buffer is its element count at batch 1 times the bytes of the dtype (int8 1, float16 2,
float32 4), whatever the dtype stored in the file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import onnx
import torch
from onnx import TensorProto, helper, shape_inference
from torch import nn

from natv2.errors import Natv2Error
from natv2.profiling.cost import DTYPE_BYTES, deployed_flash_bytes
from natv2.untrusted import MAX_CHANNELS, MAX_RESOLUTION

__all__ = [
    "DTYPE_BYTES",
    "IN_PLACE_OPS",
    "GraphCosts",
    "MemOp",
    "NodeCost",
    "PeakMemory",
    "flash_bytes_of_module",
    "fvcore_macs",
    "image_input",
    "load_onnx",
    "module_params",
    "onnx_costs",
    "params_after_bn_folding",
    "peak_live_bytes",
]

#: ONNX ops whose output is the same buffer as their first input (unary element-wise ops, views).
IN_PLACE_OPS: frozenset[str] = frozenset(
    {
        "Relu",
        "HardSwish",
        "HardSigmoid",
        "Sigmoid",
        "Clip",
        "BatchNormalization",
        "Identity",
        "Dropout",
        "Flatten",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)

# Ops through which a constant reaches a weight slot unchanged in size (input 0 is the data).
_CONST_PASS_THROUGH = frozenset(
    {
        "Identity",
        "DequantizeLinear",
        "QuantizeLinear",
        "Cast",
        "Transpose",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
    }
)
# op -> (weight slots, bias slots, other-param slots); only constant inputs there count.
_PARAM_SLOTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "Conv": ((1,), (2,), ()),
    "ConvTranspose": ((1,), (2,), ()),
    "ConvInteger": ((1,), (), ()),
    "QLinearConv": ((3,), (8,), ()),
    "Gemm": ((0, 1), (2,), ()),
    "MatMul": ((0, 1), (), ()),
    "MatMulInteger": ((0, 1), (), ()),
    "QLinearMatMul": ((0, 3), (), ()),
    "BatchNormalization": ((), (), (1, 2)),
    "InstanceNormalization": ((), (), (1, 2)),
    "LayerNormalization": ((), (), (1, 2)),
    "GroupNormalization": ((), (), (1, 2)),
    "PRelu": ((), (), (1,)),
}
_MATMUL_OPS = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul"})
_NOT_PARAM_DTYPES = frozenset({TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING})

# fvcore handles that count MACs; every other default handle (norms, pooling, resizing) is not.
_FVCORE_NOT_MACS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


def _dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise Natv2Error(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


# --------------------------------------------------------------------------- peak memory rule


@dataclass(frozen=True)
class MemOp:
    """One step of a schedule for ``peak_live_bytes``: the activation tensors it reads and
    writes; ``in_place`` makes ``outputs[0]`` the same buffer as ``inputs[0]``."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    in_place: bool = False


@dataclass(frozen=True)
class PeakMemory:
    peak_bytes: int
    peak_index: int  # index of the op where the peak is reached (-1: no ops)
    live_bytes: tuple[int, ...]  # live bytes at each op


def peak_live_bytes(
    ops: Sequence[MemOp],
    nbytes: Mapping[str, int],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
) -> PeakMemory:
    """The project's peak-activation rule (module docstring) over a schedule of ops.

    ``nbytes`` gives the size of every activation tensor; an in-place output shares (and is
    sized by) the buffer of its input. Pure Python, so the analytical cost model can reuse it.
    """
    root: dict[str, str] = {}
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    for name in graph_inputs:
        root[name] = name
        start[name] = -1
        end[name] = -1
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name not in root:
                raise ValueError(f"op {op.name!r} reads {name!r} before anything produced it")
            end[root[name]] = max(end[root[name]], i)
        for k, name in enumerate(op.outputs):
            if op.in_place and k == 0 and op.inputs:
                root[name] = root[op.inputs[0]]
            else:
                root[name] = name
                start[name] = i
                end[name] = i
    for name in graph_outputs:
        if name in root:
            end[root[name]] = len(ops)
    sizes = {buf: int(nbytes[buf]) for buf in start}
    live = []
    for i in range(len(ops)):
        live.append(sum(sizes[b] for b in start if start[b] <= i <= end[b]))
    if not live:
        return PeakMemory(sum(sizes[n] for n in graph_inputs), -1, ())
    peak = max(live)
    return PeakMemory(peak, live.index(peak), tuple(live))


# --------------------------------------------------------------------------- modules


def module_params(module: nn.Module) -> int:
    """Parameters of the module (BatchNorm weight and bias included, running stats not)."""
    return sum(p.numel() for p in module.parameters())


def _leaf_layers(module: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """(conv/linear layer, the BatchNorms folded into it), in module order.

    The exporter's rule, on the module's data flow (``torch.fx``): a BatchNorm folds into the
    Conv whose output it reads when nothing else reads that output, and again into the same
    Conv after a fold (Conv -> BN -> BN, as an IRB alone followed by a transformation branch
    alone). A module that fx cannot trace falls back to module order: a BatchNorm right after
    a conv among the leaf modules, with matching channels.
    """
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    folds = _folds_by_data_flow(module)
    if folds is None:
        folds = _folds_by_module_order(module)
    return [(conv, folds.get(id(conv), [])) for conv in convs]


def _folds_by_data_flow(module: nn.Module) -> dict[int, list[nn.Module]] | None:
    """id(conv) -> the BatchNorms the exporter folds into it, or None when fx cannot trace."""
    from torch import fx

    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # data-dependent control flow, unsupported ops: use module order
        return None
    modules = dict(module.named_modules())
    root: dict[fx.Node, nn.Module] = {}  # node -> the conv its output is (after folds)
    folds: dict[int, list[nn.Module]] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        layer = modules[node.target]
        if isinstance(layer, nn.modules.conv._ConvNd):
            root[node] = layer
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm) and node.args:
            src = node.args[0]
            conv = root.get(src) if isinstance(src, fx.Node) else None
            if conv is not None and len(src.users) == 1 and layer.num_features == conv.out_channels:
                folds.setdefault(id(conv), []).append(layer)
                root[node] = conv
    return folds


def _folds_by_module_order(module: nn.Module) -> dict[int, list[nn.Module]]:
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    folds: dict[int, list[nn.Module]] = {}
    for leaf, nxt in zip(leaves, [*leaves[1:], None], strict=True):
        if (
            isinstance(leaf, nn.modules.conv._ConvNd)
            and isinstance(nxt, nn.modules.batchnorm._BatchNorm)
            and nxt.num_features == leaf.out_channels
        ):
            folds[id(leaf)] = [nxt]
    return folds


def _layer_parts(module: nn.Module) -> tuple[list[tuple[int, int, int]], int]:
    """Per conv/linear (weight elements, bias elements after folding, output channels), and the
    elements of every other parameter (unfolded BatchNorm, norms, ...)."""
    layers: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for layer, bns in _leaf_layers(module):
        shaped: Any = layer  # a conv (out_channels) or a linear layer (out_features)
        out_ch = int(
            shaped.out_channels if hasattr(shaped, "out_channels") else shaped.out_features
        )
        has_bias = layer.bias is not None or bool(bns)
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        layers.append((weight.numel(), out_ch if has_bias else 0, out_ch))
        seen.update(id(p) for p in layer.parameters())
        for bn in bns:
            seen.update(id(p) for p in bn.parameters())
    other = sum(p.numel() for p in module.parameters() if id(p) not in seen)
    return layers, other


def params_after_bn_folding(module: nn.Module) -> int:
    """Params of the module once every BatchNorm right after a conv is folded into it: what an
    eval-mode ONNX export of the module holds."""
    layers, other = _layer_parts(module)
    return sum(w + b for w, b, _ in layers) + other


def flash_bytes_of_module(module: nn.Module, dtype: str) -> int:
    """Bytes of weights the device stores for the module at ``dtype`` (module docstring)."""
    _dtype_bytes(dtype)
    layers, other = _layer_parts(module)
    weights = sum(w for w, _, _ in layers)
    biases = sum(b for _, b, _ in layers)
    channels = sum(c for _, _, c in layers)
    return deployed_flash_bytes(weights, biases, channels, other, dtype)


def fvcore_macs(module: nn.Module, input_shape: Sequence[int] = (1, 3, 64, 64)) -> int:
    """MACs of ``module`` on one input of ``input_shape`` ((N,)C,H,W; give N = 1), counted by
    fvcore's ``FlopCountAnalysis`` (one per MAC) restricted to the project's definition.

    fvcore 0.1.5: ``set_op_handle(name, None)`` does not remove a default handle (handles are
    looked up before the ignore list), so the analysis starts from ``clear_op_handles()``, gets
    back only the MAC handles, and names the non-MAC ops with ``None`` so they are ignored
    silently. Tracing (torch.jit.trace) works on torch 2.14.1; importing fvcore.nn triggers a
    FutureWarning (torch.jit.script deprecated), silenced here.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import (
            addmm_flop_jit,
            bmm_flop_jit,
            conv_flop_jit,
            einsum_flop_jit,
            linear_flop_jit,
            matmul_flop_jit,
        )

        first = next(module.parameters(), None)
        x = torch.zeros(
            shape,
            device=first.device if first is not None else "cpu",
            dtype=first.dtype if first is not None and first.is_floating_point() else None,
        )
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                analysis = (
                    FlopCountAnalysis(module, (x,))
                    .clear_op_handles()
                    .set_op_handle(
                        **{
                            "aten::addmm": addmm_flop_jit,
                            "aten::bmm": bmm_flop_jit,
                            "aten::_convolution": conv_flop_jit,
                            "aten::einsum": einsum_flop_jit,
                            "aten::matmul": matmul_flop_jit,
                            "aten::mm": matmul_flop_jit,
                            "aten::linear": linear_flop_jit,
                        }
                    )
                    .set_op_handle(**dict.fromkeys(_FVCORE_NOT_MACS))
                    .unsupported_ops_warnings(False)
                    .uncalled_modules_warnings(False)
                    .tracer_warnings("none")
                )
                total = analysis.total()
        finally:
            module.train(was_training)
    return int(total)


# --------------------------------------------------------------------------- ONNX


@dataclass(frozen=True)
class NodeCost:
    """One node's share: MACs, params, flash bytes, and live activation bytes while it runs
    (None for nodes that only compute constants)."""

    name: str
    op_type: str
    macs: int
    params: int
    flash_bytes: int
    output_shapes: tuple[tuple[int, ...], ...]
    live_bytes: int | None
    in_place: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "macs": self.macs,
            "params": self.params,
            "flash_bytes": self.flash_bytes,
            "output_shapes": [list(s) for s in self.output_shapes],
            "live_bytes": self.live_bytes,
            "in_place": self.in_place,
        }


@dataclass(frozen=True)
class GraphCosts:
    """What an ONNX graph costs at batch 1 and the given dtype (module docstring)."""

    params: int
    macs: int
    peak_sram_bytes: int
    flash_bytes: int
    dtype: str
    stored_dtype: str  # element type of most weight elements in the file, e.g. "float32"
    input_name: str
    input_shape: tuple[int, int, int, int]
    output_shape: tuple[int, ...]
    peak_node: str | None
    nodes: tuple[NodeCost, ...] = field(repr=False)

    def to_dict(self, *, nodes: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "params": self.params,
            "macs": self.macs,
            "peak_activation_bytes": self.peak_sram_bytes,
            "flash_bytes": self.flash_bytes,
            "dtype": self.dtype,
            "stored_dtype": self.stored_dtype,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "peak_node": self.peak_node,
        }
        if nodes:
            doc["nodes"] = [n.to_dict() for n in self.nodes]
        return doc


def load_onnx(model_or_path: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """Read and check an ONNX model; anything unreadable is a ``Natv2Error`` naming the file."""
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
        src = "the ONNX model"
    else:
        path = Path(model_or_path)
        src = str(path)
        if not path.is_file():
            raise Natv2Error(f"{path}: no such file; give the path of an ONNX model (.onnx)")
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise Natv2Error(
                f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}); give a file "
                "written by torch.onnx.export or another ONNX exporter"
            ) from exc
    if not model.graph.node or not model.opset_import:
        raise Natv2Error(
            f"{src}: not an ONNX model (no graph nodes or opset); give a file written by "
            "torch.onnx.export or another ONNX exporter"
        )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(f"{src}: invalid ONNX model: {first}") from exc
    return model


def _dims(vi: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _shape_text(dims: Sequence[Any] | None) -> str:
    if dims is None:
        return "unknown"
    return "x".join("?" if d is None else str(d) for d in dims)


def image_input(model: onnx.ModelProto, src: str = "the ONNX model") -> onnx.ValueInfoProto:
    """The graph's one input, which must be an N x C x H x W tensor."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise Natv2Error(
            f"{src}: the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "natv2 handles image classifiers with one N x C x H x W input"
        )
    dims = _dims(inputs[0])
    if dims is None or len(dims) != 4:
        raise Natv2Error(
            f"{src}: input '{inputs[0].name}' has shape {_shape_text(dims)}; natv2 needs an "
            "image input N x C x H x W (4-D). Export the classifier with a 4-D image input"
        )
    bounds = ((1, "channels", MAX_CHANNELS), (2, "height", MAX_RESOLUTION))
    for axis, label, most in (*bounds, (3, "width", MAX_RESOLUTION)):
        d = dims[axis]  # a fixed size is refused here, before anything is allocated for it
        if isinstance(d, int) and not 1 <= d <= most:
            raise Natv2Error(
                f"{src}: input '{inputs[0].name}' has shape {_shape_text(dims)}: {label} {d} "
                f"is outside 1..{most}; natv2 handles image classifiers up to "
                f"{MAX_RESOLUTION} x {MAX_RESOLUTION} px and {MAX_CHANNELS} channels"
            )
    return inputs[0]


def _resolve_input_shape(
    model: onnx.ModelProto, input_shape: Sequence[int] | None, src: str
) -> tuple[str, tuple[int, int, int, int]]:
    vi = image_input(model, src)
    dims = _dims(vi)
    assert dims is not None
    if input_shape is not None:
        if len(input_shape) != 4 or any(int(d) <= 0 for d in input_shape):
            raise Natv2Error(f"input shape {tuple(input_shape)} must be 4 positive ints N,C,H,W")
        given = tuple(int(d) for d in input_shape)
    else:
        given = None
    batch = dims[0]
    if isinstance(batch, int) and batch != 1:
        raise Natv2Error(
            f"{src}: input '{vi.name}' has a fixed batch of {batch}; costs are per sample: "
            "export with batch 1 or a dynamic batch axis"
        )
    out = [1]
    for axis, label in ((1, "channel count"), (2, "height"), (3, "width")):
        d = dims[axis]
        if isinstance(d, int):
            if given is not None and given[axis] != d:
                raise Natv2Error(
                    f"{src}: input '{vi.name}' has a fixed {label} of {d} but "
                    f"{given[axis]} was asked for; use {d} (the model's input is "
                    f"{_shape_text(dims)})"
                )
            out.append(d)
        elif given is not None:
            out.append(given[axis])
        else:
            raise Natv2Error(
                f"{src}: input '{vi.name}' has a dynamic {label} ({_shape_text(dims)}); give "
                "the input shape (e.g. --resolution 64 on the command line)"
            )
    return vi.name, (out[0], out[1], out[2], out[3])


def _inferred(model: onnx.ModelProto, name: str, shape: tuple[int, ...], src: str):
    """A copy of the model with the input fixed to ``shape`` and every shape inferred."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims, shape, strict=True):
                d.Clear()
                d.dim_value = v
    del m.graph.value_info[:]
    for vo in m.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    try:
        return shape_inference.infer_shapes(m, check_type=False, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(
            f"{src}: ONNX shape inference failed for input {_shape_text(shape)}: {first}; "
            "check that the input shape suits the model"
        ) from exc


def _tensor_of_constant(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
    return None


def _feeds_from_matmul(
    name: str, producer: Mapping[str, onnx.NodeProto], const: AbstractSet[str]
) -> bool:
    """Whether activation ``name`` comes from a matmul-like op through at most a Cast and a Mul
    by a constant (the rescale of an integer matmul)."""
    for _ in range(3):
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type in _MATMUL_OPS or node.op_type == "ConvInteger":
            return True
        if node.op_type not in ("Cast", "Mul"):
            return False
        # the data is the first activation input (dynamic quantisation's scales are activations)
        acts = [i for i in node.input if i and i not in const]
        if not acts:
            return False
        name = acts[0]
    return False


@dataclass(frozen=True)
class _Graph:
    """A shape-inferred ONNX graph and what every counting step reads of it: tensor shapes,
    which tensors are constants (and the nodes that only compute them), who produces what."""

    src: str
    model: onnx.ModelProto
    input_name: str
    input_shape: tuple[int, int, int, int]
    shapes: dict[str, tuple[int | str | None, ...] | None]
    initializers: dict[str, TensorProto]
    producer: dict[str, onnx.NodeProto]
    const: frozenset[str]
    const_nodes: frozenset[int]

    def known(self, name: str, node: onnx.NodeProto) -> tuple[int, ...]:
        """The static shape of tensor ``name``; a shape inference could not fix is an error
        naming the node, since every count below needs it."""
        dims = self.shapes.get(name)
        if dims is None or any(not isinstance(d, int) for d in dims):
            domain = f", domain {node.domain}" if node.domain not in ("", "ai.onnx") else ""
            raise Natv2Error(
                f"{self.src}: cannot infer the shape of tensor '{name}' ({_shape_text(dims)}) "
                f"at node '{node.name or node.op_type}' ({node.op_type}{domain}); natv2 counts "
                "standard ONNX ops (QDQ format for int8 models, not com.microsoft QOperator ops)"
            )
        return tuple(int(d) for d in dims)  # type: ignore[arg-type]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def source(self, name: str) -> TensorProto | None:
        """The stored tensor a constant comes from, through pass-through ops (so a QDQ graph's
        int8 weight counts where its DequantizeLinear output is used)."""
        for _ in range(64):
            if name in self.initializers:
                return self.initializers[name]
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                return _tensor_of_constant(node)
            if node.op_type not in _CONST_PASS_THROUGH or not node.input:
                return None
            name = node.input[0]
        return None


def _load_graph(
    model_or_path: onnx.ModelProto | str | Path, input_shape: Sequence[int] | None
) -> _Graph:
    """Read and check the model, fix its input to batch 1 (and ``input_shape``'s C/H/W), infer
    every shape and index its constants: the one pass the counting steps share."""
    src = "the ONNX model" if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    model = load_onnx(model_or_path)
    input_name, shape = _resolve_input_shape(model, input_shape, src)
    model = _inferred(model, input_name, shape, src)
    graph = model.graph

    shapes: dict[str, tuple[int | str | None, ...] | None] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        shapes[vi.name] = _dims(vi)
    initializers = {t.name: t for t in graph.initializer}
    for t in graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)

    producer: dict[str, onnx.NodeProto] = {}
    const: set[str] = set(initializers)
    const_nodes: set[int] = set()
    for idx, node in enumerate(graph.node):
        real_inputs = [i for i in node.input if i]
        if node.op_type in ("Constant", "Shape", "Size") or (
            all(i in const for i in real_inputs) and node.domain in ("", "ai.onnx")
        ):
            const.update(o for o in node.output if o)
            const_nodes.add(idx)
        for o in node.output:
            if o:
                producer[o] = node
    return _Graph(
        src=src,
        model=model,
        input_name=input_name,
        input_shape=shape,
        shapes=shapes,
        initializers=initializers,
        producer=producer,
        const=frozenset(const),
        const_nodes=frozenset(const_nodes),
    )


class _NodeParams(NamedTuple):
    """One node's params by kind (flash prices them differently) and the stored tensors they
    come from (the file's stored dtype is the one most weight elements have)."""

    weights: int = 0
    biases: int = 0
    other: int = 0
    tensors: tuple[TensorProto, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.biases + self.other


def _slot_tensors(g: _Graph, node: onnx.NodeProto, slots: tuple[int, ...]) -> list[TensorProto]:
    """The stored constants in ``node``'s input ``slots`` that are params (not int64 shapes)."""
    out = []
    for s in slots:
        if s < len(node.input) and node.input[s] and node.input[s] in g.const:
            t = g.source(node.input[s])
            if t is not None and t.data_type not in _NOT_PARAM_DTYPES:
                out.append(t)
    return out


def _elements(tensors: Sequence[TensorProto]) -> int:
    return sum(math.prod(int(d) for d in t.dims) for t in tensors)


def _node_params(g: _Graph, node: onnx.NodeProto) -> _NodeParams:
    """Params of one node: the constants in its op's weight slots (``_PARAM_SLOTS``), or the
    constant added to a matmul's output (its bias; module docstring, *params*)."""
    op = node.op_type
    if op in _PARAM_SLOTS:
        w, b, o = (_slot_tensors(g, node, slots) for slots in _PARAM_SLOTS[op])
        return _NodeParams(_elements(w), _elements(b), _elements(o), (*w, *b, *o))
    if op == "Add" and len(node.input) == 2:
        # the bias of a MatMul (Linear exported as MatMul + Add), or of a dynamically
        # quantised ConvInteger / MatMulInteger (rescaled by Cast and Mul before the Add)
        a, b = node.input
        for act, cst in ((a, b), (b, a)):
            if cst in g.const and act not in g.const:
                if _feeds_from_matmul(act, g.producer, g.const):
                    bias = _slot_tensors(g, node, (list(node.input).index(cst),))
                    return _NodeParams(biases=_elements(bias), tensors=tuple(bias))
                break
    return _NodeParams()


def _node_macs(g: _Graph, node: onnx.NodeProto) -> tuple[int, int]:
    """(MACs, output channels) of one conv / transposed conv / Gemm / matmul node, else (0, 0):
    the channels are what int8 stores a per-channel scale for."""
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = node.input[3 if op == "QLinearConv" else 1]
        out = g.known(node.output[0], node)
        return math.prod(out) * math.prod(g.known(w, node)[1:]), out[1]
    if op == "ConvTranspose":
        out = g.known(node.output[0], node)
        x, w = g.known(node.input[0], node), g.known(node.input[1], node)
        return math.prod(x) * math.prod(w[1:]), out[1]
    if op == "Gemm":
        a = g.known(node.input[0], node)
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        out = g.known(node.output[0], node)
        return math.prod(out) * (a[0] if trans_a else a[-1]), out[-1]
    if op in _MATMUL_OPS:
        a = g.known(node.input[0], node)
        out = g.known(node.output[0], node)
        return math.prod(out) * a[-1], out[-1] if out else 1
    return 0, 0


def _node_flash(params: _NodeParams, out_channels: int, dtype: str) -> int:
    """Flash bytes of one node by the one flash rule (``cost.deployed_flash_bytes``): int8's
    per-channel scales belong to a node with weights."""
    channels = out_channels if params.weights else 0
    return deployed_flash_bytes(params.weights, params.biases, channels, params.other, dtype)


@dataclass(frozen=True)
class _Schedule:
    """The graph's activation nodes as ``peak_live_bytes`` steps, and the peak over them."""

    ops: tuple[MemOp, ...]
    op_index: dict[int, int]  # graph node index -> index in ``ops``
    peak: PeakMemory

    def live_bytes(self, idx: int) -> int | None:
        k = self.op_index.get(idx)
        return self.peak.live_bytes[k] if k is not None else None

    def in_place(self, idx: int) -> bool:
        k = self.op_index.get(idx)
        return self.ops[k].in_place if k is not None else False

    @property
    def peak_node(self) -> str | None:
        return self.ops[self.peak.peak_index].name if self.peak.peak_index >= 0 else None


def _peak_memory(g: _Graph, size: int) -> _Schedule:
    """Peak activation memory: every non-constant node in graph order, sized at ``size`` bytes
    per element whatever the file stores (module docstring, *peak activation memory*)."""
    graph = g.graph
    activations = {g.input_name}
    ops: list[MemOp] = []
    op_index: dict[int, int] = {}
    for idx, node in enumerate(graph.node):
        if idx in g.const_nodes:
            continue
        act_in = tuple(i for i in node.input if i and i not in g.const)
        outs = tuple(o for o in node.output if o)
        in_place = bool(act_in) and node.op_type in IN_PLACE_OPS and act_in[0] == node.input[0]
        op_index[idx] = len(ops)
        ops.append(MemOp(node.name or f"{node.op_type}_{idx}", act_in, outs, in_place))
        activations.update(outs)
    nbytes: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        if idx in op_index:
            for o in node.output:
                if o:
                    nbytes[o] = math.prod(g.known(o, node)) * size
    nbytes[g.input_name] = math.prod(g.input_shape) * size
    outputs = [o.name for o in graph.output if o.name in activations]
    peak = peak_live_bytes(ops, nbytes, [g.input_name], outputs)
    return _Schedule(tuple(ops), op_index, peak)


def _static_shapes(g: _Graph, node: onnx.NodeProto) -> tuple[tuple[int, ...], ...]:
    """The node's output shapes that inference fixed (others are left out of the breakdown)."""
    out = []
    for o in node.output:
        dims = g.shapes.get(o) if o else None
        if dims is not None and all(isinstance(d, int) for d in dims):
            out.append(tuple(int(d) for d in dims))  # type: ignore[arg-type]
    return tuple(out)


def _stored_dtype(params: Iterable[_NodeParams]) -> str:
    """The element type most param elements are stored as ("float32" when there are none)."""
    stored: dict[int, int] = {}
    for p in params:
        for t in p.tensors:
            stored[t.data_type] = stored.get(t.data_type, 0) + math.prod(int(d) for d in t.dims)
    stored_type = max(stored, key=stored.__getitem__) if stored else TensorProto.FLOAT
    return helper.tensor_dtype_to_np_dtype(stored_type).name


def onnx_costs(
    model_or_path: onnx.ModelProto | str | Path,
    *,
    dtype: str = "float32",
    input_shape: Sequence[int] | None = None,
) -> GraphCosts:
    """Params, MACs, peak activation bytes and flash bytes of an ONNX graph, with a per-node
    breakdown (definitions in the module docstring).

    Batch is fixed to 1; a dynamic C/H/W is taken from ``input_shape`` (N,C,H,W), which must
    then be given.
    """
    size = _dtype_bytes(dtype)
    g = _load_graph(model_or_path, input_shape)
    graph = g.graph
    params: list[_NodeParams] = []
    macs: list[tuple[int, int]] = []
    for idx, node in enumerate(graph.node):
        constant = idx in g.const_nodes
        params.append(_NodeParams() if constant else _node_params(g, node))
        macs.append((0, 0) if constant else _node_macs(g, node))
    schedule = _peak_memory(g, size)
    nodes = tuple(
        NodeCost(
            name=node.name or f"{node.op_type}_{idx}",
            op_type=node.op_type,
            macs=int(macs[idx][0]),
            params=int(params[idx].total),
            flash_bytes=int(_node_flash(params[idx], macs[idx][1], dtype)),
            output_shapes=_static_shapes(g, node),
            live_bytes=schedule.live_bytes(idx),
            in_place=schedule.in_place(idx),
        )
        for idx, node in enumerate(graph.node)
    )
    out_dims = g.shapes.get(graph.output[0].name) if graph.output else None
    return GraphCosts(
        params=sum(n.params for n in nodes),
        macs=sum(n.macs for n in nodes),
        peak_sram_bytes=schedule.peak.peak_bytes,
        flash_bytes=sum(n.flash_bytes for n in nodes),
        dtype=dtype,
        stored_dtype=_stored_dtype(params),
        input_name=g.input_name,
        input_shape=g.input_shape,
        output_shape=tuple(d if isinstance(d, int) else -1 for d in (out_dims or ())),
        peak_node=schedule.peak_node,
        nodes=nodes,
    )
