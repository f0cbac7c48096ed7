"""Benchmark the scoring engine against a straightforward RewardBench-style scorer.

Both scorers compute the same density-ratio rewards on the same pairs:

* ``prefsmith``: the engine (the context of a pair runs once and both responses are scored
  on its key/value cache, length-sorted buckets, token budget, output layer only on response
  positions);
* ``prefsmith (no prefix sharing)``: the same engine with ``share_prefix=False``
  (``--compare-unshared``), to show what sharing the context adds;
* ``straightforward``: what RewardBench's DPO script does: for each pair, chosen and rejected
  padded together into one batch, one model at a time, full logits and a full log-softmax, no
  bucketing.

It prints a table and writes JSON with pairs/s, response tokens/s, peak RSS, the speed-up, the
reward differences between the two scorers (largest, 95th percentile, median), and achieved
FLOP/s against this machine's dense matmul FLOP/s measured in the same run. With
``--reference-pairs K`` both float32 scorers are also compared with a float64 run of the
straightforward scorer on the first K pairs, which tells how far each is from exact.

The table starts with the CPU (model, native bfloat16 or not) and torch's threads; the JSON
records the CPU facts, the package versions and the 1-minute load average before each timed
task. A task started while the load exceeded the core count flags the table (``LOADED: ...;
figures not comparable``) and sets ``"loaded": true``; the figures are kept, not refused.

    python benchmarks/score.py --data ../shared/data/prefsets/rewardbench-dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

from _machine import LoadLog, header
from prefsmith.data.io import iter_records
from prefsmith.data.rows import to_scoring_item
from prefsmith.models.backend import BatchingOptions, ScoreRequest, TransformersBackend
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.density_ratio import DensityRatioReward
from prefsmith.routing.customize import customize_items
from prefsmith.routing.domains import load_domains
from prefsmith.routing.routers import make_router


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured dense matmul FLOP/s of this machine for ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def model_flops(backend: TransformersBackend, all_tokens: int, head_tokens: int) -> float:
    """2 x non-embedding parameters x tokens, plus 2 x hidden x vocab per output-layer token."""
    model = backend.model
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    params = sum(p.numel() for p in model.parameters())
    body = params - embedding.numel() - (0 if head is embedding else head.numel())
    return 2.0 * body * all_tokens + 2.0 * head.numel() * head_tokens


def engine_tokens(backend: TransformersBackend, requests: list[ScoreRequest]) -> int:
    """Tokens the engine runs through the decoder: shared contexts count once."""
    encoded = [backend.encode(r) for r in requests]
    groups, _ = backend.engine._plan_sharing(encoded)
    saved = sum(length * (len(members) - 1) for length, members in groups)
    return sum(len(e.input_ids) for e in encoded) - saved


def straightforward_flops(backend: TransformersBackend, pairs: list[list[ScoreRequest]]) -> float:
    """FLOPs of the straightforward scorer: every padded position through body and head."""
    padded = 0
    for pair in pairs:
        lengths = [len(backend.encode(r).input_ids) for r in pair]
        padded += len(lengths) * max(lengths)
    return model_flops(backend, padded, padded)


def work_counts(
    backends: dict[str, TransformersBackend],
    pairs: list[list[ScoreRequest]],
    requests: list[ScoreRequest],
) -> dict[str, float]:
    """Response tokens, and FLOPs of the engine (with and without prefix sharing) and of the
    straightforward scorer, summed over both models."""
    counts = dict.fromkeys(
        ("response tokens", "engine", "engine (no prefix sharing)", "straightforward"), 0.0
    )
    for backend in backends.values():
        encoded = [backend.encode(r) for r in requests]
        head_tokens = sum(e.n_response_tokens for e in encoded)
        all_tokens = sum(len(e.input_ids) for e in encoded)
        counts["response tokens"] += head_tokens
        counts["engine"] += model_flops(backend, engine_tokens(backend, requests), head_tokens)
        counts["engine (no prefix sharing)"] += model_flops(backend, all_tokens, head_tokens)
        counts["straightforward"] += straightforward_flops(backend, pairs)
    return counts


def print_flops(counts: dict[str, float], n_pairs: int) -> None:
    """Table of the FLOP counts of :func:`work_counts`, relative to the engine's."""
    table = Table(title=f"FLOPs over {n_pairs} pairs")
    table.add_column("scorer")
    table.add_column("FLOPs", justify="right")
    table.add_column("x engine", justify="right")
    for name in ("engine", "engine (no prefix sharing)", "straightforward"):
        table.add_row(name, f"{counts[name]:.3e}", f"{counts[name] / counts['engine']:.3f}")
    Console().print(table)


def straightforward_rewards(
    scorer: DensityRatioReward, pairs: list[list[ScoreRequest]]
) -> list[float]:
    """Density-ratio rewards of the straightforward scorer, one model at a time."""
    totals: dict[str, list[float]] = {"strong": [], "weak": []}
    for name, backend in (("strong", scorer.strong), ("weak", scorer.weak)):
        for pair in pairs:
            totals[name].extend(straightforward_logprobs(backend, pair))
    return [s - w for s, w in zip(totals["strong"], totals["weak"], strict=True)]


