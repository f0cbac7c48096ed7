"""``prefsmith relabel``, ``train`` and ``judge``: from scored pairs to a tuned, judged policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.cli.common import console, fail


def relabel(
    input_path: Annotated[
        Path, typer.Argument(help="Scored pairs (.jsonl, .json, .parquet or HF dataset folder).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output .jsonl or .parquet. Default: runs/relabel-<input>.jsonl"
        ),
    ] = None,
    chosen_reward: Annotated[
        str, typer.Option(help="Column with the chosen response's reward.")
    ] = "reward_chosen",
    rejected_reward: Annotated[
        str, typer.Option(help="Column with the rejected response's reward.")
    ] = "reward_rejected",
    scale: Annotated[
        str,
        typer.Option(
            help="quantile (dataset ECDF) | minmax | identity (rewards already on the scale)."
        ),
    ] = "quantile",
    low: Annotated[float, typer.Option(help="Lowest goal score.")] = 1.0,
    high: Annotated[float, typer.Option(help="Highest goal score.")] = 10.0,
    decimals: Annotated[int, typer.Option(help="Round goals to this many decimals.")] = 1,
    ties: Annotated[
        str,
        typer.Option(
            help="Equal goals: drop the pair | chosen (keep the original label only) | both."
        ),
    ] = "drop",
    template: Annotated[
        Path | None, typer.Option(help="Goal system-prompt template file with {goal}.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="conversational (messages) | standard (strings).")
    ] = "conversational",
    keep: Annotated[
        list[str] | None, typer.Option(help="Input column to copy to the output (repeatable).")
    ] = None,
) -> None:
    """Reward-augmented relabeling: two goal-conditioned pairs per scored pair."""
    from prefsmith.data.rows import RowError
    from prefsmith.relabel.files import RelabelOptions, relabel_file
    from prefsmith.relabel.scale import GoalScale

    if ties not in ("drop", "chosen", "both"):
        fail(f"--ties must be drop, chosen or both, not {ties!r}")
    if fmt not in ("conversational", "standard"):
        fail(f"--format must be conversational or standard, not {fmt!r}")
    output = output or Path("runs") / f"relabel-{input_path.name.split('.')[0]}.jsonl"
    try:
        options = RelabelOptions(
            chosen_reward=chosen_reward,
            rejected_reward=rejected_reward,
            scale=GoalScale(scale, low, high, decimals),  # type: ignore[arg-type]
            tie_rule=ties,  # type: ignore[arg-type]
            template=str(template) if template else None,
            output_format=fmt,  # type: ignore[arg-type]
            keep_columns=tuple(keep or ()),
        )
        summary = relabel_file(input_path, output, options)
    except (RowError, FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
    console.print(
        f"{summary.inputs} pairs -> {summary.written} goal-conditioned rows"
        f" ({summary.ties} ties, rule {ties}); goals by {scale} on {low:g}..{high:g}"
        f" -> {summary.output} (mapping in {summary.output.name}.relabel.json)"
    )
