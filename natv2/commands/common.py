"""Small helpers every command shares: JSON output and error reporting."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from natv2.atomic import json_text
from natv2.data.registry import DEFAULT_DATASET, READERS
from natv2.errors import Natv2Error
from natv2.untrusted import MAX_COUNT, MAX_THREADS

# The options several commands share, declared once (typer's Annotated idiom): a command
# writes ``as_json: JsonFlag = False`` and gets the same flag, help and range as the others.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where datasets live.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        max=MAX_THREADS,
        help="onnxruntime intra-op threads (default: physical cores).",
    ),
]
LayoutOption = Annotated[
    str,
    typer.Option(
        "--layout",
        help="Strides and resolutions of a supernet trained here: data (fitted to the "
        "dataset's image size) or imagenet (OFA's: total stride 32, 48-64 px).",
    ),
]
# top-1 of export and validate: a fixed stratified sample of the test split unless asked for more
# (TFLM's reference interpreter runs about 60 images a second here)
DEFAULT_TEST_IMAGES = 2000

TestLimit = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=1,
        max=MAX_COUNT,
        help=f"Measure top-1 on a fixed, stratified sample of N test images (default "
        f"{DEFAULT_TEST_IMAGES}).",
    ),
]
FullTest = Annotated[
    bool,
    typer.Option("--full-test", help="Measure top-1 on every image of the test split."),
]


def top1_images(limit: int | None, full_test: bool) -> int | None:
    """How many test images top-1 is measured on (None: all), from ``--limit``/``--full-test``."""
    if full_test and limit is not None:
        raise Natv2Error("--limit and --full-test exclude each other: give one of them")
    return None if full_test else (limit or DEFAULT_TEST_IMAGES)


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout and nothing else (the ``--json`` contract)."""
    sys.stdout.write(json_text(doc))


def vector_text(vector) -> str:
    return ",".join(str(int(x)) for x in vector)


def dataset_help() -> str:
    """The ``--dataset`` help: every reader in the registry, the default marked (their
    descriptions would take a screen in every command's ``--help``)."""
    parts = [f"{r.spec}{' (default)' if r.name == DEFAULT_DATASET else ''}" for r in READERS]
    return f"{', '.join(parts[:-1])} or {parts[-1]}."


def make_logger(as_json: bool, quiet: bool = False):
    """Progress lines go to stderr when stdout is reserved for one JSON document."""
    import typer

    def log(message: str) -> None:
        if not quiet:
            typer.echo(message, err=as_json)

    return log
