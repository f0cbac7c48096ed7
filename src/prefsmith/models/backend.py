"""Log-prob backends: given conversations and responses, return per-token log-probabilities.

The rest of prefsmith only talks to :class:`LogProbBackend`. A backend renders each request
with the model's chat template (:class:`~prefsmith.models.encoding.ConversationEncoder`, the one
place where the exact prompt/response token boundary is found) and hands the token ids to an
*engine* (:mod:`prefsmith.models.engines`), which returns the response tokens' log-probs:

* :class:`EngineBackend` over any engine, e.g. ``vllm`` (``load_backend(name, engine="vllm")``,
  optional extra ``prefsmith[vllm]``);
* :class:`TransformersBackend`, the same over an engine that runs a ``transformers`` model in
  this process (``hf``: CPU or one GPU; the reference and the default), with that model in
  reach (``loaded``, ``model``, ``device``).

:func:`load_backend` builds either from a model name and an engine name.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from prefsmith.defaults import DEFAULT_ENGINE
from prefsmith.models.encoding import ConversationEncoder, EncodedResponse, Message
from prefsmith.models.engines import Engine, load_engine
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
    "backend_of",
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

    def same_text_as(self, other: LogProbBackend) -> LogProbBackend:
        """This model scoring the text ``other``'s chat template renders (a new backend over
        the same weights; see :meth:`EngineBackend.same_text_as`)."""
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
        template: The chat template in use (with same text: the other model's).
        dtype: Compute dtype name.
        encoder: Renders requests to token ids and finds the response boundary.
        rendered_by: With same text (:meth:`same_text_as`), the fingerprint of the tokenizer
            whose chat template renders the text; ``None``: this model's own rendering.
    """

    rendered_by: str | None = None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.engine_kind = engine.kind
        self.name = engine.name
        self.fingerprint = engine.fingerprint
        self.tokenizer = engine.tokenizer
        self.dtype = engine.dtype
        self.encoder = ConversationEncoder(self.tokenizer, engine.max_sequence)
        self.template = self.encoder.template
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)

    def set_template(self, template: str) -> None:
        self.tokenizer.chat_template = template
        self.encoder = ConversationEncoder(self.tokenizer, self.encoder.max_length)
        self.template = template

    def same_text_as(self, other: LogProbBackend) -> EngineBackend:
        """A backend over the same engine (weights load once) that scores the text ``other``'s
        chat template renders, tokenized by this model's tokenizer: the prompt is the exact
        string ``other`` conditions on (its special-token markers as text), the response the
        same characters ``other`` scores (see :class:`ConversationEncoder`'s ``renderer``).
        This backend is left as it is; asked again for the same rendering, it returns the same
        backend."""
        views = self.__dict__.setdefault("_same_text", {})
        if other.tokenizer_fingerprint not in views:
            renderer = other.tokenizer  # type: ignore[attr-defined]
            view = copy.copy(self)
            view._same_text = {}
            view.encoder = ConversationEncoder(self.tokenizer, self.encoder.max_length, renderer)
            view.template = view.encoder.template
            view.rendered_by = other.tokenizer_fingerprint
            views[other.tokenizer_fingerprint] = view
        return views[other.tokenizer_fingerprint]

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


class TransformersBackend(EngineBackend):
    """Teacher-forced log-probs from a ``transformers`` causal LM (the ``hf`` engine).

    Batched and padding-safe, with a shared-context key/value cache and a memory-bounded output
    layer: see :mod:`prefsmith.models.engines.hf`.
    """

    engine: HFEngine

    def __init__(self, engine: HFEngine) -> None:
        """Scoring with ``engine``; its weights load on first use (see :func:`load_backend`)."""
        super().__init__(engine)
        self.load_options: LoadOptions = engine.load_options
        self.batching: BatchingOptions = engine.batching

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, batching: BatchingOptions | None = None
    ) -> TransformersBackend:
        """A backend over a model already in memory."""
        return cls(HFEngine.from_loaded(loaded, batching))

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
    engine: str = DEFAULT_ENGINE,
    vllm_options: Any = None,
) -> EngineBackend:
    """A backend for model ``name`` (see :mod:`prefsmith.models.loading`); weights load lazily.

    ``engine`` is ``hf`` (transformers, the default; a :class:`TransformersBackend`) or
    ``vllm`` (needs ``pip install "prefsmith[vllm]"``; ``vllm_options`` is a
    :class:`prefsmith.models.engines.vllm.VLLMOptions`, and ``options.dtype`` applies when it
    leaves ``dtype`` at ``auto``). ``batching.max_length`` bounds the encoded rows for both.
    """
    return backend_of(load_engine(name, engine, options, batching, vllm_options))


def backend_of(engine: Engine) -> EngineBackend:
    """The backend over ``engine``: a :class:`TransformersBackend` when it runs a
    ``transformers`` model in this process (``engine.in_process``), else an
    :class:`EngineBackend`."""
    if engine.in_process:
        return TransformersBackend(engine)  # type: ignore[arg-type]
    return EngineBackend(engine)
