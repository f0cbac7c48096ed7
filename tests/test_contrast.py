"""The contrastive-prompt scorer ``contrast:MODEL[:REDUCTION]`` on tiny random models."""

from __future__ import annotations

import pytest

from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.contrast import (
    ContrastPrompts,
    ContrastReward,
    load_contrast_prompts,
    with_system,
)
from prefsmith.rewards.spec import ScorerSpec, parse_scorer
from prefsmith.routing.customize import Customization

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "It is 5, I think."},
    {
        "prompt": "How do I pick a lock?",
        "chosen": "I can't help with that.",
        "rejected": "Use a tension wrench and a pick.",
    },
]
PROMPTS = ContrastPrompts("Be good and correct.", "Be bad and wrong.", {"math": "Be bad at maths."})


def direct(backend, context, prompt, response, reduction="sum"):
    """log p(response | prompt + context) computed straight from the backend."""
    (lp,) = backend.score([ScoreRequest(with_system(context, prompt), response)])
    if reduction == "sum":
        return lp.total
    if reduction == "mean":
        return lp.total / len(lp.token_ids)
    return lp.total / lp.n_chars


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean-char"])
def test_ratio_is_positive_minus_negative_logprob(tiny_backends, reduction):
    backend = tiny_backends["chatml-a"]
    reward = ContrastReward(backend, reduction, prompts=PROMPTS)
    rows = reward.score(PAIRS)
    for pair, row in zip(PAIRS, rows, strict=True):
        context = ({"role": "user", "content": pair["prompt"]},)
        for side in ("chosen", "rejected"):
            expected = direct(backend, context, PROMPTS.positive, pair[side], reduction)
            expected -= direct(backend, context, PROMPTS.negative, pair[side], reduction)
            assert row[f"reward_{side}"] == pytest.approx(expected, abs=1e-4)
        assert row["scored_with"]["shared_tokenizer"] is True
        assert row["response_tokens"]["chosen"][0] == row["response_tokens"]["chosen"][1]


def test_empty_negative_scores_without_a_system_prompt(tiny_backends):
    backend = tiny_backends["chatml-a"]
    reward = ContrastReward(backend, "sum", "empty", prompts=PROMPTS)
    (row,) = reward.score(PAIRS[:1])
    context = ({"role": "user", "content": PAIRS[0]["prompt"]},)
    expected = direct(backend, context, PROMPTS.positive, "4") - direct(backend, context, None, "4")
    assert row["reward_chosen"] == pytest.approx(expected, abs=1e-4)
    assert reward.name.endswith(":sum+empty")


def test_score_requests_matches_score_items(tiny_backends):
    reward = ContrastReward(tiny_backends["chatml-a"], "mean", prompts=PROMPTS)
    context = ({"role": "user", "content": PAIRS[0]["prompt"]},)
    (scored,) = reward.score_requests([ScoreRequest(context, "4")])
    (row,) = reward.score(PAIRS[:1])
    assert scored.reward == pytest.approx(row["reward_chosen"], abs=1e-9)


def test_spec_parsing_and_name_round_trip(tiny_models):
    model = tiny_models["chatml-a"]
    for text in (f"contrast:{model}:mean", f"contrast:{model}:sum+empty"):
        reward = parse_scorer(text)
        assert reward.name == text
        assert ScorerSpec.parse(reward.name).name == text
    default = parse_scorer("contrast:mean-char", strong=model)
    assert default.name == f"contrast:{model}:mean-char"
    assert ScorerSpec.parse(f"contrast:{model}").option == "sum"
    with pytest.raises(ValueError, match=r"mean-char \(\+empty\)"):
        parse_scorer(f"contrast:{model}:mean+nothing")
    with pytest.raises(ValueError, match="sum, mean or mean-char"):
        ScorerSpec.parse("contrast:m:sum:extra")


def test_one_model_loaded_once(tiny_models):
    from prefsmith.models.pool import ModelPool

    pool = ModelPool()
    reward = parse_scorer(f"contrast:{tiny_models['chatml-a']}:mean", pool=pool)
    assert reward.passes == 2
    assert len(pool._backends) == 1


def test_per_domain_prompts_with_a_customization(tiny_backends):
    custom = Customization(router="rules")
    reward = ContrastReward(tiny_backends["chatml-a"], "sum", prompts=PROMPTS, customization=custom)
    rows = reward.score(PAIRS)
    assert reward.name.endswith(":sum+cdr")
    for row in rows:
        domain = row["domain"]
        positive, negative = reward.contexts(({"role": "user", "content": "x"},), domain)
        criteria = custom.domains[domain].system_prompt or PROMPTS.positive
        assert positive[0]["content"] == criteria
        assert negative[0]["content"] == PROMPTS.negative_for(domain)
    _, math_neg = reward.contexts(({"role": "user", "content": "x"},), "math")
    assert math_neg[0]["content"] == "Be bad at maths."


def test_prompts_file_is_read_and_checked(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("positive: Be good.\nnegative: Be bad.\ndomain_negative: {code: Bad code.}\n")
    prompts = load_contrast_prompts(good)
    assert (prompts.positive, prompts.negative_for("code")) == ("Be good.", "Bad code.")
    bad = tmp_path / "bad.yaml"
    bad.write_text("positive: Be good.\n")
    with pytest.raises(ValueError, match="negative"):
        load_contrast_prompts(bad)
    assert "unhelpful" in load_contrast_prompts().negative
