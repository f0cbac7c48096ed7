"""Which synthetic data makes the best reward model? RMBoost vs. RLAIF, RLCD and West-of-N.

From one prompt set, with one policy and one sampling budget, the script builds each dataset
(``rmboost``, ``rlaif``, ``rlcd``, ``west-of-n``), trains one Bradley-Terry reward model per
dataset with the same base, steps and settings (``prefsmith train --method rm``), evaluates
every reward model RewardBench-style on one pair file (``prefsmith eval --scorer rm:...``)
next to the density-ratio scorer itself, and prints one table: rows = data method (+ the
density ratio), columns = RewardBench sections, overall, pairs kept, generation and training
time. Everything goes through prefsmith's library API, so each stage is exactly what the
commands do.

Usage (small CPU run; see docs/reward-models.md for the measured table)::

    PYTHONPATH=src python benchmarks/rm_data.py \\
        --prompts src/prefsmith/resources/prompts/mt-bench.jsonl --limit 16 \\
        --max-new-tokens 64 --n 4 --steps 16 --threads 2 \\
        --eval-data ../shared/data/prefsets/rewardbench-dev.jsonl --eval-per-subset 2 \\
        --out runs/rm-data

Scale it by changing names and numbers only, e.g. on GPUs ``--policy <7B instruct>
--judge <judge> --strong <7B instruct> --weak <7B base> --rm-base <7B> --limit 500
--max-new-tokens 512 --steps 1000 --eval-per-subset 0`` (all pairs).

Resumable per stage: generation resumes inside a file (the row runner), training from its
newest checkpoint, evaluation per scorer; finished stages are skipped (their times are read
back from ``<out>/<method>/stage.json``). Outputs: ``<out>/<method>/pairs.jsonl``,
``<out>/<method>/rm/final`` (the reward model), ``<out>/eval/`` (``prefsmith eval``'s
outputs), ``<out>/results.json`` and ``<out>/results.md``.

Every stage records the 1-minute load average before it (in ``stage.json``, so a resumed run
keeps it); ``results.json`` adds the CPU facts and package versions, and ``results.md`` starts
with the CPU and, when a stage began with the load above the core count, a ``LOADED`` line
(its seconds are kept, flagged).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import _machine
from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.runner import RunOptions, run_rows
from prefsmith.defaults import (
    DEFAULT_GENERATOR,
    DEFAULT_JUDGE,
    DEFAULT_RM_BASE,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)
from prefsmith.evaluation.harness import evaluate_file
from prefsmith.evaluation.sections import SECTION_ORDER
from prefsmith.generation.baselines import PairwiseJudge, RLAIFStep, RLCDStep, WestOfNStep
from prefsmith.generation.pairs import PairsOptions
from prefsmith.generation.rmboost import RMBoostStep
from prefsmith.generation.sampling import SamplingConfig
from prefsmith.models.cache import LogProbCache
from prefsmith.models.engines import Engine, load_engine
from prefsmith.models.loading import LoadOptions
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.density_ratio import DensityRatioReward
from prefsmith.rewards.reward_model import RewardModelReward
from prefsmith.training.config import TrainConfig
from prefsmith.training.trainer import latest_checkpoint, train

METHODS = ("rmboost", "rlaif", "rlcd", "west-of-n")


def build_step(method: str, args: argparse.Namespace, policy: Engine, pool: ModelPool) -> Any:
    """The generation step of ``method``, all with the same policy and sampling settings."""
    sampling = SamplingConfig(
        n=1,
        temperature=args.temperature,
        top_p=0.9,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    if method == "rmboost":
        return RMBoostStep(policy, sampling)
    if method == "rlaif":
        return RLAIFStep(policy, PairwiseJudge(args.judge, pool=pool), sampling)
    if method == "rlcd":
        return RLCDStep(policy, sampling=sampling)
    reward = DensityRatioReward(args.strong, args.weak, "sum", pool=pool)
    options = PairsOptions("best-worst", 0.0, "conversational", True)
    return WestOfNStep(policy, reward, SamplingConfig(**{**vars(sampling), "n": args.n}), options)


def stage_file(out: Path, method: str) -> Path:
    return out / method / "stage.json"


def read_stage(out: Path, method: str) -> dict[str, Any]:
    path = stage_file(out, method)
    return json.loads(path.read_text()) if path.exists() else {}


def write_stage(out: Path, method: str, info: dict[str, Any]) -> None:
    path = stage_file(out, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))


def generate_data(
    method: str, args: argparse.Namespace, policy: Engine, pool: ModelPool, log: _machine.LoadLog
) -> dict[str, Any]:
    """Build (or resume) ``method``'s pair file; return pairs kept, drops and seconds."""
    stage = read_stage(args.out, method)
    if "generation" in stage:
        return stage
    output = args.out / method / "pairs.jsonl"
    options = RunOptions(on_error="skip", chunk_size=args.batch_size, limit=args.limit)
    load = log.check(f"{method} generation")
    summary = run_rows(args.prompts, output, build_step(method, args, policy, pool), options)
    stage["generation"] = {
        "seconds": summary.seconds,
        "prompts": summary.inputs,
        "pairs": summary.written,
        "dropped": summary.dropped,
        "resumed": summary.already_done > 0,
        "load_before": load,
    }
    write_stage(args.out, method, stage)
    print(f"[{method}] {summary.describe()}", flush=True)
    return stage


