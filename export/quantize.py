"""int8 ONNX: onnxruntime static quantization of an exported float model.

Steps: ``quant_pre_process`` (ONNX shape inference and onnxruntime's graph optimisation, the
preparation onnxruntime asks for), then ``quantize_static`` in the QDQ format (QuantizeLinear /
DequantizeLinear pairs around standard operators, so the file stays standard ONNX that any
runtime and ``natv2.profiling.counters`` read), per-channel symmetric int8 weights, int8
activations calibrated by MinMax over a few hundred training images at the subnet's resolution
(fed through :class:`BatchReader`) with every range at least ``MIN_ACTIVATION_RANGE`` wide
(onnxruntime's ``MinimumRealRange``, the floor the TFLite file uses too), int32 biases. The
loose BatchNormalization of a same-shape transformation branch is quantized per channel along
its only axis.

Then :func:`compact_qdq` removes what the deployed file does not need and what would inflate it
(on the ``tiny`` preset the graph structure of a QDQ model is a third of the file): the inferred
``value_info``, node names and doc strings, the all-zero zero points of constant (weight and
bias) DequantizeLinear nodes (optional inputs that default to 0), and long tensor names, which
become short ids (graph input and output keep their names; the float model keeps the module's
names). Outputs are bit-identical before and after (tested).

Two activation types, one per artefact (``activations=``): ``"int8"`` (the default) is the
microcontroller artefact ``model.int8.onnx``, int8 activations as TFLite Micro runs them;
``"uint8"`` is the host artefact ``model.int8-host.onnx``, asymmetric QUInt8 activations (the
same calibration, hence the same activation scales: the uint8 zero points are the int8 ones
plus 128) and per-channel weights on 7 bits (onnxruntime's ``reduce_range``). The 7 bits are
for x86 hosts without VNNI (AVX2 only, e.g. AMD Zen 3): their u8 x s8 kernels
(``vpmaddubsw``) add pairs of products into int16 with saturation, which full 8-bit weights
overflow. Measured on such a host (mnist5k's maximal subnet, 1,000 test images): float
98.4 %, u8 activations with 8-bit weights 96.6 %, with 7-bit weights 98.2 %, the int8-activation
file 98.3 %; onnxruntime's ``quantize_static`` documentation gives the same advice.

On x86 onnxruntime's graph optimiser turns the large subnet's u8 file into QLinear operators
throughout (89 of 89 Conv, every Mul, Add and GlobalAveragePool); of the s8 file it fuses 46 of
89 Conv (in NHWC, with 60 Transposes around them) and no Mul or Add, and runs the rest in float
between DequantizeLinear and QuantizeLinear.

Measured (onnxruntime 1.32.0, AMD EPYC with AVX-512 VNNI, 2 intra-op threads, batch 1, median
ms of 100-200 runs; the untrained ``tiny`` supernet's small r48 / medium r56 / large r64 subnets
of ``benchmarks/export_latency.py``; shared machine, +-30 % run to run)::

    setting (all MinMax, activations asymmetric)    small   medium  large   large file
    float32                                         0.096   0.151   0.25    2.36 MB
    QDQ, s8 activations, s8 per-channel (int8)      0.259   0.538   1.4-2.2 735 kB
    QDQ, u8 activations, s8 per-channel (host)      0.114   0.191   0.36    734 kB
    QDQ, u8 activations, s8 per-tensor              0.115   0.184   0.37-.52 661 kB
    QDQ, u8 activations, s8 per-channel, reduce_rng 0.115   0.194   0.34    734 kB
    QDQ, u8 activations, u8 per-channel             0.135   0.250   0.49    754 kB
    QOperator, u8 activations, s8 per-channel       0.117   0.193   0.35    827 kB
    QOperator, u8 activations, s8 per-tensor        0.113   0.187   0.48    782 kB
    QOperator, s8 activations, s8 per-channel       0.286   0.524   1.2     828 kB

(1 thread, large: float 0.41, s8 activations 3.6, host setting 0.41, per-tensor 0.60 ms.) So
the activation type is what matters (u8 activations 2.3-6x faster than s8); per-tensor weights,
reduce_range and QOperator are within the noise of the chosen setting and buy nothing, u8
weights are slower. The host file keeps QDQ (standard operators that
``natv2.profiling.counters`` reads) and per-channel s8 weights, with reduce_range (above):
8-bit host weights lost top-1 on a host without VNNI. The export reports the host file's top-1
beside float's but judges only the files a device runs (``Profile.max_top1_drop``). On these
tiny subnets float32 stays the fastest on this host (the quantize / dequantize at the edges and
the small convolutions outweigh the integer arithmetic).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from natv2.errors import Natv2Error

__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATION_IMAGES",
    "BatchReader",
    "compact_qdq",
    "int8_predictions",
    "int8_top1",
    "quantize_int8",
]

#: ``activations=`` of :func:`quantize_int8`: the microcontroller artefact, the host one
ACTIVATION_TYPES = ("int8", "uint8")
#: training images the int8 files are calibrated on (export, and the search's int8 top-1)
CALIBRATION_IMAGES = 300


class BatchReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` over float32 batches (N x C x R x R) for one input name."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self.images = sum(len(b) for b in self.batches)
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)


@contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization reports through the root logger; keep stderr clean."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


#: the narrowest range (max - min) int8 quantization may use, in the ONNX and the TFLite file:
#: a tensor that is (nearly) constant on every calibration image, such as the ReLU output of a
#: squeeze-excite whose hidden units are all dead for a subnet, would otherwise get a scale of
#: ~4e-12, an overflowing int32 bias in the next conv and a gate of 0
#: (``natv2.export.tflite.widen_degenerate_ranges`` has the measured case); onnxruntime applies
#: it as ``MinimumRealRange``
MIN_ACTIVATION_RANGE = 1e-2


def quantize_int8(
    float_model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    *,
    input_name: str = "input",
    activations: str = "int8",
) -> onnx.ModelProto:
    """The int8 QDQ model of ``float_model`` calibrated on ``batches`` (module docstring):
    ``activations="int8"`` for the microcontroller file, ``"uint8"`` for the host file."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if activations not in ACTIVATION_TYPES:
        raise Natv2Error(
            f"int8 activations must be one of {', '.join(ACTIVATION_TYPES)}, got {activations!r}"
        )
    activation_type = QuantType.QInt8 if activations == "int8" else QuantType.QUInt8
    reader = BatchReader(input_name, batches)
    if reader.images == 0:
        raise Natv2Error("int8 calibration needs at least one image")
    with tempfile.TemporaryDirectory(prefix="natv2-int8-") as tmp, _quiet_root_logger():
        src = Path(tmp) / "float.onnx"
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "int8.onnx"
        onnx.save(float_model, str(src))
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=activation_type,
                calibrate_method=CalibrationMethod.MinMax,
                # 7-bit weights for the host file: x86 without VNNI saturates u8 x s8 pairs
                reduce_range=activations == "uint8",
                extra_options={
                    "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0},
                    "MinimumRealRange": MIN_ACTIVATION_RANGE,
                },
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Natv2Error(f"int8 quantization failed: {first}") from exc
        model = onnx.load(str(out))
    return compact_qdq(model)


