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
