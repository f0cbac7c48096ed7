"""Shared fixtures: small real tokenizers shipped in the repo, tiny random models built in code.

Nothing here downloads: the two tokenizers are trained BPE tokenizers that mirror the packaged
models' (in ``src/prefsmith/resources/testing/tokenizers``, so doctests use them too;
``tests/fixtures/build_tokenizers.py`` rebuilds them), and the models are random.
Real-model tests are marked ``slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from prefsmith.testing import build_tiny_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_SET = Path(__file__).resolve().parents[1] / "src/prefsmith/resources/rewardbench-tiny.jsonl"

collect_ignore = ["fixtures"]  # the tokenizer build script is not a test module


def shipped_tokenizer(name: str):
    """Tokenizer ``chatml`` (like SmolLM2's) or ``plain`` (like Gemma 3's) from the package."""
    from prefsmith.testing import tiny_tokenizer

    return tiny_tokenizer(name)


def build_tiny_gemma3(
    tokenizer, folder: Path, sliding_window: int = 8, bidirectional: bool = False
) -> Path:
    """A tiny Gemma3 text model: one sliding-window layer, then one global layer."""
    return build_tiny_model(
        tokenizer,
        folder,
        "gemma3",
        seed=4,
        scale=4.0,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=bidirectional,
    )


@pytest.fixture(scope="session")
def smol_tokenizer():
    """Byte-level BPE with SmolLM2's special tokens and ChatML template; adds no BOS."""
    return shipped_tokenizer("chatml")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """SentencePiece-style BPE with byte fallback like Gemma 3's; adds BOS, no chat template."""
    return shipped_tokenizer("plain")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, smol_tokenizer, gemma_tokenizer) -> dict[str, str]:
    """Folders of tiny random models.

    ``chatml-a`` and ``chatml-b`` share the SmolLM2-like tokenizer (a same-tokenizer pair);
    ``chatml-q`` is a Qwen2 architecture with the same vocabulary (transformers gives it a
    Qwen2 tokenizer class, whose pre-tokenization differs); ``plain-c`` uses the Gemma-like
    tokenizer, which has no chat template and adds BOS.
    """
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "chatml-a": str(build_tiny_model(smol_tokenizer, root / "chatml-a", "llama", seed=0)),
        "chatml-b": str(build_tiny_model(smol_tokenizer, root / "chatml-b", "llama", seed=1)),
        "chatml-q": str(build_tiny_model(smol_tokenizer, root / "chatml-q", "qwen2", seed=3)),
        "plain-c": str(build_tiny_model(gemma_tokenizer, root / "plain-c", "llama", seed=2)),
    }


@pytest.fixture(scope="session")
def tiny_backends(tiny_models):
    from prefsmith.models.backend import load_backend

    return {name: load_backend(path) for name, path in tiny_models.items()}


@pytest.fixture
def transformers_defaults():
    """transformers as a fresh Python has it: its progress bars on, its warnings shown.

    Importing the CLI sets environment variables that turn the bars off for the whole test
    session, which would hide a load that prints; this puts them back on for one test.
    """
    import logging
    import warnings

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()
    level, bars = root.level, hf_logging.is_progress_bar_enabled()
    hub_off = are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hub's: its environment variable has priority
        hf_logging.enable_progress_bar()
    root.setLevel(logging.WARNING)
    yield hf_logging
    root.setLevel(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not bars:
            hf_logging.disable_progress_bar()
        if hub_off:
            disable_progress_bars()
