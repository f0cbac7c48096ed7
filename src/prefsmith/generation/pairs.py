"""On-policy preference pairs from sampled candidates (``prefsmith pairs``), as in Dr.SoW.

Input: rows with ``prompt`` (or ``messages``) and ``responses`` — the output of
``prefsmith sample``, whose ``finish_reasons`` mark truncated samples. Steps:

1. Clean each row's candidates (:func:`clean_candidates`): drop empty responses, truncated
   ones (``finish_reason == "length"``, unless ``keep_truncated``) and exact duplicates (the
   first copy stays). Rows left with fewer than two candidates are dropped.
2. Score the remaining candidates with the reward.
3. Select pairs from the rewards (:func:`select_pairs`): best vs. worst, or every pair whose
   margin exceeds ``min_margin``. Pairs with a margin of ``min_margin`` or less (ties
   included) are never kept, so a row whose candidates all tie gives no pair.
4. Write the pairs in TRL's standard or conversational preference format, each row with every
   candidate's reward and status, the pair's margin and the scorer settings.

:class:`PairsStep` is the stage; :func:`~prefsmith.data.runner.run_rows` runs it on files.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefsmith.data.io import INDEX_FIELD
from prefsmith.data.messages import Message
from prefsmith.data.rows import CANDIDATE_COLUMNS, ScoringItem, to_prompt
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.rewards.base import ItemRewards, Reward, scored_with, sigmoid

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
    """How :class:`PairsStep` selects and writes pairs.

    Attributes:
        strategy: ``best-worst`` (one pair per prompt: highest vs. lowest reward, as in
            Dr.SoW) or ``all-pairs`` (every ordered pair with a margin above ``min_margin``).
        min_margin: A pair is kept only when reward(chosen) - reward(rejected) is strictly
            greater than this; ``0`` drops ties. With a calibrated reward (``fitted:FILE``,
            margins in logit units) its pairs carry ``p_chosen``.
        min_probability: With a calibrated reward, keep a pair only when P(chosen preferred)
            is strictly above this (the margin :func:`probability_margin` ``(p)``, combined
            with ``min_margin`` by taking the larger); ``None``: no probability threshold.
        format: ``conversational`` (prompt and responses as ``{"role", "content"}`` lists;
            TRL applies the chat template, matching how the samples were generated) or
            ``standard`` (strings; needs single-turn prompts without a system turn).
        keep_truncated: Keep candidates that hit ``max_new_tokens`` (marked ``ok (truncated)``
            in ``candidate_status``); small models often hit the limit, and dropping them
            left runs with no pairs.
        system_prompt: System turn for scoring; default: the one each row was sampled with
            (``generated_with.system_prompt``), if any.

    >>> PairsOptions(strategy="all-pairs", min_margin=0.5).format
    'conversational'
    """

    strategy: Strategy = "best-worst"
    min_margin: float = 0.0
    format: PairFormat = "conversational"
    keep_truncated: bool = True
    system_prompt: str | None = None
    min_probability: float | None = None

    def __post_init__(self) -> None:
        if self.min_probability is not None:
            probability_margin(self.min_probability)  # refuses 0, 1 and outside

    @property
    def threshold(self) -> float:
        """The margin a kept pair must exceed: ``min_margin`` or the probability's margin.

        >>> PairsOptions(min_margin=0.5).threshold
        0.5
        >>> round(PairsOptions(min_probability=0.9).threshold, 4)
        2.1972
        """
        if self.min_probability is None:
            return self.min_margin
        return max(self.min_margin, probability_margin(self.min_probability))


@dataclass(frozen=True)
class CleanCandidates:
    """A row's candidates after cleaning.

    Attributes:
        kept: Indices (into the row's ``responses``) of the candidates to score.
        status: Per candidate: ``ok``, ``ok (truncated)`` (kept although it hit
            ``max_new_tokens``), ``empty``, ``truncated`` (dropped) or ``duplicate``.
    """

    kept: tuple[int, ...]
    status: tuple[str, ...]


def probability_margin(p: float) -> float:
    """The logit margin above which a calibrated reward gives P(chosen preferred) > ``p``.

    >>> probability_margin(0.5), round(probability_margin(0.9), 4)
    (0.0, 2.1972)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"a probability threshold must be strictly between 0 and 1, not {p}")
    return math.log(p / (1.0 - p))


def check_probability_threshold(reward: Reward | None, p: float | None) -> None:
    """Refuse a probability threshold ``p`` outside (0, 1) or without a calibrated reward.

    >>> check_probability_threshold(None, None)
    >>> check_probability_threshold(None, 0.7)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a probability threshold needs a calibrated reward, not none: fit one with ...
    """
    if p is None:
        return
    probability_margin(p)  # refuses 0, 1 and outside
    if reward is None or not reward.calibrated:
        name = reward.name if reward is not None else "none"
        raise ValueError(
            f"a probability threshold needs a calibrated reward, not {name}: fit one with"
            " `prefsmith eval --fit calibration` and score with fitted:FILE#calibration:SCORER"
        )


