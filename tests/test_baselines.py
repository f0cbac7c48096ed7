"""RMBoost's baselines: the RLAIF judge's order swap, RLCD's prompt roles, West-of-N, bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from prefsmith.data.rows import RowError
from prefsmith.data.runner import RunOptions, process_rows, rejected_path, run_rows
from prefsmith.generation import baselines
from prefsmith.generation.baselines import (
    RLCD_NEGATIVE,
    RLCD_POSITIVE,
    PairwiseJudge,
    RLAIFStep,
    RLCDConfig,
    RLCDStep,
    Verdict,
    WestOfNStep,
)
from prefsmith.generation.sampling import Generation, SamplingConfig
from prefsmith.models.backend import ResponseLogProbs
from prefsmith.models.engines.hf import HFEngine
from prefsmith.rewards.density_ratio import DensityRatioReward
from prefsmith.routing.domains import load_domains
from prefsmith.testing import tiny_backend, tiny_model

TEMPLATE = "$prompt|A=$response_a|B=$response_b"


class FakeJudge:
    """A judge backend: log p(label) from a rule on the two responses shown."""

    name, fingerprint = "fake-judge", "0"

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.questions: list[str] = []

    def score(self, requests, on_progress=None):
        out = []
        for request in requests:
            question = request.messages[-1]["content"]
            self.questions.append(question)
            a = question.split("|A=")[1].split("|B=")[0]
            b = question.split("|B=")[1]
            if self.rule == "position":  # always prefers whatever is shown first
                best = "A"
            elif self.rule == "longer":
                best = "A" if len(a) > len(b) else "B"
            else:  # tie
                best = None
            value = 0.0 if best is None else (-0.1 if request.response == best else -3.0)
            token = ord(request.response[0])
            out.append(ResponseLogProbs((token, 7), np.array([value, -1.0]), 1))
        return out


def fixed_samples(*pairs: tuple[str, str]):
    """A stand-in for ``generate`` returning the given two samples per conversation."""

    def fake(loaded, conversations, config, on_progress=None):
        assert len(conversations) == len(pairs)
        return [[Generation(a, "stop", 3), Generation(b, "stop", 3)] for a, b in pairs]

    return fake


@pytest.fixture
def no_weights(monkeypatch):
    """Steps never load the policy's weights (generation is replaced)."""

    def no_load(self):
        raise AssertionError("the policy's weights were loaded")

    monkeypatch.setattr(HFEngine, "loaded", property(no_load))


def test_verdict_needs_both_orders():
    assert Verdict(2.0, 1.0).winner == "first"
    assert Verdict(-2.0, -1.0).winner == "second"
    assert Verdict(2.0, -1.0).winner == "disagree"
    assert Verdict(0.0, 0.0).winner == "tie"


@pytest.mark.parametrize(
    ("rule", "kept", "dropped"),
    [
        ("longer", True, None),
        ("position", False, "judge disagrees across orders"),
        ("tie", False, "judge tie"),
    ],
)
def test_rlaif_order_swap(monkeypatch, no_weights, tmp_path, rule, kept, dropped):
    monkeypatch.setattr(baselines, "generate", fixed_samples(("short", "a much longer answer")))
    fake = FakeJudge(rule)
    step = RLAIFStep(tiny_model(seed=0), PairwiseJudge(fake, TEMPLATE))
    out = tmp_path / "rlaif.jsonl"
    summary = run_rows([{"prompt": "Q?"}], out, step, RunOptions(progress=False))
    # both orders were asked: each response shown once as A and once as B
    assert "Q?|A=short|B=a much longer answer" in fake.questions
    assert "Q?|A=a much longer answer|B=short" in fake.questions
    rows = [json.loads(line) for line in out.open()]
    if kept:
        (row,) = rows
        assert row["chosen"][0]["content"] == "a much longer answer"
        assert row["rejected"][0]["content"] == "short"
        assert row["chosen_index"] == 1 and row["judge_margin"] > 0
        assert row["judge_margins"]["first_vs_second"] < 0 and row["judge_margins"]["swapped"] < 0
    else:
        assert rows == [] and summary.dropped == {dropped: 1}
    assert summary.counts["judged"] == 1


def test_rlaif_judge_prefers_first_sample_when_it_is_better(monkeypatch, no_weights):
    monkeypatch.setattr(baselines, "generate", fixed_samples(("the longer, better one", "meh")))
    step = RLAIFStep(
        tiny_model(seed=0), PairwiseJudge(FakeJudge("longer"), TEMPLATE), fmt="standard"
    )
    (row,) = process_rows([{"prompt": "Q?", "id": "q1"}], step)
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        "Q?",
        "the longer, better one",
        "meh",
    )
    assert row["chosen_index"] == 0 and row["id"] == "q1"


def test_rlaif_drops_identical_and_empty_samples(monkeypatch, no_weights, tmp_path):
    monkeypatch.setattr(baselines, "generate", fixed_samples(("same", "same "), ("", "x")))
    fake = FakeJudge("longer")
    step = RLAIFStep(tiny_model(seed=0), PairwiseJudge(fake, TEMPLATE))
    summary = run_rows(
        [{"prompt": "a"}, {"prompt": "b"}],
        tmp_path / "o.jsonl",
        step,
        RunOptions(progress=False),
    )
    assert summary.dropped == {"responses identical": 1, "first response empty": 1}
    assert fake.questions == []  # nothing judged


