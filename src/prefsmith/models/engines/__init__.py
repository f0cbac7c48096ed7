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
    "parse_engine",
]


def parse_engine(text: str) -> tuple[str, Any]:
    """An engine spec: ``hf``, ``vllm`` or ``vllm:KEY=VALUE,...`` -> (kind, vLLM options).

    The keys are fields of :class:`~prefsmith.models.engines.vllm.VLLMOptions` (GPU memory
    fraction, tensor-parallel size, maximum length, dtype, ...); values are read as JSON
    (numbers, ``true``, ``null``) or else as text. vLLM itself is not imported.

    >>> parse_engine("hf")
    ('hf', None)
    >>> kind, options = parse_engine("vllm:tensor_parallel_size=8,gpu_memory_utilization=0.45")
    >>> kind, options.tensor_parallel_size, options.gpu_memory_utilization
    ('vllm', 8, 0.45)
    >>> parse_engine("vllm:tp=8")
    Traceback (most recent call last):
    ...
    ValueError: engine 'vllm:tp=8': unknown vllm option 'tp'; choose from dtype, ...
    """
    import dataclasses
    import json

    kind, _, rest = text.partition(":")
    if kind not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {text!r}")
    if kind == "hf":
        if rest:
            raise ValueError(f"engine {text!r}: the hf engine takes no options")
        return kind, None
    from prefsmith.models.engines.vllm import VLLMOptions

    names = [f.name for f in dataclasses.fields(VLLMOptions) if f.name != "engine_kwargs"]
    values: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"engine {text!r}: write options as KEY=VALUE, not {part!r}")
        if key not in names:
            raise ValueError(
                f"engine {text!r}: unknown vllm option {key!r}; choose from {', '.join(names)}"
            )
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return kind, VLLMOptions(**values)


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
