"""TensorFlow Lite Micro in the loop: the arena a .tflite file needs, and its predictions.

Why: the int8 file is only deployable if the real TFLM interpreter (the ``tflite-micro``
wheel: TFLM with its x86 reference kernels) allocates it and classifies as the ONNX int8 file
does; and the arena TFLM plans is the SRAM the device gives the model.

**Arena.** :func:`find_arena` binary-searches ``arena_size`` for the smallest arena in which
the interpreter allocates and runs the model, then reads the RecordingMicroAllocator's split
of that arena: the head (non-persistent: activations, planned greedily by lifetime) and the
tail (persistent: tensor structs, per-channel quantization data, op data). The probes run in a
child Python process: TFLM reports a too-small arena on stderr and, for some sizes, crashes the
process (seen with tflite-micro 0.dev20261023182759), so a crashed probe counts as "does not
allocate" and the search goes on in a fresh child.

**Predictions.** :class:`TflmRunner` feeds images one at a time (the file has batch 1): the
prepared NCHW float images become NHWC int8 with the input tensor's scale and zero point, and
the argmax of the int8 output is the class (the output's affine dequantization keeps the
order).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from natv2.device_profiles import BudgetCheck, Costs, Profile, QuantizedTop1, Verdict
from natv2.errors import Natv2Error
from natv2.export.tflite import TfliteGraph, read_tflite, require_tflite

__all__ = [
    "TfliteValidation",
    "TflmArena",
    "TflmRunner",
    "find_arena",
    "tflm_predictions",
    "validate_tflite",
]

# The child: reads arena sizes from stdin, answers "ok" or "fail" for each; "report N" prints
# the RecordingMicroAllocator's lines (TFLM writes them to fd 2) after one run at size N.
_PROBE = r"""
import os, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
for line in sys.stdin:
    cmd = line.split()
    n = int(cmd[-1])
    try:
        it = runtime.Interpreter.from_bytes(data, arena_size=n)
        d = it.get_input_details(0)
        it.set_input(np.zeros(tuple(d["shape"]), d["dtype"]), 0)
        it.invoke()
    except Exception:
        print("fail", flush=True)
        continue
    if cmd[0] == "report":
        sys.stderr.flush()
        os.write(2, b"@@BEGIN\n")
        it.print_allocations()
        os.write(2, b"@@END\n")
    print("ok", flush=True)
"""

#: seconds a TFLM probe child may take to answer for one arena size before it counts as crashed
PROBE_TIMEOUT_S = 120
_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_PART = re.compile(r"'([^']+)' used (\d+) bytes")


@dataclass(frozen=True)
class TflmArena:
    """The smallest arena TFLM allocates the model in, and how it is used."""

    arena_bytes: int  # smallest arena_size that allocates and runs (binary search)
    recorded_total_bytes: int  # what the recording allocator reports as used
    head_bytes: int  # non-persistent: activations, greedy-planned by lifetime
    tail_bytes: int  # persistent: tensor structs, quantization data, op data
    parts: dict[str, int]  # the tail's recorded parts, bytes with alignment overhead
    probes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "arena_bytes": self.arena_bytes,
            "recorded_total_bytes": self.recorded_total_bytes,
            "activations_bytes": self.head_bytes,
            "persistent_bytes": self.tail_bytes,
            "persistent_parts": self.parts,
            "search": f"binary search on arena_size ({self.probes} probes)",
        }


class _Prober:
    """The child process of :func:`find_arena`; restarted when a probe crashes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen | None = None
        self.crashes = 0

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        return subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def allocates(self, n: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"probe {n}\n")
            self.proc.stdin.flush()
            # a child that hangs on this size counts as one that crashed on it
            ready, _, _ = select.select([self.proc.stdout], [], [], PROBE_TIMEOUT_S)
            answer = self.proc.stdout.readline().strip() if ready else ""
        except (BrokenPipeError, OSError, ValueError):
            answer = ""
        if answer == "ok":
            return True
        if answer != "fail":  # the child died on this size
            self.crashes += 1
            self.close()
            if self.crashes > 64:
                raise Natv2Error("TFLM crashed on every arena size tried")
        return False

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None


