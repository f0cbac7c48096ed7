"""Density-ratio reward: reductions, tokenizer compatibility, shared templates."""

from __future__ import annotations

import pytest

from prefsmith.models.backend import ScoreRequest, load_backend
from prefsmith.rewards.density_ratio import (
    DensityRatioReward,
    IncompatibleModelsError,
    LogProbReward,
    Reduction,
)
from prefsmith.rewards.spec import ScorerSpec, parse_scorer

REQS = [
    ScoreRequest(({"role": "user", "content": "Say hi."},), "Hi there!"),
    ScoreRequest(({"role": "user", "content": "Count to three."},), "One, two, three."),
]


def test_reward_is_strong_minus_weak(tiny_backends):
    strong, weak = tiny_backends["chatml-a"], tiny_backends["chatml-b"]
    s, w = strong.score(REQS), weak.score(REQS)
    for reduction in Reduction:
        scorer = DensityRatioReward(strong, weak, reduction)
        assert scorer.shared_tokens
        for r, a, b, req in zip(scorer.score_requests(REQS), s, w, REQS, strict=True):
            diff = a.total - b.total
            expected = {
                Reduction.SUM: diff,
                Reduction.MEAN: diff / len(a.token_ids),
                Reduction.MEAN_CHAR: diff / len(req.response),
            }[reduction]
            assert r.reward == pytest.approx(expected, abs=1e-9)


def test_different_tokenizers_refuse_token_mean(tiny_backends, tiny_models):
    strong, weak = tiny_backends["chatml-a"], tiny_backends["plain-c"]
    with pytest.raises(IncompatibleModelsError, match="mean-char"):
        DensityRatioReward(strong, weak, Reduction.MEAN)
    with pytest.raises(IncompatibleModelsError, match="different tokenizers"):
        DensityRatioReward(tiny_models["chatml-a"], tiny_models["plain-c"], "mean")
    scorer = DensityRatioReward(strong, weak, Reduction.MEAN_CHAR)
    assert not scorer.shared_tokens
    rewards = scorer.score_requests(REQS)
    assert rewards[0].strong.token_ids != rewards[0].weak.token_ids
    expected = (rewards[0].strong.total - rewards[0].weak.total) / len("Hi there!")
    assert rewards[0].reward == pytest.approx(expected)


def test_same_vocabulary_but_different_pretokenizer_is_not_shared(tiny_backends):
    strong, other = tiny_backends["chatml-a"], tiny_backends["chatml-q"]
    assert strong.tokenizer.get_vocab() == other.tokenizer.get_vocab()
    assert strong.tokenizer_fingerprint != other.tokenizer_fingerprint
    with pytest.raises(IncompatibleModelsError, match="different tokenizers"):
        DensityRatioReward(strong, other, Reduction.MEAN)


def test_same_model_twice_is_refused(tiny_models):
    with pytest.raises(IncompatibleModelsError, match="same"):
        DensityRatioReward(tiny_models["chatml-a"], tiny_models["chatml-a"])


def test_weak_without_template_scores_the_strong_rendering(tiny_models, tmp_path):
    # A "base" copy of chatml-b without a chat template, sharing chatml-a's tokenizer.
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_models["chatml-b"], base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    weak = load_backend(str(base))
    strong = load_backend(tiny_models["chatml-a"])
    assert weak.template != strong.template
    scorer = DensityRatioReward(strong, weak, Reduction.SUM)
    assert weak.template == strong.template
    r = scorer.score_requests(REQS)[0]
    assert r.strong.token_ids == r.weak.token_ids


def test_logprob_reward_is_the_models_own_likelihood(tiny_backends):
    strong = tiny_backends["chatml-a"]
    lp = strong.score(REQS)
    reward = LogProbReward(strong, "mean")
    got = [r.reward for r in reward.score_requests(REQS)]
    assert got == pytest.approx([x.total / len(x.token_ids) for x in lp])
    assert reward.name == f"logprob:{strong.name}:mean"


