"""Log-prob backends: given conversations and responses, return per-token log-probabilities.

The rest of prefsmith only talks to :class:`LogProbBackend`; :class:`TransformersBackend` is the
in-process implementation (CPU or one GPU). A vLLM or Ray backend implements the same protocol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from transformers import AutoConfig, AutoTokenizer

from prefsmith.models.encoding import ConversationEncoder, EncodedResponse, Message
from prefsmith.models.loading import (
    LoadedModel,
    LoadOptions,
    fingerprint_directory,
    load_model,
    model_files,
    resolve_device,
    resolve_dtype,
)


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


@dataclass(frozen=True)
class BatchingOptions:
    """How sequences are grouped into forward passes.

    Attributes:
        max_length: Longest sequence in tokens; longer rows are truncated (prompt first).
        max_batch_tokens: Budget of padded tokens per forward pass (batch size x longest row).
        max_batch_size: Upper bound on rows per forward pass.
        share_prefix: Run the context shared by several responses (chosen and rejected of a
            pair, the candidates of a prompt, a long customization context) once, and score
            the responses on its key/value cache instead of recomputing it for each.
        min_shared_prefix: Shortest shared context (tokens) worth a forward pass of its own;
            shorter ones are scored with the rest in length-sorted buckets.
    """

    max_length: int = 2048
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    share_prefix: bool = True
    min_shared_prefix: int = 32


def shared_prefix_groups(
    contexts: Sequence[Sequence[int]], min_length: int = 1
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Group rows that share their whole context (the tokens before their responses).

    ``contexts[i]`` holds the tokens of row ``i`` that precede the position predicting its
    first response token. Rows with identical contexts form a group; groups of two or more rows
    whose context has at least ``min_length`` tokens are returned as ``(context_length, rows)``,
    every other row in the second list. (Rows of one prompt whose template re-tokenized the
    boundary differently end up in different groups: they are still scored, just not shared.)

    >>> shared_prefix_groups([[1, 2, 3], [1, 2, 3], [9], [1, 2, 3]], min_length=2)
    ([(3, [0, 1, 3])], [2])
    >>> shared_prefix_groups([[1, 2, 3], [1, 2, 3]], min_length=4)
    ([], [0, 1])
    """
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index, context in enumerate(contexts):
        by_context.setdefault(tuple(context), []).append(index)
    groups, single = [], []
    for context, members in by_context.items():
        if len(members) >= 2 and len(context) >= min_length:
            groups.append((len(context), members))
        else:
            single.extend(members)
    return groups, sorted(single)


