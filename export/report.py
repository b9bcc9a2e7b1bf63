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
    OUT/report.json       everything below, with the sha256 of every other file

Nothing is written until every check has passed: the folder is built in a temporary sibling
``.OUT.tmp-*`` and renamed into place at the end; an existing OUT is replaced only then (and
only if it is an export folder or empty). On any failure no trace is left.

Figures: params (module, BatchNorm-folded, graph) and MACs (graph, fvcore, cost model) from
``natv2.export.onnx.check_counts``; flash and peak SRAM at the profile's dtype from the graph
counter and the cost model; parity of onnxruntime against PyTorch; top-1 of the float, int8
and int8 host models on the test split and how often each int8 file agrees with float;
onnxruntime latency on this host of every ONNX file (and the profile's MACs-based estimate);
the profile's verdict on the deployed model (the int8 file for int8 profiles; never the host
file). With the TFLite file: its graph (ops, tensor types, quantization of input and
output), the smallest TFLM arena (activations + persistent parts), TFLM top-1 on the same test
images and its agreement with onnxruntime int8 (``report["tflite"]``, ``report["tflm"]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from natv2 import __version__
from natv2.device_profiles import Costs, Profile
from natv2.errors import Natv2Error
from natv2.export.onnx import (
    EXPORTER,
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    PARITY_RTOL,
    check_counts,
    check_onnx,
    check_parity,
    ort_session,
    parity_cases,
    run_session,
    set_metadata,
    to_onnx,
)
from natv2.export.tflite import TFLITE_FILE
from natv2.profiling.counters import onnx_costs
from natv2.profiling.latency import measure_latency
from natv2.space import Arch
from natv2.untrusted import check_out_folder, file_errors, path_error

__all__ = [
    "EXPORT_FORMAT",
    "FLOAT_FILE",
    "INT8_FILE",
    "INT8_HOST_FILE",
    "REPORT_FILE",
    "TFLITE_FILE",
    "export_folder",
    "summary",
]

EXPORT_FORMAT = "natv2-export/1"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_HOST_FILE = "model.int8-host.onnx"
REPORT_FILE = "report.json"
# What an export folder may hold: an existing OUT with anything else is not replaced.
_EXPORT_FILES = frozenset(
    {FLOAT_FILE, INT8_FILE, INT8_HOST_FILE, TFLITE_FILE, REPORT_FILE, "model.pt", "arch.json"}
)
PARITY_BATCHES = (1, 7)


def _log_nothing(_message: str) -> None:
    pass


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


def _images(split, n: int) -> torch.Tensor:
    n = min(n, len(split))
    return torch.stack([split[i][0] for i in range(n)])


def _calibration_set(dataset, n: int):
    if hasattr(dataset, "calibration_subset"):
        return dataset.calibration_subset(n)
    return [dataset.train[i] for i in range(min(n, len(dataset.train)))]


def _prepared_batches(dataset, images, resolution: int, batch: int = 100) -> list[torch.Tensor]:
    out = []
    for start in range(0, len(images), batch):
        xs = torch.stack([images[i][0] for i in range(start, min(start + batch, len(images)))])
        out.append(dataset.prepare_batch(xs, resolution, train=False))
    return out


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


def _sram_basis(profile: Profile, measured: bool) -> str:
    """What the SRAM budget was judged on, in words (report.json's verdict)."""
    if profile.sram_cost_key != "tflm_arena_bytes":
        return "peak of live activations (MCUNet-style, the ONNX graph)"
    if measured:
        return "TFLM arena (measured by tflite-micro: activations + persistent part)"
    return "TFLM arena (cost model: activations + persistent part; no TFLite file)"


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
    calibration_images: int = 300,
    test_limit: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = _log_nothing,
) -> dict[str, Any]:
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
    """
    from natv2.profiling.cost import SubnetCost, subnet_cost

    out = Path(out)
    check_out_folder(out, "an export folder", _EXPORT_FILES)
    module = module.eval()
    resolution = arch.resolution
    dtype = profile.dtype if profile is not None else "float32"
    want_int8 = (dtype == "int8") if int8 is None else bool(int8)
    shape = (1, 3, resolution, resolution)
    if latency_runs < 0 or calibration_images < 1:
        raise Natv2Error("latency runs must be >= 0 and calibration images >= 1")

    with torch.no_grad():
        num_classes = int(module(torch.zeros(shape)).reshape(1, -1).shape[1])
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
    from natv2.export.tflite import INSTALL_HINT, require_tflite, tflite_available

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

    # ---- float graph, checker, counts
    log(f"exporting {arch.id} ({type(module).__name__}) with {EXPORTER}")
    model = to_onnx(module, resolution)
    check_onnx(model)
    cost: SubnetCost | SimpleNamespace | None = None
    if cost_config is not None:
        cost = subnet_cost(arch, cost_config)
    elif cost_counts is not None:
        cost = SimpleNamespace(params=int(cost_counts["params"]), macs=int(cost_counts["macs"]))
    counts = check_counts(module, model, shape, cost)

    # ---- parity: onnxruntime vs PyTorch, random and real images, batch 1 and 7
    session = ort_session(model, threads)
    gen = torch.Generator().manual_seed(seed)
    random_batch = torch.randn((max(PARITY_BATCHES), 3, resolution, resolution), generator=gen)
    batches: list[tuple[str, torch.Tensor]] = [("random", random_batch[:b]) for b in PARITY_BATCHES]
    if dataset is not None:
        real = dataset.prepare_batch(
            _images(dataset.test, max(PARITY_BATCHES)), resolution, train=False
        )
        batches += [(f"{dataset.name} test images", real[:b]) for b in PARITY_BATCHES]
    parity = parity_cases(module, session, batches)
    check_parity(parity)
    worst = max(parity, key=lambda c: c.max_abs_diff / c.tolerance)
    log(
        f"parity ok: max |ORT - PyTorch| {max(c.max_abs_diff for c in parity):.2e} "
        f"(worst {worst.max_abs_diff / worst.tolerance:.1%} of the tolerance)"
    )

    # ---- metadata
    props = {
        "natv2_version": __version__,
        "arch_id": arch.id,
        "arch_vector": None if vector is None else [int(v) for v in vector],
        "arch": arch.to_dict(),
        "encoding": encoding,
        "resolution": resolution,
        "num_classes": num_classes,
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
    graph_costs = onnx_costs(model, dtype=dtype, input_shape=shape)
    cost_at_dtype = subnet_cost(arch, cost_config, dtype) if cost_config is not None else None

    # ---- int8
    int8_model = int8_session = int8_costs = None
    host_model = host_session = None
    int8_parity: list[dict[str, Any]] = []
    calib_n = 0
    calib: list[torch.Tensor] = []
    if want_int8 or want_tflite:
        calib = _prepared_batches(
            dataset, _calibration_set(dataset, calibration_images), resolution
        )
        calib_n = sum(len(b) for b in calib)
    if want_int8:
        from natv2.export.quantize import quantize_int8

        log(f"quantizing to int8 (QDQ, per-channel), calibrated on {calib_n} train images")
        int8_model = quantize_int8(model, [b.numpy() for b in calib], input_name=INPUT_NAME)
        set_metadata(int8_model, {**props, "dtype": "int8"})
        check_onnx(int8_model, "the int8 model")
        int8_session = ort_session(int8_model, threads)
        int8_costs = onnx_costs(int8_model, dtype="int8", input_shape=shape)
        for label, x in batches:
            ref = run_session(session, x)
            q = run_session(int8_session, x)
            int8_parity.append(
                {
                    "inputs": label,
                    "batch": len(x),
                    "max_abs_diff_vs_float": float(np.max(np.abs(q - ref))),
                    "max_abs_logit": float(np.max(np.abs(ref))),
                    "argmax_agreement": float(np.mean(q.argmax(1) == ref.argmax(1))),
                }
            )
        log("quantizing the host file (int8 weights, uint8 activations) on the same images")
        host_model = quantize_int8(
            model, [b.numpy() for b in calib], input_name=INPUT_NAME, activations="uint8"
        )
        set_metadata(host_model, {**props, "dtype": "int8", "activations": "uint8"})
        check_onnx(host_model, "the int8 host model")
        host_session = ort_session(host_model, threads)

    # ---- int8 TFLite, run by TFLM
    tfl = arena = runner = None
    if want_tflite:
        from natv2.export.tflite import convert_int8
        from natv2.export.tflm import TflmRunner, find_arena

        log(
            f"converting to int8 TFLite (litert-torch + ai-edge-quantizer), calibrated on "
            f"{calib_n} train images"
        )
        checks = torch.cat([x for _, x in batches if len(x) == max(PARITY_BATCHES)])
        tfl = convert_int8(module, resolution, calib, check_inputs=checks)
        log("finding the smallest TFLM arena (binary search)")
        arena = find_arena(tfl.model)
        runner = TflmRunner(tfl.model, arena.arena_bytes)

    # ---- accuracy on the test split
    accuracy: dict[str, Any] = {
        "dataset": None,
        "split": None,
        "images": 0,
        "float_top1": None,
        "int8_top1": None,
        "int8_float_agreement": None,
        "int8_host_top1": None,
        "int8_host_float_agreement": None,
        "search_val_accuracy": search_accuracy,
    }
    tflm_accuracy: dict[str, Any] | None = None
    if dataset is not None:
        log(f"top-1 on the {dataset.name} test split")
        pred, labels = _predictions(session, dataset, resolution, test_limit)
        pred8 = None
        accuracy.update(
            {
                "dataset": dataset.name,
                "split": "test",
                "images": len(labels),
                "float_top1": float(np.mean(pred == labels)),
            }
        )
        if int8_session is not None:
            pred8, _ = _predictions(int8_session, dataset, resolution, test_limit)
            accuracy["int8_top1"] = float(np.mean(pred8 == labels))
            accuracy["int8_float_agreement"] = float(np.mean(pred8 == pred))
        if host_session is not None:
            pred_h, _ = _predictions(host_session, dataset, resolution, test_limit)
            accuracy["int8_host_top1"] = float(np.mean(pred_h == labels))
            accuracy["int8_host_float_agreement"] = float(np.mean(pred_h == pred))
        if runner is not None:
            from natv2.export.tflm import tflm_predictions

            log(f"TFLM top-1 on {len(labels)} test images")
            pred_t, _ = tflm_predictions(runner, dataset, resolution, test_limit)
            tflm_accuracy = {
                "dataset": dataset.name,
                "split": "test",
                "images": len(labels),
                "top1": float(np.mean(pred_t == labels)),
                "agreement_with_onnx_int8": None
                if pred8 is None
                else float(np.mean(pred_t == pred8)),
                "agreement_with_float": float(np.mean(pred_t == pred)),
            }

    # ---- latency
    host: dict[str, Any] = {}
    if latency_runs > 0:
        log(f"measuring onnxruntime latency on this host ({latency_runs} runs)")
        timed = {"float": model, "int8": int8_model, "int8_host": host_model}
        for key, onnx_model in timed.items():
            if onnx_model is not None:
                host[key] = measure_latency(
                    onnx_model.SerializeToString(),
                    shape,
                    intra_op_threads=threads,
                    warmup=latency_warmup,
                    runs=latency_runs,
                ).to_dict()
    estimate = None if profile is None else profile.estimate_latency_ms(counts.macs_graph)
    deployed = INT8_FILE if (int8_model is not None and dtype == "int8") else FLOAT_FILE
    deployed_key = "int8" if deployed == INT8_FILE else "float"
    measured = host[deployed_key]["median_ms"] if deployed_key in host else None
    # the profile's rule (Profile.judged_latency_ms); without a profile, the host time
    latency_ms = measured if profile is None else profile.judged_latency_ms(estimate, measured)
    basis = None
    if latency_ms is not None:
        basis = "this host" if profile is None else profile.latency_basis

    # ---- verdict
    verdict = None
    model_arena = None if cost_at_dtype is None else cost_at_dtype.tflm_arena_bytes
    # a TFLM profile's SRAM budget is judged on TFLM's measured arena where there is one
    tflm_arena = arena.arena_bytes if arena is not None else model_arena
    # a TFLM profile's flash budget is judged on the TFLite file, measured where there is one
    model_tflite = None if cost_at_dtype is None else cost_at_dtype.tflite_bytes
    tflite_bytes = len(tfl.model) if tfl is not None else model_tflite
    if profile is not None:
        judged = profile.judge(
            Costs(
                params=counts.params_graph,
                macs=counts.macs_graph,
                flash_bytes=graph_costs.flash_bytes,
                peak_sram_bytes=graph_costs.peak_sram_bytes,
                tflm_arena_bytes=tflm_arena,
                tflite_bytes=tflite_bytes,
                latency_ms=latency_ms,
            )
        )
        verdict = {
            "profile": profile.name,
            "deployed_file": deployed,
            "latency_basis": basis,
            "sram_basis": _sram_basis(profile, arena is not None),
            "passed": judged.fits,
            "checks": [c.to_dict() for c in judged.checks],
            # budgets in force with no figure here (e.g. a measured latency with --runs 0)
            "unchecked": list(judged.unchecked),
        }

    report: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "natv2_version": __version__,
        "id": arch.id,
        "encoding": encoding,
        "vector": None if vector is None else [int(v) for v in vector],
        "arch": arch.to_dict(),
        "module": type(module).__name__,
        "resolution": resolution,
        "num_classes": num_classes,
        "dataset": dataset.name if dataset is not None else None,
        "source": source or {},
        "onnx": {
            "exporter": EXPORTER,
            "opset": ONNX_OPSET,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "dynamic_batch": True,
            "metadata": {p.key: p.value for p in model.metadata_props},
        },
        "accuracy": accuracy,
        **counts.to_dict(),
        "memory": {
            "dtype": dtype,
            "flash_bytes": {
                "onnx_graph": graph_costs.flash_bytes,
                "cost_model": None if cost_at_dtype is None else cost_at_dtype.flash_bytes,
            },
            "peak_sram_bytes": {
                "onnx_graph": graph_costs.peak_sram_bytes,
                "cost_model": None if cost_at_dtype is None else cost_at_dtype.peak_sram_bytes,
            },
            "peak_node": graph_costs.peak_node,
            "tflite_bytes": {
                "file": None if tfl is None else len(tfl.model),
                "cost_model": model_tflite,
            },
            "tflm_arena_bytes": {
                "tflm": None if arena is None else arena.arena_bytes,
                "cost_model": model_arena,
                "cost_model_persistent": None
                if cost_at_dtype is None
                else cost_at_dtype.tflm_persistent_bytes,
            },
        },
        "latency": {
            "host": host or None,
            "estimate_ms": estimate,
            "macs_per_second": profile.macs_per_second if profile is not None else None,
            "budget_basis": basis,
            "latency_ms": latency_ms,
            "note": "host figures are onnxruntime on this machine; not a claim about the device",
        },
        "verdict": verdict,
        "parity": {
            "rule": f"max |ORT - PyTorch| <= {PARITY_RTOL:g} * max(1, max |logit|), per batch",
            "float": [c.to_dict() for c in parity],
            "int8_vs_float": int8_parity or None,
        },
        "int8": None,
        "int8_host": None,
        "tflite": None if tfl is None else tfl.to_dict(),
        "tflm": None
        if arena is None
        else {
            "runtime": "tflite-micro Python interpreter (TFLM reference kernels)",
            **arena.to_dict(),
            "natv2_peak_sram_bytes": {
                "onnx_graph": graph_costs.peak_sram_bytes,
                "cost_model": None if cost_at_dtype is None else cost_at_dtype.peak_sram_bytes,
            },
            "accuracy": tflm_accuracy,
        },
        "files": {},
    }
    if tflite_note is not None:
        report["tflite"] = {"note": tflite_note}
    if int8_model is not None:
        assert int8_costs is not None
        report["params"]["int8_graph"] = int8_costs.params
        report["macs"]["int8_graph"] = int8_costs.macs
        report["int8"] = {
            "quant_format": "QDQ",
            "weights": "int8, symmetric, per channel",
            "activations": "int8, MinMax calibration",
            "calibration_images": calib_n,
            "flash_bytes": int8_costs.flash_bytes,
            "peak_sram_bytes": int8_costs.peak_sram_bytes,
        }
    if host_model is not None:
        report["int8_host"] = {
            "file": INT8_HOST_FILE,
            "purpose": f"host latency (onnxruntime); {INT8_FILE} is the microcontroller file",
            "quant_format": "QDQ",
            "weights": f"int8, symmetric, per channel (as {INT8_FILE})",
            "activations": "uint8, asymmetric, MinMax calibration (the same images)",
            "calibration_images": calib_n,
        }

    # ---- write: temporary sibling, then rename into place
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    with file_errors(out, "write the export folder"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / FLOAT_FILE).write_bytes(model.SerializeToString())
        if int8_model is not None:
            (tmp / INT8_FILE).write_bytes(int8_model.SerializeToString())
        if host_model is not None:
            (tmp / INT8_HOST_FILE).write_bytes(host_model.SerializeToString())
        if tfl is not None:
            (tmp / TFLITE_FILE).write_bytes(tfl.model)
        save_module(tmp)
        files: dict[str, dict[str, Any]] = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        report["files"] = files
        if int8_model is not None:
            float_bytes, int8_bytes = files[FLOAT_FILE]["bytes"], files[INT8_FILE]["bytes"]
            report["int8"].update(
                {
                    "file_bytes": int8_bytes,
                    "float_file_bytes": float_bytes,
                    "size_ratio": float_bytes / int8_bytes,
                }
            )
        if host_model is not None:
            report["int8_host"]["file_bytes"] = files[INT8_HOST_FILE]["bytes"]
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
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
    report["out"] = str(out)
    return report


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def summary(report: dict[str, Any]) -> str:
    """The compact human summary of an export report."""
    r = report
    p, m, mem, lat = r["params"], r["macs"], r["memory"], r["latency"]
    worst = max(r["parity"]["float"], key=lambda c: c["max_abs_diff"])
    lines = [
        f"exported   {r['id']} ({r['encoding'] or '?'}, {r['module']}) -> {r.get('out', '')}",
        f"files      {', '.join([*r['files'], REPORT_FILE])}",
        f"MACs       {m['onnx_graph']:,} (graph) = {m['fvcore']:,} (fvcore)"
        + (f" = {m['cost_model']:,} (cost model)" if m["cost_model"] is not None else ""),
        f"params     module {p['module']:,}, BN-folded {p['folded']:,} = graph {p['graph']:,} "
        f"({p['bn_removed']:,} BatchNorm params folded away)",
        f"flash      {_fmt_bytes(mem['flash_bytes']['onnx_graph'])} at {mem['dtype']}"
        + (
            f" (cost model {mem['flash_bytes']['cost_model']:,})"
            if mem["flash_bytes"]["cost_model"] is not None
            else ""
        ),
        f"peak SRAM  {_fmt_bytes(mem['peak_sram_bytes']['onnx_graph'])} at {mem['dtype']}"
        + (
            f" (cost model {mem['peak_sram_bytes']['cost_model']:,})"
            if mem["peak_sram_bytes"]["cost_model"] is not None
            else ""
        ),
        f"parity     max |ORT - PyTorch| {worst['max_abs_diff']:.2e} over "
        f"{len(r['parity']['float'])} batches (tolerance {worst['tolerance']:.1e})",
    ]
    if r["int8"] is not None:
        q = r["int8"]
        lines.append(
            f"int8       {q['file_bytes']:,} B vs float {q['float_file_bytes']:,} B "
            f"({q['size_ratio']:.2f}x smaller), calibrated on {q['calibration_images']} images"
        )
    qh = r.get("int8_host")
    if qh is not None:
        lines.append(
            f"int8 host  {qh['file_bytes']:,} B ({qh['file']}: uint8 activations, for "
            f"onnxruntime on a host; {INT8_FILE} is the microcontroller file)"
        )
    tfl, tflm = r.get("tflite"), r.get("tflm")
    if tfl is not None and "file_bytes" in tfl:
        io_ = tfl["input"]
        lines.append(
            f"tflite     {tfl['file_bytes']:,} B"
            + (
                f" (cost model {mem['tflite_bytes']['cost_model']:,})"
                if mem.get("tflite_bytes", {}).get("cost_model") is not None
                else ""
            )
            + ", "
            f"{'fully int8' if tfl['fully_int8'] else 'NOT fully int8'}, "
            f"{sum(tfl['ops'].values())} ops, no PAD; input {io_['dtype']} "
            f"{'x'.join(map(str, io_['shape']))} (scale {io_['scale']:.4g}, "
            f"zero point {io_['zero_point']})"
        )
    elif tfl is not None and "note" in tfl:
        lines.append(f"tflite     {tfl['note']}")
    if tflm is not None:
        peak = tflm["natv2_peak_sram_bytes"]["onnx_graph"]
        model = mem.get("tflm_arena_bytes", {}).get("cost_model")
        lines.append(
            f"TFLM arena {_fmt_bytes(tflm['arena_bytes'])}: activations "
            f"{tflm['activations_bytes']:,} B + persistent {tflm['persistent_bytes']:,} B "
            f"(natv2 peak SRAM {peak:,} B"
            + (f"; cost model TFLM arena {model:,} B)" if model is not None else ")")
        )
    acc = r["accuracy"]
    if acc.get("float_top1") is not None:
        text = f"top-1      float {100 * acc['float_top1']:.2f} %"
        if acc.get("int8_top1") is not None:
            text += (
                f", int8 {100 * acc['int8_top1']:.2f} % (agree on "
                f"{100 * acc['int8_float_agreement']:.1f} %)"
            )
        if acc.get("int8_host_top1") is not None:
            text += (
                f", int8 host {100 * acc['int8_host_top1']:.2f} % (agree on "
                f"{100 * acc['int8_host_float_agreement']:.1f} %)"
            )
        text += f" on {acc['dataset']} test ({acc['images']} images)"
        lines.append(text)
    if tflm is not None and tflm.get("accuracy") is not None:
        t = tflm["accuracy"]
        agree = t["agreement_with_onnx_int8"]
        lines.append(
            f"TFLM       top-1 {100 * t['top1']:.2f} % on {t['images']} test images"
            + ("" if agree is None else f", agrees with onnxruntime int8 on {100 * agree:.1f} %")
        )
    if acc.get("search_val_accuracy") is not None:
        lines.append(f"search     val top-1 {100 * acc['search_val_accuracy']:.2f} %")
    host = lat["host"] or {}
    for key, name in (("float", "float"), ("int8", "int8"), ("int8_host", "int8 host")):
        if key in host:
            h = host[key]
            lines.append(
                f"latency    {name}: median {h['median_ms']:.3f} ms, p90 {h['p90_ms']:.3f} ms "
                f"(onnxruntime on this host, {h['intra_op_threads']} threads, batch 1)"
            )
    if lat["estimate_ms"] is not None:
        lines.append(
            f"           estimate {lat['estimate_ms']:.3f} ms (MACs / {lat['macs_per_second']:g})"
        )
    v = r["verdict"]
    if v is None:
        lines.append("verdict    no device profile given")
    else:
        failed = [c["name"] for c in v["checks"] if not c["passed"]]
        parts = ", ".join(f"{c['name']} {'pass' if c['passed'] else 'FAIL'}" for c in v["checks"])
        head = "pass" if not failed else f"FAIL ({', '.join(failed)})"
        lines.append(f"verdict    {head} on {v['profile']} [{parts or 'no budgets'}]")
        if v.get("unchecked"):
            lines.append(f"           not checked (no figure): {', '.join(v['unchecked'])}")
    return "\n".join(lines)