def train_model(method: str, args: argparse.Namespace, log: _machine.LoadLog) -> dict[str, Any]:
    """Train (or resume) ``method``'s reward model; return its folder and seconds."""
    stage = read_stage(args.out, method)
    if "training" in stage or stage["generation"]["pairs"] < 2:
        return stage
    run = args.out / method / "rm"
    config = TrainConfig(
        data=str(args.out / method / "pairs.jsonl"),
        model=args.rm_base,
        method="rm",
        output_dir=str(run),
        finetune=args.finetune,
        learning_rate=args.lr,
        max_steps=args.steps,
        batch_size=args.train_batch_size,
        grad_accum=1,
        max_length=args.max_length,
        save_steps=max(1, args.steps // 2),
        threads=args.threads,
        seed=args.seed,
        on_error="skip",
    )
    load = log.check(f"{method} training")
    result = train(config, resume=latest_checkpoint(run) is not None, progress=False)
    losses = [e["loss"] for e in result.log]
    stage["training"] = {
        "seconds": result.seconds,
        "steps": result.steps,
        "model": str(result.final_model),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "resumed": result.resumed_from is not None,
        "load_before": load,
    }
    write_stage(args.out, method, stage)
    print(f"[{method}] trained {result.steps} steps in {result.seconds:.0f}s", flush=True)
    return stage


def eval_subset(path: Path, per_subset: int, out: Path) -> Path:
    """The first ``per_subset`` pairs of every subset (0: the whole file), as a file."""
    if per_subset <= 0:
        return path
    taken: dict[str, int] = defaultdict(int)
    rows = []
    for row in read_jsonl_rows(path):
        subset = str(row.get("subset", "all"))
        if taken[subset] < per_subset:
            taken[subset] += 1
            rows.append(row)
    target = out / f"eval-{per_subset}-per-subset.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    sections = [s for s in SECTION_ORDER if any(s in r["sections"] for r in rows)]
    head = ["data", *sections, "pairs kept", "generation s", "training s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [f"{r['sections'][s]:.3f}" if s in r["sections"] else "" for s in sections]
        extra = [
            "-" if r["pairs"] is None else f"{r['pairs']}/{r['prompts']}",
            "-" if r["generation_s"] is None else f"{r['generation_s']:.0f}",
            "-" if r["training_s"] is None else f"{r['training_s']:.0f}",
        ]
        lines.append("| " + " | ".join([r["data"], *cells, *extra]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=16, help="prompts used (first N)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--policy", default=DEFAULT_GENERATOR)
    parser.add_argument("--judge", default=DEFAULT_JUDGE, help="RLAIF's pairwise judge")
    parser.add_argument("--strong", default=DEFAULT_STRONG)
    parser.add_argument("--weak", default=DEFAULT_WEAK)
    parser.add_argument("--n", type=int, default=4, help="West-of-N's samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rm-base", default=DEFAULT_RM_BASE)
    parser.add_argument("--finetune", default="lora", choices=("lora", "full"))
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument(
        "--eval-per-subset", type=int, default=0, help="first K pairs per subset (0: all)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-cache", action="store_true", help="no on-disk log-prob cache (judge, scorers)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/rm-data"))
    args = parser.parse_args()

    start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cache = LogProbCache(":memory:" if args.no_cache else None)
    pool = ModelPool(
        ModelOptions(dtype=args.dtype, threads=args.threads, max_length=args.max_length), cache
    )
    policy = load_engine(args.policy, "hf", LoadOptions(dtype=args.dtype, threads=args.threads))
    log = _machine.LoadLog()
    stages = {m: generate_data(m, args, policy, pool, log) for m in args.methods}
    policy.release()
    for method in args.methods:
        for name in (args.judge, args.strong, args.weak):
            pool.release(name)  # free generation-time models before training
        stages[method] = train_model(method, args, log)

    eval_data = eval_subset(args.eval_data, args.eval_per_subset, args.out)
    trained = [m for m in args.methods if "training" in stages[m]]
    eval_pool = ModelPool(pool.options, cache)
    rewards: list[Any] = [
        RewardModelReward(stages[m]["training"]["model"], eval_pool.options) for m in trained
    ]
    rewards.append(DensityRatioReward(args.strong, args.weak, "sum", pool=eval_pool))
    log.check("evaluation")
    result = evaluate_file(
        eval_data, rewards, args.out / "eval", RunOptions(chunk_size=16, progress=False)
    )
    by_name = {s.scorer: s.sections for s in result.scorers}
    rows = []
    for m in args.methods:
        generation = stages[m]["generation"]
        training = stages[m].get("training")
        name = rewards[trained.index(m)].name if m in trained else None
        rows.append(
            {
                "data": m,
                "sections": by_name.get(name, {}) if name else {},
                "pairs": generation["pairs"],
                "prompts": generation["prompts"],
                "dropped": generation["dropped"],
                "generation_s": generation["seconds"],
                "training_s": training["seconds"] if training else None,
                "training": training,
            }
        )
    rows.append(
        {
            "data": f"density ratio itself ({args.strong} / {args.weak}, sum)",
            "sections": by_name[rewards[-1].name],
            "pairs": None,
            "prompts": None,
            "generation_s": None,
            "training_s": None,
        }
    )
    wall = time.perf_counter() - start
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "eval_data": str(eval_data),
        "eval_pairs": result.pairs,
        "eval_seconds": result.timings,
        "rows": rows,
        "wall_seconds_this_invocation": wall,
        **log.record(),
    }
    # Stages resumed from an earlier invocation carry the load they started under.
    earlier = [
        {**stages[m][part]["load_before"], "task": f"{m} {part} (earlier run)"}
        for m in args.methods
        for part in ("generation", "training")
        if part in stages[m]
        and "load_before" in stages[m][part]
        and stages[m][part]["load_before"] not in log.tasks
    ]
    report["load_before"] = earlier + report["load_before"]
    report["loaded"] = any(t["loaded"] for t in report["load_before"])
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [_machine.header(), _machine.note_of(report["load_before"]), table(rows)]
    text = "\n\n".join(line for line in lines if line)
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    print(f"{result.pairs} evaluation pairs; this invocation took {wall:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
