"""Stages from scored pairs to a tuned, judged policy: ``relabel`` (goal-conditioned pairs),
``train`` (DPO, SimPO or a reward model through TRL) and ``judge`` (win rate under a judge
scorer).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from prefsmith.data.runner import run_rows
from prefsmith.defaults import DEFAULT_GENERATOR
from prefsmith.evaluation.judge import JudgeOptions
from prefsmith.relabel.step import RelabelOptions, RelabelStep
from prefsmith.stages.base import (
    CustomizationSpec,
    StageContext,
    StageKind,
    StageResult,
    from_rows,
    register,
)
from prefsmith.stages.presets import PresetName
from prefsmith.training.config import TrainConfig

# --------------------------------------------------------------------------------------------
# relabel


@dataclass(frozen=True, kw_only=True)
class RelabelStage:
    """Reward-augmented relabeling: two goal-conditioned pairs per scored pair.

    Attributes:
        input: Scored pairs (``pairs`` or ``score`` output): .jsonl, .json, .parquet or an HF
            dataset folder.
        relabel: How rewards become goals and pairs.
    """

    input: str
    relabel: RelabelOptions = field(default_factory=RelabelOptions)


def run_relabel(config: RelabelStage, context: StageContext) -> StageResult:
    """Goal-conditioned pairs (:class:`~prefsmith.relabel.step.RelabelStep`)."""
    summary = run_rows(
        context.source(config.input), context.output, RelabelStep(config.relabel), context.run
    )
    result = from_rows("relabel", summary, context.audience)
    options, scale = config.relabel, config.relabel.scale
    result.details["headline"] = (
        f"{summary.counts.get('ties', 0)} ties (rule {options.tie_rule}); goals by"
        f" {scale.method} on {scale.low:g}..{scale.high:g}; mapping in"
        f" {context.output}.settings.json"
    )
    return result


register(
    StageKind(
        "relabel",
        RelabelStage,
        run_relabel,
        engine=False,
        reads=lambda config: RelabelStep(config.relabel).required_columns,
        writes=RelabelStep.output_columns,
        run_defaults={"chunk_size": 256},
        flags={
            "relabel.scale.method": "--scale",
            "relabel.tie_rule": "--ties",
            "relabel.output_format": "--format",
            "relabel.keep_columns": "--keep",
        },
    )
)


# --------------------------------------------------------------------------------------------
# train


#: ``TrainConfig`` fields the stage sets (its input and output), not a command or a recipe.
SET_BY_STAGE = ("data", "output_dir")


@dataclass(frozen=True, kw_only=True)
class TrainStage:
    """Preference-tune a policy with DPO or SimPO, or train a reward model (TRL); resumable.

    Attributes:
        input: Preference rows in TRL format (``prompt``/``chosen``/``rejected``; ``pairs``,
            ``rmboost`` or ``relabel`` output).
        train: The training run (its ``data`` and ``output_dir`` are the stage's input and
            output).
        resume: Continue from the newest checkpoint in the output folder (without it, a folder
            holding checkpoints is refused; a recipe resumes an interrupted stage always).
        preset: Published hyperparameters of ``train.method`` under the settings given:
            ``paper`` (each value with its source in ``resources/presets/paper.yaml``; see
            :mod:`prefsmith.stages.presets`); ``None``: the CPU-sized defaults.
    """

    input: str
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    preset: PresetName | None = None


def run_train(config: TrainStage, context: StageContext) -> StageResult:
    """Train (:func:`~prefsmith.training.trainer.train`) into the stage's output folder."""
    from prefsmith.training.rows import load_preference_rows
    from prefsmith.training.trainer import train

    cfg = replace(
        config.train,
        data=str(context.resolve_input(config.input)),
        output_dir=str(context.output),
        model=context.resolve_model(config.train.model),
    )
    warnings = []
    if cfg.method == "rm":  # bad pairs are named before any model loads
        from prefsmith.training.reward_model import load_reward_pairs

        good, bad = load_reward_pairs(cfg.data, cfg.max_rows, cfg.margin, cfg.on_error)
        pairs = len(good)
        if bad:
            warnings.append(f"{len(bad)} bad pairs set aside (first: {bad[0]})")
    else:
        pairs = len(load_preference_rows(cfg.data, cfg.max_rows))
    if not context.progress:  # TRL's dataset preparation prints bars of its own
        import datasets

        datasets.disable_progress_bars()
    done = train(cfg, resume=config.resume, progress=context.progress)
    losses = [entry["loss"] for entry in done.log]
    loss = f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    resumed = f", resumed from {done.resumed_from}" if done.resumed_from else ""
    held_out = ""
    if done.eval:
        shown = {k: v for k, v in done.eval.items() if k in ("eval_loss", "eval_accuracy")}
        held_out = "; held-out " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
    details = {
        "method": cfg.method,
        "finetune": cfg.finetune,
        "steps": done.steps,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "model": str(done.final_model),
        "resumed_from": done.resumed_from,
        "headline": f"{cfg.method} ({cfg.finetune}) on {pairs} pairs: {done.steps} steps"
        f"{loss}{resumed}{held_out}; model {done.final_model}; loss curve"
        f" {Path(done.output_dir) / 'loss.png'}",
    }
    return StageResult(
        "train",
        "train",
        output=str(context.output),
        inputs=pairs,
        seconds=done.seconds,
        details=details,
        warnings=warnings,
        value=done,
    )


