"""Dynamic batching: concurrent requests scored together, bounded by tokens and a maximum wait.

Each request is a :class:`Job` (its items, their token count, a future for its answer). One
task takes the first waiting job, adds every job already queued and waits at most
``max_wait_s`` for more, until the batch would pass ``max_batch_tokens``; then it scores the
batch in one call on the scoring thread while the next batch gathers. A job larger than the
budget runs alone. When scoring raises, every job of that batch gets the error, and the next
batch runs as usual: requests are validated before they are queued, so a malformed request is
answered without ever holding a batch. A client that gave up leaves its job's answer unread.

>>> import asyncio
>>> async def demo():
...     calls = []
...     def score(items):
...         calls.append(list(items))
...         return [x * 10 for x in items]
...     batcher = Batcher(score, max_batch_tokens=100, max_wait_s=0.01)
...     batcher.start()
...     answers = await asyncio.gather(*(batcher.submit([i], tokens=10) for i in range(3)))
...     await batcher.stop()
...     return answers, calls
>>> asyncio.run(demo())
([[0], [10], [20]], [[0, 1, 2]])
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefsmith.integrations.metrics import Metrics


class EngineError(RuntimeError):
    """Scoring a batch failed; every request of that batch gets this error."""


@dataclass
class Job:
    """One request's items waiting to be scored.

    Attributes:
        items: What the scoring function takes, one entry per item.
        tokens: Their token count (what the batch budget counts).
        size: How many items they count as in the metrics (e.g. scored responses).
        future: Resolves to the scoring function's answers for ``items``, in order.
    """

    items: Sequence[Any]
    tokens: int
    size: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Shares scoring calls between concurrent requests.

    Args:
        score: Scores a list of items (on the scoring thread), one answer per item.
        max_batch_tokens: Token budget of a batch; ``0`` turns batching off (each request
            is scored alone, in arrival order).
        max_wait_s: How long the first job of a batch waits for others.
        metrics: Where batch sizes and counts go.
        executor: The thread pool ``score`` runs on (default: one thread of its own; one
            thread keeps the models and the SQLite cache on one thread).
    """

    def __init__(
        self,
        score: Callable[[list[Any]], Sequence[Any]],
        max_batch_tokens: int = 8192,
        max_wait_s: float = 0.01,
        metrics: Metrics | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.score = score
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.metrics = metrics or Metrics()
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(1, "prefsmith-score")
        self._queue: asyncio.Queue[Job] | None = None
        self._held: collections.deque[Job] = collections.deque()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop taking batches (the batch being scored finishes first)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, items: Sequence[Any], tokens: int, size: int | None = None) -> list[Any]:
        """The answers for ``items``, scored in a batch shared with other requests (``size``:
        what they count as in the metrics, default one per item)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Job(items, tokens, len(items) if size is None else size, future))
        return await future

    async def _next(self, timeout: float | None) -> Job | None:
        if self._held:
            return self._held.popleft()
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _gather(self) -> list[Job]:
        first = await self._next(None)
        assert first is not None
        batch, tokens = [first], first.tokens
        if self.max_batch_tokens <= 0:
            return batch
        deadline = time.monotonic() + self.max_wait_s
        while tokens < self.max_batch_tokens:
            job = await self._next(deadline - time.monotonic())
            if job is None:
                break
            if tokens + job.tokens > self.max_batch_tokens:
                self._held.append(job)
                break
            batch.append(job)
            tokens += job.tokens
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [job for job in batch if not job.future.done()]
            if not live:
                continue
            items = [item for job in live for item in job.items]
            self.metrics.count("prefsmith_batches_total")
            self.metrics.observe("prefsmith_batch_items", sum(job.size for job in live))
            self.metrics.observe("prefsmith_batch_requests", len(live))
            try:
                answers = await loop.run_in_executor(self.executor, self.score, items)
                if len(answers) != len(items):
                    raise EngineError(f"{len(answers)} answers for {len(items)} items")
            except Exception as err:  # the batch fails; the server keeps serving
                error = (
                    err
                    if isinstance(err, EngineError)
                    else EngineError(f"{type(err).__name__}: {err}")
                )
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            offset = 0
            for job in live:
                part = list(answers[offset : offset + len(job.items)])
                offset += len(job.items)
                if not job.future.done():
                    job.future.set_result(part)
