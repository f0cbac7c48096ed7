"""Density-ratio reward r(x, y) = log p_strong(y | x) - log p_weak(y | x), and one model's log-prob.

With a shared tokenizer the reward is summed token by token over the response tokens. With
different tokenizers each model scores its own tokenization, so ``sum`` is the log-ratio of two
string probabilities; a per-token mean is then undefined (the token counts differ) and is
refused in favour of ``mean-char``, which divides by the number of Unicode characters of the
response.

Which strings, with different tokenizers, is the ``rendering``: ``own`` (the default) renders
the conversation with each model's own chat template (a base weak model without one gets the
plain ``User:``/``Assistant:`` template), so the ratio also holds a term for the two templates;
``same-text`` gives the weak model the strong model's rendered text (its special-token markers
as plain text), so both models score the same response characters after the same prompt
characters (:meth:`~prefsmith.models.backend.EngineBackend.same_text_as`). With a shared
tokenizer both models already score the strong model's rendering token by token, so the
setting changes nothing there.

>>> from prefsmith.testing import tiny_backend
>>> reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
>>> scored = reward.score([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
>>> sorted(k for k in scored[0] if k.startswith("reward_"))
['reward_chosen', 'reward_margin', 'reward_rejected']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prefsmith.defaults import (
    DEFAULT_REDUCTION,
    DEFAULT_RENDERING,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    RENDERINGS,
)
from prefsmith.models.backend import LogProbBackend, ResponseLogProbs, ScoreRequest
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.base import IncompatibleModelsError, Reward, ScoredResponse
from prefsmith.rewards.reduction import Reduction, reduce_logprobs

if TYPE_CHECKING:
    from prefsmith.models.cache import LogProbCache
    from prefsmith.routing.customize import Customization

__all__ = [
    "DensityRatioReward",
    "IncompatibleModelsError",
    "LogProbReward",
    "Reduction",
    "reduce_ratio",
]


def reduce_ratio(
    strong: ResponseLogProbs, weak: ResponseLogProbs, reduction: Reduction, shared_tokens: bool
) -> float:
    """Reduce one response's strong and weak log-probs to a density-ratio reward.

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
    if Reduction(reduction) is Reduction.MEAN and not shared_tokens:
        raise IncompatibleModelsError(
            "--reduction mean divides by the number of response tokens, which differs"
            " between tokenizers; use --reduction mean-char or sum"
        )
    return reduce_logprobs(total, len(strong.token_ids), strong.n_chars, reduction)


def _model_settings(backend: LogProbBackend) -> dict[str, Any]:
    return {
        "name": backend.name,
        "fingerprint": backend.fingerprint,
        "dtype": backend.dtype,
        "template": backend.template,
    }


class ModelPassReward(Reward):
    """A reward made of one scoring pass per model role (``strong``, ``weak``, ...).

    Subclasses name their backends (:meth:`~prefsmith.rewards.base.Reward.role_backends`), the
    settings of their own (:meth:`option_settings`) and how passes combine (:meth:`combine`);
    scoring, the distributed runner's passes and the recorded settings follow from these.
    """

    pool: ModelPool

    def option_settings(self) -> dict[str, Any]:
        """The reward's own settings, recorded after the models'."""
        return {}

    @property
    def passes(self) -> int:
        return len(self.role_backends())

    def score_requests(
        self, requests: Sequence[ScoreRequest], on_progress: Callable[[int], None] | None = None
    ) -> list[ScoredResponse]:
        passes = {r: self.score_pass(r, requests, on_progress) for r in self.model_roles()}
        return self.combine(passes)

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"scorer": self.name, "kind": self.kind}
        settings |= {role: _model_settings(b) for role, b in self.role_backends().items()}
        settings |= self.option_settings()
        settings["max_length"] = self.pool.options.max_length
        if self.customization is not None:
            settings["customization"] = self.customization.settings()
        return settings


