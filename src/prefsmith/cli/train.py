"""``prefsmith relabel``, ``train`` and ``judge``: from scored pairs to a tuned, judged policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli import options as o
from prefsmith.cli.common import (
    check_choice,
    console,
    default_output,
    fail,
    run_options,
    run_step,
    user_errors,
)
from prefsmith.defaults import (
    DEFAULT_GENERATOR,
    DEFAULT_REDUCTION,
    DEFAULT_SEED,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)


def relabel(
    input_path: Annotated[
        Path, typer.Argument(help="Scored pairs (.jsonl, .json, .parquet or HF dataset folder).")
    ],
    output: o.Output = None,
    chosen_reward: Annotated[str, typer.Option(help="Column of the chosen reward.")] = (
        "reward_chosen"
    ),
    rejected_reward: Annotated[str, typer.Option(help="Column of the rejected reward.")] = (
        "reward_rejected"
    ),
    scale: Annotated[
        str, typer.Option(help="quantile (dataset ECDF) | minmax | identity (already on scale).")
    ] = "quantile",
    low: Annotated[float, typer.Option(help="Lowest goal score.")] = 1.0,
    high: Annotated[float, typer.Option(help="Highest goal score.")] = 10.0,
    decimals: Annotated[int, typer.Option(help="Round goals to this many decimals.")] = 1,
    ties: Annotated[
        str, typer.Option(help="Equal goals: drop | chosen (original label only) | both.")
    ] = "drop",
    template: Annotated[Path | None, typer.Option(help="Goal template file with {goal}.")] = None,
    fmt: o.Format = "conversational",
    keep: Annotated[
        list[str] | None, typer.Option(help="Input column to copy (repeatable).")
    ] = None,
    limit: o.Limit = None,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    min_probability: Annotated[
        float | None,
        typer.Option(
            help="Relabel only pairs with p_chosen above this (rows scored by a calibrated"
            " scorer, e.g. `score --fitted fit.json#calibration:...`).",
        ),
    ] = None,
) -> None:
    """Reward-augmented relabeling: two goal-conditioned pairs per scored pair."""
    from prefsmith.relabel.scale import GoalScale
    from prefsmith.relabel.step import RelabelOptions, RelabelStep

    check_choice("--ties", ties, ("drop", "chosen", "both"))
    check_choice("--format", fmt, ("conversational", "standard"))
    with user_errors():
        goals = GoalScale(scale, low, high, decimals)  # type: ignore[arg-type]
        template_file = str(template) if template else None
        options = RelabelOptions(
            chosen_reward,
            rejected_reward,
            goals,
            ties,
            template_file,
            fmt,  # type: ignore[arg-type]
            tuple(keep or ()),
            min_probability,
        )
        step = RelabelStep(options)
    output = output or default_output("relabel", input_path)
    summary = run_step(input_path, output, step, run_options(on_error, 256, limit, progress))
    console.print(
        f"{summary.counts.get('ties', 0)} ties (rule {ties}); goals by {scale} on"
        f" {low:g}..{high:g}; mapping in {output}.settings.json",
        highlight=False,
    )


#: ``train`` options whose config field has another name.
TRAIN_OPTION_FIELDS = {"epochs": "num_epochs"}


def train(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="TRL preference rows (e.g. from `prefsmith relabel`).", show_default=False
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of training options.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any option: --set key=value (repeatable)."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="dpo | simpo | rm (a Bradley-Terry reward model; --set margin=true)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Policy to tune (rm: base of the reward model).")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder.")] = None,
    finetune: Annotated[str | None, typer.Option(help="lora | full")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (-1: epochs).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO/SimPO beta.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per forward pass.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Forward passes per step.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest prompt+response.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in the run folder.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    on_error: Annotated[
        str | None,
        typer.Option(help="rm: raise | skip (bad pairs go to <output>/rejected.jsonl)."),
    ] = None,
) -> None:
    """Preference-tune a policy with DPO or SimPO, or train a reward model (TRL); resumable."""
    from prefsmith.training.config import TrainConfig, load_config

    given = {TRAIN_OPTION_FIELDS.get(k, k): v for k, v in locals().items()}
    overrides = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in given.items()
        if k in TrainConfig.__dataclass_fields__
    }
    with user_errors():
        cfg = load_config(config, set_, overrides)
        if not cfg.data:
            fail("no training data: pass DATA or set `data:` in --config")
        from prefsmith.training.rows import load_preference_rows
        from prefsmith.training.trainer import train as run_training

        if cfg.method == "rm":  # fail before loading models
            from prefsmith.training.reward_model import load_reward_pairs

            good, bad = load_reward_pairs(cfg.data, cfg.max_rows, cfg.margin, cfg.on_error)
            n_rows = len(good)
            if bad:
                console.print(f"{len(bad)} bad pairs set aside (first: {bad[0]})", highlight=False)
        else:
            n_rows = len(load_preference_rows(cfg.data, cfg.max_rows))
        console.print(
            f"{cfg.method} ({cfg.finetune}) on {n_rows} pairs from {cfg.data}; model {cfg.model}"
            f" -> {cfg.output_dir}"
        )
        result = run_training(cfg, resume=resume, progress=progress)
    if result.log:
        first, last = result.log[0]["loss"], result.log[-1]["loss"]
        console.print(f"loss {first:.4f} (first log) -> {last:.4f} (last log)")
    if result.eval:
        shown = {k: v for k, v in result.eval.items() if k in ("eval_loss", "eval_accuracy")}
        console.print("held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    console.print(
        f"{result.steps} steps in {result.seconds:.0f}s{resumed}; model -> {result.final_model};"
        f" loss curve -> {result.output_dir / 'loss.png'}"
    )


def judge(
    tuned: Annotated[str, typer.Argument(help="Tuned policy (e.g. <run>/final).")],
    baseline: Annotated[str, typer.Option(help="Starting policy to compare with.")] = (
        DEFAULT_GENERATOR
    ),
    prompts: Annotated[
        Path | None,
        typer.Option(help="Prompts (.jsonl with turns or prompt). Default: MT-Bench first turns."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Prompts to use (0 = all).")] = 0,
    offset: Annotated[int, typer.Option(help="Skip this many prompts first.")] = 0,
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for answers, judgements, summary.")
    ] = Path("runs/judge"),
    goal: Annotated[
        float | None, typer.Option(help="Goal for the tuned policy (relabel template).")
    ] = None,
    baseline_goal: Annotated[float | None, typer.Option(help="Goal for the baseline.")] = None,
    template: Annotated[Path | None, typer.Option(help="Goal template file.")] = None,
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    reduction: o.Reduction = DEFAULT_REDUCTION,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus threshold.")] = 0.85,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    tie_tolerance: Annotated[float, typer.Option(help="|reward diff| <= this is a tie.")] = 0.0,
    ci: Annotated[str, typer.Option(help="wilson | bootstrap")] = "wilson",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
) -> None:
    """Win rate of a tuned policy over its starting point, judged by the density ratio."""
    from prefsmith.evaluation.judge import MT_BENCH, JudgeOptions, read_prompts
    from prefsmith.evaluation.judge import judge as run_judge

    check_choice("--ci", ci, ("wilson", "bootstrap"))
    settings = dict(locals())
    for name in ("tuned", "baseline", "prompts", "limit", "offset", "output_dir"):
        settings.pop(name)
    settings["template"] = str(template) if template else None
    with user_errors():
        options = JudgeOptions(
            **{k: v for k, v in settings.items() if k in JudgeOptions.__dataclass_fields__}
        )
        items = read_prompts(prompts or MT_BENCH, limit, offset)
        result, _ = run_judge(tuned, baseline, items, output_dir, options)
    console.print(
        f"tuned {tuned} vs baseline {baseline} on {result.n} prompts: {result.wins} wins,"
        f" {result.losses} losses, {result.ties} ties -> win rate {result.rate:.3f}"
        f" (95% {result.method} CI {result.low:.3f}-{result.high:.3f}; ties count half);"
        f" details in {output_dir}"
    )
