"""Reward-model scorers over cached per-model log-probs, selectable by name.

* ``density-ratio[:sum|mean|mean-char]``: log p_strong(y|x) - log p_weak(y|x), reduced;
* ``logprob[:sum|mean|mean-char]``: the strong model's own (reference-free) log-likelihood;
* ``dpo[:BETA]``: beta * (log pi(y|x) - log pi_ref(y|x)) with the strong model as the policy
  and the weak one as the reference (the DPO implicit reward; it ranks pairs exactly as
  ``density-ratio:sum`` does, with margins scaled by beta).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefsmith.models.backend import ResponseLogProbs
from prefsmith.rewards.density_ratio import Reduction, reduce_ratio

KINDS = ("density-ratio", "logprob", "dpo")


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer of an evaluation.

    Attributes:
        kind: ``density-ratio``, ``logprob`` or ``dpo``.
        reduction: Reduction over response tokens (``dpo`` always sums).
        beta: DPO's beta (``dpo`` only).
    """

    kind: str
    reduction: Reduction = Reduction.SUM
    beta: float = 0.1

    @classmethod
    def parse(cls, text: str) -> ScorerSpec:
        """Parse ``kind[:option]``.

        >>> ScorerSpec.parse("density-ratio:mean-char").name
        'density-ratio:mean-char'
        >>> ScorerSpec.parse("dpo:0.5").beta
        0.5
        >>> ScorerSpec.parse("logprob").name
        'logprob:sum'
        """
        kind, _, option = text.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown scorer {kind!r}; choose from {', '.join(KINDS)}")
        if kind == "dpo":
            try:
                return cls(kind, Reduction.SUM, float(option) if option else 0.1)
            except ValueError:
                raise ValueError(f"dpo takes a beta, e.g. dpo:0.1, not {text!r}") from None
        try:
            return cls(kind, Reduction(option or "sum"))
        except ValueError:
            raise ValueError(f"{text!r}: reduction must be sum, mean or mean-char") from None

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``density-ratio:sum`` or ``dpo:0.1``."""
        return f"dpo:{self.beta:g}" if self.kind == "dpo" else f"{self.kind}:{self.reduction}"

    @property
    def needs_weak(self) -> bool:
        """Whether the scorer uses the weak (reference) model."""
        return self.kind != "logprob"

    def reward(
        self, strong: ResponseLogProbs, weak: ResponseLogProbs | None, shared_tokens: bool
    ) -> float:
        """Reward of one response from its log-probs under the strong (and weak) model."""
        if self.kind == "logprob":
            return reduce_single(strong, self.reduction)
        assert weak is not None
        if self.kind == "dpo":
            return self.beta * (strong.total - weak.total)
        return reduce_ratio(strong, weak, self.reduction, shared_tokens)


def reduce_single(logprobs: ResponseLogProbs, reduction: Reduction) -> float:
    """One model's log-likelihood of a response, reduced.

    >>> import numpy as np
    >>> lp = ResponseLogProbs((1, 2), np.array([-1.0, -3.0]), n_chars=8)
    >>> [reduce_single(lp, r) for r in Reduction]
    [-4.0, -2.0, -0.5]
    """
    total = logprobs.total
    if reduction is Reduction.SUM:
        return total
    if reduction is Reduction.MEAN:
        return total / max(len(logprobs.token_ids), 1)
    return total / max(logprobs.n_chars, 1)
