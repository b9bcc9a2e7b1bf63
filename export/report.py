"""What an export hands over: the typed :class:`ExportReport` and its printed summary.

``natv2.export.folder.export_folder`` builds the report step by step; this module owns its
shape. ``ExportReport.to_dict()`` is ``OUT/report.json`` and ``to_json()`` is what
``natv2 export --json`` prints (the same document plus ``out``); their keys and their order are
a contract with users' scripts (``benchmarks/cli_json_identity.py`` guards them), so the
dataclasses below hold typed parts and build the documented nested dict only at the edge.

Figures: params (module, BatchNorm-folded, graph) and MACs (graph, fvcore, cost model) from
``natv2.export.onnx.check_counts``; flash and peak SRAM at the profile's dtype from the graph
counter and the cost model; parity of onnxruntime against PyTorch; top-1 of the float, int8
and int8 host models on the test split and how often each int8 file agrees with float;
onnxruntime latency on this host of every ONNX file (and the profile's MACs-based estimate);
the profile's verdict on the deployed model (the int8 file for int8 profiles; never the host
file). With the TFLite file: its graph (ops, tensor types, quantization of input and
output), the smallest TFLM arena (activations + persistent parts), TFLM top-1 on the same test
images and its agreement with onnxruntime int8 (``tflite`` and ``tflm`` of the document).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natv2 import __version__
from natv2.device_profiles import Verdict
from natv2.export.onnx import (
    EXPORTER,
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    PARITY_RTOL,
    CountCheck,
    ParityCase,
)
from natv2.space import Arch

if TYPE_CHECKING:  # types only: reading a report loads no TFLite, TFLM or onnxruntime code
    from natv2.export.tflite import TfliteExport
    from natv2.export.tflm import TflmArena
    from natv2.profiling.cost import SubnetCost
    from natv2.profiling.counters import GraphCosts
    from natv2.profiling.latency import LatencyStats

__all__ = [
    "EXPORT_FORMAT",
    "FLOAT_FILE",
    "INT8_FILE",
    "INT8_HOST_FILE",
    "REPORT_FILE",
    "ExportReport",
    "ExportVerdict",
    "FileEntry",
    "Int8Files",
    "Int8Parity",
    "LatencyReport",
    "TflmTop1",
    "Top1",
    "summary",
]

EXPORT_FORMAT = "natv2-export/1"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_HOST_FILE = "model.int8-host.onnx"
REPORT_FILE = "report.json"
#: the keys of ``LatencyReport.host``: the ONNX files timed, in the order they are timed
TIMED_FILES = {"float": FLOAT_FILE, "int8": INT8_FILE, "int8_host": INT8_HOST_FILE}


@dataclass(frozen=True)
class FileEntry:
    """One file of the folder as written: its size and sha256."""

    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class Int8Parity:
    """The int8 file against the float graph it was quantized from on one parity batch (the
    int8 fine-tuned copy's when there is one: this measures quantization, while top-1 judges
    against ``model.onnx``). Not a pass/fail check: quantization moves logits; how far and how
    often the top-1 class changes is reported."""

    inputs: str
    batch: int
    max_abs_diff_vs_float: float
    max_abs_logit: float
    argmax_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Int8Files:
    """The int8 file (int8 activations) and the int8 host file (uint8 activations), both
    calibrated on the same ``calibration_images`` train images."""

    calibration_images: int
    costs: GraphCosts  # of the int8 file, at int8
    file_bytes: int
    float_file_bytes: int
    host_file_bytes: int

    @property
    def size_ratio(self) -> float:
        return self.float_file_bytes / self.file_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_format": "QDQ",
            "weights": "int8, symmetric, per channel",
            "activations": "int8, MinMax calibration",
            "calibration_images": self.calibration_images,
            "flash_bytes": self.costs.flash_bytes,
            "peak_sram_bytes": self.costs.peak_sram_bytes,
            "file_bytes": self.file_bytes,
            "float_file_bytes": self.float_file_bytes,
            "size_ratio": self.size_ratio,
        }

    def host_dict(self) -> dict[str, Any]:
        return {
            "file": INT8_HOST_FILE,
            "purpose": f"host latency (onnxruntime); {INT8_FILE} is the microcontroller file",
            "quant_format": "QDQ",
            "weights": f"int8, symmetric, per channel (as {INT8_FILE})",
            "activations": "uint8, asymmetric, MinMax calibration (the same images)",
            "calibration_images": self.calibration_images,
            "file_bytes": self.host_file_bytes,
        }


@dataclass(frozen=True)
class Top1:
    """Top-1 of each ONNX file on the test split (``dataset`` None: no dataset was given)."""

    dataset: str | None = None
    images: int = 0
    float_top1: float | None = None
    int8_top1: float | None = None
    int8_float_agreement: float | None = None
    int8_host_top1: float | None = None
    int8_host_float_agreement: float | None = None
    search_val_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": None if self.dataset is None else "test",
            "images": self.images,
            "float_top1": self.float_top1,
            "int8_top1": self.int8_top1,
            "int8_float_agreement": self.int8_float_agreement,
            "int8_host_top1": self.int8_host_top1,
            "int8_host_float_agreement": self.int8_host_float_agreement,
            "search_val_accuracy": self.search_val_accuracy,
        }


@dataclass(frozen=True)
class TflmTop1:
    """Top-1 of the TFLite file run by TFLM, on the test images the ONNX files saw."""

    dataset: str
    images: int
    top1: float
    agreement_with_onnx_int8: float | None
    agreement_with_float: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": "test",
            "images": self.images,
            "top1": self.top1,
            "agreement_with_onnx_int8": self.agreement_with_onnx_int8,
            "agreement_with_float": self.agreement_with_float,
        }


@dataclass(frozen=True)
class LatencyReport:
    """onnxruntime on this host per timed file (``TIMED_FILES`` keys), the profile's
    MACs-based estimate, and the figure the latency budget is judged on (``latency_ms``,
    by ``Profile.judged_latency_ms``; without a profile, the host time)."""

    host: Mapping[str, LatencyStats]
    estimate_ms: float | None
    macs_per_second: float | None
    budget_basis: str | None
    latency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": {k: v.to_dict() for k, v in self.host.items()} or None,
            "estimate_ms": self.estimate_ms,
            "macs_per_second": self.macs_per_second,
            "budget_basis": self.budget_basis,
            "latency_ms": self.latency_ms,
            "note": "host figures are onnxruntime on this machine; not a claim about the device",
        }


@dataclass(frozen=True)
class ExportVerdict:
    """The profile's verdict on the deployed file, and what each budget was judged on."""

    profile: str
    deployed_file: str
    latency_basis: str | None
    sram_basis: str
    verdict: Verdict

    @property
    def passed(self) -> bool:
        return self.verdict.fits

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "deployed_file": self.deployed_file,
            "latency_basis": self.latency_basis,
            "sram_basis": self.sram_basis,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.verdict.checks],
            # each quantized file's test top-1 against float's (Profile.max_top1_drop)
            "top1_checks": [c.to_dict() for c in self.verdict.top1_checks],
            # budgets in force with no figure here (e.g. a measured latency with --runs 0)
            "unchecked": list(self.verdict.unchecked),
        }


