"""Reading rows from JSONL, JSON, Parquet or a saved HF dataset; resumable JSONL/Parquet output.

Every input row carries its position (``index``) and a human-readable ``location``
(``file.jsonl:12`` for line 12), so errors name the row. Output is written as JSON Lines as rows
complete, flushed and fsynced per chunk; a run that is killed leaves at most one partial last
line, which :func:`read_done_indices` drops. Parquet output is assembled from that JSONL journal
when the run completes.

Every file a user hands prefsmith (rows, recipes, domains, prompts, fits, templates, settings)
is read through :func:`read_text_file`, :func:`load_yaml_file` or :func:`load_json_file`: a
file that cannot be parsed raises :class:`BadFileError`, one line naming the file, the line and
column, and what is wrong.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: Name of the field holding an output row's position in the input.
INDEX_FIELD = "source_index"


class BadFileError(ValueError):
    """A file that cannot be parsed, as one line: ``file:line:column: what is wrong``.

    Attributes:
        path: The file.
        line: 1-based line of the problem, when known.
        column: 1-based column of the problem, when known.
        reason: What is wrong.

    >>> str(BadFileError("recipe.yaml", "not valid YAML: found\\n  a tab", 3, 1))
    'recipe.yaml:3:1: not valid YAML: found a tab'
    """

    def __init__(
        self, path: str | Path, reason: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.path, self.line, self.column = str(path), line, column
        self.reason = " ".join(reason.split())
        where = self.path
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {self.reason}")


def yaml_reason(err: Exception) -> str:
    """What a YAML parser error says is wrong, on one line, without its position (the
    construct it was reading, when the parser says, with where that began).

    >>> import yaml
    >>> try:
    ...     yaml.safe_load("a: [1, 2")
    ... except yaml.YAMLError as err:
    ...     reason = yaml_reason(err)
    >>> reason.startswith("not valid YAML: expected ',' or ']', but got '<stream end>' (while")
    True
    >>> reason.endswith("(while parsing a flow sequence at line 1, column 4)")
    True
    """
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and mark is not None:
        context += f" at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(f"not valid YAML: {problem}{f' ({context})' if context else ''}".split())


def _unique_keys_loader() -> Any:
    """A safe YAML loader that refuses a key given twice in one mapping (YAML keeps the last
    one silently, so a recipe would lose a whole section without a word)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node)

    resolver = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
    UniqueKeyLoader.add_constructor(resolver, mapping)
    return UniqueKeyLoader


