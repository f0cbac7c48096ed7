"""Load-test ``prefsmith serve`` on loopback: concurrent clients, answers checked against offline
scoring, batching on and off, then a burst of bad requests.

1. **Offline**: the rows scored in this process by the ``score`` step (what ``prefsmith score``
   runs), timed: the reference rewards and the offline response tokens/s.
2. **Server**: ``prefsmith serve`` started as a subprocess on 127.0.0.1 with an API key; for
   each C in ``--clients`` (default 1, 4, 16), C clients each send ``--requests`` requests of
   one row to ``POST /score``, one after the other. Every request must get exactly one answer
   (HTTP 200, one result) equal to the offline rewards of its own row; the table gives
   requests/s, response tokens/s (the strong model's tokens of the scored responses, as the
   offline run counts them), p50/p99 latency, the mean requests and items per scoring batch
   (from ``/metrics``) and the server's peak RSS.
3. **Batching off**: the same at the largest C with ``--max-batch-tokens 0`` (each request
   scored alone), in a new server.
4. **Bad-request burst**: good requests mixed with broken JSON, wrong types, missing fields,
   bodies over ``--max-body-bytes``, too many items and missing or wrong API keys, all at
   once: every bad one must get its 4xx, every good one its reward, and ``/health`` must
   answer after.

Every request loop is bounded in count and time (``--timeout`` per request) and only talks to
127.0.0.1. The JSON records the machine, package versions and the load before each task
(``benchmarks/_machine.py``); a task started while the load exceeded the core count flags the
table ``LOADED``.

    python benchmarks/serve.py                       # the packaged pair on rewardbench-tiny
    python benchmarks/serve.py --tiny --requests 4   # tiny random models: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from _machine import LoadLog, header
from prefsmith.data.io import iter_records
from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.models.pool import ModelOptions, ModelPool
from prefsmith.rewards.spec import parse_scorer

TINY_SET = Path(__file__).resolve().parents[1] / "src/prefsmith/resources/rewardbench-tiny.jsonl"
API_KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline(scorer: str, rows: list[dict], threads: int | None) -> tuple[list[dict], float]:
    """The score step's output rows and its wall time (models loaded and warmed first)."""
    reward = parse_scorer(scorer, pool=ModelPool(ModelOptions(threads=threads)))
    reward.score(rows[:1])  # load the weights: the server loads them before serving too
    start = time.perf_counter()
    scored = reward.score(rows)
    return scored, time.perf_counter() - start


def answer_of(row: dict) -> dict:
    """What ``POST /score`` answers for a scored row."""
    keys = ("reward_chosen", "reward_rejected", "reward_margin", "rewards")
    return {k: row[k] for k in keys if k in row}


def response_tokens(row: dict) -> int:
    """The strong model's tokens of a scored row's responses."""
    return sum(counts[0] for counts in row["response_tokens"].values())


@contextlib.contextmanager
def server(scorer: str, log: Path, *extra: str):
    """``prefsmith serve`` in a subprocess until the block ends (then SIGTERM, drained)."""
    port = free_port()
    command = [sys.executable, "-m", "prefsmith.cli.main", "serve", "--scorer", scorer]
    command += ["--port", str(port), *extra]
    env = {**os.environ, "PREFSMITH_API_KEY": API_KEY}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 600 s")
            time.sleep(0.5)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def metrics_of(url: str) -> dict[str, float]:
    """The unlabelled samples of ``/metrics``."""
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(
    client: httpx.AsyncClient, url: str, rows: list[dict], order: list[int], timeout: float
) -> list[tuple[int, float, httpx.Response]]:
    out = []
    for index in order:
        start = time.perf_counter()
        response = await client.post(
            f"{url}/score", json={"rows": [rows[index]]}, headers=AUTH, timeout=timeout
        )
        out.append((index, time.perf_counter() - start, response))
    return out


async def load(url: str, rows: list[dict], clients: int, requests: int, timeout: float):
    """``clients`` clients, ``requests`` requests each (rows taken round-robin)."""
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        orders = [[(c * requests + j) % len(rows) for j in range(requests)] for c in range(clients)]
        start = time.perf_counter()
        done = await asyncio.gather(*(_client(client, url, rows, o, timeout) for o in orders))
        wall = time.perf_counter() - start
    return [x for per_client in done for x in per_client], wall


