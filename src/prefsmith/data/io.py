"""Reading rows from JSONL, JSON, Parquet or a saved HF dataset; resumable JSONL/Parquet output.

Every input row carries its position (``index``) and a human-readable ``location``
(``file.jsonl:12`` for line 12), so errors name the row. Output is written as JSON Lines as rows
complete, flushed and fsynced per chunk; a run that is killed leaves at most one partial last
line, which :func:`read_done_indices` drops. Parquet output is assembled from that JSONL journal
when the run completes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Name of the field holding an output row's position in the input.
INDEX_FIELD = "source_index"


@dataclass(frozen=True)
class Record:
    """One input row.

    Attributes:
        index: 0-based position among the input's rows.
        location: Where it is, for messages (``path:line`` for JSONL, ``path[row]`` otherwise).
        value: The parsed row, or ``None`` when it could not be parsed.
        error: Why it could not be parsed, or ``None``.
    """

    index: int
    location: str
    value: Any
    error: str | None = None


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield the rows of a JSONL, JSON, Parquet file or a saved HF dataset folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_dir():
        yield from _iter_hf_dataset(path)
    elif path.suffix == ".jsonl" or path.name.endswith(".jsonl.gz"):
        yield from _iter_jsonl(path)
    elif path.suffix == ".json":
        yield from _iter_json(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path)
    else:
        raise ValueError(f"{path}: unknown input format (use .jsonl, .json, .parquet or a folder)")


def _iter_jsonl(path: Path) -> Iterator[Record]:
    index = 0
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_no}"
            try:
                yield Record(index, location, json.loads(line))
            except json.JSONDecodeError as err:
                yield Record(index, location, None, f"not valid JSON ({err.msg})")
            index += 1


def _iter_json(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    for i, value in enumerate(data):
        yield Record(i, f"{path}[{i}]", value)


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            yield Record(index, f"{path}[{index}]", value)
            index += 1


def _iter_hf_dataset(path: Path) -> Iterator[Record]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))
    if hasattr(dataset, "keys"):  # a DatasetDict: take its only split or "train"
        splits = list(dataset.keys())
        dataset = dataset["train"] if "train" in splits else dataset[splits[0]]
    for i, value in enumerate(dataset):
        yield Record(i, f"{path}[{i}]", value)


def read_jsonl_rows(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file (a partial last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def repair_partial_line(path: Path) -> None:
    """Cut a trailing line without newline (left by a killed writer)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


def read_done_indices(path: str | Path) -> set[int]:
    """Input positions already present in a JSONL output (after repairing a partial line)."""
    path = Path(path)
    repair_partial_line(path)
    return {row[INDEX_FIELD] for row in read_jsonl_rows(path) if INDEX_FIELD in row}


class JsonlAppender:
    """Appends rows to a JSONL file, durable after each :meth:`flush`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_partial_line(self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")

    def flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def size(self) -> int:
        """Bytes in the file, after :meth:`flush`."""
        return os.fstat(self._handle.fileno()).st_size

    def close(self) -> None:
        self.flush()
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def journal_path(output: str | Path) -> Path:
    """The JSONL file rows are appended to while producing ``output``."""
    output = Path(output)
    if output.suffix == ".parquet":
        return output.with_name(output.name + ".partial.jsonl")
    return output


def restore_journal(output: str | Path) -> None:
    """Before resuming into a finished Parquet output, put its rows back into the journal."""
    output = Path(output)
    journal = journal_path(output)
    if journal == output or journal.exists() or not output.exists():
        return
    import pyarrow.parquet as pq

    with JsonlAppender(journal) as appender:
        appender.write(pq.read_table(output).to_pylist())


def finalize_output(output: str | Path) -> None:
    """Turn the JSONL journal into the requested format, ordered by input position."""
    output = Path(output)
    journal = journal_path(output)
    if journal == output:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(read_jsonl_rows(journal), key=lambda r: r[INDEX_FIELD])
    pq.write_table(pa.Table.from_pylist(rows), output)
    journal.unlink()
