"""What every reward (scorer) is: items in, per-response rewards and their log-probs out.

A :class:`Reward` scores the responses of :class:`~prefsmith.data.rows.ScoringItem` s. It may
carry a :class:`~prefsmith.routing.customize.Customization` (the customized density ratio):
each item's context is then routed and rewritten before scoring, and the route is returned with
the rewards. The reduction of token log-probs to one number is written once, in
:func:`reduce_logprobs`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from prefsmith.data.rows import ScoringItem
from prefsmith.models.backend import ResponseLogProbs, ScoreRequest

if TYPE_CHECKING:
    from prefsmith.routing.customize import Customization


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


class Reward(ABC):
    """A reward model made of language models' log-probs.

    Subclasses implement :meth:`score_requests` (rewards of responses in their contexts),
    :meth:`settings` and :attr:`name`; :meth:`score_items` adds the customization and
    :meth:`score` the row handling of the Python API.
    """

    customization: Customization | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """The scorer spec that rebuilds this reward (see :mod:`prefsmith.rewards.spec`)."""

    @abstractmethod
    def score_requests(
        self, requests: Sequence[ScoreRequest], on_progress: Callable[[int], None] | None = None
    ) -> list[ScoredResponse]:
        """Rewards of ``requests``; ``on_progress(n)`` as model passes finish ``n`` of them."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything needed to reproduce the rewards, recorded next to them."""

    @property
    @abstractmethod
    def passes(self) -> int:
        """Model passes per request (for progress: two for a density ratio)."""

    def tokenizers(self) -> tuple[Any, Any | None]:
        """Tokenizers of the (strong, weak) models, to show tokens."""
        return None, None

    def score_items(
        self, items: Sequence[ScoringItem], advance: Callable[[float], None] | None = None
    ) -> list[ItemRewards]:
        """Rewards of every response of ``items`` (customized first, with a customization).

        ``advance(k)`` is called with fractions of items as the model passes progress.
        """
        fields: list[dict[str, Any]] = [{} for _ in items]
        if self.customization is not None:
            items, fields = self.customization.apply(items, self)
        requests = [ScoreRequest(item.context, r) for item in items for r in item.responses]
        units = max(len(requests), 1) * self.passes / max(len(items), 1)

        def progress(n: int) -> None:
            if advance is not None:
                advance(n / units)

        scored = self.score_requests(requests, progress)
        out, offset = [], 0
        for item, extra in zip(items, fields, strict=True):
            out.append(ItemRewards(scored[offset : offset + len(item.responses)], extra))
            offset += len(item.responses)
        return out

    def score(
        self,
        rows: Iterable[Any],
        *,
        system_prompt: str | None = None,
        save_token_logprobs: bool = False,
        on_error: str = "raise",
        progress: bool = False,
    ) -> Any:
        """Score rows in memory: a list of dicts or a ``datasets.Dataset``, returned the same way.

        Each row gains ``reward_chosen``, ``reward_rejected`` and ``reward_margin`` (pairs) or
        ``rewards`` (candidates), plus ``scored_with``, ``response_tokens``, ``truncated`` and
        ``source_index``; see :class:`~prefsmith.rewards.score.ScoreStep`.
        """
        from prefsmith.data.runner import process_rows
        from prefsmith.rewards.score import ScoreStep

        step = ScoreStep(self, system_prompt, save_token_logprobs)
        out = process_rows(rows, step, on_error=on_error, progress=progress)  # type: ignore[arg-type]
        if type(rows).__name__ == "Dataset" and hasattr(rows, "from_list"):
            return type(rows).from_list(out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
