"""``prefsmith report``: one self-contained HTML page to look at scored data.

The page shows a run's settings, an eval's section/subset tables and plots, the margin
distribution, a sortable and filterable table of rows, and for each row the prompt and the
responses coloured token by token by their density-ratio contribution
(``log p_strong − log p_weak``). It needs no server and no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefsmith.report.data import report_data
from prefsmith.report.html import render_html
from prefsmith.report.load import LoadedRun, load_run
from prefsmith.report.tokens import TokenView, token_view

__all__ = [
    "LoadedRun",
    "TokenView",
    "default_output",
    "load_run",
    "render_html",
    "report_data",
    "skipped_note",
    "token_view",
    "unreadable_rows_error",
    "write_loaded_report",
    "write_report",
]


def default_output(source: str | Path) -> Path:
    """``<folder>/report.html`` for a folder, ``<file>.report.html`` for a file.

    >>> default_output("runs/score.jsonl").as_posix()
    'runs/score.jsonl.report.html'
    """
    source = Path(source)
    if source.is_dir():
        return source / "report.html"
    return source.with_name(source.name + ".report.html")


def unreadable_rows_error(bad_lines: list[str]) -> ValueError:
    """The error for a source with rows that cannot be read: the first, how many more, and
    what to do (as ``score`` says of bad rows).

    >>> str(unreadable_rows_error(["s.jsonl:2: not valid JSON", "s.jsonl:5: not valid JSON"]))
    's.jsonl:2: not valid JSON (and 1 more bad rows); --on-error skip writes the page without them'
    """
    more = f" (and {len(bad_lines) - 1} more bad rows)" if len(bad_lines) > 1 else ""
    them = "them" if len(bad_lines) > 1 else "it"
    return ValueError(f"{bad_lines[0]}{more}; --on-error skip writes the page without {them}")


def skipped_note(bad_lines: list[str], shown: int = 5) -> str:
    """The page's (and terminal's) note naming the rows left out: the first ``shown`` of them.

    >>> skipped_note(["s.jsonl:2: not valid JSON"])
    '1 row of the source could not be parsed, not shown: s.jsonl:2: not valid JSON'
    """
    n = len(bad_lines)
    listed = "; ".join(bad_lines[:shown]) + (f"; and {n - shown} more" if n > shown else "")
    rows = "1 row" if n == 1 else f"{n} rows"
    return f"{rows} of the source could not be parsed, not shown: {listed}"


def write_loaded_report(run: LoadedRun, output: str | Path | None = None) -> Path:
    """Write the HTML report of a run already read (see :func:`write_report`)."""
    output = Path(output) if output is not None else default_output(run.path)
    data = report_data(
        run.rows,
        run.settings,
        run.eval_results,
        source=str(run.path),
        plots=run.plots,
        total_rows=run.total_rows,
    )
    if run.bad_lines:
        data["notes"].append(skipped_note(run.bad_lines))
    output.parent.mkdir(parents=True, exist_ok=True)
    # A lone surrogate (broken input text) can only sit inside a JSON string, where "\udXXX"
    # is its valid escape.
    output.write_bytes(render_html(data).encode("utf-8", errors="backslashreplace"))
    return output


def write_report(
    source: str | Path,
    output: str | Path | None = None,
    *,
    max_rows: int | None = None,
    on_error: Literal["raise", "skip"] = "skip",
) -> Path:
    """Write the HTML report of a prefsmith output and return its path.

    ``source``: a rows file (``.jsonl``, ``.json``, ``.parquet``) written by ``score``,
    ``pairs``, ``rmboost`` or ``relabel``, or an eval run folder (``results.json``, its plots
    and, when present, ``rows.jsonl``). ``output``: default :func:`default_output`.
    ``max_rows``: keep only the first rows (the page says how many there were).
    ``on_error``: with ``skip`` rows that cannot be read are left out and the page names them
    (``file:line: why``); with ``raise`` they raise ``ValueError`` naming the first (the
    ``prefsmith report`` default).

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> row = {"prompt": "2+2?", "chosen": "4", "rejected": "<b>5</b>",
    ...        "reward_chosen": 1.0, "reward_rejected": -1.0, "reward_margin": 2.0}
    >>> _ = (folder / "scored.jsonl").write_text(json.dumps(row) + "\\n")
    >>> path = write_report(folder / "scored.jsonl")
    >>> path.name, "<b>5</b>" in path.read_text()
    ('scored.jsonl.report.html', False)
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be raise or skip, not {on_error!r}")
    run = load_run(source, max_rows)
    if run.bad_lines and on_error == "raise":
        raise unreadable_rows_error(run.bad_lines)
    return write_loaded_report(run, output)
