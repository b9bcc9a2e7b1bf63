"""int8 TFLite: the plain module converted by litert-torch, quantized by ai-edge-quantizer.

Why this route (docs/reference.md, "Deploying to microcontrollers"): litert-torch converts the plain
``nn.Module`` to a float32 TFLite graph with an NHWC input; ai-edge-quantizer's static recipe
(``static_wi8_ai8``) then gives int8 weights (per channel, symmetric), int8 activations
(per tensor, asymmetric, min/max over all calibration images, as onnxruntime's MinMax for the
ONNX int8 file), int32 biases, and int8 graph
input and output whose scale and zero point are recorded in the file (and in report.json):
no float tensor is left, so TensorFlow Lite Micro runs it with its int8 kernels only.

**No explicit PAD ops.** PyTorch pads a stride-2 convolution of an even-sized map
symmetrically, which uses one more row/column on the top/left than on the bottom/right;
TFLite's SAME padding is the mirror image (more on the bottom/right), so the converter emits a
PAD op and a VALID convolution, and the padded copy raises peak memory. The converted module
is therefore the mirrored network, which is exactly equivalent: the input is rotated by 180
degrees (one REVERSE_V2 op on the int8 input, in the graph, so the file takes the same image
as the ONNX file), every KxK kernel is rotated by 180 degrees, and every convolution and
max-pool uses TFLite's SAME padding (PyTorch's symmetric padding mirrored). Every later
operation is element-wise or a global pool, which the rotation does not change, so the logits
are those of the module (checked on every export: :attr:`TfliteExport.float_max_abs_diff`).
The REVERSE_V2 is added to the int8 graph after quantization (:func:`prepend_reverse`).
A strided 1x1 convolution (the pointwise branch of a stride-2 level) samples the even rows
and columns, which are the odd ones of the mirrored map: it becomes a 2x2 stride-2 convolution
whose only non-zero tap is the bottom-right one. The costs: REVERSE_V2 holds a second copy of
the input (its int8 size) while it runs, and each such strided pointwise convolution stores and
computes 4x its weights (zeros) in the file; :attr:`TfliteGraph.macs` counts what the file
computes, so it exceeds the module's MACs by that much.

ai-edge-quantizer writes weights of 256 KiB or more as offset buffers, which TFLM does not
read; :func:`inline_buffers` moves them back into the flatbuffer.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natv2.errors import Natv2Error
from natv2.export.quantize import MIN_ACTIVATION_RANGE

__all__ = [
    "INSTALL_HINT",
    "TFLITE_FILE",
    "TfliteExport",
    "TfliteGraph",
    "convert_int8",
    "inline_buffers",
    "mirrored_module",
    "prepend_reverse",
    "read_tflite",
    "require_tflite",
    "tflite_available",
    "widen_degenerate_ranges",
]

TFLITE_FILE = "model.int8.tflite"

ModuleT = TypeVar("ModuleT", bound=nn.Module)
INSTALL_HINT = 'pip install "natv2[tflite]"'


def tflite_available() -> bool:
    """Whether the optional ``tflite`` extra (converter, quantizer, TFLM) is installed."""
    import importlib.util

    names = ("litert_torch", "ai_edge_quantizer", "tflite_micro")
    try:
        return all(importlib.util.find_spec(n) is not None for n in names)
    except (ImportError, ValueError):
        return False


def require_tflite(what: str = "TFLite export") -> None:
    """Fail with one clear line when the extra is missing."""
    if not tflite_available():
        raise Natv2Error(f"{what} needs the optional tflite extra: {INSTALL_HINT}")


# ----------------------------------------------------------------------------- the layout


def _same_pads(size: tuple[int, int], kernel: tuple[int, ...], stride: tuple[int, ...]):
    """TFLite SAME padding of an ``size`` input as F.pad's (left, right, top, bottom)."""
    out = []
    for n, k, s in zip(size, kernel, stride, strict=True):
        o = -(-n // s)
        total = max((o - 1) * s + k - n, 0)
        out.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = out
    return (left, right, top, bottom)


class _SameConv(nn.Module):
    """A convolution with TFLite's SAME padding, written so litert-torch folds the pad."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pads) if any(self.pads) else x)


def _strided_pointwise(conv: nn.Conv2d, size: tuple[int, int]) -> nn.Conv2d:
    """A strided 1x1 convolution of the mirrored network: PyTorch samples rows and columns
    0, 2, ..., which on an even-sized mirrored map are the odd ones; a 2x2 kernel (stride 2,
    no padding) whose only non-zero tap is the bottom-right one samples exactly those. An
    odd-sized axis keeps its 1-wide kernel (0, 2, ..., n - 1 is its own mirror image)."""
    pairs = zip(size, conv.stride, strict=True)
    kernel_h, kernel_w = (2 if n % 2 == 0 and s == 2 else 1 for n, s in pairs)
    if any(s not in (1, 2) for s in conv.stride):
        raise Natv2Error("TFLite export: a 1x1 convolution with a stride other than 1 or 2")
    stride_h, stride_w = conv.stride
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (kernel_h, kernel_w),
        (stride_h, stride_w),
        0,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :, kernel_h - 1, kernel_w - 1] = conv.weight[:, :, 0, 0]
        if conv.bias is not None and new.bias is not None:  # both or neither
            new.bias.copy_(conv.bias)
    return new


class _NHWCInput(nn.Module):
    """What is converted: the mirrored module on an NHWC input that is already rotated (the
    rotation is added to the int8 graph afterwards: :func:`prepend_reverse`)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 3, 1, 2))


