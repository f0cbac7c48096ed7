"""``prefsmith score``: annotate rows with density-ratio rewards."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli.common import console, fail

DEFAULT_INPUT = "rewardbench-tiny (shipped with prefsmith)"


def default_input() -> Path:
    """The small RewardBench-style pair set shipped inside the package."""
    return Path(str(files("prefsmith").joinpath("resources/rewardbench-tiny.jsonl")))


def score(
    input_path: Annotated[
        Path | None,
        typer.Argument(
            help="Rows to score: .jsonl, .json, .parquet or a saved HF dataset "
            f"folder. Default: {DEFAULT_INPUT}.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output .jsonl or .parquet. Default: runs/score-<input name>.jsonl",
        ),
    ] = None,
    strong: Annotated[
        str,
        typer.Option(
            help="Strong (better aligned) model: packaged name, folder, .gguf file or hub id."
        ),
    ] = "smollm2-135m-instruct",
    weak: Annotated[str, typer.Option(help="Weak (less aligned) model.")] = "gemma3-270m",
    reduction: Annotated[
        str,
        typer.Option(help="sum | mean (per token, shared tokenizer) | mean-char (per character)."),
    ] = "sum",
    system_prompt: Annotated[str | None, typer.Option(help="System turn for both models.")] = None,
    dtype: Annotated[
        str, typer.Option(help="auto | float32 | bfloat16 | float16 | float64")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    max_length: Annotated[
        int,
        typer.Option(
            help="Longest sequence in tokens; longer rows keep "
            "the response and lose prompt tokens from the left."
        ),
    ] = 2048,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 8192,
    max_batch_size: Annotated[int, typer.Option(help="Rows per forward pass at most.")] = 64,
    chunk_size: Annotated[int, typer.Option(help="Rows scored and written together.")] = 256,
    save_token_logprobs: Annotated[bool, typer.Option(help="Store per-token log-probs.")] = False,
    on_error: Annotated[
        str, typer.Option(help="raise | skip (bad rows go to <output>.rejected.jsonl)")
    ] = "raise",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    domains: Annotated[
        Path | None,
        typer.Option(
            help="Domains YAML for the customized density ratio (criteria system prompts and"
            " exemplars per domain). Default with --router: the shipped default.yaml."
        ),
    ] = None,
    router: Annotated[
        str | None,
        typer.Option(
            help="Route each prompt to a domain: embedding | rules | lm. Default with --domains:"
            " embedding."
        ),
    ] = None,
    exemplars: Annotated[
        str,
        typer.Option(
            help="How domain exemplars enter the context: system (inside the system turn) |"
            " turns (earlier user/assistant turns) | none."
        ),
    ] = "system",
) -> None:
    """Score responses with the density ratio log p_strong(y|x) - log p_weak(y|x)."""
    from prefsmith.data.io import read_jsonl_rows
    from prefsmith.data.rows import RowError
    from prefsmith.evaluation.report import pair_accuracy_table, reward_summary_table
    from prefsmith.models.backend import BatchingOptions
    from prefsmith.models.loading import LoadOptions, ModelNotFoundError
    from prefsmith.rewards.annotate import AnnotateOptions, annotate_file, read_input
    from prefsmith.rewards.density_ratio import (
        IncompatibleModelsError,
        Reduction,
        build_density_ratio_scorer,
    )

    if on_error not in ("raise", "skip"):
        fail(f"--on-error must be raise or skip, not {on_error!r}")
    if reduction not in {r.value for r in Reduction}:
        fail(f"--reduction must be one of sum, mean, mean-char, not {reduction!r}")
    from prefsmith.routing.customize import EXEMPLAR_STYLES, Customizer
    from prefsmith.routing.domains import DomainsError, load_domains
    from prefsmith.routing.routers import ROUTERS, make_router

    customizing = domains is not None or router is not None
    router = router or "embedding"
    if customizing and router not in ROUTERS:
        fail(f"--router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if exemplars not in EXEMPLAR_STYLES:
        fail(f"--exemplars must be one of {', '.join(EXEMPLAR_STYLES)}, not {exemplars!r}")
    input_path = input_path or default_input()
    output = output or Path("runs") / f"score-{input_path.name.split('.')[0]}.jsonl"
    options = AnnotateOptions(system_prompt, on_error, chunk_size, save_token_logprobs, progress)
    try:
        validated = read_input(input_path, options)  # before loading any model
        domain_set = load_domains(domains) if customizing else None
        with console.status(f"loading {strong} and {weak}"):
            scorer = build_density_ratio_scorer(
                strong,
                weak,
                reduction,
                LoadOptions(dtype=dtype, device=device, threads=threads),  # type: ignore[arg-type]
                BatchingOptions(max_length, batch_tokens, max_batch_size),
            )
        customizer = None
        if domain_set is not None:
            with console.status(f"loading the {router} router"):
                routing = make_router(router, domain_set, scorer.strong)
            customizer = Customizer(domain_set, routing, exemplars)  # type: ignore[arg-type]
        summary = annotate_file(validated, output, scorer, options, customizer)
    except (
        DomainsError,
        RowError,
        IncompatibleModelsError,
        ModelNotFoundError,
        FileNotFoundError,
        ValueError,
    ) as err:
        fail(str(err))
        return
    console.print(
        f"scored {summary.scored} rows ({summary.responses} responses) in {summary.seconds:.1f}s;"
        f" {summary.already_done} already done, {summary.rejected} rejected -> {summary.output}"
    )
    rows = read_jsonl_rows(output) if output.suffix == ".jsonl" else _read_parquet(output)
    pairs = [r for r in rows if "reward_margin" in r]
    if pairs:
        console.print(pair_accuracy_table(pairs, f"{strong} over {weak} ({reduction})"))
    if customizing:
        from prefsmith.routing.report import routing_table

        console.print(routing_table(rows))
    candidates = [r for r in rows if "rewards" in r]
    if candidates:
        console.print(reward_summary_table(candidates))


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
