"""Log-prob backends: given conversations and responses, return per-token log-probabilities.

The rest of prefsmith only talks to :class:`LogProbBackend`; :class:`TransformersBackend` is the
in-process implementation (CPU or one GPU). A vLLM or Ray backend implements the same protocol.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from prefsmith.models.encoding import ConversationEncoder, EncodedResponse, Message


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
    """Hash of a tokenizer's vocabulary and special tokens: equal hashes mean the same ids."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = sorted(str(t) for t in tokenizer.all_special_tokens)
    payload = repr((vocab, specials, type(tokenizer).__name__)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True)
class BatchingOptions:
    """How sequences are grouped into forward passes.

    Attributes:
        max_length: Longest sequence in tokens; longer rows are truncated (prompt first).
        max_batch_tokens: Budget of padded tokens per forward pass (batch size x longest row).
        max_batch_size: Upper bound on rows per forward pass.
    """

    max_length: int = 2048
    max_batch_tokens: int = 8192
    max_batch_size: int = 64


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
    mask, padding after a row cannot change that row's logits. Only positions that predict
    response tokens are sent through the output layer (``logits_to_keep``), and log-softmax is
    taken in float32.
    """

    def __init__(self, loaded: Any, batching: BatchingOptions | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.name = loaded.source.name
        self.fingerprint = loaded.fingerprint
        self.batching = batching or BatchingOptions()
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        max_length = min(self.batching.max_length, max_positions or self.batching.max_length)
        self.encoder = ConversationEncoder(self.tokenizer, max_length)
        self.template = self.encoder.template
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        self._supports_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

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
        for batch in plan_batches([len(e.input_ids) for e in encoded], self.batching):
            logprobs = self._forward([encoded[i] for i in batch])
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
        return [r for r in results if r is not None]

    def _forward(self, rows: list[EncodedResponse]) -> list[np.ndarray]:
        import torch

        width = max(len(r.input_ids) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row.input_ids)] = torch.tensor(row.input_ids)
            mask[b, : len(row.input_ids)] = 1
        # Position p predicts token p + 1; keep only positions predicting a response token.
        first = min(r.response_start for r in rows) - 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask}
        kwargs["attention_mask"] = mask.to(self.device)
        offset = 0
        if self._supports_keep:
            kwargs["logits_to_keep"] = torch.arange(first, width - 1, device=self.device)
            offset = first
        with torch.inference_mode():
            logits = self.model(**kwargs, use_cache=False).logits
        out = []
        for b, row in enumerate(rows):
            positions = torch.arange(row.response_start - 1, len(row.input_ids) - 1)
            row_logits = logits[b, positions - offset].float()
            targets = ids[b, positions + 1].to(row_logits.device)
            picked = row_logits.gather(-1, targets[:, None]).squeeze(-1)
            lp = picked - torch.logsumexp(row_logits, dim=-1)
            out.append(lp.double().cpu().numpy())
        return out


def load_backend(
    name: str, options: Any = None, batching: BatchingOptions | None = None
) -> TransformersBackend:
    """Load model ``name`` (see :func:`prefsmith.models.loading.load_model`) as a backend."""
    from prefsmith.models.loading import load_model

    return TransformersBackend(load_model(name, options), batching)
