"""Scorer specs: one string names a reward, e.g. ``density-ratio:STRONG,WEAK:sum``.

Grammar: ``KIND[:MODELS][:OPTION]``

* ``density-ratio[:STRONG,WEAK][:sum|mean|mean-char]``: the density ratio;
* ``logprob[:MODEL][:sum|mean|mean-char]``: one model's own log-likelihood;
* ``contrast[:MODEL][:sum|mean|mean-char][+empty]``: one model under a positive over the same
  model under a negative system prompt (``+empty``: no system prompt on the weak side); see
  :mod:`prefsmith.rewards.contrast`;
* ``dpo[:POLICY,REFERENCE][:BETA]``: the DPO implicit reward;
* ``density-ratio`` and ``dpo`` options may end in ``+same-text`` (``density-ratio:sum+same-text``)
  or ``+own``: how a pair with different tokenizers renders the conversation (see
  :mod:`prefsmith.rewards.density_ratio`); left out, the run's ``rendering`` (``own`` by
  default). A reward's name says ``+same-text`` when it scores that way;
* ``rm:PATH``: a sequence-classification reward model's logit (e.g. ``prefsmith train --method
  rm``'s ``final/`` folder); everything after ``rm:`` is the path.

Models left out are the run's ``--strong`` / ``--weak`` (by default the embedded pair). Strong
and weak are separated by a comma; ``STRONG/WEAK`` also works when each name has no slash.
:func:`parse_scorer` returns the :class:`~prefsmith.rewards.base.Reward`; its ``name`` is the
spec written out in full. :data:`SCORERS` says how each kind is read and built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from prefsmith.defaults import DEFAULT_RENDERING, DEFAULT_STRONG, DEFAULT_WEAK, RENDERINGS
from prefsmith.models.pool import ModelPool
from prefsmith.rewards.base import Reward
from prefsmith.rewards.density_ratio import DensityRatioReward, DPOReward, LogProbReward
from prefsmith.rewards.reduction import Reduction


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec.

    Attributes:
        kind: ``density-ratio``, ``logprob``, ``contrast``, ``dpo``, ``rm`` or ``fitted``.
        models: Strong and weak (or the one model of ``logprob``/``contrast``, the ``rm``
            folder, the ``fitted`` file).
        option: The reduction (``contrast``: with ``+empty`` or not), DPO's beta, the
            ``fitted`` model's name (empty for ``rm``).
        rendering: ``own`` or ``same-text`` for a pair with different tokenizers
            (``density-ratio``, ``dpo``; the spec's ``+same-text``/``+own``); ``None``: not
            said (the run's, see :meth:`with_rendering`; ``own`` when built as it is).
    """

    kind: str
    models: tuple[str, ...]
    option: str
    rendering: str | None = None

    @classmethod
    def parse(cls, text: str, strong: str = DEFAULT_STRONG, weak: str = DEFAULT_WEAK) -> ScorerSpec:
        """Parse ``text``; models left out are ``strong`` and ``weak``.

        >>> for text in ["density-ratio:mean-char", "logprob:qwen:mean", "rm:runs/rm/final",
        ...              "contrast:mean+empty", "contrast:qwen", "dpo:a,b:0.5+same-text",
        ...              "fitted:runs/eval/fit.json#ensemble"]:
        ...     print(ScorerSpec.parse(text).name)
        density-ratio:smollm2-135m-instruct,gemma3-270m:mean-char
        logprob:qwen:mean
        rm:runs/rm/final
        contrast:smollm2-135m-instruct:mean+empty
        contrast:qwen:sum
        dpo:a,b:0.5+same-text
        fitted:runs/eval/fit.json#ensemble
        >>> pairs = ("dpo:org/policy,org/ref:0.5", "density-ratio:a/b")
        >>> [ScorerSpec.parse(t).models for t in pairs]
        [('org/policy', 'org/ref'), ('a', 'b')]
        >>> ScorerSpec.parse("density-ratio:a,b:mean-char+same-text").rendering
        'same-text'
        >>> ScorerSpec.parse("density-ratio:a,b:same-text")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: 'density-ratio:a,b:same-text': the last part must be sum, mean or mean-char...
        >>> ScorerSpec.parse("ratio")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown scorer 'ratio'; choose from density-ratio, logprob, contrast, dpo, ...
        """
        kind, *rest = text.split(":")
        if kind not in SCORERS:
            raise ValueError(f"unknown scorer {kind!r}; choose from {', '.join(KINDS)}")
        how = SCORERS[kind]
        if how.models == "path":
            path, name = ":".join(rest), ""
            if how.named:
                path, _, name = path.partition("#")
            if not path:
                raise ValueError(f"{text!r}: give {how.option}")
            return cls(kind, (path,), name)
        models_text, option = "", ""
        if len(rest) == 1:
            is_option = how.accepts(how.split_rendering(rest[0])[0])
            (models_text, option) = ("", rest[0]) if is_option else (rest[0], "")
        elif len(rest) >= 2:
            models_text, option = ":".join(rest[:-1]), rest[-1]
        option, rendering = how.split_rendering(option)
        option = option or how.default
        if not how.accepts(option):
            wanted = how.option + (" (+same-text)" if how.renders else "")
            raise ValueError(f"{text!r}: the last part must be {wanted}, not {option!r}")
        if how.models == "one":
            models = (models_text or strong,)
        else:
            models = _split_pair(models_text, text) if models_text else (strong, weak)
        return cls(kind, models, option, rendering)

    def with_rendering(self, rendering: str | None) -> ScorerSpec:
        """This spec with ``rendering`` where the spec says none (and its kind has one).

        >>> ScorerSpec.parse("density-ratio:sum").with_rendering("same-text").name
        'density-ratio:smollm2-135m-instruct,gemma3-270m:sum+same-text'
        >>> ScorerSpec.parse("density-ratio:sum+own").with_rendering("same-text").rendering
        'own'
        >>> ScorerSpec.parse("logprob:sum").with_rendering("same-text").rendering is None
        True
        """
        if self.rendering is not None or not SCORERS[self.kind].renders:
            return self
        return replace(self, rendering=rendering)

    @property
    def name(self) -> str:
        """The spec written out in full (``+same-text`` when it renders that way)."""
        if SCORERS[self.kind].models == "path":
            return f"{self.kind}:{self.models[0]}" + (f"#{self.option}" if self.option else "")
        suffix = "+same-text" if self.rendering == "same-text" else ""
        return f"{self.kind}:{','.join(self.models)}:{self.option}{suffix}"

    def build(
        self, pool: ModelPool | None = None, customization=None, contrast_prompts=None
    ) -> Reward:
        """The reward this spec names (models from ``pool``, loaded lazily).

        ``contrast_prompts`` (a prompts YAML file) replaces the shipped prompts of ``contrast``
        scorers, also inside a ``fitted`` file.
        """
        return SCORERS[self.kind].build(self, pool or ModelPool(), customization, contrast_prompts)


