"""``prefsmith score``: rows in, the same rows with density-ratio rewards out."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli import options as o
from prefsmith.cli.common import (
    check_rows,
    console,
    customization,
    default_output,
    fail,
    model_options,
    run_options,
    run_step,
    user_errors,
    write_html_report,
)
from prefsmith.defaults import (
    DEFAULT_DTYPE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_REDUCTION,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)


def default_input() -> Path:
    """The small RewardBench-style pair set shipped inside the package."""
    return Path(str(files("prefsmith").joinpath("resources/rewardbench-tiny.jsonl")))


Input = Annotated[
    Path | None,
    typer.Argument(
        help="Rows to score: .jsonl, .json, .parquet or a saved HF dataset folder."
        " Default: rewardbench-tiny (shipped with prefsmith).",
        show_default=False,
    ),
]


def score(
    input_path: Input = None,
    output: o.Output = None,
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    reduction: o.Reduction = DEFAULT_REDUCTION,
    system_prompt: o.SystemPrompt = None,
    domains: o.Domains = None,
    router: o.Router = None,
    exemplars: o.Exemplars = "system",
    save_token_logprobs: o.SaveTokens = False,
    dtype: o.DType = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
    batch_tokens: o.BatchTokens = 8192,
    max_batch_size: o.MaxBatchSize = 64,
    engine: o.Engine = "hf",
    chunk_size: o.ChunkSize = 64,
    limit: o.Limit = None,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    workers: o.Workers = 0,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
    split_models: o.SplitModels = False,
    report: o.WriteReport = True,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="A scorer spec instead of --strong/--weak/--reduction (see `eval --help`),"
            " e.g. contrast:smollm2-135m-instruct:mean or fitted:runs/eval/fit.json#ensemble.",
        ),
    ] = None,
    fitted: Annotated[
        str | None,
        typer.Option(
            help="FILE[#NAME]: apply a model of an `eval --fit` fit.json (same as --scorer"
            " fitted:FILE[#NAME]); pairs gain p_chosen = sigmoid(reward_margin).",
        ),
    ] = None,
    contrast_prompts: Annotated[
        Path | None, typer.Option(help="Prompts YAML of contrast: scorers.")
    ] = None,
    cache_path: o.Cache = None,
) -> None:
    """Score responses with the density ratio log p_strong(y|x) - log p_weak(y|x), or --scorer."""
    from prefsmith.data.rows import to_scoring_item
    from prefsmith.models.cache import LogProbCache
    from prefsmith.models.pool import ModelPool
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward
    from prefsmith.rewards.spec import ScorerSpec

    source = input_path or default_input()
    output = output or default_output("score", source)
    run = run_options(
        on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker, split_models
    )
    rows = check_rows(source, lambda row: to_scoring_item(row, system_prompt), run)
    models = model_options(
        dtype,
        device,
        threads,
        max_length=max_length,
        batch_tokens=batch_tokens,
        engine=engine,
        max_batch_size=max_batch_size,
    )
    if scorer and fitted:
        fail("give --scorer or --fitted, not both")
    spec_text = f"fitted:{fitted}" if fitted else scorer
    with user_errors(), console.status(f"preparing {spec_text or f'{strong} over {weak}'}"):
        custom = customization(domains, router, exemplars)
        pool = ModelPool(models, LogProbCache(cache_path) if cache_path else None)
        if spec_text:
            spec = ScorerSpec.parse(spec_text, strong, weak)
            reward = spec.build(pool, custom, contrast_prompts)
        else:
            reward = DensityRatioReward(strong, weak, reduction, customization=custom, pool=pool)
    run_step(rows, output, ScoreStep(reward, system_prompt, save_token_logprobs), run)
    print_tables(output, f"{reward.name}")
    if report:
        write_html_report(output)


def print_tables(output: Path, title: str) -> None:
    """Accuracy of scored pairs, routing of customized rows, rewards of candidates."""
    from prefsmith.data.runner import records_of
    from prefsmith.evaluation.report import pair_accuracy_table, reward_summary_table
    from prefsmith.evaluation.routing import routing_table

    rows = [r.value for r in records_of(output)]
    if pairs := [r for r in rows if "reward_margin" in r]:
        console.print(pair_accuracy_table(pairs, title))
    if any("domain" in r for r in rows):
        console.print(routing_table(rows))
    if candidates := [r for r in rows if "rewards" in r]:
        console.print(reward_summary_table(candidates))