def mirrored_module(module: ModuleT, resolution: int) -> ModuleT:
    """The mirrored copy of ``module`` (module docstring): ``mirrored(x.flip([2, 3]))`` equals
    ``module(x)``, and every convolution and max-pool has TFLite SAME padding. Raises when
    the module holds a spatial layer this rule does not cover (then the converter would emit
    PAD ops or wrong padding)."""
    m = copy.deepcopy(module).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        mod.register_forward_hook(
            lambda _m, inp, _o, n=name: sizes.__setitem__(n, tuple(inp[0].shape[-2:]))
        )
        for name, mod in m.named_modules()
        if isinstance(mod, nn.Conv2d | nn.MaxPool2d)
    ]
    try:
        with torch.no_grad():
            m(torch.zeros(1, 3, resolution, resolution))
    finally:
        for hook in hooks:
            hook.remove()
    for name, mod in list(m.named_modules()):
        if name not in sizes:
            if isinstance(mod, nn.AvgPool2d | nn.Upsample):
                raise Natv2Error(f"TFLite export: {type(mod).__name__} is not supported")
            continue
        parent, _, leaf = name.rpartition(".")
        holder = m.get_submodule(parent) if parent else m
        if isinstance(mod, nn.Conv2d):
            if mod.dilation != (1, 1) or mod.padding_mode != "zeros":
                raise Natv2Error("TFLite export: dilated or non-zero-padded convolutions")
            kernel = mod.kernel_size
            if tuple(mod.padding) != (kernel[0] // 2, kernel[1] // 2):
                raise Natv2Error("TFLite export: a convolution without 'same' padding")
            if any(st not in (1, 2) for st in mod.stride):
                raise Natv2Error("TFLite export: a convolution with a stride other than 1 or 2")
            if kernel == (1, 1):
                if mod.stride != (1, 1):
                    setattr(holder, leaf, _strided_pointwise(mod, sizes[name]))
                continue
            with torch.no_grad():
                mod.weight.copy_(mod.weight.flip([2, 3]))
            pads = _same_pads(sizes[name], kernel, mod.stride)
            mod.padding = (0, 0)
            setattr(holder, leaf, _SameConv(mod, pads))
        elif isinstance(mod, nn.MaxPool2d):
            k, s, p = mod.kernel_size, mod.stride, mod.padding
            if not (isinstance(k, int) and isinstance(s, int) and isinstance(p, int)):
                raise Natv2Error("TFLite export: a non-square max-pool")
            if k % 2 == 0 or p != k // 2 or mod.ceil_mode or mod.dilation != 1:
                raise Natv2Error("TFLite export: a max-pool without 'same' padding")
            h, w = sizes[name]
            if h % 2 != w % 2:
                raise Natv2Error("TFLite export: a non-square feature map at a max-pool")
            # even input: SAME pads only the bottom/right, which is what ceil_mode adds; odd
            # input: SAME is PyTorch's symmetric padding.
            if s not in (1, 2):
                raise Natv2Error("TFLite export: a max-pool with a stride other than 1 or 2")
            if h % 2 == 0 and s == 2 and k != 3:  # SAME pads (k - 3) / 2 on top there
                raise Natv2Error("TFLite export: a strided max-pool other than 3x3")
            new = nn.MaxPool2d(k, s, 0, ceil_mode=True) if h % 2 == 0 and s == 2 else mod
            setattr(holder, leaf, new)
    return m


# ----------------------------------------------------------------------------- flatbuffers


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def _model_object(data: bytes):
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))


