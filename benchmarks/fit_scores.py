"""Fit and compare scorers from scored-pair files of different runs (nothing re-scored).

``prefsmith eval --fit`` fits the scorers of one run. This takes ``scores/<scorer>.jsonl``
files from any runs (e.g. a plain scorer from one run and its ``+cdr`` variant from another),
aligns them by pair id and runs the same cross-validated fits and comparisons
(:func:`prefsmith.evaluation.fit.run_fits`); the first file is the baseline.

    python benchmarks/fit_scores.py runs/dev/scores/density-ratio_*_sum.jsonl \\
        runs/dev-contrast-cdr/scores/contrast_*_mean+cdr.jsonl --fit calibration,ensemble
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefsmith.data.io import read_jsonl_rows
from prefsmith.evaluation.fit import FitOptions, overall_sections, pair_table, run_fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="scores/<scorer>.jsonl files")
    parser.add_argument("--fit", default="calibration", help="comma-separated fit methods")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    scored = {}
    for path in args.files:
        rows = read_jsonl_rows(path)
        scored[rows[0]["scored_with"]["scorer"]] = rows
    table = pair_table(scored)
    options = FitOptions(tuple(args.fit.split(",")), args.folds, args.seed)
    fits = run_fits(table, options)
    out = {"pairs": len(table), "scorers": {}, "fits": fits.to_json()}
    out["fits"]["calibration"] = fits.calibration
    for name, margins in table.margins.items():
        sections = overall_sections(table.subsets, margins)
        out["scorers"][name] = sections
        cells = " | ".join(f"{100 * v:.1f}" for v in sections.values())
        comparison = fits.comparisons.get(name)
        extra = ""
        if comparison:
            b, s = comparison["bootstrap"], comparison["sign"]
            extra = (
                f" | {100 * b['difference']:+.1f} [{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]"
                f" | {s['wins']}/{s['losses']}, p = {s['p']:.2f}"
            )
        ece = fits.calibration.get(f"calibration:{name}", {}).get("ece")
        print(f"| `{name}` | {cells}{extra} | {'' if ece is None else f'{ece:.3f}'} |")
    for name, sections in fits.sections.items():
        print(f"cv:{name}", {k: round(100 * v, 1) for k, v in sections.items()})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
