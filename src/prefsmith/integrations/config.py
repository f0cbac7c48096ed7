"""The settings of ``prefsmith serve`` (:class:`ServeConfig`), apart from the server so that
the command line reads them without importing FastAPI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from prefsmith.integrations.queries import END_MARKERS, RESPONSE_MARKERS
from prefsmith.models.pool import ModelOptions
from prefsmith.rewards.fields import ScorerFields
from prefsmith.rewards.spec import ScorerSpec

#: The environment variable read for the API key when none is given.
API_KEY_ENV = "PREFSMITH_API_KEY"


@dataclass(frozen=True)
class ServeConfig(ScorerFields):
    """Everything ``prefsmith serve`` is started with: the reward as a stage's
    (:class:`~prefsmith.rewards.fields.ScorerFields`: ``scorer``, ``strong``, ``weak``,
    ``reduction``, ``customization``, ``rendering``, ``quality``), then the following.

    Attributes:
        models: How models load and run (dtype, device, threads, engine, max length).
        cache_path: A log-prob cache file (``None``: no cache).
        system_prompt: System turn for prompts without one.
        host: Address to bind; the default answers this machine only.
        port: TCP port.
        api_key: Bearer token every route but ``/health`` requires (``None``: the environment
            variable ``PREFSMITH_API_KEY`` if set, else no authentication).
        max_body_bytes: Largest request body (413 beyond).
        max_items: Most items (scored responses) per request (413 beyond).
        max_item_tokens: Most tokens per item, prompt and response (422 beyond).
        max_batch_tokens: Token budget of a shared scoring batch; ``0`` turns batching off
            (each request is scored alone).
        max_wait_ms: How long a batch waits for more requests before scoring.
        drain_timeout_s: On SIGTERM, how long requests in flight get to finish.
        warmup: Load the models and score one response before accepting requests.
        response_markers: Assistant headers that split a ``/get_reward`` query sent without
            ``prompts`` (the response follows the last one).
        end_markers: End-of-turn and padding texts removed from the end of a query's response.
        replicas: ``0``: one server in this process (uvicorn); ``N``: ``N`` replicas on Ray
            Serve.
        ray_address: The Ray cluster of the replicas (``None``: a local one).
        gpus_per_replica: GPUs of each Ray Serve replica.
        cpus_per_replica: CPUs of each Ray Serve replica.
        max_ongoing_requests: Requests a Ray Serve replica takes at once (its batcher shares
            them).
    """

    models: ModelOptions = field(default_factory=ModelOptions)
    cache_path: str | None = None
    system_prompt: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_items: int = 512
    max_item_tokens: int = 4096
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    drain_timeout_s: float = 30.0
    warmup: bool = True
    response_markers: tuple[str, ...] = RESPONSE_MARKERS
    end_markers: tuple[str, ...] = END_MARKERS
    replicas: int = 0
    ray_address: str | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_body_bytes", "max_items", "max_item_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_batch_tokens < 0 or self.max_wait_ms < 0 or self.replicas < 0:
            raise ValueError("max_batch_tokens, max_wait_ms and replicas cannot be negative")
        self.spec()  # a bad spec fails before loading

    def spec(self) -> ScorerSpec:
        """The scorer spec served, with the models and rendering filled in.

        >>> ServeConfig(rendering="same-text").spec().name
        'density-ratio:smollm2-135m-instruct,gemma3-270m:sum+same-text'
        """
        parsed = ScorerSpec.parse(self.scorer_spec(), self.strong, self.weak)
        return parsed.with_rendering(self.rendering)

    def key(self) -> str | None:
        """The API key in force: :attr:`api_key`, else ``$PREFSMITH_API_KEY``, else ``None``.

        >>> ServeConfig(api_key="s3cret").key()
        's3cret'
        """
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def resolved(self) -> ServeConfig:
        """This config with the API key read now (replicas elsewhere lack the variable)."""
        return replace(self, api_key=self.key())
