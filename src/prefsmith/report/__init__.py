"""``prefsmith report``: one self-contained HTML page to look at scored data.

The page shows a run's settings, an eval's section/subset tables and plots, the margin
distribution, a sortable and filterable table of rows, and for each row the prompt and the
responses coloured token by token by their density-ratio contribution
(``log p_strong − log p_weak``). It needs no server and no network.
"""

from __future__ import annotations

from pathlib import Path

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
    "token_view",
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


def write_report(
    source: str | Path, output: str | Path | None = None, *, max_rows: int | None = None
) -> Path:
    """Write the HTML report of a prefsmith output and return its path.

    ``source``: a rows file (``.jsonl``, ``.json``, ``.parquet``) written by ``score``,
    ``pairs``, ``rmboost`` or ``relabel``, or an eval run folder (``results.json``, its plots
    and, when present, ``rows.jsonl``). ``output``: default :func:`default_output`.
    ``max_rows``: keep only the first rows (the page says how many there were).

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> row = {"prompt": "2+2?", "chosen": "4", "rejected": "<b>5</b>",
    ...        "reward_chosen": 1.0, "reward_rejected": -1.0, "reward_margin": 2.0}
    >>> _ = (folder / "scored.jsonl").write_text(json.dumps(row) + "\\n")
    >>> path = write_report(folder / "scored.jsonl")
    >>> path.name, "<b>5</b>" in path.read_text()
    ('scored.jsonl.report.html', False)
    """
    run = load_run(source, max_rows)
    output = Path(output) if output is not None else default_output(source)
    data = report_data(
        run.rows,
        run.settings,
        run.eval_results,
        source=str(run.path),
        plots=run.plots,
        total_rows=run.total_rows,
    )
    if run.skipped_lines:
        data["notes"].append(f"{run.skipped_lines} lines of the source could not be parsed.")
    output.parent.mkdir(parents=True, exist_ok=True)
    # A lone surrogate (broken input text) can only sit inside a JSON string, where "\udXXX"
    # is its valid escape.
    output.write_bytes(render_html(data).encode("utf-8", errors="backslashreplace"))
    return output
