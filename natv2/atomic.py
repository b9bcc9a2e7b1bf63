"""Atomic file writes and the one JSON default, for every module that writes run files.

A write goes to a temp file in the same folder and is renamed over the target, so a crash or a
full disk never leaves half a file and what was written before survives. Torch is imported
only by ``atomic_torch_save``, so the torch-free modules can write files too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from natv2.errors import Natv2Error
from natv2.untrusted import file_errors, shown


def json_default(obj: Any) -> Any:
    """numpy and torch values as plain JSON: arrays as lists, scalars as numbers."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_text(doc: Any, indent: int | None = 2) -> str:
    """``doc`` as one JSON document with a final newline (``json_default`` for numpy)."""
    return json.dumps(doc, indent=indent, default=json_default) + "\n"


def _public_mode(tmp: str) -> None:
    """mkstemp creates 0600 files; give the final file the mode a plain open() would."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so a crash never leaves half a file;
    a file-system error (disk full, read-only, permission) is one line naming ``path``."""
    with file_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            _public_mode(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` through a temp file and rename: the previous file survives any failure,
    and a failed write (torch reports a full disk as a RuntimeError) is one line naming
    ``path``."""
    with file_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            import torch  # here, not at the top: writing JSON must not need torch

            torch.save(obj, tmp)
            _public_mode(tmp)
            os.replace(tmp, path)
        except RuntimeError as exc:
            Path(tmp).unlink(missing_ok=True)
            if "PytorchStreamWriter" not in str(exc) and "write" not in str(exc).lower():
                raise
            raise Natv2Error(
                f"cannot write {shown(str(path))}: writing failed (is the disk full?); files "
                "written before are intact: free space and rerun (with --resume for a search)"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
