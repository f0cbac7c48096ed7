"""Stages that make preference data from prompts: ``sample``, ``pairs``, ``rmboost`` and
RMBoost's baselines ``rlaif``, ``rlcd``, ``west-of-n``.

Each is a config (every field documented; the command line's options and the recipe's keys come
from it) and a run function on a :class:`~prefsmith.stages.base.StageContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefsmith.data.rows import CANDIDATE_COLUMNS, PROMPT_COLUMNS, to_prompt
from prefsmith.data.runner import run_rows
from prefsmith.defaults import DEFAULT_GENERATOR, DEFAULT_JUDGE
from prefsmith.generation.pairs import PairFormat, PairsOptions, PairsStep, prepare_candidates
from prefsmith.generation.rmboost import RMBoostConfig, RMBoostStep
from prefsmith.generation.sampling import SampleStep, SamplingConfig
from prefsmith.stages.base import (
    ScorerFields,
    StageContext,
    StageKind,
    StageResult,
    from_rows,
    register,
)
from prefsmith.stages.presets import PresetName

PROMPTS = "prefsmith:prompts/mt-bench.jsonl"
#: The columns a pair stage writes (TRL's preference format and more).
PAIR_OUTPUT = ("prompt", "chosen", "rejected")


def _prompt_check(config: Any) -> Any:
    return to_prompt


def _prompts(config: Any) -> Any:
    return PROMPT_COLUMNS


def _tokens_per_second(result: StageResult) -> StageResult:
    tokens, seconds = result.counts.get("tokens", 0), result.seconds
    if tokens and seconds > 0:
        result.details["tokens_per_second"] = round(tokens / seconds, 2)
    return result


def _read_text(path: str | None) -> str | None:
    """The stripped text of a prompt file, or ``None`` without one."""
    from prefsmith.data.io import read_text_file
    from prefsmith.stages.base import resolve_path

    return read_text_file(resolve_path(path)).strip() if path is not None else None


# --------------------------------------------------------------------------------------------
# sample


@dataclass(frozen=True, kw_only=True)
class SampleStage:
    """Sample N responses per prompt from a generator (rows: prompt + responses).

    Attributes:
        input: Prompts: rows with ``prompt`` (text or messages) or ``messages``; a file, an
            earlier recipe stage or a ``prefsmith:`` resource.
        model: Generator: packaged name, folder, .gguf or hub id (``@stage``: a model a recipe's
            ``train`` stage wrote).
        sampling: How responses are sampled.
        goal: Condition a ``relabel``-tuned policy on this goal (e.g. 10): its system turn.
        goal_template: Goal template file (``None``: the shipped one).
        max_prompt_tokens: Reject prompts longer than this after the chat template (``None``:
            what fits the context).
        preset: Published hyperparameters under the settings given: ``paper`` (each value
            with its source in ``resources/presets/paper.yaml``; see
            :mod:`prefsmith.stages.presets`); ``None``: the CPU-sized defaults.
    """

    input: str = PROMPTS
    model: str = DEFAULT_GENERATOR
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    goal: float | None = None
    goal_template: str | None = None
    max_prompt_tokens: int | None = None
    preset: PresetName | None = None


def run_sample(config: SampleStage, context: StageContext) -> StageResult:
    """Sample (:class:`~prefsmith.generation.sampling.SampleStep`)."""
    from dataclasses import replace

    from prefsmith.relabel.pairs import goal_system_prompt

    sampling = config.sampling
    if config.goal is not None:
        system = goal_system_prompt(config.goal, config.goal_template, sampling.system_prompt)
        sampling = replace(sampling, system_prompt=system)
    step = SampleStep(context.policy(config.model), sampling, config.max_prompt_tokens)
    summary = run_rows(context.source(config.input), context.output, step, context.run)
    result = _tokens_per_second(from_rows("sample", summary, context.audience))
    truncated, samples = summary.counts.get("truncated samples", 0), summary.counts.get("samples")
    result.details["headline"] = f"{samples or 0} samples, {truncated} hit max_new_tokens"
    return result


register(
    StageKind(
        "sample",
        SampleStage,
        run_sample,
        reads=_prompts,
        writes=SampleStep.output_columns,
        keeps_columns=True,
        check_row=_prompt_check,
        run_defaults={"chunk_size": 16},
        default_input=PROMPTS,
    )
)


# --------------------------------------------------------------------------------------------
# pairs


@dataclass(frozen=True, kw_only=True)
class PairsStage(ScorerFields):
    """Score sampled candidates with a reward; keep best vs. worst (or all) pairs.

    Attributes:
        input: Candidates: rows with ``prompt`` (or ``messages``) and ``responses``
            (``sample``'s output).
        pairs: How pairs are selected and written.
        preset: Published settings under those given: ``paper`` (the published customized
            density ratio, ``domains: paper``; see :mod:`prefsmith.stages.presets`);
            ``None``: none.
    """

    input: str
    pairs: PairsOptions = field(default_factory=PairsOptions)
    preset: PresetName | None = None


def run_pairs(config: PairsStage, context: StageContext) -> StageResult:
    """Best-of-N pairs (:class:`~prefsmith.generation.pairs.PairsStep`)."""
    reward = context.scorer(config)
    step = PairsStep(reward, config.pairs)
    summary = run_rows(context.source(config.input), context.output, step, context.run)
    result = from_rows("pairs", summary, context.audience)
    result.details["scorer"] = reward.name
    statuses = {
        k.removeprefix("candidates "): v
        for k, v in summary.counts.items()
        if k.startswith("candidates ")
    }
    if statuses:
        shown = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
        result.details["headline"] = f"candidates: {shown}"
    return result


register(
    StageKind(
        "pairs",
        PairsStage,
        run_pairs,
        reads=lambda config: CANDIDATE_COLUMNS,
        writes=PairsStep.output_columns,
        check_row=lambda config: lambda row: prepare_candidates(row, config.pairs),
    )
)


# --------------------------------------------------------------------------------------------
# rmboost


@dataclass(frozen=True, kw_only=True)
class RMBoostStage(ScorerFields):
    """RMBoost: a first response, a drawn label and aspects, then a better/worse rewrite.

    Attributes:
        input: Prompts.
        model: Generator.
        sampling: How both responses are sampled (``n`` is 1).
        rmboost: What the generator is asked for.
        format: ``conversational`` (message lists; TRL applies the chat template) or
            ``standard`` (strings; single-turn prompts only).
        check: Score every pair with the scorer and record whether it agrees with the label
            (implied by ``scorer``).
        customization: Route prompts to domains and check with their criteria (the customized
            density ratio; ``None``: the plain scorer). Implies ``check``.
        filter_agreement: Keep only pairs the check agrees with.
        max_prompt_tokens: Reject longer prompts.
        min_probability: Keep only pairs a calibrated scorer (``fitted:FILE#calibration:...``)
            prefers with P(chosen preferred) above this (``None``: no threshold).
    """

    input: str = PROMPTS
    model: str = DEFAULT_GENERATOR
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=1, max_new_tokens=256)
    )
    rmboost: RMBoostConfig = field(default_factory=RMBoostConfig)
    format: PairFormat = "conversational"
    check: bool = False
    filter_agreement: bool = False
    max_prompt_tokens: int | None = None
    min_probability: float | None = None

    @property
    def checked(self) -> bool:
        """Whether pairs are scored (``check``, a ``scorer``, a ``quality`` preset or a
        ``customization``)."""
        chosen = self.scorer is not None or self.quality != "default"
        return self.check or chosen or self.customization is not None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filter_agreement and not self.checked:
            raise ValueError(
                "filter_agreement (--filter-agreement) needs check (--check: the density-ratio"
                " check), a scorer (--scorer) or a customization (--domains/--router)"
            )
        if self.min_probability is not None and self.scorer is None and self.quality == "default":
            raise ValueError(
                "min_probability (--min-probability) needs a calibrated scorer"
                " (--scorer fitted:FILE[#NAME])"
            )


def run_rmboost(config: RMBoostStage, context: StageContext) -> StageResult:
    """RMBoost pairs (:class:`~prefsmith.generation.rmboost.RMBoostStep`)."""
    from prefsmith.generation.rmboost import agreement

    check = context.scorer(config) if config.checked else None
    step = RMBoostStep(
        context.policy(config.model),
        config.sampling,
        config.rmboost,
        config.format,
        check,
        config.filter_agreement,
        config.max_prompt_tokens,
        min_probability=config.min_probability,
    )
    summary = run_rows(context.source(config.input), context.output, step, context.run)
    result = _tokens_per_second(from_rows("rmboost", summary, context.audience))
    if check is not None:
        shares = agreement(summary.counts)
        result.details["agreement"] = shares
        shown = "; ".join(f"{k} {'-' if v is None else f'{v:.1%}'}" for k, v in shares.items())
        result.details["scorer"] = check.name
        result.details["headline"] = (
            f"scorer agrees with the intended label: {shown} ({check.name})"
        )
    return result


register(
    StageKind(
        "rmboost",
        RMBoostStage,
        run_rmboost,
        reads=_prompts,
        writes=RMBoostStep.output_columns,
        check_row=_prompt_check,
        run_defaults={"chunk_size": 16},
        default_input=PROMPTS,
    )
)


# --------------------------------------------------------------------------------------------
# rlaif


@dataclass(frozen=True, kw_only=True)
class PromptPairFields:
    """Settings of the baselines that write one pair per prompt from a generator.

    Attributes:
        input: Prompts.
        model: Generator.
        format: ``conversational`` or ``standard`` output.
        keep_truncated: Keep pairs where a response hit ``max_new_tokens``.
        max_prompt_tokens: Reject longer prompts.
    """

    input: str = PROMPTS
    model: str = DEFAULT_GENERATOR
    format: PairFormat = "conversational"
    keep_truncated: bool = True
    max_prompt_tokens: int | None = None

    def run_step(self, context: StageContext, step_class: type, what: Any) -> tuple:
        """Run ``step_class(policy, what, sampling, format, ...)``; (result, summary)."""
        step = step_class(
            context.policy(self.model),
            what,
            self.sampling,  # type: ignore[attr-defined]
            self.format,
            self.keep_truncated,
            self.max_prompt_tokens,
        )
        summary = run_rows(context.source(self.input), context.output, step, context.run)
        return from_rows(step.name, summary, context.audience), summary


@dataclass(frozen=True, kw_only=True)
class RLAIFStage(PromptPairFields):
    """RLAIF: two samples per prompt, judged in both orders by label log-probs; agreeing kept.

    Attributes:
        judge: Pairwise judge model (name, folder, .gguf).
        judge_prompt: Judge question file with ``$prompt``, ``$response_a``, ``$response_b``
            (and ``$label_a``, ``$label_b``); ``None``: prefsmith's ``JUDGE_PROMPT``.
        labels: The two answer labels.
        judge_system_prompt: System turn for the judge.
        sampling: How the two responses are sampled (``n`` is 2).
    """

    judge: str = DEFAULT_JUDGE
    judge_prompt: str | None = None
    labels: tuple[str, ...] = ("A", "B")
    judge_system_prompt: str | None = None
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=2, max_new_tokens=256)
    )


def run_rlaif(config: RLAIFStage, context: StageContext) -> StageResult:
    """RLAIF pairs (:class:`~prefsmith.generation.baselines.RLAIFStep`)."""
    from prefsmith.generation.baselines import JUDGE_PROMPT, PairwiseJudge, RLAIFStep

    template = _read_text(config.judge_prompt) or JUDGE_PROMPT
    judge = PairwiseJudge(
        context.resolve_model(config.judge),
        template,
        tuple(config.labels),  # type: ignore[arg-type]
        config.judge_system_prompt,
        context.pool(),
    )
    result, summary = config.run_step(context, RLAIFStep, judge)
    judged = summary.counts.get("judged", 0)
    agree = summary.counts.get("judge agrees across orders", 0)
    share = f" ({agree / judged:.1%})" if judged else ""
    result.details["headline"] = (
        f"judge agrees with itself across orders on {agree} of {judged} pairs{share}"
    )
    return result


# --------------------------------------------------------------------------------------------
# rlcd


@dataclass(frozen=True, kw_only=True)
class RLCDStage(PromptPairFields):
    """RLCD: one response under a positive, one under a negative system prompt; positive chosen.

    Attributes:
        positive: File with the positive system prompt (``None``: ``RLCD_POSITIVE``).
        negative: File with the negative system prompt (``None``: ``RLCD_NEGATIVE``).
        domains: Domains YAML: each prompt is routed to a domain (or uses its ``domain``
            field) and both system prompts get the domain's criteria.
        router: ``rules`` or ``embedding`` (with ``domains``).
        sampling: How the two responses are sampled (``n`` is 1 per prompt).
    """

    positive: str | None = None
    negative: str | None = None
    domains: str | None = None
    router: str = "rules"
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=1, max_new_tokens=256)
    )


def run_rlcd(config: RLCDStage, context: StageContext) -> StageResult:
    """RLCD pairs (:class:`~prefsmith.generation.baselines.RLCDStep`)."""
    from prefsmith.generation.baselines import RLCD_NEGATIVE, RLCD_POSITIVE, RLCDConfig, RLCDStep
    from prefsmith.stages.base import resolve_path

    rlcd = RLCDConfig(
        _read_text(config.positive) or RLCD_POSITIVE,
        _read_text(config.negative) or RLCD_NEGATIVE,
        str(resolve_path(config.domains)) if config.domains else None,
        config.router,
    )
    result, summary = config.run_step(context, RLCDStep, rlcd)
    by_domain = {k[7:]: v for k, v in summary.counts.items() if k.startswith("domain ")}
    if by_domain:
        shown = ", ".join(f"{k} {v}" for k, v in by_domain.items())
        result.details["headline"] = f"pairs by domain: {shown}"
    return result


# --------------------------------------------------------------------------------------------
# west-of-n


@dataclass(frozen=True, kw_only=True)
class WestOfNStage(ScorerFields):
    """West-of-N: N samples per prompt, best vs. worst under a reward (sample + pairs).

    Attributes:
        input: Prompts.
        model: Generator.
        sampling: How the N responses are sampled (``n`` at least 2).
        pairs: How pairs are selected and written.
        max_prompt_tokens: Reject longer prompts.
        preset: Published hyperparameters under the settings given: ``paper`` (each value
            with its source in ``resources/presets/paper.yaml``; see
            :mod:`prefsmith.stages.presets`); ``None``: the CPU-sized defaults.
    """

    input: str = PROMPTS
    model: str = DEFAULT_GENERATOR
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=4, max_new_tokens=256)
    )
    pairs: PairsOptions = field(default_factory=PairsOptions)
    max_prompt_tokens: int | None = None
    preset: PresetName | None = None


def run_west_of_n(config: WestOfNStage, context: StageContext) -> StageResult:
    """West-of-N pairs (:class:`~prefsmith.generation.baselines.WestOfNStep`)."""
    from prefsmith.generation.baselines import WestOfNStep

    reward = context.scorer(config)
    step = WestOfNStep(
        context.policy(config.model),
        reward,
        config.sampling,
        config.pairs,
        config.max_prompt_tokens,
    )
    summary = run_rows(context.source(config.input), context.output, step, context.run)
    result = from_rows("west-of-n", summary, context.audience)
    result.details["scorer"] = reward.name
    result.details["headline"] = f"best vs. worst of {config.sampling.n} under {reward.name}"
    return result


for _kind in (
    StageKind("rlaif", RLAIFStage, run_rlaif),
    StageKind("rlcd", RLCDStage, run_rlcd),
    StageKind("west-of-n", WestOfNStage, run_west_of_n),
):
    register(
        StageKind(
            _kind.name,
            _kind.config,
            _kind.run,
            reads=_prompts,
            writes=PAIR_OUTPUT,
            check_row=_prompt_check,
            run_defaults={"chunk_size": 16},
            default_input=PROMPTS,
        )
    )
