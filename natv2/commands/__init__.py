"""Typer sub-commands, one module per verb group; ``natv2.cli`` assembles them."""
