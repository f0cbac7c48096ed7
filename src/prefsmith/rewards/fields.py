"""The reward settings every scoring stage shares (:class:`ScorerFields`, with
:class:`CustomizationSpec`), below the stages so that ``prefsmith serve``'s config takes them too;
and how a stage's paths are read (``prefsmith:`` resources).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from prefsmith.defaults import (
    DEFAULT_REDUCTION,
    DEFAULT_RENDERING,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    QUALITY_SCORERS,
    QualityName,
    ReductionName,
    RenderingName,
)

#: Prefix of a file shipped with prefsmith (``prefsmith:prompts/mt-bench.jsonl``).
RESOURCE_PREFIX = "prefsmith:"


def resource_path(text: str) -> Path:
    """The file behind ``prefsmith:PATH`` (a file shipped in ``prefsmith/resources``).

    >>> resource_path("prefsmith:prompts/mt-bench.jsonl").name
    'mt-bench.jsonl'
    """
    return Path(str(files("prefsmith").joinpath("resources", text.removeprefix(RESOURCE_PREFIX))))


def resolve_path(text: str | Path) -> Path:
    """A path as a stage takes it: ``prefsmith:`` resources, else relative to the working
    directory."""
    text = str(text)
    return resource_path(text) if text.startswith(RESOURCE_PREFIX) else Path(text)


# --------------------------------------------------------------------------------------------
# Settings that several stages share


@dataclass(frozen=True)
class CustomizationSpec:
    """The customized density ratio (:class:`~prefsmith.routing.customize.Customization`):
    route each prompt to a domain and give both models the domain's criteria and exemplars.

    Attributes:
        domains: Domains YAML (criteria and exemplars per domain), or a shipped set by name:
            ``default`` (five domains, prefsmith's own) or ``paper`` (the published CDR:
            CHAT unchanged, SAFETY and REASONING with a guideline and one exemplar in the user
            turn, the LM router); ``None``: ``default``; ``prefsmith:`` paths allowed.
        router: How prompts are routed to domains: ``embedding``, ``rules`` or ``lm`` (the
            strong model picks the domain's label); ``None``: the domains file's choice
            (``paper``: ``lm``), else ``embedding``.
        exemplars: How exemplars enter the context: ``system``, ``turns``, ``user`` (one
            exemplar before the query, "Good Assistant:") or ``none``; ``None``: the domains
            file's choice (``paper``: ``user``), else ``system``.
    """

    domains: str | None = None
    router: Literal["embedding", "rules", "lm"] | None = None
    exemplars: Literal["system", "turns", "user", "none"] | None = None

    def build(self) -> Any:
        """The :class:`~prefsmith.routing.customize.Customization` it names."""
        from prefsmith.routing.customize import Customization
        from prefsmith.routing.domains import SHIPPED_DOMAINS

        domains = self.domains
        if domains and domains not in SHIPPED_DOMAINS:
            domains = str(resolve_path(domains))
        return Customization(domains, self.router, self.exemplars)


@dataclass(frozen=True, kw_only=True)
class ScorerFields:
    """The reward of a stage that scores.

    Attributes:
        scorer: A scorer spec (``density-ratio[:STRONG,WEAK][:sum|mean|mean-char]``,
            ``logprob:...``, ``contrast:...``, ``dpo:...``, ``rm:PATH``, ``fitted:FILE[#NAME]``;
            see :mod:`prefsmith.rewards.spec`); ``None``: the density ratio of ``strong`` over
            ``weak`` with ``reduction``. Models a spec leaves out are ``strong``/``weak``.
        strong: Strong (better aligned) model: packaged name, folder, .gguf or hub id.
        weak: Weak (less aligned) model.
        reduction: ``sum``, ``mean`` (per token; one tokenizer only) or ``mean-char``.
        customization: Route prompts to domains and score with their criteria and exemplars
            (the customized density ratio; ``None``: the plain scorer).
        rendering: What the weak model scores when strong and weak have different tokenizers:
            ``own`` (each model renders the conversation with its own chat template; a base
            weak model gets the plain ``User:``/``Assistant:`` one) or ``same-text`` (the strong
            model's rendered text, its special-token markers as plain text, tokenized by the
            weak tokenizer; both models score the same response characters). No effect with a
            shared tokenizer (both score the strong rendering token by token). Applies to the
            ``density-ratio`` and ``dpo`` scorers whose spec does not say
            (``density-ratio:sum+same-text``, ``+own``).
        quality: A shipped scorer preset, measured held-out on RewardBench dev (the default
            pair: 56.6): ``balanced``, qwen2.5-coder-1.5b-instruct over gemma-3-270m with a
            fitted length penalty (71.4; 2.5x the default pair's time), ``best``, an ensemble of
            3 scorers (71.9; 7.6x); both fetch the 1.5B model once (1.1 GB). ``default``: the
            scorer settings. Give a preset or a scorer, not both.
    """

    scorer: str | None = None
    strong: str = DEFAULT_STRONG
    weak: str = DEFAULT_WEAK
    reduction: ReductionName = DEFAULT_REDUCTION
    customization: CustomizationSpec | None = None
    rendering: RenderingName = DEFAULT_RENDERING
    quality: QualityName = "default"

    def __post_init__(self) -> None:
        if self.quality != "default" and self.scorer is not None:
            raise ValueError(
                f"give a scorer or --quality {self.quality}, not both (the preset is the"
                f" scorer {QUALITY_SCORERS[self.quality]})"
            )

    def scorer_spec(self) -> str:
        """The scorer spec this stage scores with.

        >>> ScorerFields(quality="best").scorer_spec()
        'fitted:rewardbench-dev-qwen15-ensemble'
        """
        preset = QUALITY_SCORERS[self.quality]
        return preset or self.scorer or f"density-ratio:{self.reduction}"
