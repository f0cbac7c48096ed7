"""One resumable row runner for every stage (score, sample, pairs, rmboost, relabel, eval).

A stage is a :class:`~prefsmith.data.step.Step` (the contract, in :mod:`prefsmith.data.step`):
it declares its input and output columns, turns one input row into a validated item
(``Step.prepare``, raising ``ValueError`` with what is wrong), and turns a batch of items into
output rows (``Step.process``). Everything about files is here:

* reading any supported input (JSONL, JSON, Parquet, a saved HF dataset, or rows in memory);
* validating every row (the step's ``prepare``, then its ``required_columns``) before any model
  loads; a bad row raises a :class:`RowError` naming
  ``file:line`` (``on_error="raise"``) or goes with its reason to ``<output>.rejected.jsonl``
  (``on_error="skip"``);
* ``<output>.settings.json``: everything that decides the output; a run that would resume into
  an output written with other settings is refused, naming the setting;
* appending output rows as they are produced, each with its input row's position
  (``source_index``, the stable row key), fsynced per chunk. After each chunk a checkpoint
  (``<output>.progress.json``, replaced atomically) records the byte length of the output and
  the last input row consumed. Rows are processed in input order, so a run killed at any
  moment (SIGKILL included) resumes by cutting the output back to the checkpoint and going on
  after that row: the result is byte for byte the output of an uninterrupted run, no row lost,
  none duplicated, no half-written line kept;
* one progress display: a rich bar with rows/s and ETA on a terminal, plain periodic lines
  otherwise.

:func:`run_rows` is the file runner; :func:`process_rows` runs a step on rows in memory (the
Python API). With ``RunOptions(workers=N)`` the chunks are processed on Ray workers
(:mod:`prefsmith.data.ray_executor`) and everything else stays here.

A step of your own:

>>> from prefsmith.data.step import Outcome, Step
>>> class Upper(Step):
...     name, input_columns, output_columns = "upper", "text", ("upper",)
...     def prepare(self, row):
...         if not isinstance(row.get("text"), str):
...             raise ValueError("field 'text' must be a string")
...         return row["text"]
...     def process(self, batch, advance):
...         return [Outcome([{**b.row, "upper": b.item.upper()}]) for b in batch]
>>> process_rows([{"text": "hi"}], Upper())
[{'text': 'hi', 'upper': 'HI', 'source_index': 0}]
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
>>> summary = run_rows([{"text": "a"}, {"text": 3}], out, Upper(),
...                    RunOptions(on_error="skip", progress=False))
>>> summary.processed, summary.rejected, out.read_text()
(1, 1, '{"text": "a", "upper": "A", "source_index": 0}\\n')
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import (
    INDEX_FIELD,
    BadFileError,
    JsonlAppender,
    Record,
    finalize_output,
    input_files,
    iter_records,
    journal_path,
    load_json_file,
    read_done_indices,
    read_jsonl_rows,
    repair_partial_line,
    restore_journal,
)
from prefsmith.data.rows import RowError
from prefsmith.data.step import Columns, Outcome, RowItem, Step, missing_columns

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_rows` reads and writes.

    Attributes:
        on_error: ``raise`` stops at the first bad row before any work; ``skip`` writes bad rows
            with their location and reason to ``<output>.rejected.jsonl`` and goes on.
        chunk_size: Rows processed and written together; a killed run redoes at most one chunk.
        limit: Use only the first ``limit`` input rows (``None``: all).
        progress: Show progress (a bar on a terminal, plain lines otherwise).
        workers: ``0``: process the rows in this process. ``N``: on ``N`` Ray workers, each
            with its own copy of the step's models (needs ``prefsmith[ray]``; see
            :mod:`prefsmith.data.ray_executor`). Not a setting: the output is the same.
        ray_address: The Ray cluster to use (``auto``, ``ray://host:10001``); ``None`` starts
            a local one.
        cpus_per_worker: CPUs Ray reserves for each worker.
        gpus_per_worker: GPUs Ray reserves for each worker (``1``: one model copy per GPU).
        split_models: With ``workers``: give each model of the step (a density ratio's strong
            and weak) its own ``workers`` workers, so each worker holds one model; steps that
            cannot be split (sampling, pairs) run whole.
    """

    on_error: OnError = "raise"
    chunk_size: int = 64
    limit: int | None = None
    progress: bool = True
    workers: int = 0
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    split_models: bool = False

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be raise or skip, not {self.on_error!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {self.chunk_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (this process) or more, not {self.workers}")


@dataclass(frozen=True)
class RunSummary:
    """What a :func:`run_rows` run did.

    Attributes:
        step: The step's name.
        output: Output path.
        inputs: Valid input rows.
        processed: Rows processed in this run.
        already_done: Rows found done by an earlier run and skipped.
        rejected: Bad rows (this run and earlier ones) in ``<output>.rejected.jsonl``.
        written: Output rows in the output file.
        dropped: Input rows that produced no output, by reason (all runs).
        counts: Step-specific counters (all runs).
        seconds: Wall time of the processing in this run.
    """

    step: str
    output: Path
    inputs: int
    processed: int
    already_done: int
    rejected: int
    written: int
    dropped: dict[str, int]
    counts: dict[str, int]
    seconds: float

    def describe(self) -> str:
        """One line for people: what was done and where it went."""
        rate = f" ({self.processed / self.seconds:.2f} rows/s)" if self.processed else ""
        parts = [
            f"{self.step}: {self.processed} rows processed in {self.seconds:.1f}s{rate}",
            f"{self.already_done} already done",
            f"{self.rejected} rejected",
        ]
        if self.dropped:
            parts.append(
                "dropped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()))
            )
        return "; ".join(parts) + f" -> {self.output} ({self.written} rows)"


class RunSettingsError(ValueError):
    """The output was written with other settings; resuming would mix two runs."""


def rejected_path(output: str | Path) -> Path:
    """Side file of rows rejected with ``on_error="skip"``."""
    output = Path(output)
    return output.with_name(output.name + ".rejected.jsonl")


def settings_path(output: str | Path) -> Path:
    """``<output>.settings.json``: everything that decides the output."""
    output = Path(output)
    return output.with_name(output.name + ".settings.json")


def progress_path(output: str | Path) -> Path:
    """``<output>.progress.json``: the resume checkpoint."""
    output = Path(output)
    return output.with_name(output.name + ".progress.json")


def side_files(output: str | Path) -> list[Path]:
    """Every file a run writes next to ``output`` (delete them with it to start over)."""
    return [
        rejected_path(output),
        settings_path(output),
        progress_path(output),
        journal_path(output),
    ]


@dataclass(frozen=True)
class ReadInput:
    """An input file read once: its records (up to a limit), for every later pass over it.

    The command line reads the input with :func:`read_input`, checks its rows before any model
    loads, and gives the same records to :func:`run_rows`, which does not read the file again.
    It prints as its path.

    Attributes:
        path: The file (or saved dataset folder) read.
        records: Its records, in order.
    """

    path: Path
    records: tuple[Record, ...]

    def __str__(self) -> str:
        return str(self.path)


def read_input(source: str | Path, limit: int | None = None) -> ReadInput:
    """Read ``source`` once: its first ``limit`` records (``None``: all).

    ``source`` may be a glob pattern over several files (``'rmbench/*_filtered.json'``,
    see :func:`~prefsmith.data.io.input_files`): ``limit`` then applies to each file, so
    that per-domain files give ``limit`` rows per domain; rows are numbered on across files.
    """
    files = input_files(source)
    records: list[Record] = []
    for path in files:
        for taken, record in enumerate(iter_records(path)):
            if limit is not None and taken >= limit:
                break
            records.append(replace(record, index=len(records)))
    return ReadInput(Path(source), tuple(records))


def records_of(source: str | Path | ReadInput | Iterable[Any]) -> Iterator[Record]:
    """Records of a file (see :func:`~prefsmith.data.io.iter_records`), of an input already
    read (:class:`ReadInput`) or of rows in memory.

    >>> [r.location for r in records_of([{"a": 1}, {"a": 2}])]
    ['row 0', 'row 1']
    """
    if isinstance(source, str | Path):
        yield from iter_records(source)
        return
    if isinstance(source, ReadInput):
        yield from source.records
        return
    for index, value in enumerate(source):
        yield Record(index, f"row {index}", value)


def read_items(
    source: str | Path | ReadInput | Iterable[Any],
    prepare: Callable[[Mapping[str, Any]], Any],
    limit: int | None = None,
    required: Columns = (),
) -> tuple[list[RowItem], list[RowError]]:
    """Read and validate every row with ``prepare`` (a step's) and, for the rows it accepts,
    ``required`` (a step's ``required_columns``); return items and errors.

    ``prepare`` runs first, so that its message (which says more) names what is wrong with a
    row it refuses. Each error carries the row's position as ``key``.
    """
    good, bad = [], []
    if isinstance(source, str | Path) and limit is not None:
        source = read_input(source, limit)  # the limit per file, for a glob
    if isinstance(source, ReadInput):  # limited when it was read (per file, for a glob)
        limit = None
    for record in records_of(source):
        if limit is not None and record.index >= limit:
            break
        try:
            if record.error is not None:
                raise ValueError(record.error)
            if not isinstance(record.value, Mapping):
                raise ValueError(f"a row must be an object, got {type(record.value).__name__}")
            item = prepare(record.value)
            missing = missing_columns(record.value, required)
            if missing:
                raise ValueError(missing)
            good.append(RowItem(record.index, record.location, record.value, item))
        except ValueError as err:
            error = RowError(record.location, str(err))
            error.key = record.index  # type: ignore[attr-defined]
            bad.append(error)
    return good, bad


def first_error(bad: Sequence[RowError], step: Step | None = None) -> RowError:
    """The error to raise for ``bad`` rows: the first, with the count and what to do."""
    first = bad[0]
    more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
    hint = f"; {step.name} reads {step.input_columns}" if step and step.input_columns else ""
    advice = "; --on-error skip sets bad rows aside"
    return RowError(first.location, f"{first.reason}{more}{hint}{advice}")


def process_rows(
    rows: Iterable[Any],
    step: Step,
    *,
    on_error: OnError = "raise",
    chunk_size: int = 64,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``step`` on rows in memory; return the output rows (each with ``source_index``).

    With ``on_error="skip"`` bad rows are left out; with ``raise`` the first one raises a
    :class:`RowError` before any work.
    """
    items, bad = read_items(rows, step.prepare, required=step.required_columns)
    if bad and on_error == "raise":
        raise first_error(bad, step)
    step.fit(items)
    out: list[dict[str, Any]] = []
    with Progress(len(items), step.progress_label or step.name, enabled=progress) as bar:
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            for item, outcome in zip(chunk, _process(step, chunk, bar), strict=True):
                out.extend(_keyed(outcome.rows, item.key))
    return out


def run_rows(
    source: str | Path | ReadInput | Iterable[Any],
    output: str | Path,
    step: Step,
    options: RunOptions | None = None,
) -> RunSummary:
    """Run ``step`` over ``source`` into ``output`` (``.jsonl`` or ``.parquet``), resumably.

    See the module docstring for the files, the resume rule and the settings check.
    """
    options = options or RunOptions()
    output = Path(output)
    if output.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{output}: output must be .jsonl or .parquet")
    items, bad = read_items(source, step.prepare, options.limit, step.required_columns)
    if bad and options.on_error == "raise":
        raise first_error(bad, step)
    step.fit(items)
    settings = {"step": step.name, "settings": step.settings(), "chunk_size": options.chunk_size}
    checkpoint = _Checkpoint.open(output, settings)
    rejected = _write_rejected(output, bad)
    pending = [item for item in items if item.key > checkpoint.last_key]
    already_done = len(items) - len(pending)
    start = time.perf_counter()
    journal = journal_path(output)
    with (
        JsonlAppender(journal) as out,
        Progress(
            len(items),
            step.progress_label or step.name,
            done=already_done,
            enabled=options.progress,
        ) as bar,
    ):
        chunks = [
            pending[first : first + options.chunk_size]
            for first in range(0, len(pending), options.chunk_size)
        ]
        for chunk, outcomes in _outcomes(step, chunks, bar, options):
            rows = []
            for item, outcome in zip(chunk, outcomes, strict=True):
                rows.extend(_keyed(outcome.rows, item.key))
                checkpoint.count(outcome)
            out.write(rows)
            out.flush()
            checkpoint.save(chunk[-1].key, out.size(), len(rows))
    seconds = time.perf_counter() - start
    if journal != output:
        finalize_output(output)
        checkpoint.save(checkpoint.last_key, None, 0)
    return RunSummary(
        step=step.name,
        output=output,
        inputs=len(items),
        processed=len(pending),
        already_done=already_done,
        rejected=rejected,
        written=checkpoint.written,
        dropped=dict(checkpoint.dropped),
        counts=dict(checkpoint.counts),
        seconds=seconds,
    )


def _outcomes(
    step: Step, chunks: Sequence[Sequence[RowItem]], bar: Progress, options: RunOptions
) -> Iterator[tuple[Sequence[RowItem], list[Outcome]]]:
    """Each chunk with its outcomes, in order: here, or on Ray workers (``options.workers``)."""
    if not options.workers:
        for chunk in chunks:
            yield chunk, _process(step, chunk, bar)
        return
    from prefsmith.data.ray_executor import ray_outcomes

    if 0 < len(chunks) < options.workers:  # a chunk is the unit of work: some would idle
        rows = sum(len(c) for c in chunks)
        sys.stderr.write(
            f"{step.name}: {rows} rows make {len(chunks)} chunk(s) of up to {options.chunk_size}"
            f" for {options.workers} workers; --chunk-size {max(1, rows // options.workers)}"
            " keeps every worker busy\n"
        )
    for chunk, outcomes in ray_outcomes(
        step,
        chunks,
        workers=options.workers,
        address=options.ray_address,
        cpus_per_worker=options.cpus_per_worker,
        gpus_per_worker=options.gpus_per_worker,
        split_models=options.split_models,
    ):
        check_outcomes(step, chunk, outcomes)
        bar.advance(len(chunk))
        yield chunk, outcomes


def _process(step: Step, chunk: Sequence[RowItem], bar: Progress) -> list[Outcome]:
    """``step.process`` on a chunk, with the progress topped up to the chunk's size."""
    before = bar.done
    outcomes = step.process(chunk, bar.advance)
    check_outcomes(step, chunk, outcomes)
    bar.advance(before + len(chunk) - bar.done)
    return outcomes


def check_outcomes(step: Step, chunk: Sequence[RowItem], outcomes: Sequence[Outcome]) -> None:
    """A step returns one outcome per row of its chunk."""
    if len(outcomes) != len(chunk):
        raise RuntimeError(
            f"step {step.name} returned {len(outcomes)} outcomes for {len(chunk)} rows"
        )


def _keyed(rows: Iterable[dict[str, Any]], key: int) -> list[dict[str, Any]]:
    return [{**row, INDEX_FIELD: key} for row in rows]


def _write_rejected(output: Path, bad: Sequence[RowError]) -> int:
    """Append bad rows not already there to ``<output>.rejected.jsonl``; return the total."""
    side = rejected_path(output)
    already = read_done_indices(side)
    new = [err for err in bad if err.key not in already]  # type: ignore[attr-defined]
    if new:
        with JsonlAppender(side) as out:
            out.write(
                {INDEX_FIELD: err.key, "location": err.location, "reason": err.reason}  # type: ignore[attr-defined]
                for err in new
            )
    return len(already) + len(new)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}`` (to name the setting that differs).

    >>> flatten({"a": {"b": 1, "c": [2]}, "d": None})
    {'a.b': 1, 'a.c': [2], 'd': None}
    """
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def settings_difference(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The settings that differ, as ``path: before -> now`` lines.

    >>> settings_difference({"a": {"b": 1}}, {"a": {"b": 2}})
    ['a.b: 1 -> 2']
    """
    old, new = flatten(json.loads(json.dumps(before))), flatten(json.loads(json.dumps(now)))
    return [
        f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checkpoint:
    """The resume state of one output: last input row consumed, byte length, counters."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.last_key = -1
        self.bytes: int | None = 0
        self.written = 0
        self.dropped: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    @classmethod
    def open(cls, output: Path, settings: dict[str, Any]) -> _Checkpoint:
        """Load (and apply) the checkpoint of ``output``; refuse other settings."""
        state = cls(output)
        journal = journal_path(output)
        path = progress_path(output)
        if path.exists():
            try:
                saved = load_json_file(path)
                state.last_key, state.bytes = saved["last_key"], saved["bytes"]
                state.written = saved["written"]
                state.dropped, state.counts = saved["dropped"], saved["counts"]
            except (BadFileError, KeyError, TypeError) as err:
                what = str(err) if isinstance(err, BadFileError) else f"{path}: not a checkpoint"
                raise RunSettingsError(
                    f"{what}; delete it and the run goes on from the rows already in {journal}"
                ) from None
        elif journal.exists() and journal.stat().st_size > 0:  # written before checkpoints
            repair_partial_line(journal)
            rows = read_jsonl_rows(journal)
            state.last_key = max((r.get(INDEX_FIELD, -1) for r in rows), default=-1)
            state.bytes, state.written = journal.stat().st_size, len(rows)
        if state.last_key >= 0:
            _check_settings(output, settings)
        if journal != output and not journal.exists() and output.exists():
            # A finished Parquet output: its rows go back into the journal to go on.
            restore_journal(output)
            state.bytes = journal.stat().st_size
        elif journal.exists():
            if state.bytes is not None:  # cut what a killed run wrote after its checkpoint
                with journal.open("rb+") as handle:
                    handle.truncate(state.bytes)
        elif state.last_key >= 0:
            raise RunSettingsError(
                f"{path} says rows were written but {journal} is missing; delete {path} to start"
                " over"
            )
        settings_path(output).parent.mkdir(parents=True, exist_ok=True)
        settings_path(output).write_text(json.dumps(settings, indent=2, ensure_ascii=False))
        return state

    def count(self, outcome: Outcome) -> None:
        if outcome.dropped is not None:
            self.dropped[outcome.dropped] = self.dropped.get(outcome.dropped, 0) + 1
        for key, n in outcome.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def save(self, last_key: int, size: int | None, written: int) -> None:
        """Record progress after the output was fsynced (atomically: write, then rename)."""
        self.last_key, self.bytes = last_key, size
        self.written += written
        state = {
            "last_key": last_key,
            "bytes": size,
            "written": self.written,
            "dropped": self.dropped,
            "counts": self.counts,
        }
        path = progress_path(self.output)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(state))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)


def _check_settings(output: Path, settings: dict[str, Any]) -> None:
    path = settings_path(output)
    if not path.exists():
        return
    before = load_json_file(path)
    differences = settings_difference(before, settings)
    if differences:
        paths = dict.fromkeys([output, *side_files(output)])  # the journal may be the output
        files = ", ".join(str(p) for p in paths if p.exists())
        raise RunSettingsError(
            f"{output} was written with other settings ({'; '.join(differences[:5])}"
            f"{'; ...' if len(differences) > 5 else ''}); resuming would mix two runs."
            f" Use another --output, or delete {files} to start over"
        )


class Progress:
    """One progress display: a rich bar on a terminal, plain lines every ``every`` seconds."""

    def __init__(
        self,
        total: int,
        label: str,
        done: int = 0,
        enabled: bool = True,
        every: float = 10.0,
        stream: Any = None,
    ) -> None:
        self.total, self.label, self.done = total, label, float(done)
        self.enabled, self.every = enabled and total > done, every
        self.stream = stream or sys.stderr
        self._start_done = float(done)
        self._bar: Any = None
        self._last_line = 0.0
        self._finished = False  # the final plain line is written once

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        if self.enabled and self.stream.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.label, total=self.total, completed=self.done, rate="-"
            )
        self._last_line = self._started
        return self

    def rate(self) -> float:
        """Rows per second in this run."""
        return (self.done - self._start_done) / max(time.perf_counter() - self._started, 1e-9)

    def advance(self, rows: float) -> None:
        """Count ``rows`` more rows (fractions allowed) as done."""
        self.done = min(float(self.total), self.done + rows)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate():.2f}")
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        if not self._finished and (finished or now - self._last_line >= self.every):
            self._last_line, self._finished = now, finished
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """The plain progress line, e.g. ``score: 40/198 rows, 2.10 rows/s, ETA 75s``."""
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f}s" if left == left else "?"
        return f"{self.label}: {self.done:.0f}/{self.total} rows, {rate:.2f} rows/s, ETA {eta}"

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
