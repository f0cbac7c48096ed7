"""The ``score`` step: rows in, the same rows with rewards out (``prefsmith score``).

Input columns: one of the shapes of :mod:`prefsmith.data.rows` (``prompt``/``chosen``/
``rejected``, conversational pairs, or ``prompt``/``responses``); every other column is kept.

Output columns added:

* pairs: ``reward_chosen``, ``reward_rejected``, ``reward_margin`` (chosen minus rejected);
* candidates: ``rewards`` (one per response, in order);
* ``scored_with``: scorer spec, models, reduction and template hashes;
* ``response_tokens``: ``{name: [strong count, weak count]}``;
* ``truncated``: ``{name: None | "prompt" | "response"}``: whether (and what) truncation was
  needed to fit ``max_length``;
* ``token_logprobs`` (with ``save_token_logprobs``): per response, each model's token ids, the
  decoded text of each token and its log-prob;
* with a customization: ``domain`` and ``router_confidence``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from prefsmith.data.rows import ScoringItem, to_scoring_item
from prefsmith.data.runner import Advance, Outcome, RowItem, Step
from prefsmith.models.encoding import token_pieces
from prefsmith.rewards.base import ItemRewards, Reward, ScoredResponse


def short_hash(text: str) -> str:
    """First 12 hex digits of the SHA-256 of ``text``.

    >>> short_hash("abc")
    'ba7816bf8f01'
    """
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def scored_with(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The short record of a reward's settings stored in every row (templates by hash)."""
    out: dict[str, Any] = {"scorer": settings["scorer"], "reduction": settings["reduction"]}
    for role in ("strong", "weak"):
        if role in settings:
            out[role] = settings[role]["name"]
            out[f"{role}_template"] = short_hash(str(settings[role]["template"]))
    if "shared_tokenizer" in settings:
        out["shared_tokenizer"] = settings["shared_tokenizer"]
    if "customization" in settings:
        out["customization"] = settings["customization"]
    return out


class ScoreStep(Step):
    """Score every response of a row with a :class:`~prefsmith.rewards.base.Reward`.

    Args:
        reward: The reward (density ratio, log-prob, DPO; customized or not).
        system_prompt: System turn for both models (rows with their own keep theirs).
        save_token_logprobs: Store per-token log-probs of both models in each row.
    """

    name = "score"
    input_columns = "prompt + chosen/rejected (or messages, or prompt + responses)"
    output_columns = (
        "reward_chosen",
        "reward_rejected",
        "reward_margin",
        "rewards",
        "scored_with",
        "response_tokens",
        "truncated",
        "token_logprobs",
    )

    def __init__(
        self, reward: Reward, system_prompt: str | None = None, save_token_logprobs: bool = False
    ) -> None:
        self.reward = reward
        self.system_prompt = system_prompt
        self.save_token_logprobs = save_token_logprobs
        self._scored_with: dict[str, Any] | None = None

    def prepare(self, row: Mapping[str, Any]) -> ScoringItem:
        return to_scoring_item(row, self.system_prompt)

    def settings(self) -> dict[str, Any]:
        return {
            "reward": self.reward.settings(),
            "system_prompt": self.system_prompt,
            "save_token_logprobs": self.save_token_logprobs,
        }

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        if self._scored_with is None:
            self._scored_with = scored_with(self.reward.settings())
        scored = self.reward.score_items([b.item for b in batch], advance)
        return [
            Outcome([self.output_row(b.row, b.item, rewards)])
            for b, rewards in zip(batch, scored, strict=True)
        ]

    def output_row(
        self, row: Mapping[str, Any], item: ScoringItem, rewards: ItemRewards
    ) -> dict[str, Any]:
        """The input row plus its rewards and bookkeeping (see the module docstring)."""
        out = dict(row)
        values = [r.reward for r in rewards.responses]
        if item.kind == "pair":
            out["reward_chosen"], out["reward_rejected"] = values
            out["reward_margin"] = values[0] - values[1]
        else:
            out["rewards"] = values
        out["scored_with"] = self._scored_with
        named = list(zip(item.names, rewards.responses, strict=True))
        out["response_tokens"] = {name: _token_counts(r) for name, r in named}
        out["truncated"] = {name: r.truncated for name, r in named}
        if self.save_token_logprobs:
            tokenizers = self.reward.tokenizers()
            out["token_logprobs"] = {name: token_detail(r, tokenizers) for name, r in named}
        out.update(rewards.fields)
        return out


def _token_counts(scored: ScoredResponse) -> list[int]:
    counts = [len(scored.strong.token_ids)]
    if scored.weak is not None:
        counts.append(len(scored.weak.token_ids))
    return counts


def token_detail(scored: ScoredResponse, tokenizers: tuple[Any, Any | None]) -> dict[str, Any]:
    """Each model's token ids, decoded token texts and full-precision log-probs."""
    detail: dict[str, Any] = {}
    sides = [("strong", scored.strong, tokenizers[0]), ("weak", scored.weak, tokenizers[1])]
    for side, lp, tokenizer in sides:
        if lp is None:
            continue
        ids = list(lp.token_ids)
        detail[f"{side}_ids"] = ids
        if tokenizer is not None:
            detail[f"{side}_tokens"] = token_pieces(tokenizer, ids)
        detail[f"{side}_logprobs"] = [float(x) for x in lp.logprobs]
    return detail
