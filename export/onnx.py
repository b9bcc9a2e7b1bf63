"""Plain module → ONNX: conversion, metadata, the checker, parity against PyTorch, count checks.

Exporter
--------
``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, at opset 17. On torch
2.14.1 and this code base (measured on a materialised ``tiny`` subnet, 2 CPU cores):

* it takes 0.2-1.3 s per subnet, the dynamo exporter about 10 s (``torch.export`` tracing plus
  the onnxscript optimiser), for the same graph;
* in eval mode it folds every BatchNorm that follows a convolution into that convolution, so the
  graph holds exactly ``params_after_bn_folding(module)`` parameters (checked below), and the only
  BatchNormalization nodes left are those with no convolution before them;
* it keeps every bias the module has. The dynamo exporter's optimiser drops all-zero biases (an
  untrained network, or the folded bias of a BatchNorm whose mean and shift cancel), so its
  parameter count depends on the values of the weights and the accounting below could not be
  exact;
* both produce the same operators for these networks (Conv, Add, Mul, HardSwish, HardSigmoid,
  GlobalAveragePool, MaxPool, Gemm) and the same MAC count; opset 17 is the lowest opset with
  everything this project needs, so older runtimes read the files too.

The graph has one input ``input`` (N x 3 x R x R, N dynamic) and one output ``logits`` (N x K):
early-exit and AEP models export as one graph whose output is what the module's ``forward``
returns. The file is self-contained (no external data: these models are far below 2 GB).

Checks (each raises ``Natv2Error`` with what failed):

* ``onnx.checker.check_model(full_check=True)`` (types and shapes included);
* parity: onnxruntime against PyTorch on the same inputs, max |difference| <=
  ``1e-4 * max(1, max |logit|)`` per batch (float graphs);
* counts: the MACs of the graph (``onnx_costs``) equal fvcore's and, for a ``Subnet``, the cost
  model's; the graph's parameters equal ``params_after_bn_folding(module)``, so the difference to
  the module's own count is exactly the BatchNorm parameters that folding removes.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from natv2.errors import Natv2Error
from natv2.profiling.counters import (
    fvcore_macs,
    module_params,
    onnx_costs,
    params_after_bn_folding,
)
from natv2.profiling.latency import physical_cores

__all__ = [
    "EXPORTER",
    "INPUT_NAME",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "PARITY_RTOL",
    "CountCheck",
    "ParityCase",
    "check_counts",
    "check_onnx",
    "check_parity",
    "int8_activations",
    "metadata",
    "ort_session",
    "parity_cases",
    "run_session",
    "set_metadata",
    "to_onnx",
]

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = f"torch.onnx.export (TorchScript, dynamo=False), opset {ONNX_OPSET}"
#: parity tolerance: max |ORT - PyTorch| <= PARITY_RTOL * max(1, max |logit|)
PARITY_RTOL = 1e-4


def to_onnx(
    module: nn.Module, resolution: int, *, in_channels: int = 3, opset: int = ONNX_OPSET
) -> onnx.ModelProto:
    """The eval-mode ``module`` as an ONNX model with a dynamic batch (nothing written)."""
    if opset < 17:
        raise Natv2Error(f"opset {opset} is too old: natv2 exports at opset 17 or later")
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    x = torch.zeros(1, in_channels, resolution, resolution)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes file objects too
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(
            f"torch.onnx.export failed for {type(module).__name__} at {resolution}x{resolution}: "
            f"{first}"
        ) from exc
    finally:
        module.train(was_training)
    model = onnx.load_from_string(buf.getvalue())
    outputs = [o.name for o in model.graph.output]
    if outputs != [OUTPUT_NAME]:
        raise Natv2Error(
            f"{type(module).__name__} exports {len(outputs)} outputs ({', '.join(outputs)}); "
            "an exported classifier returns one logits tensor (combine exits in forward)"
        )
    return model


def set_metadata(model: onnx.ModelProto, props: Mapping[str, Any]) -> None:
    """Replace ``model.metadata_props`` with ``props`` (None values left out; non-strings as
    JSON, so lists and numbers read back with ``json.loads``)."""
    del model.metadata_props[:]
    for key, value in props.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), text


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def check_onnx(model: onnx.ModelProto, what: str = "the exported model") -> None:
    """``onnx.checker.check_model(full_check=True)``; a failure is a ``Natv2Error``."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(f"{what} fails the ONNX checker: {first}") from exc


def int8_activations(model: onnx.ModelProto) -> bool:
    """Whether ``model`` quantizes activations to int8 (a QuantizeLinear with an int8 zero
    point): the microcontroller file, whose top-1 needs ``ort_session(..., exact=True)``."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    int8 = onnx.TensorProto.INT8
    return any(
        n.op_type == "QuantizeLinear" and len(n.input) > 2 and inits.get(n.input[2]) == int8
        for n in model.graph.node
    )


def ort_session(
    model: onnx.ModelProto | bytes | str, threads: int | None = None, *, exact: bool = False
):
    """An onnxruntime CPU session with every graph optimisation (as deployed).

    ``exact``: no QDQ fusion (``ORT_ENABLE_BASIC``), so an int8 file computes what its
    QuantizeLinear / DequantizeLinear nodes define, on any host: onnxruntime's fused s8 x s8
    kernels on x86 without VNNI (AVX2 only) add pairs of products into int16 with saturation.
    Measured on such a host (AMD Zen 3): a trained subnet's int8-activation file scored 91.8 %
    exact and 89.4 % fused on 500 mnist5k images (float 92.4 %); with symmetric activations
    92.4 % exact and 54.0 % fused. The top-1 of a microcontroller file, which TFLM and CMSIS-NN
    compute with int32 accumulators, is therefore always measured exactly."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if exact
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    opts.intra_op_num_threads = physical_cores() if threads is None else threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Natv2Error(f"onnxruntime cannot load the exported model: {first}") from exc


