"""Engines run one model: token ids in, log-probs or sampled completions out.

See :mod:`prefsmith.models.engines.base` for the interface. :data:`ENGINES` names every engine,
once: ``hf`` is :class:`~prefsmith.models.engines.hf.HFEngine`, ``vllm`` is
:class:`~prefsmith.models.engines.vllm.VLLMEngine` (vLLM itself is imported only when a vllm
engine is created). Whatever dispatches on an engine name (``--engine``, ``ModelOptions.engine``,
a recipe's ``engine``) goes through :func:`engine_class`, :func:`parse_engine` and
:func:`load_engine`. An engine is the one handle on a model, for scoring as for sampling;
:func:`as_engine` turns what a caller may give (a name, a model in memory) into one.
"""

from __future__ import annotations

from typing import Any

from prefsmith.defaults import DEFAULT_ENGINE
from prefsmith.models.engines.base import (
    Completion,
    Engine,
    EngineNotInstalledError,
    SampleOptions,
    SampleRequest,
    finish_completion,
)
from prefsmith.models.engines.hf import HFEngine
from prefsmith.models.engines.vllm import VLLMEngine
from prefsmith.models.loading import LoadedModel, LoadOptions

__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineNotInstalledError",
    "SampleOptions",
    "SampleRequest",
    "as_engine",
    "engine_class",
    "finish_completion",
    "load_engine",
    "parse_engine",
]

#: Engine name -> engine class.
ENGINES: dict[str, type[Engine]] = {"hf": HFEngine, "vllm": VLLMEngine}


def engine_class(name: str, spec: str | None = None) -> type[Engine]:
    """The class of engine ``name`` (``spec``: the text it came from, for the message).

    >>> engine_class("hf").kind
    'hf'
    >>> engine_class("tgi")
    Traceback (most recent call last):
    ...
    ValueError: engine must be one of hf, vllm; got 'tgi'
    """
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {spec or name!r}")
    return ENGINES[name]


def parse_engine(text: str) -> tuple[str, Any]:
    """An engine spec: ``hf``, ``vllm`` or ``vllm:KEY=VALUE,...`` -> (kind, its options).

    For ``vllm`` the keys are fields of :class:`~prefsmith.models.engines.vllm.VLLMOptions`
    (GPU memory fraction, tensor-parallel size, maximum length, dtype, ...); values are read as
    JSON (numbers, ``true``, ``null``) or else as text. vLLM itself is not imported.

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
    kind, _, rest = text.partition(":")
    return kind, engine_class(kind, text).parse_options(rest, text)


def load_engine(
    name: str,
    engine: str = DEFAULT_ENGINE,
    load_options: Any = None,
    batching: Any = None,
    vllm_options: Any = None,
) -> Engine:
    """An engine for model ``name``: ``hf`` (transformers) or ``vllm`` (``prefsmith[vllm]``).

    ``load_options`` is a :class:`~prefsmith.models.loading.LoadOptions` (dtype, device),
    ``batching`` a :class:`~prefsmith.models.engines.hf.BatchingOptions` (``hf`` scoring;
    its ``max_length`` also bounds ``vllm``), ``vllm_options`` the engine's own options (a
    :class:`~prefsmith.models.engines.vllm.VLLMOptions`; the hf engine has none). Weights load
    on first use.
    """
    return engine_class(engine).create(name, load_options, batching, vllm_options)


def as_engine(model: str | LoadedModel | Engine, load_options: LoadOptions | None = None) -> Engine:
    """The engine handle of ``model``: an engine as it is, a model in memory wrapped in the
    ``hf`` engine (:meth:`~prefsmith.models.engines.hf.HFEngine.from_loaded`), a name loaded
    with the ``hf`` engine and ``load_options`` (weights on first use)."""
    if isinstance(model, LoadedModel):
        return HFEngine.from_loaded(model)
    if isinstance(model, str):
        return load_engine(model, DEFAULT_ENGINE, load_options)
    return model
