"""``prefsmith serve``: an HTTP reward server over any scorer spec (FastAPI + uvicorn).

Routes:

* ``POST /get_reward``: OpenRLHF's remote reward model protocol (``--remote_rm_url``): a body
  ``{"query": [text, ...], "prompts": [text, ...], "labels": [...]}`` is answered by
  ``{"rewards": [float, ...], "scorer": NAME}``, one reward per query. Each query is the
  rendered prompt and response; :mod:`prefsmith.integrations.queries` says how it is split
  (``labels`` are accepted and unused).
* ``POST /score``: prefsmith's own rows, ``{"rows": [row, ...]}`` in any shape ``prefsmith
  score`` reads (prompt + chosen/rejected, prompt + responses, messages), answered by
  ``{"scorer": NAME, "settings_hash": HASH, "results": [...]}``: per row ``reward_chosen``,
  ``reward_rejected``, ``reward_margin`` (and ``p_chosen`` for calibrated scorers) or
  ``rewards``, equal to what ``prefsmith score`` writes for the same row.
* ``GET /health``: ``{"status": "ok", "scorer", "settings_hash", "pid"}``; never needs a key.
* ``GET /metrics``: Prometheus text (:mod:`prefsmith.integrations.metrics`).

Concurrent requests share scoring batches (:mod:`prefsmith.integrations.batching`). Safe by
default: the server binds 127.0.0.1; with an API key (``api_key`` or the environment variable
``PREFSMITH_API_KEY``) every route but ``/health`` needs ``Authorization: Bearer KEY`` (401);
a body over ``max_body_bytes`` or more than ``max_items`` items is answered 413, an item over
``max_item_tokens`` tokens 422, each message naming the limit; malformed JSON is answered 400
and a missing or mistyped field 422, naming the field; an engine error fails the requests of
its batch with 500 and a message, and the server goes on serving. Nothing a request sends is
executed or used as a template. On SIGTERM (or Ctrl-C) the server stops accepting, answers the
requests in flight (for up to ``drain_timeout_s``), then exits.

An *item* is one scored response: one query of ``/get_reward``, one response of a ``/score``
row (a pair has two). Its tokens are counted with the first model's tokenizer over the texts of
its prompt messages and its response (the chat template adds a few more).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from prefsmith.data.rows import ScoringItem, to_scoring_item
from prefsmith.integrations.batching import Batcher, EngineError
from prefsmith.integrations.config import API_KEY_ENV, ServeConfig
from prefsmith.integrations.metrics import Metrics
from prefsmith.integrations.queries import split_query
from prefsmith.rewards.base import ItemRewards, Reward, short_hash

#: Routes as metrics label them (any other path counts as ``other``).
ROUTES = ("/get_reward", "/score", "/health", "/metrics")
#: Addresses that only this machine reaches.
LOOPBACK = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger("prefsmith.serve")


class ApiError(Exception):
    """A request answered with an error status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RewardService:
    """The reward behind the server: built, warmed and run on one scoring thread.

    Args:
        config: The server's config.
        reward: A reward to serve instead of building :meth:`ServeConfig.spec`.
    """

    def __init__(self, config: ServeConfig, reward: Reward | None = None) -> None:
        self.config = config
        self.reward = reward
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "prefsmith-score")
        self.tokenizer: Any = None
        self.settings_hash = ""

    def load(self) -> None:
        """Build the reward (on the scoring thread: the SQLite cache stays on it) and warm it."""
        if self.reward is None:
            from prefsmith.models.cache import LogProbCache
            from prefsmith.models.pool import ModelPool

            config = self.config
            cache = LogProbCache(config.cache_path) if config.cache_path else None
            customization = config.customization.build() if config.customization else None
            self.reward = config.spec().build(ModelPool(config.models, cache), customization)
        settings = self.reward.settings()
        self.settings_hash = short_hash(json.dumps(settings, sort_keys=True, default=str))
        tokenizer = self.reward.tokenizers()[0]
        # A copy for counting on the event loop's thread, apart from the one scoring uses.
        self.tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None
        if self.config.warmup:
            warm = to_scoring_item({"prompt": "Hello.", "responses": ["Hi!"]})
            self.score([warm])

    @property
    def name(self) -> str:
        """The scorer's full name."""
        assert self.reward is not None
        return self.reward.name

    def count_tokens(self, item: ScoringItem) -> list[int]:
        """Tokens of each of ``item``'s responses with its prompt messages (UTF-8 bytes when
        the reward has no tokenizer)."""
        context = "\n".join(m["content"] for m in item.context)

        def count(text: str) -> int:
            if self.tokenizer is None:
                return len(text.encode())
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        prompt = count(context)
        return [prompt + count(r) for r in item.responses]

    def score(self, items: list[ScoringItem]) -> list[ItemRewards]:
        """The rewards of ``items`` (called on the scoring thread)."""
        assert self.reward is not None
        return self.reward.score_items(items)


def _field_list(data: dict[str, Any], name: str, kind: type, required: bool) -> list | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"missing field {name!r}")
        return None
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise ApiError(422, f"field {name!r} must be a list of {kind.__name__}")
    return value


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body of ``request`` as a JSON object, read up to ``limit`` bytes (413 beyond)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "malformed Content-Length header")
        if int(length) > limit:
            raise ApiError(413, f"body of {length} bytes is over max_body_bytes={limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body is over max_body_bytes={limit}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object, not {type(data).__name__}")
    return data


