"""Contrastive-prompt density ratio from one model (``contrast:MODEL[:REDUCTION]``).

The "strong" side is the model under a system prompt that asks for the criteria (helpful,
honest, harmless, correct), the "weak" side the same model under a prompt that asks for the
opposite (or under no system prompt: ``negative="empty"``; a template that inserts a default
system turn, as SmolLM2's and Qwen's do, then uses its default)::

    r(x, y) = log p(y | positive, x) - log p(y | negative, x)

One model is loaded once; both sides tokenize the response identically, so the ratio is taken
token by token and every reduction (``sum``, ``mean``, ``mean-char``) is defined. Default
prompts: ``resources/contrast/prompts.yaml``. With a
:class:`~prefsmith.routing.customize.Customization` each prompt is routed to a domain: the
positive prompt is the domain's criteria (``system_prompt``), the negative one the file's
``domain_negative`` entry for that domain.

>>> from prefsmith.testing import tiny_backend
>>> reward = ContrastReward(tiny_backend(seed=0), "mean")
>>> row = reward.score([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])[0]
>>> reward.name.startswith("contrast:") and reward.name.endswith(":mean")
True
>>> sorted(k for k in row if k.startswith("reward_"))
['reward_chosen', 'reward_margin', 'reward_rejected']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefsmith.data.io import load_yaml_file
from prefsmith.data.messages import Message
from prefsmith.data.rows import ScoringItem
from prefsmith.defaults import DEFAULT_REDUCTION, DEFAULT_STRONG
from prefsmith.models.backend import LogProbBackend, ScoreRequest
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.base import ItemRewards, Reward, ScoredResponse, short_hash
from prefsmith.rewards.density_ratio import _model_settings, _options, reduce_ratio
from prefsmith.rewards.reduction import Reduction

if TYPE_CHECKING:
    from prefsmith.models.cache import LogProbCache
    from prefsmith.routing.customize import Customization

#: Weak-side choices: the opposite prompt, or no system prompt at all.
NEGATIVES = ("opposite", "empty")


@dataclass(frozen=True)
class ContrastPrompts:
    """The two system prompts of the contrast scorer.

    Attributes:
        positive: Asks for the criteria (helpful, honest, harmless, correct).
        negative: Asks for the opposite.
        domain_negative: Per-domain negative prompts (used with a domains file).
        source: Where the prompts came from (a file path, or ``<memory>``).
    """

    positive: str
    negative: str
    domain_negative: Mapping[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    def negative_for(self, domain: str | None) -> str:
        """The negative prompt for ``domain`` (the general one when it has none).

        >>> p = ContrastPrompts("good", "bad", {"math": "bad maths"})
        >>> p.negative_for("math"), p.negative_for("chat"), p.negative_for(None)
        ('bad maths', 'bad', 'bad')
        """
        return self.domain_negative.get(domain, self.negative) if domain else self.negative


def default_prompts_path() -> Path:
    """The shipped prompts file, ``resources/contrast/prompts.yaml``."""
    return Path(str(files("prefsmith").joinpath("resources/contrast/prompts.yaml")))


def load_contrast_prompts(path: str | Path | None = None) -> ContrastPrompts:
    """Load a prompts file (``None``: the shipped default); see the default file for the keys.

    Broken YAML raises :class:`~prefsmith.data.io.BadFileError` naming file, line and column.

    >>> prompts = load_contrast_prompts()
    >>> "helpful" in prompts.positive and "unhelpful" in prompts.negative
    True
    >>> sorted(prompts.domain_negative)
    ['chat', 'code', 'general', 'math', 'safety']
    """
    source = Path(path) if path is not None else default_prompts_path()
    data = load_yaml_file(source) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with positive/negative prompts")
    unknown = set(data) - {"version", "positive", "negative", "domain_negative"}
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}")
    for key in ("positive", "negative"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{source}: {key!r} must be a non-empty string")
    by_domain = data.get("domain_negative") or {}
    if not isinstance(by_domain, dict) or not all(isinstance(v, str) for v in by_domain.values()):
        raise ValueError(f"{source}: 'domain_negative' must map domain names to prompts")
    return ContrastPrompts(
        data["positive"].strip(),
        data["negative"].strip(),
        {str(k): v.strip() for k, v in by_domain.items()},
        str(source),
    )


def with_system(context: Sequence[Message], prompt: str | None) -> tuple[Message, ...]:
    """``context`` with ``prompt`` as its system turn (before a system turn it already has).

    >>> user = ({"role": "user", "content": "Hi"},)
    >>> [m["content"] for m in with_system(user, "Be kind.")]
    ['Be kind.', 'Hi']
    >>> own = ({"role": "system", "content": "Be brief."}, *user)
    >>> with_system(own, "Be kind.")[0]["content"]
    'Be kind.\\n\\nBe brief.'
    >>> with_system(user, None) == user
    True
    """
    messages = [dict(m) for m in context]
    if not prompt:
        return tuple(messages)
    if messages and messages[0]["role"] == "system":
        first = messages.pop(0)
        return ({"role": "system", "content": f"{prompt}\n\n{first['content']}"}, *messages)
    return ({"role": "system", "content": prompt}, *messages)


def parse_contrast_option(option: str) -> tuple[Reduction, str]:
    """``REDUCTION[+empty]`` into the reduction and the weak side (``opposite``/``empty``).

    >>> parse_contrast_option("mean+empty")
    (<Reduction.MEAN: 'mean'>, 'empty')
    >>> parse_contrast_option("sum")
    (<Reduction.SUM: 'sum'>, 'opposite')
    """
    reduction, _, negative = option.partition("+")
    negative = negative or "opposite"
    if negative not in NEGATIVES:
        raise ValueError(f"contrast option {option!r}: after '+' write one of {NEGATIVES}")
    return Reduction(reduction), negative


class ContrastReward(Reward):
    """One model under a positive over the same model under a negative system prompt.

    Args:
        model: The (aligned) model: packaged name, folder, ``.gguf`` file, hub id or backend.
        reduction: ``sum``, ``mean`` or ``mean-char`` (all exact: one tokenizer).
        negative: ``opposite`` (the negative prompt) or ``empty`` (no system prompt).
        prompts: A :class:`ContrastPrompts`, a prompts YAML file, or ``None`` (shipped).
        customization: Route prompts to domains; the domain's criteria become the positive
            prompt and ``domain_negative[domain]`` the negative one (exemplars are not used).
        options, cache, pool, model_options: as for
            :class:`~prefsmith.rewards.density_ratio.DensityRatioReward`.
    """

    kind = "contrast"

    def __init__(
        self,
        model: str | LogProbBackend = DEFAULT_STRONG,
        reduction: Reduction | str = DEFAULT_REDUCTION,
        negative: str = "opposite",
        *,
        prompts: ContrastPrompts | str | Path | None = None,
        customization: Customization | None = None,
        options: ModelOptions | None = None,
        cache: LogProbCache | None = None,
        pool: ModelPool | None = None,
        **model_options: Any,
    ) -> None:
        if negative not in NEGATIVES:
            raise ValueError(f"negative must be one of {', '.join(NEGATIVES)}, not {negative!r}")
        self.reduction = Reduction(reduction)
        self.negative = negative
        if not isinstance(prompts, ContrastPrompts):
            prompts = load_contrast_prompts(prompts)
        self.prompts = prompts
        self.customization = customization
        self.pool = pool or ModelPool(_options(options, model_options), cache)
        self.strong = self.pool.backend(model)

    @property
    def name(self) -> str:
        option = self.reduction.value + ("+empty" if self.negative == "empty" else "")
        suffix = "+cdr" if self.customization is not None else ""
        return f"contrast:{self.strong.name}:{option}{suffix}"

    @property
    def passes(self) -> int:
        return 2

    def tokenizers(self) -> tuple[Any, Any | None]:
        tokenizer = getattr(self.strong, "tokenizer", None)
        return tokenizer, tokenizer

    def contexts(
        self, context: Sequence[Message], domain: str | None = None
    ) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        """The positive and negative contexts of ``context`` (for ``domain``, if routed)."""
        positive = self.prompts.positive
        if domain is not None and self.customization is not None:
            positive = self.customization.domains[domain].system_prompt or positive
        negative = None if self.negative == "empty" else self.prompts.negative_for(domain)
        return with_system(context, positive), with_system(context, negative)

    def score_items(
        self, items: Sequence[ScoringItem], advance: Callable[[float], None] | None = None
    ) -> list[ItemRewards]:
        domains: Sequence[str | None] = [None] * len(items)
        fields: list[dict[str, Any]] = [{} for _ in items]
        if self.customization is not None:
            domains, fields = self.customization.route(items, self)
        positive, negative = [], []
        for item, domain in zip(items, domains, strict=True):
            pos, neg = self.contexts(item.context, domain)
            positive += [ScoreRequest(pos, r) for r in item.responses]
            negative += [ScoreRequest(neg, r) for r in item.responses]
        units = max(len(positive), 1) * self.passes / max(len(items), 1)

        def progress(n: int) -> None:
            if advance is not None:
                advance(n / units)

        return self.group(items, fields, self._ratios(positive, negative, progress))

    def score_requests(
        self, requests: Sequence[ScoreRequest], on_progress: Callable[[int], None] | None = None
    ) -> list[ScoredResponse]:
        pairs = [self.contexts(r.messages) for r in requests]
        positive = [ScoreRequest(p, r.response) for (p, _), r in zip(pairs, requests, strict=True)]
        negative = [ScoreRequest(n, r.response) for (_, n), r in zip(pairs, requests, strict=True)]
        return self._ratios(positive, negative, on_progress)

    def _ratios(
        self,
        positive: Sequence[ScoreRequest],
        negative: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None,
    ) -> list[ScoredResponse]:
        """Score both sides with the one model; the token-exact ratio of each response."""
        strong = self.strong.score(positive, on_progress)
        weak = self.strong.score(negative, on_progress)
        return [
            ScoredResponse(reduce_ratio(s, w, self.reduction, True), s, w)
            for s, w in zip(strong, weak, strict=True)
        ]

    def settings(self) -> dict[str, Any]:
        model = _model_settings(self.strong)
        settings: dict[str, Any] = {
            "scorer": self.name,
            "kind": self.kind,
            "strong": model,
            "weak": model,
            "reduction": self.reduction.value,
            "negative": self.negative,
            "prompts": {
                "source": self.prompts.source,
                "positive_sha": short_hash(self.prompts.positive),
                "negative_sha": short_hash(self.prompts.negative),
            },
            "shared_tokenizer": True,
            "max_length": self.pool.options.max_length,
        }
        if self.customization is not None:
            settings["customization"] = self.customization.settings()
        return settings
