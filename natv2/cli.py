"""The ``natv2`` command line: a thin typer app over the library.

Bad input raises ``Natv2Error`` anywhere below; here it becomes one line on stderr and exit 2.
Usage errors (an unknown option, a value of the wrong type or out of an option's range) are
one line and exit 2 too; Ctrl-C ends with one line and exit 130.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

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
from natv2.untrusted import one_line


class Interrupted(Exception):
    """Ctrl-C, carried past typer (which turns KeyboardInterrupt into a silent exit 130 before
    ``main`` could say what to do)."""


class _Natv2Group(TyperGroup):
    """The root command: Ctrl-C while typer parses the arguments (root or sub-command), runs an
    option's callback or runs the command itself becomes :class:`Interrupted`."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted from None


app = typer.Typer(
    name="natv2",
    help="Find the most accurate small image classifier that fits a device (NATv2 on OFAv2).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_Natv2Group,
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


def _usage_line(exc: click_exceptions.UsageError) -> str:
    where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
    return f"error: {exc.format_message()}{where}"


#: the verbs that continue an interrupted run with --resume
RESUMABLE = frozenset({"search", "train-supernet"})


def _interrupted_line(args: list[str]) -> str:
    """What to do after Ctrl-C: --resume only for a verb that has it (the root's own options
    are flags, so the first word that is not an option is the verb)."""
    verb = next((a for a in args if not a.startswith("-")), None)
    if verb in RESUMABLE:
        return "interrupted: rerun with --resume to continue"
    return "interrupted: run the command again"


def main(argv: list[str] | None = None) -> None:
    """Run ``natv2 ARGS``: exit 0 on success, 2 with one ``error:`` line for bad input."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, prog_name="natv2", standalone_mode=False)
    except Natv2Error as exc:
        if "--debug" in args:
            raise
        typer.echo(one_line(f"error: {exc}"), err=True)
        sys.exit(2)
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        typer.echo(one_line(_usage_line(exc)), err=True)
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        typer.echo(one_line(f"error: {exc.format_message()}"), err=True)
        sys.exit(exc.exit_code)
    except (Interrupted, KeyboardInterrupt):
        typer.echo(_interrupted_line(args), err=True)
        sys.exit(130)
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        sys.exit(1)
    # like typer's standalone mode: always SystemExit; typer.Exit(N) in a command gives N
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


if __name__ == "__main__":
    main()