def test_scorer_specs_build_the_same_rewards(tiny_models):
    a, b = tiny_models["chatml-a"], tiny_models["chatml-b"]
    spec = parse_scorer(f"density-ratio:{a},{b}:mean")
    direct = DensityRatioReward(a, b, "mean")
    assert spec.name == direct.name == f"density-ratio:{a},{b}:mean"
    assert [r.reward for r in spec.score_requests(REQS)] == pytest.approx(
        [r.reward for r in direct.score_requests(REQS)]
    )
    dpo = parse_scorer("dpo:0.5", strong=a, weak=b)
    plain = DensityRatioReward(a, b, "sum").score_requests(REQS)
    assert [r.reward for r in dpo.score_requests(REQS)] == pytest.approx(
        [0.5 * r.reward for r in plain]
    )
    # The name round-trips through the parser.
    assert ScorerSpec.parse(dpo.name).name == dpo.name
    with pytest.raises(ValueError, match="last part"):
        ScorerSpec.parse("density-ratio:a,b:median")


def test_scoring_and_saving_models_print_nothing(
    tiny_models, smol_tokenizer, transformers_defaults, tmp_path, capfd
):
    """A library call prints nothing it was not asked for: no "Loading weights" bars when the
    models load, no "Writing model shards" when a model is saved; the caller's transformers
    settings are as they were afterwards."""
    from prefsmith.testing import build_tiny_model

    hf_logging = transformers_defaults
    level = hf_logging.get_logger().level
    capfd.readouterr()
    build_tiny_model(smol_tokenizer, tmp_path / "saved", seed=5)
    reward = DensityRatioReward(tiny_models["chatml-a"], tiny_models["chatml-b"])
    rows = reward.score([{"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No."}])
    out, err = capfd.readouterr()
    assert len(rows) == 1 and "reward_margin" in rows[0]
    assert (out, err) == ("", "")
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_logger().level == level


# --------------------------------------------------------------------------------------------
# rendering: own | same-text (strong and weak with different tokenizers)

CHAT = [
    ScoreRequest(
        ({"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"}),
        "Four.",
    ),
    *REQS,
]


def _forward_logprobs(backend, ids, start):
    """log p(ids[i] | ids[:i]) for i >= start, by one plain forward pass of the model."""
    import torch

    with torch.no_grad():
        logits = backend.model(torch.tensor([list(ids)])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[i - 1, ids[i]]) for i in range(start, len(ids))]


def test_same_text_weak_scores_the_strong_rendered_text(tiny_backends):
    strong, weak = tiny_backends["chatml-a"], tiny_backends["plain-c"]
    reward = DensityRatioReward(strong, weak, "sum", rendering="same-text")
    assert not reward.shared_tokens and reward.weak is not weak
    assert weak.template != strong.template and reward.weak.template == strong.template
    tok = weak.tokenizer
    scored = reward.score_requests(CHAT)
    for request, result in zip(CHAT, scored, strict=True):
        prompt = strong.encoder.render(request.messages, None)
        full = strong.encoder.render(request.messages, request.response)
        assert prompt.startswith("<|im_start|>") and full.startswith(prompt)
        encoded = reward.weak.encode(request)
        ids, start = encoded.input_ids, encoded.response_start
        assert not encoded.boundary_merged
        # The weak model's prompt tokens are its BOS, then the strong model's prompt string.
        assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
        assert tok.decode(list(ids[1:start])) == prompt
        # The scored tokens are the weak tokens of the same response characters (the strong
        # model's end-of-turn marker as text), and nothing of the prompt.
        assert result.weak.token_ids == ids[start:]
        assert tok.decode(list(result.weak.token_ids)) == full[len(prompt) :]
        assert full[len(prompt) :] == request.response + "<|im_end|>\n"
        assert strong.tokenizer.decode(list(result.strong.token_ids)) == full[len(prompt) :]
        assert len(result.weak.logprobs) == len(result.weak.token_ids)
        assert list(result.weak.logprobs) == pytest.approx(
            _forward_logprobs(weak, ids, start), rel=1e-5, abs=1e-4
        )
        assert result.reward == pytest.approx(result.strong.total - result.weak.total)


