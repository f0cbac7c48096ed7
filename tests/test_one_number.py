"""One number per reward: every reward class gives a response the same reward, bit for bit,
whatever the entry point (``score`` on rows, ``score_requests``, ``score_items``), the other
rows it is scored with, their order, and the number of threads (:mod:`prefsmith.models.invariance`).
"""

from __future__ import annotations

import json

import pytest

from prefsmith.data.rows import to_scoring_item
from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.fitted import FittedModel
from prefsmith.rewards.spec import parse_scorer
from prefsmith.testing import tiny_reward_model

PROMPT = "What is 2+2?"
RESPONSE = "It is 4, I think."
TARGET = {"prompt": PROMPT, "chosen": RESPONSE, "rejected": "5"}
NEIGHBOURS = [
    {"prompt": "Write a long poem about the sea and its colours.", "responses": ["Waves " * 40]},
    {"prompt": PROMPT, "responses": ["4", "Four, since two and two make four.", RESPONSE]},
    {"prompt": "Hi", "responses": ["Hello! How can I help you today?"]},
]


def _specs(tiny_models, tmp_path) -> dict[str, str]:
    a, b, c = tiny_models["chatml-a"], tiny_models["chatml-b"], tiny_models["plain-c"]
    logprob = f"logprob:{a}:sum"
    fit = FittedModel(
        "ensemble", "ensemble", (f"density-ratio:{a},{b}:sum", logprob), (0.5, 0.25), 0.01
    )
    fit_file = tmp_path / "fit.json"
    fit_file.write_text(json.dumps({"models": [fit.to_json()]}))
    return {
        "density-ratio, one tokenizer": f"density-ratio:{a},{b}:mean",
        "density-ratio, two tokenizers": f"density-ratio:{a},{c}:sum",
        "logprob": logprob,
        "contrast": f"contrast:{a}:mean",
        "dpo": f"dpo:{a},{b}:0.1",
        "fitted": f"fitted:{fit_file}",
        "rm": f"rm:{tiny_reward_model(seed=0)}",
    }


@pytest.fixture(scope="module")
def specs(tiny_models, tmp_path_factory):
    return _specs(tiny_models, tmp_path_factory.mktemp("fits"))


KINDS = [
    "density-ratio, one tokenizer",
    "density-ratio, two tokenizers",
    "logprob",
    "contrast",
    "dpo",
    "fitted",
    "rm",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_entry_point_gives_the_same_reward(specs, kind):
    reward = parse_scorer(specs[kind])
    (alone,) = reward.score([TARGET])
    expected = alone["reward_chosen"]
    # With other rows before it (one of them holding the same response among candidates).
    *_, with_others = reward.score([*NEIGHBOURS, TARGET])
    assert with_others["reward_chosen"] == expected
    candidates = reward.score(NEIGHBOURS)[1]["rewards"]
    assert candidates[2] == expected
    (request,) = reward.score_requests(
        [ScoreRequest(({"role": "user", "content": PROMPT},), RESPONSE)]
    )
    assert request.reward == expected
    (items,) = reward.score_items([to_scoring_item(TARGET)])
    assert items.responses[0].reward == expected


@pytest.mark.parametrize("kind", ["density-ratio, two tokenizers", "rm"])
def test_the_thread_count_does_not_change_a_reward(specs, kind):
    import torch

    before = torch.get_num_threads()
    rewards = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rows = parse_scorer(specs[kind]).score([*NEIGHBOURS, TARGET])
            rewards.append([r.get("rewards") or r["reward_chosen"] for r in rows])
    finally:
        torch.set_num_threads(before)
    assert rewards[0] == rewards[1]
