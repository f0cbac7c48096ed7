"""On-disk cache of per-response log-probs, so no model scores the same text twice.

Entries are keyed by everything that determines the numbers: the model's weight fingerprint,
its compute dtype, the chat template, the maximum length, the conditioning messages and the
response. Values are stored as raw float64 bytes, so a hit returns bit-identical log-probs.
The store is SQLite in WAL mode; each chunk of newly computed entries is committed as one
transaction, so an interrupted run keeps everything committed before it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prefsmith.defaults import DEFAULT_ENGINE
from prefsmith.models.backend import LogProbBackend, ResponseLogProbs, ScoreRequest
from prefsmith.models.registry import cache_home


def default_cache_path() -> Path:
    """``$PREFSMITH_HOME/logprobs.sqlite``."""
    return cache_home() / "logprobs.sqlite"


def cache_key(backend: LogProbBackend, request: ScoreRequest) -> str:
    """Key of one response under one backend's settings (and engine: numbers of two engines
    agree only to rounding, so each keeps its own; the default engine's keys are unchanged;
    likewise the tokenizer that renders the text when it is another model's, same text)."""
    template = hashlib.sha256(backend.template.encode()).hexdigest()
    max_length = getattr(getattr(backend, "encoder", None), "max_length", None)
    engine = getattr(backend, "engine_kind", DEFAULT_ENGINE)
    rendered_by = getattr(backend, "rendered_by", None)
    payload = [
        backend.fingerprint,
        *([] if engine == DEFAULT_ENGINE else [engine]),
        *([] if rendered_by is None else [{"rendered_by": rendered_by}]),
        backend.dtype,
        template,
        max_length,
        list(request.messages),
        request.response,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class LogProbCache:
    """SQLite store of :class:`ResponseLogProbs` by key.

    >>> from prefsmith.models.backend import ScoreRequest
    >>> from prefsmith.testing import tiny_backend
    >>> backend = CachedBackend(tiny_backend(seed=0), LogProbCache(":memory:"))
    >>> request = ScoreRequest(({"role": "user", "content": "Hi"},), "Hello!")
    >>> first, again = backend.score([request]), backend.score([request])
    >>> backend.computed, backend.hits, first[0].total == again[0].total
    (1, 1, True)
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, token_ids BLOB,"
            " logprobs BLOB, n_chars INTEGER, truncated TEXT, boundary_merged INTEGER)"
        )
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, ResponseLogProbs]:
        """The cached entries among ``keys``."""
        found: dict[str, ResponseLogProbs] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT * FROM logprobs WHERE key IN ({marks})"
            for key, ids, lps, n_chars, truncated, merged in self._db.execute(query, chunk):
                found[key] = ResponseLogProbs(
                    token_ids=tuple(np.frombuffer(ids, dtype=np.int64).tolist()),
                    logprobs=np.frombuffer(lps, dtype=np.float64).copy(),
                    n_chars=n_chars,
                    truncated=truncated,
                    boundary_merged=bool(merged),
                )
        return found

    def put_many(self, entries: dict[str, ResponseLogProbs]) -> None:
        """Store entries in one transaction."""
        rows = [
            (
                key,
                np.asarray(v.token_ids, dtype=np.int64).tobytes(),
                np.asarray(v.logprobs, dtype=np.float64).tobytes(),
                v.n_chars,
                v.truncated,
                int(v.boundary_merged),
            )
            for key, v in entries.items()
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO logprobs VALUES (?,?,?,?,?,?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM logprobs").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedBackend:
    """A :class:`LogProbBackend` that answers from a :class:`LogProbCache` when it can.

    Misses are computed by the wrapped backend in chunks of ``chunk_size`` requests and
    committed after each chunk. ``computed`` counts responses the model actually scored.
    """

    def __init__(self, backend: LogProbBackend, cache: LogProbCache, chunk_size: int = 128):
        self.backend = backend
        self.cache = cache
        self.chunk_size = chunk_size
        self.computed = 0
        self.hits = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    def set_template(self, template: str) -> None:
        self.backend.set_template(template)

    def same_text_as(self, other: LogProbBackend) -> CachedBackend:
        """The wrapped backend's :meth:`~prefsmith.models.backend.EngineBackend.same_text_as`,
        answering from the same cache (its keys name the rendering tokenizer); one per
        rendering, so rewards sharing a pool share its counters."""
        views = self.__dict__.setdefault("_same_text", {})
        key = other.tokenizer_fingerprint
        if key not in views:
            views[key] = CachedBackend(
                self.backend.same_text_as(other), self.cache, self.chunk_size
            )
        return views[key]

    def score(
        self,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseLogProbs]:
        keys = [cache_key(self.backend, r) for r in requests]
        found = self.cache.get_many(keys)
        self.hits += sum(k in found for k in keys)
        if on_progress:
            on_progress(sum(k in found for k in keys))
        missing: dict[str, ScoreRequest] = {}
        for key, request in zip(keys, requests, strict=True):
            if key not in found:
                missing.setdefault(key, request)
        todo = list(missing.items())
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start : start + self.chunk_size]
            results = self.backend.score([r for _, r in chunk])
            fresh = {k: v for (k, _), v in zip(chunk, results, strict=True)}
            self.cache.put_many(fresh)
            found.update(fresh)
            self.computed += len(chunk)
            if on_progress:
                on_progress(sum(1 for k in keys if k in fresh))
        return [found[k] for k in keys]
