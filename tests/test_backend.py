"""Batched log-probs: equality with a one-at-a-time reference, batch invariance, head path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from prefsmith.models.backend import BatchingOptions, ScoreRequest, TransformersBackend

PROMPTS = [
    "What is 2 + 2?",
    "Write a haiku about the sea, please, with a title.",
    "Explain recursion to a child in two sentences.",
    "Translate 'good morning' into French and German and Spanish and Italian.",
]
RESPONSES = [
    "4",
    "Waves fold on the shore,\nsalt wind hums",
    "A function that calls itself.",
    "x" * 3,
]


def requests() -> list[ScoreRequest]:
    out = []
    for i, prompt in enumerate(PROMPTS):
        for j, response in enumerate(RESPONSES):
            messages = [{"role": "user", "content": prompt}]
            if (i + j) % 2:
                messages.insert(0, {"role": "system", "content": "Be kind."})
            out.append(ScoreRequest(tuple(messages), response * (1 + i)))
    return out


def reference_logprobs(backend: TransformersBackend, request: ScoreRequest) -> np.ndarray:
    """One example, no padding, full logits, log_softmax over the vocabulary.

    Attention runs on torch's math kernel, as the engine's batch-invariant scoring does
    (:mod:`prefsmith.models.invariance`): the comparison checks the engine's padding, output
    layer and context-cache paths, not two attention kernels' rounding, which differ by up to
    2e-4 nats per token on these tiny random models with amplified weights (on SmolLM2-135M both
    kernels are within 5e-5 nats of float64, the math kernel slightly closer).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tok, model = backend.tokenizer, backend.model
    prompt = tok.apply_chat_template(
        list(request.messages), tokenize=False, add_generation_prompt=True
    )
    full = tok.apply_chat_template(
        [*request.messages, {"role": "assistant", "content": request.response}], tokenize=False
    )
    assert full.startswith(prompt)
    prompt_ids = tok(prompt)["input_ids"]  # with the tokenizer's own special tokens
    full_ids = tok(full)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        logits = model(torch.tensor([full_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(full_ids[len(prompt_ids) :])
    return logp[len(prompt_ids) - 1 : -1].gather(-1, targets[:, None]).squeeze(-1).numpy()


@pytest.mark.parametrize("name", ["chatml-a", "chatml-q", "plain-c"])
def test_batched_engine_matches_one_at_a_time_reference(tiny_backends, name):
    backend = tiny_backends[name]
    batched = backend.score(requests())
    for request, got in zip(requests(), batched, strict=True):
        want = reference_logprobs(backend, request)
        assert got.logprobs.shape == want.shape
        np.testing.assert_allclose(got.logprobs, want, atol=1e-4)
        assert abs(got.total - want.sum()) <= 1e-4


@pytest.mark.parametrize("name", ["chatml-a", "plain-c"])
def test_scores_do_not_depend_on_batch_size_or_neighbours(tiny_backends, name):
    backend = tiny_backends[name]
    reqs = requests()
    base = [r.total for r in backend.score(reqs)]
    shuffled = list(range(len(reqs)))
    random.Random(0).shuffle(shuffled)
    for options in (
        BatchingOptions(max_batch_size=1),
        BatchingOptions(max_batch_tokens=200),
        BatchingOptions(max_batch_size=3),
    ):
        other = TransformersBackend.from_loaded(backend.loaded, options)
        totals = [r.total for r in other.score([reqs[i] for i in shuffled])]
        for k, i in enumerate(shuffled):
            assert abs(totals[k] - base[i]) <= 1e-4


def test_head_path_equals_full_forward(tiny_backends):
    backend = tiny_backends["chatml-a"]
    fast = backend.score(requests())
    assert backend.engine._head_path
    backend.engine._head_path = False
    try:
        slow = backend.score(requests())
    finally:
        backend.engine._head_path = True
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_progress_callback_counts_every_request(tiny_backends):
    seen = []
    tiny_backends["chatml-a"].score(requests(), on_progress=seen.append)
    assert sum(seen) == len(requests())


def test_float64_scoring_matches_the_reference_to_double_precision(tiny_models):
    from prefsmith.models.backend import load_backend
    from prefsmith.models.loading import LoadOptions

    backend = load_backend(tiny_models["chatml-a"], LoadOptions(dtype="float64"))
    assert backend.dtype == "float64"
    for request, got in zip(requests(), backend.score(requests()), strict=True):
        np.testing.assert_allclose(got.logprobs, reference_logprobs(backend, request), atol=1e-9)


def test_unknown_dtype_is_refused_by_name():
    from prefsmith.models.loading import resolve_dtype

    with pytest.raises(ValueError, match=r"float64.*not 'fp8'"):
        resolve_dtype("fp8", "cpu")  # type: ignore[arg-type]