class DensityRatioReward(ModelPassReward):
    """The density ratio of a strong over a weak model (Dr.SoW), optionally customized (CDR).

    Args:
        strong: Strong (better aligned) model: packaged name, folder, ``.gguf`` file, hub id,
            or a backend already built.
        weak: Weak (less aligned) model, likewise.
        reduction: ``sum``, ``mean`` (shared tokenizer only) or ``mean-char``.
        scale: Multiplies the reward (``beta`` of the DPO implicit reward; 1 otherwise).
        customization: Route prompts to domains and score in the domain's context (CDR).
        rendering: With different tokenizers, ``own`` (each model its own chat template) or
            ``same-text`` (the weak model scores the strong model's rendered text); see the
            module docstring. No effect with a shared tokenizer.
        options: How models load and batch; keyword arguments (``dtype="bfloat16"``, ...)
            override its fields.
        cache: Log-prob cache (SQLite) the models answer from first.
        pool: Share loaded models with other rewards.

    Strong and weak are checked before any weights load: the same model twice, or a per-token
    mean across tokenizers, raise :class:`IncompatibleModelsError`. With one tokenizer both
    models score the strong model's rendering token by token (a base weak model adopts the
    strong model's chat template, as in Dr.SoW), whatever ``rendering`` says. With different
    tokenizers the rendering is recorded in the settings (``rendering``).

    >>> from prefsmith.testing import tiny_backend
    >>> strong, weak = tiny_backend(seed=0), tiny_backend(seed=1, tokenizer="plain")
    >>> reward = DensityRatioReward(strong, weak, rendering="same-text")
    >>> reward.name.endswith(":sum+same-text"), reward.settings()["rendering"]
    (True, 'same-text')
    >>> weak.template == strong.template  # the weak backend itself is left as it was
    False
    """

    kind = "density-ratio"

    def __init__(
        self,
        strong: str | LogProbBackend = DEFAULT_STRONG,
        weak: str | LogProbBackend = DEFAULT_WEAK,
        reduction: Reduction | str = DEFAULT_REDUCTION,
        *,
        scale: float = 1.0,
        customization: Customization | None = None,
        rendering: str = DEFAULT_RENDERING,
        options: ModelOptions | None = None,
        cache: LogProbCache | None = None,
        pool: ModelPool | None = None,
        **model_options: Any,
    ) -> None:
        if rendering not in RENDERINGS:
            raise ValueError(f"rendering must be one of {', '.join(RENDERINGS)}, not {rendering!r}")
        self.reduction = Reduction(reduction)
        self.scale = scale
        self.customization = customization
        self.rendering = rendering
        if isinstance(strong, str) and strong == weak:
            raise IncompatibleModelsError(
                f"strong and weak are the same model ({strong}); every reward would be 0"
            )
        pool = pool or ModelPool(_options(options, model_options), cache)
        self.pool = pool
        self.strong = pool.backend(strong)
        self.weak = pool.backend(weak)
        check_compatible(self.strong, self.weak, self.reduction)
        self.shared_tokens = self.strong.tokenizer_fingerprint == self.weak.tokenizer_fingerprint
        if self.shared_tokens and self.weak.template != self.strong.template:
            self.weak.set_template(self.strong.template)
        elif not self.shared_tokens and rendering == "same-text":
            self.weak = self.weak.same_text_as(self.strong)

    @property
    def name(self) -> str:
        models = f"{self.strong.name},{self.weak.name}"
        option = f"{self.scale:g}" if self.kind == "dpo" else self.reduction.value
        option += "+same-text" if self.rendering == "same-text" else ""
        suffix = "+cdr" if self.customization is not None else ""
        return f"{self.kind}:{models}:{option}{suffix}"

    def role_backends(self) -> dict[str, LogProbBackend]:
        return {"strong": self.strong, "weak": self.weak}

    def tokenizers(self) -> tuple[Any, Any | None]:
        return getattr(self.strong, "tokenizer", None), getattr(self.weak, "tokenizer", None)

    def reward_of(self, strong: ResponseLogProbs, weak: ResponseLogProbs) -> float:
        """The reward of one response from its strong and weak log-probs."""
        return self.scale * reduce_ratio(strong, weak, self.reduction, self.shared_tokens)

    def combine(self, passes: Mapping[str, Sequence[ResponseLogProbs]]) -> list[ScoredResponse]:
        pairs = zip(passes["strong"], passes["weak"], strict=True)
        return [ScoredResponse(self.reward_of(s, w), s, w) for s, w in pairs]

    def option_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "reduction": self.reduction.value,
            "scale": self.scale,
            "shared_tokenizer": self.shared_tokens,
        }
        if not self.shared_tokens:  # one tokenizer: the strong rendering, token by token
            settings["rendering"] = self.rendering
        return settings


