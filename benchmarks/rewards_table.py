"""Rank scorers and held-out fits of several ``prefsmith eval --fit`` runs in one table.

Reads each run folder's ``results.json`` (sections of every scorer and of every ``cv:`` fit,
held-out) and ``fit.json`` (paired bootstrap interval and sign test against the run's
baseline, held-out ECE). Every run must share the baseline; a scorer seen in several runs is
shown once (its first run). Prints Markdown and writes JSON.

    python benchmarks/rewards_table.py runs/dev-fit runs/dev-ens2 \\
        --json benchmarks/results/rewards-dev198.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefsmith.evaluation.fit import held_out_ece

SECTIONS = ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")


def collect(folders: list[Path]) -> tuple[str, list[dict]]:
    """The shared baseline, and one entry per scorer or fit (first run wins)."""
    rows: dict[str, dict] = {}
    baseline = None
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        fit = json.loads((folder / "fit.json").read_text())
        if baseline is None:
            baseline = fit["baseline"]
        elif fit["baseline"] != baseline:
            raise SystemExit(f"{folder}: baseline {fit['baseline']} is not {baseline}")
        ece = held_out_ece(fit["calibration"])
        plain = [s["scorer"] for s in results["scorers"] if not s["scorer"].startswith("cv:")]
        for scorer in results["scorers"]:
            name = scorer["scorer"]
            label = name
            if name in ("cv:ensemble", "cv:average"):  # name the scorers they combine
                label = f"{name} of {len(plain)} ({folder.name})"
            if label in rows:
                continue
            comparison = fit["comparisons"].get(name.removeprefix("cv:"))
            rows[label] = {
                "scorer": label,
                "run": str(folder),
                "sections": scorer["sections"],
                "vs_baseline": comparison,
                "held_out_ece": ece.get(name),
                "combines": plain if label != name else None,
                "seconds": results["timings"].get(name),
            }
    assert baseline is not None
    return baseline, sorted(rows.values(), key=lambda r: -r["sections"]["Overall"])


def markdown(baseline: str, rows: list[dict]) -> str:
    """The ranking as a Markdown table (percent, differences in points)."""
    head = "| # | scorer (`cv:` = held-out fit) | " + " | ".join(SECTIONS)
    head += " | Δ vs default [95 % CI] | sign test W/L, p | held-out ECE |"
    lines = [head, "|---|---|" + "---:|" * (len(SECTIONS) + 3)]
    for k, row in enumerate(rows, start=1):
        cells = [f"{100 * row['sections'].get(s, float('nan')):.1f}" for s in SECTIONS]
        comparison = row["vs_baseline"]
        if row["scorer"] == baseline:
            diff, sign = "(default)", ""
        elif comparison is None:
            diff, sign = "", ""
        else:
            b, s = comparison["bootstrap"], comparison["sign"]
            diff = f"{100 * b['difference']:+.1f} [{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]"
            sign = f"{s['wins']}/{s['losses']}, p = {s['p']:.2f}"
        ece = "" if row["held_out_ece"] is None else f"{row['held_out_ece']:.3f}"
        lines.append(
            f"| {k} | `{row['scorer']}` | " + " | ".join(cells) + f" | {diff} | {sign} | {ece} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="Write the entries here.")
    args = parser.parse_args()
    baseline, rows = collect(args.folders)
    print(markdown(baseline, rows))
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
