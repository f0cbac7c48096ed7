"""The values rewards work with: reductions (written once, :func:`reduce_logprobs`), scored
responses and per-item results. The reward interface itself is
:class:`prefsmith.rewards.score.Reward`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prefsmith.models.backend import ResponseLogProbs


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


class IncompatibleModelsError(ValueError):
    """Models cannot be combined with the requested settings."""


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


def sigmoid(x: float) -> float:
    """The logistic function, safe for large ``|x|``.

    >>> sigmoid(0.0), round(sigmoid(2.0), 4), sigmoid(-1000.0)
    (0.5, 0.8808, 0.0)
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True)
class ScoredResponse:
    """The reward of one response and what it was computed from.

    Attributes:
        reward: The reward.
        strong: Log-probs under the (strong) model.
        weak: Log-probs under the weak model (``None`` for single-model rewards).
    """

    reward: float
    strong: ResponseLogProbs
    weak: ResponseLogProbs | None = None

    @property
    def truncated(self) -> str | None:
        """Truncation flag of either model (``None`` when neither truncated)."""
        return self.strong.truncated or (self.weak.truncated if self.weak else None)


@dataclass(frozen=True)
class ItemRewards:
    """The rewards of one item's responses.

    Attributes:
        responses: One :class:`ScoredResponse` per response, in order.
        fields: Extra output fields (with a customization: ``domain``, ``router_confidence``).
    """

    responses: list[ScoredResponse]
    fields: dict[str, Any] = field(default_factory=dict)
