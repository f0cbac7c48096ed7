"""Generation throughput: ``sample`` vs. ``rmboost``, same model, settings and prompts.

Each step runs in memory (:func:`prefsmith.data.runner.process_rows`) on the first ``--limit``
prompts, one after the other, with the same :class:`~prefsmith.generation.sampling.SamplingConfig`:

* ``sample n=1`` and ``sample n=2`` (two responses per prompt, as many as RMBoost writes);
* ``rmboost``: a first response, then the rewrite conditioned on the prompt, the first response,
  the label and the aspects.

Every ``generate`` call is timed, with its sequences, prompt tokens (what the model reads
before generating: prefill) and generated tokens, so the report shows where RMBoost's time goes
(its second pass reads a much longer prompt). Generated tokens/s are given per wall second and
per CPU second of this process (the machine is shared; CPU seconds are steadier). The table
starts with the CPU (model, native bfloat16 or not); the 1-minute load average before each
step is a column, ``LOADED`` where it exceeds the core count (the figures are kept, flagged);
the JSON records it with the CPU facts and package versions.

    python benchmarks/generation.py --limit 8 --max-new-tokens 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import prefsmith.generation.rmboost as rmboost_module
import prefsmith.generation.sampling as sampling_module
from _machine import LoadLog, header
from prefsmith.data.runner import process_rows
from prefsmith.defaults import DEFAULT_GENERATOR
from prefsmith.evaluation.judge import MT_BENCH
from prefsmith.generation.rmboost import RMBoostStep
from prefsmith.generation.sampling import SampleStep, SamplingConfig, prompt_ids, with_system_prompt
from prefsmith.models.engines import load_engine
from prefsmith.models.loading import LoadOptions

CALLS: list[dict] = []
_generate = sampling_module.generate


def timed_generate(engine, conversations, config, on_progress=None):
    """``generate`` with its time, prompt tokens and generated tokens recorded in CALLS."""
    convs = [with_system_prompt(c, config.system_prompt) for c in conversations]
    prompt_tokens = sum(len(prompt_ids(engine.tokenizer, c)) for c in convs) * config.n
    wall, cpu = time.perf_counter(), time.process_time()
    out = _generate(engine, conversations, config, on_progress)
    CALLS.append(
        {
            "sequences": len(conversations) * config.n,
            "prompt_tokens": prompt_tokens,
            "generated_tokens": sum(g.n_tokens for per in out for g in per),
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
        }
    )
    return out


sampling_module.generate = timed_generate
rmboost_module.generate = timed_generate


def run(name: str, step, prompts: list[dict], chunk_size: int, log: LoadLog) -> dict:
    load = log.check(name)
    CALLS.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    rows = process_rows(prompts, step, chunk_size=chunk_size)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(c["generated_tokens"] for c in CALLS)
    return {
        "step": name,
        "rows": len(rows),
        "generated_tokens": tokens,
        "prompt_tokens": sum(c["prompt_tokens"] for c in CALLS),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "tok_per_wall_s": round(tokens / wall, 2),
        "tok_per_cpu_s": round(tokens / cpu, 2),
        "load": load,
        "calls": [
            {k: round(v, 2) if isinstance(v, float) else v for k, v in c.items()} for c in CALLS
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_GENERATOR)
    parser.add_argument("--prompts", default=str(MT_BENCH))
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/generation.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = Path(args.prompts).read_text().splitlines()[: args.limit]
    prompts = [{"prompt": json.loads(line)["prompt"]} for line in lines]
    model = load_engine(args.model, "hf", LoadOptions(device="cpu", threads=args.threads))
    model.loaded  # load once, outside the timings  # noqa: B018
    config = SamplingConfig(n=1, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    log = LoadLog()
    results = [
        run("sample n=1", SampleStep(model, config), prompts, args.chunk_size, log),
        run("sample n=2", SampleStep(model, replace(config, n=2)), prompts,
            args.chunk_size, log),
        run("rmboost", RMBoostStep(model, config), prompts, args.chunk_size, log),
    ]  # fmt: skip
    report = {"settings": vars(args), "results": results, **log.record()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(header() + "\n")
    if log.note():
        print(log.note() + "\n")
    print(
        "| step | rows | generated tok | prompt tok | wall s | CPU s | tok/s wall | tok/s CPU"
        " | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        load = f"{r['load']['load_1m']}" + (" LOADED" if r["load"]["loaded"] else "")
        print(
            f"| {r['step']} | {r['rows']} | {r['generated_tokens']} | {r['prompt_tokens']} |"
            f" {r['wall_s']} | {r['cpu_s']} | {r['tok_per_wall_s']} | {r['tok_per_cpu_s']} |"
            f" {load} |"
        )
    for r in results:
        for k, c in enumerate(r["calls"]):
            print(f"{r['step']} call {k}: {c}")


if __name__ == "__main__":
    main()
