"""``natv2 space``: sample and decode encoding vectors."""

from __future__ import annotations

import numpy as np
import typer

from natv2.commands.common import emit_json, vector_text
from natv2.space import ENCODINGS, SAMPLERS, SearchSpace, parse_vector

app = typer.Typer(help="The OFAv2 search space: sample, decode and cost encoding vectors.")

EncodingOpt = typer.Option(
    "exits+parallel", "--encoding", "-e", help=f"One of: {', '.join(ENCODINGS)}."
)


def subnet_json(space: SearchSpace, vector) -> dict:
    arch = space.decode(vector)
    return {
        "id": arch.id,
        "encoding": space.encoding,
        "vector": [int(x) for x in space.encode(arch)],
        "arch": arch.to_dict(),
    }


@app.command()
def sample(
    encoding: str = EncodingOpt,
    n: int = typer.Option(5, "-n", min=1, help="How many subnets."),
    sampler: str = typer.Option("natv2", help=f"One of: {', '.join(SAMPLERS)}."),
    seed: int = typer.Option(0, help="Random seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Draw subnets with NATv2's depth-uniform sampler or NAT's uniform one."""
    space = SearchSpace(encoding)
    vectors = space.sample(n, np.random.default_rng(seed), sampler)
    records = [subnet_json(space, v) for v in vectors]
    if as_json:
        emit_json(records)
        return
    for rec in records:
        typer.echo(f"{rec['id']}  {vector_text(rec['vector'])}")


@app.command()
def decode(
    vector: str = typer.Argument(..., help="Comma-separated integers, e.g. 4,1,4,9,9,0,0,..."),
    encoding: str = EncodingOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show the Arch of a vector and its canonical form."""
    space = SearchSpace(encoding)
    given = parse_vector(vector)
    rec = subnet_json(space, given)
    rec["canonical"] = rec["vector"] == [int(x) for x in given]
    if as_json:
        emit_json(rec)
        return
    typer.echo(space.decode(given).describe())
    typer.echo(f"canonical vector: {vector_text(rec['vector'])}")
    if not rec["canonical"]:
        typer.echo("(the given vector is not canonical; the line above is what the supernet runs)")
