"""``prefsmith eval`` and ``prefsmith study``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from prefsmith.cli import options as o
from prefsmith.cli.common import (
    check_rows,
    console,
    customization,
    model_options,
    run_options,
    user_errors,
    write_html_report,
)
from prefsmith.defaults import DEFAULT_DTYPE, DEFAULT_MAX_LENGTH, DEFAULT_STRONG, DEFAULT_WEAK

Data = Annotated[
    Path,
    typer.Argument(help="RewardBench-format pairs (.jsonl/.json/.parquet/dataset folder)."),
]
Scorers = Annotated[
    list[str] | None,
    typer.Option(
        "--scorer",
        help="KIND[:STRONG,WEAK][:OPTION]: density-ratio[:sum|mean|mean-char],"
        " logprob[:MODEL][:sum|mean|mean-char], contrast[:MODEL][:sum|mean|mean-char][+empty]"
        " (one model under a positive over a negative system prompt), dpo[:POLICY,REF][:BETA],"
        " rm:PATH (a trained reward model, e.g. `train --method rm`'s final/), fitted:FILE[#NAME]"
        " (a model of an `eval --fit` fit.json, or a shipped fit such as"
        " rewardbench-dev-qwen15-length); repeatable. Models left out are --strong/--weak.",
    ),
]
ContrastPrompts = Annotated[
    Path | None,
    typer.Option(
        help="Prompts YAML of contrast: scorers (positive, negative, domain_negative);"
        " default: the shipped resources/contrast/prompts.yaml."
    ),
]
Fit = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated fits on the scored pairs, cross-validated (held-out rows `cv:...`"
        " join the table; models fitted on all rows go to fit.json): length, ensemble, average,"
        " calibration.",
    ),
]
Folds = Annotated[int, typer.Option(help="Cross-validation folds of --fit.")]
FitSeed = Annotated[int, typer.Option(help="Seed of the --fit folds and bootstrap.")]
Baseline = Annotated[
    str | None,
    typer.Option(help="Scorer spec the others are compared with (default: the first --scorer)."),
]
LengthUnit = Annotated[str, typer.Option(help="Length of --fit length: chars | tokens.")]


def _pool(
    dtype: str, device: str, threads: int | None, max_length: int, cache: Any, engine: str = "hf"
) -> Any:
    from prefsmith.models.pool import ModelPool

    options = model_options(dtype, device, threads, max_length=max_length, engine=engine)
    return ModelPool(options, cache)


def _cache(no_cache: bool, path: Path | None) -> Any:
    from prefsmith.models.cache import LogProbCache

    return LogProbCache(":memory:" if no_cache else path)


def evaluate(
    data: Data,
    output: o.OutputDir = None,
    scorer: Scorers = None,
    strong: o.Strong = DEFAULT_STRONG,
    weak: o.Weak = DEFAULT_WEAK,
    system_prompt: o.SystemPrompt = None,
    domains: o.Domains = None,
    router: o.Router = None,
    exemplars: o.Exemplars = "system",
    save_token_logprobs: o.SaveTokens = False,
    dtype: o.DType = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
    engine: o.Engine = "hf",
    cache_path: o.Cache = None,
    no_cache: o.NoCache = False,
    on_error: o.OnError = "raise",
    progress: o.Progress = True,
    workers: o.Workers = 0,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
    split_models: o.SplitModels = False,
    report: o.WriteReport = True,
    contrast_prompts: ContrastPrompts = None,
    fit: Fit = None,
    folds: Folds = 5,
    fit_seed: FitSeed = 0,
    baseline: Baseline = None,
    length_unit: LengthUnit = "chars",
) -> None:
    """Evaluate scorers as reward models: pairwise accuracy per subset and section."""
    from prefsmith.evaluation.fit import FitOptions, fit_evaluation
    from prefsmith.evaluation.harness import evaluate_file, prepare_pair
    from prefsmith.rewards.spec import ScorerSpec

    output = output or Path("runs/eval")
    run = run_options(
        on_error, 64, None, progress, workers, ray_address, gpus_per_worker, split_models
    )
    rows = check_rows(data, lambda row: prepare_pair(row, system_prompt), run)
    with user_errors():
        fit_options = None
        if fit:
            methods = tuple(m.strip() for m in fit.split(",") if m.strip())
            base = ScorerSpec.parse(baseline, strong, weak).name if baseline else None
            fit_options = FitOptions(methods, folds, fit_seed, base, length_unit)
        pool = _pool(dtype, device, threads, max_length, _cache(no_cache, cache_path), engine)
        specs = [ScorerSpec.parse(s, strong, weak) for s in scorer or ["density-ratio:sum"]]
        rewards = [spec.build(pool, None, contrast_prompts) for spec in specs]
        if custom := customization(domains, router, exemplars):
            rewards += [
                spec.build(pool, custom, contrast_prompts) for spec in specs if spec.kind != "rm"
            ]
        result = evaluate_file(rows, rewards, output, run, system_prompt, save_token_logprobs)
        if fit_options is not None:
            fit_evaluation(result, output, fit_options)
    for table in eval_tables(result, console.width):
        console.print(table)
    console.print(scorer_legend(result), highlight=False, soft_wrap=True)
    if result.fit is not None:
        console.print(fit_table(result))
    if result.routing is not None:
        from prefsmith.evaluation.routing import confusion_table

        console.print(confusion_table(result.routing["confusion"]))
    written = "results.json, report.md, rows.jsonl and plots"
    if result.fit is not None:
        written += ", fit.json (models fitted on all rows) and reliability.png"
    console.print(f"wrote {output}/{written}", highlight=False)
    if report:
        write_html_report(output)


def eval_tables(result: Any, width: int = 80) -> list[Table]:
    """Subsets and sections as rows, scorers (``#k``) as columns, accuracy in percent.

    As many scorer columns as fit in ``width`` go in one table; more scorers make more
    tables (``#1-#6``, ``#7-#12``, ...) instead of columns squeezed into ``…``.
    """
    from prefsmith.evaluation.sections import SECTION_ORDER

    scorers = list(enumerate(result.scorers, start=1))
    subsets = result.scorers[0].subsets
    labels = [s if info["section"] else f"{s} (unknown section)" for s, info in subsets.items()]
    label_width = max([len(x) for x in labels] + [len("subset / section")])
    per_table = max(1, (width - 1 - (label_width + 3) - 8) // 8)  # a cell: "100.0" + 3
    tables = []
    for start in range(0, len(scorers), per_table):
        chunk = scorers[start : start + per_table]
        which = "" if len(scorers) <= per_table else f", #{chunk[0][0]}-#{chunk[-1][0]}"
        table = Table(title=f"Reward-model accuracy, % ({result.pairs} pairs{which})")
        table.add_column("subset / section", no_wrap=True)
        table.add_column("pairs", justify="right")
        for k, _ in chunk:
            table.add_column(f"#{k}", justify="right", no_wrap=True)
        for (subset, info), label in zip(subsets.items(), labels, strict=True):
            cells = [f"{100 * s.subsets[subset]['accuracy']:.1f}" for _, s in chunk]
            table.add_row(label, str(info["total"]), *cells)
        table.add_section()
        for section in SECTION_ORDER:
            if any(section in s.sections for _, s in chunk):
                cells = [
                    f"{100 * s.sections[section]:.1f}" if section in s.sections else ""
                    for _, s in chunk
                ]
                table.add_row(f"[bold]{section}[/]", "", *cells)
        tables.append(table)
    return tables


def fit_table(result: Any) -> Table:
    """Each scorer and held-out fit against the baseline: overall, difference, interval, signs."""
    from prefsmith.evaluation.fit import held_out_ece

    fit = result.fit
    table = Table(
        title=f"Against #{_column(result, fit['baseline'])} ({fit['folds']}-fold held-out fits,"
        " paired bootstrap 95 % interval, sign test)"
    )
    for column in ("#", "overall", "diff", "95 % CI", "wins/losses", "sign p", "held-out ECE"):
        table.add_column(column, justify="right")
    ece = held_out_ece(fit["calibration"])
    for k, scorer in enumerate(result.scorers, start=1):
        name = scorer.scorer
        comparison = fit["comparisons"].get(name.removeprefix("cv:"))
        cells = ["", "", "", ""]
        if comparison is not None:
            b, sign = comparison["bootstrap"], comparison["sign"]
            cells = [
                f"{100 * b['difference']:+.1f}",
                f"[{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]",
                f"{sign['wins']}/{sign['losses']}",
                f"{sign['p']:.3f}",
            ]
        calibrated = ece.get(name)
        table.add_row(
            f"#{k}",
            f"{100 * scorer.sections.get('Overall', float('nan')):.1f}",
            *cells,
            "" if calibrated is None else f"{calibrated:.3f}",
        )
    return table


def _column(result: Any, name: str) -> int:
    names = [s.scorer for s in result.scorers]
    return names.index(name) + 1 if name in names else 0


def scorer_legend(result: Any) -> str:
    """The full name of each numbered scorer column, one per line."""
    return "\n".join(f"#{k}: {s.scorer}" for k, s in enumerate(result.scorers, start=1))


def study(
    data: Data,
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="A model to include; repeat (at least 2).")
    ],
    output: o.OutputDir = None,
    reduction: Annotated[str, typer.Option(help="sum | mean-char")] = "sum",
    strength: Annotated[
        Path | None,
        typer.Option(help="JSON {model: benchmark score}; default: own reference-free accuracy."),
    ] = None,
    dtype: o.DType = DEFAULT_DTYPE,
    device: o.Device = "auto",
    threads: o.Threads = None,
    max_length: o.MaxLength = DEFAULT_MAX_LENGTH,
    cache_path: o.Cache = None,
) -> None:
    """Evaluate every ordered strong/weak pair of the given models with one pass per model."""
    from prefsmith.evaluation.study import load_strengths, run_study, write_study

    output = output or Path("runs/study")
    with user_errors():
        strengths = load_strengths(strength) if strength else None
        pool = _pool(dtype, device, threads, max_length, _cache(False, cache_path))
        result = run_study(data, model, reduction, strengths, pool)
    paths = write_study(result, output)
    console.print(study_table(result))
    rho = "undefined" if result.spearman is None else f"{result.spearman:.3f}"
    p_value = "" if result.spearman_p is None else f" (p = {result.spearman_p:.3g})"
    console.print(f"Spearman correlation of gap and overall accuracy: {rho}{p_value}")
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


def study_table(result: Any) -> Table:
    """One row per ordered pair, best first; accuracy in percent, as in ``study.md``.

    The pair takes three lines (strong, ``> weak``, the strength gap), so that full model
    names fit an 80-column terminal next to the five scores.
    """
    sections = ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")
    table = Table(
        title=f"{len(result.pairs)} ordered pairs from {result.passes} passes (accuracy, %)"
    )
    table.add_column("strong\n> weak\n  gap", overflow="fold")
    for column in sections:
        table.add_column(column.replace(" ", "\n"), justify="right", no_wrap=True)
    for p in sorted(result.pairs, key=lambda p: -p.sections["Overall"]):
        cells = [f"{100 * p.sections.get(s, float('nan')):.1f}" for s in sections]
        table.add_row(f"{p.strong}\n> {p.weak}\n  [dim]{p.gap:+.3f}[/dim]", *cells)
    return table
