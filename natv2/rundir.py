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
    .natv2.lock          held (flock) by the search writing the folder; names its holder

A run directory belongs to one run: a search takes the lock before it writes anything and a
second search into the folder exits naming the holder; a fresh search never writes into a
folder holding anything but natv2's own log and lock, and ``--resume`` refuses a folder that is
not a natv2 run (see ``natv2.pipeline.check_run_dir`` for the rules).

A subnet record (JSON) is ``{"id", "encoding", "vector", "accuracy", "params", "macs",
"peak_sram_bytes", "flash_bytes", "latency_ms", "feasible", ...}``; accuracy is a fraction.

What reads a finished run (``natv2 postprocess``, ``natv2 export RUN_DIR``) finds its subnet
with :func:`run_subnet` and its dataset with :func:`run_dataset`, so both resolve them alike.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natv2.atomic import atomic_write_bytes, json_text
from natv2.errors import Natv2Error
from natv2.untrusted import file_errors, path_error, path_kind, read_json, shown

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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
LOCK = ".natv2.lock"
#: what a folder may hold and still count as empty: natv2's own lock, and the log of a search
#: interrupted before it wrote its configuration
SCRATCH = frozenset({LOCK, LOG})


def write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, json_text(doc).encode())


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    text = "".join(json_text(r, indent=None) for r in records)
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


