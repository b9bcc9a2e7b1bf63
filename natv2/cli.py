"""The ``natv2`` command line: a thin typer app over the library.

Bad input raises ``Natv2Error`` anywhere below; here it becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import sys

import typer

from natv2 import __version__
from natv2.commands import (
    import_ofa,
    predictors,
    profiles,
    search,
    space,
    train_supernet,
    validate,
)
from natv2.commands.export import export as export_command
from natv2.commands.postprocess import postprocess as postprocess_command
from natv2.errors import Natv2Error

app = typer.Typer(
    name="natv2",
    help="Find the most accurate small image classifier that fits a device (NATv2 on OFAv2).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# in the order of the workflow
app.command("search")(search.search)
app.add_typer(profiles.app, name="profiles")
app.add_typer(space.app, name="space")
app.command("train-supernet")(train_supernet.train_supernet)
app.command("import-ofa")(import_ofa.import_ofa)
app.add_typer(predictors.app, name="predictors")
app.command("postprocess")(postprocess_command)
app.command("export")(export_command)
app.command("validate")(validate.validate)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"natv2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """natv2: NATv2 search on OFAv2 supernets, device profiles, ONNX export and validation."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="natv2")
    except Natv2Error as exc:
        if "--debug" in args:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun with --resume to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
