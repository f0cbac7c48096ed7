"""Log-prob backends: given conversations and responses, return per-token log-probabilities.

The rest of prefsmith only talks to :class:`LogProbBackend`. A backend renders each request
with the model's chat template (:class:`~prefsmith.models.encoding.ConversationEncoder`, the one
place where the exact prompt/response token boundary is found) and hands the token ids to an
*engine* (:mod:`prefsmith.models.engines`), which returns the response tokens' log-probs:

* :class:`TransformersBackend`: the ``hf`` engine, transformers in this process (CPU or one
  GPU); the reference and the default;
* :class:`EngineBackend` over any engine, e.g. ``vllm`` (``load_backend(name, engine="vllm")``,
  optional extra ``prefsmith[vllm]``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from prefsmith.models.encoding import ConversationEncoder, EncodedResponse, Message
from prefsmith.models.engines.base import Engine
from prefsmith.models.engines.hf import (
    HEAD_CHUNK_BYTES,
    BatchingOptions,
    HFEngine,
    _gather_logprobs,
    plan_batches,
    shared_prefix_groups,
)
from prefsmith.models.loading import LoadedModel, LoadOptions

__all__ = [
    "HEAD_CHUNK_BYTES",
    "BatchingOptions",
    "EngineBackend",
    "LogProbBackend",
    "ResponseLogProbs",
    "ScoreRequest",
    "TransformersBackend",
    "_gather_logprobs",
    "load_backend",
    "plan_batches",
    "shared_prefix_groups",
    "tokenizer_fingerprint",
]


@dataclass(frozen=True)
class ScoreRequest:
    """One response to score in its conditioning context.

    Attributes:
        messages: The conversation before the response (system turn optional, ends with a user
            turn), as ``{"role", "content"}`` dicts.
        response: The assistant response whose tokens are scored.
    """

    messages: tuple[Message, ...]
    response: str


@dataclass(frozen=True)
class ResponseLogProbs:
    """Per-token log-probabilities of one response under one model.

    Attributes:
        token_ids: Ids of the scored (response) tokens.
        logprobs: ``log p(token | everything before it)`` for each scored token (float64).
        n_chars: Number of Unicode characters in the response string.
        truncated: ``None``, ``"prompt"`` or ``"response"``; see :mod:`prefsmith.models.encoding`.
        boundary_merged: True when the chat template re-tokenized the prompt/response boundary.
    """

    token_ids: tuple[int, ...]
    logprobs: np.ndarray
    n_chars: int
    truncated: str | None = None
    boundary_merged: bool = False

    @property
    def total(self) -> float:
        """Sum of the token log-probs: log p(response | prompt)."""
        return float(self.logprobs.sum())


class LogProbBackend(Protocol):
    """What scoring needs from a model, whatever runs it."""

    name: str
    fingerprint: str
    tokenizer_fingerprint: str
    template: str
    dtype: str

    def score(
        self,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseLogProbs]:
        """Score every request; ``on_progress(n)`` is called as ``n`` more are done."""
        ...

    def set_template(self, template: str) -> None:
        """Render conversations with ``template`` instead of the model's own chat template."""
        ...


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of everything that maps text to ids: equal hashes mean the same ids for any text.

    For fast tokenizers this is the serialized pipeline (normalizer, pre-tokenizer, model,
    added tokens): two tokenizers with one vocabulary but different pre-tokenization (as
    ``AutoTokenizer`` can build for different model types) differ. Otherwise the vocabulary,
    special tokens and the ids of a probe text are hashed.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        payload = backend.to_str()
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        specials = sorted(str(t) for t in tokenizer.all_special_tokens)
        probe = tokenizer(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
        payload = repr((vocab, specials, probe))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_TOKENIZER_PROBE = "Hello, world!\n\nÜnïcödé 123 4567 {\n    def f(x): return x**2  # 数学 🙂"


class EngineBackend:
    """A :class:`LogProbBackend` over any engine: chat-template encoding here, numbers there.

    Attributes:
        engine: The engine that computes log-probs (``hf``, ``vllm``).
        engine_kind: Its kind, ``"hf"`` or ``"vllm"`` (numbers of different engines agree to
            about 1e-3 nats, not bit for bit, so caches should keep them apart).
        name: The model name as given.
        fingerprint: Hash of the weights.
        tokenizer: The model's tokenizer.
        tokenizer_fingerprint: See :func:`tokenizer_fingerprint`.
        template: The chat template in use.
        dtype: Compute dtype name.
        encoder: Renders requests to token ids and finds the response boundary.
    """

    def __init__(self, engine: Engine, fingerprint: str, max_length: int) -> None:
        self.engine = engine
        self.engine_kind = engine.kind
        self.name = engine.name
        self.fingerprint = fingerprint
        self.tokenizer = engine.tokenizer
        self.dtype = engine.dtype
        self.encoder = ConversationEncoder(self.tokenizer, max_length)
        self.template = self.encoder.template
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)

    def set_template(self, template: str) -> None:
        self.tokenizer.chat_template = template
        self.encoder = ConversationEncoder(self.tokenizer, self.encoder.max_length)
        self.template = template

    def encode(self, request: ScoreRequest) -> EncodedResponse:
        """Token ids and response boundary of one request under this model's template."""
        return self.encoder.encode(request.messages, request.response)

    def release(self) -> None:
        """Drop the weights from memory (they load again on next use)."""
        self.engine.release()

    def score(
        self,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseLogProbs]:
        encoded = [self.encode(r) for r in requests]
        logprobs = self.engine.score_tokens(encoded, on_progress)
        return [
            ResponseLogProbs(
                token_ids=e.input_ids[e.response_start :],
                logprobs=lp,
                n_chars=len(r.response),
                truncated=e.truncated,
                boundary_merged=e.boundary_merged,
            )
            for r, e, lp in zip(requests, encoded, logprobs, strict=True)
        ]


