"""Route a RewardBench-style file with each router; print confusion matrices and timings.

Routing only (no scoring)::

    PYTHONPATH=src nice -n 10 python benchmarks/routing.py \\
        --data ../shared/data/prefsets/rewardbench-dev.jsonl --routers rules embedding lm

The ``lm`` router loads the strong model (``--strong``) only. Writes ``<out>/routes.json``:
``routers`` (each router's seconds, agreement, confusion, routes and the 1-minute load average
before it), ``machine`` (CPU facts, package versions) and ``loaded``. The CPU is printed first;
a router timed while the load exceeded the core count has ``LOADED`` in its title (flagged,
not refused).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console

from _machine import LoadLog, header, note_of
from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import to_scoring_item
from prefsmith.evaluation.routing import confusion_matrix, confusion_table, routing_agreement
from prefsmith.evaluation.sections import section_of
from prefsmith.models.loading import LoadOptions
from prefsmith.routing.domains import load_domains
from prefsmith.routing.routers import last_user_text, make_router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--domains", type=Path, default=None)
    parser.add_argument("--routers", nargs="+", default=["rules", "embedding"])
    parser.add_argument("--strong", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/routing"))
    args = parser.parse_args()

    rows = read_jsonl_rows(args.data)
    prompts = [last_user_text(to_scoring_item(r).context) for r in rows]
    subsets = [str(r.get("subset", "")) for r in rows]
    domains = load_domains(args.domains)
    console = Console(width=120)
    console.print(header(), highlight=False)
    log = LoadLog()
    routers: dict[str, object] = {}
    for name in args.routers:
        backend = None
        if name == "lm":
            from prefsmith.models.backend import load_backend

            backend = load_backend(args.strong, LoadOptions(dtype=args.dtype))  # type: ignore[arg-type]
        load = log.check(name)
        t = time.perf_counter()
        routes = make_router(name, domains, backend).route(prompts)
        seconds = time.perf_counter() - t
        chosen = [r.domain for r in routes]
        matrix = confusion_matrix(chosen, [section_of(s) for s in subsets])
        agreement = routing_agreement(chosen, subsets)
        title = f"{name}: agreement {100 * agreement:.0f}%, {seconds:.0f}s (router setup + routing)"
        if note := note_of([load]):
            title += f"; {note}"
        console.print(confusion_table(matrix, domains.names, title))
        routers[name] = {
            "seconds": round(seconds, 1),
            "load": load,
            "agreement": agreement,
            "confusion": matrix,
            "routes": [
                {"id": r.get("id", i), "domain": x.domain, "confidence": x.confidence}
                for i, (r, x) in enumerate(zip(rows, routes, strict=True))
            ],
        }
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"routers": routers, **log.record()}
    (args.out / "routes.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
