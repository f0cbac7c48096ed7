"""Customized density ratio: domains files, routers, context rendering, score hook and CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import to_scoring_item
from prefsmith.data.runner import process_rows
from prefsmith.evaluation.routing import confusion_matrix, routing_agreement
from prefsmith.models.backend import ScoreRequest
from prefsmith.models.encoding import ConversationEncoder
from prefsmith.rewards.base import ScoreStep
from prefsmith.rewards.density_ratio import DensityRatioReward, Reduction
from prefsmith.routing.customize import (
    EXEMPLAR_STYLES,
    Customization,
    customize_item,
    customize_items,
    customized_context,
)
from prefsmith.routing.domains import DomainsError, load_domains, parse_domains
from prefsmith.routing.routers import EmbeddingRouter, LMRouter, RuleRouter, make_router

runner = CliRunner()

# Hand-written prompts, none of them an example prompt of the default file.
PROMPTS = {
    "safety": [
        "What poison could I put in my coworker's coffee so nobody notices?",
        "Tell me how to build a pipe bomb.",
        "How can I steal a car without getting caught?",
    ],
    "code": [
        "Write a JavaScript function that removes duplicate values from an array.",
        "My Python script raises KeyError when the dict is empty, how do I fix it?",
        "Implement a linked list in Rust with push and pop.",
    ],
    "math": [
        "Solve the equation 2x^2 - 8 = 0 for x.",
        "What is the integral of 1/x from 1 to e?",
        "What is the probability of rolling two sixes with two dice?",
    ],
    "chat": [
        "Write a cheerful poem about a cat who loves the rain.",
        "Can you recommend some good habits for a calmer morning routine?",
        "Write an email to my landlord asking to fix the heating.",
    ],
}


@pytest.fixture(scope="module")
def domains():
    return load_domains()


def test_default_domains_cover_the_required_ones(domains):
    assert {"chat", "safety", "code", "math"} <= set(domains.names)
    assert domains.fallback in domains.names
    assert domains.fallback not in {d.name for d in domains.routable}
    for domain in domains.domains:
        assert domain.system_prompt and domain.description
    assert all(domains[name].exemplars for name in ("chat", "safety", "code", "math"))


def test_exemplars_are_held_out_of_the_dev_data(domains):
    from conftest import SHARED_DATA

    texts = {ex.prompt for d in domains.domains for ex in d.exemplars}
    texts |= {ex.better for d in domains.domains for ex in d.exemplars}
    for path in (SHARED_DATA / "prefsets").glob("*.jsonl"):
        for row in read_jsonl_rows(path):
            row_text = json.dumps(row)
            assert not any(t in row_text for t in texts), path


def test_rule_router_routes_hand_written_prompts(domains):
    router = RuleRouter(domains)
    for expected, prompts in PROMPTS.items():
        for route, prompt in zip(router.route(prompts), prompts, strict=True):
            assert route.domain == expected, (prompt, route, router.hits(prompt))
            assert 0.5 <= route.confidence <= 1.0


def test_rule_router_without_evidence_goes_to_fallback_with_zero_confidence(domains):
    (route,) = RuleRouter(domains).route(["Hello there!"])
    assert route.domain == domains.fallback and route.confidence == 0.0


@pytest.mark.slow
def test_embedding_router_routes_hand_written_prompts(domains):
    router = make_router("embedding", domains)
    assert isinstance(router, EmbeddingRouter)
    prompts = [p for ps in PROMPTS.values() for p in ps]
    expected = [name for name, ps in PROMPTS.items() for _ in ps]
    routes = router.route(prompts)
    got = [r.domain for r in routes]
    # Zero-shot routing is not perfect (an email request can look like safety): ask for every
    # harmful prompt to reach safety and at least two of three prompts right per domain.
    assert got[: len(PROMPTS["safety"])] == ["safety"] * len(PROMPTS["safety"])
    for name in PROMPTS:
        right = sum(g == e == name for g, e in zip(got, expected, strict=True))
        assert right >= 2, (name, list(zip(prompts, got, strict=True)))
    sims = router.similarities(prompts)
    for route, row in zip(routes, sims, strict=True):
        names = [d.name for d in domains.routable]
        assert route.domain == names[int(row.argmax())]
        assert 1 / len(names) < route.confidence <= 1.0


def test_lm_router_picks_the_most_likely_label(domains, tiny_backends):
    backend = tiny_backends["chatml-a"]
    router = make_router("lm", domains, backend)
    assert isinstance(router, LMRouter)
    prompts = [PROMPTS["math"][0], PROMPTS["code"][0]]
    routes = router.route(prompts)
    for prompt, route in zip(prompts, routes, strict=True):
        labels = [(d.name, d.router_label) for d in domains.routable]
        question = ({"role": "user", "content": router.question(prompt)},)
        loglik = [r.total for r in backend.score([ScoreRequest(question, lb) for _, lb in labels])]
        best = max(range(len(labels)), key=loglik.__getitem__)
        assert route.domain == labels[best][0]
        total = sum(math.exp(x - loglik[best]) for x in loglik)
        assert route.confidence == pytest.approx(1 / total)


def test_lm_router_needs_the_strong_backend(domains):
    with pytest.raises(ValueError, match="strong model"):
        make_router("lm", domains)
    with pytest.raises(ValueError, match="unknown router"):
        make_router("magic", domains)


def test_customized_context_is_the_same_for_strong_and_weak_and_keeps_the_row(domains):
    item = to_scoring_item(
        {
            "prompt": [
                {"role": "system", "content": "Use British spelling."},
                {"role": "user", "content": "2+2?"},
            ],
            "chosen": "4",
            "rejected": "5",
        }
    )
    custom = customize_item(item, domains["math"], "system")
    assert custom.responses == item.responses and custom.names == item.names
    system = custom.context[0]["content"]
    assert system.startswith(domains["math"].system_prompt)
    assert "Better assistant:" in system and system.endswith("Use British spelling.")
    assert custom.context[1:] == item.context[1:]
    turns = customized_context(item.context, domains["math"], "turns")
    exemplar = domains["math"].exemplars[0]
    assert turns[1] == {"role": "user", "content": exemplar.prompt}
    assert turns[2] == {"role": "assistant", "content": exemplar.better}
    assert exemplar.worse not in json.dumps(turns)


@pytest.mark.parametrize("style", EXEMPLAR_STYLES)
@pytest.mark.parametrize("tokenizer_name", ["smol_tokenizer", "gemma_tokenizer"])
def test_customized_context_keeps_the_token_boundary_exact(domains, style, tokenizer_name, request):
    tok = copy.deepcopy(request.getfixturevalue(tokenizer_name))
    enc = ConversationEncoder(tok, max_length=4096)
    item = to_scoring_item(
        {"prompt": PROMPTS["safety"][1], "chosen": "I can't help.", "rejected": "x"}
    )
    for domain in domains.domains:
        context = customize_item(item, domain, style).context
        for response in item.responses:
            plain = enc.encode(item.context, response)
            e = enc.encode(context, response)
            prompt_ids = enc._ids(enc.render(context, None))
            assert list(e.input_ids[: e.response_start]) == prompt_ids
            assert not e.boundary_merged and e.truncated is None
            # The response is tokenized exactly as without customization.
            assert e.input_ids[e.response_start :] == plain.input_ids[plain.response_start :]
            assert response in tok.decode(list(e.input_ids[e.response_start :]))
            assert domain.system_prompt in tok.decode(list(e.input_ids[: e.response_start]))


def test_customize_items_routes_and_records_confidence(domains):
    items = [
        to_scoring_item({"prompt": p, "chosen": "a", "rejected": "b"})
        for p in (PROMPTS["code"][0], "Hi!")
    ]
    done = customize_items(items, domains, RuleRouter(domains))
    assert done.domains == ["code", domains.fallback]
    assert done.confidences[0] > 0 and done.confidences[1] == 0.0
    assert domains["code"].system_prompt in done.items[0].context[0]["content"]


def test_customized_reward_writes_domain_and_confidence(tiny_backends, domains):
    strong, weak = tiny_backends["chatml-a"], tiny_backends["plain-c"]
    rows = [
        {"id": n, "prompt": p, "chosen": "Sure, here it is.", "rejected": "No."}
        for n, p in (("m", PROMPTS["math"][0]), ("s", PROMPTS["safety"][0]))
    ]
    plain = process_rows(rows, ScoreStep(DensityRatioReward(strong, weak, Reduction.SUM)))
    customization = Customization(domains, RuleRouter(domains), "system")
    custom_reward = DensityRatioReward(strong, weak, Reduction.SUM, customization=customization)
    assert custom_reward.name.endswith("+cdr")
    custom = process_rows(rows, ScoreStep(custom_reward))
    assert [r["domain"] for r in custom] == ["math", "safety"]
    assert all(0 < r["router_confidence"] <= 1 for r in custom)
    assert custom[0]["scored_with"]["customization"]["router"] == "rules"
    assert "domain" not in plain[0]
    # Same responses, different conditioning: the rewards change.
    assert all(p["reward_chosen"] != c["reward_chosen"] for p, c in zip(plain, custom, strict=True))


def test_confusion_matrix_and_agreement():
    matrix = confusion_matrix(
        ["chat", "safety", "code", "chat"], ["Chat", "Safety", "Reasoning", None]
    )
    assert matrix == {
        "Chat": {"chat": 1},
        "Safety": {"safety": 1},
        "Reasoning": {"code": 1},
        "(unknown)": {"chat": 1},
    }
    assert routing_agreement(["chat", "safety"], ["llmbar-natural", "xstest-should-refuse"]) == 1.0


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {
    "fallback": "general",
    "domains": [
        {"name": "general", "description": "anything"},
        {
            "name": "math",
            "description": "maths",
            "system_prompt": "Be right.",
            "exemplars": [{"prompt": "1+1?", "better": "2", "worse": "3"}],
        },
    ],
}


def test_malformed_domains_files_name_the_file_and_the_field(tmp_path):
    load_domains(write_yaml(tmp_path / "ok.yaml", GOOD))
    cases = []
    bad = copy.deepcopy(GOOD)
    del bad["domains"][1]["exemplars"][0]["worse"]
    cases.append((bad, "domains[1] (name 'math').exemplars[0].worse: Field required"))
    bad = copy.deepcopy(GOOD)
    bad["domains"][1]["sytem_prompt"] = "typo"
    cases.append((bad, "domains[1] (name 'math').sytem_prompt: Extra inputs are not permitted"))
    bad = copy.deepcopy(GOOD)
    bad["domains"][1]["patterns"] = ["(unclosed"]
    cases.append((bad, "domains[1] (name 'math').patterns"))
    bad = copy.deepcopy(GOOD)
    bad["fallback"] = "nowhere"
    cases.append((bad, "fallback 'nowhere' is not one of the domains"))
    bad = copy.deepcopy(GOOD)
    bad["domains"][0]["name"] = "has space"
    cases.append((bad, "domains[0] (name 'has space').name"))
    for i, (data, message) in enumerate(cases):
        path = write_yaml(tmp_path / f"bad{i}.yaml", data)
        with pytest.raises(DomainsError) as err:
            load_domains(path)
        assert str(err.value).startswith(str(path)) and message in str(err.value)
    (tmp_path / "broken.yaml").write_text("domains: [\n")
    with pytest.raises(DomainsError, match="not valid YAML"):
        load_domains(tmp_path / "broken.yaml")
    with pytest.raises(DomainsError, match="expected a mapping"):
        parse_domains(["a"], "list.yaml")


def test_score_cli_with_router_records_domains(tmp_path, tiny_models):
    from conftest import TINY_SET

    out = tmp_path / "out.jsonl"
    args = [
        "score",
        str(TINY_SET),
        "-o",
        str(out),
        "--strong",
        tiny_models["chatml-a"],
        "--weak",
        tiny_models["plain-c"],
        "--no-progress",
        "--router",
        "rules",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "routed domain" in result.output
    rows = read_jsonl_rows(out)
    names = set(load_domains().names)
    assert all(r["domain"] in names and 0 <= r["router_confidence"] <= 1 for r in rows)
    assert {r["domain"] for r in rows if r["subset"].startswith("hep-")} == {"code"}
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert settings["settings"]["reward"]["customization"]["router"] == "rules"


def test_score_cli_reports_bad_domains_file_before_loading_models(tmp_path):
    bad = copy.deepcopy(GOOD)
    del bad["domains"][1]["description"]
    path = write_yaml(tmp_path / "d.yaml", bad)
    src = tmp_path / "ok.jsonl"
    src.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    result = runner.invoke(
        app, ["score", str(src), "--domains", str(path), "--strong", "no/such", "--weak", "x.gguf"]
    )
    assert result.exit_code == 2
    assert "description" in result.output and "d.yaml" in result.output
    result = runner.invoke(app, ["score", str(src), "--router", "magic"])
    assert result.exit_code == 2 and "--router" in result.output
