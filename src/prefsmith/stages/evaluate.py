"""Stages that score and evaluate: ``score`` (rewards for every response), ``eval`` (scorers as
reward models, RewardBench-style) and ``study`` (every strong/weak pair of several models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.data.rows import PAIR_COLUMNS, SCORING_COLUMNS, to_scoring_item
from prefsmith.data.runner import run_rows
from prefsmith.evaluation.fit import FitOptions
from prefsmith.stages.base import (
    CustomizationSpec,
    ScorerFields,
    StageContext,
    StageKind,
    StageResult,
    from_rows,
    register,
)

#: The small RewardBench-style pair set shipped inside the package.
TINY_PAIRS = "prefsmith:rewardbench-tiny.jsonl"


# --------------------------------------------------------------------------------------------
# What score and eval share


@dataclass(frozen=True, kw_only=True)
class ScoringFields(ScorerFields):
    """Settings of the stages that score rows with one or more scorers.

    Attributes:
        system_prompt: System turn for rows without one.
        save_token_logprobs: Store per-token log-probs of both models (for
            ``prefsmith report``).
        contrast_prompts: Prompts YAML of ``contrast:`` scorers (``None``: the shipped one).
        cache: Read and write the on-disk log-prob cache.
        cache_path: Log-prob cache file (``None``: ``$PREFSMITH_HOME/logprobs.sqlite``).
        report: Write a self-contained HTML report of the output at the end.
    """

    system_prompt: str | None = None
    save_token_logprobs: bool = False
    contrast_prompts: str | None = None
    cache: bool = False
    cache_path: str | None = None
    report: bool = True

    def reward(self, context: StageContext, spec: str, custom: CustomizationSpec | None) -> Any:
        """The reward of ``spec`` on the stage's models and log-prob cache."""
        return context.reward(
            spec,
            self.strong,
            self.weak,
            custom,
            rendering=self.rendering,
            cache=True if self.cache_path is not None else self.cache,
            cache_path=self.cache_path,
            contrast_prompts=self.contrast_prompts,
        )

    def write_report(self, result: StageResult, output: Path) -> StageResult:
        """With ``report``: the HTML report of ``output``, named in the result."""
        if self.report:
            from prefsmith.report import write_report

            result.details["report"] = str(write_report(output))
        return result


# --------------------------------------------------------------------------------------------
# score


@dataclass(frozen=True, kw_only=True)
class ScoreStage(ScoringFields):
    """Score responses with the density ratio log p_strong(y|x) - log p_weak(y|x), or a scorer.

    Attributes:
        input: Rows to score: pairs (``prompt`` + ``chosen``/``rejected``) or candidates
            (``prompt`` + ``responses``), ``messages`` allowed: .jsonl, .json, .parquet or a
            saved HF dataset folder.
    """

    input: str = TINY_PAIRS


def run_score(config: ScoreStage, context: StageContext) -> StageResult:
    """Rewards for every response (:class:`~prefsmith.rewards.base.ScoreStep`)."""
    from prefsmith.rewards.base import ScoreStep

    reward = config.reward(context, config.scorer_spec(), config.customization)
    step = ScoreStep(reward, config.system_prompt, config.save_token_logprobs)
    summary = run_rows(context.source(config.input), context.output, step, context.run)
    result = from_rows("score", summary, context.audience)
    result.details["scorer"] = reward.name
    return config.write_report(result, context.output)


register(
    StageKind(
        "score",
        ScoreStage,
        run_score,
        reads=lambda config: SCORING_COLUMNS,
        writes=("rewards", "reward_chosen", "reward_rejected", "reward_margin", "scored_with"),
        keeps_columns=True,
        check_row=lambda config: lambda row: to_scoring_item(row, config.system_prompt),
        default_input=TINY_PAIRS,
    )
)


# --------------------------------------------------------------------------------------------
# eval


@dataclass(frozen=True, kw_only=True)
class EvalStage(ScoringFields):
    """Evaluate scorers as reward models: pairwise accuracy per subset and section.

    Attributes:
        input: RewardBench-format pairs (``prompt``/``chosen``/``rejected`` + ``subset``,
            ``id``): .jsonl, .json, .parquet or a dataset folder.
        scorers: Scorer specs to evaluate (``None``: the one ``scorer``, ``strong``, ``weak``
            and ``reduction`` name); ``rm:@stage`` in a recipe is a reward model a ``train``
            stage wrote.
        customization: Also evaluate every scorer customized this way (plain vs. CDR).
        cache: Read and write the on-disk log-prob cache (without it, a cache in memory:
            each model still scores a response once).
        fit: Fits on the scored pairs, cross-validated (held-out rows join the table as
            ``cv:NAME``; the models fitted on all rows go to ``fit.json``); ``None``: no fit.
    """

    input: str = TINY_PAIRS
    scorers: tuple[str, ...] | None = None
    cache: bool = True
    fit: FitOptions | None = None

    def scorer_specs(self) -> tuple[str, ...]:
        """The scorer specs evaluated (before customization)."""
        return tuple(self.scorers) if self.scorers else (self.scorer_spec(),)


