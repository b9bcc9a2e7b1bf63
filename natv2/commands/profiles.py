"""``natv2 profiles``: list the shipped device profiles and show one with its budgets."""

from __future__ import annotations

import typer

from natv2.commands.common import JsonFlag, emit_json
from natv2.device_profiles import list_profiles, load_profile

app = typer.Typer(help="Device profiles: budgets and objectives for a class of device.")


@app.command("list")
def list_(
    as_json: JsonFlag = False,
) -> None:
    """The shipped profiles, one line each: name and description."""
    records = [
        {"name": name, "description": load_profile(name).description} for name in list_profiles()
    ]
    if as_json:
        emit_json(records)
        return
    width = max(len(r["name"]) for r in records)
    for rec in records:
        typer.echo(f"{rec['name']:<{width}}  {rec['description']}")


def _value(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


@app.command()
def show(
    profile: str = typer.Argument(..., help="A shipped profile name or the path of a TOML file."),
    as_json: JsonFlag = False,
) -> None:
    """Hardware inputs, task, and every budget with whether it was given or derived."""
    prof = load_profile(profile)
    doc = prof.to_dict()
    if as_json:
        emit_json(doc)
        return
    typer.echo(f"{prof.name}: {prof.description}")
    typer.echo(f"source: {prof.source}")
    typer.echo("hardware:")
    for key, value in doc["hardware"].items():
        if value is not None:
            typer.echo(f"  {key:<20} {_value(value)}")
    typer.echo("task:")
    typer.echo(f"  {'objectives':<20} {', '.join(prof.objectives)}")
    shown_res = (
        ", ".join(map(str, prof.resolutions)) if prof.resolutions else "any the supernet has"
    )
    typer.echo(f"  {'resolutions':<20} {shown_res}")
    if prof.target_latency_ms is not None:
        typer.echo(f"  {'target_latency_ms':<20} {_value(prof.target_latency_ms)}")
    typer.echo("budgets:")
    if not prof.budgets:
        typer.echo("  none")
    for key, value in prof.budgets.items():
        origin = prof.budget_origin(key)
        how = f"derived: {prof.derived_from[key]}" if origin == "derived" else "given"
        typer.echo(f"  {key:<20} {_value(value):>14}   {how}")
