"""natv2's front against ResNet-8 and MobileNetV3-small trained alone for the same wall clock.

Is what ``natv2 search`` hands over better than the standard small model trained on the same
machine in the same time? One table per dataset and device profile.

    python benchmarks/vs_reference.py --dataset fashion-mnist
    python benchmarks/vs_reference.py --dataset mnist5k --device microcontroller-profile \\
        --json vs-reference-mnist5k.json
    python benchmarks/vs_reference.py --dataset mnist5k --run runs/search --seconds 535
    # smoke check (seconds of training: the figures mean nothing)
    python benchmarks/vs_reference.py --dataset mnist5k --cache-dir "$(mktemp -d)" \\
        --search-args="--preset smoke --iterations 1 --archive-size 4 \\
        --pretrain-schedule scratch-test" --reference-seconds 10 --mbv3-widths 0.5

1. The main job as a user types it: ``natv2 search --device D --dataset DS --out RUN --json``
   in a subprocess with an empty cache (``NATV2_CACHE_DIR`` a new temporary folder unless
   ``--cache-dir``) and ``OMP_WAIT_POLICY=PASSIVE``; T is the wall clock around the subprocess
   (its own start-up included). ``--run RUN`` reuses a finished run instead (T from
   ``--seconds``, else the stage times in ``RUN/search.log``: a lower bound).
2. Every front subnet through the user's path: ``natv2 export RUN --subnet ID --json`` (exit 1
   is a failing verdict, a result), then ``natv2 validate`` on ``model.int8.onnx`` and
   ``model.int8.tflite``. This time is reported apart, not added to T. Top-1 is export's
   default sample of the test split, except for the subnet the search rates best
   (``--full-test``: every test image, as the references are measured).
3. The references of ``benchmarks/references.py`` (MLPerf Tiny's ResNet-8 at 32 px,
   torchvision's MobileNetV3-small at 64 px per ``--mbv3-widths``) trained alone for T, one
   after the other, and judged by ``references.measure`` through natv2's own export and
   validation code under the same profile.
4. One table (stdout; ``--json OUT`` writes the same rows) and three summary lines.

Top-1 columns are all on the test split: float and int8 by onnxruntime on the ONNX files,
TFLM by tflite-micro on the .tflite file. natv2's profile verdict is ``natv2 export``'s (it also
judges each quantized file's top-1 drop against float); a reference's is ``validate_onnx``'s on
its int8 file plus ``validate_tflite``'s on its .tflite file, which ``measure`` runs without a
float reference, so no top-1-drop check is part of it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from references import ReferenceReport, TrainResult, build_reference, measure, train_alone

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY before torch's OpenMP starts)
from natv2.commands.search import free_run_dir
from natv2.data import DatasetSplits, load_dataset
from natv2.device_profiles import load_profile
from natv2.rundir import CONFIG, HIGH_TRADEOFF, LOG, read_records

INT8_ONNX = "model.int8.onnx"
INT8_TFLITE = "model.int8.tflite"
#: summary (a): int8 counts as keeping float's top-1 within this many points
INT8_TOLERANCE_POINTS = 0.5
MBV3_SUMMARY_WIDTH = 0.5  # summary (b) compares with MobileNetV3-small at this width


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the CLI


def natv2_command() -> list[str]:
    """The ``natv2`` console script of this interpreter's environment, as a user runs it."""
    beside = Path(sys.executable).parent / "natv2"
    found = str(beside) if beside.is_file() else shutil.which("natv2")
    if found is None:
        raise SystemExit("no natv2 command beside this Python or on PATH: pip install -e .")
    return [found]


def child_env(cache_dir: Path) -> dict[str, str]:
    """The subprocesses' environment: this one, the chosen cache, OpenMP threads that sleep."""
    env = dict(os.environ)
    env["NATV2_CACHE_DIR"] = str(cache_dir)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


@dataclass(frozen=True)
class Cli:
    """One CLI call's exit code, its stdout parsed as JSON (None when it printed none), and
    the tail of its stderr (for failures)."""

    rc: int
    doc: dict[str, Any] | None
    stderr_tail: str
    seconds: float


