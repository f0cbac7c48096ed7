"""Reductions: how token log-probs (or log-ratios) over a response become one reward, written
once (:func:`reduce_logprobs`). The reward interface is :class:`prefsmith.rewards.base.Reward`."""

from __future__ import annotations

from enum import StrEnum


class Reduction(StrEnum):
    """How token log-probs (or log-ratios) become one reward.

    * ``sum``: sum over response tokens (RewardBench's DPO scoring; the DPO implicit reward).
    * ``mean``: sum divided by the number of response tokens (the Dr.SoW library's default);
      a density ratio needs strong and weak to share a tokenizer for it.
    * ``mean-char``: sum divided by the number of characters of the response string; defined
      for any pair of tokenizers.
    """

    SUM = "sum"
    MEAN = "mean"
    MEAN_CHAR = "mean-char"


def reduce_logprobs(total: float, n_tokens: int, n_chars: int, reduction: Reduction) -> float:
    """Reduce a summed log-prob (or log-ratio) over a response to one reward.

    >>> [reduce_logprobs(-6.0, 3, 12, r) for r in Reduction]
    [-6.0, -2.0, -0.5]
    """
    reduction = Reduction(reduction)
    if reduction is Reduction.SUM:
        return total
    if reduction is Reduction.MEAN:
        return total / max(n_tokens, 1)
    return total / max(n_chars, 1)
