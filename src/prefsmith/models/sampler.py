"""Seeded token sampling: each row draws from its own generator, so a sample does not depend
on the batch it was generated in (used by the ``hf`` engine)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def nucleus_choice(probs: Any, uniforms: Any, top_p: float, candidates: int = 1024) -> Any:
    """Pick one token per row by inverse-CDF sampling from the top-p nucleus of ``probs``.

    ``uniforms`` holds one number in [0, 1) per row, so the choice is a pure function of a
    row's probabilities and its number. With ``top_p < 1`` the nucleus is taken in order of
    decreasing probability: from the ``candidates`` most likely tokens when they already hold
    ``top_p`` of the mass (the usual case, and much cheaper than sorting the vocabulary), else
    from a full sort of that row. With ``top_p = 1`` tokens are taken in vocabulary order.

    >>> import torch
    >>> p = torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]], dtype=torch.float64)
    >>> nucleus_choice(p, torch.tensor([0.0, 0.99], dtype=torch.float64), 1.0).tolist()
    [0, 2]
    >>> nucleus_choice(p, torch.tensor([0.0, 0.99], dtype=torch.float64), 0.5).tolist()
    [1, 1]
    >>> nucleus_choice(p, torch.tensor([0.7, 0.99], dtype=torch.float64), 0.8).tolist()
    [2, 2]
    >>> nucleus_choice(p, torch.tensor([0.7, 0.99], dtype=torch.float64), 0.8, candidates=1)
    tensor([2, 2])
    """
    import torch

    if top_p >= 1:
        return _inverse_cdf(probs, uniforms)
    k = min(candidates, probs.shape[-1])
    top, order = probs.topk(k, dim=-1)
    complete = top.sum(dim=-1) >= top_p  # no token past rank k can be in the nucleus
    chosen = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    if complete.any():
        rows = complete.nonzero().squeeze(-1)
        chosen[rows] = _nucleus_sorted(top[rows], order[rows], uniforms[rows], top_p)
    if not complete.all():
        rows = (~complete).nonzero().squeeze(-1)
        sorted_probs, full_order = torch.sort(probs[rows], dim=-1, descending=True, stable=True)
        chosen[rows] = _nucleus_sorted(sorted_probs, full_order, uniforms[rows], top_p)
    return chosen


def _inverse_cdf(probs: Any, uniforms: Any) -> Any:
    """Index where each row's cumulative mass first exceeds ``uniform * total``."""
    import torch

    cumulative = probs.cumsum(dim=-1)
    target = uniforms[:, None] * cumulative[:, -1:]
    position = torch.searchsorted(cumulative, target, right=True)
    return position.clamp(max=probs.shape[-1] - 1).squeeze(-1)


def _nucleus_sorted(sorted_probs: Any, order: Any, uniforms: Any, top_p: float) -> Any:
    """Nucleus sampling given probabilities sorted in decreasing order and their token ids."""
    import torch

    # Keep a token when the mass before it is below top_p: the smallest set reaching top_p.
    keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    keep[:, 0] = True
    kept = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    position = _inverse_cdf(kept, uniforms)
    # Never land on a token outside the nucleus (possible only through rounding).
    position = torch.minimum(position, keep.sum(dim=-1) - 1)
    return order.gather(-1, position[:, None]).squeeze(-1)


class SeededSampler:
    """A ``transformers`` logits processor that samples each row with its own generator.

    It returns scores that are ``-inf`` except at the chosen token, and ``generate`` runs in
    greedy mode, so the token it picks is exactly the one drawn here.

    Attributes:
        generators: One ``torch.Generator`` per row of the batch.
        temperature: Softmax temperature (``0``: argmax).
        top_p: Nucleus mass.
        record_logprobs: Keep ``log p`` of every chosen token under the unmodified
            distribution (see :meth:`recorded_logprobs`).
    """

    def __init__(
        self,
        generators: Sequence[Any],
        temperature: float,
        top_p: float,
        record_logprobs: bool = False,
    ) -> None:
        self.generators = list(generators)
        self.temperature = temperature
        self.top_p = top_p
        self.record_logprobs = record_logprobs
        self._steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.double()
        if self.temperature == 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            uniforms = torch.cat(
                [torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]
            ).to(probs.device)
            chosen = nucleus_choice(probs, uniforms, self.top_p)
        if self.record_logprobs:
            picked = logits.gather(-1, chosen[:, None]).squeeze(-1)
            self._steps.append((picked - torch.logsumexp(logits, dim=-1)).cpu())
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out

    def recorded_logprobs(self) -> list[list[float]] | None:
        """Per row, ``log p`` of the token chosen at each step (``None`` unless recorded)."""
        import torch

        if not self.record_logprobs:
            return None
        if not self._steps:
            return [[] for _ in self.generators]
        return torch.stack(self._steps, dim=1).tolist()
