"""On-policy preference pairs from sampled candidates (``prefsmith pairs``), as in Dr.SoW.

Input: rows with ``prompt`` (or ``messages``) and ``responses`` — the output of
``prefsmith sample``, whose ``finish_reasons`` mark truncated samples. Steps:

1. Clean each row's candidates (:func:`clean_candidates`): drop empty responses, truncated
   ones (``finish_reason == "length"``, unless ``keep_truncated``) and exact duplicates (the
   first copy stays). Rows left with fewer than two candidates are dropped.
2. Score the remaining candidates with the scorer, through
   :func:`prefsmith.rewards.annotate.annotate_file` into ``<output>.scores.jsonl`` (resumable;
   the record of every reward).
3. Select pairs from the rewards (:func:`select_pairs`): best vs. worst, or every pair whose
   margin exceeds ``min_margin``. Pairs with a margin of ``min_margin`` or less (ties
   included) are never kept, so a row whose candidates all tie gives no pair.
4. Write the pairs in TRL's standard or conversational preference format, each row with every
   candidate's reward and status, the pair's margin and the scorer settings.

The final output is rebuilt from ``<output>.scores.jsonl`` at the end of every run (cheap).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import (
    INDEX_FIELD,
    JsonlAppender,
    Record,
    finalize_output,
    iter_records,
    journal_path,
    read_jsonl_rows,
)
from prefsmith.data.rows import RowError, ScoringItem, to_prompt
from prefsmith.models.encoding import Message
from prefsmith.rewards.annotate import AnnotateOptions, ValidatedInput, annotate_file

Strategy = Literal["best-worst", "all-pairs"]
PairFormat = Literal["standard", "conversational"]

#: Input fields that are not copied into pair rows: they are the pair itself, or TRL would
#: read them as part of the example (``messages``, ``completion``, ``label``).
RESERVED_FIELDS = (
    "prompt",
    "messages",
    "chosen",
    "rejected",
    "completion",
    "label",
    "responses",
    "finish_reasons",
    "n_tokens",
    "rewards",
    INDEX_FIELD,
)


@dataclass(frozen=True)
class PairsOptions:
    """Options of :func:`make_pairs`.

    Attributes:
        strategy: ``best-worst`` (one pair per prompt: highest vs. lowest reward, as in
            Dr.SoW) or ``all-pairs`` (every ordered pair with a margin above ``min_margin``).
        min_margin: A pair is kept only when reward(chosen) - reward(rejected) is strictly
            greater than this; ``0`` drops ties.
        format: ``conversational`` (prompt and responses as ``{"role", "content"}`` lists;
            TRL applies the chat template, matching how the samples were generated) or
            ``standard`` (strings; needs single-turn prompts without a system turn).
        keep_truncated: Keep candidates that hit ``max_new_tokens``.
        system_prompt: System turn for scoring; default: the one each row was sampled with
            (``generated_with.system_prompt``), if any.
        chunk_size: Rows scored (and written) together.
        on_error: ``raise`` stops at the first bad row; ``skip`` writes it to
            ``<output>.rejected.jsonl``.
        progress: Show a progress bar while scoring.
    """

    strategy: Strategy = "best-worst"
    min_margin: float = 0.0
    format: PairFormat = "conversational"
    keep_truncated: bool = False
    system_prompt: str | None = None
    chunk_size: int = 64
    on_error: Literal["raise", "skip"] = "raise"
    progress: bool = True


@dataclass(frozen=True)
class CleanCandidates:
    """A row's candidates after cleaning.

    Attributes:
        kept: Indices (into the row's ``responses``) of the candidates to score.
        status: Per candidate: ``ok``, ``empty``, ``truncated`` or ``duplicate``.
    """

    kept: tuple[int, ...]
    status: tuple[str, ...]


def clean_candidates(
    responses: Sequence[str],
    finish_reasons: Sequence[str] | None = None,
    keep_truncated: bool = False,
) -> CleanCandidates:
    """Mark empty, truncated and duplicate candidates; keep the rest in order.

    >>> c = clean_candidates(["a", "", "b", "a ", "c"], ["stop", "stop", "length", "stop", "stop"])
    >>> c.kept, c.status
    ((0, 4), ('ok', 'empty', 'truncated', 'duplicate', 'ok'))
    >>> clean_candidates(["a", "b"], ["stop", "length"], keep_truncated=True).kept
    (0, 1)
    """
    seen: set[str] = set()
    kept, status = [], []
    for i, text in enumerate(responses):
        key = text.strip()
        reason = finish_reasons[i] if finish_reasons is not None else "stop"
        if not key:
            status.append("empty")
        elif reason == "length" and not keep_truncated:
            status.append("truncated")
        elif key in seen:
            status.append("duplicate")
        else:
            seen.add(key)
            kept.append(i)
            status.append("ok")
    return CleanCandidates(tuple(kept), tuple(status))


def select_pairs(
    rewards: Sequence[float], strategy: Strategy = "best-worst", min_margin: float = 0.0
) -> list[tuple[int, int]]:
    """``(chosen, rejected)`` index pairs from candidate rewards.

    ``best-worst``: the highest vs. the lowest reward (the first one on equal rewards), kept
    when the margin exceeds ``min_margin``. ``all-pairs``: every ``(i, j)`` with
    ``rewards[i] - rewards[j] > min_margin``, by decreasing margin.

    >>> select_pairs([0.5, 2.0, -1.0, 2.0])
    [(1, 2)]
    >>> select_pairs([1.0, 1.0, 1.0])
    []
    >>> select_pairs([0.0, 3.0, 1.0], "all-pairs", min_margin=0.5)
    [(1, 0), (1, 2), (2, 0)]
    >>> select_pairs([0.0, 0.2], min_margin=0.5)
    []
    """
    if len(rewards) < 2:
        return []
    if strategy == "best-worst":
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
        return [(best, worst)] if rewards[best] - rewards[worst] > min_margin else []
    if strategy != "all-pairs":
        raise ValueError(f"unknown strategy {strategy!r}; use best-worst or all-pairs")
    pairs = [
        (i, j)
        for i in range(len(rewards))
        for j in range(len(rewards))
        if rewards[i] - rewards[j] > min_margin
    ]
    return sorted(pairs, key=lambda p: (-(rewards[p[0]] - rewards[p[1]]), p))


def format_pair(
    context: Sequence[Message], chosen: str, rejected: str, fmt: PairFormat
) -> dict[str, Any]:
    """A preference example in TRL's ``standard`` or ``conversational`` format.

    >>> u = [{"role": "user", "content": "2+2?"}]
    >>> format_pair(u, "4", "5", "standard")
    {'prompt': '2+2?', 'chosen': '4', 'rejected': '5'}
    >>> format_pair(u, "4", "5", "conversational")["chosen"]
    [{'role': 'assistant', 'content': '4'}]
    """
    if fmt == "conversational":
        return {
            "prompt": [dict(m) for m in context],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    if fmt != "standard":
        raise ValueError(f"unknown format {fmt!r}; use standard or conversational")
    if len(context) != 1 or context[0]["role"] != "user":
        raise ValueError(
            "the standard format holds a single user turn as the prompt, but this prompt has"
            f" {len(context)} messages ({', '.join(m['role'] for m in context)});"
            " use --format conversational"
        )
    return {"prompt": context[0]["content"], "chosen": chosen, "rejected": rejected}


def carried_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Input fields copied into output rows (all but :data:`RESERVED_FIELDS`).

    >>> carried_fields({"id": "a", "prompt": "p", "responses": ["x"], "label": 1})
    {'id': 'a'}
    """
    return {k: v for k, v in row.items() if k not in RESERVED_FIELDS}


@dataclass(frozen=True)
class PairsSummary:
    """What a :func:`make_pairs` run did.

    Attributes:
        output: Output path.
        prompts: Input rows read.
        scored: Rows scored in this run (others were scored by an earlier run or dropped).
        pairs: Pairs written.
        dropped: Rows without a pair, by reason (``too few candidates``, ``tie``, ...).
        candidates: Candidate counts by status (``ok``, ``empty``, ``truncated``,
            ``duplicate``).
        seconds: Wall time of the scoring part.
    """

    output: Path
    prompts: int
    scored: int
    pairs: int
    dropped: dict[str, int]
    candidates: dict[str, int]
    seconds: float


def scores_path(output: str | Path) -> Path:
    """The resumable scoring journal of a ``pairs`` or ``rmboost --check`` run."""
    output = Path(output)
    return output.with_name(output.name + ".scores.jsonl")


def _system_prompt(row: dict[str, Any], override: str | None) -> str | None:
    if override is not None:
        return override
    generated_with = row.get("generated_with")
    return generated_with.get("system_prompt") if isinstance(generated_with, dict) else None


def read_candidates(
    source: str | Path, options: PairsOptions
) -> tuple[list[tuple[Record, tuple[Message, ...], CleanCandidates]], list[RowError]]:
    rows, bad = [], []
    for record in iter_records(source):
        try:
            if record.error is not None:
                raise ValueError(record.error)
            value = record.value
            context = to_prompt(value, _system_prompt(value, options.system_prompt))
            responses = value.get("responses")
            if not isinstance(responses, list) or not responses:
                raise ValueError("field 'responses' must be a non-empty list of strings")
            if not all(isinstance(r, str) for r in responses):
                raise ValueError("field 'responses' must hold strings")
            reasons = value.get("finish_reasons")
            if reasons is not None and (
                not isinstance(reasons, list) or len(reasons) != len(responses)
            ):
                raise ValueError("field 'finish_reasons' must be a list as long as 'responses'")
            if options.format == "standard":
                format_pair(context, "x", "y", "standard")  # fail early, naming the row
            clean = clean_candidates(responses, reasons, options.keep_truncated)
            rows.append((record, context, clean))
        except ValueError as err:
            bad.append(RowError(record.location, str(err)))
    return rows, bad


def make_pairs(
    source: str | Path, output_path: str | Path, scorer: Any, options: PairsOptions | None = None
) -> PairsSummary:
    """Score candidates of ``source`` and write preference pairs to ``output_path``.

    ``scorer`` is a :class:`~prefsmith.rewards.density_ratio.DensityRatioScorer` (or anything
    with the same ``score`` and ``settings`` methods).
    """
    options = options or PairsOptions()
    output_path = Path(output_path)
    rows, bad = read_candidates(source, options)
    if bad and options.on_error == "raise":
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise RowError(bad[0].location, bad[0].reason + more)
    if bad:
        from prefsmith.rewards.annotate import rejected_path

        rejected_path(output_path).write_text(
            "".join(json.dumps({"location": e.location, "reason": e.reason}) + "\n" for e in bad)
        )

    to_score = [(record, context, clean) for record, context, clean in rows if len(clean.kept) >= 2]
    good = []
    for record, context, clean in to_score:
        responses = [record.value["responses"][i] for i in clean.kept]
        value = {
            **({"id": record.value["id"]} if "id" in record.value else {}),
            "prompt": [dict(m) for m in context],
            "responses": responses,
            "candidate_indices": list(clean.kept),
        }
        item = ScoringItem(
            tuple(context), tuple(str(i) for i in clean.kept), tuple(responses), "candidates"
        )
        good.append((Record(record.index, record.location, value), item))
    scores_file = scores_path(output_path)
    annotate = annotate_file(
        ValidatedInput(good, []),
        scores_file,
        scorer,
        AnnotateOptions(chunk_size=options.chunk_size, progress=options.progress),
    )
    scored = {row[INDEX_FIELD]: row for row in read_jsonl_rows(scores_file)}
    settings = scorer.settings()

    out_rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    candidates: dict[str, int] = {}
    for record, context, clean in rows:
        for status in clean.status:
            candidates[status] = candidates.get(status, 0) + 1
        if len(clean.kept) < 2:
            dropped["fewer than 2 usable candidates"] = (
                dropped.get("fewer than 2 usable candidates", 0) + 1
            )
            continue
        score_row = scored[record.index]
        if score_row.get("candidate_indices") != list(clean.kept):
            raise ValueError(
                f"{scores_file} was written by a run that kept other candidates of"
                f" {record.location} (other --keep-truncated setting or input?); delete it to"
                " score again"
            )
        kept_rewards = score_row["rewards"]
        all_rewards: list[float | None] = [None] * len(clean.status)
        for i, reward in zip(clean.kept, kept_rewards, strict=True):
            all_rewards[i] = reward
        pairs = select_pairs(kept_rewards, options.strategy, options.min_margin)
        if not pairs:
            reason = (
                "all candidates tie"
                if len(set(kept_rewards)) == 1
                else f"margin not above {options.min_margin}"
            )
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        responses = record.value["responses"]
        for a, b in pairs:
            ci, ri = clean.kept[a], clean.kept[b]
            out_rows.append(
                {
                    **format_pair(context, responses[ci], responses[ri], options.format),
                    **carried_fields(record.value),
                    INDEX_FIELD: record.index,
                    "chosen_index": ci,
                    "rejected_index": ri,
                    "reward_chosen": kept_rewards[a],
                    "reward_rejected": kept_rewards[b],
                    "reward_margin": kept_rewards[a] - kept_rewards[b],
                    "candidate_rewards": all_rewards,
                    "candidate_status": list(clean.status),
                    "scored_with": score_row["scored_with"],
                }
            )
    write_rows(output_path, out_rows)
    _write_pairs_settings(output_path, settings, options)
    return PairsSummary(
        output_path,
        len(rows),
        annotate.scored,
        len(out_rows),
        dropped,
        candidates,
        annotate.seconds,
    )


def write_rows(output_path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` to ``output_path`` (JSONL or Parquet), replacing what was there."""
    journal = journal_path(output_path)
    journal.unlink(missing_ok=True)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with JsonlAppender(journal) as out:
        out.write(rows)
    if journal != output_path:
        finalize_output(output_path)


def _write_pairs_settings(output: Path, settings: dict[str, Any], options: PairsOptions) -> None:
    from dataclasses import asdict

    path = output.with_name(output.name + ".settings.json")
    path.write_text(json.dumps({"scorer": settings, "pairs": asdict(options)}, indent=2))
