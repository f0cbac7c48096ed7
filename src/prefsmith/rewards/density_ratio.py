"""Density-ratio reward: r(x, y) = log p_strong(y | x) - log p_weak(y | x).

With a shared tokenizer the reward is summed token by token over the response tokens. With
different tokenizers each model scores its own tokenization of the same strings, so ``sum`` is
the log-ratio of the two string probabilities; a per-token mean is then undefined (the token
counts differ) and is refused in favour of ``mean-char``, which divides by the number of
Unicode characters of the response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from prefsmith.models.backend import (
    BatchingOptions,
    LogProbBackend,
    ResponseLogProbs,
    ScoreRequest,
    load_backend,
    tokenizer_fingerprint,
)
from prefsmith.models.loading import LoadOptions, load_tokenizer


class Reduction(StrEnum):
    """How token log-ratios become one reward.

    * ``sum``: sum over response tokens (RewardBench's DPO scoring; the DPO implicit reward).
    * ``mean``: sum divided by the number of response tokens (the Dr.SoW library's default);
      needs strong and weak to share a tokenizer.
    * ``mean-char``: sum divided by the number of characters of the response string; defined
      for any pair of tokenizers.
    """

    SUM = "sum"
    MEAN = "mean"
    MEAN_CHAR = "mean-char"


class IncompatibleModelsError(ValueError):
    """Strong and weak models cannot be combined with the requested settings."""


def reduce_ratio(
    strong: ResponseLogProbs, weak: ResponseLogProbs, reduction: Reduction, shared_tokens: bool
) -> float:
    """Reduce one response's strong and weak log-probs to a reward.

    >>> import numpy as np
    >>> a = ResponseLogProbs((1, 2), np.array([-1.0, -2.0]), n_chars=4)
    >>> b = ResponseLogProbs((1, 2), np.array([-1.5, -3.5]), n_chars=4)
    >>> reduce_ratio(a, b, Reduction.SUM, True), reduce_ratio(a, b, Reduction.MEAN, True)
    (2.0, 1.0)
    >>> reduce_ratio(a, b, Reduction.MEAN_CHAR, True)
    0.5
    """
    if shared_tokens:
        if strong.token_ids != weak.token_ids:
            raise IncompatibleModelsError(
                "strong and weak tokenized the same response differently although their"
                " tokenizers match; their chat templates differ"
            )
        total = float((strong.logprobs - weak.logprobs).sum())
    else:
        total = strong.total - weak.total
    if reduction is Reduction.SUM:
        return total
    if reduction is Reduction.MEAN:
        if not shared_tokens:
            raise IncompatibleModelsError(
                "--reduction mean divides by the number of response tokens, which differs"
                " between tokenizers; use --reduction mean-char or sum"
            )
        return total / max(len(strong.token_ids), 1)
    return total / max(strong.n_chars, 1)


@dataclass(frozen=True)
class ResponseReward:
    """The reward of one response and what it was computed from.

    Attributes:
        reward: The reduced density-ratio reward.
        strong: Log-probs under the strong model.
        weak: Log-probs under the weak model.
    """

    reward: float
    strong: ResponseLogProbs
    weak: ResponseLogProbs

    @property
    def truncated(self) -> str | None:
        """Truncation flag of either model (``None`` when neither truncated)."""
        return self.strong.truncated or self.weak.truncated


class DensityRatioScorer:
    """Scores responses by the density ratio of a strong over a weak model."""

    def __init__(
        self, strong: LogProbBackend, weak: LogProbBackend, reduction: Reduction = Reduction.SUM
    ) -> None:
        check_compatible(strong, weak, reduction)
        self.strong = strong
        self.weak = weak
        self.reduction = Reduction(reduction)
        self.shared_tokens = strong.tokenizer_fingerprint == weak.tokenizer_fingerprint
        if self.shared_tokens and weak.template != strong.template:
            # As in Dr.SoW: with one tokenizer both models score the strong model's rendering,
            # so a base model without a template scores exactly the strong model's token ids.
            weak.set_template(strong.template)

    def settings(self) -> dict[str, object]:
        """Everything needed to reproduce the rewards, recorded next to them."""
        return {
            "scorer": "density-ratio",
            "strong": self.strong.name,
            "weak": self.weak.name,
            "strong_fingerprint": self.strong.fingerprint,
            "weak_fingerprint": self.weak.fingerprint,
            "reduction": self.reduction.value,
            "shared_tokenizer": self.shared_tokens,
            "strong_template": self.strong.template,
            "weak_template": self.weak.template,
        }

    def score(
        self,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseReward]:
        """Rewards for ``requests``; ``on_progress`` gets half a unit per model per request."""
        strong = self.strong.score(requests, on_progress)
        weak = self.weak.score(requests, on_progress)
        return [
            ResponseReward(reduce_ratio(s, w, self.reduction, self.shared_tokens), s, w)
            for s, w in zip(strong, weak, strict=True)
        ]


def build_density_ratio_scorer(
    strong: str,
    weak: str,
    reduction: Reduction | str = Reduction.SUM,
    load_options: LoadOptions | None = None,
    batching: BatchingOptions | None = None,
) -> DensityRatioScorer:
    """Load strong and weak models by name; refuse incompatible settings before loading weights.

    Only the tokenizers are loaded for the compatibility check, so a bad combination fails in
    seconds rather than after both models are in memory.
    """
    reduction = Reduction(reduction)
    if strong == weak:
        raise IncompatibleModelsError(
            f"strong and weak are the same model ({strong}); every reward would be 0"
        )
    if reduction is Reduction.MEAN:
        fingerprints = {tokenizer_fingerprint(load_tokenizer(n)) for n in (strong, weak)}
        if len(fingerprints) > 1:
            raise IncompatibleModelsError(
                f"{strong} and {weak} have different tokenizers, so a mean over response tokens"
                " is undefined; use --reduction mean-char (per character) or sum"
            )
    return DensityRatioScorer(
        load_backend(strong, load_options, batching),
        load_backend(weak, load_options, batching),
        reduction,
    )


def check_compatible(strong: LogProbBackend, weak: LogProbBackend, reduction: Reduction) -> None:
    """Refuse strong/weak settings that cannot give a meaningful reward, before any scoring."""
    if strong.fingerprint == weak.fingerprint and strong.name == weak.name:
        raise IncompatibleModelsError(
            f"strong and weak are the same model ({strong.name}); every reward would be 0"
        )
    shared = strong.tokenizer_fingerprint == weak.tokenizer_fingerprint
    if Reduction(reduction) is Reduction.MEAN and not shared:
        raise IncompatibleModelsError(
            f"{strong.name} and {weak.name} have different tokenizers, so a mean over response"
            " tokens is undefined; use --reduction mean-char (per character) or sum"
        )