@dataclass(frozen=True)
class ExportReport:
    """Everything ``natv2 export`` checked and measured (module docstring)."""

    arch: Arch
    encoding: str | None
    vector: tuple[int, ...] | None
    module: str  # the exported module's class name
    num_classes: int
    dataset: str | None
    source: Mapping[str, Any]
    onnx_metadata: Mapping[str, str]  # of the float file
    counts: CountCheck
    dtype: str  # the profile's (float32 without one)
    graph_costs: GraphCosts  # of the float graph, at ``dtype``
    cost_model: SubnetCost | None  # at ``dtype``, when the module is a plain Subnet
    parity: tuple[ParityCase, ...]
    int8_parity: tuple[Int8Parity, ...]
    int8: Int8Files | None
    tflite: TfliteExport | None
    tflite_note: str | None  # why no TFLite file was written, when the profile wanted one
    tflm: TflmArena | None
    tflm_accuracy: TflmTop1 | None
    accuracy: Top1
    latency: LatencyReport
    verdict: ExportVerdict | None
    files: Mapping[str, FileEntry]
    out: Path

    @property
    def id(self) -> str:
        return self.arch.id

    @property
    def resolution(self) -> int:
        return self.arch.resolution

    def _memory(self) -> dict[str, Any]:
        model = self.cost_model
        return {
            "dtype": self.dtype,
            "flash_bytes": {
                "onnx_graph": self.graph_costs.flash_bytes,
                "cost_model": None if model is None else model.flash_bytes,
            },
            "peak_sram_bytes": self._peak_sram(),
            "peak_node": self.graph_costs.peak_node,
            "tflite_bytes": {
                "file": None if self.tflite is None else len(self.tflite.model),
                "cost_model": None if model is None else model.tflite_bytes,
            },
            "tflm_arena_bytes": {
                "tflm": None if self.tflm is None else self.tflm.arena_bytes,
                "cost_model": None if model is None else model.tflm_arena_bytes,
                "cost_model_persistent": None if model is None else model.tflm_persistent_bytes,
            },
        }

    def _peak_sram(self) -> dict[str, Any]:
        model = self.cost_model
        return {
            "onnx_graph": self.graph_costs.peak_sram_bytes,
            "cost_model": None if model is None else model.peak_sram_bytes,
        }

    def _counts(self) -> dict[str, Any]:
        doc = self.counts.to_dict()
        if self.int8 is not None:
            doc["params"]["int8_graph"] = self.int8.costs.params
            doc["macs"]["int8_graph"] = self.int8.costs.macs
        return doc

    def _tflite(self) -> dict[str, Any] | None:
        if self.tflite is not None:
            return self.tflite.to_dict()
        return None if self.tflite_note is None else {"note": self.tflite_note}

    def _tflm(self) -> dict[str, Any] | None:
        if self.tflm is None:
            return None
        return {
            "runtime": "tflite-micro Python interpreter (TFLM reference kernels)",
            **self.tflm.to_dict(),
            "natv2_peak_sram_bytes": self._peak_sram(),
            "accuracy": None if self.tflm_accuracy is None else self.tflm_accuracy.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """The document of ``OUT/report.json``."""
        return {
            "format": EXPORT_FORMAT,
            "natv2_version": __version__,
            "id": self.id,
            "encoding": self.encoding,
            "vector": None if self.vector is None else list(self.vector),
            "arch": self.arch.to_dict(),
            "module": self.module,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "dataset": self.dataset,
            "source": dict(self.source),
            "onnx": {
                "exporter": EXPORTER,
                "opset": ONNX_OPSET,
                "input": INPUT_NAME,
                "output": OUTPUT_NAME,
                "dynamic_batch": True,
                "metadata": dict(self.onnx_metadata),
            },
            "accuracy": self.accuracy.to_dict(),
            **self._counts(),
            "memory": self._memory(),
            "latency": self.latency.to_dict(),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "parity": {
                "rule": f"max |ORT - PyTorch| <= {PARITY_RTOL:g} * max(1, max |logit|), per batch",
                "float": [c.to_dict() for c in self.parity],
                "int8_vs_float": [c.to_dict() for c in self.int8_parity] or None,
            },
            "int8": None if self.int8 is None else self.int8.to_dict(),
            "int8_host": None if self.int8 is None else self.int8.host_dict(),
            "tflite": self._tflite(),
            "tflm": self._tflm(),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
        }

    def to_json(self) -> dict[str, Any]:
        """The one document of ``natv2 export --json``: report.json plus where it lies."""
        return {**self.to_dict(), "out": str(self.out)}


# ----------------------------------------------------------------------------- the summary


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def _cost_model_note(value: int | None) -> str:
    return "" if value is None else f" (cost model {value:,})"


def _figures(r: ExportReport) -> list[str]:
    m, p, g = r.counts, r.counts, r.graph_costs
    model = r.cost_model
    worst = max(r.parity, key=lambda c: c.max_abs_diff)
    return [
        f"exported   {r.id} ({r.encoding or '?'}, {r.module}) -> {r.out}",
        f"files      {', '.join([*r.files, REPORT_FILE])}",
        f"MACs       {m.macs_graph:,} (graph) = {m.macs_fvcore:,} (fvcore)"
        + (f" = {m.macs_cost_model:,} (cost model)" if m.macs_cost_model is not None else ""),
        f"params     module {p.params_module:,}, BN-folded {p.params_folded:,} = graph "
        f"{p.params_graph:,} ({p.bn_params_removed:,} BatchNorm params folded away)",
        f"flash      {_fmt_bytes(g.flash_bytes)} at {r.dtype}"
        + _cost_model_note(None if model is None else model.flash_bytes),
        f"peak SRAM  {_fmt_bytes(g.peak_sram_bytes)} at {r.dtype}"
        + _cost_model_note(None if model is None else model.peak_sram_bytes),
        f"parity     max |ORT - PyTorch| {worst.max_abs_diff:.2e} over "
        f"{len(r.parity)} batches (tolerance {worst.tolerance:.1e})",
    ]


def _files(r: ExportReport) -> list[str]:
    lines = []
    if r.int8 is not None:
        q = r.int8
        lines.append(
            f"int8       {q.file_bytes:,} B vs float {q.float_file_bytes:,} B "
            f"({q.size_ratio:.2f}x smaller), calibrated on {q.calibration_images} images"
        )
        lines.append(
            f"int8 host  {q.host_file_bytes:,} B ({INT8_HOST_FILE}: uint8 activations, for "
            f"onnxruntime on a host; {INT8_FILE} is the microcontroller file)"
        )
    if r.tflite is not None:
        graph, io_ = r.tflite.graph, r.tflite.graph.input
        lines.append(
            f"tflite     {len(r.tflite.model):,} B"
            + _cost_model_note(None if r.cost_model is None else r.cost_model.tflite_bytes)
            + ", "
            f"{'fully int8' if graph.fully_int8 else 'NOT fully int8'}, "
            f"{sum(graph.ops.values())} ops, no PAD; input {io_.dtype} "
            f"{'x'.join(map(str, io_.shape))} (scale {io_.scale:.4g}, "
            f"zero point {io_.zero_point})"
        )
    elif r.tflite_note is not None:
        lines.append(f"tflite     {r.tflite_note}")
    if r.tflm is not None:
        model = None if r.cost_model is None else r.cost_model.tflm_arena_bytes
        lines.append(
            f"TFLM arena {_fmt_bytes(r.tflm.arena_bytes)}: activations "
            f"{r.tflm.head_bytes:,} B + persistent {r.tflm.tail_bytes:,} B "
            f"(natv2 peak SRAM {r.graph_costs.peak_sram_bytes:,} B"
            + (f"; cost model TFLM arena {model:,} B)" if model is not None else ")")
        )
    return lines


def _top1(r: ExportReport) -> list[str]:
    lines = []
    acc = r.accuracy
    if acc.float_top1 is not None:
        text = f"top-1      float {100 * acc.float_top1:.2f} %"
        if acc.int8_top1 is not None and acc.int8_float_agreement is not None:
            text += (
                f", int8 {100 * acc.int8_top1:.2f} % (agree on "
                f"{100 * acc.int8_float_agreement:.1f} %)"
            )
        if acc.int8_host_top1 is not None and acc.int8_host_float_agreement is not None:
            text += (
                f", int8 host {100 * acc.int8_host_top1:.2f} % (agree on "
                f"{100 * acc.int8_host_float_agreement:.1f} %)"
            )
        text += f" on {acc.dataset} test ({acc.images} images)"
        lines.append(text)
    t = r.tflm_accuracy
    if r.tflm is not None and t is not None:
        agree = t.agreement_with_onnx_int8
        lines.append(
            f"TFLM       top-1 {100 * t.top1:.2f} % on {t.images} test images"
            + ("" if agree is None else f", agrees with onnxruntime int8 on {100 * agree:.1f} %")
        )
    if acc.search_val_accuracy is not None:
        lines.append(f"search     val top-1 {100 * acc.search_val_accuracy:.2f} %")
    return lines


def _latency(r: ExportReport) -> list[str]:
    lines = []
    lat = r.latency
    for key, name in (("float", "float"), ("int8", "int8"), ("int8_host", "int8 host")):
        if key in lat.host:
            h = lat.host[key]
            lines.append(
                f"latency    {name}: median {h.median_ms:.3f} ms, p90 {h.p90_ms:.3f} ms "
                f"(onnxruntime on this host, {h.intra_op_threads} threads, batch 1)"
            )
    if lat.estimate_ms is not None:
        lines.append(
            f"           estimate {lat.estimate_ms:.3f} ms (MACs / {lat.macs_per_second:g})"
        )
    return lines


def _verdict(r: ExportReport) -> list[str]:
    v = r.verdict
    if v is None:
        return ["verdict    no device profile given"]
    checks = v.verdict.checks
    failed = [c.name for c in v.verdict.failed] + [c.file for c in v.verdict.failed_top1]
    parts = [f"{c.name} {'pass' if c.passed else 'FAIL'}" for c in checks]
    if v.verdict.top1_checks:
        worst = max(v.verdict.top1_checks, key=lambda c: c.drop)
        parts.append(f"int8 top-1 {'pass' if not v.verdict.failed_top1 else 'FAIL'}")
    head = "pass" if not failed else f"FAIL ({', '.join(failed)})"
    lines = [f"verdict    {head} on {v.profile} [{', '.join(parts) or 'no budgets'}]"]
    for c in v.verdict.failed_top1:
        lines.append(f"           {c.describe()}")
    if v.verdict.top1_checks and not v.verdict.failed_top1:
        lines.append(
            f"           quantized files within {100 * worst.tolerance:.2f} points of float "
            f"top-1 (worst: {worst.file}, {worst.change_text})"
        )
    acc = r.accuracy
    if v.verdict.top1_checks and acc.int8_host_top1 is not None and acc.float_top1 is not None:
        host_drop = acc.float_top1 - acc.int8_host_top1
        if host_drop > worst.tolerance:
            lines.append(
                f"note       {INT8_HOST_FILE} (not judged: no device runs it) is "
                f"{100 * host_drop:.2f} points below float: its weights have 7 bits for x86 "
                f"kernels without VNNI; on such a host run {FLOAT_FILE}"
            )
    if v.verdict.unchecked:
        lines.append(f"           not checked (no figure): {', '.join(v.verdict.unchecked)}")
    return lines


def summary(report: ExportReport) -> str:
    """The compact human summary of an export report."""
    return "\n".join(
        [
            *_figures(report),
            *_files(report),
            *_top1(report),
            *_latency(report),
            *_verdict(report),
        ]
    )
