"""How routed rows fall across RewardBench sections: confusion matrix and tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from prefsmith.evaluation.sections import SECTIONS, section_of

#: The domain of the default domains file that each RewardBench subset "should" go to.
#: Chat and Chat Hard are general chat; Reasoning is math (``math-prm``) or code (``hep-*``).
EXPECTED_DOMAIN_OF_SECTION = {
    "Chat": "chat",
    "Chat Hard": "chat",
    "Safety": "safety",
    "Reasoning": "code",
}

UNKNOWN = "(unknown)"


def expected_domain(subset: str) -> str | None:
    """The default-file domain a subset's prompts belong to, or ``None`` if unknown.

    >>> expected_domain("math-prm"), expected_domain("hep-go"), expected_domain("donotanswer")
    ('math', 'code', 'safety')
    """
    if subset == "math-prm":
        return "math"
    section = section_of(subset)
    return EXPECTED_DOMAIN_OF_SECTION.get(section) if section else None


def confusion_matrix(
    domains: Sequence[str], sections: Sequence[str | None]
) -> dict[str, dict[str, int]]:
    """Counts of rows per (section, routed domain); rows without a section go to ``(unknown)``.

    >>> confusion_matrix(["chat", "safety", "chat"], ["Chat", "Safety", "Chat"])
    {'Chat': {'chat': 2}, 'Safety': {'safety': 1}}
    """
    matrix: dict[str, dict[str, int]] = {}
    for domain, section in zip(domains, sections, strict=True):
        row = matrix.setdefault(section or UNKNOWN, {})
        row[domain] = row.get(domain, 0) + 1
    order = {s: i for i, s in enumerate([*SECTIONS, UNKNOWN])}
    return {s: matrix[s] for s in sorted(matrix, key=lambda s: order.get(s, len(order)))}


def routing_agreement(domains: Sequence[str], subsets: Sequence[str]) -> float:
    """Share of rows routed to :func:`expected_domain` of their subset (known subsets only).

    >>> routing_agreement(["chat", "code", "chat"], ["alpacaeval-easy", "hep-go", "hep-js"])
    0.6666666666666666
    """
    pairs = [(d, expected_domain(s)) for d, s in zip(domains, subsets, strict=True)]
    known = [(d, e) for d, e in pairs if e is not None]
    return sum(d == e for d, e in known) / len(known) if known else float("nan")


def confusion_table(
    matrix: dict[str, dict[str, int]], domain_names: Iterable[str] | None = None, title: str = ""
) -> Table:
    """The confusion matrix as a rich table (sections as rows, domains as columns)."""
    names = list(domain_names or sorted({d for row in matrix.values() for d in row}))
    table = Table(title=title or "Router: RewardBench section x routed domain")
    table.add_column("section")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("rows", justify="right")
    for section, row in matrix.items():
        table.add_row(section, *[str(row.get(n, 0)) for n in names], str(sum(row.values())))
    return table


def routing_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Confusion table of scored rows carrying ``domain`` (and optionally ``subset``)."""
    routed = [r for r in rows if "domain" in r]
    sections = [section_of(str(r["subset"])) if "subset" in r else None for r in routed]
    matrix = confusion_matrix([str(r["domain"]) for r in routed], sections)
    return confusion_table(matrix)