def _is_reduction(text: str) -> bool:
    return text in {r.value for r in Reduction}


def _is_contrast_option(text: str) -> bool:
    return _is_reduction(text.removesuffix("+empty"))


def _is_beta(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_rendering(option: str) -> tuple[str, str | None]:
    """``sum+same-text`` -> (``sum``, ``same-text``); no suffix: (``option``, ``None``).

    >>> _split_rendering("sum+same-text"), _split_rendering("0.1+own"), _split_rendering("sum")
    (('sum', 'same-text'), ('0.1', 'own'), ('sum', None))
    """
    for rendering in RENDERINGS:
        if option.endswith(f"+{rendering}"):
            return option.removesuffix(f"+{rendering}"), rendering
    return option, None


def _rendering(spec: ScorerSpec) -> str:
    return spec.rendering or DEFAULT_RENDERING


def _density_ratio(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    return DensityRatioReward(
        *spec.models,
        spec.option,
        customization=customization,
        rendering=_rendering(spec),
        pool=pool,
    )


def _logprob(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    return LogProbReward(spec.models[0], spec.option, customization=customization, pool=pool)


def _contrast(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    from prefsmith.rewards.contrast import ContrastReward, parse_contrast_option

    reduction, negative = parse_contrast_option(spec.option)
    return ContrastReward(
        spec.models[0],
        reduction,
        negative,
        prompts=contrast_prompts,
        customization=customization,
        pool=pool,
    )


def _dpo(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    return DPOReward(
        *spec.models,
        float(spec.option),
        customization=customization,
        rendering=_rendering(spec),
        pool=pool,
    )


def _reward_model(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    if customization is not None:
        raise ValueError("rm: scorers read no context customization (--domains/--router)")
    from prefsmith.rewards.reward_model import RewardModelReward

    return RewardModelReward(spec.models[0], pool.options)


def _fitted(spec: ScorerSpec, pool: ModelPool, customization, contrast_prompts) -> Reward:
    from prefsmith.rewards.fitted import FittedReward, load_fitted_model

    model = load_fitted_model(spec.models[0], spec.option or None)
    parts = []
    for name in model.scorers:
        if name.endswith("+cdr") and customization is None:
            raise ValueError(f"{name} in {spec.models[0]} needs --domains/--router")
        plain = ScorerSpec.parse(name.removesuffix("+cdr"))
        custom = customization if name.endswith("+cdr") else None
        parts.append(plain.build(pool, custom, contrast_prompts))
    return FittedReward(model, parts, source=spec.name)


@dataclass(frozen=True)
class ScorerKind:
    """How one kind of scorer spec is read and built.

    Attributes:
        build: The reward of a parsed spec: ``(spec, pool, customization, contrast_prompts)``.
        models: ``pair`` (``STRONG,WEAK``, default the run's pair), ``one`` (``MODEL``, default
            the run's strong model) or ``path`` (everything after the kind is a file or folder).
        option: What the option is, for messages (``path`` kinds: what to give).
        accepts: Whether a text is a valid option (``pair``/``one`` kinds).
        default: The option when left out.
        named: ``path`` kinds: the path may end in ``#NAME``, kept as the option.
        renders: The option may end in ``+same-text``/``+own`` (a strong/weak pair's
            rendering, :attr:`ScorerSpec.rendering`).
    """

    build: Callable[[ScorerSpec, ModelPool, object, object], Reward]
    models: str = "pair"
    option: str = "sum, mean or mean-char"
    accepts: Callable[[str], bool] = _is_reduction
    default: str = "sum"
    named: bool = False
    renders: bool = False

    def split_rendering(self, option: str) -> tuple[str, str | None]:
        """The option without its rendering suffix, and the rendering (``None``: none)."""
        return _split_rendering(option) if self.renders else (option, None)


#: Every kind of scorer spec, in the order messages list them: adding a kind is one entry.
SCORERS: dict[str, ScorerKind] = {
    "density-ratio": ScorerKind(_density_ratio, renders=True),
    "logprob": ScorerKind(_logprob, models="one"),
    "contrast": ScorerKind(
        _contrast,
        models="one",
        option="sum, mean or mean-char (+empty)",
        accepts=_is_contrast_option,
    ),
    "dpo": ScorerKind(
        _dpo, option="a beta, e.g. dpo:0.1", accepts=_is_beta, default="0.1", renders=True
    ),
    "rm": ScorerKind(
        _reward_model, models="path", option="the reward model's folder, e.g. rm:runs/rm/final"
    ),
    "fitted": ScorerKind(
        _fitted, models="path", option="the fit file, e.g. fitted:runs/eval/fit.json", named=True
    ),
}
KINDS = tuple(SCORERS)


def parse_scorer(
    text: str,
    *,
    strong: str = DEFAULT_STRONG,
    weak: str = DEFAULT_WEAK,
    pool: ModelPool | None = None,
    customization=None,
    contrast_prompts=None,
) -> Reward:
    """The reward named by scorer spec ``text`` (see the module docstring).

    >>> from prefsmith.testing import tiny_model
    >>> reward = parse_scorer("logprob:mean", strong=tiny_model(seed=0))
    >>> reward.name == f"logprob:{tiny_model(seed=0)}:mean"
    True
    """
    return ScorerSpec.parse(text, strong, weak).build(pool, customization, contrast_prompts)


def _split_pair(text: str, spec: str) -> tuple[str, str]:
    """``STRONG,WEAK`` (or ``STRONG/WEAK`` when unambiguous) into two names."""
    if "," in text:
        strong, _, weak = text.partition(",")
    elif text.count("/") % 2 == 1:  # one slash per hub id, one between them
        parts = text.split("/")
        middle = len(parts) // 2
        strong, weak = "/".join(parts[:middle]), "/".join(parts[middle:])
    else:
        raise ValueError(f"{spec!r}: separate the strong and weak model with a comma")
    if not strong or not weak:
        raise ValueError(f"{spec!r}: give both a strong and a weak model")
    return strong, weak