def _pack(model_t) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def inline_buffers(data: bytes) -> bytes:
    """``data`` with every offset buffer (data after the flatbuffer) moved inline."""
    model = _model_object(data)
    if not any(b.offset for b in model.buffers or []):
        return data
    for b in model.buffers:
        if b.offset:
            b.data = np.frombuffer(data, np.uint8, int(b.size), int(b.offset)).copy()
            b.offset = 0
            b.size = 0
    return _pack(model)


def prepend_reverse(data: bytes) -> bytes:
    """``data`` with a REVERSE_V2 over H and W in front of its input (the file then takes
    the upright image) and short tensor names. Added after quantization because
    ai-edge-quantizer leaves REVERSE_V2 in float (with DEQUANTIZE/QUANTIZE around it); a
    reversal only moves int8 values, so the new input tensor has the old input's type, shape
    and quantization."""
    schema = _schema()
    model = _model_object(data)
    g = model.subgraphs[0]
    old_in = g.inputs[0]
    src = g.tensors[old_in]
    code = schema.BuiltinOperator.REVERSE_V2
    idx = next(
        (
            i
            for i, c in enumerate(model.operatorCodes)
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code
        ),
        None,
    )
    if idx is None:
        oc = schema.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        model.operatorCodes.append(oc)
        idx = len(model.operatorCodes) - 1
    axis_buf = schema.BufferT()
    axis_buf.data = np.frombuffer(np.array([1, 2], "<i4").tobytes(), np.uint8).copy()
    model.buffers.append(axis_buf)
    axis = schema.TensorT()
    axis.shape = np.array([2], np.int32)
    axis.type = schema.TensorType.INT32
    axis.buffer = len(model.buffers) - 1
    axis.name = b"reverse_axes"
    new_in = copy.deepcopy(src)
    new_in.name = b"input"
    empty = schema.BufferT()
    model.buffers.append(empty)
    new_in.buffer = len(model.buffers) - 1
    g.tensors.extend([axis, new_in])
    axis_i, in_i = len(g.tensors) - 2, len(g.tensors) - 1
    op = schema.OperatorT()
    op.opcodeIndex = idx
    op.inputs = np.array([in_i, axis_i], np.int32)
    op.outputs = np.array([old_in], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.ReverseV2Options
    op.builtinOptions = schema.ReverseV2OptionsT()
    g.operators.insert(0, op)
    g.inputs = np.array([in_i], np.int32)
    for sig in model.signatureDefs or []:
        for t in sig.inputs or []:
            if t.tensorIndex == old_in:
                t.tensorIndex = in_i
    # the converter names every tensor by its module scope (hundreds of bytes each, a fifth
    # of a tiny model's file, i.e. flash): short ids, the graph input and output keep theirs
    keep = {in_i, *(int(i) for i in g.outputs)}
    for i, t in enumerate(g.tensors):
        if i not in keep:
            t.name = f"t{i}".encode()
    return _pack(model)


def _names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorQuant:
    """Type, shape and quantization of a graph input or output."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float | None
    zero_point: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class TfliteGraph:
    """What the flatbuffer says: ops, tensor types, counts (why: the file is the truth)."""

    ops: dict[str, int]
    tensor_dtypes: dict[str, int]  # all tensors, constants included
    activation_dtypes: dict[str, int]  # non-constant tensors (what the arena holds)
    float_tensors: tuple[str, ...]
    input: TensorQuant
    output: TensorQuant
    params: int  # elements of conv / depthwise / fully-connected weights and biases
    macs: int  # conv + depthwise + fully-connected, the paper's convention
    constant_bytes: int  # bytes of all constant buffers
    channels: int  # output channels of conv / depthwise / fully-connected ops
    offset_buffers: int
    weight_quantization: tuple[str, ...]  # per weight: "per-channel symmetric" etc.

    def problems(self) -> list[str]:
        """Why TFLM (natv2's microcontroller runtime) could not run the file as intended;
        empty when it can: no offset buffers (TFLM reads buffers inline), fully int8, no PAD."""
        problems = []
        if self.offset_buffers:
            problems.append(f"{self.offset_buffers} offset buffers")
        if not self.fully_int8:
            problems.append(
                f"not fully int8 (activations {self.activation_dtypes}, "
                f"{len(self.float_tensors)} float tensors)"
            )
        if "PAD" in self.ops or "PADV2" in self.ops:
            problems.append("explicit PAD ops")
        return problems

    @property
    def deployed_bytes(self) -> int:
        """Flash of the constants as a code-generating runtime (TinyEngine) stores them: the
        file's constant buffers plus a float32 scale per output channel of every conv and
        linear. Close to the cost model's int8 flash, not equal: a strided 1x1 conv of the
        mirrored graph is a 2x2 kernel here (zero taps), a loose BatchNorm is four int8
        constants per channel (the cost model counts two float32), and the file holds a few
        small shared constants (axes, the hard-sigmoid scalar)."""
        return self.constant_bytes + 4 * self.channels

    @property
    def fully_int8(self) -> bool:
        acts = set(self.activation_dtypes)
        return not self.float_tensors and acts <= {"INT8"} and self.input.dtype == "INT8"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "tensor_dtypes": self.tensor_dtypes,
            "activation_dtypes": self.activation_dtypes,
            "float_tensors": list(self.float_tensors),
            "fully_int8": self.fully_int8,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "params": self.params,
            "macs": self.macs,
            "constant_bytes": self.constant_bytes,
            "deployed_bytes": self.deployed_bytes,
            "offset_buffers": self.offset_buffers,
            "weights": dict(Counter(self.weight_quantization)),
        }


@functools.cache
def _name_tables() -> tuple[dict[int, str], dict[int, str]]:
    schema = _schema()
    return _names(schema.BuiltinOperator), _names(schema.TensorType)


def read_tflite(data: bytes, where: str = "the TFLite model") -> TfliteGraph:
    """Parse a .tflite flatbuffer (one subgraph, one image input, one output); a file whose
    structure does not hold together is one clear error, not a traceback."""
    try:
        return _read_graph(data, where)
    except Natv2Error:
        raise
    except (TypeError, IndexError, AttributeError, ValueError, KeyError) as exc:
        raise Natv2Error(
            f"{where}: malformed TFLite model ({type(exc).__name__}: {str(exc)[:200]}); "
            "export it again with `natv2 export`"
        ) from None


def _read_graph(data: bytes, where: str) -> TfliteGraph:
    ops_n, types_n = _name_tables()
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        model = _model_object(data)
    except Exception as exc:
        raise Natv2Error(f"{where} is not a TFLite flatbuffer ({exc})") from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise Natv2Error(f"{where}: expected one subgraph")
    g = model.subgraphs[0]
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise Natv2Error(f"{where}: expected one input and one output tensor")
    buffers = model.buffers or []

    def const(i: int) -> bool:
        t = g.tensors[i]
        b = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
        return b is not None and ((b.data is not None and len(b.data) > 0) or bool(b.offset))

    def quant(i: int) -> TensorQuant:
        t = g.tensors[i]
        q = t.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None else None
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None else None
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        shape = tuple(int(v) for v in t.shape)
        return TensorQuant(name, types_n.get(t.type, str(t.type)), shape, scale, zp)

    ops: Counter[str] = Counter()
    params = macs = channels = 0
    weights: list[str] = []
    for op in g.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        name = ops_n.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ops[name] += 1
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        ins = [i for i in op.inputs if i >= 0]
        w = g.tensors[ins[1]]
        wshape = [int(v) for v in w.shape]
        out = [int(v) for v in g.tensors[op.outputs[0]].shape]
        channels += out[-1]
        params += int(np.prod(wshape)) + sum(int(np.prod(g.tensors[i].shape)) for i in ins[2:])
        if name == "CONV_2D":  # weights O x KH x KW x I/groups
            macs += int(np.prod(out)) * wshape[1] * wshape[2] * wshape[3]
        elif name == "DEPTHWISE_CONV_2D":  # weights 1 x KH x KW x O
            macs += int(np.prod(out)) * wshape[1] * wshape[2]
        else:
            macs += int(np.prod(out)) * wshape[-1]
        q = w.quantization
        n_scales = 0 if q is None or q.scale is None else len(q.scale)
        symmetric = q is not None and q.zeroPoint is not None and not np.any(q.zeroPoint)
        kind = "per-channel" if n_scales > 1 else "per-tensor" if n_scales == 1 else "float"
        weights.append(f"{types_n.get(w.type, '?')} {kind}{' symmetric' if symmetric else ''}")
    tensor_types = Counter(types_n.get(t.type, str(t.type)) for t in g.tensors)
    act_types = Counter(
        types_n.get(g.tensors[i].type, "?") for i in range(len(g.tensors)) if not const(i)
    )
    floats = tuple(
        (t.name.decode() if isinstance(t.name, bytes) else str(t.name))
        for t in g.tensors
        if types_n.get(t.type, "") in ("FLOAT32", "FLOAT16", "FLOAT64")
    )
    const_bytes = sum(len(b.data) if b.data is not None else int(b.size or 0) for b in buffers)
    return TfliteGraph(
        ops=dict(sorted(ops.items())),
        tensor_dtypes=dict(sorted(tensor_types.items())),
        activation_dtypes=dict(sorted(act_types.items())),
        float_tensors=floats,
        input=quant(g.inputs[0]),
        output=quant(g.outputs[0]),
        params=params,
        macs=macs,
        constant_bytes=const_bytes,
        channels=channels,
        offset_buffers=sum(1 for b in buffers if b.offset),
        weight_quantization=tuple(weights),
    )


# ----------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class TfliteExport:
    """The int8 TFLite file and what was checked while making it."""

    model: bytes
    graph: TfliteGraph
    float_bytes: int  # size of the float32 TFLite graph before quantization
    float_max_abs_diff: float  # |float TFLite (mirrored layout) - PyTorch| on the checks
    calibration_images: int
    converter: str
    quantizer: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": TFLITE_FILE,
            "file_bytes": len(self.model),
            "float_tflite_bytes": self.float_bytes,
            "converter": self.converter,
            "quantizer": self.quantizer,
            "recipe": "static int8: weights int8 per-channel symmetric, activations int8 "
            "per-tensor asymmetric (min/max), biases int32, int8 input and output",
            "calibration_images": self.calibration_images,
            "layout": "NHWC input; mirrored network (180-degree input rotation in the graph, "
            "rotated kernels, SAME padding): no PAD ops",
            "float_max_abs_diff_vs_pytorch": self.float_max_abs_diff,
            **self.graph.to_dict(),
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter and quantizer print progress bars, logs and warnings; keep them off the
    CLI's stdout/stderr (the CLI's --json prints one document)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    sink = io.StringIO()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        logging.disable(previous)


def _rotated_nhwc(x: torch.Tensor) -> np.ndarray:
    """NCHW images as the converted graph's input: rotated by 180 degrees, NHWC."""
    return x.flip([2, 3]).permute(0, 2, 3, 1).contiguous().numpy()


def _version(dist: str) -> str:
    from importlib.metadata import version

    return f"{dist} {version(dist)}"


def convert_int8(
    module: nn.Module,
    resolution: int,
    calibration: Iterable[torch.Tensor],
    check_inputs: torch.Tensor | None = None,
) -> TfliteExport:
    """The int8 TFLite file of ``module`` (N x 3 x R x R float input, as the ONNX file),
    calibrated on ``calibration`` (batches of prepared NCHW images, the ONNX int8 file's)."""
    require_tflite()
    module = module.eval()
    mirrored = _NHWCInput(mirrored_module(module, resolution)).eval()
    images = [x for b in calibration for x in b.split(1)]
    if not images:
        raise Natv2Error("int8 calibration needs at least one image")
    if check_inputs is None:
        check_inputs = torch.stack([images[0][0], torch.zeros_like(images[0][0])])
    try:
        with _quiet():
            import litert_torch
            from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
            from ai_edge_quantizer.utils import qsv_utils

            sample = torch.zeros(1, resolution, resolution, 3)
            edge = litert_torch.convert(mirrored, (sample,))
            float_model = bytes(edge.model_content())
            diff = 0.0
            with torch.no_grad():
                for x in check_inputs.split(1):
                    ref = module(x).numpy()
                    got = np.asarray(edge(_rotated_nhwc(x)))
                    if not np.isfinite(got).all():  # max() would skip a NaN
                        raise Natv2Error("the float TFLite graph gives non-finite outputs")
                    diff = max(diff, float(np.max(np.abs(got - ref))))
            signature, name = _signature(float_model)
            static = recipe.static_wi8_ai8()
            q = quantizer.Quantizer(float_model)
            q.load_quantization_recipe(static)
            # min/max over all calibration images, as onnxruntime's MinMax: the default
            # moving average of per-image ranges clips the logits (their range differs by
            # class), which cost 5 points of agreement with the ONNX int8 file in tests
            manager = recipe_manager.RecipeManager()
            manager.load_quantization_recipe(static)
            calib = calibrator.Calibrator(
                float_model, num_threads=1, qsv_update_func=qsv_utils.min_max_update
            )
            feed = [{name: _rotated_nhwc(x)} for x in images]
            calib.calibrate({signature: feed}, manager)
            result = q.quantize(widen_degenerate_ranges(calib.get_model_qsvs()))
            data = prepend_reverse(inline_buffers(bytes(result.quantized_model)))
    except Natv2Error:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(f"TFLite conversion failed: {first[:300]}") from exc
    graph = read_tflite(data)
    tol = 1e-3 * max(1.0, float(np.max(np.abs(module(check_inputs).detach().numpy()))))
    if diff > tol:
        raise Natv2Error(
            f"the float TFLite graph differs from the module by {diff:.3g} (> {tol:.3g}); "
            "the mirrored layout does not hold for this module"
        )
    problems = graph.problems()
    if problems:
        raise Natv2Error(f"the int8 TFLite model is not deployable: {'; '.join(problems)}")
    return TfliteExport(
        model=data,
        graph=graph,
        float_bytes=len(float_model),
        float_max_abs_diff=diff,
        calibration_images=len(images),
        converter=_version("litert-torch"),
        quantizer=_version("ai-edge-quantizer"),
    )


def widen_degenerate_ranges(qsvs: dict, floor: float = MIN_ACTIVATION_RANGE) -> dict:
    """Calibration ranges (min/max per tensor) with every range narrower than ``floor`` widened
    to ``floor`` above its min.

    Why: a tensor that is (nearly) constant on every calibration image, such as the ReLU output
    of a squeeze-excite whose hidden units are all dead for this subnet, gets a range like
    [0, 1e-9] and so a scale of ~4e-12. The next conv's int32 bias is quantized with
    input scale x weight scale, so it overflows, and its requantization multiplier underflows:
    the SE gate drops to 0 and the stage's output with it (measured: a main-job front subnet
    at 10 % TFLM top-1 against 94.7 % float; 94.6 % with the widening). Widening keeps the
    calibrated values exact (they all quantize to the zero point or near it) and keeps every
    scale in int8/int32 range.
    """
    out = {}
    for name, qsv in qsvs.items():
        if not isinstance(qsv, dict) or "min" not in qsv or "max" not in qsv:
            out[name] = qsv
            continue
        lo, hi = np.asarray(qsv["min"]), np.asarray(qsv["max"])
        narrow = (hi - lo) < floor
        if np.any(narrow):
            qsv = {**qsv, "max": np.where(narrow, lo + floor, hi).astype(hi.dtype)}
        out[name] = qsv
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _signature(data: bytes) -> tuple[str, str]:
    """(signature key, input name) of a converted model: what the calibration feed needs."""
    model = _model_object(data)
    sigs = model.signatureDefs or []
    if len(sigs) != 1 or len(sigs[0].inputs or []) != 1:
        raise Natv2Error("the converted TFLite model has no single-input signature")
    return _text(sigs[0].signatureKey), _text(sigs[0].inputs[0].name)