def plan_batches(lengths: Sequence[int], options: BatchingOptions) -> list[list[int]]:
    """Group row indices into length-sorted buckets within the token budget.

    Rows are sorted longest first, so every batch pads to the length of its first row.

    >>> plan_batches([5, 1, 4, 2], BatchingOptions(max_batch_tokens=10, max_batch_size=8))
    [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        fits = (len(current) + 1) * width <= options.max_batch_tokens
        if current and (not fits or len(current) >= options.max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class TransformersBackend:
    """Teacher-forced log-probs from a ``transformers`` causal LM, batched and padding-safe.

    Rows are right-padded inside length-sorted buckets; with causal attention and an attention
    mask, padding after a row cannot change that row's logits. Only the hidden states of
    positions that predict response tokens go through the output layer, in memory-bounded
    chunks, and log-softmax is taken in float32. (If the decoder-plus-output-layer path does not
    reproduce ``model.forward`` on a probe, full logits from ``model.forward`` are used.)

    Responses to one context (see :func:`shared_prefix_groups`) are scored on a key/value cache
    of that context, computed once: the context tokens cost one forward pass, not one per
    response. The cache path is used only if it reproduces an uncached forward on a probe.
    """

    def __init__(
        self,
        name: str,
        load_options: LoadOptions | None = None,
        batching: BatchingOptions | None = None,
        loaded: LoadedModel | None = None,
    ) -> None:
        """Prepare scoring with model ``name``; the weights load on first use (or pass
        ``loaded`` to reuse a model already in memory)."""
        self.name = name
        self.load_options = load_options or LoadOptions()
        self.batching = batching or BatchingOptions()
        self._loaded = loaded
        files = model_files(name) if loaded is None else loaded.model.name_or_path
        self.fingerprint = loaded.fingerprint if loaded else fingerprint_directory(files)
        self.tokenizer = loaded.tokenizer if loaded else AutoTokenizer.from_pretrained(files)
        config = AutoConfig.from_pretrained(files) if loaded is None else loaded.model.config
        device = resolve_device(self.load_options.device)
        self.dtype = str(resolve_dtype(self.load_options.dtype, device)).removeprefix("torch.")
        max_positions = getattr(config, "max_position_embeddings", None)
        max_length = min(self.batching.max_length, max_positions or self.batching.max_length)
        self.encoder = ConversationEncoder(self.tokenizer, max_length)
        self.template = self.encoder.template
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        self._head_path: bool | None = None
        self._prefix_path: bool | None = None

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, batching: BatchingOptions | None = None
    ) -> TransformersBackend:
        """A backend over a model already in memory."""
        return cls(loaded.source.name, batching=batching, loaded=loaded)

    @property
    def loaded(self) -> LoadedModel:
        """The model and tokenizer, loaded on first access."""
        if self._loaded is None:
            self._loaded = load_model(self.name, self.load_options)
            self._loaded.tokenizer = self.tokenizer  # keep the template in use
        return self._loaded

    @property
    def model(self) -> Any:
        return self.loaded.model

    def release(self) -> None:
        """Drop the weights from memory (they load again on the next miss)."""
        self._loaded = None
        self._head_path = None
        self._prefix_path = None

    def set_template(self, template: str) -> None:
        self.tokenizer.chat_template = template
        self.encoder = ConversationEncoder(self.tokenizer, self.encoder.max_length)
        self.template = template

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def encode(self, request: ScoreRequest) -> EncodedResponse:
        """Token ids and response boundary of one request under this model's template."""
        return self.encoder.encode(request.messages, request.response)

    def score(
        self,
        requests: Sequence[ScoreRequest],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ResponseLogProbs]:
        encoded = [self.encode(r) for r in requests]
        results: list[ResponseLogProbs | None] = [None] * len(requests)

        def done(batch: list[int], logprobs: list[np.ndarray]) -> None:
            for i, lp in zip(batch, logprobs, strict=True):
                e = encoded[i]
                results[i] = ResponseLogProbs(
                    token_ids=e.input_ids[e.response_start :],
                    logprobs=lp,
                    n_chars=len(requests[i].response),
                    truncated=e.truncated,
                    boundary_merged=e.boundary_merged,
                )
            if on_progress:
                on_progress(len(batch))

        groups, single = self._plan_sharing(encoded)
        for prefix_length, members in groups:
            prefix = encoded[members[0]].input_ids[:prefix_length]
            cache = self._prefill(prefix)
            suffixes = [len(encoded[i].input_ids) - prefix_length for i in members]
            for part in plan_batches(suffixes, self.batching):
                batch = [members[k] for k in part]
                done(batch, self._forward([encoded[i] for i in batch], prefix_length, cache))
        lengths = [len(encoded[i].input_ids) for i in single]
        for part in plan_batches(lengths, self.batching):
            batch = [single[k] for k in part]
            done(batch, self._forward([encoded[i] for i in batch]))
        return [r for r in results if r is not None]

    def _plan_sharing(
        self, encoded: Sequence[EncodedResponse]
    ) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """Groups of rows scored on a shared context cache, and the rows scored on their own."""
        everything = list(range(len(encoded)))
        if not self.batching.share_prefix or len(encoded) < 2:
            return [], everything
        contexts = [e.input_ids[: e.response_start - 1] for e in encoded]
        groups, single = shared_prefix_groups(contexts, max(1, self.batching.min_shared_prefix))
        if groups and self._prefix_path is None:
            self._prefix_path = self._check_prefix_path()
        return (groups, single) if self._prefix_path else ([], everything)

    def _prefill(self, prefix: Sequence[int]) -> Any:
        """Key/value cache of ``prefix`` (one row)."""
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([list(prefix)], device=self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self._decoder_or_model()(input_ids=ids, past_key_values=cache, use_cache=True)
        return cache

    def _decoder_or_model(self) -> Any:
        if self._head_path is None:
            self._head_path = self._check_head_path()
        return self._decoder if self._head_path else self.model

    def _forward(
        self, rows: list[EncodedResponse], prefix_length: int = 0, cache: Any = None
    ) -> list[np.ndarray]:
        """Log-probs of the response tokens of ``rows``.

        With ``cache`` (from :meth:`_prefill`), the first ``prefix_length`` tokens of every row
        are that cache's tokens and only the rest of each row runs through the model.
        """
        import copy

        import torch

        model = self._decoder_or_model()
        width = max(len(r.input_ids) for r in rows) - prefix_length
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), prefix_length + width), dtype=torch.long)
        mask[:, :prefix_length] = 1
        for b, row in enumerate(rows):
            suffix = row.input_ids[prefix_length:]
            ids[b, : len(suffix)] = torch.tensor(suffix)
            mask[b, prefix_length : prefix_length + len(suffix)] = 1
        # Position p predicts token p + 1: gather (row, position) of every response token.
        batch_index, positions, sizes = [], [], []
        for b, row in enumerate(rows):
            span = torch.arange(row.response_start - 1, len(row.input_ids) - 1) - prefix_length
            batch_index.append(torch.full_like(span, b))
            positions.append(span)
            sizes.append(len(span))
        rows_ix, pos_ix = torch.cat(batch_index), torch.cat(positions)
        targets = ids[rows_ix, pos_ix + 1].to(self.device)
        rows_ix, pos_ix = rows_ix.to(self.device), pos_ix.to(self.device)
        inputs: dict[str, Any] = {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "use_cache": cache is not None,
        }
        if cache is not None:
            inputs["past_key_values"] = copy.deepcopy(cache)
            inputs["past_key_values"].batch_repeat_interleave(len(rows))
        with torch.inference_mode():
            if self._head_path:
                hidden = model(**inputs).last_hidden_state[rows_ix, pos_ix]
                logprobs = self._head_logprobs(hidden, targets)
            else:
                logits = model(**inputs).logits[rows_ix, pos_ix]
                logprobs = _gather_logprobs(logits, targets)
        return [t.numpy() for t in logprobs.double().cpu().split(sizes)]

    def _head_logprobs(self, hidden: Any, targets: Any) -> Any:
        """Output layer + log-softmax over selected positions, in chunks bounded in memory."""
        import torch

        logit_bytes = max(4, hidden.element_size())  # log-softmax runs in float32 or wider
        chunk = max(1, HEAD_CHUNK_BYTES // (logit_bytes * self._vocab_size))
        parts = [
            _gather_logprobs(self._head_logits(hidden[i : i + chunk]), targets[i : i + chunk])
            for i in range(0, hidden.shape[0], chunk)
        ]
        return torch.cat(parts) if parts else hidden.new_zeros(0)

    def _head_logits(self, hidden: Any) -> Any:
        """What ``model.forward`` does after the decoder: output layer and known rescalings."""
        import torch

        logits = self.model.get_output_embeddings()(hidden)
        config = self.model.config
        if getattr(config, "logit_scale", None):  # Cohere
            logits = logits * config.logit_scale
        if getattr(config, "logits_scaling", None):  # Granite
            logits = logits / config.logits_scaling
        if getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
            cap = config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _check_head_path(self) -> bool:
        """Use decoder + own output layer only if it reproduces ``model.forward`` exactly."""
        import torch

        try:
            self._decoder = self.model.get_decoder()
            self._vocab_size = self.model.get_output_embeddings().weight.shape[0]
            probe = torch.arange(1, 9, device=self.device)[None, :] % self._vocab_size
            with torch.inference_mode():
                want = self.model(input_ids=probe, use_cache=False).logits
                hidden = self._decoder(input_ids=probe, use_cache=False).last_hidden_state
                got = self._head_logits(hidden)
            return bool(torch.allclose(want.float(), got.float(), atol=1e-4, rtol=1e-4))
        except (AttributeError, TypeError, NotImplementedError):
            return False

    def _check_prefix_path(self) -> bool:
        """Use context caches only if they reproduce an uncached forward on a probe.

        A model whose attention is not causal (e.g. bidirectional), or whose cache does not
        support continuing a batch, fails the probe and is scored without sharing.
        """
        import torch

        weights = self.model.get_input_embeddings().weight
        probe = EncodedResponse(tuple(i % weights.shape[0] for i in range(1, 13)), response_start=5)
        # Rounding differs between the two paths; a wrong cache differs by far more.
        tolerance = max(1e-4, 8 * torch.finfo(weights.dtype).eps)
        try:
            want = self._forward([probe])[0]
            got = self._forward([probe, probe], 3, self._prefill(probe.input_ids[:3]))
            return all(np.allclose(g, want, atol=tolerance, rtol=tolerance) for g in got)
        except (AttributeError, TypeError, ValueError, NotImplementedError, RuntimeError):
            return False


#: Memory allowed for one chunk of logits in the output layer.
HEAD_CHUNK_BYTES = 256 * 2**20


def _gather_logprobs(logits: Any, targets: Any) -> Any:
    """``log_softmax(logits)[targets]`` computed in float32 (or float64 for float64 models)."""
    import torch

    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def load_backend(
    name: str, options: LoadOptions | None = None, batching: BatchingOptions | None = None
) -> TransformersBackend:
    """A backend for model ``name`` (see :mod:`prefsmith.models.loading`); weights load lazily."""
    return TransformersBackend(name, options, batching)
