"""Reading a prefsmith output for the report: a rows file or an eval run folder.

Rows are read with :func:`prefsmith.data.io.iter_records`; a row that cannot be read (a line
that is not JSON, a value that is not an object) is kept as ``file:line: why`` in
:attr:`LoadedRun.bad_lines`, for the caller to refuse or to name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.data.io import BadFileError, Record, iter_records, load_json_file

#: Side files written next to a rows file, shown as settings.
SIDE_FILES = (".settings.json", ".relabel.json")
#: An eval folder's plots, by title.
EVAL_PLOTS = {"accuracy by section": "accuracy_by_section.png", "margins": "margins.png"}
#: Names of the rows files a report reads.
ROWS_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


@dataclass
class LoadedRun:
    """What a report is made from.

    Attributes:
        path: The source file or folder.
        rows: Rows to show (at most ``max_rows``).
        total_rows: Rows in the source.
        settings: Side-file settings by file name.
        eval_results: The eval's ``results.json``, for an eval folder.
        plots: PNG bytes by title.
        bad_lines: Rows that could not be read, as ``file:line: why`` (not in ``rows``).
    """

    path: Path
    rows: list[dict[str, Any]]
    total_rows: int
    settings: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, Any] | None = None
    plots: dict[str, bytes] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)

    @property
    def skipped_lines(self) -> int:
        """How many rows of the source could not be read."""
        return len(self.bad_lines)


def iter_row_records(path: str | Path) -> Iterator[Record]:
    """Records of a rows file; a row that is not an object is a record with an ``error``."""
    path = Path(path)
    if not path.name.endswith(ROWS_SUFFIXES):
        raise ValueError(f"{path}: not a rows file (.jsonl, .json or .parquet) nor an eval folder")
    for record in iter_records(path):
        if record.error is None and not isinstance(record.value, dict):
            kind = type(record.value).__name__
            record = Record(record.index, record.location, None, f"not an object but a {kind}")
        yield record


def iter_rows(path: str | Path) -> Iterator[dict[str, Any] | None]:
    """Rows of a ``.jsonl`` (``.jsonl.gz``), ``.json`` or ``.parquet`` file (``None``: bad row)."""
    for record in iter_row_records(path):
        yield record.value if record.error is None else None


def read_rows(path: str | Path, max_rows: int | None = None) -> tuple[list[dict], int, list[str]]:
    """``(rows, total rows, bad rows as "file:line: why")``; keeps the first ``max_rows`` rows."""
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    total = 0
    for record in iter_row_records(path):
        if record.error is not None:
            bad.append(f"{record.location}: {record.error}")
            continue
        total += 1
        if max_rows is None or len(rows) < max_rows:
            rows.append(record.value)
    return rows, total, bad


def load_run(source: str | Path, max_rows: int | None = None) -> LoadedRun:
    """Read a rows file (with its side files) or an eval folder.

    A file that cannot be read at all raises (:class:`~prefsmith.data.io.BadFileError` naming
    line and column for a broken ``.json``); rows that cannot be read are listed in
    :attr:`LoadedRun.bad_lines`. A side file that is not JSON is shown as its error.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_dir():
        return _load_eval(source, max_rows)
    rows, total, bad = read_rows(source, max_rows)
    settings = {}
    for suffix in SIDE_FILES:
        side = source.with_name(source.name + suffix)
        if side.exists():
            try:
                settings[side.name] = load_json_file(side)
            except BadFileError as err:
                settings[side.name] = {"error": str(err)}
    return LoadedRun(source, rows, total, settings, bad_lines=bad)


def _load_eval(folder: Path, max_rows: int | None) -> LoadedRun:
    results_path = folder / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{folder}: no results.json (not an eval run folder)")
    results = load_json_file(results_path)
    if not isinstance(results, dict):
        raise ValueError(f"{results_path}: expected a JSON object (an eval's results)")
    plots = {
        title: (folder / name).read_bytes()
        for title, name in EVAL_PLOTS.items()
        if (folder / name).exists()
    }
    scorers = results.get("scorers") or []
    by_scorer = {s.get("scorer"): s.get("margins") or {} for s in scorers}
    rows_path = folder / "rows.jsonl"
    bad: list[str] = []
    if rows_path.exists():
        rows, total, bad = read_rows(rows_path, max_rows)
        for row in rows:
            if "margins" not in row:
                pair_id = str(row.get("id"))
                row["margins"] = {s: m[pair_id] for s, m in by_scorer.items() if pair_id in m}
    else:
        rows, total = _rows_from_margins(folder, results, by_scorer, max_rows)
    return LoadedRun(folder, rows, total, {}, results, plots, bad)


def _rows_from_margins(
    folder: Path,
    results: dict[str, Any],
    by_scorer: dict[str, dict[str, float]],
    max_rows: int | None,
) -> tuple[list[dict[str, Any]], int]:
    """Rows of an eval without ``rows.jsonl``: its margins, joined with its data file if found."""
    ids = list(next(iter(by_scorer.values()), {}))
    data_rows = _data_rows(folder, results.get("data"))
    subsets = {k for s in results.get("scorers") or [] for k in s.get("subsets") or {}}
    routed = (results.get("routing") or {}).get("pairs") or {}
    rows = []
    for pair_id in ids[:max_rows] if max_rows is not None else ids:
        row: dict[str, Any] = dict(data_rows.get(pair_id, {}))
        row["id"] = pair_id
        if "subset" not in row and "/" in pair_id and pair_id.split("/")[0] in subsets:
            row["subset"] = pair_id.split("/")[0]
        if isinstance(routed.get(pair_id), dict) and "domain" in routed[pair_id]:
            row.setdefault("domain", routed[pair_id]["domain"])
        row["margins"] = {s: m[pair_id] for s, m in by_scorer.items() if pair_id in m}
        rows.append(row)
    return rows, len(ids)


def _data_rows(folder: Path, data: Any) -> dict[str, dict[str, Any]]:
    """The eval's input rows by pair id, when its data file can still be found."""
    if not data:
        return {}
    for candidate in (Path(data), folder / data, folder.parent / data):
        if candidate.is_file():
            try:
                rows = [r for r in iter_rows(candidate) if r is not None]
            except (ValueError, OSError):
                return {}
            return {str(r.get("id", i)): r for i, r in enumerate(rows)}
    return {}
