"""Command-line options, spelled once and shared by every command (typer ``Annotated`` types).

Only typer is imported here, so ``prefsmith --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.defaults import (
    DEVICES,
    GENERATION_DTYPES,
    ON_ERROR,
    REDUCTIONS,
    SCORING_DTYPES,
)


def _choices(values: tuple[str, ...]) -> str:
    return " | ".join(values)


Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Output file (.jsonl or .parquet).")
]
OutputDir = Annotated[Path | None, typer.Option("--output", "-o", help="Output folder.")]
Strong = Annotated[
    str, typer.Option(help="Strong (better aligned) model: packaged name, folder, .gguf or hub id.")
]
Weak = Annotated[str, typer.Option(help="Weak (less aligned) model.")]
Generator = Annotated[
    str, typer.Option("--model", "-m", help="Generator: packaged name, folder, .gguf or hub id.")
]
Reduction = Annotated[
    str, typer.Option(help=f"{_choices(REDUCTIONS)} (mean: per token, shared tokenizer only).")
]
DType = Annotated[str, typer.Option(help=_choices(SCORING_DTYPES))]
GenDType = Annotated[str, typer.Option("--dtype", help=_choices(GENERATION_DTYPES))]
Device = Annotated[str, typer.Option(help=_choices(DEVICES))]
Threads = Annotated[int | None, typer.Option(help="Torch CPU threads.")]
MaxLength = Annotated[
    int,
    typer.Option(help="Longest scored sequence in tokens (longer rows lose prompt tokens)."),
]
BatchTokens = Annotated[int, typer.Option(help="Padded tokens per forward pass.")]
MaxBatchSize = Annotated[int, typer.Option(help="Rows per forward pass at most.")]
SystemPrompt = Annotated[str | None, typer.Option(help="System turn for rows without one.")]
OnError = Annotated[
    str, typer.Option(help=f"{_choices(ON_ERROR)} (skip: bad rows go to <output>.rejected.jsonl)")
]
ChunkSize = Annotated[int, typer.Option(help="Rows processed and written together.")]
Limit = Annotated[int | None, typer.Option(help="Use only the first N input rows.")]
Progress = Annotated[bool, typer.Option(help="Show progress.")]
SaveTokens = Annotated[
    bool, typer.Option(help="Store per-token log-probs of both models (for `prefsmith report`).")
]
Domains = Annotated[
    Path | None,
    typer.Option(
        help="Domains YAML for the customized density ratio (criteria and exemplars per domain)."
        " Default with --router: the shipped default.yaml."
    ),
]
Router = Annotated[
    str | None,
    typer.Option(
        help="Route prompts to domains: embedding | rules | lm (default with --domains: embedding)."
    ),
]
Exemplars = Annotated[
    str, typer.Option(help="How exemplars enter the context: system | turns | none.")
]
N = Annotated[int, typer.Option("--n", "-n", help="Responses per prompt.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass (1: no cut).")]
MaxNewTokens = Annotated[int, typer.Option(help="Most tokens per response.")]
Seed = Annotated[int, typer.Option(help="Base seed; results do not depend on batching.")]
BatchSize = Annotated[int, typer.Option(help="Sequences generated together.")]
MaxPromptTokens = Annotated[
    int | None, typer.Option(help="Reject prompts longer than this (after the template).")
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="conversational (message lists; TRL applies the chat template) | standard "
        "(strings; single-turn prompts only).",
    ),
]
KeepTruncated = Annotated[
    bool, typer.Option(help="Keep responses that hit --max-new-tokens (marked in the rows).")
]
Cache = Annotated[
    Path | None, typer.Option("--cache", help="Log-prob cache file (default in PREFSMITH_HOME).")
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Do not read or write the on-disk log-prob cache.")
]
WriteReport = Annotated[
    bool,
    typer.Option(
        "--report/--no-report", help="Write a self-contained HTML report of the output at the end."
    ),
]
Engine = Annotated[
    str,
    typer.Option(
        help="hf (transformers in process; exact reference) | vllm (pip install"
        " 'prefsmith[vllm]'), optionally with vLLM options, e.g."
        " vllm:tensor_parallel_size=8,gpu_memory_utilization=0.45 (see docs/engines.md)."
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        help="0: run in this process. N: run the rows on N Ray workers, each with its own models"
        " (pip install 'prefsmith[ray]'; see docs/engines.md). The output is the same."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(help="Ray cluster for --workers (auto, ray://HOST:10001); default: a local one."),
]
GpusPerWorker = Annotated[float, typer.Option(help="GPUs Ray gives each --workers worker.")]
SplitModels = Annotated[
    bool,
    typer.Option(
        help="With --workers: one pool of workers per model (strong, weak), so that each worker"
        " (each GPU) holds one model."
    ),
]