def differences(a: list[float], b: list[float]) -> dict[str, float]:
    """Largest, 95th-percentile and median absolute difference."""
    diffs = sorted(abs(x - y) for x, y in zip(a, b, strict=True))
    return {
        "max": diffs[-1],
        "p95": diffs[min(len(diffs) - 1, int(0.95 * len(diffs)))],
        "median": diffs[len(diffs) // 2],
    }


def straightforward_logprobs(backend: TransformersBackend, pair: list[ScoreRequest]) -> list[float]:
    """RewardBench-style: one pair per batch, right-padded together, full log-softmax."""
    encoded = [backend.encode(r) for r in pair]
    width = max(len(e.input_ids) for e in encoded)
    pad = backend.tokenizer.pad_token_id or 0
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[i, : len(e.input_ids)] = 1
    with torch.inference_mode():
        logits = backend.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    out = []
    for i, e in enumerate(encoded):
        pos = torch.arange(e.response_start - 1, len(e.input_ids) - 1)
        out.append(float(logp[i, pos].gather(-1, ids[i, pos + 1][:, None]).sum()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/prefsets/rewardbench-dev.jsonl")
    parser.add_argument("--strong", default="smollm2-135m-instruct")
    parser.add_argument("--weak", default="gemma3-270m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N pairs.")
    parser.add_argument(
        "--reference-pairs", type=int, default=0, help="float64 reference on the first K pairs"
    )
    parser.add_argument("--compare-unshared", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--customize",
        choices=["none", "system", "turns"],
        default="none",
        help="CDR contexts: default domains, rules router, exemplars in the system turn or as"
        " earlier turns (long shared contexts)",
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="count FLOPs of both scorers, no timing"
    )
    parser.add_argument("--output", default="benchmarks/results/score.json")
    args = parser.parse_args()

    items = [to_scoring_item(r.value) for r in iter_records(args.data)][: args.limit]
    if args.customize != "none":
        domains = load_domains()
        items = customize_items(items, domains, make_router("rules", domains), args.customize).items
    pairs = [[ScoreRequest(i.context, resp) for resp in i.responses] for i in items]
    requests = [r for pair in pairs for r in pair]

    def scorer_for(dtype: str, batching: BatchingOptions | None = None) -> DensityRatioReward:
        batching = batching or BatchingOptions()
        options = ModelOptions(
            dtype=dtype,
            max_length=batching.max_length,
            batch_tokens=batching.max_batch_tokens,
            max_batch_size=batching.max_batch_size,
        )
        return DensityRatioReward(args.strong, args.weak, "sum", pool=ModelPool(options))

    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = scorer_for(args.dtype)
    backends = {"strong": scorer.strong, "weak": scorer.weak}
    dtype = next(scorer.strong.model.parameters()).dtype
    if args.flops_only:
        print_flops(work_counts(backends, pairs, requests), len(pairs))
        return
    scorer.weak.model  # load both models before any timing  # noqa: B018
    log = LoadLog()
    log.check("matmul peak")
    peak_flops = matmul_flops(dtype)

    log.check("engine")
    start = time.perf_counter()
    engine_rewards = [r.reward for r in scorer.score_requests(requests)]
    engine_s = time.perf_counter() - start
    rss_engine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    unshared: dict[str, float] = {}
    if args.compare_unshared:
        plain = TransformersBackend.from_loaded
        scorer_unshared = DensityRatioReward(
            plain(scorer.strong.loaded, BatchingOptions(share_prefix=False)),
            plain(scorer.weak.loaded, BatchingOptions(share_prefix=False)),
            scorer.reduction,
        )
        log.check("engine, no prefix sharing")
        start = time.perf_counter()
        unshared_rewards = [r.reward for r in scorer_unshared.score_requests(requests)]
        unshared_s = time.perf_counter() - start
        unshared = {
            "unshared_seconds": unshared_s,
            "sharing_speedup": unshared_s / engine_s,
            "unshared_max_difference_nats": differences(engine_rewards, unshared_rewards)["max"],
        }

    log.check("straightforward")
    start = time.perf_counter()
    naive_rewards = straightforward_rewards(scorer, pairs)
    naive_s = time.perf_counter() - start
    diff = differences(engine_rewards, naive_rewards)

    reference: dict[str, float] = {}
    if args.reference_pairs:
        k = min(args.reference_pairs, len(pairs))
        exact = straightforward_rewards(scorer_for("float64"), pairs[:k])
        reference = {
            "reference_pairs": k,
            "engine_vs_float64_max_nats": differences(engine_rewards[: 2 * k], exact)["max"],
            "straightforward_vs_float64_max_nats": differences(naive_rewards[: 2 * k], exact)[
                "max"
            ],
        }

    counts = work_counts(backends, pairs, requests)
    flops, response_tokens = counts["engine"], counts["response tokens"]

    result = {
        "data": args.data,
        "pairs": len(pairs),
        "strong": args.strong,
        "weak": args.weak,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prefsmith_seconds": engine_s,
        "prefsmith_pairs_per_s": len(pairs) / engine_s,
        "prefsmith_response_tokens_per_s": response_tokens / engine_s,
        **unshared,
        "straightforward_seconds": naive_s,
        "straightforward_pairs_per_s": len(pairs) / naive_s,
        "speedup": naive_s / engine_s,
        "max_reward_difference_nats": diff["max"],
        "p95_reward_difference_nats": diff["p95"],
        "median_reward_difference_nats": diff["median"],
        **reference,
        "peak_rss_mib_after_engine": rss_engine,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "achieved_flops_per_s": flops / engine_s,
        "matmul_flops_per_s": peak_flops,
        "fraction_of_matmul_peak": flops / engine_s / peak_flops,
        "straightforward_flops_over_engine_flops": counts["straightforward"] / flops,
    }
    title = f"Scoring {len(pairs)} pairs: {args.strong} over {args.weak} ({dtype})"
    table = Table(title=title, caption=log.note() or None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    print(header())
    Console().print(table)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({**result, **log.record()}, indent=2))


if __name__ == "__main__":
    main()
