"""Scorer specs: one string names a reward, e.g. ``density-ratio:STRONG,WEAK:sum``.

Grammar: ``KIND[:MODELS][:OPTION]``

* ``density-ratio[:STRONG,WEAK][:sum|mean|mean-char]``: the density ratio;
* ``logprob[:MODEL][:sum|mean|mean-char]``: one model's own log-likelihood;
* ``contrast[:MODEL][:sum|mean|mean-char][+empty]``: one model under a positive over the same
  model under a negative system prompt (``+empty``: no system prompt on the weak side); see
  :mod:`prefsmith.rewards.contrast`;
* ``dpo[:POLICY,REFERENCE][:BETA]``: the DPO implicit reward;
* ``rm:PATH``: a sequence-classification reward model's logit (e.g. ``prefsmith train --method
  rm``'s ``final/`` folder); everything after ``rm:`` is the path.

Models left out are the run's ``--strong`` / ``--weak`` (by default the embedded pair). Strong
and weak are separated by a comma; ``STRONG/WEAK`` also works when each name has no slash.
:func:`parse_scorer` returns the :class:`~prefsmith.rewards.base.Reward`; its ``name`` is the
spec written out in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.models.pool import ModelPool
from prefsmith.rewards.base import Reduction
from prefsmith.rewards.density_ratio import DensityRatioReward, DPOReward, LogProbReward
from prefsmith.rewards.score import Reward

KINDS = ("density-ratio", "logprob", "contrast", "dpo", "rm", "fitted")


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec.

    Attributes:
        kind: ``density-ratio``, ``logprob``, ``contrast``, ``dpo``, ``rm`` or ``fitted``.
        models: Strong and weak (or the one model of ``logprob``/``contrast``, the ``rm``
            folder, the ``fitted`` file).
        option: The reduction (``contrast``: with ``+empty`` or not), DPO's beta, the
            ``fitted`` model's name (empty for ``rm``).
    """

    kind: str
    models: tuple[str, ...]
    option: str

    @classmethod
    def parse(cls, text: str, strong: str = DEFAULT_STRONG, weak: str = DEFAULT_WEAK) -> ScorerSpec:
        """Parse ``text``; models left out are ``strong`` and ``weak``.

        >>> ScorerSpec.parse("density-ratio:mean-char").name
        'density-ratio:smollm2-135m-instruct,gemma3-270m:mean-char'
        >>> ScorerSpec.parse("dpo:org/policy,org/ref:0.5").models
        ('org/policy', 'org/ref')
        >>> ScorerSpec.parse("density-ratio:a/b").models
        ('a', 'b')
        >>> ScorerSpec.parse("logprob:qwen:mean").name
        'logprob:qwen:mean'
        >>> ScorerSpec.parse("rm:runs/rm/final").name
        'rm:runs/rm/final'
        >>> ScorerSpec.parse("contrast:mean+empty").name
        'contrast:smollm2-135m-instruct:mean+empty'
        >>> ScorerSpec.parse("contrast:qwen").name
        'contrast:qwen:sum'
        >>> ScorerSpec.parse("fitted:runs/eval/fit.json#ensemble").name
        'fitted:runs/eval/fit.json#ensemble'
        >>> ScorerSpec.parse("ratio")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown scorer 'ratio'; choose from density-ratio, logprob, contrast, dpo, ...
        """
        kind, *rest = text.split(":")
        if kind not in KINDS:
            raise ValueError(f"unknown scorer {kind!r}; choose from {', '.join(KINDS)}")
        if kind == "fitted":
            path, _, name = ":".join(rest).partition("#")
            if not path:
                raise ValueError(f"{text!r}: give the fit file, e.g. fitted:runs/eval/fit.json")
            return cls(kind, (path,), name)
        if kind == "rm":
            path = ":".join(rest)
            if not path:
                raise ValueError(f"{text!r}: give the reward model's folder, e.g. rm:runs/rm/final")
            return cls(kind, (path,), "")
        models_text, option = "", ""
        if len(rest) == 1:
            (models_text, option) = ("", rest[0]) if _is_option(kind, rest[0]) else (rest[0], "")
        elif len(rest) >= 2:
            models_text, option = ":".join(rest[:-1]), rest[-1]
        option = option or ("0.1" if kind == "dpo" else "sum")
        if not _is_option(kind, option):
            what = "a beta, e.g. dpo:0.1" if kind == "dpo" else "sum, mean or mean-char"
            what += " (+empty)" if kind == "contrast" else ""
            raise ValueError(f"{text!r}: the last part must be {what}, not {option!r}")
        if kind in ("logprob", "contrast"):
            models = (models_text or strong,)
        else:
            models = _split_pair(models_text, text) if models_text else (strong, weak)
        return cls(kind, models, option)

    @property
    def name(self) -> str:
        """The spec written out in full."""
        if self.kind == "rm":
            return f"rm:{self.models[0]}"
        if self.kind == "fitted":
            return f"fitted:{self.models[0]}" + (f"#{self.option}" if self.option else "")
        return f"{self.kind}:{','.join(self.models)}:{self.option}"

    def build(
        self, pool: ModelPool | None = None, customization=None, contrast_prompts=None
    ) -> Reward:
        """The reward this spec names (models from ``pool``, loaded lazily).

        ``contrast_prompts`` (a prompts YAML file) replaces the shipped prompts of ``contrast``
        scorers, also inside a ``fitted`` file.
        """
        pool = pool or ModelPool()
        if self.kind == "fitted":
            from prefsmith.rewards.fitted import FittedReward, load_fitted_model

            model = load_fitted_model(self.models[0], self.option or None)
            parts = []
            for name in model.scorers:
                if name.endswith("+cdr") and customization is None:
                    raise ValueError(f"{name} in {self.models[0]} needs --domains/--router")
                plain = ScorerSpec.parse(name.removesuffix("+cdr"))
                custom = customization if name.endswith("+cdr") else None
                parts.append(plain.build(pool, custom, contrast_prompts))
            return FittedReward(model, parts, source=self.name)
        if self.kind == "contrast":
            from prefsmith.rewards.contrast import ContrastReward, parse_contrast_option

            reduction, negative = parse_contrast_option(self.option)
            return ContrastReward(
                self.models[0],
                reduction,
                negative,
                prompts=contrast_prompts,
                customization=customization,
                pool=pool,
            )
        if self.kind == "rm":
            if customization is not None:
                raise ValueError("rm: scorers read no context customization (--domains/--router)")
            from prefsmith.rewards.reward_model import RewardModelReward

            return RewardModelReward(self.models[0], pool.options)
        if self.kind == "logprob":
            return LogProbReward(
                self.models[0], self.option, customization=customization, pool=pool
            )
        if self.kind == "dpo":
            return DPOReward(
                *self.models, float(self.option), customization=customization, pool=pool
            )
        return DensityRatioReward(*self.models, self.option, customization=customization, pool=pool)


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


def _is_option(kind: str, text: str) -> bool:
    if kind == "dpo":
        try:
            float(text)
        except ValueError:
            return False
        return True
    if kind == "contrast":
        text = text.removesuffix("+empty")
    return text in {r.value for r in Reduction}


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
