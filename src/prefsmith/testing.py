"""Tiny random models for doctests, tests and trying the API without downloads.

Two real tokenizers ship in ``resources/testing/tokenizers`` (a few hundred kB): ``chatml``
(byte-level BPE with a ChatML template, like SmolLM2's) and ``plain`` (a different pipeline
that adds BOS and has no chat template, like Gemma's). :func:`tiny_model` saves a 2-layer random
causal LM over one of them; :func:`tiny_backend` wraps it for scoring. Nothing is fetched.

>>> backend = tiny_backend(seed=0)
>>> backend.name.endswith("chatml-llama-0")
True
"""

from __future__ import annotations

import functools
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

TOKENIZERS = ("chatml", "plain")


def tokenizer_dir(kind: str = "chatml") -> Path:
    """Folder of a shipped tiny tokenizer (``chatml`` or ``plain``)."""
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {kind!r}")
    return Path(str(files("prefsmith").joinpath(f"resources/testing/tokenizers/{kind}")))


def tiny_tokenizer(kind: str = "chatml") -> Any:
    """A shipped tiny tokenizer, loaded with ``transformers``."""
    from transformers import AutoTokenizer

    from prefsmith.models.loading import quiet_transformers

    with quiet_transformers():
        return AutoTokenizer.from_pretrained(str(tokenizer_dir(kind)))


def build_tiny_model(
    tokenizer: Any,
    folder: Path,
    arch: str = "llama",
    seed: int = 0,
    scale: float = 8.0,
    **config_overrides: Any,
) -> Path:
    """Save a 2-layer random causal LM using ``tokenizer``'s vocabulary into ``folder``.

    ``arch`` is ``llama``, ``qwen2`` or ``gemma3`` (text); ``config_overrides`` go to its config.
    Weights are scaled up (``scale``) so that log-probs vary a lot between tokens.
    """
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    from prefsmith.models.loading import quiet_transformers

    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma3": Gemma3TextConfig}[arch]
    config = config_class(
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": True,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **config_overrides,
        }
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    with quiet_transformers():
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="prefsmith-tiny-"))


@functools.cache
def tiny_model(seed: int = 0, tokenizer: str = "chatml", arch: str = "llama") -> str:
    """Folder of a tiny random model (built once per process, in a temporary folder)."""
    folder = _root() / f"{tokenizer}-{arch}-{seed}"
    return str(build_tiny_model(tiny_tokenizer(tokenizer), folder, arch, seed=seed))


def tiny_backend(seed: int = 0, tokenizer: str = "chatml", arch: str = "llama") -> Any:
    """A scoring backend over :func:`tiny_model`."""
    from prefsmith.models.backend import load_backend

    return load_backend(tiny_model(seed, tokenizer, arch))


@functools.cache
def tiny_reward_model(seed: int = 0, tokenizer: str = "chatml") -> str:
    """Folder of a tiny random reward model (a one-output sequence classifier), built once."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from prefsmith.models.loading import quiet_transformers

    folder = _root() / f"rm-{tokenizer}-{seed}"
    base = tiny_model(seed, tokenizer)
    torch.manual_seed(seed)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = model.config.pad_token_id or model.config.eos_token_id
        model.save_pretrained(folder)
        tiny_tokenizer(tokenizer).save_pretrained(folder)
    return str(folder)
