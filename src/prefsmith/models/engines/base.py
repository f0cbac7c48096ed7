"""The engine interface: token ids in, log-probs or sampled token ids out.

An *engine* runs one model. It knows nothing about conversations, chat templates or rewards:

* **Scoring**: rows of token ids with the index where the response starts
  (:class:`~prefsmith.models.encoding.EncodedResponse`) -> the log-probs of the response tokens,
  ``log p(ids[i] | ids[:i])`` for ``i >= response_start``, as float64 arrays.
* **Sampling**: prompt token ids with one seed per completion (:class:`SampleRequest`) and
  :class:`SampleOptions` (temperature, top-p, max new tokens, stop ids) -> ``n`` completions
  per prompt (:class:`Completion`: token ids, text, finish reason ``stop``/``length``, optionally
  the log-probs of the sampled tokens).

Everything above (the chat-template encoding in
:class:`~prefsmith.models.encoding.ConversationEncoder`, density ratio, CDR contexts, best-of-N,
RMBoost, judge) talks to an engine only through these two calls, so the exact prompt/response
token boundary is computed once, in the same way, for every engine.

Engines: ``hf`` (:class:`prefsmith.models.engines.hf.HFEngine`, transformers, the reference and
the CPU default) and ``vllm`` (:class:`prefsmith.models.engines.vllm.VLLMEngine`, the optional
extra ``prefsmith[vllm]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from prefsmith.models.encoding import EncodedResponse

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class SampleRequest:
    """One prompt to sample completions for.

    Attributes:
        prompt_ids: Token ids of the rendered prompt (chat template, generation prompt, BOS).
        seeds: One seed per completion: completion ``j`` is drawn with ``seeds[j]`` only, so
            it does not depend on the other completions, prompts or batches, and asking for
            more seeds extends the completions of fewer.
    """

    prompt_ids: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        """Number of completions asked for."""
        return len(self.seeds)

    @classmethod
    def consecutive(cls, prompt_ids: Sequence[int], n: int, seed: int) -> SampleRequest:
        """``n`` completions with seeds ``seed, seed + 1, ...``.

        >>> SampleRequest.consecutive([1, 2], n=3, seed=10).seeds
        (10, 11, 12)
        """
        return cls(tuple(prompt_ids), tuple(seed + j for j in range(n)))


def check_sampling(max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    """Raise ``ValueError`` naming the first sampling setting out of its range.

    >>> check_sampling(64, 0.7, 1.5, 8)
    Traceback (most recent call last):
    ...
    ValueError: top_p must be in (0, 1], got 1.5
    """
    problems = [
        (max_new_tokens < 1, f"max_new_tokens must be at least 1, got {max_new_tokens}"),
        (temperature < 0, f"temperature must be >= 0, got {temperature}"),
        (not 0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}"),
        (batch_size < 1, f"batch_size must be at least 1, got {batch_size}"),
    ]
    for wrong, message in problems:
        if wrong:
            raise ValueError(message)


@dataclass(frozen=True)
class SampleOptions:
    """How completions are sampled (the same for every request of one call).

    Attributes:
        max_new_tokens: Most tokens generated per completion, the stop token included.
        stop_ids: Token ids that end a completion (EOS, end-of-turn); the stop token is part of
            :attr:`Completion.token_ids` but not of its text.
        temperature: Softmax temperature; ``0`` is greedy decoding.
        top_p: Nucleus mass in (0, 1]; ``1.0`` keeps every token.
        logprobs: Also return ``log p(token)`` of every generated token under the model's
            unmodified distribution (before temperature and top-p).
        batch_size: ``hf`` only: sequences generated together in one forward loop. vLLM
            schedules by itself.
    """

    max_new_tokens: int
    stop_ids: tuple[int, ...]
    temperature: float = 0.7
    top_p: float = 1.0
    logprobs: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_sampling(self.max_new_tokens, self.temperature, self.top_p, self.batch_size)
        if not self.stop_ids:
            raise ValueError("stop_ids must name at least one token")


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    Attributes:
        token_ids: Generated ids up to and including the first stop token (all of them when
            ``max_new_tokens`` was reached first).
        text: The ids before the stop token, decoded without special tokens, whitespace
            stripped (templates add their own separators).
        finish_reason: ``stop`` (a stop token was generated) or ``length``.
        logprobs: ``log p`` of each id of ``token_ids`` when asked for, else ``None``.
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str
    logprobs: np.ndarray | None = field(default=None, compare=False)

    @property
    def n_tokens(self) -> int:
        """Tokens generated, the stop token included."""
        return len(self.token_ids)


class Engine(Protocol):
    """What prefsmith needs from whatever runs a model.

    An engine class is registered under its :attr:`kind` in
    :data:`prefsmith.models.engines.ENGINES` and built by
    :func:`prefsmith.models.engines.load_engine` through :meth:`create`. An engine is the one
    handle on a model, for scoring backends as for generation steps: everything but the weights
    (name, tokenizer, fingerprint, positions) is known once it is built, and the weights load
    on the first :meth:`score_tokens` or :meth:`sample`, so validating prompts and recording
    settings load none.

    Attributes:
        kind: ``hf`` or ``vllm``.
        in_process: Whether the engine runs a ``transformers`` model held in this process
            (``engine.loaded``; a model already in memory can be wrapped), which the Python API
            exposes (:class:`~prefsmith.models.backend.TransformersBackend`) and samplers share;
            otherwise the engine holds its weights itself (vLLM).
        name: The model name as given (packaged name, folder, GGUF file, hub id).
        tokenizer: Its ``transformers`` tokenizer (used above the engine for templates).
        fingerprint: Hash of the weights.
        dtype: Compute dtype, e.g. ``float32``.
        max_positions: Longest sequence (prompt + response) the engine accepts, if known.
        max_sequence: Longest row the encoder above may send for scoring.
        generation_config: The model's ``transformers`` generation config (its EOS ids).
    """

    kind: ClassVar[str]
    in_process: ClassVar[bool]
    name: str
    tokenizer: Any
    fingerprint: str
    dtype: str
    max_positions: int | None

    @property
    def max_sequence(self) -> int: ...

    @property
    def generation_config(self) -> Any: ...

    @classmethod
    def create(
        cls, name: str, load_options: Any = None, batching: Any = None, options: Any = None
    ) -> Engine:
        """The engine for model ``name``: ``load_options`` (dtype, device), ``batching``
        (:class:`~prefsmith.models.engines.hf.BatchingOptions`; its ``max_length`` bounds every
        engine) and the engine's own ``options`` (from :meth:`parse_options`). Weights load on
        first use."""
        ...

    @classmethod
    def parse_options(cls, text: str, spec: str) -> Any:
        """The engine's options from the ``KEY=VALUE,...`` part of an engine ``spec``."""
        ...

    @classmethod
    def check_installed(cls) -> None:
        """Raise :class:`EngineNotInstalledError` naming the extra if the engine cannot run."""
        ...

    def score_tokens(
        self, rows: Sequence[EncodedResponse], on_progress: Progress = None
    ) -> list[np.ndarray]:
        """``log p(ids[i] | ids[:i])`` for every response position ``i`` of every row (float64);
        ``on_progress(k)`` is called as ``k`` more rows are done."""
        ...

    def sample(
        self,
        requests: Sequence[SampleRequest],
        options: SampleOptions,
        on_progress: Progress = None,
    ) -> list[list[Completion]]:
        """``request.n`` completions per request, in input order; ``on_progress(k)`` is called
        as ``k`` more completions are done."""
        ...

    def release(self) -> None:
        """Free the weights (they load again on next use)."""
        ...


def finish_completion(
    tokenizer: Any,
    new_ids: Sequence[int],
    stop_ids: Sequence[int],
    logprobs: Sequence[float] | None = None,
) -> Completion:
    """Cut generated ids after the first stop token and decode the part before it.

    Both engines build their completions here, so text and finish reasons agree exactly.
    """
    stops = set(stop_ids)
    end = next((k for k, t in enumerate(new_ids) if t in stops), None)
    if end is None:
        kept, body, reason = list(new_ids), list(new_ids), "length"
    else:
        kept, body, reason = list(new_ids[: end + 1]), list(new_ids[:end]), "stop"
    text = tokenizer.decode(body, skip_special_tokens=True).strip()
    lp = None if logprobs is None else np.asarray(list(logprobs)[: len(kept)], dtype=np.float64)
    return Completion(tuple(kept), text, reason, lp)


class EngineNotInstalledError(ImportError):
    """The package an engine runs on is not installed; the message names the extra."""
