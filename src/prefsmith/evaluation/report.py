"""Tables of results for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from prefsmith.evaluation.sections import SECTIONS, section_of, section_scores, subset_results


def pair_accuracy_table(rows: Sequence[dict[str, Any]], title: str = "Pair accuracy") -> Table:
    """Per-subset and per-section accuracy (%) of scored pairs (rows with ``reward_margin``).

    Rows without a ``subset`` field are counted under ``all``. Percent, like ``eval``'s tables.
    """
    pairs = [(str(r.get("subset", "all")), float(r["reward_margin"])) for r in rows]
    results = subset_results(pairs)
    table = Table(title=title)
    for column in ("section", "subset", "pairs", "accuracy %", "mean margin"):
        table.add_column(column, justify="left" if column in ("section", "subset") else "right")
    margins: dict[str, list[float]] = {}
    for subset, margin in pairs:
        margins.setdefault(subset, []).append(margin)
    order = {s: i for i, s in enumerate(s for subs in SECTIONS.values() for s in subs)}
    for subset in sorted(results, key=lambda s: (order.get(s, len(order)), s)):
        r = results[subset]
        mean = sum(margins[subset]) / len(margins[subset])
        table.add_row(
            section_of(subset) or "(unknown)",
            subset,
            str(r.total),
            f"{100 * r.accuracy:.1f}",
            f"{mean:+.3f}",
        )
    scores = section_scores(results)
    if scores:
        table.add_section()
        for section, score in scores.items():
            table.add_row(section, "", "", f"{100 * score:.1f}", "")
    return table


def reward_summary_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Count, mean, min and max reward of candidate rows (rows with ``rewards``)."""
    values = [v for r in rows for v in r["rewards"]]
    table = Table(title="Rewards of candidates")
    for column in ("rows", "responses", "mean", "min", "max"):
        table.add_column(column, justify="right")
    if values:
        table.add_row(
            str(len(rows)),
            str(len(values)),
            f"{sum(values) / len(values):+.3f}",
            f"{min(values):+.3f}",
            f"{max(values):+.3f}",
        )
    return table