def run_session(session, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits of one batch (float32 N x K)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    name = session.get_inputs()[0].name
    out = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


@dataclass(frozen=True)
class ParityCase:
    """onnxruntime against PyTorch on one batch."""

    inputs: str  # "random" or "<dataset> images"
    batch: int
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    argmax_agreement: float  # fraction of the batch with the same top-1 class
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_cases(
    module: nn.Module,
    session,
    batches: Sequence[tuple[str, torch.Tensor]],
    rtol: float = PARITY_RTOL,
) -> list[ParityCase]:
    """Compare ``session`` with the eval-mode ``module`` on each ``(label, batch)``."""
    was_training = module.training
    module.eval()
    cases = []
    try:
        for label, x in batches:
            with torch.no_grad():
                ref = module(x).detach().float().cpu().numpy().reshape(len(x), -1)
            out = run_session(session, x)
            if out.shape != ref.shape:
                raise Natv2Error(
                    f"parity check failed: onnxruntime returns shape {out.shape}, PyTorch "
                    f"{ref.shape} ({label}, batch {len(x)})"
                )
            diff = float(np.max(np.abs(out - ref))) if out.size else 0.0
            if not np.isfinite(diff):
                diff = float("inf")
            peak = float(np.max(np.abs(ref))) if ref.size else 0.0
            tol = rtol * max(1.0, peak)
            agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
            cases.append(
                ParityCase(
                    inputs=label,
                    batch=len(x),
                    max_abs_diff=diff,
                    max_abs_logit=peak,
                    tolerance=tol,
                    argmax_agreement=agree,
                    passed=diff <= tol,
                )
            )
    finally:
        module.train(was_training)
    return cases


def check_parity(cases: Sequence[ParityCase]) -> None:
    """Raise the parity message when any case is outside its tolerance."""
    bad = [c for c in cases if not c.passed]
    if bad:
        parts = "; ".join(
            f"{c.inputs} batch {c.batch}: max |ORT - PyTorch| = {c.max_abs_diff:.3g} > "
            f"{c.tolerance:.3g} (max |logit| {c.max_abs_logit:.3g})"
            for c in bad
        )
        raise Natv2Error(
            f"parity check failed: the ONNX graph does not compute what the PyTorch module does "
            f"({parts}); the module's forward likely depends on tracing/export state or on "
            "Python control flow the exporter cannot record"
        )


@dataclass(frozen=True)
class CountCheck:
    """MACs and params of the module, its graph and (for a Subnet) the cost model."""

    macs_graph: int
    macs_fvcore: int
    macs_cost_model: int | None
    params_module: int
    params_folded: int
    params_graph: int
    params_cost_model: int | None

    @property
    def bn_params_removed(self) -> int:
        """BatchNorm parameters that folding removes (2C per folded BN) minus the C biases it
        adds to bias-free convolutions: module params - folded params."""
        return self.params_module - self.params_folded

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs": {
                "onnx_graph": self.macs_graph,
                "fvcore": self.macs_fvcore,
                "cost_model": self.macs_cost_model,
            },
            "params": {
                "module": self.params_module,
                "folded": self.params_folded,
                "graph": self.params_graph,
                "bn_removed": self.bn_params_removed,
                "cost_model": self.params_cost_model,
            },
        }


def check_counts(
    module: nn.Module,
    model: onnx.ModelProto,
    input_shape: Sequence[int],
    cost=None,
) -> CountCheck:
    """Count MACs and params three ways and raise unless they agree (module docstring).

    ``cost``: the cost model's ``SubnetCost`` of the module's Arch, or None for modules the cost
    model does not describe (AEP ensembles, user modules).
    """
    shape = tuple(int(d) for d in input_shape)
    graph = onnx_costs(model, input_shape=shape)
    fv = fvcore_macs(module, shape)
    counts = CountCheck(
        macs_graph=graph.macs,
        macs_fvcore=fv,
        macs_cost_model=None if cost is None else int(cost.macs),
        params_module=module_params(module),
        params_folded=params_after_bn_folding(module),
        params_graph=graph.params,
        params_cost_model=None if cost is None else int(cost.params),
    )
    macs = {"ONNX graph": counts.macs_graph, "fvcore": counts.macs_fvcore}
    if counts.macs_cost_model is not None:
        macs["cost model"] = counts.macs_cost_model
    if len(set(macs.values())) != 1:
        raise Natv2Error(
            "MAC counters disagree: "
            + ", ".join(f"{k} {v:,}" for k, v in macs.items())
            + "; the graph does not hold the network the module describes"
        )
    if counts.params_graph != counts.params_folded:
        raise Natv2Error(
            f"parameter count of the ONNX graph ({counts.params_graph:,}) differs from the "
            f"module's after BatchNorm folding ({counts.params_folded:,}; module "
            f"{counts.params_module:,}): the difference is not explained by BatchNorm folding"
        )
    if counts.params_cost_model is not None and counts.params_cost_model != counts.params_module:
        raise Natv2Error(
            f"the cost model counts {counts.params_cost_model:,} params but the module holds "
            f"{counts.params_module:,}: the module is not the subnet its Arch describes"
        )
    return counts
