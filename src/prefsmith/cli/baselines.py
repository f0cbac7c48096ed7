"""``prefsmith rlaif``, ``rlcd`` and ``west-of-n``: the baselines of RMBoost, from prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli import options as o
from prefsmith.cli.common import (
    check_choice,
    check_rows,
    console,
    default_output,
    generator,
    model_options,
    run_options,
    run_step,
    user_errors,
)
from prefsmith.cli.generate import FORMATS, Prompts, _sampling
from prefsmith.defaults import (
    DEFAULT_DTYPE,
    DEFAULT_GENERATOR,
    DEFAULT_JUDGE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SEED,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)


def _read_text(path: Path | None) -> str | None:
    """The stripped text of a prompt/template file, or ``None`` without one."""
    from prefsmith.data.io import read_text_file

    return read_text_file(path).strip() if path is not None else None


def rlaif(
    prompts: Prompts,
    output: o.Output = None,
    model: o.Generator = DEFAULT_GENERATOR,
    judge: Annotated[str, typer.Option(help="Pairwise judge model (name, folder, .gguf).")] = (
        DEFAULT_JUDGE
    ),
    judge_prompt: Annotated[
        Path | None,
        typer.Option(
            help="Judge question file with $prompt, $response_a, $response_b (and $label_a,"
            " $label_b). Default: prefsmith's (generation/baselines.py JUDGE_PROMPT)."
        ),
    ] = None,
    labels: Annotated[str, typer.Option(help="The two answer labels, comma-separated.")] = "A,B",
    judge_system_prompt: Annotated[str | None, typer.Option(help="System turn for the judge.")] = (
        None
    ),
    fmt: o.Format = "conversational",
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.85,
    max_new_tokens: o.MaxNewTokens = 256,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: o.BatchSize = 8,
    system_prompt: o.SystemPrompt = None,
    keep_truncated: o.KeepTruncated = True,
    max_prompt_tokens: o.MaxPromptTokens = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
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
    """RLAIF: two samples per prompt, judged in both orders by label log-probs; agreeing kept."""
    from prefsmith.data.rows import to_prompt
    from prefsmith.generation.baselines import JUDGE_PROMPT, PairwiseJudge, RLAIFStep
    from prefsmith.models.pool import ModelPool

    check_choice("--format", fmt, FORMATS)
    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(prompts, to_prompt, run)
    sampling = _sampling(2, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt)
    with user_errors():
        pool = ModelPool(
            model_options(dtype, device, threads, max_length=max_length, engine=engine)
        )
        pair = tuple(label.strip() for label in labels.split(","))
        template = _read_text(judge_prompt) or JUDGE_PROMPT
        judge_ = PairwiseJudge(judge, template, pair, judge_system_prompt, pool)  # type: ignore[arg-type]
        step = RLAIFStep(
            generator(model, dtype, device, threads, engine),
            judge_,
            sampling,
            fmt,  # type: ignore[arg-type]
            keep_truncated,
            max_prompt_tokens,
        )
    output = output or default_output("rlaif", prompts)
    summary = run_step(rows, output, step, run)
    judged = summary.counts.get("judged", 0)
    agree = summary.counts.get("judge agrees across orders", 0)
    share = f" ({agree / judged:.1%})" if judged else ""
    console.print(f"judge agrees with itself across orders on {agree} of {judged} pairs{share}")


def rlcd(
    prompts: Prompts,
    output: o.Output = None,
    model: o.Generator = DEFAULT_GENERATOR,
    positive: Annotated[
        Path | None,
        typer.Option(help="File with the positive system prompt (default: RLCD_POSITIVE)."),
    ] = None,
    negative: Annotated[
        Path | None,
        typer.Option(help="File with the negative system prompt (default: RLCD_NEGATIVE)."),
    ] = None,
    domains: Annotated[
        Path | None,
        typer.Option(
            help="Domains YAML: each prompt is routed to a domain (or uses its 'domain' field)"
            " and both system prompts get the domain's criteria."
        ),
    ] = None,
    router: Annotated[str, typer.Option(help="rules | embedding (with --domains).")] = "rules",
    fmt: o.Format = "conversational",
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.85,
    max_new_tokens: o.MaxNewTokens = 256,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: o.BatchSize = 8,
    keep_truncated: o.KeepTruncated = True,
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
    """RLCD: one response under a positive, one under a negative system prompt; positive chosen."""
    from prefsmith.data.rows import to_prompt
    from prefsmith.generation.baselines import RLCD_NEGATIVE, RLCD_POSITIVE, RLCDConfig, RLCDStep

    check_choice("--format", fmt, FORMATS)
    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(prompts, to_prompt, run)
    sampling = _sampling(1, temperature, top_p, max_new_tokens, seed, batch_size, None)
    with user_errors():
        config = RLCDConfig(
            _read_text(positive) or RLCD_POSITIVE,
            _read_text(negative) or RLCD_NEGATIVE,
            str(domains) if domains else None,
            router,
        )
        step = RLCDStep(
            generator(model, dtype, device, threads, engine),
            config,
            sampling,
            fmt,  # type: ignore[arg-type]
            keep_truncated,
            max_prompt_tokens,
        )
    output = output or default_output("rlcd", prompts)
    summary = run_step(rows, output, step, run)
    by_domain = {k[7:]: v for k, v in summary.counts.items() if k.startswith("domain ")}
    if by_domain:
        console.print("pairs by domain: " + ", ".join(f"{k} {v}" for k, v in by_domain.items()))


def west_of_n(
    prompts: Prompts,
    output: o.Output = None,
    model: o.Generator = DEFAULT_GENERATOR,
    scorer: Annotated[
        str,
        typer.Option(
            help="Reward: any `eval` scorer spec (density-ratio[:STRONG,WEAK][:REDUCTION],"
            " logprob:..., dpo:..., rm:PATH). Models left out are --strong/--weak."
        ),
    ] = "density-ratio:sum",
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    n: o.N = 4,
    strategy: Annotated[str, typer.Option(help="best-worst | all-pairs.")] = "best-worst",
    min_margin: Annotated[float, typer.Option(help="Keep pairs with a larger margin.")] = 0.0,
    fmt: o.Format = "conversational",
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.85,
    max_new_tokens: o.MaxNewTokens = 256,
    seed: o.Seed = DEFAULT_SEED,
    batch_size: o.BatchSize = 8,
    system_prompt: o.SystemPrompt = None,
    keep_truncated: o.KeepTruncated = True,
    max_prompt_tokens: o.MaxPromptTokens = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
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
    """West-of-N: N samples per prompt, best vs. worst under a reward (sample + pairs)."""
    from prefsmith.data.rows import to_prompt
    from prefsmith.generation.baselines import WestOfNStep
    from prefsmith.generation.pairs import PairsOptions
    from prefsmith.models.pool import ModelPool
    from prefsmith.rewards.spec import ScorerSpec

    check_choice("--strategy", strategy, ("best-worst", "all-pairs"))
    check_choice("--format", fmt, FORMATS)
    run = run_options(on_error, chunk_size, limit, progress, workers, ray_address, gpus_per_worker)
    rows = check_rows(prompts, to_prompt, run)
    sampling = _sampling(n, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt)
    options = PairsOptions(strategy, min_margin, fmt, keep_truncated)  # type: ignore[arg-type]
    with user_errors():
        pool = ModelPool(
            model_options(dtype, device, threads, max_length=max_length, engine=engine)
        )
        reward = ScorerSpec.parse(scorer, strong, weak).build(pool)
        step = WestOfNStep(
            generator(model, dtype, device, threads, engine),
            reward,
            sampling,
            options,
            max_prompt_tokens,
        )
    output = output or default_output("west-of-n", prompts)
    summary = run_step(rows, output, step, run)
    statuses = {
        k.removeprefix("candidates "): v
        for k, v in summary.counts.items()
        if k.startswith("candidates ")
    }
    console.print("candidates: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())))
