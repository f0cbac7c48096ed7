"""Reading a prefsmith output for the report: a rows file or an eval run folder."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Side files written next to a rows file, shown as settings.
SIDE_FILES = (".settings.json", ".relabel.json")
#: An eval folder's plots, by title.
EVAL_PLOTS = {"accuracy by section": "accuracy_by_section.png", "margins": "margins.png"}


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
        skipped_lines: JSONL lines that could not be parsed.
    """

    path: Path
    rows: list[dict[str, Any]]
    total_rows: int
    settings: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, Any] | None = None
    plots: dict[str, bytes] = field(default_factory=dict)
    skipped_lines: int = 0


def iter_rows(path: str | Path) -> Iterator[dict[str, Any] | None]:
    """Rows of a ``.jsonl`` (``.jsonl.gz``), ``.json`` or ``.parquet`` file (``None``: bad line)."""
    path = Path(path)
    name = path.name
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError:
                        yield None
                        continue
                    yield value if isinstance(value, dict) else None
    elif name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and len(data) == 1:
            data = next(iter(data.values()))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        yield from (v if isinstance(v, dict) else None for v in data)
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"{path}: not a rows file (.jsonl, .json or .parquet) nor an eval folder")


def read_rows(path: str | Path, max_rows: int | None = None) -> tuple[list[dict], int, int]:
    """``(rows, total rows, unparsable lines)``; keeps the first ``max_rows`` rows."""
    rows: list[dict[str, Any]] = []
    total = bad = 0
    for row in iter_rows(path):
        if row is None:
            bad += 1
            continue
        total += 1
        if max_rows is None or len(rows) < max_rows:
            rows.append(row)
    return rows, total, bad


def load_run(source: str | Path, max_rows: int | None = None) -> LoadedRun:
    """Read a rows file (with its side files) or an eval folder."""
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
                settings[side.name] = json.loads(side.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                settings[side.name] = {"error": "not valid JSON"}
    return LoadedRun(source, rows, total, settings, skipped_lines=bad)


def _load_eval(folder: Path, max_rows: int | None) -> LoadedRun:
    results_path = folder / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{folder}: no results.json (not an eval run folder)")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    plots = {
        title: (folder / name).read_bytes()
        for title, name in EVAL_PLOTS.items()
        if (folder / name).exists()
    }
    scorers = results.get("scorers") or []
    by_scorer = {s.get("scorer"): s.get("margins") or {} for s in scorers}
    rows_path = folder / "rows.jsonl"
    bad = 0
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
