"""Shared pieces of the command line: the console and error exits."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)