def run_level(
    url: str,
    pid: int,
    rows: list[dict],
    expected: list[dict],
    clients: int,
    requests: int,
    timeout: float,
) -> dict[str, Any]:
    """One concurrency level: throughput, latency, batch sizes, and every answer checked."""
    before = metrics_of(url)
    answers, wall = asyncio.run(load(url, rows, clients, requests, timeout))
    after = metrics_of(url)
    wrong = [
        i
        for i, _, r in answers
        if r.status_code != 200
        or len(r.json()["results"]) != 1
        or r.json()["results"][0] != answer_of(expected[i])
    ]
    latencies = np.array([t for _, t, _ in answers])
    tokens = sum(response_tokens(expected[i]) for i, _, _ in answers)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("prefsmith_batch_requests_count")
    return {
        "clients": clients,
        "requests": len(answers),
        "sent": clients * requests,
        "wrong_or_lost": len(wrong),
        "wall_s": wall,
        "requests_per_s": len(answers) / wall,
        "response_tokens_per_s": tokens / wall,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "mean_batch_requests": delta("prefsmith_batch_requests_sum") / batches,
        "mean_batch_items": delta("prefsmith_batch_items_sum") / batches,
        "peak_rss_mb": peak_rss_mb(pid),
    }


def bad_requests(rows: list[dict], max_body: int, max_items: int) -> list[tuple[str, Any, int]]:
    """(kind, request arguments, expected status) of each bad request of the burst."""
    good = {"rows": [rows[0]]}
    huge = json.dumps({"rows": [{**rows[0], "prompt": "x" * (max_body + 10)}]})
    many = {"rows": [rows[0]] * (max_items + 1)}
    return [
        ("broken JSON", {"content": b'{"rows": [', "headers": AUTH}, 400),
        ("not an object", {"content": b"[1, 2]", "headers": AUTH}, 422),
        ("rows not a list", {"json": {"rows": 3}, "headers": AUTH}, 422),
        ("missing rows", {"json": {"row": []}, "headers": AUTH}, 422),
        ("missing response", {"json": {"rows": [{"prompt": "hi"}]}, "headers": AUTH}, 422),
        ("wrong type", {"json": {"rows": [{"prompt": 3, "chosen": 1}]}, "headers": AUTH}, 422),
        ("huge body", {"content": huge.encode(), "headers": AUTH}, 413),
        ("too many items", {"json": many, "headers": AUTH}, 413),
        ("missing auth", {"json": good}, 401),
        ("wrong auth", {"json": good, "headers": {"Authorization": "Bearer nope"}}, 401),
    ]


