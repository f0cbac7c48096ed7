"""``prefsmith serve``: an HTTP reward server (OpenRLHF's remote RM protocol, prefsmith rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefsmith.defaults import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_ENGINE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_STRONG,
    DEFAULT_WEAK,
)


def serve(
    scorer: Annotated[
        str, typer.Option(help="Scorer spec (see `eval --help`), e.g. density-ratio:A,B:mean.")
    ] = "density-ratio",
    strong: Annotated[str, typer.Option(help="Strong model of specs that leave it out.")] = (
        DEFAULT_STRONG
    ),
    weak: Annotated[
        str, typer.Option(help="Weak model of specs that leave it out.")
    ] = DEFAULT_WEAK,
    host: Annotated[
        str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PREFSMITH_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every route but /health.",
            show_envvar=True,
        ),
    ] = None,
    system_prompt: Annotated[
        str | None, typer.Option(help="System turn for prompts without one.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16, float64.")] = (
        DEFAULT_DTYPE
    ),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = DEFAULT_DEVICE,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    max_length: Annotated[
        int, typer.Option(help="Longest scored sequence in tokens (longer lose prompt tokens).")
    ] = DEFAULT_MAX_LENGTH,
    engine: Annotated[
        str, typer.Option(help="hf, or vllm[:KEY=VALUE,...] (pip install 'prefsmith[vllm]').")
    ] = DEFAULT_ENGINE,
    cache_path: Annotated[
        Path | None, typer.Option(help="A log-prob cache file (default: no cache).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body (413).")] = 4 << 20,
    max_items: Annotated[int, typer.Option(help="Most scored responses per request (413).")] = 512,
    max_item_tokens: Annotated[
        int, typer.Option(help="Most tokens per scored response with its prompt (422).")
    ] = 4096,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Token budget of a shared scoring batch (0: no batching).")
    ] = 16384,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests.")
    ] = 5.0,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds requests in flight get to finish on SIGTERM.")
    ] = 30.0,
    replicas: Annotated[
        int, typer.Option(help="Replicas on Ray Serve (0: one server in this process).")
    ] = 0,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster of the replicas (auto, ray://HOST:10001); default: local."),
    ] = None,
    gpus_per_replica: Annotated[float, typer.Option(help="GPUs per Ray Serve replica.")] = 0.0,
    cpus_per_replica: Annotated[float, typer.Option(help="CPUs per Ray Serve replica.")] = 1.0,
) -> None:
    """Serve rewards over HTTP: POST /get_reward (OpenRLHF), POST /score, GET /health, /metrics."""
    from prefsmith.cli.common import check_choice, user_errors
    from prefsmith.defaults import DEVICES, SCORING_DTYPES
    from prefsmith.integrations.launch import serve as run_server
    from prefsmith.integrations.server import ServeConfig
    from prefsmith.models.pool import ModelOptions

    check_choice("--dtype", dtype, SCORING_DTYPES)
    check_choice("--device", device, DEVICES)
    with user_errors():
        models = ModelOptions(
            dtype=dtype,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            threads=threads,
            max_length=max_length,
            engine=engine,
        )
        config = ServeConfig(
            scorer=scorer,
            strong=strong,
            weak=weak,
            models=models,
            cache_path=str(cache_path) if isinstance(cache_path, Path) else None,
            system_prompt=system_prompt,
            host=host,
            port=port,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            max_items=max_items,
            max_item_tokens=max_item_tokens,
            max_batch_tokens=max_batch_tokens,
            max_wait_ms=max_wait_ms,
            drain_timeout_s=drain_timeout,
            replicas=replicas,
            ray_address=ray_address,
            gpus_per_replica=gpus_per_replica,
            cpus_per_replica=cpus_per_replica,
        )
    run_server(config)
