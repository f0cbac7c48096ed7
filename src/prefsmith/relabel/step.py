"""Relabel scored pairs into TRL-ready goal-conditioned preference rows (``prefsmith relabel``).

Input: pairs in any shape :mod:`prefsmith.data.rows` accepts, with one numeric reward per
response in two columns (``reward_chosen`` / ``reward_rejected`` as ``prefsmith score`` and
``prefsmith pairs`` write them, or any other names). Output (JSONL or Parquet): TRL's
``prompt`` / ``chosen`` / ``rejected`` plus

* ``goal``: the goal score in the system message;
* ``reward``: the raw reward of this row's preferred response (``goal`` is its mapping);
* ``swapped``: true when the preferred response is the input's ``rejected`` one;
* ``source_index`` and the input's ``id`` (when present).

The goal mapping with its fitted parameters, the template and the tie rule are recorded in the
run's settings (``<output>.settings.json``); ties are counted in the run summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefsmith.data.rows import PAIR_COLUMNS, ScoringItem, to_scoring_item
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.relabel.pairs import (
    OutputFormat,
    TieRule,
    default_template_path,
    load_template,
    relabel_pair,
    to_trl_row,
)
from prefsmith.relabel.scale import FittedScale, GoalScale, fit_scale


@dataclass(frozen=True)
class RelabelOptions:
    """Options of :class:`RelabelStep`.

    Attributes:
        chosen_reward: Column holding the chosen response's reward.
        rejected_reward: Column holding the rejected response's reward.
        scale: Goal scale and mapping method.
        tie_rule: What to do when both responses map to the same goal (see
            :mod:`prefsmith.relabel.pairs`).
        template: Goal system-prompt template file; ``None`` = the one shipped with prefsmith.
        output_format: ``conversational`` (message lists) or ``standard`` (strings).
        keep_columns: Input columns copied to every output row (e.g. ``subset``).
        min_probability: Relabel only pairs whose ``probability_column`` is above this (a
            calibrated P(chosen preferred), as ``score --scorer fitted:FILE`` writes it); the
            others are dropped and left out of the goal mapping's fit. ``None``: keep every pair.
        probability_column: Column holding P(chosen preferred).

    >>> RelabelOptions(tie_rule="both").scale.high
    10.0
    """

    chosen_reward: str = "reward_chosen"
    rejected_reward: str = "reward_rejected"
    scale: GoalScale = field(default_factory=GoalScale)
    tie_rule: TieRule = "drop"
    template: str | None = None
    output_format: OutputFormat = "conversational"
    keep_columns: tuple[str, ...] = ()
    min_probability: float | None = None
    probability_column: str = "p_chosen"


def _reward(row: Mapping[str, Any], column: str) -> float:
    if column not in row:
        raise ValueError(f"missing reward column {column!r}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"reward column {column!r} must be a finite number, got {value!r}")
    return float(value)


class RelabelStep(Step):
    """Reward-augmented relabeling: each scored pair becomes two goal-conditioned pairs.

    Input columns: a pair in any shape :mod:`prefsmith.data.rows` accepts, with one numeric
    reward per response (``reward_chosen`` / ``reward_rejected`` by default). Output: TRL's
    ``prompt`` / ``chosen`` / ``rejected`` with the goal in a system message, plus ``goal``,
    ``reward`` (the raw reward of this row's preferred response), ``swapped`` (the preferred
    response is the input's rejected one) and the input's ``id`` and ``keep_columns``. The goal
    mapping is fitted on every input reward (:meth:`fit`) and recorded in the settings.

    >>> from prefsmith.data.runner import process_rows
    >>> pairs = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go.", "reward_chosen": 2.0,
    ...           "reward_rejected": -1.0},
    ...          {"prompt": "2+2?", "chosen": "4", "rejected": "5", "reward_chosen": 0.5,
    ...           "reward_rejected": 0.1}]
    >>> rows = process_rows(pairs, RelabelStep())
    >>> len(rows), [r["swapped"] for r in rows[:2]]
    (4, [False, True])
    >>> sure = [dict(pairs[0], p_chosen=0.9), dict(pairs[1], p_chosen=0.55)]
    >>> rows = process_rows(sure, RelabelStep(RelabelOptions(min_probability=0.7)))
    >>> len(rows), rows[0]["id"] if "id" in rows[0] else rows[0]["source_index"]
    (2, 0)
    """

    name = "relabel"
    input_columns = "prompt + chosen/rejected + reward_chosen/reward_rejected"
    output_columns = ("prompt", "chosen", "rejected", "goal", "reward", "swapped")

    def __init__(self, options: RelabelOptions | None = None) -> None:
        self.options = options or RelabelOptions()
        o = self.options
        probability = (o.probability_column,) if o.min_probability is not None else ()
        self.required_columns = (
            (*PAIR_COLUMNS[0], o.chosen_reward, o.rejected_reward, *probability),
        )
        self.template = load_template(self.options.template)
        self.fitted: FittedScale | None = None

    def prepare(self, row: Mapping[str, Any]) -> tuple[ScoringItem, float, float, bool]:
        item = to_scoring_item(row)
        if item.kind != "pair":
            raise ValueError(
                "expected a pair (chosen/rejected); pick pairs from candidates first"
                " with `prefsmith pairs`"
            )
        return (
            item,
            _reward(row, self.options.chosen_reward),
            _reward(row, self.options.rejected_reward),
            self._sure(row),
        )

    def _sure(self, row: Mapping[str, Any]) -> bool:
        """Whether the pair passes ``min_probability`` (always, without one)."""
        if self.options.min_probability is None:
            return True
        column = self.options.probability_column
        if column not in row:
            raise ValueError(
                f"--min-probability needs a {column!r} column (score with a calibrated"
                " scorer: `prefsmith score --scorer fitted:fit.json#calibration:...`)"
            )
        return _reward(row, column) > self.options.min_probability

    def fit(self, items: Sequence[RowItem]) -> None:
        kept = [i for i in items if i.item[3]]
        if not kept:
            raise ValueError("no pairs to relabel" + (" above --min-probability" if items else ""))
        rewards = [r for i in kept for r in i.item[1:3]]
        self.fitted = fit_scale(rewards, self.options.scale)

    def settings(self) -> dict[str, Any]:
        return {
            "goal_mapping": self.fitted.to_dict() if self.fitted else None,
            "template_file": self.options.template or str(default_template_path()),
            "template": self.template,
            "options": {k: v for k, v in asdict(self.options).items() if k != "scale"},
        }

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        assert self.fitted is not None, "fit() first"
        return [self._relabel(b) for b in batch]

    def _relabel(self, b: RowItem) -> Outcome:
        item, r_w, r_l, sure = b.item
        if not sure:
            column, threshold = self.options.probability_column, self.options.min_probability
            return Outcome(dropped=f"{column} not above {threshold}")
        g_w, g_l = self.fitted.map(r_w), self.fitted.map(r_l)  # type: ignore[union-attr]
        chosen, rejected = item.responses
        options = self.options
        rows = []
        for pair in relabel_pair(
            item.context, chosen, rejected, g_w, g_l, self.template, options.scale, options.tie_rule
        ):
            row = to_trl_row(pair, options.output_format)
            row.update(goal=pair.goal, reward=r_l if pair.swapped else r_w, swapped=pair.swapped)
            for column in ("id", *options.keep_columns):
                if column in b.row:
                    row[column] = b.row[column]
            rows.append(row)
        tie = {"ties": int(g_w == g_l)}
        return Outcome(rows, dropped=None if rows else "tie (rule drop)", counts=tie)