class DPOReward(DensityRatioReward):
    """The DPO implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``: a summed density
    ratio of the policy (strong) over the reference (weak), scaled by ``beta``.

    >>> from prefsmith.testing import tiny_backend
    >>> pair = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}]
    >>> policy, reference = tiny_backend(seed=0), tiny_backend(seed=1)
    >>> dpo = DPOReward(policy, reference, beta=0.1).score(pair)[0]["reward_margin"]
    >>> ratio = DensityRatioReward(policy, reference).score(pair)[0]["reward_margin"]
    >>> abs(dpo - 0.1 * ratio) < 1e-9
    True
    """

    kind = "dpo"

    def __init__(
        self,
        policy: str | LogProbBackend = DEFAULT_STRONG,
        reference: str | LogProbBackend = DEFAULT_WEAK,
        beta: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, reference, Reduction.SUM, scale=beta, **kwargs)


class LogProbReward(ModelPassReward):
    """One model's own (reference-free) log-likelihood of the response, reduced.

    Args:
        model: The model (name or backend).
        reduction: ``sum``, ``mean`` or ``mean-char``.
        customization, options, cache, pool, model_options: as for
            :class:`DensityRatioReward`.

    >>> from prefsmith.testing import tiny_backend
    >>> reward = LogProbReward(tiny_backend(seed=0), "mean")
    >>> row = reward.score([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])[0]
    >>> row["reward_chosen"] < 0 and row["scored_with"]["reduction"] == "mean"
    True
    """

    kind = "logprob"

    def __init__(
        self,
        model: str | LogProbBackend = DEFAULT_STRONG,
        reduction: Reduction | str = DEFAULT_REDUCTION,
        *,
        customization: Customization | None = None,
        options: ModelOptions | None = None,
        cache: LogProbCache | None = None,
        pool: ModelPool | None = None,
        **model_options: Any,
    ) -> None:
        self.reduction = Reduction(reduction)
        self.customization = customization
        self.pool = pool or ModelPool(_options(options, model_options), cache)
        self.strong = self.pool.backend(model)

    @property
    def name(self) -> str:
        suffix = "+cdr" if self.customization is not None else ""
        return f"logprob:{self.strong.name}:{self.reduction.value}{suffix}"

    def role_backends(self) -> dict[str, LogProbBackend]:
        return {"strong": self.strong}

    def tokenizers(self) -> tuple[Any, Any | None]:
        return getattr(self.strong, "tokenizer", None), None

    def reward_of(self, logprobs: ResponseLogProbs) -> float:
        """The reward of one response from its log-probs."""
        return reduce_logprobs(
            logprobs.total, len(logprobs.token_ids), logprobs.n_chars, self.reduction
        )

    def combine(self, passes: Mapping[str, Sequence[ResponseLogProbs]]) -> list[ScoredResponse]:
        return [ScoredResponse(self.reward_of(lp), lp) for lp in passes["strong"]]

    def option_settings(self) -> dict[str, Any]:
        return {"reduction": self.reduction.value}


def _options(options: ModelOptions | None, overrides: dict[str, Any]) -> ModelOptions:
    from dataclasses import replace

    return replace(options or ModelOptions(), **overrides)


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
