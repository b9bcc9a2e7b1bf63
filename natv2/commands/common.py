"""Small helpers every command shares: JSON output and error reporting."""

from __future__ import annotations

import sys
from typing import Any

from natv2.atomic import json_text


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout and nothing else (the ``--json`` contract)."""
    sys.stdout.write(json_text(doc))


def vector_text(vector) -> str:
    return ",".join(str(int(x)) for x in vector)


def dataset_help() -> str:
    return (
        "mnist5k (embedded default), digits, cifar10, cifar100, tinyimagenet, "
        "imagefolder:PATH or npz:PATH."
    )


def make_logger(as_json: bool, quiet: bool = False):
    """Progress lines go to stderr when stdout is reserved for one JSON document."""
    import typer

    def log(message: str) -> None:
        if not quiet:
            typer.echo(message, err=as_json)

    return log