def clean_candidates(
    responses: Sequence[str],
    finish_reasons: Sequence[str] | None = None,
    keep_truncated: bool = False,
) -> CleanCandidates:
    """Mark empty, truncated and duplicate candidates; keep the rest in order.

    >>> c = clean_candidates(["a", "", "b", "a ", "c"], ["stop", "stop", "length", "stop", "stop"])
    >>> c.kept, c.status
    ((0, 4), ('ok', 'empty', 'truncated', 'duplicate', 'ok'))
    >>> clean_candidates(["a", "b"], ["stop", "length"], keep_truncated=True).status
    ('ok', 'ok (truncated)')
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
            status.append("ok (truncated)" if reason == "length" else "ok")
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


def _system_prompt(row: dict[str, Any], override: str | None) -> str | None:
    if override is not None:
        return override
    generated_with = row.get("generated_with")
    return generated_with.get("system_prompt") if isinstance(generated_with, dict) else None


def prepare_candidates(
    row: Any, options: PairsOptions
) -> tuple[tuple[Message, ...], CleanCandidates]:
    """The row's conversation and cleaned candidates; raises ``ValueError`` saying what's wrong."""
    context = to_prompt(row, _system_prompt(row, options.system_prompt))
    responses = row.get("responses")
    if not isinstance(responses, list) or not responses:
        raise ValueError("field 'responses' must be a non-empty list of strings")
    if not all(isinstance(r, str) for r in responses):
        raise ValueError("field 'responses' must hold strings")
    reasons = row.get("finish_reasons")
    if reasons is not None and (not isinstance(reasons, list) or len(reasons) != len(responses)):
        raise ValueError("field 'finish_reasons' must be a list as long as 'responses'")
    if options.format == "standard":
        format_pair(context, "x", "y", "standard")  # fail early, naming the row
    return context, clean_candidates(responses, reasons, options.keep_truncated)


class PairsStep(Step):
    """Best-of-N preference pairs: score each prompt's candidates, keep best vs. worst.

    Input columns: ``prompt`` (or ``messages``) and ``responses``, optionally
    ``finish_reasons`` (the output of ``sample``). Output: one row per pair in TRL's
    conversational or standard format, plus ``chosen_index``, ``rejected_index``,
    ``reward_chosen``, ``reward_rejected``, ``reward_margin``, ``candidate_rewards`` (``None``
    for candidates not scored), ``candidate_status`` and ``scored_with``; the input's other
    fields are carried. Rows without a pair are counted by reason.

    Args:
        reward: Scores the candidates (any :class:`~prefsmith.rewards.base.Reward`).
        options: Selection and format.

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.rewards.density_ratio import DensityRatioReward
    >>> from prefsmith.testing import tiny_backend
    >>> reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    >>> rows = process_rows([{"prompt": "Pick.", "responses": ["A", "B", "C"]}], PairsStep(reward))
    >>> len(rows), rows[0]["reward_margin"] > 0, sorted(rows[0])[:3]
    (1, True, ['candidate_rewards', 'candidate_status', 'chosen'])
    """

    name = "pairs"
    input_columns = "prompt (or messages) + responses [+ finish_reasons]"
    required_columns = CANDIDATE_COLUMNS
    output_columns = (
        "prompt",
        "chosen",
        "rejected",
        "chosen_index",
        "rejected_index",
        "reward_chosen",
        "reward_rejected",
        "reward_margin",
        "candidate_rewards",
        "candidate_status",
        "scored_with",
    )

    def __init__(self, reward: Reward, options: PairsOptions | None = None) -> None:
        self.reward = reward
        self.options = options or PairsOptions()
        check_probability_threshold(reward, self.options.min_probability)

    def prepare(self, row: Any) -> tuple[tuple[Message, ...], CleanCandidates]:
        return prepare_candidates(row, self.options)

    def settings(self) -> dict[str, Any]:
        return {"reward": self.reward.settings(), "pairs": asdict(self.options)}

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        scorable = [b for b in batch if len(b.item[1].kept) >= 2]
        items = [
            ScoringItem(
                b.item[0],
                tuple(str(i) for i in b.item[1].kept),
                tuple(b.row["responses"][i] for i in b.item[1].kept),
                "candidates",
            )
            for b in scorable
        ]
        rewards = self.reward.score_items(items, advance) if items else []
        scored = dict(zip((b.key for b in scorable), rewards, strict=True))
        record = scored_with(self.reward.settings()) if scored else None
        return [self._outcome(b, scored.get(b.key), record) for b in batch]

    def _outcome(
        self, b: RowItem, rewards: ItemRewards | None, record: dict[str, Any] | None
    ) -> Outcome:
        context, clean = b.item
        counts = Counter(f"candidates {status}" for status in clean.status)
        if rewards is None:
            return Outcome(dropped="fewer than 2 usable candidates", counts=counts)
        kept_rewards = [r.reward for r in rewards.responses]
        all_rewards: list[float | None] = [None] * len(clean.status)
        for i, reward in zip(clean.kept, kept_rewards, strict=True):
            all_rewards[i] = reward
        pairs = select_pairs(kept_rewards, self.options.strategy, self.options.threshold)
        if not pairs:
            tie = len(set(kept_rewards)) == 1
            why = "all candidates tie" if tie else self._below_threshold()
            return Outcome(dropped=why, counts=counts)
        responses = b.row["responses"]
        rows = []
        for a, z in pairs:
            ci, ri = clean.kept[a], clean.kept[z]
            rows.append(
                {
                    **format_pair(context, responses[ci], responses[ri], self.options.format),
                    **carried_fields(dict(b.row)),
                    "chosen_index": ci,
                    "rejected_index": ri,
                    "reward_chosen": kept_rewards[a],
                    "reward_rejected": kept_rewards[z],
                    "reward_margin": kept_rewards[a] - kept_rewards[z],
                    "candidate_rewards": all_rewards,
                    "candidate_status": list(clean.status),
                    "scored_with": record,
                    **rewards.fields,
                }
            )
            if self.reward.calibrated:
                rows[-1]["p_chosen"] = sigmoid(kept_rewards[a] - kept_rewards[z])
        return Outcome(rows, counts=counts)

    def _below_threshold(self) -> str:
        """The drop reason of a prompt whose best pair misses the threshold."""
        options = self.options
        if options.min_probability is not None and options.threshold > options.min_margin:
            return f"p_chosen not above {options.min_probability}"
        return f"margin not above {options.min_margin}"