def compact_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without what deployment does not need (module docstring)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    del g.value_info[:]
    g.doc_string = ""
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        if (
            node.op_type == "DequantizeLinear"
            and len(node.input) == 3
            and node.input[0] in inits
            and node.input[2] in inits
            and not np.any(numpy_helper.to_array(inits[node.input[2]]))
        ):
            del node.input[2]
    used = {name for node in g.node for name in node.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)

    fixed = {vi.name for vi in g.input} | {vi.name for vi in g.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in fixed:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = short(name)
        for i, name in enumerate(node.output):
            node.output[i] = short(name)
    for vi in g.input:
        if vi.name in names:  # an initializer listed as input (old IR): keep in step
            vi.name = names[vi.name]
    return m


def int8_predictions(
    module,
    resolution: int,
    calibration: Iterable[np.ndarray],
    images: Iterable[np.ndarray],
    threads: int | None = None,
) -> np.ndarray:
    """The classes ``module``'s microcontroller int8 file (int8 activations, as ``natv2
    export`` writes it, calibrated on ``calibration``) predicts for each batch of ``images``:
    what the device will compute, measured by onnxruntime."""
    from natv2.export.onnx import ort_session, run_session, to_onnx

    q = quantize_int8(to_onnx(module, resolution), calibration)
    session = ort_session(q, threads, exact=True)  # the device's arithmetic on any host
    preds = [run_session(session, x).argmax(1) for x in images]
    if not preds:
        raise Natv2Error("int8 predictions need at least one image")
    return np.concatenate(preds)


def int8_top1(
    module,
    resolution: int,
    calibration: Iterable[np.ndarray],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    threads: int | None = None,
) -> float:
    """Top-1 of ``module``'s microcontroller int8 file (:func:`int8_predictions`) on
    ``batches`` of (images, labels)."""
    pairs = list(batches)
    pred = int8_predictions(module, resolution, calibration, [x for x, _ in pairs], threads)
    labels = np.concatenate([np.asarray(y) for _, y in pairs])  # pairs: non-empty, else raised
    return float(np.mean(pred == labels))
