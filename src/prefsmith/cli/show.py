"""What a stage command prints when its stage is done: the row runner's summary, the stage's
own tables (score, eval, study), its headline and its warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from prefsmith.cli.common import console, warning_line


def show_result(kind: Any, result: Any) -> None:
    """Print ``result`` of a stage of ``kind``."""
    if "summary" in result.details:
        console.print(result.details["summary"], highlight=False)
    for warning in result.warnings:
        warning_line(warning)
    SHOW.get(kind.name, lambda r: None)(result)
    if result.details.get("headline"):
        console.print(result.details["headline"], highlight=False, soft_wrap=True)
    if result.details.get("report"):
        console.print(f"report: {result.details['report']} (open it in a browser)", highlight=False)


def _show_score(result: Any) -> None:
    """Accuracy of scored pairs, routing of customized rows, rewards of candidates."""
    from prefsmith.data.runner import records_of
    from prefsmith.evaluation.report import pair_accuracy_table, reward_summary_table
    from prefsmith.evaluation.routing import routing_table

    rows = [r.value for r in records_of(Path(result.output))]
    if pairs := [r for r in rows if "reward_margin" in r]:
        console.print(pair_accuracy_table(pairs, result.details["scorer"]))
    if any("domain" in r for r in rows):
        console.print(routing_table(rows))
    if candidates := [r for r in rows if "rewards" in r]:
        console.print(reward_summary_table(candidates))


def _show_eval(result: Any) -> None:
    evaluated = result.value
    for table in eval_tables(evaluated, console.width):
        console.print(table)
    console.print(scorer_legend(evaluated), highlight=False, soft_wrap=True)
    if evaluated.fit is not None:
        console.print(fit_table(evaluated))
    if evaluated.routing is not None:
        from prefsmith.evaluation.routing import confusion_table

        console.print(confusion_table(evaluated.routing["confusion"]))
    written = "results.json, report.md, rows.jsonl and plots"
    if evaluated.fit is not None:
        written += ", fit.json (models fitted on all rows) and reliability.png"
    console.print(f"wrote {result.output}/{written}", highlight=False)


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
    names = [s.scorer for s in result.scorers]
    column = names.index(fit["baseline"]) + 1 if fit["baseline"] in names else 0
    table = Table(
        title=f"Against #{column} ({fit['folds']}-fold held-out fits,"
        " paired bootstrap 95 % interval, sign test)"
    )
    for header in ("#", "overall", "diff", "95 % CI", "wins/losses", "sign p", "held-out ECE"):
        table.add_column(header, justify="right")
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


def scorer_legend(result: Any) -> str:
    """The full name of each numbered scorer column, one per line."""
    return "\n".join(f"#{k}: {s.scorer}" for k, s in enumerate(result.scorers, start=1))


def _show_study(result: Any) -> None:
    study = result.value
    console.print(study_table(study))
    console.print("wrote " + ", ".join(result.details["files"]), highlight=False)


def study_table(result: Any) -> Table:
    """One row per ordered pair, best first; accuracy in percent, as in ``study.md``.

    The pair takes three lines (strong, ``> weak``, the strength gap), so that full model
    names fit an 80-column terminal next to the five scores.
    """
    from prefsmith.evaluation.study import study_columns

    sections = study_columns(result)
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


#: Kind-specific output, after the summary.
SHOW = {"score": _show_score, "eval": _show_eval, "study": _show_study}