def require_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` if it holds a run's configuration; else one line saying what is there
    instead (nothing, a file, a folder without config.json, a path that cannot be read)."""
    run_dir = Path(run_dir)
    kind = path_kind(run_dir)
    found = "no such folder" if kind == "missing" else "a file" if kind != "dir" else None
    if found is None and path_kind(run_dir / CONFIG) != "file":
        found = f"no {CONFIG}"
    if found is not None:
        raise Natv2Error(
            f"{shown(str(run_dir))} is not a natv2 run directory ({found}); "
            "give the --out folder of a `natv2 search` run"
        )
    return run_dir


def load_config(run_dir: str | Path) -> dict:
    path = require_run_dir(run_dir) / CONFIG
    doc = read_json(path, "run configuration", "the run directory is damaged")
    if not isinstance(doc, dict):
        raise Natv2Error(f"{path}: the run configuration is not a JSON object")
    return doc


def folder_state(run_dir: Path) -> str:
    """What ``run_dir`` is: "missing", "empty" (nothing but natv2's scratch files), "run"
    (holds a natv2 config.json), "finished" (a run with its front written), "foreign"
    (other files) or "file" (not a folder)."""
    kind = path_kind(run_dir)
    if kind == "missing":
        return "missing"
    if kind != "dir":
        return "file"
    with file_errors(run_dir, "read"):
        names = {p.name for p in run_dir.iterdir()}
    if (run_dir / CONFIG).is_file():
        return "finished" if (run_dir / f"{FRONT}.json").is_file() else "run"
    return "empty" if names <= SCRATCH else "foreign"


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the lock of ``run_dir`` (its own description), or None when nobody does;
    creates nothing."""
    path = run_dir / LOCK
    if fcntl is None or path_kind(path) != "file":
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _describe_holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe_holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return shown(text or "another process", 200)


class RunLock:
    """Exclusive ownership of a run directory while a search writes it (``flock``: the kernel
    releases it when the holder dies, even by SIGKILL, so a lock is never stale).

    Entering creates the folder if needed and raises ``Natv2Error`` naming the holder when
    another process has it; leaving removes the lock file, and the folder too when this lock
    created it and nothing else was written there.
    """

    def __init__(self, run_dir: Path, command: str = "natv2 search") -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        if fcntl is None:  # pragma: no cover - Windows
            return self
        path = self.run_dir / LOCK
        self._created = path_kind(self.run_dir) == "missing"
        with file_errors(self.run_dir, "create the run directory"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise path_error(path, exc, "create the lock file") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise path_error(path, exc, "lock") from None
                raise Natv2Error(
                    f"{shown(str(self.run_dir))} is in use by another search "
                    f"({_describe_holder(path)}); wait for it to finish, or choose another --out"
                ) from None
            # the holder we waited for may have removed the file: lock the file that is there
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = (
            f"{self.command}, pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}; argv: {shown(' '.join(sys.argv), 120)}"
        )
        os.ftruncate(fd, 0)
        os.write(fd, (holder + "\n").encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        try:
            (self.run_dir / LOCK).unlink(missing_ok=True)
            if self._created:
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()  # only succeeds when nothing else was written
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def trim_jsonl(path: Path, keep: int) -> None:
    """Keep the first ``keep`` complete lines of a JSON-lines file (atomically): the records an
    interrupted iteration appended are dropped, so a resumed run never holds them twice."""
    if path_kind(path) != "file":
        return
    with file_errors(path, "read"):
        lines = path.read_bytes().splitlines(keepends=True)
    good = [ln for ln in lines if ln.endswith(b"\n")][:keep]
    if len(good) == len(lines):
        return
    atomic_write_bytes(path, b"".join(good))


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


@dataclass(frozen=True)
class RunSubnet:
    """A subnet of a search run, as post-processing and export start from it."""

    run_dir: Path
    config: dict  # the run's config.json
    record: dict  # the subnet's record (front, high trade-off set or archive)
    encoding: str  # the record's encoding, else the run's

    @property
    def vector(self) -> list:
        return self.record["vector"]

    @property
    def supernet_path(self) -> Path:
        """The run's adapted supernet, which the subnet is materialised from."""
        return self.run_dir / SUPERNET

    @property
    def space(self):
        """The space the record's vector belongs to (``run_space``)."""
        return run_space(self.config, self.encoding)


def run_space(config: dict, encoding: str):
    """The ``SearchSpace`` a run's vectors decode in: the encoding's, with the resolutions of
    the run's supernet (``config.json``'s ``supernet_config``; OFA's 48-64 px for runs that
    predate fitted layouts)."""
    from natv2.space import RESOLUTIONS, SearchSpace

    raw = config.get("supernet_config")
    grid = raw.get("resolutions") if isinstance(raw, dict) else None
    if not isinstance(grid, list) or not all(isinstance(r, int) for r in grid):
        grid = list(RESOLUTIONS)
    return SearchSpace(encoding, grid=tuple(grid))


def run_subnet(run_dir: str | Path, subnet_id: str) -> RunSubnet:
    """The configuration of the run in ``run_dir`` and the record of ``subnet_id``; raises
    Natv2Error when the record carries no vector or neither it nor the run names an encoding
    (nothing could decode it)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    record = find_subnet(run_dir, subnet_id)
    encoding = record.get("encoding") or config.get("encoding")
    if not encoding or "vector" not in record:
        raise Natv2Error(f"{run_dir}: the record of {subnet_id} has no encoding or vector")
    return RunSubnet(run_dir, config, record, encoding)


@dataclass(frozen=True)
class RunDataset:
    """Which dataset to load for a run, and from where (``natv2.data.load_dataset``'s
    arguments)."""

    name: str | None  # a --dataset spec; None when neither given nor recorded
    data_dir: str | Path | None  # None: load_dataset's default (./data)


def run_dataset(
    config: dict, *, dataset: str | None = None, data_dir: str | Path | None = None
) -> RunDataset:
    """The dataset of a run whose config.json is ``config``, for the name and ``data_dir``
    alike by one precedence: an explicit option given by the user (``dataset``, ``data_dir``)
    wins, then what the run recorded (config.json's top level, the resolved value, then its
    ``request``, what the search was asked for), then the default (None).

    A value counts as given when it is truthy (an empty string falls through to the next).
    """
    raw = config.get("request")
    request = raw if isinstance(raw, dict) else {}

    def pick(explicit: Any, key: str) -> Any:
        return explicit or config.get(key) or request.get(key) or None

    return RunDataset(pick(dataset, "dataset"), pick(data_dir, "data_dir"))
