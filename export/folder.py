"""The export folder: build every artefact, check it, report it, then move it into place.

:func:`export_folder` takes a plain, eval-ready ``nn.Module`` (a materialised ``Subnet``, a
fine-tuned one, an AEP ensemble) with its Arch, and writes::

    OUT/model.onnx        float32, dynamic batch, metadata (natv2.export.onnx)
    OUT/model.int8.onnx   QDQ int8 (when the profile's dtype is int8, or asked for): int8
                          activations, the microcontroller artefact
    OUT/model.int8-host.onnx  the same int8 weights with uint8 activations, for hosts: written
                          with model.int8.onnx; onnxruntime on x86 fuses its QDQ nodes into
                          QLinear kernels, which it does not do for int8 activations
                          (natv2.export.quantize has the measurements)
    OUT/model.int8.tflite fully int8 TFLite (int8 profiles, with the ``tflite`` extra; or asked
                          for), run by TensorFlow Lite Micro (natv2.export.tflite / .tflm)
    OUT/model.pt          state dict of the plain module   } written by the caller's
    OUT/arch.json         rebuilds it without the supernet } ``save_module``
    OUT/report.json       natv2.export.report.ExportReport, with the sha256 of every other file

The steps, in order, each a function below: plan (what the options ask for, refused before
any work), float graph (export, checker, counts), parity (onnxruntime against PyTorch),
int8 (both ONNX files), TFLite (and its TFLM arena), top-1, latency, verdict, write.

Nothing is written until every check has passed: the folder is built in a temporary sibling
``.OUT.tmp-*`` and renamed into place at the end; an existing OUT is replaced only then (and
only if it is an export folder or empty). On any failure no trace is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn

from natv2 import __version__
from natv2.device_profiles import Profile, QuantizedTop1
from natv2.errors import Natv2Error
from natv2.export.onnx import (
    EXPORTER,
    INPUT_NAME,
    CountCheck,
    ParityCase,
    check_counts,
    check_onnx,
    check_parity,
    ort_session,
    parity_cases,
    run_session,
    set_metadata,
    to_onnx,
)
from natv2.export.quantize import CALIBRATION_IMAGES
from natv2.export.report import (
    FLOAT_FILE,
    INT8_FILE,
    INT8_HOST_FILE,
    REPORT_FILE,
    TIMED_FILES,
    ExportReport,
    ExportVerdict,
    FileEntry,
    Int8Files,
    Int8Parity,
    LatencyReport,
    TflmTop1,
    Top1,
)
from natv2.export.tflite import TFLITE_FILE
from natv2.export.validate import costs_of_graph
from natv2.profiling.counters import GraphCosts, onnx_costs
from natv2.profiling.latency import LatencyStats, measure_latency
from natv2.space import Arch
from natv2.untrusted import check_out_folder, file_errors, path_error

if TYPE_CHECKING:
    from natv2.export.tflite import TfliteExport
    from natv2.export.tflm import TflmArena, TflmRunner
    from natv2.profiling.cost import SubnetCost

__all__ = ["PARITY_BATCHES", "calibration_batches", "export_folder"]

# What an export folder may hold: an existing OUT with anything else is not replaced.
_EXPORT_FILES = frozenset(
    {FLOAT_FILE, INT8_FILE, INT8_HOST_FILE, TFLITE_FILE, REPORT_FILE, "model.pt", "arch.json"}
)
PARITY_BATCHES = (1, 7)

#: one parity batch: what it holds ("random", "<dataset> test images") and the images
Batch = tuple[str, torch.Tensor]


def _log_nothing(_message: str) -> None:
    pass


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Plan:
    """What this export writes, decided from the options before any work starts."""

    resolution: int
    dtype: str  # the profile's (float32 without one)
    int8: bool
    tflite: bool
    tflite_note: str | None  # why an int8 profile gets no TFLite file
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)


def _plan(
    module: nn.Module,
    arch: Arch,
    profile: Profile | None,
    dataset,
    int8: bool | None,
    tflite: bool | None,
) -> _Plan:
    """Refuse options that cannot work (a dataset of another class count, int8 or TFLite
    without calibration images, TFLite without its extra) before anything is exported."""
    from natv2.export.tflite import INSTALL_HINT, require_tflite, tflite_available

    resolution = arch.resolution
    dtype = profile.dtype if profile is not None else "float32"
    want_int8 = (dtype == "int8") if int8 is None else bool(int8)
    with torch.no_grad():
        out = module(torch.zeros((1, 3, resolution, resolution)))
    num_classes = int(out.reshape(1, -1).shape[1])
    if dataset is not None and dataset.num_classes != num_classes:
        raise Natv2Error(
            f"the model outputs {num_classes} classes but dataset {dataset.name} has "
            f"{dataset.num_classes}; give the dataset the model was trained on"
        )
    if want_int8 and dataset is None:
        raise Natv2Error(
            "int8 export needs calibration images: give --dataset (the dataset the model was "
            "trained on), or --no-int8"
        )
    tflite_note = None
    if tflite is None:
        want_tflite = dtype == "int8" and want_int8 and tflite_available()
        if dtype == "int8" and want_int8 and not want_tflite:
            tflite_note = f"not written: the tflite extra is not installed ({INSTALL_HINT})"
    else:
        want_tflite = bool(tflite)
    if want_tflite:
        require_tflite("--tflite")
        if dataset is None:
            raise Natv2Error(
                "TFLite int8 export needs calibration images: give --dataset (the dataset the "
                "model was trained on), or --no-tflite"
            )
    return _Plan(resolution, dtype, want_int8, want_tflite, tflite_note, num_classes)


# ----------------------------------------------------------------------------- float graph


def _float_graph(
    module: nn.Module,
    arch: Arch,
    plan: _Plan,
    cost_config,
    cost_counts: dict[str, int] | None,
    log: Callable[[str], None],
) -> tuple[onnx.ModelProto, CountCheck]:
    """The float ONNX graph, checked, with MACs and params counted three ways."""
    from natv2.profiling.cost import subnet_cost

    log(f"exporting {arch.id} ({type(module).__name__}) with {EXPORTER}")
    model = to_onnx(module, plan.resolution)
    check_onnx(model)
    cost: SubnetCost | SimpleNamespace | None = None
    if cost_config is not None:
        cost = subnet_cost(arch, cost_config)
    elif cost_counts is not None:
        cost = SimpleNamespace(params=int(cost_counts["params"]), macs=int(cost_counts["macs"]))
    return model, check_counts(module, model, plan.shape, cost)


def _metadata(
    model: onnx.ModelProto,
    arch: Arch,
    plan: _Plan,
    counts: CountCheck,
    *,
    encoding: str | None,
    vector: Sequence[int] | None,
    profile: Profile | None,
    dataset,
    search_accuracy: float | None,
) -> dict[str, Any]:
    """Stamp the float graph with what it is; return the properties every file carries."""
    props = {
        "natv2_version": __version__,
        "arch_id": arch.id,
        "arch_vector": None if vector is None else [int(v) for v in vector],
        "arch": arch.to_dict(),
        "encoding": encoding,
        "resolution": plan.resolution,
        "num_classes": plan.num_classes,
        "profile": profile.name if profile is not None else None,
        "macs": counts.macs_graph,
        "params": counts.params_module,
        "graph_params": counts.params_graph,
        "val_accuracy": search_accuracy,
        "dataset": dataset.name if dataset is not None else None,
        "exporter": EXPORTER,
    }
    set_metadata(model, {**props, "dtype": "float32"})
    check_onnx(model)
    return props


# ----------------------------------------------------------------------------- parity


def _images(split, n: int) -> torch.Tensor:
    n = min(n, len(split))
    return torch.stack([split[i][0] for i in range(n)])


def _parity_batches(plan: _Plan, dataset, seed: int) -> list[Batch]:
    """Random images and (with a dataset) real test images, at every batch size."""
    gen = torch.Generator().manual_seed(seed)
    r = plan.resolution
    random_batch = torch.randn((max(PARITY_BATCHES), 3, r, r), generator=gen)
    batches: list[Batch] = [("random", random_batch[:b]) for b in PARITY_BATCHES]
    if dataset is not None:
        real = dataset.prepare_batch(_images(dataset.test, max(PARITY_BATCHES)), r, train=False)
        batches += [(f"{dataset.name} test images", real[:b]) for b in PARITY_BATCHES]
    return batches


def _parity(
    module: nn.Module, session, batches: Sequence[Batch], log: Callable[[str], None]
) -> tuple[ParityCase, ...]:
    """onnxruntime against PyTorch on every batch; raises when any is outside its tolerance."""
    parity = parity_cases(module, session, batches)
    check_parity(parity)
    worst = max(parity, key=lambda c: c.max_abs_diff / c.tolerance)
    log(
        f"parity ok: max |ORT - PyTorch| {max(c.max_abs_diff for c in parity):.2e} "
        f"(worst {worst.max_abs_diff / worst.tolerance:.1%} of the tolerance)"
    )
    return tuple(parity)


# ----------------------------------------------------------------------------- int8


def calibration_batches(
    dataset, resolution: int, n: int = CALIBRATION_IMAGES, batch: int = 100
) -> list[torch.Tensor]:
    """The int8 calibration images (``n`` fixed training images), prepared at ``resolution``:
    what both int8 files are calibrated on (and ``natv2.qat`` starts its ranges from)."""
    if hasattr(dataset, "calibration_subset"):
        images = dataset.calibration_subset(n)
    else:
        images = [dataset.train[i] for i in range(min(n, len(dataset.train)))]
    out = []
    for start in range(0, len(images), batch):
        xs = torch.stack([images[i][0] for i in range(start, min(start + batch, len(images)))])
        out.append(dataset.prepare_batch(xs, resolution, train=False))
    return out


@dataclass(frozen=True)
class _Int8:
    """The two int8 ONNX files, their sessions, and how far the int8 one is from float."""

    model: onnx.ModelProto
    session: Any
    host_model: onnx.ModelProto
    host_session: Any
    costs: GraphCosts
    parity: tuple[Int8Parity, ...]


def _int8(
    model: onnx.ModelProto,
    session,
    calib: list[torch.Tensor],
    props: dict[str, Any],
    batches: Sequence[Batch],
    plan: _Plan,
    threads: int | None,
    log: Callable[[str], None],
) -> _Int8:
    """Quantize the float graph twice on the same calibration images: int8 activations (the
    microcontroller file) and uint8 activations (the host file)."""
    from natv2.export.quantize import quantize_int8

    arrays = [b.numpy() for b in calib]
    log(f"quantizing to int8 (QDQ, per-channel), calibrated on {_count(calib)} train images")
    int8_model = quantize_int8(model, arrays, input_name=INPUT_NAME)
    set_metadata(int8_model, {**props, "dtype": "int8"})
    check_onnx(int8_model, "the int8 model")
    int8_session = ort_session(int8_model, threads, exact=True)  # what the device computes
    costs = onnx_costs(int8_model, dtype="int8", input_shape=plan.shape)
    parity = []
    for label, x in batches:
        ref = run_session(session, x)
        q = run_session(int8_session, x)
        parity.append(
            Int8Parity(
                inputs=label,
                batch=len(x),
                max_abs_diff_vs_float=float(np.max(np.abs(q - ref))),
                max_abs_logit=float(np.max(np.abs(ref))),
                argmax_agreement=float(np.mean(q.argmax(1) == ref.argmax(1))),
            )
        )
    log("quantizing the host file (int8 weights, uint8 activations) on the same images")
    host_model = quantize_int8(model, arrays, input_name=INPUT_NAME, activations="uint8")
    set_metadata(host_model, {**props, "dtype": "int8", "activations": "uint8"})
    check_onnx(host_model, "the int8 host model")
    host_session = ort_session(host_model, threads)
    return _Int8(int8_model, int8_session, host_model, host_session, costs, tuple(parity))


def _count(batches: Sequence[torch.Tensor]) -> int:
    return sum(len(b) for b in batches)


# ----------------------------------------------------------------------------- TFLite


@dataclass(frozen=True)
class _Tflm:
    """The int8 TFLite file, the smallest arena TFLM runs it in, and a runner at that size."""

    export: TfliteExport
    arena: TflmArena
    runner: TflmRunner


def _tflite(
    module: nn.Module,
    plan: _Plan,
    calib: list[torch.Tensor],
    batches: Sequence[Batch],
    log: Callable[[str], None],
) -> _Tflm:
    from natv2.export.tflite import convert_int8
    from natv2.export.tflm import TflmRunner, find_arena

    log(
        f"converting to int8 TFLite (litert-torch + ai-edge-quantizer), calibrated on "
        f"{_count(calib)} train images"
    )
    checks = torch.cat([x for _, x in batches if len(x) == max(PARITY_BATCHES)])
    tfl = convert_int8(module, plan.resolution, calib, check_inputs=checks)
    log("finding the smallest TFLM arena (binary search)")
    arena = find_arena(tfl.model)
    return _Tflm(tfl, arena, TflmRunner(tfl.model, arena.arena_bytes))


# ----------------------------------------------------------------------------- top-1


def _predictions(session, dataset, resolution: int, limit: int | None, batch: int = 256):
    n = len(dataset.test) if limit is None else min(limit, len(dataset.test))
    preds, labels = [], []
    for start in range(0, n, batch):
        items = [dataset.test[i] for i in range(start, min(start + batch, n))]
        xs = torch.stack([x for x, _ in items])
        x = dataset.prepare_batch(xs, resolution, train=False)
        preds.append(run_session(session, x).argmax(1))
        labels.append(np.array([int(y) for _, y in items]))
    return np.concatenate(preds), np.concatenate(labels)


def _top1(
    session,
    int8: _Int8 | None,
    tflm: _Tflm | None,
    dataset,
    plan: _Plan,
    test_limit: int | None,
    search_accuracy: float | None,
    log: Callable[[str], None],
) -> tuple[Top1, TflmTop1 | None]:
    """Top-1 of every file on the same test images, and how often each agrees with float."""
    if dataset is None:
        return Top1(search_val_accuracy=search_accuracy), None
    r = plan.resolution
    log(f"top-1 on the {dataset.name} test split")
    pred, labels = _predictions(session, dataset, r, test_limit)
    pred8 = pred_h = None
    if int8 is not None:
        pred8, _ = _predictions(int8.session, dataset, r, test_limit)
        pred_h, _ = _predictions(int8.host_session, dataset, r, test_limit)
    top1 = Top1(
        dataset=dataset.name,
        images=len(labels),
        float_top1=float(np.mean(pred == labels)),
        int8_top1=None if pred8 is None else float(np.mean(pred8 == labels)),
        int8_float_agreement=None if pred8 is None else float(np.mean(pred8 == pred)),
        int8_host_top1=None if pred_h is None else float(np.mean(pred_h == labels)),
        int8_host_float_agreement=None if pred_h is None else float(np.mean(pred_h == pred)),
        search_val_accuracy=search_accuracy,
    )
    if tflm is None:
        return top1, None
    from natv2.export.tflm import tflm_predictions

    log(f"TFLM top-1 on {len(labels)} test images")
    pred_t, _ = tflm_predictions(tflm.runner, dataset, r, test_limit)
    return top1, TflmTop1(
        dataset=dataset.name,
        images=len(labels),
        top1=float(np.mean(pred_t == labels)),
        agreement_with_onnx_int8=None if pred8 is None else float(np.mean(pred_t == pred8)),
        agreement_with_float=float(np.mean(pred_t == pred)),
    )


# ----------------------------------------------------------------------------- latency


def _deployed_file(plan: _Plan, int8: _Int8 | None) -> str:
    """The file the device runs: the int8 one for int8 profiles, never the host file."""
    return INT8_FILE if (int8 is not None and plan.dtype == "int8") else FLOAT_FILE


def _latency(
    models: dict[str, onnx.ModelProto | None],
    plan: _Plan,
    profile: Profile | None,
    macs: int,
    deployed: str,
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    log: Callable[[str], None],
) -> LatencyReport:
    """Time every ONNX file on this host, and judge latency as the profile says."""
    host: dict[str, LatencyStats] = {}
    if runs > 0:
        log(f"measuring onnxruntime latency on this host ({runs} runs)")
        for key, onnx_model in models.items():
            if onnx_model is not None:
                host[key] = measure_latency(
                    onnx_model.SerializeToString(),
                    plan.shape,
                    intra_op_threads=threads,
                    warmup=warmup,
                    runs=runs,
                )
    estimate = None if profile is None else profile.estimate_latency_ms(macs)
    deployed_key = "int8" if deployed == INT8_FILE else "float"
    measured = host[deployed_key].median_ms if deployed_key in host else None
    # the profile's rule (Profile.judged_latency_ms); without a profile, the host time
    latency_ms = measured if profile is None else profile.judged_latency_ms(estimate, measured)
    basis = None
    if latency_ms is not None:
        basis = "this host" if profile is None else profile.latency_basis
    return LatencyReport(
        host=host,
        estimate_ms=estimate,
        macs_per_second=profile.macs_per_second if profile is not None else None,
        budget_basis=basis,
        latency_ms=latency_ms,
    )


# ----------------------------------------------------------------------------- verdict


def _sram_basis(profile: Profile, measured: bool) -> str:
    """What the SRAM budget was judged on, in words (report.json's verdict)."""
    if profile.sram_cost_key != "tflm_arena_bytes":
        return "peak of live activations (MCUNet-style, the ONNX graph)"
    if measured:
        return "TFLM arena (measured by tflite-micro: activations + persistent part)"
    return "TFLM arena (cost model: activations + persistent part; no TFLite file)"


def _quantized_top1(top1: Top1, tflm_top1: TflmTop1 | None) -> list[QuantizedTop1]:
    """The device's quantized files' test top-1 beside float's on the same images: what the
    profile's accuracy rule judges (``Profile.judge``). The host file is not among them: no
    profile deploys it (``_deployed_file``), and its 7-bit weights are a host kernel's
    constraint; its figure is reported, and the summary notes a drop."""
    if top1.float_top1 is None:
        return []
    out = []
    if top1.int8_top1 is not None:
        out.append(QuantizedTop1(INT8_FILE, top1.float_top1, top1.int8_top1, top1.images))
    if tflm_top1 is not None:
        out.append(
            QuantizedTop1(
                f"{TFLITE_FILE} (TFLM)", top1.float_top1, tflm_top1.top1, tflm_top1.images
            )
        )
    return out


def _verdict(
    profile: Profile | None,
    deployed: str,
    graph_costs: GraphCosts,
    cost_model: SubnetCost | None,
    tflm: _Tflm | None,
    latency: LatencyReport,
    quantized: Sequence[QuantizedTop1],
) -> ExportVerdict | None:
    """The profile's judgement of the deployed file. A TFLM profile's SRAM and flash budgets
    are judged on TFLM's measured arena and the TFLite file where there are ones, else on the
    cost model's figures for them; the device's quantized files' top-1 against float's."""
    if profile is None:
        return None
    arena = tflm.arena.arena_bytes if tflm is not None else None
    tflite_bytes = len(tflm.export.model) if tflm is not None else None
    if cost_model is not None:
        arena = cost_model.tflm_arena_bytes if arena is None else arena
        tflite_bytes = cost_model.tflite_bytes if tflite_bytes is None else tflite_bytes
    judged = profile.judge(
        costs_of_graph(
            graph_costs, latency.latency_ms, tflm_arena_bytes=arena, tflite_bytes=tflite_bytes
        ),
        quantized,
    )
    return ExportVerdict(
        profile=profile.name,
        deployed_file=deployed,
        latency_basis=latency.budget_basis,
        sram_basis=_sram_basis(profile, tflm is not None),
        verdict=judged,
    )


# ----------------------------------------------------------------------------- write


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``, replacing an old ``out`` only now."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write(
    out: Path,
    artefacts: dict[str, bytes],
    save_module: Callable[[Path], None],
    finish: Callable[[dict[str, FileEntry]], ExportReport],
) -> ExportReport:
    """Write ``artefacts`` and the caller's module files into a temporary sibling, build the
    report from what was written (``finish``), add report.json and rename the folder into
    place; on any failure remove the temporary folder and the parents this call made."""
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    with file_errors(out, "write the export folder"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for name, data in artefacts.items():
            (tmp / name).write_bytes(data)
        save_module(tmp)
        files = {
            p.name: FileEntry(bytes=p.stat().st_size, sha256=_sha256(p))
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        report = finish(files)
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        _move_into_place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # folders this call made, innermost first
            try:
                p.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise path_error(out, exc, "write the export folder") from None
        raise
    return report


# ----------------------------------------------------------------------------- the folder


def export_folder(
    module: nn.Module,
    out: str | Path,
    *,
    arch: Arch,
    save_module: Callable[[Path], None],
    encoding: str | None = None,
    vector: Sequence[int] | None = None,
    cost_config=None,
    cost_counts: dict[str, int] | None = None,
    profile: Profile | None = None,
    dataset=None,
    int8: bool | None = None,
    tflite: bool | None = None,
    search_accuracy: float | None = None,
    source: dict[str, Any] | None = None,
    latency_runs: int = 50,
    latency_warmup: int = 10,
    threads: int | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    test_limit: int | None = None,
    seed: int = 0,
    int8_module: nn.Module | None = None,
    log: Callable[[str], None] = _log_nothing,
) -> ExportReport:
    """Export ``module`` (the network ``arch`` describes) to the folder ``out``; return the
    report (also written as ``out/report.json``).

    ``save_module(folder)`` writes ``model.pt`` + ``arch.json`` (``natv2.supernet.save_subnet``
    for a Subnet). ``cost_config``: the ``SupernetConfig`` when ``module`` is a plain Subnet of
    ``arch`` (the cost model then takes part in the checks: MACs, params, flash, peak);
    ``cost_counts``: ``{"params": .., "macs": ..}`` of another analytical model of ``module``
    (e.g. ``natv2.aep.aep_cost`` of an AEP model), checked the same way; neither: no cost model
    check (fvcore and the graph counter must still agree). ``dataset``: a
    ``natv2.data.DatasetSplits`` (or None): real images for parity, int8 calibration images and
    the test split for top-1. ``int8``: None lets the profile's dtype decide. ``tflite``: write
    and check ``model.int8.tflite``; None: for int8 profiles when the ``tflite`` extra is
    installed (else the report says why there is none); True without the extra is an error.
    ``int8_module``: a copy of ``module`` prepared for int8 (``natv2.qat.prepare_for_int8``)
    that the int8 ONNX and TFLite files are quantized from; ``model.onnx``, ``model.pt`` and the
    float top-1 every int8 file is judged against stay ``module``'s.
    """
    from natv2.profiling.cost import subnet_cost

    out = Path(out)
    check_out_folder(out, "an export folder", _EXPORT_FILES)
    module = module.eval()
    if latency_runs < 0 or calibration_images < 1:
        raise Natv2Error("latency runs must be >= 0 and calibration images >= 1")
    plan = _plan(module, arch, profile, dataset, int8, tflite)

    model, counts = _float_graph(module, arch, plan, cost_config, cost_counts, log)
    session = ort_session(model, threads)
    batches = _parity_batches(plan, dataset, seed)
    parity = _parity(module, session, batches, log)
    props = _metadata(
        model,
        arch,
        plan,
        counts,
        encoding=encoding,
        vector=vector,
        profile=profile,
        dataset=dataset,
        search_accuracy=search_accuracy,
    )
    graph_costs = onnx_costs(model, dtype=plan.dtype, input_shape=plan.shape)
    cost_model = subnet_cost(arch, cost_config, plan.dtype) if cost_config is not None else None

    calib: list[torch.Tensor] = []
    if plan.int8 or plan.tflite:
        calib = calibration_batches(dataset, plan.resolution, calibration_images)
    quantized_from = module if int8_module is None else int8_module.eval()
    q_model, q_session = model, session
    if plan.int8 and quantized_from is not module:
        log("the int8 files are quantized from the copy fine-tuned for int8")
        q_model = to_onnx(quantized_from, plan.resolution)  # in memory only: not a file
        check_onnx(q_model, "the float graph of the int8 fine-tuned copy")
        q_session = ort_session(q_model, threads)
        _parity(quantized_from, q_session, batches, log)
    q = _int8(q_model, q_session, calib, props, batches, plan, threads, log) if plan.int8 else None
    tflm = _tflite(quantized_from, plan, calib, batches, log) if plan.tflite else None
    top1, tflm_top1 = _top1(session, q, tflm, dataset, plan, test_limit, search_accuracy, log)

    deployed = _deployed_file(plan, q)
    timed = {
        "float": model,
        "int8": None if q is None else q.model,
        "int8_host": None if q is None else q.host_model,
    }
    assert list(timed) == list(TIMED_FILES)
    latency = _latency(
        timed,
        plan,
        profile,
        counts.macs_graph,
        deployed,
        runs=latency_runs,
        warmup=latency_warmup,
        threads=threads,
        log=log,
    )
    quantized = _quantized_top1(top1, tflm_top1)
    verdict = _verdict(profile, deployed, graph_costs, cost_model, tflm, latency, quantized)

    artefacts = {TIMED_FILES[k]: m.SerializeToString() for k, m in timed.items() if m is not None}
    if tflm is not None:
        artefacts[TFLITE_FILE] = tflm.export.model

    def finish(files: dict[str, FileEntry]) -> ExportReport:
        int8_files = None
        if q is not None:
            int8_files = Int8Files(
                calibration_images=_count(calib),
                costs=q.costs,
                file_bytes=files[INT8_FILE].bytes,
                float_file_bytes=files[FLOAT_FILE].bytes,
                host_file_bytes=files[INT8_HOST_FILE].bytes,
            )
        return ExportReport(
            arch=arch,
            encoding=encoding,
            vector=None if vector is None else tuple(int(v) for v in vector),
            module=type(module).__name__,
            num_classes=plan.num_classes,
            dataset=dataset.name if dataset is not None else None,
            source=source or {},
            onnx_metadata={p.key: p.value for p in model.metadata_props},
            counts=counts,
            dtype=plan.dtype,
            graph_costs=graph_costs,
            cost_model=cost_model,
            parity=parity,
            int8_parity=() if q is None else q.parity,
            int8=int8_files,
            tflite=None if tflm is None else tflm.export,
            tflite_note=plan.tflite_note,
            tflm=None if tflm is None else tflm.arena,
            tflm_accuracy=tflm_top1,
            accuracy=top1,
            latency=latency,
            verdict=verdict,
            files=files,
            out=out,
        )

    return _write(out, artefacts, save_module, finish)
