"""Plain vs customized density ratio on a RewardBench-style dev set, per section.

Scores each needed (row, domain, exemplar style) context once and caches the rewards, so
variants that differ only in the router re-score only the rows the routers disagree on. The
plain baseline is read from an existing ``prefsmith score`` run (``--plain``), not recomputed.

Usage (one real-model process at a time; ~10-20 min per full variant on 2 CPU cores)::

    PYTHONPATH=src nice -n 10 python benchmarks/customization.py \\
        --data ../shared/data/prefsets/rewardbench-dev.jsonl \\
        --plain ../main/runs/dev-default-bfloat16.jsonl --dtype bfloat16 \\
        --variants criteria:embedding exemplars:embedding exemplars:rules exemplars:lm

A variant is ``<parts>:<router>``: parts ``criteria`` (system prompt only, exemplar style
``none``), ``exemplars`` (criteria + exemplars inside the system turn) or ``turns`` (criteria
+ exemplars as earlier turns); router ``embedding``, ``rules`` or ``lm``. Results go to
``<out>/results.json`` and ``<out>/results.md``; rewards to ``<out>/cache.jsonl`` (resumable).
Each variant's scoring seconds are timed chunk by chunk; the 1-minute load average before each
chunk, the CPU facts and package versions go to ``results.json``, and ``results.md`` starts
with the CPU and, when some chunk started with the load above the core count, a ``LOADED``
line (the seconds are kept, flagged).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _machine
from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import ScoringItem, to_scoring_item
from prefsmith.evaluation.routing import confusion_matrix, routing_agreement
from prefsmith.evaluation.sections import section_of, section_scores, subset_results
from prefsmith.models.backend import ScoreRequest
from prefsmith.models.pool import ModelOptions
from prefsmith.rewards.density_ratio import DensityRatioReward
from prefsmith.routing.customize import customize_item
from prefsmith.routing.domains import load_domains
from prefsmith.routing.routers import Route, last_user_text, make_router

PARTS = {"criteria": "none", "exemplars": "system", "turns": "turns"}
SECTION_ORDER = ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")


def scores_of(subsets: list[str], margins: list[float]) -> dict[str, float]:
    """Section scores of a run from its subsets and margins."""
    return section_scores(subset_results(zip(subsets, margins, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--plain", required=True, type=Path, help="plain `prefsmith score` run")
    parser.add_argument("--domains", type=Path, default=None)
    parser.add_argument("--strong", default="smollm2-135m-instruct")
    parser.add_argument("--weak", default="gemma3-270m")
    parser.add_argument("--reduction", default="sum")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=8, help="rows per step (all variants)")
    parser.add_argument("--out", type=Path, default=Path("runs/customization"))
    parser.add_argument("--variants", nargs="+", default=["criteria:embedding"])
    parser.add_argument(
        "--report-only", action="store_true", help="no scoring: results from the cache"
    )
    args = parser.parse_args()

    rows = read_jsonl_rows(args.data)
    items: list[ScoringItem] = [to_scoring_item(r) for r in rows]
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    subsets = [str(r["subset"]) for r in rows]
    plain = {
        str(r.get("id", r["source_index"])): r["reward_margin"] for r in read_jsonl_rows(args.plain)
    }
    domains = load_domains(args.domains)
    args.out.mkdir(parents=True, exist_ok=True)
    cache_path = args.out / "cache.jsonl"
    cache: dict[tuple[str, str, str], float] = {}
    if cache_path.exists():
        for r in read_jsonl_rows(cache_path):
            cache[(r["id"], r["domain"], r["style"])] = r["margin"]

    t0 = time.perf_counter()
    scorer = None
    if not args.report_only:
        options = ModelOptions(dtype=args.dtype, threads=args.threads)
        scorer = DensityRatioReward(args.strong, args.weak, args.reduction, options=options)
        print(f"loaded models in {time.perf_counter() - t0:.0f}s", flush=True)
    prompts = [last_user_text(item.context) for item in items]
    routes: dict[str, list[Route]] = {}
    results: dict[str, Any] = {
        "settings": {
            **vars(args),
            "scorer": scorer.settings() if scorer else None,
            "domains_file": domains.source,
        },
        "plain": scores_of(subsets, [plain[i] for i in ids]),
        "variants": {},
    }
    variants = [(v, *v.split(":")) for v in args.variants]
    for _, _, router_name in variants:
        if router_name not in routes:
            t = time.perf_counter()
            strong = scorer.strong if scorer else None
            routes[router_name] = make_router(router_name, domains, strong).route(prompts)
            print(f"routed with {router_name} in {time.perf_counter() - t:.0f}s", flush=True)
    seconds = dict.fromkeys(args.variants, 0.0)
    if scorer is None:  # --report-only: the rows every variant has in the cache
        done = [
            i
            for i in interleave(subsets)
            if all((ids[i], routes[r][i].domain, PARTS[p]) in cache for _, p, r in variants)
        ]
        summarize(results, variants, routes, cache, done, ids, subsets, plain, seconds)
        write_results(args.out, results, domains.names)
        return
    # Rows in an order that interleaves subsets, and every variant scored chunk by chunk, so a
    # run stopped early still compares all variants on the same rows from every section.
    order = interleave(subsets)
    log = _machine.LoadLog()
    with cache_path.open("a") as out:
        for start in range(0, len(order), args.chunk):
            chunk = order[start : start + args.chunk]
            log.check(f"rows {start}-{start + len(chunk)}")
            for variant, parts, router_name in variants:
                style, chosen = PARTS[parts], routes[router_name]
                todo = [i for i in chunk if (ids[i], chosen[i].domain, style) not in cache]
                if not todo:
                    continue
                t = time.perf_counter()
                custom = [customize_item(items[i], domains[chosen[i].domain], style) for i in todo]
                requests = [ScoreRequest(c.context, resp) for c in custom for resp in c.responses]
                rewards = scorer.score_requests(requests)
                for k, i in enumerate(todo):
                    margin = rewards[2 * k].reward - rewards[2 * k + 1].reward
                    key = (ids[i], chosen[i].domain, style)
                    cache[key] = margin
                    record = {"id": key[0], "domain": key[1], "style": key[2], "margin": margin}
                    out.write(json.dumps(record) + "\n")
                out.flush()
                seconds[variant] += time.perf_counter() - t
            done = order[: start + len(chunk)]
            print(f"{len(done)}/{len(order)} rows done for every variant", flush=True)
            summarize(results, variants, routes, cache, done, ids, subsets, plain, seconds)
            results.update(log.record())
            write_results(args.out, results, domains.names)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value of ``wins`` against ``losses`` (ties dropped).

    >>> sign_test(0, 0), round(sign_test(8, 1), 4)
    (1.0, 0.0391)
    """
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, j) for j in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def interleave(subsets: list[str]) -> list[int]:
    """Row indices taking one row of each subset in turn (stable within a subset).

    >>> interleave(["a", "a", "b", "c", "c"])
    [0, 2, 3, 1, 4]
    """
    queues: dict[str, list[int]] = {}
    for i, s in enumerate(subsets):
        queues.setdefault(s, []).append(i)
    order: list[int] = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                order.append(q.pop(0))
    return order


