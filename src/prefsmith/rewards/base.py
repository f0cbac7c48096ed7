"""The reward interface and the ``score`` step: rows in, the same rows with rewards out
(``prefsmith score``).

A :class:`Reward` scores the responses of :class:`~prefsmith.data.rows.ScoringItem` s into
:class:`ItemRewards` (one :class:`ScoredResponse` per response). It may carry a
:class:`~prefsmith.routing.customize.Customization` (the customized density ratio): each item's
context is then routed and rewritten before scoring, and the route is returned with the rewards.
:class:`ScoreStep` runs a reward over rows; :meth:`Reward.score` is the same on rows in memory,
which is why the two share this module. Reductions are in :mod:`prefsmith.rewards.reduction`,
the rewards themselves in :mod:`~prefsmith.rewards.density_ratio`,
:mod:`~prefsmith.rewards.contrast`, :mod:`~prefsmith.rewards.reward_model` and
:mod:`~prefsmith.rewards.fitted`, and scorer specs in :mod:`prefsmith.rewards.spec`.

Input columns: one of the shapes of :mod:`prefsmith.data.rows` (``prompt``/``chosen``/
``rejected``, conversational pairs, or ``prompt``/``responses``); every other column is kept.

Output columns added:

* pairs: ``reward_chosen``, ``reward_rejected``, ``reward_margin`` (chosen minus rejected);
* candidates: ``rewards`` (one per response, in order);
* K-wise rows (lists of correct ``chosen`` and incorrect ``rejected`` completions):
  ``rewards_chosen`` and ``rewards_rejected`` (one per completion, in order) and
  ``reward_margin``, the worst correct minus the best incorrect reward (above 0 when every
  correct completion outscores every incorrect one; see :mod:`prefsmith.evaluation.kwise`);
* ``p_chosen`` (pairs, with a calibrated reward such as ``fitted:FILE``): the probability that
  chosen is preferred, ``sigmoid(reward_margin)``;
* ``scored_with``: scorer spec, models, reduction and template hashes (with different
  tokenizers also the ``rendering``: ``own`` or ``same-text``);
* ``response_tokens``: ``{name: [strong count, weak count]}``;
* ``truncated``: ``{name: None | "prompt" | "response"}``: whether (and what) truncation was
  needed to fit ``max_length``;
* ``token_logprobs`` (with ``save_token_logprobs``): per response, each model's token ids, the
  decoded text of each token and its log-prob;
* with a customization: ``domain`` and ``router_confidence``.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefsmith.data.rows import SCORING_COLUMNS, ScoringItem, kwise_split, to_scoring_item
from prefsmith.data.runner import process_rows
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.models.backend import LogProbBackend, ResponseLogProbs, ScoreRequest
from prefsmith.models.encoding import token_pieces

if TYPE_CHECKING:
    from prefsmith.routing.customize import Customization


class IncompatibleModelsError(ValueError):
    """Models cannot be combined with the requested settings."""


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


class Reward(ABC):
    """A reward model made of language models' log-probs.

    Subclasses implement :meth:`score_requests` (rewards of responses in their contexts),
    :meth:`settings` and :attr:`name`; :meth:`score_items` adds the customization and
    :meth:`score` the row handling of the Python API.

    >>> from prefsmith.rewards.density_ratio import DensityRatioReward
    >>> from prefsmith.testing import tiny_backend
    >>> reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    >>> isinstance(reward, Reward), reward.passes
    (True, 2)
    """

    customization: Customization | None = None
    #: Whether margins are in logit units, so that ``sigmoid(margin)`` is P(chosen preferred)
    #: (``fitted:`` rewards); rows then carry ``p_chosen``.
    calibrated: bool = False

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

    def role_backends(self) -> dict[str, LogProbBackend]:
        """The backend of each model this reward runs, one scoring pass each (``strong``,
        ``weak``), so that a distributed runner can give each its own workers; empty when the
        reward scores in one piece."""
        return {}

    def model_roles(self) -> tuple[str, ...]:
        """The roles of :meth:`role_backends`, in the order their passes run."""
        return tuple(self.role_backends())

    def score_pass(
        self,
        role: str,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseLogProbs]:
        """The log-probs of ``requests`` under the model of ``role`` (see :meth:`model_roles`)."""
        backends = self.role_backends()
        if not backends:
            raise NotImplementedError(f"{self.name} scores in one piece")
        if role not in backends:
            raise ValueError(f"{self.name} has model roles {sorted(backends)}, not {role!r}")
        return backends[role].score(requests, on_progress)

    def combine(self, passes: Mapping[str, Sequence[ResponseLogProbs]]) -> list[ScoredResponse]:
        """The rewards of requests from each role's log-probs (:meth:`score_pass`)."""
        raise NotImplementedError(f"{self.name} scores in one piece")

    def requests_of(
        self, items: Sequence[ScoringItem]
    ) -> tuple[list[ScoringItem], list[dict[str, Any]], list[ScoreRequest]]:
        """Items (customized, with a customization), their extra fields, and one request per
        response of every item."""
        fields: list[dict[str, Any]] = [{} for _ in items]
        if self.customization is not None:
            items, fields = self.customization.apply(items, self)
        requests = [ScoreRequest(item.context, r) for item in items for r in item.responses]
        return list(items), fields, requests

    @staticmethod
    def group(
        items: Sequence[ScoringItem],
        fields: Sequence[dict[str, Any]],
        scored: Sequence[ScoredResponse],
    ) -> list[ItemRewards]:
        """The rewards of :meth:`requests_of`'s requests, back into one result per item."""
        out, offset = [], 0
        for item, extra in zip(items, fields, strict=True):
            out.append(ItemRewards(list(scored[offset : offset + len(item.responses)]), extra))
            offset += len(item.responses)
        return out

    def score_items(
        self, items: Sequence[ScoringItem], advance: Callable[[float], None] | None = None
    ) -> list[ItemRewards]:
        """Rewards of every response of ``items`` (customized first, with a customization).

        ``advance(k)`` is called with fractions of items as the model passes progress.
        """
        items, fields, requests = self.requests_of(items)
        units = max(len(requests), 1) * self.passes / max(len(items), 1)

        def progress(n: int) -> None:
            if advance is not None:
                advance(n / units)

        return self.group(items, fields, self.score_requests(requests, progress))

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
        ``source_index``; see :class:`ScoreStep`.
        """
        step = ScoreStep(self, system_prompt, save_token_logprobs)
        out = process_rows(rows, step, on_error=on_error, progress=progress)  # type: ignore[arg-type]
        if type(rows).__name__ == "Dataset" and hasattr(rows, "from_list"):
            return type(rows).from_list(out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


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
    if "rendering" in settings:
        out["rendering"] = settings["rendering"]
    if "customization" in settings:
        out["customization"] = settings["customization"]
    return out


class ScoreStep(Step):
    """Score every response of a row with a :class:`Reward`.

    Args:
        reward: The reward (density ratio, log-prob, DPO; customized or not).
        system_prompt: System turn for both models (rows with their own keep theirs).
        save_token_logprobs: Store per-token log-probs of both models in each row.

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.rewards.density_ratio import DensityRatioReward
    >>> from prefsmith.testing import tiny_backend
    >>> step = ScoreStep(DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1)))
    >>> rows = process_rows([{"prompt": "Pick one.", "responses": ["A", "B", "C"]}], step)
    >>> len(rows[0]["rewards"]), rows[0]["source_index"]
    (3, 0)
    """

    name = "score"
    input_columns = "prompt + chosen/rejected (or messages, or prompt + responses)"
    required_columns = SCORING_COLUMNS
    output_columns = (
        "reward_chosen",
        "reward_rejected",
        "reward_margin",
        "p_chosen",
        "rewards",
        "rewards_chosen",
        "rewards_rejected",
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
        return self.outcomes(batch, self.reward.score_items([b.item for b in batch], advance))

    def outcomes(self, batch: Sequence[RowItem], scored: Sequence[ItemRewards]) -> list[Outcome]:
        """One output row per input row, from the rewards of its responses."""
        if self._scored_with is None:
            self._scored_with = scored_with(self.reward.settings())
        return [
            Outcome([self.output_row(b.row, b.item, rewards)])
            for b, rewards in zip(batch, scored, strict=True)
        ]

    # The same work in model stages, for runners that give each model its own workers
    # (``RunOptions(split_models=True)``): begin -> run_model per role -> end.

    def model_stages(self) -> tuple[str, ...]:
        """The reward's models, one stage each (empty: the step runs in one piece)."""
        return self.reward.model_roles()

    def begin(self, batch: Sequence[RowItem]) -> dict[str, Any]:
        """The state of a chunk before any model ran: its (customized) items and requests."""
        items, fields, requests = self.reward.requests_of([b.item for b in batch])
        return {"items": items, "fields": fields, "requests": requests, "passes": {}}

    def run_model(self, role: str, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with the log-probs of the model of ``role``."""
        state["passes"][role] = self.reward.score_pass(role, state["requests"])
        return state

    def end(self, batch: Sequence[RowItem], state: dict[str, Any]) -> list[Outcome]:
        """The chunk's outcomes once every model ran."""
        scored = self.reward.combine(state["passes"])
        return self.outcomes(batch, self.reward.group(state["items"], state["fields"], scored))

    def output_row(
        self, row: Mapping[str, Any], item: ScoringItem, rewards: ItemRewards
    ) -> dict[str, Any]:
        """The input row plus its rewards and bookkeeping (see the module docstring)."""
        out = dict(row)
        values = [r.reward for r in rewards.responses]
        if item.kind == "pair":
            out["reward_chosen"], out["reward_rejected"] = values
            out["reward_margin"] = values[0] - values[1]
            if self.reward.calibrated:
                out["p_chosen"] = sigmoid(out["reward_margin"])
        elif item.kind == "kwise":
            k = kwise_split(item.names)
            out["rewards_chosen"], out["rewards_rejected"] = values[:k], values[k:]
            out["reward_margin"] = min(values[:k]) - max(values[k:])
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
