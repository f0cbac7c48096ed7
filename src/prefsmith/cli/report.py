"""``prefsmith report``: one self-contained HTML page of a run's data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli.common import check_choice, console, fail
from prefsmith.defaults import ON_ERROR

Run = Annotated[
    Path,
    typer.Argument(
        help="A prefsmith output: rows file (.jsonl/.json/.parquet) of score, pairs, rmboost"
        " or relabel, or an eval run folder.",
        show_default=False,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="HTML file to write. Default: <file>.report.html, or <folder>/report.html.",
    ),
]


def report(
    run: Run,
    output: Output = None,
    max_rows: Annotated[
        int | None, typer.Option(help="Show only the first N rows (the page says so).", min=1)
    ] = None,
    on_error: Annotated[
        str,
        typer.Option(
            help="raise | skip: a row that cannot be read (a line that is not JSON) stops the"
            " report, or is left out and named on the terminal and in the page."
        ),
    ] = "raise",
) -> None:
    """Write a self-contained HTML report (settings, margins, rows, per-token density ratios).

    Prints the path of the written file.
    """
    from prefsmith.report import (
        load_run,
        skipped_note,
        unreadable_rows_error,
        write_loaded_report,
    )

    check_choice("--on-error", on_error, ON_ERROR)
    try:
        loaded = load_run(run, max_rows)
        if loaded.bad_lines and on_error == "raise":
            raise unreadable_rows_error(loaded.bad_lines)
        path = write_loaded_report(loaded, output)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
    if loaded.bad_lines:
        from rich.markup import escape

        note = escape(skipped_note(loaded.bad_lines))
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    typer.echo(str(path))
