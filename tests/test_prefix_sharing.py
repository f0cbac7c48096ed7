"""Responses to one context scored on a shared key/value cache equal unshared scoring."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_tiny_gemma3
from prefsmith.models.backend import (
    BatchingOptions,
    ScoreRequest,
    TransformersBackend,
    load_backend,
)

SHARE = BatchingOptions(min_shared_prefix=1)
NO_SHARE = BatchingOptions(share_prefix=False)


def pair_requests() -> list[ScoreRequest]:
    """Pairs and candidate lists: several responses per context, contexts of many lengths."""
    out = []
    for i in range(5):
        prompt = "Please explain, step by step, " + "why the sky is blue " * (1 + 4 * i)
        messages = ({"role": "user", "content": prompt},)
        if i % 2:
            messages = ({"role": "system", "content": "Answer briefly."}, *messages)
        for j in range(2 + i % 3):
            out.append(ScoreRequest(messages, "Because of scattering. " * (1 + j + i)))
    out.append(ScoreRequest(({"role": "user", "content": "alone"},), "a single response"))
    return out


def assert_same_scores(backend: TransformersBackend, requests: list[ScoreRequest]) -> None:
    shared = TransformersBackend.from_loaded(backend.loaded, SHARE).score(requests)
    plain = TransformersBackend.from_loaded(backend.loaded, NO_SHARE).score(requests)
    for a, b in zip(shared, plain, strict=True):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4, rtol=2e-5)


@pytest.mark.parametrize("name", ["chatml-a", "chatml-q", "plain-c"])
def test_shared_context_equals_separate_forwards(tiny_backends, name):
    backend = TransformersBackend.from_loaded(tiny_backends[name].loaded, SHARE)
    groups, single = backend.engine._plan_sharing([backend.encode(r) for r in pair_requests()])
    assert len(groups) == 5 and single == [len(pair_requests()) - 1]
    assert backend.engine._prefix_path
    assert_same_scores(backend, pair_requests())


def test_sliding_window_model_beyond_its_window(tmp_path, gemma_tokenizer):
    """Gemma3's sliding-window layers keep only the last window of the cached context."""
    backend = load_backend(str(build_tiny_gemma3(gemma_tokenizer, tmp_path / "g3", 8)))
    requests = pair_requests()
    assert min(len(backend.encode(r).input_ids) for r in requests[:-1]) > 8
    assert_same_scores(backend, requests)
    assert backend.engine._prefix_path is None  # the probe ran on the copies above
    shared = TransformersBackend.from_loaded(backend.loaded, SHARE)
    shared.score(requests[:2])
    assert shared.engine._prefix_path


def test_bidirectional_model_is_scored_without_sharing(tmp_path, gemma_tokenizer):
    """A cache cannot reproduce bidirectional attention: the probe refuses sharing."""
    folder = build_tiny_gemma3(gemma_tokenizer, tmp_path / "g3b", 8, bidirectional=True)
    backend = TransformersBackend.from_loaded(load_backend(str(folder)).loaded, SHARE)
    requests = pair_requests()
    assert backend.engine._plan_sharing([backend.encode(r) for r in requests])[0] == []
    assert backend.engine._prefix_path is False
    assert_same_scores(backend, requests)


def test_candidates_split_over_batches_reuse_one_context(tiny_backends):
    """A context's responses spread over several forward passes (small token budget)."""
    backend = tiny_backends["chatml-a"]
    small = BatchingOptions(min_shared_prefix=1, max_batch_size=1)
    requests = pair_requests()
    split = TransformersBackend.from_loaded(backend.loaded, small).score(requests)
    plain = TransformersBackend.from_loaded(backend.loaded, NO_SHARE).score(requests)
    for a, b in zip(split, plain, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4, rtol=2e-5)