def _report(path: Path, n: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        run = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            input=f"report {n}\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=5 * PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise Natv2Error(
            f"TFLM did not finish running the model in an arena of {n:,} bytes within "
            f"{5 * PROBE_TIMEOUT_S} s"
        ) from None
    if run.stdout.strip() != "ok" or "@@BEGIN" not in run.stderr:
        raise Natv2Error(f"TFLM did not run the model in an arena of {n:,} bytes")
    return run.stderr.split("@@BEGIN", 1)[1].split("@@END", 1)[0]


def find_arena(model: bytes, max_bytes: int = 1 << 30) -> TflmArena:
    """The smallest arena (bytes) in which TFLM allocates and runs ``model``."""
    require_tflite("TFLM")
    read_tflite(model)
    with tempfile.TemporaryDirectory(prefix="natv2-tflm-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model)
        prober = _Prober(path)
        probes = 0
        try:
            hi = max(1 << 16, 4 * len(model))
            while True:
                probes += 1
                if prober.allocates(hi):
                    break
                if hi >= max_bytes:
                    raise Natv2Error(
                        f"TFLM cannot allocate the model in {max_bytes:,} bytes of arena"
                    )
                hi = min(hi * 4, max_bytes)
            lo = 0  # invariant: lo does not allocate, hi does
            while hi - lo > 1:
                mid = (lo + hi) // 2
                probes += 1
                if prober.allocates(mid):
                    hi = mid
                else:
                    lo = mid
        finally:
            prober.close()
        text = _report(path, hi)
    figures = {k: int(v) for k, v in _LINE.findall(text)}
    if set(figures) != {"total", "head", "tail"}:
        raise Natv2Error("TFLM's allocation report has an unexpected format")
    parts = {k: int(v) for k, v in _PART.findall(text)}
    return TflmArena(hi, figures["total"], figures["head"], figures["tail"], parts, probes)


class TflmRunner:
    """The TFLM interpreter on one model (in this process, with an arena that is known to
    allocate), taking prepared NCHW float images."""

    def __init__(self, model: bytes, arena_bytes: int) -> None:
        require_tflite("TFLM")
        from tflite_micro.python.tflite_micro import runtime

        self.graph = read_tflite(model)
        try:
            self.interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(arena_bytes))
        except Exception as exc:
            raise Natv2Error(f"TFLM cannot load the model: {exc}") from None
        d = self.interpreter.get_input_details(0)
        self.shape = tuple(int(v) for v in d["shape"])
        self.dtype = np.dtype(d["dtype"])
        q = d["quantization_parameters"]
        self.scale = float(q["scales"][0]) if len(q["scales"]) else None
        self.zero_point = int(q["zero_points"][0]) if len(q["zero_points"]) else 0
        if len(self.shape) != 4 or self.shape[0] != 1:
            raise Natv2Error(f"TFLM input of shape {self.shape}: expected 1 x H x W x C")

    def _input(self, x: np.ndarray) -> np.ndarray:
        """One NHWC float image as the input tensor's dtype."""
        if self.scale is None or self.dtype.kind == "f":
            return x.astype(self.dtype)[None]
        info = np.iinfo(self.dtype)
        q = np.round(x / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)[None]

    def outputs(self, batch: torch.Tensor) -> np.ndarray:
        """The raw output tensors (N x classes) for a batch of prepared NCHW images."""
        xs = batch.detach().cpu().permute(0, 2, 3, 1).numpy()
        if xs.shape[1:] != self.shape[1:]:
            raise Natv2Error(
                f"images of shape {tuple(xs.shape[1:])} for a TFLite input of {self.shape[1:]}"
            )
        out = []
        for x in xs:
            self.interpreter.set_input(self._input(x), 0)
            self.interpreter.invoke()
            out.append(np.asarray(self.interpreter.get_output(0)).reshape(-1))
        return np.stack(out)


