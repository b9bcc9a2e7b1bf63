"""Supernet checkpoints: one file holding the supernet of each width multiplier.

Checkpoints are untrusted input: they are plain dicts of tensors and JSON-like values, loaded with
``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from natv2.atomic import atomic_torch_save
from natv2.errors import Natv2Error
from natv2.supernet.config import SupernetConfig
from natv2.supernet.network import OFAv2Supernet
from natv2.untrusted import Field, check_fields, load_torch, path_kind, require_finite, shown

SUPERNET_FORMAT = "natv2-supernet/1"


def save_supernets(
    path: str | Path, nets: dict[float, OFAv2Supernet], meta: dict[str, Any] | None = None
) -> None:
    """Write every width's supernet and ``meta`` (dataset, schedule, ...) atomically."""
    doc = {
        "format": SUPERNET_FORMAT,
        "supernets": [
            {"config": net.config.to_dict(), "state_dict": net.state_dict()}
            for _, net in sorted(nets.items())
        ],
        "meta": meta or {},
    }
    atomic_torch_save(doc, Path(path))


_FIX = "retrain it with `natv2 train-supernet` or re-import it with `natv2 import-ofa`"
#: what a supernet checkpoint must hold, checked before anything reads it
CHECKPOINT_SCHEMA = {
    "format": Field(str),
    "supernets": Field(list),
    "meta": Field(dict, required=False),
}
ENTRY_SCHEMA = {"config": Field(dict), "state_dict": Field(dict)}


def load_supernets(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[float, OFAv2Supernet], dict[str, Any]]:
    """Rebuild the supernets of a checkpoint; a bad file raises Natv2Error with the fix."""
    path = Path(path)
    if path_kind(path) == "missing":
        raise Natv2Error(
            f"supernet checkpoint {shown(str(path))} does not exist; train one with `natv2 "
            "train-supernet` or import OFA weights with `natv2 import-ofa`"
        )
    doc = load_torch(path, "natv2 supernet checkpoint", _FIX)
    if not isinstance(doc, dict) or doc.get("format") != SUPERNET_FORMAT:
        raise Natv2Error(
            f"{shown(str(path))}: not a natv2 supernet checkpoint (expected format "
            f"{SUPERNET_FORMAT!r}); OFA checkpoints must first go through `natv2 import-ofa`"
        )
    check_fields(doc, CHECKPOINT_SCHEMA, f"{path}", _FIX)
    if not doc["supernets"]:
        raise Natv2Error(f"{path}: the checkpoint holds no supernet; {_FIX}")
    nets: dict[float, OFAv2Supernet] = {}
    for i, entry in enumerate(doc["supernets"]):
        check_fields(entry, ENTRY_SCHEMA, f"{path}: supernets[{i}]", _FIX)
        config = SupernetConfig.from_dict(entry["config"], source=f"{path}: supernets[{i}]")
        require_finite(
            entry["state_dict"], f"{path}", "the supernet diverged or the file is corrupt: " + _FIX
        )
        net = OFAv2Supernet(config)
        try:
            net.load_state_dict(entry["state_dict"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise Natv2Error(
                f"{path}: corrupt supernet checkpoint ({type(exc).__name__}: "
                f"{shown(str(exc).splitlines()[0] if str(exc) else '', 160)}); {_FIX}"
            ) from None
        nets[config.width] = net.to(device)
    return nets, dict(doc.get("meta", {}))
