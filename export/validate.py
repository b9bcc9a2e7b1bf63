"""Validate any ONNX image classifier against a device profile.

Counts params, MACs, flash and peak activation memory on the graph itself (at the profile's
dtype), measures latency with onnxruntime on this host, optionally measures top-1 on a dataset's
test split, and checks every budget of the profile. Nothing here needs the supernet: the file is
the truth, so a model from anywhere can be checked the same way as a natv2 export.

When the profile's latency is ``estimate`` (microcontrollers) the latency budget uses
MACs / macs_per_second, and the host measurement is reported beside it only for information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from natv2.device_profiles import (
    MIN_TOP1_IMAGES,
    BudgetCheck,
    Costs,
    Profile,
    QuantizedTop1,
    Verdict,
    load_profile,
)
from natv2.device_profiles.profile import TOP1_DROP_KEY
from natv2.errors import Natv2Error
from natv2.export.onnx import int8_activations, ort_session
from natv2.profiling.counters import GraphCosts, image_input, load_onnx, onnx_costs
from natv2.profiling.latency import LatencyStats, measure_latency, run_failure
from natv2.untrusted import MAX_RESOLUTION, read_int

__all__ = [
    "DatasetLike",
    "ValidationReport",
    "costs_of_graph",
    "float_reference",
    "reference_top1",
    "top1_accuracy",
    "validate_onnx",
]

#: the file names of an export folder's quantized models, whose float model is ``model.onnx``
#: beside them (``natv2.export.report``'s FLOAT_FILE, INT8_FILE, INT8_HOST_FILE, and the
#: TFLite file)
_QUANTIZED_EXPORT_FILES = ("model.int8.onnx", "model.int8-host.onnx", "model.int8.tflite")
_FLOAT_EXPORT_FILE = "model.onnx"

#: most bytes of input images prepared at once for top-1 (at --resolution 2048 one image is
#: 48 MiB as float32, and a batch of 64 would need 3 GiB before onnxruntime even runs)
BATCH_INPUT_BYTES = 256 * 2**20


class DatasetLike(Protocol):
    """What top-1 needs of a dataset (``natv2.data.DatasetSplits`` provides it)."""

    test: Any  # indexable, len(); items are (uint8 3xSxS tensor, int label)
    num_classes: int

    def prepare_batch(self, x: torch.Tensor, resolution: int, train: bool) -> torch.Tensor: ...


@dataclass(frozen=True)
class Accuracy:
    top1: float
    images: int
    dataset: str

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "images": self.images, "dataset": self.dataset}


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``natv2 validate`` prints; ``exit_code`` is 0 when every budget passes."""

    model: str
    profile: Profile
    costs: GraphCosts
    host_latency: LatencyStats
    estimated_latency_ms: float | None
    accuracy: Accuracy | None
    verdict: Verdict
    reference: str | None = None  # the float model the top-1 was judged against

    @property
    def checks(self) -> tuple[BudgetCheck, ...]:
        return self.verdict.checks

    @property
    def latency_basis(self) -> str:
        """What the latency budget was checked against: ``estimate`` or ``this host``."""
        return self.verdict.latency_basis

    @property
    def latency_ms(self) -> float:
        judged = self.profile.judged_latency_ms(
            self.estimated_latency_ms, self.host_latency.median_ms
        )
        assert judged is not None  # the host time is always measured here
        return judged

    @property
    def passed(self) -> bool:
        return self.verdict.fits

    @property
    def unchecked(self) -> dict[str, str]:
        """Budgets an ONNX file cannot be judged on, and why (a TFLM profile's SRAM budget
        is judged on TFLM's arena, which only the .tflite file gives)."""
        fix = "validate the .tflite file"
        why = {
            "max_peak_sram_bytes": f"runtime = tflm judges the TFLM arena: {fix}",
            "max_flash_bytes": f"runtime = tflm judges the TFLite file: {fix}",
        }
        return {b: reason for b, reason in why.items() if b in self.verdict.unchecked}

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one document for ``--json``)."""
        c = self.costs
        return {
            "model": self.model,
            "profile": self.profile.name,
            "profile_source": self.profile.source,
            "dtype": c.dtype,
            "stored_dtype": c.stored_dtype,
            "input_shape": list(c.input_shape),
            "output_shape": list(c.output_shape),
            "params": c.params,
            "macs": c.macs,
            "macs_counter": "onnx-graph",
            "flash_bytes": c.flash_bytes,
            "peak_sram_bytes": c.peak_sram_bytes,
            "peak_node": c.peak_node,
            "latency": {
                "budget_basis": self.latency_basis,
                "latency_ms": self.latency_ms,
                "estimate_ms": self.estimated_latency_ms,
                "macs_per_second": self.profile.macs_per_second,
                "host": self.host_latency.to_dict(),
            },
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "checks": [ch.to_dict() for ch in self.checks],
            "reference": self.reference,
            "top1_checks": [c.to_dict() for c in self.verdict.top1_checks],
            "unchecked": self.unchecked,
            "passed": self.passed,
        }

    def to_text(self) -> str:
        """The human report: figures, then one line per budget, then the verdict."""
        c, p, h = self.costs, self.profile, self.host_latency
        host = (
            f"median {h.median_ms:.3f} ms, p90 {h.p90_ms:.3f} ms (onnxruntime {h.provider}, "
            f"{h.intra_op_threads} intra-op / {h.inter_op_threads} inter-op threads, "
            f"{h.runs} runs after {h.warmup} warm-up)"
        )
        lines = [
            f"model      {self.model}",
            f"input      {'x'.join(map(str, c.input_shape))}   weights stored as {c.stored_dtype}",
            f"profile    {p.name} ({p.source})",
            f"dtype      {c.dtype} (the profile's; flash and memory below are at this dtype)",
            f"params     {c.params:,}",
            f"MACs       {c.macs:,} (ONNX graph counter)",
            f"flash      {c.flash_bytes:,} bytes",
            f"peak mem.  {c.peak_sram_bytes:,} bytes of activations (at {c.peak_node})",
        ]
        if self.estimated_latency_ms is not None:
            lines.append(
                f"latency    {self.estimated_latency_ms:.3f} ms estimate "
                f"(MACs / {p.macs_per_second:g} MAC/s)"
                + ("   <- checked against the budget" if p.latency == "estimate" else "")
            )
            lines.append(f"           this host: {host}")
        else:
            lines.append(f"latency    this host: {host}")
        if self.accuracy is not None:
            a = self.accuracy
            lines.append(f"top-1      {100 * a.top1:.2f} % on {a.dataset} test ({a.images} images)")
        lines.append("")
        if not self.checks:
            lines.append(f"budgets    none ({p.name} sets no budgets)")
        else:
            lines.append(f"{'budget':<24}{'value':>16}{'limit':>16}{'headroom':>22}  result")
            for ch in self.checks:
                label = ch.name
                if ch.name == "latency_ms":
                    label += f" ({self.latency_basis})"
                lines.append(
                    f"{label:<24}{_num(ch.value):>16}{_num(ch.budget):>16}"
                    f"{_num(ch.headroom) + f' ({100 * ch.headroom_fraction:+.1f}%)':>22}  "
                    f"{'pass' if ch.passed else 'FAIL'}"
                )
        for budget, why in self.unchecked.items():
            lines.append(f"{budget:<24}{'not checked':>16}  ({why})")
        lines += top1_lines(self.verdict, self.reference)
        failed = [ch.name for ch in self.checks if not ch.passed]
        if failed:
            lines.append(
                f"verdict    FAIL: {len(failed)} of {len(self.checks)} budgets exceeded "
                f"({', '.join(failed)})"
            )
        elif self.verdict.failed_top1:
            lines.append("verdict    FAIL: the quantized model lost top-1 against its float model")
        else:
            lines.append(f"verdict    pass: the model fits {p.name}")
        return "\n".join(lines)


def top1_lines(verdict: Verdict, reference: str | None) -> list[str]:
    """The report lines of a quantized file's top-1 against its float reference."""
    lines = [f"{'top-1 vs float':<24}{c.describe()}" for c in verdict.top1_checks]
    if reference is not None:
        lines.append(f"{'':<24}(float reference: {reference})")
    if TOP1_DROP_KEY in verdict.unchecked:
        lines.append(
            f"{'top-1 vs float':<24}not checked: fewer than {MIN_TOP1_IMAGES} test images "
            "(raise --limit)"
        )
    return lines