def parse_yaml(text: str, path: str | Path) -> Any:
    """``text`` (the contents of ``path``) as YAML; :class:`BadFileError` if it is not, or if
    a mapping gives a key twice.

    >>> parse_yaml("models:\\n  strong: a\\nmodels:\\n  weak: b\\n", "recipe.yaml")
    Traceback (most recent call last):
    ...
    prefsmith.data.io.BadFileError: recipe.yaml:3:1: not valid YAML: key 'models' is given twice
    """
    import yaml

    try:
        return yaml.load(text, Loader=_unique_keys_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise BadFileError(path, yaml_reason(err), line, column) from None


def parse_json(text: str, path: str | Path) -> Any:
    """``text`` (the contents of ``path``) as JSON; :class:`BadFileError` if it is not.

    >>> parse_json('{"a": 1,\\n "b": }', "fit.json")
    Traceback (most recent call last):
    ...
    prefsmith.data.io.BadFileError: fit.json:2:7: not valid JSON: Expecting value
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadFileError(path, f"not valid JSON: {err.msg}", err.lineno, err.colno) from None


def decode_text(data: bytes, path: str | Path, first_line: int = 1) -> str:
    """``data`` as UTF-8; :class:`BadFileError` at the first byte that is not.

    ``first_line`` is the line ``data`` starts on (for one line of a larger file).

    >>> decode_text(b"ok\\nbad \\xff", "t.txt")
    Traceback (most recent call last):
    ...
    prefsmith.data.io.BadFileError: t.txt:2:5: not UTF-8 text: byte 0xff
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line = first_line + before.count(b"\n")
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        byte = data[err.start : err.start + 1].hex()
        raise BadFileError(path, f"not UTF-8 text: byte 0x{byte}", line, column) from None


def read_text_file(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); :class:`BadFileError` if
    it is not UTF-8, ``FileNotFoundError`` naming it if it is missing."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise BadFileError(path, "is a folder, not a file") from None
    return decode_text(data, path).removeprefix("\ufeff")


def load_yaml_file(path: str | Path) -> Any:
    """The YAML document in ``path``; :class:`BadFileError` naming line and column if broken."""
    return parse_yaml(read_text_file(path), path)


def load_json_file(path: str | Path) -> Any:
    """The JSON document in ``path``; :class:`BadFileError` naming line and column if broken."""
    return parse_json(read_text_file(path), path)


def parse_json_line(line: bytes | str, path: str | Path, line_no: int) -> Any:
    """One JSON Lines line; :class:`BadFileError` naming ``path:line:column`` if broken."""
    text = decode_text(line, path, line_no) if isinstance(line, bytes) else line
    try:
        return json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise BadFileError(path, f"not valid JSON: {err.msg}", line_no, err.colno) from None


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


_GLOB = frozenset("*?[")


def input_files(source: str | Path) -> list[Path]:
    """The files of an input: ``source`` itself or, when it does not exist and is a glob pattern
    (``*``, ``?``, ``[``), the files it matches, sorted.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.json", "a.json", "c.txt"):
    ...     _ = (folder / name).write_text("[]")
    >>> [p.name for p in input_files(folder / "*.json")]
    ['a.json', 'b.json']
    >>> input_files(folder / "*.jsonl")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no input matches .../*.jsonl
    """
    path = Path(source)
    if path.exists() or not _GLOB & set(str(path)):
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(path)))
    if not matches:
        raise FileNotFoundError(f"no input matches {path}")
    return matches


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield the rows of a JSONL, JSON, Parquet file or a saved HF dataset folder, or of every
    file a glob pattern matches (:func:`input_files`), numbered on across them."""
    files = input_files(path)
    if len(files) > 1:
        index = 0
        for file in files:
            for record in iter_records(file):
                yield Record(index, record.location, record.value, record.error)
                index += 1
        return
    path = files[0]
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


def _open_binary(path: Path) -> IO[bytes]:
    """``path`` for reading bytes, through gzip for ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _iter_jsonl(path: Path) -> Iterator[Record]:
    """One record per non-blank line; a line that is not JSON (or not UTF-8) is a record with
    its ``error`` (``not valid JSON at column 9: Expecting value``), for the step to refuse or
    set aside."""
    index = 0
    with _open_binary(path) as handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                location = f"{path}:{line_no}"
                try:
                    yield Record(index, location, parse_json_line(line, path, line_no))
                except BadFileError as err:
                    kind, _, why = err.reason.partition(": ")
                    yield Record(index, location, None, f"{kind} at column {err.column}: {why}")
                index += 1
        except (OSError, EOFError) as err:  # a truncated or damaged .gz
            raise BadFileError(path, f"cannot be read ({err})") from None


def _iter_json(path: Path) -> Iterator[Record]:
    data = load_json_file(path)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    for i, value in enumerate(data):
        yield Record(i, f"{path}[{i}]", value)


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        for batch in batches:
            for value in batch.to_pylist():
                yield Record(index, f"{path}[{index}]", value)
                index += 1
    except (pa.ArrowException, OSError) as err:
        where = f" after row {index - 1}" if index else ""
        raise BadFileError(path, f"not a readable Parquet file{where} ({err})") from None


def _iter_hf_dataset(path: Path) -> Iterator[Record]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))
    if hasattr(dataset, "keys"):  # a DatasetDict: take its only split or "train"
        splits = list(dataset.keys())
        dataset = dataset["train"] if "train" in splits else dataset[splits[0]]
    for i, value in enumerate(dataset):
        yield Record(i, f"{path}[{i}]", value)


def read_jsonl_rows(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file (a partial last line is ignored).

    A complete line that is not JSON raises :class:`BadFileError` naming its line and column.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.endswith(b"\n") and line.strip():
                rows.append(parse_json_line(line, path, line_no))
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