register(
    StageKind(
        "train",
        TrainStage,
        run_train,
        output="folder",
        engine=False,
        row_runner=False,
        reads=lambda config: (("prompt", "chosen", "rejected"),),
        flags={"input": "--data", "train.num_epochs": "--epochs"},
    )
)


# --------------------------------------------------------------------------------------------
# judge


@dataclass(frozen=True, kw_only=True)
class JudgeStage:
    """Win rate of a tuned policy over its starting point under a judge scorer (any spec).

    Attributes:
        tuned: The tuned policy (a model folder such as ``<train run>/final``; ``@stage`` in a
            recipe).
        baseline: The starting policy to compare with.
        prompts: Prompts with ``turns`` or ``prompt`` (default: the shipped MT-Bench first
            turns).
        limit: Prompts to use (0: all).
        offset: Skip this many prompts first.
        customization: Route prompts to domains and judge with their criteria (the customized
            density ratio; ``None``: the plain judge).
        judge: How answers are generated and judged.
        preset: Published hyperparameters under the settings given: ``paper`` (each value
            with its source in ``resources/presets/paper.yaml``; see
            :mod:`prefsmith.stages.presets`); ``None``: the CPU-sized defaults.
    """

    tuned: str
    baseline: str = DEFAULT_GENERATOR
    prompts: str = "prefsmith:prompts/mt-bench.jsonl"
    limit: int = 0
    offset: int = 0
    customization: CustomizationSpec | None = None
    judge: JudgeOptions = field(default_factory=JudgeOptions)
    preset: PresetName | None = None


def run_judge(config: JudgeStage, context: StageContext) -> StageResult:
    """Answers of both policies, judged (:func:`~prefsmith.evaluation.judge.judge`)."""
    from prefsmith.evaluation.judge import judge, read_prompts, training_labeler

    prompts = read_prompts(context.resolve_input(config.prompts), config.limit, config.offset)
    tuned, baseline = context.resolve_model(config.tuned), context.resolve_model(config.baseline)
    options = config.judge
    if options.scorer is not None:  # rm:@rm in a recipe
        options = replace(options, scorer=context.resolve_model(options.scorer))
    options = replace(
        options,
        strong=context.resolve_model(options.strong),
        weak=context.resolve_model(options.weak),
    )
    customization = config.customization.build() if config.customization else None
    start = time.perf_counter()
    rate, judged = judge(tuned, baseline, prompts, context.output, options, customization)
    name = judged[0]["judge"]["scorer"]
    details = {
        "tuned": tuned,
        "baseline": baseline,
        "judge": name,
        "win_rate": asdict(rate),
        "mean_reward_tuned": sum(r["reward_tuned"] for r in judged) / len(judged),
        "mean_reward_baseline": sum(r["reward_baseline"] for r in judged) / len(judged),
        "headline": f"tuned {tuned} vs baseline {baseline} on {rate.n} prompts: {rate.wins}"
        f" wins, {rate.losses} losses, {rate.ties} ties -> win rate {rate.rate:.3f} (95%"
        f" {rate.method} CI {rate.low:.3f}-{rate.high:.3f}; ties count half), judged by"
        f" {name}; details in"
        f" {context.output}",
    }
    result = StageResult(
        "judge",
        "judge",
        output=str(context.output),
        inputs=len(prompts),
        written=len(judged),
        seconds=time.perf_counter() - start,
        details=details,
        value=rate,
    )
    labeler = training_labeler(tuned)  # what the training run of ``tuned`` recorded
    if labeler is not None:
        same = labeler["scorer"] == name
        data = labeler["data"]
        note_labeler(result, data if same else None, "judge.scorer", f"the pairs in {data}")
    return result


#: The end of a judge's headline when its judge did not label the training pairs.
NOT_THE_LABELER = "; the judge did not label the training pairs"


def note_labeler(
    result: StageResult, labeler: str | None, setting: str, described: str | None = None
) -> None:
    """Say in a judge result whether its judge labeled the training pairs (``labeler``: the
    recipe stage or file that holds them, ``described`` in words, by default ``stage
    LABELER``) or is independent of them (``None``); ``setting`` is the option that changes
    the judge.

    Said once: a later call changes the verdict only from "did not label" to "labeled" (a
    recipe knows its stages; the training run's files know the scorer).
    """
    known = result.details.get("judge_is_labeler", "unknown")
    if known != "unknown" and (known is not None or labeler is None):
        return
    headline = str(result.details.get("headline", "")).removesuffix(NOT_THE_LABELER)
    result.details["judge_is_labeler"] = labeler
    if labeler is None:
        result.details["headline"] = headline + NOT_THE_LABELER
        return
    described = described or f"stage {labeler}"
    result.details["headline"] = headline + f"; the judge IS the labeler of {described}"
    result.warnings.append(
        f"the judge {result.details.get('judge')} labeled the training pairs ({described}):"
        f" a policy tuned toward a reward is favoured by it; set {setting} to a scorer that"
        " did not label them (another model pair, contrast:MODEL, rm:PATH)"
    )


register(
    StageKind(
        "judge",
        JudgeStage,
        run_judge,
        output="folder",
        engine=False,
        row_runner=False,
        argument="tuned",
    )
)
