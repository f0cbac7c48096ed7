"""Text templates with ``$name`` placeholders (RMBoost's prompts, the pairwise judge's)."""

from __future__ import annotations

import string
from collections.abc import Sequence


def check_placeholders(
    text: str, required: Sequence[str], known: Sequence[str], where: str
) -> None:
    """Refuse a template with unknown placeholders or without a required one.

    >>> check_placeholders("$prompt $x", ["prompt"], ["prompt"], "t")
    Traceback (most recent call last):
    ...
    ValueError: t: unknown placeholder $x (known: $prompt)
    """
    found = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            raise ValueError(f"{where}: a lone '$' (write $$ for a literal dollar sign)")
        name = match.group("named") or match.group("braced")
        if name is None:
            continue
        if name not in known:
            shown = ", ".join("$" + p for p in known)
            raise ValueError(f"{where}: unknown placeholder ${name} (known: {shown})")
        found.add(name)
    missing = [p for p in required if p not in found]
    if missing:
        raise ValueError(f"{where}: missing placeholder(s) {', '.join('$' + p for p in missing)}")