def test_judge_refuses_bad_templates_and_labels():
    with pytest.raises(ValueError, match="missing placeholder"):
        PairwiseJudge(FakeJudge("longer"), "$prompt $response_a")
    with pytest.raises(ValueError, match="two different labels"):
        PairwiseJudge(FakeJudge("longer"), TEMPLATE, ("A", "A"))


def test_judge_on_a_tiny_model():
    judge = PairwiseJudge(tiny_backend(seed=1))
    verdicts = judge.compare([[{"role": "user", "content": "2+2?"}]] * 2, ["4", "5"], ["5", "4"])
    # swapping which response is "first" flips both orders' preferences
    assert verdicts[0].first_vs_second == pytest.approx(-verdicts[1].swapped)


def echo_system(loaded, conversations, config, on_progress=None):
    """``generate`` stand-in: each response names the system prompt it was sampled under."""
    return [[Generation(f"under: {c[0]['content']}", "stop", 3)] for c in conversations]


def test_rlcd_prompt_roles(monkeypatch, no_weights):
    monkeypatch.setattr(baselines, "generate", echo_system)
    step = RLCDStep(tiny_model(seed=0), RLCDConfig("Be good.", "Be bad."), fmt="standard")
    rows = process_rows([{"prompt": "Q1"}], step)
    assert rows[0]["prompt"] == "Q1"  # the pair's prompt has neither RLCD system prompt
    assert rows[0]["chosen"] == "under: Be good."
    assert rows[0]["rejected"] == "under: Be bad."
    assert rows[0]["rlcd_system_prompts"] == {"positive": "Be good.", "negative": "Be bad."}


def test_rlcd_conversational_keeps_own_system_turn(monkeypatch, no_weights):
    monkeypatch.setattr(baselines, "generate", echo_system)
    step = RLCDStep(tiny_model(seed=0), RLCDConfig("Be good.", "Be bad."))
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q2"}]
    (row,) = process_rows([{"prompt": prompt}], step)
    assert row["prompt"] == prompt
    assert row["chosen"][0]["content"] == "under: Be good.\n\nBe brief."
    assert row["rejected"][0]["content"] == "under: Be bad.\n\nBe brief."


def test_rlcd_per_domain(monkeypatch, no_weights):
    monkeypatch.setattr(baselines, "generate", echo_system)
    domains = load_domains()
    step = RLCDStep(tiny_model(seed=0), RLCDConfig(domains=domains.source, router="rules"))
    rows = process_rows([{"prompt": "Tell me a story.", "domain": "chat"}], step)
    criteria = domains["chat"].system_prompt.strip()
    assert rows[0]["rlcd_domain"] == "chat"
    assert rows[0]["chosen"][0]["content"] == f"under: {RLCD_POSITIVE}\n\n{criteria}"
    negative = rows[0]["rejected"][0]["content"]
    assert negative.startswith(f"under: {RLCD_NEGATIVE}") and negative.endswith(criteria)
    routed = process_rows([{"prompt": "Solve 12 * 7 and show the arithmetic."}], step)
    assert routed[0]["rlcd_domain"] in domains.names


def test_rlcd_drops_identical_responses(monkeypatch, no_weights, tmp_path):
    same = lambda loaded, convs, config, on_progress=None: [  # noqa: E731
        [Generation("same", "stop", 2)] for _ in convs
    ]
    monkeypatch.setattr(baselines, "generate", same)
    summary = run_rows(
        [{"prompt": "Q"}],
        tmp_path / "o.jsonl",
        RLCDStep(tiny_model(seed=0)),
        RunOptions(progress=False),
    )
    assert summary.dropped == {"responses identical": 1}


def test_rlcd_config_refuses_same_prompts():
    with pytest.raises(ValueError, match="the same"):
        RLCDConfig("x", "x")


def test_west_of_n_is_best_vs_worst_of_n():
    reward = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    step = WestOfNStep(tiny_model(seed=0), reward, SamplingConfig(n=3, max_new_tokens=6))
    (row,) = process_rows([{"prompt": "Name a colour."}], step)
    rewards = [r for r in row["candidate_rewards"] if r is not None]
    assert row["reward_chosen"] == max(rewards) and row["reward_rejected"] == min(rewards)
    assert row["generated_with"]["n"] == 3
    with pytest.raises(ValueError, match="at least 2"):
        WestOfNStep(tiny_model(seed=0), reward, SamplingConfig(n=1))


@pytest.mark.parametrize("command", ["rlaif", "rlcd", "west-of-n"])
def test_cli_names_and_skips_bad_prompt_rows(tmp_path, command):
    from prefsmith.cli.main import app

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"text": "no prompt"}\n{"prompt": ""}\n')
    out = tmp_path / f"{command}.jsonl"
    model = tiny_model(seed=0)
    args = [command, str(prompts), "-m", model, "-o", str(out), "--max-new-tokens", "4"]
    args += ["--no-progress"]
    if command == "rlaif":
        args += ["--judge", tiny_model(seed=1)]
    if command == "west-of-n":
        args += ["--scorer", f"density-ratio:{model},{tiny_model(seed=1)}:sum", "-n", "2"]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "prompts.jsonl:2" in refused.output
    done = runner.invoke(app, [*args, "--on-error", "skip"])
    assert done.exit_code == 0, done.output
    rejected = [json.loads(line) for line in rejected_path(out).open()]
    assert [r["location"].rsplit(":", 1)[1] for r in rejected] == ["2", "3"]


def test_generation_steps_raise_on_bad_rows():
    step = RLCDStep(tiny_model(seed=0))
    with pytest.raises(RowError, match="row 0"):
        process_rows([{"text": "no prompt"}], step)