def float_reference(model_path: str | Path) -> Path | None:
    """The float model a quantized file of an export folder is judged against: ``model.onnx``
    beside ``model.int8.onnx``, ``model.int8-host.onnx`` or ``model.int8.tflite``."""
    path = Path(model_path)
    if path.name not in _QUANTIZED_EXPORT_FILES:
        return None
    sibling = path.with_name(_FLOAT_EXPORT_FILE)
    return sibling if sibling.is_file() else None


def reference_top1(
    reference: str | Path,
    dataset: DatasetLike,
    resolution: int,
    *,
    limit: int | None,
    threads: int | None,
) -> tuple[float, int]:
    """Top-1 of the float reference on the test images the quantized file saw."""
    ref = str(reference)
    image_input(load_onnx(ref), ref)
    return top1_accuracy(ref, dataset, resolution, limit=limit, threads=threads)


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}"


def top1_accuracy(
    model_path: str | Path,
    dataset: DatasetLike,
    resolution: int,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    threads: int | None = None,
    size_flag: str | None = None,
) -> tuple[float, int]:
    """Top-1 of the ONNX model on ``dataset.test`` (the first ``limit`` images if given),
    images prepared by ``dataset.prepare_batch(x, resolution, train=False)`` in batches of at
    most ``batch_size`` and ``BATCH_INPUT_BYTES``. Returns (accuracy in [0, 1], number of
    images); ``size_flag`` is the option that chose ``resolution``, named when a run fails.
    A file with int8 activations runs with the arithmetic its QDQ nodes define (the device's),
    not onnxruntime's fused kernels, which saturate on x86 without VNNI (``ort_session``)."""
    path = str(model_path)
    try:
        session = ort_session(path, threads, exact=int8_activations(load_onnx(path)))
    except Natv2Error as exc:
        raise Natv2Error(f"{path}: {exc}") from None
    meta = session.get_inputs()[0]
    np_dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
    if isinstance(meta.shape[0], int) and meta.shape[0] > 0:
        batch_size = meta.shape[0]  # a fixed batch: feed exactly that many
    else:
        image_bytes = 3 * resolution * resolution * np.dtype(np_dtype).itemsize
        batch_size = max(1, min(batch_size, BATCH_INPUT_BYTES // image_bytes))
    n = len(dataset.test) if limit is None else min(limit, len(dataset.test))
    if n < 1:
        raise Natv2Error("the dataset's test split is empty; nothing to measure top-1 on")
    correct = 0
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        items = [dataset.test[i] for i in idx]
        xs = torch.stack([x for x, _ in items])
        ys = np.array([int(y) for _, y in items])
        x = dataset.prepare_batch(xs, resolution, train=False)
        x_np = x.detach().cpu().numpy().astype(np_dtype)
        pad = batch_size - len(items) if isinstance(meta.shape[0], int) else 0
        if pad:
            x_np = np.concatenate([x_np, np.repeat(x_np[-1:], pad, axis=0)])
        try:
            logits = session.run(None, {meta.name: x_np})[0]
        except Exception as exc:  # onnxruntime's own types, RuntimeError, MemoryError
            raise run_failure(exc, str(model_path), x_np.shape, size_flag) from None
        logits = np.asarray(logits).reshape(logits.shape[0], -1)[: len(items)]
        if logits.shape[1] != dataset.num_classes:
            raise Natv2Error(
                f"{model_path}: the model outputs {logits.shape[1]} classes but the dataset has "
                f"{dataset.num_classes}; validate it on the dataset it was trained for"
            )
        correct += int((logits.argmax(axis=1) == ys).sum())
    return correct / n, n


def costs_of_graph(
    costs: GraphCosts,
    latency_ms: float | None,
    *,
    tflm_arena_bytes: int | None = None,
    tflite_bytes: int | None = None,
) -> Costs:
    """What a profile judges an ONNX file on: the graph's own counts at the profile's dtype,
    the latency the profile's rule chose (``Profile.judged_latency_ms``) and, for a TFLM
    profile, TFLM's arena and the TFLite file where the caller has them (``export``)."""
    return Costs(
        params=costs.params,
        macs=costs.macs,
        flash_bytes=costs.flash_bytes,
        peak_sram_bytes=costs.peak_sram_bytes,
        tflm_arena_bytes=tflm_arena_bytes,
        tflite_bytes=tflite_bytes,
        latency_ms=latency_ms,
    )


def validate_onnx(
    model_path: str | Path,
    profile: Profile | str | Path,
    *,
    dataset: DatasetLike | None = None,
    dataset_name: str | None = None,
    resolution: int | None = None,
    threads: int | None = None,
    warmup: int = 20,
    runs: int = 100,
    batch_size: int = 64,
    limit: int | None = None,
    reference: str | Path | None = None,
) -> ValidationReport:
    """Check ``model_path`` against ``profile`` (a Profile, a shipped name or a TOML path).

    ``resolution`` sets H = W for a model with a dynamic input (and must agree with a fixed
    one). ``dataset`` (e.g. ``natv2.data.load_dataset(...)``) adds top-1 on its test split;
    with a float ``reference`` model too, the file's top-1 is judged against the reference's
    on the same images (``Profile.max_top1_drop``).
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    path = str(model_path)
    model = load_onnx(path)
    input_shape: Sequence[int] | None = None
    if resolution is not None:
        read_int("--resolution", resolution, 1, MAX_RESOLUTION)
        channels = image_input(model, path).type.tensor_type.shape.dim[1]
        c = channels.dim_value if channels.HasField("dim_value") else 3
        input_shape = (1, c, resolution, resolution)
    costs = onnx_costs(path, dtype=prof.dtype, input_shape=input_shape)
    size_flag = "--resolution" if resolution is not None else None
    host = measure_latency(
        path,
        costs.input_shape,
        intra_op_threads=threads,
        warmup=warmup,
        runs=runs,
        size_flag=size_flag,
    )
    estimate = prof.estimate_latency_ms(costs.macs)
    accuracy = None
    if dataset is not None:
        if costs.input_shape[1] != 3:
            raise Natv2Error(
                f"{path}: the model takes {costs.input_shape[1]} channels; datasets give RGB "
                "(3-channel) images"
            )
        top1, n = top1_accuracy(
            path,
            dataset,
            costs.input_shape[2],
            batch_size=batch_size,
            limit=limit,
            threads=threads,
            size_flag=size_flag,
        )
        # (not ``dataset_name or getattr(...)``: mypy would solve getattr's default as str | None)
        label = dataset_name if dataset_name else getattr(dataset, "name", "dataset")
        accuracy = Accuracy(top1, n, label)
    quantized = []
    if accuracy is not None and dataset is not None and reference is not None:
        ref_top1, _ = reference_top1(
            reference, dataset, costs.input_shape[2], limit=limit, threads=threads
        )
        quantized.append(QuantizedTop1(Path(path).name, ref_top1, accuracy.top1, accuracy.images))
    judged_ms = prof.judged_latency_ms(estimate, host.median_ms)
    verdict = prof.judge(costs_of_graph(costs, judged_ms), quantized)
    ref_name = None if reference is None or not quantized else str(reference)
    return ValidationReport(path, prof, costs, host, estimate, accuracy, verdict, ref_name)
