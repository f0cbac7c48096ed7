"""Engines run one model: token ids in, log-probs or sampled completions out.

See :mod:`prefsmith.models.engines.base` for the interface; ``hf`` is
:class:`~prefsmith.models.engines.hf.HFEngine`, ``vllm`` is
:class:`~prefsmith.models.engines.vllm.VLLMEngine` (imported only when asked for).
"""

from __future__ import annotations

from typing import Any

from prefsmith.models.engines.base import (
    ENGINES,
    Completion,
    Engine,
    EngineNotInstalledError,
    SampleOptions,
    SampleRequest,
    finish_completion,
)

__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineNotInstalledError",
    "SampleOptions",
    "SampleRequest",
    "finish_completion",
    "load_engine",
]


def load_engine(
    name: str,
    engine: str = "hf",
    load_options: Any = None,
    batching: Any = None,
    vllm_options: Any = None,
) -> Engine:
    """An engine for model ``name``: ``hf`` (transformers) or ``vllm`` (``prefsmith[vllm]``).

    ``load_options`` is a :class:`~prefsmith.models.loading.LoadOptions` (dtype, device),
    ``batching`` a :class:`~prefsmith.models.engines.hf.BatchingOptions` (``hf`` scoring;
    its ``max_length`` also bounds ``vllm``), ``vllm_options`` a
    :class:`~prefsmith.models.engines.vllm.VLLMOptions`. Weights load on first use.
    """
    if engine == "hf":
        from prefsmith.models.engines.hf import HFEngine

        return HFEngine(name, load_options, batching)
    if engine == "vllm":
        from prefsmith.models.engines.vllm import VLLMEngine, VLLMOptions

        max_length = getattr(batching, "max_length", None)
        return VLLMEngine(name, vllm_options or VLLMOptions(), load_options, max_length=max_length)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