def run_cli(args: list[str], env: dict[str, str], *, show_progress: bool = False) -> Cli:
    """Run ``natv2 ARGS``; ``show_progress`` passes its stderr through instead of keeping it."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        natv2_command() + args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=None if show_progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    tail = "" if proc.stderr is None else "\n".join(proc.stderr.strip().splitlines()[-5:])
    return Cli(proc.returncode, doc if isinstance(doc, dict) else None, tail, seconds)


# ----------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class SearchRun:
    """A finished run and the wall clock T the references get."""

    run_dir: Path
    seconds: float
    seconds_source: str  # how T was obtained, in words
    front: list[dict[str, Any]] = field(repr=False)
    high_tradeoff: frozenset[str]


_TRAINING = re.compile(r"^no pretrained \S+ supernet for \S+ yet: training one \((.+)\)$")
_PRETRAIN = re.compile(r"^\S+: (\d+) s, test top-1 maximal")
_STAGE = re.compile(r"^(?:pre-processing|iteration \d+/\d+): .*\((\d+) s\)$")


def pretraining_seconds(checkpoint: Path) -> float | None:
    """The training time the cached supernet's metadata records (every width), if it is
    still there: the pretraining's own log lines come from the training processes and reach
    the terminal, not ``search.log``."""
    if not checkpoint.is_file():
        return None
    from natv2.supernet.checkpoint import load_supernets

    _, meta = load_supernets(checkpoint)
    report = meta.get("report")
    if not isinstance(report, dict) or not report:
        return None
    return sum(float(w.get("seconds", 0.0)) for w in report.values() if isinstance(w, dict))


def seconds_from_log(run_dir: Path) -> float | None:
    """A lower bound of T from ``search.log``: the pretraining's seconds (its log line, else
    the checkpoint the log names) plus the logged pre-processing and iteration times (process
    start, data loading, the int8 front pass and the final writes are not in it). None when
    there is no log, the run reused a cached supernet (its T would leave out the pretraining a
    fresh-cache run pays for) or the pretraining time cannot be found."""
    path = run_dir / LOG
    if not path.is_file():
        return None
    total, pretrain, checkpoint = 0.0, None, None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("reusing the pretrained supernet"):
            return None
        if m := _TRAINING.match(line):
            checkpoint = Path(m.group(1))
        elif m := _PRETRAIN.match(line):
            pretrain = (pretrain or 0.0) + float(m.group(1))
        elif m := _STAGE.match(line):
            total += float(m.group(1))
    if pretrain is None and checkpoint is not None:
        pretrain = pretraining_seconds(checkpoint)
    return None if pretrain is None else total + pretrain


def read_run(run_dir: Path, seconds: float, source: str) -> SearchRun:
    """The front and high trade-off ids of a finished run directory."""
    front = read_records(run_dir, "front")
    high = frozenset(r["id"] for r in read_records(run_dir, HIGH_TRADEOFF))
    return SearchRun(run_dir, seconds, source, front, high)


def search(args: argparse.Namespace, run_dir: Path, env: dict[str, str]) -> SearchRun:
    """The main job in a subprocess, timed from outside (its start-up included)."""
    cache = Path(env["NATV2_CACHE_DIR"])
    state = "empty" if not cache.exists() or not any(cache.iterdir()) else "NOT empty"
    cmd = ["search", "--device", args.device, "--dataset", args.dataset, "--out", str(run_dir)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    cmd += [*shlex.split(args.search_args), "--json"]
    log(f"$ NATV2_CACHE_DIR={env['NATV2_CACHE_DIR']} natv2 {shlex.join(cmd)}")
    res = run_cli(cmd, env, show_progress=True)
    if res.rc != 0 or res.doc is None:
        raise SystemExit(f"natv2 search exited {res.rc}; nothing to compare")
    log(f"natv2 search: {res.seconds:.1f} s wall clock ({res.doc.get('seconds')} s in-process)")
    return read_run(run_dir, res.seconds, f"wall clock around `natv2 search` ({state} cache)")


def reuse_run(args: argparse.Namespace) -> SearchRun:
    """``--run``: a finished run, T from ``--seconds`` or else from its log."""
    run_dir = Path(args.run)
    config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    if config.get("device") != args.device or config.get("dataset") != args.dataset:
        raise SystemExit(
            f"{run_dir} searched {config.get('dataset')} for {config.get('device')}, not "
            f"{args.dataset} for {args.device}"
        )
    if args.seconds is not None:
        return read_run(run_dir, args.seconds, "--seconds")
    seconds = seconds_from_log(run_dir)
    if seconds is None:
        raise SystemExit(
            f"{run_dir}/{LOG} gives no fresh-cache wall clock (missing, or a cached supernet "
            "was reused): give --seconds"
        )
    return read_run(run_dir, seconds, f"stage times in {LOG} (lower bound of the wall clock)")


# ----------------------------------------------------------------------------- the rows


@dataclass
class Row:
    """One line of the table: a natv2 front subnet or a reference. Top-1 figures are
    fractions on the test split; None where there is no figure."""

    kind: str  # "natv2" or "reference"
    name: str
    wall_seconds: float  # natv2: T of the search; reference: its training time
    epochs: float | None
    float_top1: float | None
    int8_top1: float | None
    tflm_top1: float | None
    test_images: int
    tflm_images: int | None
    macs: int | None
    params: int | None
    flash_bytes: int | None  # of the int8 ONNX file at int8 (the float graph's otherwise)
    peak_sram_bytes: int | None
    passed: bool | None  # the profile's verdict; None: no verdict (export failed)
    failed: list[str]
    validate_onnx: bool | None  # natv2 validate on model.int8.onnx; None: no file
    validate_tflite: bool | None
    extra_seconds: float  # natv2: export + validation; reference: measure
    best: bool = False
    high_tradeoff: bool = False
    note: str = ""


def _failed(doc: dict[str, Any]) -> list[str]:
    """Failed budgets and quantized files of a verdict (``export``'s or ``validate``'s)."""
    names = [c["name"] for c in doc.get("checks", []) if not c.get("passed", True)]
    return names + [
        f"top-1 of {c['file']}" for c in doc.get("top1_checks", []) if not c.get("passed", True)
    ]


def _validate(path: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[bool | None, Cli]:
    """``natv2 validate FILE --device D --dataset DS --json``: exit 0 pass, 1 fail."""
    cmd = ["validate", str(path), "--device", args.device, "--dataset", args.dataset, "--json"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    res = run_cli(cmd, env)
    if res.rc not in (0, 1):
        log(f"  validate {path.name}: exit {res.rc}: {res.stderr_tail}")
        return None, res
    verdict = "pass" if res.rc == 0 else f"FAIL ({', '.join(_failed(res.doc or {}))})"
    log(f"  validate {path.name}: {verdict}")
    return res.rc == 0, res


def natv2_row(
    record: dict[str, Any],
    run: SearchRun,
    args: argparse.Namespace,
    env: dict[str, str],
    full_test: bool = False,
) -> Row:
    """Export one front subnet as a user does, then validate its int8 files. ``full_test``:
    top-1 on the whole test split (the references' figure); otherwise export's default sample."""
    sid = record["id"]
    cmd = ["export", str(run.run_dir), "--subnet", sid, "--json"]
    if full_test:
        cmd.append("--full-test")
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    log(f"$ natv2 {shlex.join(cmd)}")
    res = run_cli(cmd, env)
    row = Row(
        kind="natv2",
        name=sid,
        wall_seconds=run.seconds,
        epochs=None,
        float_top1=None,
        int8_top1=None,
        tflm_top1=None,
        test_images=0,
        tflm_images=None,
        macs=record.get("macs"),
        params=record.get("params"),
        flash_bytes=record.get("flash_bytes"),
        peak_sram_bytes=record.get("peak_sram_bytes"),
        passed=None,
        failed=[],
        validate_onnx=None,
        validate_tflite=None,
        extra_seconds=res.seconds,
        high_tradeoff=sid in run.high_tradeoff,
    )
    doc = res.doc
    if res.rc not in (0, 1) or doc is None:
        row.note = f"export exited {res.rc}: {res.stderr_tail}"
        log(f"  {row.note}")
        return row
    acc, verdict, int8 = doc["accuracy"], doc.get("verdict"), doc.get("int8")
    tflm_acc = (doc.get("tflm") or {}).get("accuracy")
    row.float_top1, row.int8_top1 = acc.get("float_top1"), acc.get("int8_top1")
    row.test_images = int(acc.get("images") or 0)
    if tflm_acc:
        row.tflm_top1, row.tflm_images = tflm_acc["top1"], int(tflm_acc["images"])
    row.macs, row.params = doc["macs"]["onnx_graph"], doc["params"]["module"]
    if int8 is not None:  # the int8 file at int8, as references.measure counts
        row.flash_bytes, row.peak_sram_bytes = int8["flash_bytes"], int8["peak_sram_bytes"]
    else:
        memory = doc["memory"]
        row.flash_bytes = memory["flash_bytes"]["onnx_graph"]
        row.peak_sram_bytes = memory["peak_sram_bytes"]["onnx_graph"]
    if verdict is not None:
        row.passed, row.failed = bool(verdict["passed"]), _failed(verdict)
    log(f"  export: exit {res.rc}, verdict {'pass' if row.passed else 'FAIL'}")
    folder = Path(doc["out"])
    for name in (INT8_ONNX, INT8_TFLITE):
        if (folder / name).is_file():
            ok, v = _validate(folder / name, args, env)
            row.extra_seconds += v.seconds
            if name == INT8_ONNX:
                row.validate_onnx = ok
            else:
                row.validate_tflite = ok
        elif name == INT8_TFLITE:
            note = (doc.get("tflite") or {}).get("note")
            row.note = f"no {INT8_TFLITE}" + (f": {note}" if note else "")
    return row


def reference_row(
    name: str, width: float, data: DatasetSplits, seconds: float, args: argparse.Namespace
) -> Row:
    """A reference trained alone for ``seconds``, then judged through natv2's export path."""
    ref = build_reference(name, data.num_classes, width)
    log(f"training {ref.name} at {ref.resolution} px alone for {seconds:.1f} s")
    train: TrainResult = train_alone(ref.module, data, ref.resolution, seconds=seconds, seed=0)
    out = Path(args.out) / "references" / ref.name
    log(f"measuring {ref.name} through natv2's export and validation ({out})")
    rep: ReferenceReport = measure(
        ref.module, data, ref.resolution, args.device, out, name=ref.name
    )
    by_file = {f.file: f for f in rep.files}
    profile = load_profile(args.device)
    tfl = by_file.get(INT8_TFLITE)
    deployed = by_file.get(INT8_ONNX if profile.dtype == "int8" else "model.onnx")
    judged = [f for f in (deployed, tfl) if f is not None]
    failed = [c if f.file != INT8_TFLITE else f"{c} (tflite)" for f in judged for c in f.failed]
    label = "ResNet-8" if name == "resnet8" else f"MobileNetV3-small-{width:g}"
    return Row(
        kind="reference",
        name=f"{label} ({ref.resolution} px)",
        wall_seconds=train.seconds,
        epochs=train.epochs,
        float_top1=rep.float_top1,
        int8_top1=rep.int8_top1,
        tflm_top1=None if tfl is None else tfl.top1,
        test_images=by_file["model.onnx"].images,
        tflm_images=None if tfl is None else tfl.images,
        macs=rep.macs,
        params=rep.params,
        flash_bytes=rep.flash_bytes,
        peak_sram_bytes=rep.peak_sram_bytes,
        passed=all(f.passed for f in judged),
        failed=failed,
        validate_onnx=by_file[INT8_ONNX].passed,
        validate_tflite=None if tfl is None else tfl.passed,
        extra_seconds=rep.seconds,
        note="" if rep.tflite_note is None else rep.tflite_note,
    )


# ----------------------------------------------------------------------------- the table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _yes(x: bool | None) -> str:
    return "-" if x is None else ("pass" if x else "FAIL")


def format_table(rows: list[Row]) -> str:
    """The rows as fixed-width text: natv2's front first (by MACs), then the references."""
    head = (
        f"{'what':<34} {'wall s':>7} {'epochs':>6} {'float %':>7} {'int8 %':>7} "
        f"{'TFLM %':>7} {'MACs':>11} {'params':>9} {'flash B':>9} {'SRAM B':>8}  "
        f"{'validate onnx/tfl':<17}  profile pass"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        marks = ("B" if r.best else "") + ("*" if r.high_tradeoff else "")
        what = f"{r.name} {marks}".rstrip() if r.kind == "natv2" else r.name
        verdict = "-" if r.passed is None else ("yes" if r.passed else "NO")
        if r.failed:
            verdict += f" ({', '.join(r.failed)})"
        epochs = "-" if r.epochs is None else f"{r.epochs:.1f}"
        lines.append(
            f"{what:<34} {r.wall_seconds:>7.1f} {epochs:>6} {_pct(r.float_top1):>7} "
            f"{_pct(r.int8_top1):>7} {_pct(r.tflm_top1):>7} {_int(r.macs):>11} "
            f"{_int(r.params):>9} {_int(r.flash_bytes):>9} {_int(r.peak_sram_bytes):>8}  "
            f"{_yes(r.validate_onnx) + '/' + _yes(r.validate_tflite):<17}  {verdict}"
        )
    return "\n".join(lines)


def _within(r: Row) -> str:
    if r.float_top1 is None or r.int8_top1 is None:
        return "no int8 figure"
    gap = 100 * (r.int8_top1 - r.float_top1)
    ok = abs(gap) <= INT8_TOLERANCE_POINTS
    return (
        f"int8 {_pct(r.int8_top1)} % ({gap:+.2f} points: "
        f"{'within' if ok else 'NOT within'} {INT8_TOLERANCE_POINTS} of float)"
    )


def summary_lines(rows: list[Row]) -> list[str]:
    """(a) best natv2 vs ResNet-8, (b) a cheaper natv2 subnet at least as accurate as
    MobileNetV3-small-0.5, (c) whether the whole front exported and validated."""
    ours = [r for r in rows if r.kind == "natv2"]
    scored = [r for r in ours if r.float_top1 is not None]
    refs = {r.name.split(" (")[0]: r for r in rows if r.kind == "reference"}
    out = []
    resnet = refs.get("ResNet-8")
    if scored and resnet is not None and resnet.float_top1 is not None:
        best = max(scored, key=lambda r: r.float_top1 or 0.0)
        diff = 100 * ((best.float_top1 or 0.0) - resnet.float_top1)
        out.append(
            f"(a) best natv2 subnet {best.name}: test top-1 {_pct(best.float_top1)} % vs "
            f"ResNet-8 {_pct(resnet.float_top1)} % ({diff:+.2f} points); natv2 {_within(best)}; "
            f"ResNet-8 {_within(resnet)}"
        )
    else:
        out.append("(a) no comparison: no exported natv2 subnet or no ResNet-8 figure")
    mbv3 = refs.get(f"MobileNetV3-small-{MBV3_SUMMARY_WIDTH:g}")
    if mbv3 is None or mbv3.float_top1 is None or mbv3.macs is None:
        out.append(f"(b) no MobileNetV3-small-{MBV3_SUMMARY_WIDTH:g} row (--mbv3-widths)")
    else:
        mb_top1, mb_macs = mbv3.float_top1, mbv3.macs
        fits = [
            r
            for r in scored
            if r.macs is not None and r.macs < mb_macs and (r.float_top1 or 0.0) >= mb_top1
        ]
        cheapest = min(fits, key=lambda r: r.macs or 0, default=None)
        target = f"MobileNetV3-small-{MBV3_SUMMARY_WIDTH:g} ({mb_macs:,} MACs, {_pct(mb_top1)} %)"
        if cheapest is None:
            out.append(f"(b) fewer MACs than {target} and test top-1 >= it: none")
        else:
            out.append(
                f"(b) fewer MACs than {target} and test top-1 >= it: {cheapest.name} "
                f"({_int(cheapest.macs)} MACs, {_pct(cheapest.float_top1)} %)"
            )
    exported = sum(r.passed is not None for r in ours)
    onnx_ok = sum(r.validate_onnx is True for r in ours)
    tfl_ok = sum(r.validate_tflite is True for r in ours)
    n = len(ours)
    every = exported == onnx_ok == tfl_ok == n
    out.append(
        f"(c) every front subnet exported and validated (ONNX and TFLite): "
        f"{'yes' if every else 'NO'} ({exported}/{n} exported, {sum(bool(r.passed) for r in ours)}"
        f" with a passing export verdict; natv2 validate pass: {onnx_ok}/{n} {INT8_ONNX}, "
        f"{tfl_ok}/{n} {INT8_TFLITE})"
    )
    return out


def machine() -> dict[str, Any]:
    """Where the figures come from: they hold for this machine only."""
    model = None
    if shutil.which("lscpu"):
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in text.splitlines()
                if ln.startswith("Model name")
            ),
            None,
        )
    return {
        "node": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def header_lines(
    host: dict[str, Any],
    data: DatasetSplits,
    args: argparse.Namespace,
    run: SearchRun,
    t_ref: float,
) -> list[str]:
    return [
        f"natv2 vs hand-designed references on {data.name} (train {len(data.train):,}, val "
        f"{len(data.val):,}, test {len(data.test):,} images), profile {args.device}",
        f"machine {host['node']}: {host['cpus']} CPUs ({host['cpu_model'] or 'model unknown'}), "
        f"torch {host['torch']}, {host['date']}",
        f"natv2: run {run.run_dir}, T = {run.seconds:.1f} s: {run.seconds_source}; references "
        f"trained alone for {t_ref:.1f} s each, seed 0, one after the other",
    ]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--device", default="microcontroller-profile", help="device profile")
    ap.add_argument("--data-dir", default=None, help="passed to natv2 and the references")
    ap.add_argument(
        "--out",
        default=None,
        help="where the run and the references' files go "
        "(default runs/vs-reference-DATASET, -2, ... when taken)",
    )
    ap.add_argument("--run", default=None, help="reuse this finished run instead of searching")
    ap.add_argument("--seconds", type=float, default=None, help="T of the --run")
    ap.add_argument("--cache-dir", default=None, help="NATV2_CACHE_DIR (default: a new one)")
    ap.add_argument("--search-args", default="", help="extra `natv2 search` options (shlex)")
    ap.add_argument("--reference-seconds", type=float, default=None, help="instead of T")
    ap.add_argument("--mbv3-widths", type=float, nargs="*", default=[0.5, 1.0])
    ap.add_argument("--json", default=None, metavar="OUT.json", help="write the rows here too")
    args = ap.parse_args(argv)

    host = machine()
    load_profile(args.device)  # a bad name fails now, not after the search
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    out = Path(args.out) if args.out else free_run_dir(Path("runs"), f"vs-reference-{data.name}")
    args.out = str(out)
    out.mkdir(parents=True, exist_ok=True)
    fresh_cache = args.cache_dir is None
    cache = Path(tempfile.mkdtemp(prefix="natv2-cache-")) if fresh_cache else Path(args.cache_dir)
    env = child_env(cache)
    try:
        run = reuse_run(args) if args.run else search(args, out / "search", env)
        t0 = time.perf_counter()
        # the subnet the search rates best is measured on every test image, as the references
        top = max(run.front, key=lambda r: r.get("int8_accuracy") or r["accuracy"])["id"]
        rows = [
            natv2_row(r, run, args, env, full_test=r["id"] == top)
            for r in sorted(run.front, key=lambda r: r["macs"])
        ]
        export_seconds = time.perf_counter() - t0
    finally:
        if fresh_cache:
            shutil.rmtree(cache, ignore_errors=True)
    scored = [r for r in rows if r.float_top1 is not None]
    if scored:
        max(scored, key=lambda r: r.float_top1 or 0.0).best = True

    t_ref = args.reference_seconds if args.reference_seconds is not None else run.seconds
    rows.append(reference_row("resnet8", 0.5, data, t_ref, args))
    for width in args.mbv3_widths:
        rows.append(reference_row("mobilenet_v3_small", width, data, t_ref, args))

    head = header_lines(host, data, args, run, t_ref)
    summary = summary_lines(rows)
    measured = sum(r.extra_seconds for r in rows if r.kind == "reference")
    images = sorted(({r.test_images for r in rows} | {r.tflm_images or 0 for r in rows}) - {0})
    notes = [
        f"B = best natv2 subnet by test top-1, * = high trade-off; top-1 on the test split "
        f"({', '.join(map(str, images))} images); flash and SRAM of {INT8_ONNX} at int8",
        f"natv2 export + validation: {export_seconds:.0f} s for {len(run.front)} subnets (not "
        f"in T); references' export + validation (measure): {measured:.0f} s",
    ]
    notes += [f"{r.name}: {r.note}" for r in rows if r.note]
    print("\n".join([*head, "", format_table(rows), "", *notes, "", *summary]))
    if args.json:
        doc = {
            "machine": host,
            "dataset": data.summary(),
            "device": args.device,
            "run_dir": str(run.run_dir),
            "seconds": run.seconds,
            "seconds_source": run.seconds_source,
            "reference_seconds": t_ref,
            "export_seconds": export_seconds,
            "rows": [asdict(r) for r in rows],
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
