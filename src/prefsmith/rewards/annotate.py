"""Annotate a file of rows with density-ratio rewards, writing as it goes and resuming.

Input columns: one of the shapes in :mod:`prefsmith.data.rows` (``prompt``/``chosen``/
``rejected``, conversational pairs, or ``prompt``/``responses``); every other column is kept.

Output columns added:

* ``source_index``: the row's position in the input (used to resume);
* pairs: ``reward_chosen``, ``reward_rejected``, ``reward_margin`` (chosen minus rejected);
* candidates: ``rewards`` (one per response, in order);
* ``scored_with``: strong and weak model, reduction and template hashes;
* ``response_tokens``: ``{name: [strong count, weak count]}``;
* ``truncated``: ``{name: None | "prompt" | "response"}``: whether (and what) truncation
  was needed to fit ``max_length``;
* ``token_logprobs`` (with ``save_token_logprobs``): per response, the strong and weak tokens
  and their log-probs;
* with a ``customize`` hook (e.g. :class:`prefsmith.routing.customize.Customizer`): the fields
  it returns per row (``domain``, ``router_confidence``), and its settings under
  ``scored_with["customization"]``.

Rows that fail validation raise (``on_error="raise"``, before any model work) or are written
with their location and reason to ``<output>.rejected.jsonl`` (``on_error="skip"``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from prefsmith.data.io import (
    INDEX_FIELD,
    JsonlAppender,
    Record,
    finalize_output,
    iter_records,
    journal_path,
    read_done_indices,
    restore_journal,
)
from prefsmith.data.rows import RowError, ScoringItem, to_scoring_item
from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.density_ratio import DensityRatioScorer, ResponseReward

OnError = Literal["raise", "skip"]


class ItemCustomizer(Protocol):
    """Hook that rewrites the items of a chunk before scoring (e.g. routing + criteria).

    Returns the items to score (same names and responses, possibly another context) and extra
    output fields for each row.
    """

    def __call__(
        self, items: Sequence[ScoringItem]
    ) -> tuple[list[ScoringItem], list[dict[str, Any]]]: ...

    def settings(self) -> dict[str, Any]:
        """Recorded under ``scored_with["customization"]``."""
        ...


@dataclass(frozen=True)
class AnnotateOptions:
    """Options of :func:`annotate_file`.

    Attributes:
        system_prompt: System turn given to both models (rows with their own system turn keep
            theirs).
        on_error: ``raise`` stops at the first bad row before scoring anything; ``skip`` writes
            bad rows to ``<output>.rejected.jsonl`` and goes on.
        chunk_size: Rows scored (and written) together; larger chunks bucket better.
        save_token_logprobs: Store per-token log-probs of both models in each row.
        progress: Show a rich progress bar.
    """

    system_prompt: str | None = None
    on_error: OnError = "raise"
    chunk_size: int = 256
    save_token_logprobs: bool = False
    progress: bool = True


@dataclass(frozen=True)
class AnnotateSummary:
    """What a run did.

    Attributes:
        output: Output path.
        scored: Rows scored in this run.
        already_done: Rows found in the output from an earlier run and skipped.
        rejected: Bad rows written to the side file in this run.
        seconds: Wall time of the scoring part.
        responses: Responses scored in this run.
    """

    output: Path
    scored: int
    already_done: int
    rejected: int
    seconds: float
    responses: int


def rejected_path(output: str | Path) -> Path:
    """Side file for rows rejected with ``on_error="skip"``."""
    output = Path(output)
    return output.with_name(output.name + ".rejected.jsonl")


def short_hash(text: str) -> str:
    """First 12 hex digits of the SHA-256 of ``text``.

    >>> short_hash("abc")
    'ba7816bf8f01'
    """
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def validate_records(
    records: Sequence[Record], system_prompt: str | None
) -> tuple[list[tuple[Record, ScoringItem]], list[tuple[Record, RowError]]]:
    """Normalize every record; return the good ones and the bad ones with their error."""
    good, bad = [], []
    for record in records:
        try:
            if record.error is not None:
                raise ValueError(record.error)
            good.append((record, to_scoring_item(record.value, system_prompt)))
        except ValueError as err:
            bad.append((record, RowError(record.location, str(err))))
    return good, bad


def output_row(
    record: Record,
    item: ScoringItem,
    rewards: Sequence[ResponseReward],
    scored_with: dict[str, Any],
    save_token_logprobs: bool,
    tokenizers: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """The input row plus its rewards and bookkeeping (see the module docstring)."""
    row = dict(record.value)
    row[INDEX_FIELD] = record.index
    values = [r.reward for r in rewards]
    if item.kind == "pair":
        row["reward_chosen"], row["reward_rejected"] = values
        row["reward_margin"] = values[0] - values[1]
    else:
        row["rewards"] = values
    row["scored_with"] = scored_with
    row["response_tokens"] = {
        name: [len(r.strong.token_ids), len(r.weak.token_ids)]
        for name, r in zip(item.names, rewards, strict=True)
    }
    row["truncated"] = {name: r.truncated for name, r in zip(item.names, rewards, strict=True)}
    if save_token_logprobs:
        row["token_logprobs"] = {
            name: _token_detail(r, tokenizers) for name, r in zip(item.names, rewards, strict=True)
        }
    return row


def _token_detail(reward: ResponseReward, tokenizers: tuple[Any, Any] | None) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for side, lp in (("strong", reward.strong), ("weak", reward.weak)):
        detail[f"{side}_ids"] = list(lp.token_ids)
        if tokenizers is not None:
            tok = tokenizers[0] if side == "strong" else tokenizers[1]
            detail[f"{side}_tokens"] = tok.convert_ids_to_tokens(list(lp.token_ids))
        detail[f"{side}_logprobs"] = [round(float(x), 6) for x in lp.logprobs]
    return detail


@dataclass(frozen=True)
class ValidatedInput:
    """Input rows read and checked, ready to score.

    Attributes:
        good: Records with their normalized items.
        bad: Records that failed, with their error.
    """

    good: list[tuple[Record, ScoringItem]]
    bad: list[tuple[Record, RowError]]


def read_input(input_path: str | Path, options: AnnotateOptions) -> ValidatedInput:
    """Read and validate every row; with ``on_error="raise"`` the first bad row raises."""
    good, bad = validate_records(list(iter_records(input_path)), options.system_prompt)
    if bad and options.on_error == "raise":
        first = bad[0][1]
        more = f" (and {len(bad) - 1} more bad rows; --on-error skip sets them aside)"
        raise RowError(first.location, first.reason + (more if len(bad) > 1 else ""))
    return ValidatedInput(good, bad)


def annotate_file(
    source: str | Path | ValidatedInput,
    output_path: str | Path,
    scorer: DensityRatioScorer,
    options: AnnotateOptions | None = None,
    customize: ItemCustomizer | None = None,
) -> AnnotateSummary:
    """Score every row of ``source`` into ``output_path`` (JSONL or Parquet), resumably.

    ``source`` is an input path or the result of :func:`read_input` (to validate before
    loading models). ``customize``, when given, rewrites each chunk's items before scoring
    and adds its per-row fields to the output.
    """
    options = options or AnnotateOptions()
    output_path = Path(output_path)
    validated = source if isinstance(source, ValidatedInput) else read_input(source, options)
    good, bad = validated.good, validated.bad

    restore_journal(output_path)
    journal = journal_path(output_path)
    rejected_file = rejected_path(output_path)
    done = read_done_indices(journal)
    already_rejected = read_done_indices(rejected_file)
    new_bad = [(rec, err) for rec, err in bad if rec.index not in already_rejected]
    if new_bad:
        with JsonlAppender(rejected_file) as side:
            side.write(
                {INDEX_FIELD: rec.index, "location": err.location, "reason": err.reason}
                for rec, err in new_bad
            )
    pending = [(rec, item) for rec, item in good if rec.index not in done]
    settings = scorer.settings()
    scored_with = {
        "strong": settings["strong"],
        "weak": settings["weak"],
        "reduction": settings["reduction"],
        "strong_template": short_hash(str(settings["strong_template"])),
        "weak_template": short_hash(str(settings["weak_template"])),
    }
    if customize is not None:
        scored_with["customization"] = customize.settings()
        settings = {**settings, "customization": scored_with["customization"]}
    _write_settings(output_path, settings)
    tokenizers = _tokenizers(scorer) if options.save_token_logprobs else None

    start = time.perf_counter()
    n_responses = 0
    with JsonlAppender(journal) as out, progress_bar(options.progress, len(pending)) as advance:
        for first in range(0, len(pending), options.chunk_size):
            chunk = pending[first : first + options.chunk_size]
            items = [item for _, item in chunk]
            extras: list[dict[str, Any]] = [{} for _ in chunk]
            if customize is not None:
                items, extras = customize(items)
            requests = [
                ScoreRequest(item.context, response)
                for item in items
                for response in item.responses
            ]
            rewards = scorer.score(requests)
            n_responses += len(requests)
            offset = 0
            rows = []
            for (rec, _), item, extra in zip(chunk, items, extras, strict=True):
                these = rewards[offset : offset + len(item.responses)]
                offset += len(item.responses)
                row = output_row(
                    rec, item, these, scored_with, options.save_token_logprobs, tokenizers
                )
                rows.append({**row, **extra})
            out.write(rows)
            out.flush()
            advance(len(chunk))
    seconds = time.perf_counter() - start
    finalize_output(output_path)
    return AnnotateSummary(output_path, len(pending), len(done), len(new_bad), seconds, n_responses)


def _tokenizers(scorer: DensityRatioScorer) -> tuple[Any, Any] | None:
    strong = getattr(scorer.strong, "tokenizer", None)
    weak = getattr(scorer.weak, "tokenizer", None)
    return (strong, weak) if strong is not None and weak is not None else None


def _write_settings(output: Path, settings: dict[str, Any]) -> None:
    path = output.with_name(output.name + ".settings.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


class progress_bar:
    """Context manager yielding an ``advance(n)`` callable backed by a rich progress bar."""

    def __init__(
        self, enabled: bool, total: int, label: str = "scoring", unit: str = "rows/s"
    ) -> None:
        self.enabled = enabled
        self.total = total
        self.label = label
        self.unit = unit

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} " + self.unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._bar.start()
        task = self._bar.add_task(self.label, total=self.total, rate="-")
        started = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            self._bar.update(task, advance=n, rate=f"{rate:.2f}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()
