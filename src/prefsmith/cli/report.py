"""``prefsmith report``: one self-contained HTML page of a run's data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli.common import fail


def report(
    run: Annotated[
        Path,
        typer.Argument(
            help="A prefsmith output: rows file (.jsonl/.json/.parquet) of score, pairs, rmboost"
            " or relabel, or an eval run folder.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="HTML file to write. Default: <file>.report.html, or <folder>/report.html.",
        ),
    ] = None,
    max_rows: Annotated[
        int | None, typer.Option(help="Show only the first N rows (the page says so).", min=1)
    ] = None,
) -> None:
    """Write a self-contained HTML report (settings, margins, rows, per-token density ratios).

    Prints the path of the written file.
    """
    from prefsmith.report import write_report

    try:
        path = write_report(run, output, max_rows=max_rows)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
    typer.echo(str(path))