def _max_length(batching: BatchingOptions, max_positions: int | None) -> int:
    return min(batching.max_length, max_positions or batching.max_length)


class TransformersBackend(EngineBackend):
    """Teacher-forced log-probs from a ``transformers`` causal LM (the ``hf`` engine).

    Batched and padding-safe, with a shared-context key/value cache and a memory-bounded output
    layer: see :mod:`prefsmith.models.engines.hf`.
    """

    engine: HFEngine

    def __init__(
        self,
        name: str,
        load_options: LoadOptions | None = None,
        batching: BatchingOptions | None = None,
        loaded: LoadedModel | None = None,
    ) -> None:
        """Prepare scoring with model ``name``; the weights load on first use (or pass
        ``loaded`` to reuse a model already in memory)."""
        engine = HFEngine(name, load_options, batching, loaded)
        self.load_options = engine.load_options
        self.batching = engine.batching
        super().__init__(
            engine, engine.fingerprint, _max_length(self.batching, engine.max_positions)
        )

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, batching: BatchingOptions | None = None
    ) -> TransformersBackend:
        """A backend over a model already in memory."""
        return cls(loaded.source.name, batching=batching, loaded=loaded)

    @property
    def loaded(self) -> LoadedModel:
        """The model and tokenizer, loaded on first access."""
        return self.engine.loaded

    @property
    def model(self) -> Any:
        return self.engine.model

    @property
    def device(self) -> Any:
        return self.engine.device


def load_backend(
    name: str,
    options: LoadOptions | None = None,
    batching: BatchingOptions | None = None,
    *,
    engine: str = "hf",
    vllm_options: Any = None,
) -> EngineBackend:
    """A backend for model ``name`` (see :mod:`prefsmith.models.loading`); weights load lazily.

    ``engine`` is ``hf`` (transformers, the default; a :class:`TransformersBackend`) or
    ``vllm`` (needs ``pip install "prefsmith[vllm]"``; ``vllm_options`` is a
    :class:`prefsmith.models.engines.vllm.VLLMOptions`, and ``options.dtype`` applies when it
    leaves ``dtype`` at ``auto``). ``batching.max_length`` bounds the encoded rows for both.
    """
    if engine == "hf":
        return TransformersBackend(name, options, batching)
    if engine == "vllm":
        from prefsmith.models.engines.vllm import VLLMEngine, VLLMOptions

        batching = batching or BatchingOptions()
        vllm_engine = VLLMEngine(
            name, vllm_options or VLLMOptions(), options, max_length=batching.max_length
        )
        return EngineBackend(vllm_engine, vllm_engine.fingerprint, vllm_engine.max_sequence)
    raise ValueError(f"engine must be one of hf, vllm; got {engine!r}")
