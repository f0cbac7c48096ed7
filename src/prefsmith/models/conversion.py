"""Convert a GGUF file to a ``transformers`` safetensors folder one tensor at a time.

``from_pretrained(gguf_file=...)`` dequantizes the whole model into memory before anything can
be saved: a 1.5B model takes 7 GB in float32, and saving it took a peak of 14 GB. Here each
tensor is read from the (memory-mapped) GGUF file, dequantized in row chunks with
:func:`gguf.quants.dequantize`, renamed and fixed up by the architecture's
``transformers`` tensor processor (llama's q/k reverse permutation, Gemma's norm offsets, ...)
exactly as ``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint`` does, and written
to safetensors shards of at most :data:`SHARD_BYTES`: the memory held is about one shard plus
the largest tensor, not the model.

The float32 folder holds the very tensors ``from_pretrained(gguf_file=..., dtype=float32)``
loads (``tests/test_conversion.py`` checks it, tensor for tensor). A half-precision folder
holds them cast to that dtype (parameters the model keeps in float32 when it loads in half
precision stay float32), which is what loading the float32 folder in that dtype gives.

Architectures that transformers loads through its newer GGUF path
(``transformers.integrations.gguf``), or whose GGUF lacks a weight the model needs, are
converted the old way: the whole model loaded with ``from_pretrained`` and saved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Most bytes of tensors written to one safetensors shard (a larger tensor gets a shard alone).
SHARD_BYTES = 1 << 30

#: Elements dequantized at once: bounds the temporaries of :func:`gguf.quants.dequantize`.
CHUNK_ELEMENTS = 1 << 24

#: Storage dtypes a converted folder may have.
STORAGE_DTYPES = ("float32", "bfloat16", "float16")

#: The metadata ``save_pretrained`` writes into every safetensors file.
SAFETENSORS_METADATA = {"format": "pt"}


class _NotTensorwise(Exception):
    """This GGUF cannot be converted tensor by tensor; convert it the old way."""


def convert_gguf_file(
    gguf_path: Path, out: Path, storage: str = "float32", shard_bytes: int = SHARD_BYTES
) -> None:
    """Write the ``transformers`` folder of a GGUF model into ``out`` (created here).

    Writes ``config.json``, ``generation_config.json``, the tokenizer and the weights: one
    ``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` shards and
    ``model.safetensors.index.json`` when they exceed ``shard_bytes``.

    Args:
        gguf_path: The GGUF file.
        out: Folder to write; must not exist yet.
        storage: dtype of the weights written: ``float32``, ``bfloat16`` or ``float16``.
        shard_bytes: Most bytes of tensors per shard.
    """
    if storage not in STORAGE_DTYPES:
        raise ValueError(
            f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, not {storage!r}"
        )
    out.mkdir(parents=True)
    _save_tokenizer(gguf_path, out)
    try:
        _convert_tensorwise(gguf_path, out, storage, shard_bytes)
    except _NotTensorwise:
        for path in out.glob("model*.safetensors*"):
            path.unlink()
        _convert_whole(gguf_path, out, storage)


def _save_tokenizer(gguf_path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(out)


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _meta_model(config: Any, dtype: Any) -> Any:
    """The causal LM of ``config`` with its weights on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def param_dtypes(model: Any, dtype: Any) -> dict[str, Any]:
    """The dtype each state-dict entry of ``model`` gets when it loads in ``dtype``.

    Mirrors ``from_pretrained``: ``model._get_dtype_plan`` keeps some modules in float32 in
    half precision (``_keep_in_fp32_modules``), and a parameter that the model creates in
    another dtype keeps it.

    Args:
        model: A model (its weights may be on the meta device), created in ``dtype``.
        dtype: The torch dtype it loads in.
    """
    plan: dict[str, Any] = model._get_dtype_plan(dtype) if hasattr(model, "_get_dtype_plan") else {}
    patterns = [(re.compile(key.replace("*", ".*")), kept) for key, kept in plan.items()]
    dtypes = {}
    for name, tensor in model.state_dict().items():
        kept = [dt for pattern, dt in patterns if pattern.search(name)]
        dtypes[name] = kept[0] if kept else tensor.dtype
    return dtypes


def _saved_keys(model: Any) -> set[str]:
    """State-dict keys ``save_pretrained`` writes: one of each group of tied weights."""
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        seen.setdefault(id(tensor), name)
    return set(seen.values())


def _aliases(model: Any) -> dict[str, set[str]]:
    """Each state-dict key -> the keys sharing its tensor (itself included)."""
    groups: dict[int, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), set()).add(name)
    return {name: group for group in groups.values() for name in group}


def _dequantized(tensor: Any) -> Any:
    """One GGUF tensor as a float32 numpy array, dequantized a chunk of rows at a time.

    Dequantizing is blockwise, so the chunks give the values of dequantizing the whole tensor
    at once (what transformers does) without its temporaries, several times the tensor.
    """
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    data = tensor.data
    kind = GGMLQuantizationType(tensor.tensor_type)
    if kind == GGMLQuantizationType.F32:
        return np.array(data.view(np.float32))  # a copy: the file is mapped read-only
    if data.ndim < 2:
        return np.asarray(dequantize(data, kind))
    first = dequantize(data[:1], kind)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=first.dtype)
    rows = max(1, CHUNK_ELEMENTS // max(1, first.size))
    for start in range(0, data.shape[0], rows):
        out[start : start + rows] = dequantize(data[start : start + rows], kind)
    return out


def _converted_tensors(
    gguf_path: Path, parsed: dict[str, Any], model: Any
) -> Iterator[tuple[str, Any]]:
    """``(transformers name, float32 tensor)`` of each GGUF tensor the model takes, in file order.

    The loop of ``load_gguf_checkpoint(return_tensors=True)``, one tensor at a time: the same
    dequantization, tensor processor and name map. Tensors a processor files away itself
    (experts it merges) come at the end.
    """
    import numpy as np
    import torch
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    reader = GGUFReader(str(gguf_path))
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    key_mapping = get_gguf_hf_weights_map(model, processor)
    filed: dict[str, Any] = {}
    parameters = {**parsed, "tensors": filed}
    for tensor in reader.tensors:
        result = processor.process(
            weights=_dequantized(tensor),
            name=tensor.name,
            tensor_key_mapping=key_mapping,
            parsed_parameters=parameters,
        )
        if result.name not in key_mapping:
            continue
        weights = result.weights
        if not (weights.flags.c_contiguous and weights.flags.writeable and weights.flags.owndata):
            weights = np.copy(weights)
        yield key_mapping[result.name], torch.from_numpy(weights)
    yield from filed.items()


def _convert_tensorwise(gguf_path: Path, out: Path, storage: str, shard_bytes: int) -> None:
    """Config, generation config and weights of ``gguf_path``, streamed tensor by tensor."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if _has_new_loader(gguf_path):
        raise _NotTensorwise
    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    dtype = _torch_dtype(storage)
    model = _meta_model(config, dtype)
    dtypes = param_dtypes(model, dtype)
    saved, aliases = _saved_keys(model), _aliases(model)
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    writer = _ShardWriter(out, shard_bytes)
    covered: set[str] = set()
    for name, tensor in _converted_tensors(gguf_path, parsed, model):
        if name not in dtypes or name in covered:
            continue  # from_pretrained ignores what the model has no place for
        covered |= aliases[name]
        if name not in saved:  # the tied copy's twin carries it
            name = next(k for k in aliases[name] if k in saved)
        writer.add(name, tensor.to(dtypes[name]))
    if covered != set(dtypes):
        writer.discard()
        raise _NotTensorwise  # the model has weights the GGUF lacks: from_pretrained initializes
    writer.finish()
    config.architectures = [type(model).__name__]
    config.dtype = storage
    config.save_pretrained(out)
    if model.can_generate() and model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def _has_new_loader(gguf_path: Path) -> bool:
    """Whether transformers loads this GGUF through ``transformers.integrations.gguf``."""
    try:
        from transformers.integrations.gguf import is_gguf_arch_supported, read_gguf_metadata
    except ImportError:  # a transformers with the legacy loader only
        return False
    metadata, _ = read_gguf_metadata(str(gguf_path))
    return bool(is_gguf_arch_supported(metadata["general.architecture"]))


class _ShardWriter:
    """Writes tensors into safetensors shards of bounded size, then names them as
    ``save_pretrained`` does."""

    def __init__(self, out: Path, shard_bytes: int) -> None:
        self.out = out
        self.shard_bytes = shard_bytes
        self.pending: dict[str, Any] = {}
        self.pending_bytes = 0
        self.files: list[Path] = []
        self.weight_map: dict[str, int] = {}
        self.total_bytes = 0
        self.total_parameters = 0

    def add(self, name: str, tensor: Any) -> None:
        """Queue one tensor, writing the shard first if the tensor would overflow it."""
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.shard_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size
        self.total_parameters += tensor.numel()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        path = self.out / f"model-part{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, str(path), metadata=SAFETENSORS_METADATA)
        self.weight_map.update(dict.fromkeys(self.pending, len(self.files)))
        self.files.append(path)
        self.pending, self.pending_bytes = {}, 0

    def discard(self) -> None:
        """Drop what was written."""
        self.pending = {}
        for path in self.files:
            path.unlink()
        self.files = []

    def finish(self) -> None:
        """Write the last shard; rename the shards ``model-0000i-of-0000n.safetensors`` and
        write their index (one shard: ``model.safetensors``, no index)."""
        if self.pending:
            self._flush()
        n = len(self.files)
        if n == 1:
            self.files[0].rename(self.out / "model.safetensors")
            return
        names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for path, name in zip(self.files, names, strict=True):
            path.rename(self.out / name)
        index = {
            "metadata": {"total_parameters": self.total_parameters, "total_size": self.total_bytes},
            "weight_map": {key: names[i] for key, i in self.weight_map.items()},
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        (self.out / "model.safetensors.index.json").write_text(text)


def _convert_whole(gguf_path: Path, out: Path, storage: str) -> None:
    """The old conversion: ``from_pretrained(gguf_file=..., dtype=float32)``, cast, save."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # transformers refuses to save a GGUF-loaded model while its quantizer is attached; the
    # weights are already dequantized to float32, so dropping it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if storage != "float32":
        dtype = _torch_dtype(storage)
        dtypes = param_dtypes(_meta_model(model.config, dtype), dtype)
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                if tensor.is_floating_point() and name in dtypes:
                    tensor.data = tensor.data.to(dtypes[name])
        model.config.dtype = storage
    model.save_pretrained(out)
