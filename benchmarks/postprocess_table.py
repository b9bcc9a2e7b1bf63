"""Post-processing table (the paper's Table 2 layout) for three subnets of a search run.

For each subnet: test top-1, params and MACs without post-processing (materialised, BatchNorm
recalibrated as the search evaluated it), with plain fine-tuning and with AEP (subnets of exit
supernets with exit > 1). Usage::

    python benchmarks/postprocess_table.py RUN_DIR [--preset cpu|paper] [--subnets ID,ID,ID]
        [--accelerator auto] [--out DIR] [--json]

The three subnets default to the front's most accurate, its cheapest in MACs and the one in
between (filled from the high trade-off set and the archive when the front is smaller). Models
are written under ``--out`` (default: a temporary folder), never over
``RUN_DIR/postprocessed``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pick_subnets(run_dir: Path, count: int = 3) -> list[str]:
    from natv2 import rundir

    front = rundir.read_records(run_dir, rundir.FRONT)
    ordered = sorted(front, key=lambda r: -r.get("accuracy", 0.0))
    picks: list[str] = []
    if ordered:
        by_macs = sorted(front, key=lambda r: r.get("macs", 0))
        candidates = [ordered[0], by_macs[0], ordered[len(ordered) // 2], *ordered]
        for r in candidates:
            if r["id"] not in picks:
                picks.append(r["id"])
    for name in (rundir.HIGH_TRADEOFF, "archive"):
        extra = sorted(rundir.read_records(run_dir, name), key=lambda r: -r.get("accuracy", 0.0))
        for r in extra:
            if len(picks) >= count:
                break
            if r["id"] not in picks:
                picks.append(r["id"])
    return picks[:count]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    ap.add_argument("--subnets", default=None, help="comma-separated subnet ids")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    from natv2.accelerator import resolve_accelerator
    from natv2.data import load_dataset
    from natv2.errors import Natv2Error
    from natv2.postprocess import postprocess_run
    from natv2.rundir import load_config

    try:
        config = load_config(args.run_dir)
        ids = args.subnets.split(",") if args.subnets else pick_subnets(args.run_dir)
        if not ids:
            raise Natv2Error(f"{args.run_dir} has no subnets in its front or archive")
        acc = resolve_accelerator(args.accelerator)
        data_dir = (config.get("request") or {}).get("data_dir")
        data = load_dataset(config["dataset"], data_dir=data_dir)
    except Natv2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    tmp = None
    out_root = args.out
    if out_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="natv2-pp-table-")
        out_root = Path(tmp.name)
    rows: list[dict] = []
    from natv2 import rundir

    try:
        for sid in ids:
            record = rundir.find_subnet(args.run_dir, sid)
            encoding = record.get("encoding") or config["encoding"]
            arch = rundir.run_space(config, encoding).decode(record["vector"])
            exits = bool((config.get("supernet_config") or {}).get("exits"))
            methods = ["finetune"] + (["aep"] if exits and arch.exit > 1 else [])
            base = None
            for method in methods:
                t0 = time.perf_counter()
                res, _ = postprocess_run(
                    args.run_dir,
                    sid,
                    method=method,
                    preset=args.preset,
                    acc=acc,
                    data=data,
                    out=out_root / f"{sid}-{method}",
                    log=log,
                )
                doc = res.result
                if base is None:
                    base = doc["before"]
                    rows.append(_row(sid, "NATv2", base, None))
                rows.append(
                    _row(
                        sid,
                        f"NATv2 + {method.upper()}",
                        doc["after"],
                        doc,
                        time.perf_counter() - t0,
                    )
                )
            if len(methods) == 1:
                rows.append(
                    {"subnet": sid, "model": "NATv2 + AEP", "note": f"n/a (exit {arch.exit})"}
                )
    except Natv2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()

    if args.json:
        print(
            json.dumps(
                {"run_dir": str(args.run_dir), "preset": args.preset, "rows": rows}, indent=2
            )
        )
    else:
        print(table(rows, data.name, args.preset))
    return 0


def _row(sid: str, model: str, figures: dict, doc: dict | None, seconds: float | None = None):
    row = {
        "subnet": sid,
        "model": model,
        "test_accuracy": figures["test_accuracy"],
        "params": figures["params"],
        "macs": figures["macs"],
    }
    if doc is not None:
        row["epochs"] = doc["epochs_chosen"]
        row["optimizer"] = doc["optimizer"]
        row["seconds"] = round(seconds or 0.0, 1)
        if doc["exits"]:
            row["exits"] = doc["exits"]["kept"]
    return row


def table(rows: list[dict], dataset: str, preset: str) -> str:
    head = f"{'subnet':<28} {'model':<17} {'top-1 %':>8} {'params (M)':>11} {'MACs (M)':>10}  notes"
    lines = [f"post-processing on {dataset} test (preset {preset})", head, "-" * len(head)]
    last = None
    for r in rows:
        sid = r["subnet"] if r["subnet"] != last else ""
        last = r["subnet"]
        if "note" in r:
            lines.append(f"{sid:<28} {r['model']:<17} {'-':>8} {'-':>11} {'-':>10}  {r['note']}")
            continue
        notes = []
        if "epochs" in r:
            notes.append(f"e={r['epochs']}, {r['optimizer']}")
        if "exits" in r:
            notes.append(f"exits {r['exits']}")
        if "seconds" in r:
            notes.append(f"{r['seconds']:.0f} s")
        lines.append(
            f"{sid:<28} {r['model']:<17} {100 * r['test_accuracy']:>8.2f} "
            f"{r['params'] / 1e6:>11.4f} {r['macs'] / 1e6:>10.3f}  {'; '.join(notes)}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
