"""``natv2 import-ofa``: turn an OFA MobileNetV3 checkpoint into a natv2 supernet checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from natv2.commands.common import JsonFlag, emit_json
from natv2.errors import Natv2Error
from natv2.space import WIDTHS
from natv2.untrusted import MAX_CLASSES, MAX_SEED


def import_ofa(
    checkpoint: Path = typer.Argument(
        ..., help="OFA state dict, e.g. ofa_mbv3_d234_e346_k357_w1.0 (raw or {'state_dict': ...})."
    ),
    width: float = typer.Option(
        ..., "--width", help="Width multiplier of the checkpoint: 1.0|1.2."
    ),
    classes: int | None = typer.Option(
        None,
        "--classes",
        min=2,
        max=MAX_CLASSES,
        help="Classes of the new supernet; a number other than the checkpoint's "
        "re-initialises the classifier.",
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the natv2 supernet checkpoint."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of a re-initialised classifier."),
    as_json: JsonFlag = False,
) -> None:
    """Import OFA's pretrained MobileNetV3 supernet (w1.0|w1.2) as a baseline-encoding supernet."""
    if width not in WIDTHS:
        raise Natv2Error(
            f"--width {width} is not an OFA width multiplier; pass --width 1.0 or --width 1.2"
        )
    # torch is imported here, not at CLI start-up.
    from natv2.ofa_import import import_ofa_checkpoint_file
    from natv2.supernet.checkpoint import save_supernets

    result = import_ofa_checkpoint_file(checkpoint, width, classes, seed)
    net = result.net
    n_classes = net.config.num_classes
    save_supernets(
        out,
        {width: net},
        meta={"source": "ofa", "checkpoint": str(checkpoint), "width": width, "classes": n_classes},
    )
    doc = {
        "checkpoint": str(checkpoint),
        "out": str(out),
        "supernet": net.config.name,
        "encoding": net.encoding,
        "width": width,
        "params": result.params,
        "tensors": len(net.state_dict()),
        "classes": n_classes,
        "checkpoint_classes": result.checkpoint_classes,
        "classifier_reinitialised": result.classifier_reinitialised,
        "ignored": result.ignored,
    }
    if as_json:
        emit_json(doc)
        return
    typer.echo(
        f"imported {checkpoint} as supernet {net.config.name} ({net.encoding} encoding): "
        f"{result.params:,} parameters in {doc['tensors']} tensors"
    )
    if result.classifier_reinitialised:
        typer.echo(
            f"classes: {n_classes} (classifier re-initialised with seed {seed}; "
            f"the checkpoint's classifier has {result.checkpoint_classes})"
        )
    else:
        typer.echo(f"classes: {n_classes} (classifier from the checkpoint)")
    typer.echo(f"wrote {out}")
