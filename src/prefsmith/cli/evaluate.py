"""``prefsmith eval`` and ``prefsmith study``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prefsmith.cli.common import console, fail


def _cache(no_cache: bool, cache_path: Path | None):
    from prefsmith.models.cache import LogProbCache

    return None if no_cache else LogProbCache(cache_path)


def evaluate(
    data: Annotated[
        Path,
        typer.Argument(
            help="RewardBench-format pairs (.jsonl/.json/.parquet/"
            "dataset folder) with prompt, chosen, rejected, subset."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "runs/eval"
    ),
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            help="density-ratio[:sum|mean"
            "|mean-char], logprob[:sum|mean|mean-char] or dpo[:BETA]; repeatable.",
        ),
    ] = None,
    strong: Annotated[
        str, typer.Option(help="Strong model / DPO policy.")
    ] = "smollm2-135m-instruct",
    weak: Annotated[str, typer.Option(help="Weak model / DPO reference.")] = "gemma3-270m",
    system_prompt: Annotated[str | None, typer.Option(help="System turn for both models.")] = None,
    dtype: Annotated[
        str, typer.Option(help="auto | float32 | bfloat16 | float16 | float64")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest sequence in tokens.")] = 2048,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 8192,
    cache_path: Annotated[Path | None, typer.Option("--cache", help="Log-prob cache file.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Compute everything afresh.")
    ] = False,
    domains: Annotated[
        Path | None,
        typer.Option(
            help="Domains YAML: also evaluate the customized density ratio (+cdr columns)."
            " Default with --router: the shipped default.yaml."
        ),
    ] = None,
    router: Annotated[str | None, typer.Option(help="embedding | rules | lm")] = None,
    exemplars: Annotated[str, typer.Option(help="system | turns | none")] = "system",
) -> None:
    """Evaluate scorers as reward models: pairwise accuracy per subset and section."""
    from prefsmith.data.rows import RowError
    from prefsmith.evaluation.harness import Customization, write_outputs
    from prefsmith.evaluation.harness import evaluate as run_eval
    from prefsmith.evaluation.scorers import ScorerSpec
    from prefsmith.models.backend import BatchingOptions
    from prefsmith.models.loading import LoadOptions, ModelNotFoundError
    from prefsmith.routing.domains import DomainsError, load_domains

    try:
        specs = [ScorerSpec.parse(s) for s in scorer or ["density-ratio:sum"]]
        customization = None
        if domains is not None or router is not None:
            customization = Customization(load_domains(domains), router or "embedding", exemplars)
        result = run_eval(
            data,
            specs,
            strong,
            weak,
            LoadOptions(dtype=dtype, device=device, threads=threads),  # type: ignore[arg-type]
            BatchingOptions(max_length=max_length, max_batch_tokens=batch_tokens),
            _cache(no_cache, cache_path),
            system_prompt,
            customization,
        )
    except (DomainsError, RowError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
    paths = write_outputs(result, output)
    console.print(eval_table(result))
    if result.routing is not None:
        from prefsmith.routing.report import confusion_table

        console.print(confusion_table(result.routing["confusion"]))
    computed = {role: m.get("computed") for role, m in result.models.items()}
    console.print(f"responses computed (rest from cache): {computed}; timings {result.timings}")
    console.print("wrote " + ", ".join(str(p) for p in paths))


def eval_table(result) -> Table:
    """Sections (and subsets) as rows, scorers as columns."""
    from prefsmith.evaluation.harness import SECTION_ORDER

    table = Table(title=f"Reward-model accuracy ({result.pairs} pairs)")
    table.add_column("subset / section")
    table.add_column("pairs", justify="right")
    for s in result.scorers:
        table.add_column(s.scorer, justify="right")
    for subset, info in result.scorers[0].subsets.items():
        label = subset if info["section"] else f"{subset} (unknown section)"
        cells = [f"{s.subsets[subset]['accuracy']:.3f}" for s in result.scorers]
        table.add_row(label, str(info["total"]), *cells)
    table.add_section()
    for section in SECTION_ORDER:
        if any(section in s.sections for s in result.scorers):
            cells = [
                f"{s.sections[section]:.3f}" if section in s.sections else ""
                for s in result.scorers
            ]
            table.add_row(f"[bold]{section}[/]", "", *cells)
    return table


def study(
    data: Annotated[Path, typer.Argument(help="RewardBench-format pairs.")],
    model: Annotated[
        list[str],
        typer.Option("--model", help="A model to include; repeat for each (at least two)."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "runs/study"
    ),
    reduction: Annotated[str, typer.Option(help="sum | mean-char")] = "sum",
    strength: Annotated[
        Path | None,
        typer.Option(
            help="JSON {model: benchmark score} giving "
            "each model's strength; default: its own ref-free accuracy."
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="auto | float32 | bfloat16 | float16 | float64")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    max_length: Annotated[int, typer.Option(help="Longest sequence in tokens.")] = 2048,
    cache_path: Annotated[Path | None, typer.Option("--cache", help="Log-prob cache file.")] = None,
) -> None:
    """Evaluate every ordered strong/weak pair of the given models with one pass per model."""
    from prefsmith.data.rows import RowError
    from prefsmith.evaluation.study import run_study, write_study
    from prefsmith.models.backend import BatchingOptions
    from prefsmith.models.loading import LoadOptions, ModelNotFoundError

    try:
        strengths = json.loads(strength.read_text()) if strength else None
        result = run_study(
            data,
            model,
            reduction,
            strengths,  # type: ignore[arg-type]
            LoadOptions(dtype=dtype, device=device),  # type: ignore[arg-type]
            BatchingOptions(max_length=max_length),
            _cache(False, cache_path),
        )
    except (RowError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
    paths = write_study(result, output)
    table = Table(title=f"{len(result.pairs)} ordered pairs from {result.passes} passes")
    for column in ("strong", "weak", "gap", "Chat", "Chat Hard", "Safety", "Reasoning", "Overall"):
        table.add_column(column, justify="left" if column in ("strong", "weak") else "right")
    for p in sorted(result.pairs, key=lambda p: -p.sections["Overall"]):
        cells = [
            f"{p.sections.get(s, float('nan')):.3f}"
            for s in ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")
        ]
        table.add_row(p.strong, p.weak, f"{p.gap:+.3f}", *cells)
    console.print(table)
    console.print(f"Spearman(gap, overall accuracy) = {result.spearman}")
    console.print("wrote " + ", ".join(str(p) for p in paths))
