"""The run directory: what a search leaves behind and what post-processing and export read.

Layout (every file written atomically)::

    config.json          resolved configuration (encoding, supernet, dataset, device profile, ...)
    supernet.pt          the adapted supernet (natv2.supernet.checkpoint format)
    archive.jsonl        the final archive, one subnet record per line
    evaluations.jsonl    every subnet evaluation of the run, in order (appended as it goes)
    front.json/.csv      non-dominated feasible subnets
    high_tradeoff.json/.csv   NAT's high trade-off subset of the front
    pareto.png           the front and the archive
    checkpoints/iter-NNN.pt   search state after each iteration (for --resume)
    search.log           what the terminal showed
    postprocessed/ID/    fine-tuned / AEP models (natv2 postprocess)
    exports/ID/          deployment folders (natv2 export)

A subnet record (JSON) is ``{"id", "encoding", "vector", "accuracy", "params", "macs",
"peak_sram_bytes", "flash_bytes", "latency_ms", "feasible", ...}``; accuracy is a fraction.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natv2.errors import Natv2Error
from natv2.supernet.materialize import atomic_write_bytes

CONFIG = "config.json"
SUPERNET = "supernet.pt"
ARCHIVE = "archive.jsonl"
EVALUATIONS = "evaluations.jsonl"
FRONT = "front"
HIGH_TRADEOFF = "high_tradeoff"
PLOT = "pareto.png"
CHECKPOINTS = "checkpoints"
LOG = "search.log"
POSTPROCESSED = "postprocessed"
EXPORTS = "exports"


def write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, default=_plain) + "\n").encode())


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    text = "".join(json.dumps(r, default=_plain) + "\n" for r in records)
    atomic_write_bytes(path, text.encode())


def write_csv(path: Path, records: Sequence[dict]) -> None:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys and not isinstance(r[k], dict)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        row = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()}
        writer.writerow(row)
    atomic_write_bytes(path, buf.getvalue().encode())


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def require_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise Natv2Error(
            f"{run_dir} is not a natv2 run directory (no {CONFIG}); "
            "give the --out folder of a `natv2 search` run"
        )
    return run_dir


def load_config(run_dir: str | Path) -> dict:
    path = require_run_dir(run_dir) / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise Natv2Error(f"{path}: unreadable run configuration ({exc})") from None


def read_records(run_dir: Path, name: str) -> list[dict]:
    """Records of ``front``, ``high_tradeoff`` (JSON), ``archive`` or ``evaluations`` (JSON
    lines; a line cut short by a kill is skipped)."""
    lines_file = {"archive": ARCHIVE, "evaluations": EVALUATIONS}.get(name)
    path = run_dir / (lines_file or f"{name}.json")
    if not path.is_file():
        return []
    try:
        if lines_file:
            out = []
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            return out
        return list(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise Natv2Error(f"{path}: unreadable ({exc}); rerun the search with --resume") from None


def find_subnet(run_dir: str | Path, subnet_id: str) -> dict:
    """The record of ``subnet_id`` from the front, the high trade-off set or the archive."""
    run_dir = require_run_dir(run_dir)
    for name in (FRONT, HIGH_TRADEOFF, "archive"):
        for rec in read_records(run_dir, name):
            if rec.get("id") == subnet_id:
                return rec
    front = [r["id"] for r in read_records(run_dir, FRONT)]
    raise Natv2Error(
        f"subnet {subnet_id!r} is not in {run_dir}; subnets of its front: "
        f"{', '.join(front[:8]) or '(none)'}{' ...' if len(front) > 8 else ''}"
    )
