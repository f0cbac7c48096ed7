"""How models are run (:class:`ModelOptions`) and one backend per model name (:class:`ModelPool`).

Several scorers of one run (``density-ratio:sum`` and ``logprob:mean`` of the same strong
model, say) share a pool, so each model's weights load once and, with a log-prob cache, each
response is scored once per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefsmith.defaults import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_ENGINE,
    DEFAULT_MAX_LENGTH,
    Device,
    ScoringDType,
)
from prefsmith.models.backend import BatchingOptions, LogProbBackend, load_backend
from prefsmith.models.cache import CachedBackend, LogProbCache
from prefsmith.models.loading import LoadOptions


@dataclass(frozen=True)
class ModelOptions:
    """How scoring models are loaded and batched.

    Attributes:
        dtype: ``auto`` (float32 on CPU, bfloat16 on CUDA), ``float32``, ``bfloat16``,
            ``float16`` or ``float64`` (the exact reference; slow).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: Torch CPU threads (``None``: torch's default).
        max_length: Longest sequence in tokens; longer rows keep the response and lose prompt
            tokens from the left.
        batch_tokens: Padded tokens per forward pass.
        max_batch_size: Rows per forward pass at most.
        batch_invariant: One forward pass per response, so a reward never depends on the other
            rows it was scored with (:mod:`prefsmith.models.invariance`); the two batch
            budgets above apply only when this is off (``hf`` engine and reward models).
        engine: What computes the log-probs and samples: ``hf`` (transformers in process; the
            exact reference) or ``vllm`` (``pip install 'prefsmith[vllm]'``), optionally with
            vLLM options: ``vllm:tensor_parallel_size=8,gpu_memory_utilization=0.45`` (they go
            to ``vllm_options``).
        vllm_options: The ``vllm`` engine's
            :class:`~prefsmith.models.engines.vllm.VLLMOptions`, or a dict of its fields
            (``None``: its defaults).

    >>> ModelOptions(dtype="bfloat16").batching().max_length
    2048
    """

    dtype: ScoringDType = DEFAULT_DTYPE
    device: Device = DEFAULT_DEVICE
    threads: int | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    batch_tokens: int = 8192
    max_batch_size: int = 64
    batch_invariant: bool = True
    engine: str = DEFAULT_ENGINE
    vllm_options: Any = None

    def __post_init__(self) -> None:
        if ":" in self.engine:  # vllm:KEY=VALUE,...
            from prefsmith.models.engines import parse_engine

            kind, options = parse_engine(self.engine)
            object.__setattr__(self, "engine", kind)
            object.__setattr__(self, "vllm_options", options)
        if isinstance(self.vllm_options, dict):  # from a recipe's YAML
            from prefsmith.models.engines.vllm import VLLMOptions

            object.__setattr__(self, "vllm_options", VLLMOptions(**self.vllm_options))

    def load_options(self) -> LoadOptions:
        """The loading part."""
        return LoadOptions(dtype=self.dtype, device=self.device, threads=self.threads)  # type: ignore[arg-type]

    def batching(self) -> BatchingOptions:
        """The batching part."""
        return BatchingOptions(
            self.max_length,
            self.batch_tokens,
            self.max_batch_size,
            batch_invariant=self.batch_invariant,
        )


class ModelPool:
    """Backends by model name, created once (weights load lazily on first use).

    Args:
        options: How models are loaded and batched.
        cache: A log-prob cache every backend answers from first (``None``: no cache).

    >>> from prefsmith.testing import tiny_model
    >>> pool = ModelPool(ModelOptions(max_length=512))
    >>> pool.backend(tiny_model(seed=0)) is pool.backend(tiny_model(seed=0))
    True
    """

    def __init__(self, options: ModelOptions | None = None, cache: LogProbCache | None = None):
        self.options = options or ModelOptions()
        self.cache = cache
        self._backends: dict[str, LogProbBackend] = {}

    def backend(self, model: str | LogProbBackend) -> LogProbBackend:
        """The backend of ``model`` (a name, or a backend passed through)."""
        if not isinstance(model, str):
            return model
        if model not in self._backends:
            backend: Any = load_backend(
                model,
                self.options.load_options(),
                self.options.batching(),
                engine=self.options.engine,
                vllm_options=self.options.vllm_options,
            )
            if self.cache is not None:
                backend = CachedBackend(backend, self.cache)
            self._backends[model] = backend
        return self._backends[model]

    def release(self, model: str) -> None:
        """Free the weights of ``model`` (they load again on the next miss)."""
        backend = self._backends.get(model)
        release = getattr(backend, "release", None)
        if release is not None:
            release()
