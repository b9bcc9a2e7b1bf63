"""Supernet checkpoints: one file holding the supernet of each width multiplier.

Checkpoints are untrusted input: they are plain dicts of tensors and JSON-like values, loaded with
``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from natv2.errors import Natv2Error
from natv2.supernet.config import SupernetConfig
from natv2.supernet.materialize import atomic_torch_save
from natv2.supernet.network import OFAv2Supernet

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


def load_supernets(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[float, OFAv2Supernet], dict[str, Any]]:
    """Rebuild the supernets of a checkpoint; a bad file raises Natv2Error with the fix."""
    path = Path(path)
    if not path.is_file():
        raise Natv2Error(
            f"supernet checkpoint {path} does not exist; train one with `natv2 train-supernet` "
            "or import OFA weights with `natv2 import-ofa`"
        )
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Natv2Error(
            f"{path}: not a readable natv2 supernet checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); "
            "retrain it with `natv2 train-supernet` or re-import it with `natv2 import-ofa`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != SUPERNET_FORMAT:
        raise Natv2Error(
            f"{path}: not a natv2 supernet checkpoint (expected format {SUPERNET_FORMAT!r}); "
            "OFA checkpoints must first go through `natv2 import-ofa`"
        )
    nets: dict[float, OFAv2Supernet] = {}
    try:
        for entry in doc["supernets"]:
            config = SupernetConfig.from_dict(dict(entry["config"]))
            net = OFAv2Supernet(config)
            net.load_state_dict(entry["state_dict"])
            nets[config.width] = net.to(device)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise Natv2Error(
            f"{path}: corrupt supernet checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); retrain or re-import it"
        ) from None
    if not nets:
        raise Natv2Error(f"{path}: the checkpoint holds no supernet")
    return nets, dict(doc.get("meta", {}))