async def burst(
    url: str, rows: list[dict], expected: list[dict], rounds: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``rounds`` x (every bad request + one good one), all sent at once."""
    bad = bad_requests(rows, args.max_body_bytes, args.max_items)
    sends = []
    for r in range(rounds):
        sends += [(kind, call, status, None) for kind, call, status in bad]
        index = r % len(rows)
        sends.append(("good", {"json": {"rows": [rows[index]]}, "headers": AUTH}, 200, index))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/score", timeout=args.timeout, **call) for _, call, _, _ in sends)
        )
    failures = []
    for (kind, _, status, index), response in zip(sends, responses, strict=True):
        ok = response.status_code == status
        if ok and index is not None:
            ok = response.json()["results"] == [answer_of(expected[index])]
        if ok and index is None:
            ok = bool(response.json().get("error"))
        if not ok:
            failures.append(f"{kind}: {response.status_code} {response.text[:120]}")
    healthy = httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    return {
        "sent": len(sends),
        "bad": sum(1 for s in sends if s[3] is None),
        "good": sum(1 for s in sends if s[3] is not None),
        "failures": failures,
        "healthy_after": healthy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=TINY_SET)
    parser.add_argument("--strong", default=DEFAULT_STRONG)
    parser.add_argument("--weak", default=DEFAULT_WEAK)
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke run)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--limit", type=int, default=None, help="use the first N rows")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-items", type=int, default=64)
    parser.add_argument("--burst-rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("runs/bench-serve.json"))
    args = parser.parse_args()

    if args.tiny:
        from prefsmith.testing import tiny_model

        args.strong, args.weak = tiny_model(seed=0), tiny_model(seed=1)
    scorer = f"density-ratio:{args.strong},{args.weak}:sum"
    rows = [r.value for r in iter_records(args.data)][: args.limit]
    levels = [int(c) for c in args.clients.split(",")]
    loads = LoadLog()
    console = Console(width=150)
    log = args.output.with_suffix(".server.log")
    args.output.parent.mkdir(parents=True, exist_ok=True)

    loads.check("offline")
    expected, offline_s = offline(scorer, rows, args.threads)
    offline_tokens = sum(response_tokens(r) for r in expected)
    result: dict[str, Any] = {
        "scorer": scorer,
        "data": str(args.data),
        "rows": len(rows),
        "offline": {"wall_s": offline_s, "response_tokens_per_s": offline_tokens / offline_s},
        "levels": [],
        "threads": args.threads,
    }
    print(json.dumps(result["offline"]), flush=True)
    limits = ["--max-wait-ms", str(args.max_wait_ms), "--max-items", str(args.max_items)]
    limits += ["--max-body-bytes", str(args.max_body_bytes)]
    if args.threads:
        limits += ["--threads", str(args.threads)]

    def save() -> None:  # after every phase, so that a run cut short keeps what it measured
        args.output.write_text(json.dumps({**result, **loads.record()}, indent=2))

    with server(scorer, log, *limits) as (url, process):
        for clients in levels:
            loads.check(f"batched C={clients}")
            level = run_level(
                url, process.pid, rows, expected, clients, args.requests, args.timeout
            )
            result["levels"].append({"batching": True, **level})
            print(json.dumps(result["levels"][-1]), flush=True)
            save()
        loads.check("bad-request burst")
        result["burst"] = asyncio.run(burst(url, rows, expected, args.burst_rounds, args))
        print(json.dumps(result["burst"]), flush=True)
        save()
    if not args.skip_unbatched:
        with server(scorer, log, *limits, "--max-batch-tokens", "0") as (url, process):
            clients = max(levels)
            loads.check(f"unbatched C={clients}")
            level = run_level(
                url, process.pid, rows, expected, clients, args.requests, args.timeout
            )
            result["levels"].append({"batching": False, **level})
            print(json.dumps(result["levels"][-1]), flush=True)

    table = Table(title=f"prefsmith serve, {scorer.split(':')[0]} ({len(rows)} rows)")
    for column in (
        "batching",
        "C",
        "requests",
        "wrong/lost",
        "req/s",
        "resp tok/s",
        "vs offline",
        "p50 ms",
        "p99 ms",
        "batch req",
        "batch items",
        "peak RSS MB",
    ):
        table.add_column(column, justify="right")
    offline_rate = result["offline"]["response_tokens_per_s"]
    table.add_row(
        "offline", "-", str(len(rows)), "-", "-", f"{offline_rate:.0f}", "1.00", *["-"] * 5
    )
    for level in result["levels"]:
        table.add_row(
            "on" if level["batching"] else "off",
            str(level["clients"]),
            f"{level['requests']}/{level['sent']}",
            str(level["wrong_or_lost"]),
            f"{level['requests_per_s']:.2f}",
            f"{level['response_tokens_per_s']:.0f}",
            f"{level['response_tokens_per_s'] / offline_rate:.2f}",
            f"{level['p50_ms']:.0f}",
            f"{level['p99_ms']:.0f}",
            f"{level['mean_batch_requests']:.1f}",
            f"{level['mean_batch_items']:.1f}",
            f"{level['peak_rss_mb']:.0f}",
        )
    console.print(header())
    console.print(table)
    b = result["burst"]
    console.print(
        f"bad-request burst: {b['bad']} bad + {b['good']} good sent at once; "
        f"{len(b['failures'])} wrong answers; healthy after: {b['healthy_after']}"
    )
    for failure in b["failures"]:
        console.print(f"  {failure}", highlight=False)
    if note := loads.note():
        console.print(note)
    result.update(loads.record(clients=levels, requests_per_client=args.requests))
    args.output.write_text(json.dumps(result, indent=2))
    console.print(f"JSON: {args.output}")


if __name__ == "__main__":
    main()
