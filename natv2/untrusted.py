"""The boundary for untrusted input: numbers, names, paths, JSON files and checkpoint metadata.

Everything natv2 reads from a user (the command line, TOML profiles, JSON run files, npz and
image datasets, checkpoints) is checked here before it is used, so that hostile input ends as
one ``Natv2Error`` naming the value, the allowed range and the file, and never as a traceback,
an out-of-memory kill or a silently wrong result. Each rule has one owner: callers ask this
module instead of repeating checks.

Standard library only (``natv2.device_profiles`` uses it, and it must stay importable without
torch).
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import tempfile
import unicodedata
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

from natv2.errors import Natv2Error

INT64_MAX = 2**63 - 1
#: seeds go to numpy, torch and pymoo: all accept 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1
#: classes of a classifier head (ImageNet-21k has 21,841): beyond this a label is an error
MAX_CLASSES = 100_000
#: command-line bounds: far above any real use, low enough that nothing overflows or exhausts memory
MAX_COUNT = 10**9  # iterations, images, steps
#: the archive is held in memory and pre-processing evaluates a multiple of it up front: the
#: paper's 300 times 30 still fits, a billion asked for 149 GiB
MAX_ARCHIVE_SIZE = 10_000
MAX_RUNS = 10**6  # timed runs, warm-up runs, folds
MAX_SAMPLES = 10**5  # subnets drawn at once
MAX_THREADS = 1024
MAX_RESOLUTION = 2048  # input side of an image classifier
MAX_CHANNELS = 1024  # input channels of an image classifier (RGB 3, multispectral tens)
#: longest text echoed back in a message
SHOWN_CHARS = 300


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as text that is safe to echo on a terminal: control characters escaped (no
    escape sequence from a file or argument reaches the terminal), cut to ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    out = "".join(
        ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode()
        for ch in text[: limit + 1]
    )
    return out if len(text) <= limit else out[:limit] + "..."


def one_line(message: str) -> str:
    """A message as one terminal-safe line: newlines become ``; `` and control characters
    are escaped (the CLI's contract: one line on stderr)."""
    parts = [p.strip() for p in str(message).splitlines() if p.strip()]
    return shown("; ".join(parts), limit=2000)


# --------------------------------------------------------------------------- numbers


def read_int(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo..hi`` (bools and floats are not integers)."""
    if isinstance(value, bool) or not _is_integer(value):
        raise Natv2Error(f"{name} must be an integer in {lo}..{hi}, got {shown(value)}")
    number = int(value)  # numpy integers included
    if not lo <= number <= hi:
        raise Natv2Error(f"{name} = {short_int(number)} is out of range; allowed {lo}..{hi}")
    return number


def read_float(name: str, value: object, lo: float, hi: float) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (ints are accepted, bools are not)."""
    if isinstance(value, bool) or not (_is_integer(value) or isinstance(value, float)):
        raise Natv2Error(f"{name} must be a number in {lo:g}..{hi:g}, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or not lo <= number <= hi:
        raise Natv2Error(f"{name} = {shown(value)} is out of range; allowed {lo:g}..{hi:g}")
    return number


def _is_integer(value: object) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral)


def short_int(number: int) -> str:
    """Huge integers as an order of magnitude (str() of one with 4300+ digits even raises)."""
    if number.bit_length() < 100:
        return str(number)
    return f"{'-' if number < 0 else ''}~2**{number.bit_length() - 1}"


# --------------------------------------------------------------------------- paths


_OS_REASONS = {
    errno.ENAMETOOLONG: "the name is longer than the file system allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOENT: "it does not exist",
    errno.EEXIST: "it already exists",
    errno.ELOOP: "too many symbolic links",
    errno.EFBIG: "the file is too large",
}


def path_error(path: str | Path, exc: OSError, action: str, fix: str | None = None) -> Natv2Error:
    """The one-line error for an OSError while ``action`` (e.g. "write") ``path``, ending with
    ``fix`` when the caller knows what the user should do."""
    reason = _OS_REASONS.get(exc.errno or -1) or (exc.strerror or type(exc).__name__).lower()
    tail = f"; {fix}" if fix else ""
    return Natv2Error(f"cannot {action} {shown(str(path))}: {reason}{tail}")


@contextmanager
def file_errors(path: str | Path, action: str, fix: str | None = None) -> Iterator[None]:
    """Run the body; an OSError becomes a ``Natv2Error`` naming ``path``, the reason and
    ``fix``."""
    try:
        yield
    except OSError as exc:
        raise path_error(path, exc, action, fix) from None


def path_kind(path: str | Path) -> Literal["file", "dir", "missing", "other"]:
    """What is at ``path``, where a name too long or a permission problem is an error, not
    "missing"."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as exc:
        raise path_error(path, exc, "read") from None
    except ValueError:  # an embedded NUL byte
        raise Natv2Error(f"{shown(str(path))} is not a valid path") from None
    import stat

    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "other"


def check_out_folder(out: Path, what: str, own: Collection[str], flag: str = "--out") -> None:
    """May ``what`` (e.g. "an export folder") be written into the folder ``out``? Refused,
    touching nothing: a path that is not a folder, and a folder holding anything but ``own``
    (the files an earlier run wrote, which are replaced) or their atomic writers' leftovers
    (``.NAME.*``), so the user's own files are never overwritten or mixed in. ``flag`` names
    the option that chose ``out`` ("" for a default folder)."""
    where = f"{flag} {shown(str(out))}" if flag else shown(str(out))
    fix_flag = flag or "--out"
    kind = path_kind(out)
    if kind in ("file", "other"):
        state = "a file" if kind == "file" else "not a folder"
        raise Natv2Error(f"{where} is {state}; give {fix_flag} a folder to write into")
    if kind == "missing":
        return
    with file_errors(out, "read"):
        names = sorted(p.name for p in out.iterdir())
    leftovers = tuple(f".{name}." for name in own)
    stray = [n for n in names if n not in own and not n.startswith(leftovers)]
    if stray:
        more = " ..." if len(stray) > 3 else ""
        raise Natv2Error(
            f"{where} exists and is not {what} (it holds {shown(', '.join(stray[:3]))}{more}); "
            f"give {fix_flag} a new or empty folder"
        )


def check_out_file(out: Path, what: str, flag: str = "--out") -> None:
    """May ``what`` (e.g. "the checkpoint") be written to the file ``out``? Refused before the
    slow work, touching nothing: a folder (or device) in its place, which would otherwise be
    found only when the finished work is saved."""
    kind = path_kind(out)
    if kind in ("dir", "other"):
        state = "a folder" if kind == "dir" else "not a regular file"
        raise Natv2Error(f"{flag} {shown(str(out))} is {state}; give the path of {what} to write")


@contextmanager
def output_folder(out: Path, fix: str) -> Iterator[Path]:
    """Create ``out`` and prove it writable before the slow work, so that a folder that cannot
    be written fails in the first second, not after training; when the body fails (or is
    interrupted) the folders made here are removed again if still empty."""
    created = [p for p in (out, *out.parents) if path_kind(p) == "missing"]
    try:
        with file_errors(out, "create the output folder", fix):
            out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".natv2-write-test.")
            os.close(fd)
            os.unlink(probe)
        yield out
    except BaseException:
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def read_json(path: str | Path, what: str, fix: str) -> Any:
    """A JSON file as Python values; unreadable, malformed or absurdly nested files raise
    ``Natv2Error`` naming ``what`` the file is and the ``fix``."""
    with file_errors(path, f"read {what}"):
        data = Path(path).read_bytes()
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 4300-digit ints
        reason = "nested too deeply" if isinstance(exc, RecursionError) else shown(exc, 120)
        raise Natv2Error(f"{shown(str(path))}: unreadable {what} ({reason}); {fix}") from None


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Field:
    """One key of a metadata document: the accepted types and, for ints, the range."""

    kinds: type | tuple[type, ...]
    required: bool = True
    lo: int | None = None
    hi: int | None = None


_KIND_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true/false",
    dict: "a mapping",
    list: "a list",
    tuple: "a list",
    type(None): "null",
}


def check_fields(doc: object, schema: Mapping[str, Field], source: str, fix: str) -> dict:
    """``doc`` if it is a mapping whose keys in ``schema`` have the declared types and ranges
    (unknown keys are kept: formats grow); else ``Natv2Error`` naming the key and the ``fix``.
    A bool is never an integer or a number; an int is accepted where a float is."""
    if not isinstance(doc, dict):
        raise Natv2Error(f"{source}: expected a mapping, got {type(doc).__name__}; {fix}")
    for key, spec in schema.items():
        if key not in doc:
            if spec.required:
                raise Natv2Error(f"{source}: missing {key!r}; {fix}")
            continue
        value = doc[key]
        kinds = spec.kinds if isinstance(spec.kinds, tuple) else (spec.kinds,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and int not in kinds and isinstance(value, int):
            ok = not isinstance(value, bool)
        if not ok:
            words = " or ".join(_KIND_WORDS.get(k, k.__name__) for k in kinds)
            raise Natv2Error(
                f"{source}: {key!r} must be {words}, got {type(value).__name__}; {fix}"
            )
        if spec.lo is not None and spec.hi is not None and isinstance(value, int):
            read_int(f"{source}: {key!r}", value, spec.lo, spec.hi)
    return doc


# --------------------------------------------------------------------------- checkpoints


def load_torch(path: str | Path, what: str, fix: str) -> Any:
    """A torch file read with ``weights_only=True`` (tensors and plain values; no code runs).

    Every failure is one line naming the file, why, and ``fix``; never torch's own advice to
    retry with ``weights_only=False``, which would run whatever code the file carries.
    """
    import torch  # here, not at import: device_profiles imports this module without torch

    kind = path_kind(path)
    if kind != "file":
        state = "is a directory" if kind == "dir" else "does not exist"
        raise Natv2Error(f"{what} {shown(str(path))} {state}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise path_error(path, exc, f"read {what}") from None
    except MemoryError:
        raise Natv2Error(f"{shown(str(path))}: not enough memory to load this {what}") from None
    except Exception as exc:  # torch raises many types for hostile files; all mean "unusable"
        raise Natv2Error(
            f"{shown(str(path))}: not a readable {what} ({torch_load_failure(exc)}); {fix}"
        ) from None


def load_weights(module: Any, path: Path, what: str, owner: str, fix: str) -> None:
    """Load the state dict at ``path`` into ``module`` as untrusted input: read with
    ``weights_only=True``, a dict, finite, and matching the module's keys and shapes; each
    failure one line naming the file, the ``what`` it should be (for ``owner``) and ``fix``."""
    state = load_torch(path, what, fix)
    if not isinstance(state, dict):
        raise Natv2Error(f"{path}: not a state dict; {fix}")
    require_finite(state, str(path), fix)
    try:
        module.load_state_dict(state)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Natv2Error(
            f"{path}: not a valid {what} for {owner} ({shown(first, 160)}); {fix}"
        ) from None


def torch_load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one short clause, without torch's advice
    to disable the safety."""
    import re

    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled Python object ({found.group(1)}), not only tensors"
    # Damage is named before the weights_only wording: torch wraps every unpickling failure,
    # including a garbled stream, in its "Weights only load failed" advice.
    if "central directory" in text or "PytorchStreamReader" in text or "zip archive" in text:
        return "it is a truncated or corrupt torch archive"
    if "Unsupported operand" in text or "invalid load key" in text:
        return "it is not a torch file (damaged or another format)"
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds pickled Python objects, not only tensors"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = shown(lines[0], 120) if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def require_finite(state: Mapping[str, Any], source: str, fix: str) -> None:
    """Every floating tensor of a state dict is finite: NaN weights are named here, not found
    later as a parity failure or a 10 % accuracy."""
    import torch

    for key, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            raise Natv2Error(f"{source}: tensor {shown(key)} holds NaN or infinite values; {fix}")