def run_eval(config: EvalStage, context: StageContext) -> StageResult:
    """Accuracy of every scorer (:func:`~prefsmith.evaluation.harness.evaluate_file`)."""
    from dataclasses import replace

    from prefsmith.evaluation.fit import fit_evaluation
    from prefsmith.evaluation.harness import evaluate_file
    from prefsmith.rewards.spec import ScorerSpec

    cached = config if config.cache else replace(config, cache_path=":memory:")
    specs = config.scorer_specs()
    rewards = [cached.reward(context, spec, None) for spec in specs]
    if config.customization is not None:
        plain = [s for s in specs if ScorerSpec.parse(s, config.strong, config.weak).kind != "rm"]
        rewards += [cached.reward(context, spec, config.customization) for spec in plain]
    start = time.perf_counter()
    evaluated = evaluate_file(
        context.source(config.input),
        rewards,
        context.output,
        context.run,
        config.system_prompt,
        config.save_token_logprobs,
    )
    if config.fit is not None:
        fit = config.fit
        if fit.baseline:
            baseline = ScorerSpec.parse(fit.baseline, config.strong, config.weak)
            fit = replace(fit, baseline=baseline.with_rendering(config.rendering).name)
        fit_evaluation(evaluated, context.output, fit)
    seconds = time.perf_counter() - start
    sections = {s.scorer: s.sections for s in evaluated.scorers}
    overall = ", ".join(f"{name}: {100 * s.get('Overall', 0):.1f}" for name, s in sections.items())
    result = StageResult(
        "eval",
        "eval",
        output=str(context.output),
        inputs=evaluated.pairs,
        written=evaluated.pairs,
        seconds=seconds,
        details={"sections": sections, "headline": f"overall accuracy {overall}"},
        value=evaluated,
    )
    return config.write_report(result, context.output)


register(
    StageKind(
        "eval",
        EvalStage,
        run_eval,
        output="folder",
        reads=lambda config: PAIR_COLUMNS,
        check_row=lambda config: _pair_check(config.system_prompt),
        run_defaults={"chunk_size": 64},
        default_input=TINY_PAIRS,
        flags={"scorers": "--scorer", "fit.methods": "--fit", "fit.seed": "--fit-seed"},
    )
)


def _pair_check(system_prompt: str | None):
    from prefsmith.evaluation.harness import prepare_pair

    return lambda row: prepare_pair(row, system_prompt)


# --------------------------------------------------------------------------------------------
# study


@dataclass(frozen=True, kw_only=True)
class StudyStage:
    """Evaluate every ordered strong/weak pair of the given models with one pass per model.

    Attributes:
        input: RewardBench-format pairs.
        models: The models to pair (at least 2).
        reduction: ``sum`` or ``mean-char`` (the models' templates differ: no token mean).
        strength: JSON file ``{model: benchmark score}`` (``None``: each model's own
            reference-free accuracy).
        cache_path: Log-prob cache file (``None``: ``$PREFSMITH_HOME/logprobs.sqlite``).
    """

    input: str = TINY_PAIRS
    models: tuple[str, ...] = field(default_factory=tuple)
    reduction: str = "sum"
    strength: str | None = None
    cache_path: str | None = None


def run_study_stage(config: StudyStage, context: StageContext) -> StageResult:
    """The study (:func:`~prefsmith.evaluation.study.run_study`), written to the folder."""
    from prefsmith.evaluation.study import load_strengths, run_study, write_study

    start = time.perf_counter()
    strengths = load_strengths(config.strength) if config.strength else None
    models = [context.resolve_model(m) for m in config.models]
    pool = context.pool(cache=True, cache_path=config.cache_path)
    data = context.resolve_input(config.input)
    study = run_study(data, models, config.reduction, strengths, pool)
    paths = write_study(study, context.output)
    rho = "undefined" if study.spearman is None else f"{study.spearman:.3f}"
    if study.spearman_p is not None:
        rho += f" (p = {study.spearman_p:.3g})"
    return StageResult(
        "study",
        "study",
        output=str(context.output),
        seconds=time.perf_counter() - start,
        details={
            "spearman": study.spearman,
            "files": [str(p) for p in paths],
            "headline": f"Spearman correlation of gap and overall accuracy: {rho}",
        },
        value=study,
    )


register(
    StageKind(
        "study",
        StudyStage,
        run_study_stage,
        output="folder",
        row_runner=False,
        reads=lambda config: PAIR_COLUMNS,
        default_input=TINY_PAIRS,
        flags={"models": "--model"},
    )
)