def test_same_text_differs_from_own_where_the_templates_differ(tiny_backends):
    from prefsmith.rewards.base import scored_with

    strong, weak = tiny_backends["chatml-a"], tiny_backends["plain-c"]
    own = DensityRatioReward(strong, weak, "sum")
    same = DensityRatioReward(strong, weak, "sum", rendering="same-text")
    assert weak.template != strong.template  # the own reward left the weak backend alone
    a, b = own.score_requests(CHAT), same.score_requests(CHAT)
    for x, y in zip(a, b, strict=True):
        assert x.strong.token_ids == y.strong.token_ids and x.strong.total == y.strong.total
        assert x.weak.token_ids != y.weak.token_ids
        assert x.reward != pytest.approx(y.reward)
    # The plain template's rendering for the own weak model: "Assistant: Four.<eos>\n\n".
    assert weak.tokenizer.decode(list(a[0].weak.token_ids)).startswith(" Four.<eos>")
    assert own.name.endswith(":sum") and same.name.endswith(":sum+same-text")
    assert own.settings()["rendering"] == "own" and same.settings()["rendering"] == "same-text"
    assert scored_with(same.settings())["rendering"] == "same-text"
    assert (
        scored_with(same.settings())["weak_template"]
        == scored_with(own.settings())["strong_template"]
    )


def test_same_text_equals_own_where_the_renderings_coincide(tiny_models):
    # A weak model with another tokenizer but the strong model's (marker-only) template renders
    # the same strings itself: both renderings give the same ids and the same rewards.
    strong = load_backend(tiny_models["chatml-a"])
    weak = load_backend(tiny_models["plain-c"])
    weak.set_template(strong.template)
    own = DensityRatioReward(strong, weak, "mean-char")
    same = DensityRatioReward(strong, weak, "mean-char", rendering="same-text")
    a, b = own.score_requests(CHAT), same.score_requests(CHAT)
    assert [x.weak.token_ids for x in a] == [y.weak.token_ids for y in b]
    assert [x.reward for x in a] == [y.reward for y in b]


def test_same_text_changes_nothing_with_a_shared_tokenizer(tiny_backends):
    from prefsmith.rewards.base import scored_with

    strong, weak = tiny_backends["chatml-a"], tiny_backends["chatml-b"]
    own = DensityRatioReward(strong, weak, "mean")
    same = DensityRatioReward(strong, weak, "mean", rendering="same-text")
    assert same.weak is weak  # no other rendering: one tokenizer already scores the same ids
    assert [r.reward for r in own.score_requests(REQS)] == [
        r.reward for r in same.score_requests(REQS)
    ]
    for reward in (own, same):
        assert "rendering" not in reward.settings()
        assert "rendering" not in scored_with(reward.settings())
    with pytest.raises(ValueError, match="rendering must be one of own, same-text"):
        DensityRatioReward(strong, weak, rendering="same")


def test_same_text_from_a_spec_and_through_the_cache(tiny_models):
    from prefsmith.models.cache import LogProbCache
    from prefsmith.models.pool import ModelOptions, ModelPool

    a, c = tiny_models["chatml-a"], tiny_models["plain-c"]
    direct = DensityRatioReward(a, c, "sum", rendering="same-text")
    spec = parse_scorer(f"density-ratio:{a},{c}:sum+same-text")
    assert spec.name == direct.name == f"density-ratio:{a},{c}:sum+same-text"
    assert ScorerSpec.parse(spec.name).rendering == "same-text"
    expected = [r.reward for r in direct.score_requests(REQS)]
    assert [r.reward for r in spec.score_requests(REQS)] == expected
    # One pool and cache for both renderings: the weak entries are kept apart, the strong
    # model's are shared (scored once).
    pool = ModelPool(ModelOptions(), LogProbCache(":memory:"))
    own = parse_scorer(f"density-ratio:{a},{c}:sum", pool=pool)
    own_rewards = [r.reward for r in own.score_requests(REQS)]
    same = parse_scorer(f"density-ratio:{a},{c}:sum+same-text", pool=pool)
    assert [r.reward for r in same.score_requests(REQS)] == expected != own_rewards
    assert same.strong.hits == len(REQS) and same.weak.hits == 0
    # A second same-text reward of the pool shares the weak view (and its counters).
    again = parse_scorer(f"density-ratio:{a},{c}:mean-char+same-text", pool=pool)
    assert again.weak is same.weak and again.weak is not own.weak
    again.score_requests(REQS)
    assert same.weak.hits == len(REQS) and same.weak.computed == len(REQS)
    assert [r.reward for r in own.score_requests(REQS)] == own_rewards
