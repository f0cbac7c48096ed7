"""``prefsmith sample``, ``prefsmith pairs`` and ``prefsmith rmboost``: make preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli.common import console, fail

DEFAULT_GENERATOR = "smollm2-135m-instruct"

# Options shared by the three commands (typer wants them spelled out per command).
Model = Annotated[
    str, typer.Option("--model", "-m", help="Generator: packaged name, folder, .gguf or hub id.")
]
N = Annotated[int, typer.Option("--n", "-n", help="Responses per prompt.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass (1: no cut).")]
MaxNewTokens = Annotated[
    int, typer.Option(help="Most tokens per response; longer ones are marked truncated.")
]
Seed = Annotated[int, typer.Option(help="Base seed; results do not depend on batching.")]
BatchSize = Annotated[int, typer.Option(help="Sequences generated together.")]
SystemPrompt = Annotated[str | None, typer.Option(help="System turn for prompts without one.")]
ChunkSize = Annotated[int, typer.Option(help="Prompts generated and written together.")]
Limit = Annotated[int | None, typer.Option(help="Use only the first N prompts.")]
MaxPromptTokens = Annotated[
    int | None, typer.Option(help="Set aside prompts longer than this (after the template).")
]
DType = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]
Threads = Annotated[int | None, typer.Option(help="Torch CPU threads.")]
OnError = Annotated[str, typer.Option(help="raise | skip (bad rows go to <output>.rejected.jsonl)")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
Strong = Annotated[str, typer.Option(help="Strong (better aligned) model of the scorer.")]
Weak = Annotated[str, typer.Option(help="Weak (less aligned) model of the scorer.")]
ReductionOpt = Annotated[
    str, typer.Option(help="sum | mean (per token, shared tokenizer) | mean-char.")
]
MaxLength = Annotated[int, typer.Option(help="Longest scored sequence in tokens.")]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="conversational (message lists; TRL applies the chat template) | standard "
        "(strings; single-turn prompts only).",
    ),
]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _load_options(dtype: str, device: str, threads: int | None):
    from prefsmith.models.loading import LoadOptions

    _check_choice("--dtype", dtype, ("auto", "float32", "bfloat16", "float16"))
    _check_choice("--device", device, ("auto", "cpu", "cuda"))
    return LoadOptions(dtype=dtype, device=device, threads=threads)  # type: ignore[arg-type]


def _load_generator(model: str, dtype: str, device: str, threads: int | None):
    from prefsmith.models.loading import load_model

    with console.status(f"loading {model}"):
        return load_model(model, _load_options(dtype, device, threads))


def _build_scorer(strong, weak, reduction, max_length, dtype, device, threads):
    from prefsmith.models.backend import BatchingOptions
    from prefsmith.rewards.density_ratio import Reduction, build_density_ratio_scorer

    _check_choice("--reduction", reduction, tuple(r.value for r in Reduction))
    with console.status(f"loading scorer {strong} over {weak}"):
        return build_density_ratio_scorer(
            strong,
            weak,
            reduction,
            _load_options(dtype, device, threads),
            BatchingOptions(max_length=max_length),
        )


def _errors() -> tuple[type[Exception], ...]:
    from prefsmith.data.rows import RowError
    from prefsmith.models.loading import ModelNotFoundError
    from prefsmith.rewards.density_ratio import IncompatibleModelsError

    return (RowError, ModelNotFoundError, IncompatibleModelsError, FileNotFoundError, ValueError)


def _default_output(kind: str, input_path: Path) -> Path:
    return Path("runs") / f"{kind}-{input_path.name.split('.')[0]}.jsonl"


def sample(
    prompts: Annotated[
        Path,
        typer.Argument(help="Prompts: .jsonl/.json/.parquet rows with 'prompt' or 'messages'."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output .jsonl or .parquet (default runs/sample-*)."),
    ] = None,
    model: Model = DEFAULT_GENERATOR,
    n: N = 4,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.85,
    max_new_tokens: MaxNewTokens = 512,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    system_prompt: SystemPrompt = None,
    goal: Annotated[
        float | None,
        typer.Option(
            help="Condition on this goal score with the relabel template (a policy tuned on"
            " `prefsmith relabel` data; use the scale's top, e.g. 10). Goes before"
            " --system-prompt in the system turn; rows with their own system turn keep theirs."
        ),
    ] = None,
    goal_template: Annotated[
        Path | None, typer.Option(help="Goal template file (default: the relabel one).")
    ] = None,
    chunk_size: ChunkSize = 16,
    limit: Limit = None,
    max_prompt_tokens: MaxPromptTokens = None,
    dtype: DType = "auto",
    device: Device = "auto",
    threads: Threads = None,
    on_error: OnError = "raise",
    progress: Progress = True,
) -> None:
    """Sample N responses per prompt from a generator (resumable; rows: prompt + responses)."""
    if goal is not None:
        from prefsmith.relabel.pairs import goal_system_prompt

        try:
            system_prompt = goal_system_prompt(goal, goal_template, system_prompt)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
    from prefsmith.generation.sampling import (
        SampleFileOptions,
        SamplingConfig,
        read_prompts,
        sample_file,
    )

    _check_choice("--on-error", on_error, ("raise", "skip"))
    output = output or _default_output("sample", prompts)
    try:
        config = SamplingConfig(
            n, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt
        )
        read_prompts(prompts, system_prompt, on_error, limit)  # fail before loading the model
        loaded = _load_generator(model, dtype, device, threads)
        options = SampleFileOptions(chunk_size, limit, max_prompt_tokens, on_error, progress)  # type: ignore[arg-type]
        summary = sample_file(prompts, output, loaded, config, options)
    except _errors() as err:
        fail(str(err))
        return
    rate = summary.samples / summary.seconds if summary.seconds else 0.0
    per_prompt = summary.seconds / summary.prompts if summary.prompts else 0.0
    console.print(
        f"sampled {summary.prompts} prompts x {n} = {summary.samples} responses in"
        f" {summary.seconds:.1f}s ({per_prompt:.1f}s/prompt, {rate:.2f} samples/s,"
        f" {summary.tokens / max(summary.seconds, 1e-9):.1f} tok/s); {summary.truncated}"
        f" truncated; {summary.already_done} already done, {summary.rejected} set aside"
        f" -> {summary.output}"
    )


def pairs(
    candidates: Annotated[
        Path, typer.Argument(help="Rows with 'prompt'/'messages' and 'responses' (from sample).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output .jsonl or .parquet (default runs/pairs-*)."),
    ] = None,
    strong: Strong = "smollm2-135m-instruct",
    weak: Weak = "gemma3-270m",
    reduction: ReductionOpt = "sum",
    strategy: Annotated[
        str, typer.Option(help="best-worst (one pair per prompt) | all-pairs.")
    ] = "best-worst",
    min_margin: Annotated[
        float, typer.Option(help="Keep a pair only if its reward margin is above this.")
    ] = 0.0,
    fmt: Format = "conversational",
    keep_truncated: Annotated[
        bool, typer.Option(help="Keep candidates that hit max_new_tokens.")
    ] = False,
    system_prompt: Annotated[
        str | None,
        typer.Option(help="System turn for scoring (default: the one used when sampling)."),
    ] = None,
    max_length: MaxLength = 2048,
    chunk_size: Annotated[int, typer.Option(help="Rows scored and written together.")] = 64,
    dtype: DType = "auto",
    device: Device = "auto",
    threads: Threads = None,
    on_error: OnError = "raise",
    progress: Progress = True,
) -> None:
    """Score sampled candidates with the density ratio; keep best vs. worst (or all) pairs."""
    from prefsmith.generation.pairs import PairsOptions, make_pairs, read_candidates

    _check_choice("--strategy", strategy, ("best-worst", "all-pairs"))
    _check_choice("--format", fmt, ("conversational", "standard"))
    _check_choice("--on-error", on_error, ("raise", "skip"))
    output = output or _default_output("pairs", candidates)
    options = PairsOptions(
        strategy,  # type: ignore[arg-type]
        min_margin,
        fmt,  # type: ignore[arg-type]
        keep_truncated,
        system_prompt,
        chunk_size,
        on_error,  # type: ignore[arg-type]
        progress,
    )
    try:
        _, bad = read_candidates(candidates, options)  # fail before loading models
        if bad and on_error == "raise":
            fail(f"{bad[0]}" + (f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""))
        scorer = _build_scorer(strong, weak, reduction, max_length, dtype, device, threads)
        summary = make_pairs(candidates, output, scorer, options)
    except _errors() as err:
        fail(str(err))
        return
    dropped = ", ".join(f"{v} {k}" for k, v in summary.dropped.items()) or "none"
    statuses = ", ".join(f"{v} {k}" for k, v in summary.candidates.items())
    console.print(
        f"{summary.pairs} pairs from {summary.prompts} prompts (scored {summary.scored} in"
        f" {summary.seconds:.1f}s); candidates: {statuses}; prompts dropped: {dropped}"
        f" -> {summary.output}"
    )


def rmboost(
    prompts: Annotated[
        Path,
        typer.Argument(help="Prompts: .jsonl/.json/.parquet rows with 'prompt' or 'messages'."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output .jsonl or .parquet (default runs/rmboost-*)."),
    ] = None,
    model: Model = DEFAULT_GENERATOR,
    aspects: Annotated[
        str,
        typer.Option(help="Comma-separated quality aspects to draw from."),
    ] = "helpfulness,relevance,completeness,correctness,harmlessness",
    num_aspects: Annotated[int, typer.Option(help="Aspects drawn per prompt (0: all).")] = 2,
    p_better: Annotated[
        float, typer.Option(help="Probability that the second response must be better.")
    ] = 0.5,
    templates: Annotated[
        Path | None,
        typer.Option(help="Folder with system.txt, better.txt, worse.txt (default: built in)."),
    ] = None,
    fmt: Format = "conversational",
    check: Annotated[
        bool, typer.Option(help="Score every pair with the density ratio; record agreement.")
    ] = False,
    filter_agreement: Annotated[
        bool, typer.Option(help="Keep only pairs the scorer agrees with (needs --check).")
    ] = False,
    strong: Strong = "smollm2-135m-instruct",
    weak: Weak = "gemma3-270m",
    reduction: ReductionOpt = "sum",
    max_length: MaxLength = 2048,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.85,
    max_new_tokens: MaxNewTokens = 512,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    system_prompt: SystemPrompt = None,
    keep_truncated: Annotated[
        bool, typer.Option(help="Keep pairs where a response hit max_new_tokens.")
    ] = False,
    chunk_size: ChunkSize = 16,
    limit: Limit = None,
    max_prompt_tokens: MaxPromptTokens = None,
    dtype: DType = "auto",
    device: Device = "auto",
    threads: Threads = None,
    on_error: OnError = "raise",
    progress: Progress = True,
) -> None:
    """RMBoost: a first response, a drawn label and aspects, then a better/worse rewrite."""
    from prefsmith.generation.rmboost import (
        RMBoostConfig,
        RMBoostFileOptions,
        load_templates,
        rmboost_check,
        rmboost_generate,
        summarize,
    )
    from prefsmith.generation.sampling import SamplingConfig, read_prompts

    _check_choice("--format", fmt, ("conversational", "standard"))
    _check_choice("--on-error", on_error, ("raise", "skip"))
    if filter_agreement and not check:
        fail("--filter-agreement needs --check (the density-ratio check)")
    output = output or _default_output("rmboost", prompts)
    try:
        config = RMBoostConfig(
            tuple(a.strip() for a in aspects.split(",") if a.strip()),
            num_aspects,
            p_better,
            seed,
            str(templates) if templates else None,
            keep_truncated,
        )
        sampling = SamplingConfig(
            1, temperature, top_p, max_new_tokens, seed, batch_size, system_prompt
        )
        load_templates(config.templates)
        read_prompts(prompts, system_prompt, on_error, limit)  # fail before loading models
        loaded = _load_generator(model, dtype, device, threads)
        options = RMBoostFileOptions(chunk_size, limit, max_prompt_tokens, on_error, progress)  # type: ignore[arg-type]
        generated, seconds, tokens = rmboost_generate(
            prompts, output, loaded, sampling, config, options
        )
        del loaded
        if check:
            scorer = _build_scorer(strong, weak, reduction, max_length, dtype, device, threads)
            rmboost_check(output, scorer, progress)
        summary = summarize(output, generated, seconds, tokens, fmt, check, filter_agreement)  # type: ignore[arg-type]
    except _errors() as err:
        fail(str(err))
        return
    per_prompt = seconds / generated if generated else 0.0
    dropped = ", ".join(f"{v} {k}" for k, v in summary.dropped.items()) or "none"
    console.print(
        f"generated {generated} prompts in {seconds:.1f}s ({per_prompt:.1f}s/prompt,"
        f" {tokens / max(seconds, 1e-9):.1f} tok/s); {summary.pairs} pairs written from"
        f" {summary.prompts} prompts; dropped: {dropped} -> {summary.output}"
    )
    if check:
        parts = []
        for key in ("all", "better", "worse"):
            value = summary.agreement[key]
            shown = "-" if value is None else f"{value:.1%}"
            parts.append(f"{key} {shown} of {summary.checked[key]}")
        console.print("scorer agrees with the intended label: " + "; ".join(parts))
