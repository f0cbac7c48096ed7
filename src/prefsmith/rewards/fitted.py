"""Rewards fitted on scored pairs: a linear model over other scorers' rewards (``fitted:FILE``).

``prefsmith eval --fit ...`` (:mod:`prefsmith.evaluation.fit`) fits, on already-scored pairs,

* ``length:SCORER``: the scorer's reward minus a fitted penalty per character (or token);
* ``ensemble``: a weighted sum of several scorers' rewards, weights fitted;
* ``average``: the mean of the scorers' standardized rewards, one fitted scale;
* ``calibration:SCORER``: the scorer's reward divided by a fitted temperature ``T``;

and writes them to ``fit.json``. Every model is linear and in logit units::

    reward(y) = sum_j weights[j] * reward_j(y) + length_weight * length(y)
    P(chosen preferred) = sigmoid(reward(chosen) - reward(rejected))

:class:`FittedReward` applies one to new data: it scores with each component scorer and
combines; ``score`` then writes ``p_chosen`` next to the margin. ``FILE`` may also name a fit
that ships with prefsmith (:func:`shipped_fits`): ``fitted:rewardbench-dev-qwen15-length``,
the best held-out configuration measured on RewardBench dev with the packaged models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from prefsmith.data.io import load_json_file
from prefsmith.data.messages import Message
from prefsmith.data.rows import ScoringItem
from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.base import ItemRewards, Reward, ScoredResponse

#: How a response's length is counted for a length penalty.
LENGTH_UNITS = ("chars", "tokens")


@dataclass(frozen=True)
class FittedModel:
    """A linear combination of scorers' rewards, in logit units.

    Attributes:
        name: ``length:SCORER``, ``ensemble``, ``average``, ``calibration:SCORER`` or
            ``routed``.
        method: ``length``, ``ensemble``, ``average``, ``calibration`` or ``routed``.
        scorers: Component scorer specs, in the order of ``weights``.
        weights: Weight of each scorer's raw reward.
        length_weight: Weight of the response length (negative: a penalty); 0 without one.
        length_unit: ``chars`` (Unicode characters) or ``tokens`` (the first scorer's strong
            model's response tokens).
        scales: Root mean square of each feature (the scorers' margins, then the length
            difference) on the fitting rows; ``weights * scales`` are the standardized weights.
        extra: Readable derived values (``temperature``, ``penalty_per_unit``, ...); a
            ``routed`` model's ``router`` and ``domains`` (how rows are given a domain).
        routes: ``routed`` models: per domain, its own ``weights`` and ``length_weight`` (and
            the ``pairs`` it was fitted on); a domain without an entry uses ``weights`` and
            ``length_weight`` above, fitted on all rows.
    """

    name: str
    method: str
    scorers: tuple[str, ...]
    weights: tuple[float, ...]
    length_weight: float = 0.0
    length_unit: str = "chars"
    scales: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def coefficients(self, domain: str | None = None) -> tuple[tuple[float, ...], float]:
        """The scorers' weights and the length weight for a response of ``domain``.

        >>> m = FittedModel("routed", "routed", ("a",), (1.0,), 0.0,
        ...                 routes={"code": {"weights": [3.0], "length_weight": -0.5}})
        >>> m.coefficients("code"), m.coefficients("chat"), m.coefficients()
        (((3.0,), -0.5), ((1.0,), 0.0), ((1.0,), 0.0))
        """
        route = self.routes.get(domain) if domain is not None else None
        if route is None:
            return self.weights, self.length_weight
        return tuple(float(w) for w in route["weights"]), float(route["length_weight"])

    def reward(
        self, rewards: Sequence[float], length: float = 0.0, domain: str | None = None
    ) -> float:
        """The combined reward of one response from its component rewards, length and domain
        (``routed`` models).

        >>> m = FittedModel("length:a", "length", ("a",), (2.0,), -0.5)
        >>> m.reward([1.5], length=4)
        1.0
        """
        weights, length_weight = self.coefficients(domain)
        total = sum(w * r for w, r in zip(weights, rewards, strict=True))
        return total + length_weight * length

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["scorers"], out["weights"], out["scales"] = (
            list(self.scorers),
            list(self.weights),
            list(self.scales),
        )
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FittedModel:
        """Rebuild a model from :meth:`to_json` (extra keys in ``data`` are ignored).

        >>> import json
        >>> m = FittedModel("calibration:a", "calibration", ("a",), (0.5,), extra={"T": 2})
        >>> FittedModel.from_json(json.loads(json.dumps(m.to_json()))) == m
        True
        """
        return cls(
            name=str(data["name"]),
            method=str(data["method"]),
            scorers=tuple(data["scorers"]),
            weights=tuple(float(w) for w in data["weights"]),
            length_weight=float(data.get("length_weight", 0.0)),
            length_unit=str(data.get("length_unit", "chars")),
            scales=tuple(float(s) for s in data.get("scales", ())),
            extra=dict(data.get("extra", {})),
            routes={str(k): dict(v) for k, v in (data.get("routes") or {}).items()},
        )


def shipped_fits() -> dict[str, Path]:
    """Fits that ship with prefsmith (``resources/fits``), by name.

    >>> sorted(shipped_fits())
    ['rewardbench-dev-qwen15-ensemble', 'rewardbench-dev-qwen15-length']
    """
    folder = Path(str(files("prefsmith").joinpath("resources/fits")))
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def fit_file(source: str | Path) -> Path:
    """The ``fit.json`` named by ``source``: a file, or the name of a shipped fit.

    >>> fit_file("rewardbench-dev-qwen15-length").name
    'rewardbench-dev-qwen15-length.json'
    >>> fit_file("no/such/fit.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no fit file no/such/fit.json, and no shipped fit of that name (shipped: ...
    """
    path = Path(source)
    if path.is_file():
        return path
    shipped = shipped_fits()
    if str(source) in shipped:
        return shipped[str(source)]
    raise FileNotFoundError(
        f"no fit file {source}, and no shipped fit of that name (shipped:"
        f" {', '.join(shipped)}); write one with `prefsmith eval --fit ...`"
    )


def load_fitted_model(path: str | Path, name: str | None = None) -> FittedModel:
    """One model of a ``fit.json`` (or shipped fit): ``name``, or the file's ``best``.

    ``best`` is the model with the best held-out overall accuracy. A file that is not JSON
    raises :class:`~prefsmith.data.io.BadFileError` naming its line and column.

    >>> load_fitted_model("rewardbench-dev-qwen15-ensemble").scorers[-1]
    'contrast:qwen2.5-coder-1.5b-instruct:sum'
    """
    source = fit_file(path)
    data = load_json_file(source)
    entries = data.get("models", []) if isinstance(data, dict) else None
    named = isinstance(entries, list) and all(isinstance(m, dict) and "name" in m for m in entries)
    if not named:
        raise ValueError(
            f'{source}: not a fit file (expected {{"models": [{{"name": ...}}, ...]}});'
            " write one with `prefsmith eval --fit ...`"
        )
    models = {m["name"]: m for m in entries}
    if not models:
        raise ValueError(f"{path}: no fitted models (write one with `prefsmith eval --fit ...`)")
    chosen = name or data.get("best") or next(iter(models))
    if chosen not in models:
        raise ValueError(f"{path}: no fitted model {chosen!r}; it has {', '.join(models)}")
    try:
        return FittedModel.from_json(models[chosen])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{source}: fitted model {chosen!r} is incomplete or malformed"
            f" ({type(err).__name__}: {err})"
        ) from None


class FittedReward(Reward):
    """A :class:`FittedModel` applied: score with every component, then combine.

    Args:
        model: The fitted model.
        parts: The component rewards, one per ``model.scorers`` entry, in order.
        source: The spec that named it (``fitted:FILE#NAME``), used as the reward's name.

    >>> from prefsmith.rewards.density_ratio import LogProbReward
    >>> from prefsmith.testing import tiny_backend
    >>> part = LogProbReward(tiny_backend(seed=0), "sum")
    >>> model = FittedModel("length:x", "length", (part.name,), (1.0,), -0.1)
    >>> reward = FittedReward(model, [part])
    >>> row = reward.score([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])[0]
    >>> plain = part.score([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])[0]
    >>> abs(row["reward_margin"] - (plain["reward_margin"] - 0.1 * 3)) < 1e-9
    True
    >>> 0 < row["p_chosen"] < 1
    True
    """

    kind = "fitted"
    calibrated = True

    def __init__(self, model: FittedModel, parts: Sequence[Reward], source: str = "") -> None:
        if len(parts) != len(model.scorers):
            raise ValueError(f"{model.name} needs {len(model.scorers)} scorers, got {len(parts)}")
        if model.length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {LENGTH_UNITS}")
        self.model = model
        self.parts = list(parts)
        self.source = source or f"fitted:<memory>#{model.name}"
        self.strong = getattr(self.parts[0], "strong", None)
        self._router: Any = None

    def domains_of(self, contexts: Sequence[Sequence[Message]]) -> list[str | None]:
        """The domain of each context (its last user turn) under a ``routed`` model's router;
        ``None`` for other models."""
        if self.model.method != "routed":
            return [None] * len(contexts)
        from prefsmith.routing.domains import load_domains
        from prefsmith.routing.routers import last_user_text, make_router

        if self._router is None:
            router, domains = self.model.extra["router"], self.model.extra["domains"]
            self._router = make_router(router, load_domains(domains))
        routes = self._router.route([last_user_text(c) for c in contexts])
        return [r.domain for r in routes]

    @property
    def name(self) -> str:
        return self.source

    @property
    def passes(self) -> int:
        return sum(p.passes for p in self.parts)

    def tokenizers(self) -> tuple[Any, Any | None]:
        return self.parts[0].tokenizers()

    def _length(self, response: str, scored: ScoredResponse) -> float:
        if self.model.length_weight == 0.0:
            return 0.0
        if self.model.length_unit == "tokens":
            return float(len(scored.strong.token_ids))
        return float(len(response))

    def score_items(
        self, items: Sequence[ScoringItem], advance: Callable[[float], None] | None = None
    ) -> list[ItemRewards]:
        share = [p.passes / max(self.passes, 1) for p in self.parts]
        results = []
        for part, weight in zip(self.parts, share, strict=True):

            def step(k: float, weight: float = weight) -> None:
                if advance is not None:
                    advance(k * weight)

            results.append(part.score_items(items, step))
        fields: list[dict[str, Any]] = [{} for _ in items]
        for result in results:
            for extra, item_rewards in zip(fields, result, strict=True):
                extra.update(item_rewards.fields)
        scored = [[s for r in result for s in r.responses] for result in results]
        responses = [response for item in items for response in item.responses]
        item_domains = self.domains_of([item.context for item in items])
        domains = [d for item, d in zip(items, item_domains, strict=True) for _ in item.responses]
        if self.model.method == "routed":
            for extra, domain in zip(fields, item_domains, strict=True):
                extra["fit_domain"] = domain
        return self.group(items, fields, self._combine(scored, responses, domains))

    def score_requests(
        self, requests: Sequence[ScoreRequest], on_progress: Callable[[int], None] | None = None
    ) -> list[ScoredResponse]:
        scored = [p.score_requests(requests, on_progress) for p in self.parts]
        domains = self.domains_of([r.messages for r in requests])
        return self._combine(scored, [r.response for r in requests], domains)

    def _combine(
        self,
        scored: Sequence[Sequence[ScoredResponse]],
        responses: Sequence[str],
        domains: Sequence[str | None],
    ) -> list[ScoredResponse]:
        """Each response's fitted reward from its parts' rewards (``scored[part][response]``)
        and its domain; the log-probs shown with it are the first part's."""
        out = []
        for k, (response, domain) in enumerate(zip(responses, domains, strict=True)):
            first = scored[0][k]
            values = [part[k].reward for part in scored]
            reward = self.model.reward(values, self._length(response, first), domain)
            out.append(ScoredResponse(reward, first.strong, first.weak))
        return out

    def settings(self) -> dict[str, Any]:
        parts = [p.settings() for p in self.parts]
        settings: dict[str, Any] = {
            "scorer": self.name,
            "kind": self.kind,
            "reduction": "fitted",
            "model": self.model.to_json(),
            "parts": parts,
        }
        for role in ("strong", "weak"):
            if role in parts[0]:
                settings[role] = parts[0][role]
        return settings