def query_items(data: dict[str, Any], config: ServeConfig) -> list[ScoringItem]:
    """The items of an OpenRLHF ``/get_reward`` body (one per query), or :class:`ApiError`."""
    queries = _field_list(data, "query", str, required=True) or []
    prompts = _field_list(data, "prompts", str, required=False)
    if prompts is not None and len(prompts) != len(queries):
        raise ApiError(
            422, f"field 'prompts' has {len(prompts)} entries for {len(queries)} queries"
        )
    if len(queries) > config.max_items:
        raise ApiError(413, f"{len(queries)} queries is over max_items={config.max_items}")
    items = []
    for i, query in enumerate(queries):
        try:
            context, response = split_query(
                query,
                prompts[i] if prompts is not None else None,
                config.response_markers,
                config.end_markers,
            )
            row = {"messages": context, "responses": [response]}
            items.append(to_scoring_item(row, config.system_prompt))
        except ValueError as err:
            raise ApiError(422, f"query[{i}]: {err}") from None
    return items


def row_items(data: dict[str, Any], config: ServeConfig) -> list[ScoringItem]:
    """The items of a ``/score`` body (one per row), or :class:`ApiError`."""
    rows = data.get("rows")
    if rows is None:
        raise ApiError(422, "missing field 'rows'")
    if not isinstance(rows, list):
        raise ApiError(422, "field 'rows' must be a list of rows")
    if len(rows) > config.max_items:
        raise ApiError(413, f"{len(rows)} rows is over max_items={config.max_items}")
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(to_scoring_item(row, config.system_prompt))
        except ValueError as err:
            raise ApiError(422, f"rows[{i}]: {err}") from None
    n = sum(len(item.responses) for item in items)
    if n > config.max_items:
        raise ApiError(413, f"{n} responses is over max_items={config.max_items}")
    return items


def row_result(item: ScoringItem, rewards: ItemRewards, calibrated: bool) -> dict[str, Any]:
    """What ``prefsmith score`` adds to a row, for one ``/score`` row."""
    values = [float(r.reward) for r in rewards.responses]
    if item.kind != "pair":
        return {"rewards": values}
    out = {"reward_chosen": values[0], "reward_rejected": values[1]}
    out["reward_margin"] = values[0] - values[1]
    if calibrated:
        from prefsmith.rewards.base import sigmoid

        out["p_chosen"] = sigmoid(out["reward_margin"])
    return out


def create_app(config: ServeConfig, reward: Reward | None = None) -> FastAPI:
    """The FastAPI app of the reward server (see the module docstring).

    Models load when the app starts (its lifespan), before it answers.
    """
    service = RewardService(config, reward)
    metrics = Metrics()
    batcher = Batcher(
        service.score,
        config.max_batch_tokens,
        config.max_wait_ms / 1000,
        metrics,
        service.executor,
    )
    api_key = config.key()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(service.executor, service.load)
        batcher.start()
        log.info("serving %s (settings %s)", service.name, service.settings_hash)
        yield
        await batcher.stop()

    app = FastAPI(
        title="prefsmith reward server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service, app.state.metrics, app.state.batcher = service, metrics, batcher

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        route = request.url.path if request.url.path in ROUTES else "other"
        if api_key and route != "/health" and not _authorized(request, api_key):
            metrics.count("prefsmith_errors_total", kind="auth")
            response = error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            metrics.count("prefsmith_in_flight")
            try:
                response = await call_next(request)
            finally:
                metrics.count("prefsmith_in_flight", -1)
        metrics.count("prefsmith_requests_total", route=route, status=str(response.status_code))
        metrics.observe(
            "prefsmith_request_latency_seconds", time.perf_counter() - start, route=route
        )
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Any:
        metrics.count("prefsmith_errors_total", kind="engine" if err.status >= 500 else "client")
        return error(err.status, err.message)

    async def scored(items: list[ScoringItem]) -> list[ItemRewards]:
        counts = [service.count_tokens(item) for item in items]
        for i, per_response in enumerate(counts):
            if max(per_response) > config.max_item_tokens:
                raise ApiError(
                    422,
                    f"item {i} has {max(per_response)} tokens, over"
                    f" max_item_tokens={config.max_item_tokens}",
                )
        tokens = sum(sum(c) for c in counts)
        size = sum(len(i.responses) for i in items)
        try:
            results = await batcher.submit(items, tokens, size) if items else []
        except EngineError as err:
            raise ApiError(500, f"scoring failed: {err}") from None
        metrics.count("prefsmith_items_total", size)
        metrics.count("prefsmith_tokens_total", tokens)
        return results

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Any:
        items = query_items(await read_json(request, config.max_body_bytes), config)
        results = await scored(items)
        rewards = [float(r.responses[0].reward) for r in results]
        return {"rewards": rewards, "scorer": service.name}

    @app.post("/score")
    async def score(request: Request) -> Any:
        items = row_items(await read_json(request, config.max_body_bytes), config)
        results = await scored(items)
        calibrated = bool(service.reward and service.reward.calibrated)
        return {
            "scorer": service.name,
            "settings_hash": service.settings_hash,
            "results": [row_result(i, r, calibrated) for i, r in zip(items, results, strict=True)],
        }

    @app.get("/health")
    async def health() -> Any:
        return {
            "status": "ok",
            "scorer": service.name,
            "settings_hash": service.settings_hash,
            "pid": os.getpid(),
        }

    @app.get("/metrics")
    async def metrics_text() -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _authorized(request: Any, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), api_key)


def check_exposure(config: ServeConfig) -> str | None:
    """A warning when the server answers other machines without an API key.

    >>> check_exposure(ServeConfig()) is None
    True
    >>> check_exposure(ServeConfig(host="0.0.0.0", api_key=None))[:30]
    'serving on 0.0.0.0 with no API'
    """
    if config.host not in LOOPBACK and not config.key():
        return (
            f"serving on {config.host} with no API key: anyone who reaches this port can use it"
            f" (set --api-key or {API_KEY_ENV})"
        )
    return None
