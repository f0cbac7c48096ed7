"""Preference rows as the trainers read them: validation, loading, a seeded held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefsmith.data.io import iter_records
from prefsmith.data.rows import RowError


def _check_messages(value: Any, field: str) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a string or a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ValueError(f"field {field!r}[{i}] must be a {{'role', 'content'}} message")


def validate_preference_row(row: Any) -> dict[str, Any]:
    """Keep ``prompt``/``chosen``/``rejected`` of a TRL row; raise ``ValueError`` if malformed.

    >>> validate_preference_row({"prompt": "q", "chosen": "a", "rejected": "b", "goal": 3})
    {'prompt': 'q', 'chosen': 'a', 'rejected': 'b'}
    >>> validate_preference_row({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant",
    ...                          "content": "b"}]})
    Traceback (most recent call last):
    ...
    ValueError: prompt, chosen and rejected must be all strings (standard) or all message lists
    """
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    missing = [f for f in ("prompt", "chosen", "rejected") if f not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)} (TRL preference format)")
    values = {f: row[f] for f in ("prompt", "chosen", "rejected")}
    kinds = {isinstance(v, str) for v in values.values()}
    if len(kinds) > 1:
        raise ValueError(
            "prompt, chosen and rejected must be all strings (standard) or all message lists"
        )
    for f, v in values.items():
        if isinstance(v, str):
            if not v.strip():
                raise ValueError(f"field {f!r} is empty")
        else:
            _check_messages(v, f)
    return values


def load_preference_rows(path: str | Path, max_rows: int = 0) -> list[dict[str, Any]]:
    """Read and validate TRL preference rows; errors name ``file:line``."""
    rows = []
    for record in iter_records(path):
        if max_rows and len(rows) >= max_rows:
            break
        try:
            if record.error is not None:
                raise ValueError(record.error)
            rows.append(validate_preference_row(record.value))
        except ValueError as err:
            raise RowError(record.location, str(err)) from None
    if not rows:
        raise ValueError(f"{path}: no preference rows")
    return rows


def split_rows(rows: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded train/eval split; ``fraction`` of the rows (at least one) are held out.

    >>> split_rows(list(range(10)), 0.2, 0)[1]
    [6, 9]
    >>> split_rows([1, 2], 0.0, 0)
    ([1, 2], [])
    """
    import random

    if fraction <= 0 or len(rows) < 2:
        return rows, []
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(random.Random(seed).sample(range(len(rows)), n_eval))
    return [r for i, r in enumerate(rows) if i not in held], [
        r for i, r in enumerate(rows) if i in held
    ]
