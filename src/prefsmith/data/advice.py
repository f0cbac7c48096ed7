"""What to change when a stage drops most of its input: one table for the CLI and recipes.

Each drop reason a step records (``Outcome.dropped``) is matched by a phrase it contains; the
advice names the command-line option (``cli``) or the recipe key (``recipe``) that keeps more.

>>> drop_advice({"fewer than 2 usable candidates": 7}, "recipe")
['pairs.keep_truncated: true, a larger sampling.n, or a larger sampling.max_new_tokens']
>>> mostly_dropped(inputs=8, dropped={"all candidates tie": 5})
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Style = Literal["cli", "recipe"]

#: When a stage keeps less than this share of its input, the summary says how to keep more.
MOSTLY_DROPPED = 0.5

#: Phrase of a drop reason -> advice as a command-line option and as a recipe key.
DROP_ADVICE: dict[str, dict[str, str]] = {
    "fewer than 2 usable candidates": {
        "cli": "--keep-truncated, a larger -n, or a larger --max-new-tokens when sampling",
        "recipe": "pairs.keep_truncated: true, a larger sampling.n, or a larger"
        " sampling.max_new_tokens",
    },
    "truncated": {
        "cli": "--keep-truncated keeps responses that hit --max-new-tokens (or raise it)",
        "recipe": "keep_truncated: true (pairs, rmboost) keeps responses that hit"
        " max_new_tokens, or raise sampling.max_new_tokens",
    },
    "all candidates tie": {
        "cli": "a larger -n or --temperature when sampling (identical samples tie)",
        "recipe": "a larger sampling.n or sampling.temperature (identical samples tie)",
    },
    "margin not above": {
        "cli": "a lower --min-margin",
        "recipe": "a lower pairs.min_margin",
    },
    "p_chosen not above": {
        "cli": "a lower --min-probability",
        "recipe": "a lower min_probability (pairs.min_probability, rmboost's min_probability)",
    },
    "tie (rule": {
        "cli": "--ties both or --ties chosen",
        "recipe": "relabel.tie_rule: both (or chosen)",
    },
    "scorer disagrees": {
        "cli": "leave out --filter-agreement",
        "recipe": "filter_agreement: false",
    },
    "repeats the first": {
        "cli": "a higher --temperature",
        "recipe": "a higher sampling.temperature",
    },
    "empty": {
        "cli": "a larger --max-new-tokens or another --model",
        "recipe": "a larger sampling.max_new_tokens or another model",
    },
}


def mostly_dropped(inputs: int, dropped: Mapping[str, int]) -> bool:
    """Whether more than :data:`MOSTLY_DROPPED` of ``inputs`` rows gave no output."""
    return inputs > 0 and sum(dropped.values()) / inputs > MOSTLY_DROPPED


def drop_advice(dropped: Mapping[str, int], style: Style = "cli") -> list[str]:
    """The advice for each drop reason in ``dropped``, most frequent reason first, no repeats."""
    out: list[str] = []
    for reason, _ in sorted(dropped.items(), key=lambda kv: -kv[1]):
        for phrase, advice in DROP_ADVICE.items():
            if phrase in reason:
                if advice[style] not in out:
                    out.append(advice[style])
                break
    return out


def drop_warning(inputs: int, dropped: Mapping[str, int], style: Style = "cli") -> str | None:
    """``N of M rows gave no output (reasons); to keep more: advice``, or ``None``.

    >>> text = drop_warning(8, {"all candidates tie": 6}, "recipe")
    >>> print(text)  # doctest: +NORMALIZE_WHITESPACE
    6 of 8 rows gave no output (6 all candidates tie); to keep more: a larger sampling.n or
    sampling.temperature (identical samples tie)
    >>> drop_warning(8, {"all candidates tie": 1}) is None
    True
    """
    if not mostly_dropped(inputs, dropped):
        return None
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
    advice = drop_advice(dropped, style)
    text = f"{sum(dropped.values())} of {inputs} rows gave no output ({reasons})"
    return text + (f"; to keep more: {'; '.join(advice)}" if advice else "")
