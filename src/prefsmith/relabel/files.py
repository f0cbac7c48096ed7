"""Relabel a file of scored pairs into TRL-ready goal-conditioned preference rows.

Input: pairs in any shape :mod:`prefsmith.data.rows` accepts, with one numeric reward per
response in two columns (``reward_chosen`` / ``reward_rejected`` as ``prefsmith score`` and
``prefsmith pairs`` write them, or any other names). Output (JSONL or Parquet): TRL's
``prompt`` / ``chosen`` / ``rejected`` plus

* ``goal``: the goal score in the system message;
* ``reward``: the raw reward of this row's preferred response (``goal`` is its mapping);
* ``swapped``: true when the preferred response is the input's ``rejected`` one;
* ``source_index`` and the input's ``id`` (when present).

The goal mapping with its fitted parameters, the template, tie rule and counts are written to
``<output>.relabel.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.data.io import INDEX_FIELD, JsonlAppender, iter_records
from prefsmith.data.rows import RowError, ScoringItem, to_scoring_item
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
    """Options of :func:`relabel_file`.

    Attributes:
        chosen_reward: Column holding the chosen response's reward.
        rejected_reward: Column holding the rejected response's reward.
        scale: Goal scale and mapping method.
        tie_rule: What to do when both responses map to the same goal (see
            :mod:`prefsmith.relabel.pairs`).
        template: Goal system-prompt template file; ``None`` = the one shipped with prefsmith.
        output_format: ``conversational`` (message lists) or ``standard`` (strings).
        keep_columns: Input columns copied to every output row (e.g. ``subset``).
    """

    chosen_reward: str = "reward_chosen"
    rejected_reward: str = "reward_rejected"
    scale: GoalScale = field(default_factory=GoalScale)
    tie_rule: TieRule = "drop"
    template: str | None = None
    output_format: OutputFormat = "conversational"
    keep_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelabelSummary:
    """What :func:`relabel_file` did.

    Attributes:
        output: Output path.
        inputs: Input pairs read.
        written: Relabeled rows written.
        ties: Input pairs whose two goals were equal.
        fitted: The goal mapping used.
    """

    output: Path
    inputs: int
    written: int
    ties: int
    fitted: FittedScale


def _reward(row: dict[str, Any], column: str) -> float:
    if column not in row:
        raise ValueError(f"missing reward column {column!r}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"reward column {column!r} must be a finite number, got {value!r}")
    return float(value)


def read_scored_pairs(
    path: str | Path, options: RelabelOptions
) -> list[tuple[int, dict[str, Any], ScoringItem, float, float]]:
    """Validate every row; raise a :class:`RowError` naming the first bad row (and the count)."""
    good, bad = [], []
    for record in iter_records(path):
        try:
            if record.error is not None:
                raise ValueError(record.error)
            item = to_scoring_item(record.value)
            if item.kind != "pair":
                raise ValueError(
                    "expected a pair (chosen/rejected); pick pairs from candidates first"
                    " with `prefsmith pairs`"
                )
            r_w = _reward(record.value, options.chosen_reward)
            r_l = _reward(record.value, options.rejected_reward)
            good.append((record.index, record.value, item, r_w, r_l))
        except ValueError as err:
            bad.append(RowError(record.location, str(err)))
    if bad:
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise RowError(bad[0].location, bad[0].reason + more)
    if not good:
        raise ValueError(f"{path}: no rows")
    return good


def relabel_file(
    input_path: str | Path, output_path: str | Path, options: RelabelOptions | None = None
) -> RelabelSummary:
    """Relabel every pair of ``input_path`` into ``output_path`` (``.jsonl`` or ``.parquet``)."""
    options = options or RelabelOptions()
    output_path = Path(output_path)
    if output_path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{output_path}: output must be .jsonl or .parquet")
    template = load_template(options.template)
    pairs = read_scored_pairs(input_path, options)
    fitted = fit_scale([r for *_, r_w, r_l in pairs for r in (r_w, r_l)], options.scale)
    rows, ties = [], 0
    for index, raw, item, r_w, r_l in pairs:
        g_w, g_l = fitted.map(r_w), fitted.map(r_l)
        ties += g_w == g_l
        chosen, rejected = item.responses
        for pair in relabel_pair(
            item.context, chosen, rejected, g_w, g_l, template, options.scale, options.tie_rule
        ):
            row = to_trl_row(pair, options.output_format)
            row.update(goal=pair.goal, reward=r_l if pair.swapped else r_w, swapped=pair.swapped)
            row[INDEX_FIELD] = index
            for column in ("id", *options.keep_columns):
                if column in raw:
                    row[column] = raw[column]
            rows.append(row)
    _write_rows(output_path, rows)
    summary = RelabelSummary(output_path, len(pairs), len(rows), ties, fitted)
    record = {
        "input": str(input_path),
        "goal_mapping": fitted.to_dict(),
        "template_file": options.template or str(default_template_path()),
        "template": template,
        "options": {k: v for k, v in asdict(options).items() if k != "scale"},
        "counts": {"inputs": len(pairs), "written": len(rows), "ties": ties},
    }
    meta = output_path.with_name(output_path.name + ".relabel.json")
    meta.write_text(json.dumps(record, indent=2))
    return summary


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        tmp.unlink(missing_ok=True)
        with JsonlAppender(tmp) as out:
            out.write(rows)
    tmp.replace(path)
