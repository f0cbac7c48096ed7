"""``prefsmith sample``, ``prefsmith pairs`` and ``prefsmith rmboost``: make preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefsmith.cli import options as o
from prefsmith.cli.common import (
    check_choice,
    check_rows,
    console,
    default_output,
    fail,
    generator,
    model_options,
    run_options,
    run_step,
    user_errors,
)
from prefsmith.defaults import (
    DEFAULT_DTYPE,
    DEFAULT_GENERATOR,
    DEFAULT_MAX_LENGTH,
    DEFAULT_REDUCTION,
    DEFAULT_SEED,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)

Prompts = Annotated[
    Path, typer.Argument(help="Prompts: .jsonl/.json/.parquet rows with 'prompt' or 'messages'.")
]
FORMATS = ("conversational", "standard")


def _sampling(n, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt) -> Any:
    from prefsmith.generation.sampling import SamplingConfig

    with user_errors():
        return SamplingConfig(
            n, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt
        )


def _reward(strong, weak, reduction, max_length, dtype, device, threads, engine="hf"):
    from prefsmith.rewards.density_ratio import DensityRatioReward

    options = model_options(dtype, device, threads, max_length=max_length, engine=engine)
    with user_errors(), console.status(f"preparing {strong} over {weak}"):
        return DensityRatioReward(strong, weak, reduction, options=options)


def _spec_reward(spec, strong, weak, max_length, dtype, device, threads, engine="hf"):
    from prefsmith.models.pool import ModelPool
    from prefsmith.rewards.spec import parse_scorer

    options = model_options(dtype, device, threads, max_length=max_length, engine=engine)
    with user_errors(), console.status(f"preparing {spec}"):
        return parse_scorer(spec, strong=strong, weak=weak, pool=ModelPool(options))


def sample(
    prompts: Prompts,
    output: o.Output = None,
    model: o.Generator = DEFAULT_GENERATOR,
    n: o.N = 4,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.85,
    max_new_tokens: o.MaxNewTokens = 512,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: o.BatchSize = 8,
    system_prompt: o.SystemPrompt = None,
    goal: Annotated[
        float | None,
        typer.Option(help="Condition a `relabel`-tuned policy on this goal (e.g. 10)."),
    ] = None,
    goal_template: Annotated[Path | None, typer.Option(help="Goal template file.")] = None,
    max_prompt_tokens: o.MaxPromptTokens = None,
    dtype: o.GenDType = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    engine: o.Engine = "hf",
    chunk_size: o.ChunkSize = 16,
    limit: o.Limit = None,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    workers: o.Workers = 0,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
) -> None:
    """Sample N responses per prompt from a generator (resumable; rows: prompt + responses)."""
    from prefsmith.data.rows import to_prompt
    from prefsmith.generation.sampling import SampleStep
    from prefsmith.relabel.pairs import goal_system_prompt

    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(prompts, to_prompt, run)
    with user_errors():
        if goal is not None:
            system_prompt = goal_system_prompt(goal, goal_template, system_prompt)
        config = _sampling(n, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt)
        policy = generator(model, dtype, device, threads, engine)
        step = SampleStep(policy, config, max_prompt_tokens)
    output = output or default_output("sample", prompts)
    summary = run_step(rows, output, step, run)
    tokens, truncated = summary.counts.get("tokens", 0), summary.counts.get("truncated samples", 0)
    rate = f"{tokens / summary.seconds:.1f} tok/s" if summary.seconds else "-"
    console.print(f"{tokens} tokens ({rate}); {truncated} samples hit --max-new-tokens")


def pairs(
    candidates: Annotated[
        Path, typer.Argument(help="Rows with 'prompt'/'messages' and 'responses' (from sample).")
    ],
    output: o.Output = None,
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    reduction: o.Reduction = DEFAULT_REDUCTION,
    strategy: Annotated[str, typer.Option(help="best-worst | all-pairs.")] = "best-worst",
    min_margin: Annotated[float, typer.Option(help="Keep pairs with a larger margin.")] = 0.0,
    fmt: o.Format = "conversational",
    keep_truncated: o.KeepTruncated = True,
    system_prompt: Annotated[
        str | None, typer.Option(help="System turn for scoring (default: the sampling one).")
    ] = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
    dtype: o.DType = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    engine: o.Engine = "hf",
    chunk_size: o.ChunkSize = 64,
    limit: o.Limit = None,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    workers: o.Workers = 0,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="A scorer spec instead of --strong/--weak/--reduction (see `eval --help`),"
            " e.g. fitted:runs/eval/fit.json#calibration:... for --min-probability.",
        ),
    ] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(
            help="Keep pairs with P(chosen preferred) above this; needs a calibrated"
            " --scorer fitted:FILE (an `eval --fit calibration` fit.json).",
        ),
    ] = None,
) -> None:
    """Score sampled candidates with the density ratio; keep best vs. worst (or all) pairs."""
    from prefsmith.generation.pairs import PairsOptions, PairsStep, prepare_candidates

    check_choice("--strategy", strategy, ("best-worst", "all-pairs"))
    check_choice("--format", fmt, FORMATS)
    if scorer:
        reward = _spec_reward(scorer, strong, weak, max_length, dtype, device, threads, engine)
    else:
        reward = _reward(strong, weak, reduction, max_length, dtype, device, threads, engine)
    with user_errors():
        options = PairsOptions(
            strategy,  # type: ignore[arg-type]
            min_margin,
            fmt,  # type: ignore[arg-type]
            keep_truncated,
            system_prompt,
            min_probability,
        )
        step = PairsStep(reward, options)
    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(candidates, lambda row: prepare_candidates(row, options), run)
    output = output or default_output("pairs", candidates)
    summary = run_step(rows, output, step, run)
    statuses = {k.removeprefix("candidates "): v for k, v in summary.counts.items()}
    console.print("candidates: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())))


def rmboost(
    prompts: Prompts,
    output: o.Output = None,
    model: o.Generator = DEFAULT_GENERATOR,
    aspects: Annotated[str, typer.Option(help="Comma-separated quality aspects.")] = (
        "helpfulness,relevance,completeness,correctness,harmlessness"
    ),
    num_aspects: Annotated[int, typer.Option(help="Aspects drawn per prompt (0: all).")] = 2,
    p_better: Annotated[float, typer.Option(help="P(the second response must be better).")] = 0.5,
    templates: Annotated[
        Path | None, typer.Option(help="Folder with system.txt, better.txt, worse.txt.")
    ] = None,
    fmt: o.Format = "conversational",
    check: Annotated[bool, typer.Option(help="Score pairs with the density ratio.")] = False,
    filter_agreement: Annotated[
        bool, typer.Option(help="Keep only pairs the check agrees with.")
    ] = False,
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    reduction: o.Reduction = DEFAULT_REDUCTION,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.85,
    max_new_tokens: o.MaxNewTokens = 256,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: o.BatchSize = 8,
    system_prompt: o.SystemPrompt = None,
    keep_truncated: o.KeepTruncated = True,
    max_prompt_tokens: o.MaxPromptTokens = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
    dtype: Annotated[
        str, typer.Option(help="auto | float32 | bfloat16 | float16 (generator and check).")
    ] = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    engine: o.Engine = "hf",
    chunk_size: o.ChunkSize = 16,
    limit: o.Limit = None,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    workers: o.Workers = 0,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="Check with this scorer spec instead of --strong/--weak/--reduction (implies"
            " --check), e.g. fitted:runs/eval/fit.json#calibration:... for --min-probability.",
        ),
    ] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(
            help="Keep pairs the check prefers with P(chosen preferred) above this; needs a"
            " calibrated --scorer fitted:FILE (an `eval --fit calibration` fit.json).",
        ),
    ] = None,
) -> None:
    """RMBoost: a first response, a drawn label and aspects, then a better/worse rewrite."""
    from prefsmith.data.rows import to_prompt
    from prefsmith.generation.rmboost import RMBoostConfig, RMBoostStep, agreement

    check_choice("--format", fmt, FORMATS)
    check = check or scorer is not None
    if filter_agreement and not check:
        fail("--filter-agreement needs --check (the density-ratio check) or --scorer")
    if min_probability is not None and scorer is None:
        fail("--min-probability needs a calibrated --scorer fitted:FILE[#NAME]")
    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(prompts, to_prompt, run)
    names = tuple(a.strip() for a in aspects.split(",") if a.strip())
    sampling = _sampling(1, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt)
    if scorer is not None:
        reward = _spec_reward(scorer, strong, weak, max_length, dtype, device, threads, engine)
    elif check:
        reward = _reward(strong, weak, reduction, max_length, dtype, device, threads, engine)
    else:
        reward = None
    with user_errors():
        config = RMBoostConfig(
            names, num_aspects, p_better, seed, templates and str(templates), keep_truncated
        )
        step = RMBoostStep(
            generator(model, dtype, device, threads, engine),
            sampling,
            config,
            fmt,  # type: ignore[arg-type]
            reward,
            filter_agreement,
            max_prompt_tokens,
            min_probability=min_probability,
        )
    output = output or default_output("rmboost", prompts)
    summary = run_step(rows, output, step, run)
    if check:
        shares = agreement(summary.counts)
        shown = [f"{k} {'-' if v is None else f'{v:.1%}'}" for k, v in shares.items()]
        console.print("scorer agrees with the intended label: " + "; ".join(shown))
