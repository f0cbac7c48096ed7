"""Chat messages: the ``{"role", "content"}`` dicts every stage passes around."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: One chat message, ``{"role": ..., "content": ...}``.
Message = dict[str, str]


def common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common prefix of two sequences (token ids, messages).

    >>> common_prefix_length([1, 2, 3], [1, 2, 4, 5])
    2
    >>> common_prefix_length([1, 2], [1, 2, 3])
    2
    >>> common_prefix_length([], [7])
    0
    """
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
