"""Latency of an ONNX model on this host, measured with onnxruntime.

One ``InferenceSession`` (CPUExecutionProvider, all graph optimisations, sequential execution,
explicit intra-/inter-op thread counts so numbers are reproducible and comparable), a random
input, ``warmup`` untimed runs, then ``runs`` timed ones. Report the median (robust to the odd
scheduler hiccup) and the 90th percentile (the tail a user notices), never a single run.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from natv2.errors import Natv2Error
from natv2.untrusted import shown

__all__ = ["LatencyStats", "measure_latency", "physical_cores", "run_failure"]

_NP_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


@dataclass(frozen=True)
class LatencyStats:
    """Per-call wall time of ``session.run`` in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    warmup: int
    intra_op_threads: int
    inter_op_threads: int
    provider: str
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def physical_cores() -> int:
    """Physical cores of this host (Linux /proc/cpuinfo), else ``os.cpu_count()``.

    Hyper-threads share a core's arithmetic units, so one intra-op thread per physical core is
    onnxruntime's own default and the fastest setting for small convolutional networks.
    """
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and phys is not None and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if phys is not None and core is not None:
            cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def run_failure(
    exc: BaseException, label: str, shape: Sequence[int], size_flag: str | None = None
) -> Natv2Error:
    """onnxruntime's failure to run a model as one line with the fix: running out of memory is
    named as such (a large input is the usual cause), any other failure by onnxruntime's first
    line without its C++ source location; ``size_flag`` is the option that chose the input."""
    text = str(exc)
    dims = "x".join(str(int(d)) for d in shape)
    smaller = f"a smaller {size_flag}" if size_flag else "a smaller input"
    asked = re.search(r"Failed to allocate memory for requested buffer of size (\d+)", text)
    if isinstance(exc, MemoryError) or asked or "bad_alloc" in text:
        need = f" (a buffer of {int(asked.group(1)):,} bytes)" if asked else ""
        return Natv2Error(
            f"{label}: onnxruntime ran out of memory running the model on a {dims} input{need}; "
            f"give {smaller} or use a host with more memory"
        )
    return Natv2Error(
        f"{label}: onnxruntime failed to run the model on a {dims} input ({_ort_reason(exc)}); "
        f"check that the model accepts this input size, or give {smaller}"
    )


def _ort_reason(exc: BaseException) -> str:
    """The gist of an onnxruntime error: its first line, without the "[ONNXRuntimeError] : N :
    KIND :" prefix and the C++ file and function it was raised in."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+ [^()]*\([^()]*\)\s*", "", text)
    return shown(text, 200)


def _model_bytes(model_or_path: onnx.ModelProto | str | Path | bytes) -> bytes | str:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path.SerializeToString()
    if isinstance(model_or_path, bytes):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise Natv2Error(f"{path}: no such file; give the path of an ONNX model (.onnx)")
    return str(path)


def measure_latency(
    model_or_path: onnx.ModelProto | str | Path | bytes,
    input_shape: Sequence[int] | None = None,
    *,
    intra_op_threads: int | None = None,
    inter_op_threads: int = 1,
    warmup: int = 20,
    runs: int = 100,
    seed: int = 0,
    size_flag: str | None = None,
) -> LatencyStats:
    """Median / p90 / mean latency of one ``session.run`` on a random input.

    ``input_shape`` (N, C, H, W) defaults to the model's input with batch 1; it must be given
    when the model's C/H/W are dynamic. ``intra_op_threads`` defaults to the physical cores.
    ``size_flag`` is the option that chose the input size, named in the fix when a run fails.
    """
    import onnxruntime as ort

    if runs < 1 or warmup < 0:
        raise Natv2Error(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    threads = physical_cores() if intra_op_threads is None else int(intra_op_threads)
    if threads < 1 or inter_op_threads < 1:
        raise Natv2Error(f"thread counts must be >= 1, got {threads} and {inter_op_threads}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    source = _model_bytes(model_or_path)
    label = source if isinstance(source, str) else "the ONNX model"
    try:
        session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise Natv2Error(f"{label}: onnxruntime cannot load the model: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise Natv2Error(f"{label}: expected one input, the model has {len(inputs)}")
    meta = inputs[0]
    if input_shape is None:
        dims = list(meta.shape)
        if len(dims) >= 1 and not isinstance(dims[0], int):
            dims[0] = 1
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise Natv2Error(
                f"{label}: input '{meta.name}' has dynamic dims {meta.shape}; give input_shape"
            )
        shape = tuple(int(d) for d in dims)
    else:
        shape = tuple(int(d) for d in input_shape)
    dtype = _NP_TYPES.get(meta.type)
    if dtype is None:
        raise Natv2Error(f"{label}: unsupported input type {meta.type} for input '{meta.name}'")
    rng = np.random.default_rng(seed)
    if issubclass(dtype, np.integer):
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -128), min(info.max, 127), size=shape).astype(dtype)
    else:  # every other type of _NP_TYPES is a floating one
        x = rng.standard_normal(shape).astype(dtype)
    feed = {meta.name: x}
    try:
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            session.run(None, feed)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    except Exception as exc:  # onnxruntime raises its own types, RuntimeError and MemoryError
        raise run_failure(exc, label, shape, size_flag) from None
    return LatencyStats(
        median_ms=float(np.median(times)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(statistics.fmean(times)),
        runs=runs,
        warmup=warmup,
        intra_op_threads=threads,
        inter_op_threads=inter_op_threads,
        provider=session.get_providers()[0],
        batch=shape[0] if shape else 1,
    )