def summarize(
    results: dict[str, Any],
    variants: list[tuple[str, str, str]],
    routes: dict[str, list[Route]],
    cache: dict[tuple[str, str, str], float],
    done: list[int],
    ids: list[str],
    subsets: list[str],
    plain: dict[str, float],
    seconds: dict[str, float],
) -> None:
    """Scores of plain and every variant on the rows ``done`` so far."""
    sub = [subsets[i] for i in done]
    results["rows"] = len(done)
    results["plain"] = scores_of(sub, [plain[ids[i]] for i in done])
    for variant, parts, router_name in variants:
        style, chosen = PARTS[parts], routes[router_name]
        margins = [cache[(ids[i], chosen[i].domain, style)] for i in done]
        doms = [chosen[i].domain for i in done]
        all_doms = [r.domain for r in chosen]
        fixed = sum(m > 0 >= plain[ids[i]] for m, i in zip(margins, done, strict=True))
        broken = sum(plain[ids[i]] > 0 >= m for m, i in zip(margins, done, strict=True))
        results["variants"][variant] = {
            "scores": scores_of(sub, margins),
            "fixed_vs_plain": fixed,
            "broken_vs_plain": broken,
            "sign_test_p": sign_test(fixed, broken),
            "seconds_scoring": round(seconds[variant], 1),
            "router_agreement_all_rows": routing_agreement(all_doms, subsets),
            "confusion_all_rows": confusion_matrix(all_doms, [section_of(s) for s in subsets]),
            "routed_on_scored_rows": dict(sorted(Counter(doms).items())),
            "mean_confidence": sum(r.confidence for r in chosen) / len(chosen),
        }


def write_results(out: Path, results: dict[str, Any], names: list[str]) -> None:
    """Write results.json and a Markdown table of section scores and confusion matrices."""
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    header = (
        "| run | "
        + " | ".join(SECTION_ORDER)
        + " | fixed / broken vs plain (p) | router agreement |"
    )
    lines = [header, "|" + "---|" * (len(SECTION_ORDER) + 3)]

    def row(name: str, scores: dict[str, float], flips: str, agree: str) -> str:
        cells = [f"{100 * scores[s]:.1f}" if s in scores else "-" for s in SECTION_ORDER]
        return f"| {name} | " + " | ".join(cells) + f" | {flips} | {agree} |"

    lines.append(row("plain", results["plain"], "-", "-"))
    for name, v in results["variants"].items():
        flips = f"{v['fixed_vs_plain']} / {v['broken_vs_plain']} ({v['sign_test_p']:.2f})"
        lines.append(row(name, v["scores"], flips, f"{100 * v['router_agreement_all_rows']:.0f}%"))
    lines.insert(0, f"Rows scored: {results['rows']} (every run on the same rows)\n")
    lines.insert(0, _machine.header() + "\n")
    if note := _machine.note_of(results.get("load_before", [])):
        lines.insert(1, note + "\n")
    for name, v in results["variants"].items():
        lines += ["", f"Confusion ({name}, all rows): section x routed domain", ""]
        lines.append("| section | " + " | ".join(names) + " |")
        lines.append("|" + "---|" * (len(names) + 1))
        for section, counts in v["confusion_all_rows"].items():
            lines.append(
                f"| {section} | " + " | ".join(str(counts.get(n, 0)) for n in names) + " |"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
