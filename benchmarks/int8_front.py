"""Does every front subnet survive int8? float, int8 ONNX, int8 host and TFLM top-1 per subnet.

For each finished ``natv2 search`` run given, every subnet of its front goes through the user's
path, ``natv2 export RUN --subnet ID --json`` (exit 1 is a failing verdict: a result, shown), and
the table lists the export report's top-1 of each file on the same test images, the largest
drop below float, and the export's verdict. The last line says whether every subnet of every
run kept int8 ONNX and TFLM top-1 within ``--tolerance`` points of float.

    python benchmarks/int8_front.py runs/search runs/search-2 [--full-test] [--json OUT]

Export's own top-1 sample applies (a fixed, stratified 2,000 test images) unless
``--full-test``. Runs keep their exports (``RUN/exports/ID``); an existing export is redone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vs_reference import child_env, log, run_cli

from natv2.rundir import CONFIG, read_records


@dataclass
class Row:
    dataset: str
    subnet: str
    macs: int | None
    images: int
    float_top1: float | None
    int8_top1: float | None
    int8_host_top1: float | None
    tflm_top1: float | None
    verdict: str
    seconds: float

    def worst_drop(self) -> float | None:
        """Largest fall of a device file (int8 ONNX, TFLM) below float, in points."""
        if self.float_top1 is None:
            return None
        device = [t for t in (self.int8_top1, self.tflm_top1) if t is not None]
        return max((100 * (self.float_top1 - t) for t in device), default=None)


def export_row(run_dir: Path, record: dict, dataset: str, full_test: bool, env) -> Row:
    cmd = ["export", str(run_dir), "--subnet", record["id"], "--runs", "0", "--json"]
    if full_test:
        cmd.append("--full-test")
    log(f"$ natv2 {' '.join(cmd)}")
    res = run_cli(cmd, env)
    doc = res.doc or {}
    acc = doc.get("accuracy") or {}
    tflm = (doc.get("tflm") or {}).get("accuracy") or {}
    verdict = doc.get("verdict")
    if res.rc not in (0, 1) or not doc:
        state = f"export exited {res.rc}: {res.stderr_tail}"
    elif verdict is None:
        state = "no verdict"
    else:
        state = "pass" if verdict["passed"] else "FAIL"
    return Row(
        dataset,
        record["id"],
        record.get("macs"),
        int(acc.get("images") or 0),
        acc.get("float_top1"),
        acc.get("int8_top1"),
        acc.get("int8_host_top1"),
        tflm.get("top1"),
        state,
        res.seconds,
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def table(rows: list[Row]) -> str:
    head = (
        f"{'dataset':<14} {'subnet':<28} {'MACs':>10} {'images':>6} {'float %':>7} "
        f"{'int8 %':>7} {'host %':>7} {'TFLM %':>7} {'drop pt':>7}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        drop = r.worst_drop()
        lines.append(
            f"{r.dataset:<14} {r.subnet:<28} {r.macs or 0:>10,} {r.images:>6} "
            f"{_pct(r.float_top1):>7} {_pct(r.int8_top1):>7} {_pct(r.int8_host_top1):>7} "
            f"{_pct(r.tflm_top1):>7} {'-' if drop is None else f'{drop:+.2f}':>7}  {r.verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="finished natv2 search run directories")
    ap.add_argument("--full-test", action="store_true", help="top-1 on every test image")
    ap.add_argument("--tolerance", type=float, default=1.0, help="points below float allowed")
    ap.add_argument("--json", default=None, metavar="OUT.json", help="write the rows here too")
    args = ap.parse_args()
    env = child_env(Path(tempfile.mkdtemp(prefix="natv2-cache-")))
    rows: list[Row] = []
    for run in map(Path, args.runs):
        config = json.loads((run / CONFIG).read_text(encoding="utf-8"))
        front = sorted(read_records(run, "front"), key=lambda r: r.get("macs") or 0)
        for record in front:
            rows.append(export_row(run, record, str(config.get("dataset")), args.full_test, env))
    print(table(rows))
    drops = [r.worst_drop() for r in rows]
    within = all(d is not None and d <= args.tolerance for d in drops)
    worst = max((d for d in drops if d is not None), default=float("nan"))
    print(
        f"\n{len(rows)} front subnets of {len(args.runs)} runs; int8 ONNX and TFLM within "
        f"{args.tolerance:g} point of float on every one: {'yes' if within else 'NO'} "
        f"(largest drop {worst:+.2f} points); export time {sum(r.seconds for r in rows):.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
