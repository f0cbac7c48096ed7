"""RM-Bench's hard/normal/easy accuracy of scorers, ``limit`` prompts per domain file.

Runs what ``prefsmith eval 'RMBENCH/data/*_filtered.json' --limit N --scorer ...`` runs (the
glob read with ``limit`` rows per file, every completion scored once per model, the RM-Bench
arithmetic of :mod:`prefsmith.evaluation.kwise`), times it, and records the machine and the
load. The data is RM-Bench's repository (``git clone https://github.com/THU-KEG/RM-Bench``);
nothing is downloaded here.

    cd benchmarks && python rmbench.py '../../RM-Bench/data/*_filtered.json' --limit 8 \\
        --scorer density-ratio:sum --scorer density-ratio:mean-char --scorer contrast:sum \\
        --scorer "fitted:rewardbench-dev-qwen15-length#$LENGTH" \\
        --output ../runs/rmbench --json results/rmbench-limit8.json

with ``LENGTH=length:density-ratio:smollm2-135m-instruct,gemma3-270m:sum`` (the shipped length
fit of the default pair).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _machine
from prefsmith.data.runner import RunOptions, read_input
from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.evaluation.fit import FitOptions, fit_evaluation
from prefsmith.evaluation.harness import evaluate_file
from prefsmith.models.cache import LogProbCache
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.spec import ScorerSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="RM-Bench JSON files (a quoted glob) or total_dataset.json")
    parser.add_argument("--limit", type=int, default=None, help="prompts per file")
    parser.add_argument("--scorer", action="append", default=[], help="scorer spec; repeat")
    parser.add_argument("--output", type=Path, default=Path("runs/rmbench"))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", type=Path, help="write the table and the machine here")
    parser.add_argument("--fit", help="eval --fit methods on the scored rows, e.g. length")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    log = _machine.LoadLog()
    rows = read_input(args.data, args.limit)
    pool = ModelPool(ModelOptions(dtype=args.dtype), LogProbCache(args.output / "cache.sqlite"))
    specs = [ScorerSpec.parse(s, DEFAULT_STRONG, DEFAULT_WEAK) for s in args.scorer]
    rewards = [spec.build(pool) for spec in specs]
    log.check("rmbench")
    start = time.perf_counter()
    result = evaluate_file(rows, rewards, args.output, RunOptions(progress=False))
    seconds = time.perf_counter() - start
    if args.fit:  # held-out fits on the scored rows (nothing re-scored): cv: columns
        options = FitOptions(tuple(args.fit.split(",")), args.folds, length_unit="chars")
        fit_evaluation(result, args.output, options)
    print(_machine.header())
    print(f"{result.pairs} prompts, {seconds:.0f} s {log.note()}")
    table = {}
    for k, scorer in enumerate(result.scorers, start=1):
        assert scorer.benchmark is not None
        domains = scorer.benchmark["domains"]
        table[scorer.scorer] = {
            **{
                d: {x: v[x] for x in ("prompts", "hard", "normal", "easy", "avg")}
                for d, v in domains.items()
            },
            "overall": scorer.benchmark["overall"],
        }
        print(f"#{k} {scorer.scorer}")
        for domain, v in table[scorer.scorer].items():
            cells = " ".join(f"{key} {100 * x:5.1f}" for key, x in v.items() if key != "prompts")
            print(f"  {domain:8s} {cells}")
    if args.json:
        record = {
            "command": "python benchmarks/rmbench.py " + " ".join(_quoted(vars(args))),
            "prompts": result.pairs,
            "seconds": round(seconds, 1),
            "timings": result.timings,
            "table": table,
            **log.record(),
        }
        args.json.write_text(json.dumps(record, indent=1))


def _quoted(options: dict) -> list[str]:
    out = [repr(options["data"])]
    if options["limit"] is not None:
        out.append(f"--limit {options['limit']}")
    out += [f"--scorer {s!r}" for s in options["scorer"]]
    if options["fit"]:
        out.append(f"--fit {options['fit']} --folds {options['folds']}")
    return out


if __name__ == "__main__":
    main()