def tflm_predictions(
    runner: TflmRunner, dataset, resolution: int, limit: int | None, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) of TFLM on the test split (the first ``limit`` images)."""
    n = len(dataset.test) if limit is None else min(limit, len(dataset.test))
    preds, labels = [], []
    for start in range(0, n, batch):
        items = [dataset.test[i] for i in range(start, min(start + batch, n))]
        x = dataset.prepare_batch(torch.stack([x for x, _ in items]), resolution, train=False)
        out = runner.outputs(x)
        if out.shape[1] != dataset.num_classes:
            raise Natv2Error(
                f"the TFLite model outputs {out.shape[1]} classes but the dataset has "
                f"{dataset.num_classes}"
            )
        preds.append(out.argmax(1))
        labels.append(np.array([int(y) for _, y in items]))
    return np.concatenate(preds), np.concatenate(labels)


@dataclass(frozen=True)
class TfliteValidation:
    """What ``natv2 validate MODEL.tflite`` prints; ``exit_code`` 0 when every budget passes.

    Figures come from the file and from TFLM: params and MACs from the flatbuffer's conv,
    depthwise and fully-connected ops; flash is what the profile's runtime flashes
    (``Profile.flash_cost_key``: TFLM the file itself, a code-generating runtime such as
    TinyEngine the constants, ``TfliteGraph.deployed_bytes``); peak SRAM is, for TFLM, the
    smallest TFLM arena (activations + persistent parts), for other runtimes TFLM's activation
    plan (``sram_bytes``); latency is the profile's MACs
    estimate, or, for profiles timed on the host, TFLM's reference kernels on this host.
    """

    model: str
    profile: Profile
    graph: TfliteGraph
    file_bytes: int
    arena: TflmArena
    estimated_latency_ms: float | None
    host_latency_ms: float
    accuracy: dict[str, Any] | None
    verdict: Verdict
    reference: str | None = None  # the float model the top-1 was judged against

    @property
    def checks(self) -> tuple[BudgetCheck, ...]:
        return self.verdict.checks

    @property
    def latency_ms(self) -> float:
        judged = self.profile.judged_latency_ms(self.estimated_latency_ms, self.host_latency_ms)
        assert judged is not None  # TFLM's host time is always measured here
        return judged

    @property
    def sram_bytes(self) -> int:
        """TFLM profiles: the whole arena; others: TFLM's activation plan (an upper bound of
        the MCUNet-style peak, which also runs activations in place)."""
        return _sram_bytes(self.profile, self.arena)

    @property
    def passed(self) -> bool:
        return self.verdict.fits

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "format": "tflite",
            "profile": self.profile.name,
            "profile_source": self.profile.source,
            "params": self.graph.params,
            "macs": self.graph.macs,
            "macs_counter": "tflite-flatbuffer",
            "flash_bytes": self.graph.deployed_bytes,
            "tflite_bytes": self.file_bytes,
            # the figure the profile's SRAM budget judges (Profile.sram_cost_key)
            "peak_sram_bytes": self.sram_bytes,
            "tflite": self.graph.to_dict(),
            "tflm": self.arena.to_dict(),
            "latency": {
                "budget_basis": self.profile.latency_basis,
                "latency_ms": self.latency_ms,
                "estimate_ms": self.estimated_latency_ms,
                "tflm_host_ms": self.host_latency_ms,
            },
            "accuracy": self.accuracy,
            "checks": [c.to_dict() for c in self.checks],
            "reference": self.reference,
            "top1_checks": [c.to_dict() for c in self.verdict.top1_checks],
            "passed": self.passed,
        }

    def to_text(self) -> str:
        g, a = self.graph, self.arena
        shape = "x".join(map(str, g.input.shape))
        lines = [
            f"model      {self.model}",
            f"input      {shape} {g.input.dtype} (scale {g.input.scale}, zero point "
            f"{g.input.zero_point}); {'fully int8' if g.fully_int8 else 'NOT fully int8'}",
            f"profile    {self.profile.name} ({self.profile.source})",
            f"params     {g.params:,}",
            f"MACs       {g.macs:,} (TFLite flatbuffer)",
            f"flash      {self.file_bytes:,} bytes (the file); {self.graph.deployed_bytes:,} "
            "bytes of constants as a code-generating runtime stores them",
            f"TFLM arena {a.arena_bytes:,} bytes (activations {a.head_bytes:,} + persistent "
            f"{a.tail_bytes:,})",
        ]
        if self.estimated_latency_ms is not None:
            lines.append(f"latency    {self.estimated_latency_ms:.3f} ms estimate")
        lines.append(
            f"           TFLM on this host: {self.host_latency_ms:.3f} ms (reference kernels)"
        )
        if self.accuracy is not None:
            acc = self.accuracy
            lines.append(
                f"top-1      {100 * acc['top1']:.2f} % on {acc['dataset']} test "
                f"({acc['images']} images, TFLM)"
            )
        for c in self.checks:
            lines.append(
                f"{c.name:<24}{c.value:>16,.0f}{c.budget:>16,.0f}  {'pass' if c.passed else 'FAIL'}"
            )
        from natv2.export.validate import top1_lines

        lines += top1_lines(self.verdict, self.reference)
        failed = [c.name for c in self.checks if not c.passed]
        failed += [c.file for c in self.verdict.failed_top1]
        lines.append(f"verdict    FAIL ({', '.join(failed)})" if failed else "verdict    pass")
        return "\n".join(lines)


def _sram_bytes(profile: Profile, arena: TflmArena) -> int:
    if profile.sram_cost_key == "tflm_arena_bytes":
        return arena.arena_bytes
    return arena.head_bytes


def validate_tflite(
    model_path: str | Path,
    profile: Profile,
    *,
    dataset=None,
    dataset_name: str | None = None,
    runs: int = 10,
    limit: int | None = None,
    reference: str | Path | None = None,
) -> TfliteValidation:
    """Check a .tflite file against ``profile`` with TFLM in the loop (class docstring); with
    a dataset and a float ``reference`` ONNX model, TFLM's top-1 is judged against the
    reference's on the same test images (``Profile.max_top1_drop``)."""
    import time

    require_tflite("validating a .tflite file")
    path = Path(model_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Natv2Error(f"{path}: cannot read the model ({exc.strerror})") from None
    graph = read_tflite(data, str(path))
    problems = graph.problems()
    if problems:
        raise Natv2Error(
            f"{path}: TFLM cannot run this file as natv2 deploys it ({'; '.join(problems)}); "
            "export it again with `natv2 export`"
        )
    arena = find_arena(data)
    runner = TflmRunner(data, arena.arena_bytes)
    _, h, w, c = runner.shape
    if c != 3 or h != w:
        raise Natv2Error(f"{path}: input {runner.shape}: expected 1 x R x R x 3 (an RGB image)")
    x = torch.zeros(1, 3, h, w)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        runner.outputs(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    host_ms = float(np.median(times))
    accuracy = None
    quantized = []
    if dataset is not None:
        pred, labels = tflm_predictions(runner, dataset, h, limit)
        top1 = float(np.mean(pred == labels))
        accuracy = {
            "top1": top1,
            "images": len(labels),
            "dataset": dataset_name or getattr(dataset, "name", "dataset"),
        }
        if reference is not None:
            from natv2.export.validate import reference_top1

            ref_top1, _ = reference_top1(reference, dataset, h, limit=limit, threads=None)
            quantized.append(QuantizedTop1(f"{path.name} (TFLM)", ref_top1, top1, len(labels)))
    estimate = profile.estimate_latency_ms(graph.macs)
    verdict = profile.judge(
        Costs(
            params=graph.params,
            macs=graph.macs,
            flash_bytes=graph.deployed_bytes,
            tflite_bytes=len(data),
            peak_sram_bytes=_sram_bytes(profile, arena),
            tflm_arena_bytes=arena.arena_bytes,
            latency_ms=profile.judged_latency_ms(estimate, host_ms),
        ),
        quantized,
    )
    return TfliteValidation(
        str(path),
        profile,
        graph,
        len(data),
        arena,
        estimate,
        host_ms,
        accuracy,
        verdict,
        None if not quantized or reference is None else str(reference),
    )
