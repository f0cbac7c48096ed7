"""The published customized density ratio as a shipped domains file, ``--domains paper``
(issue 22): CHAT unchanged, SAFETY/REASONING with a guideline and one exemplar in the user turn
("Good Assistant:"), the LM router choosing among all three labels."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import read_jsonl_rows
from prefsmith.routing.customize import Customization, customized_context
from prefsmith.routing.domains import load_domains
from prefsmith.routing.routers import LMRouter


def test_the_paper_file_is_three_domains_with_chat_unchanged():
    domains = load_domains("paper")
    assert [d.router_label for d in domains.domains] == ["CHAT", "SAFETY", "REASONING"]
    assert domains.fallback == "chat" and [d.name for d in domains.routable] == domains.names
    assert (domains.router, domains.exemplars) == ("lm", "user")
    chat = domains["chat"]
    assert chat.system_prompt is None and not chat.exemplars
    query = ({"role": "user", "content": "Tell me a joke."},)
    assert customized_context(query, chat, "user") == query  # CHAT: no change at all
    assert domains["safety"].system_prompt == domains["reasoning"].system_prompt


def test_one_exemplar_goes_in_the_last_user_turn_before_the_query():
    domains = load_domains("paper")
    query = "Is 51 a prime number?"
    context = (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": query},
    )
    system, first, answer, last = customized_context(context, domains["reasoning"], "user")
    assert system == {"role": "system", "content": domains["reasoning"].system_prompt}
    assert (first, answer) == context[:2]  # earlier turns unchanged
    text = last["content"]
    assert text.endswith("\n\n" + query) and text.count("Good Assistant: ") == 1
    assert "Bad Assistant: " in text and "Explanation: " in text
    chosen = [e for e in domains["reasoning"].exemplars if f"User: {e.prompt}\n" in text]
    assert len(chosen) == 1
    # The same query always gets the same exemplar; the pool is used across queries.
    again = customized_context(context, domains["reasoning"], "user")[-1]["content"]
    assert again == text
    drawn = {
        customized_context(({"role": "user", "content": f"q{i}"},), domains["safety"], "user")[-1][
            "content"
        ].split("\n")[2]
        for i in range(30)
    }
    assert len(drawn) == len(domains["safety"].exemplars)


def test_the_file_chooses_router_and_exemplars_unless_the_run_does():
    assert (Customization("paper").router_name, Customization("paper").exemplar_style) == (
        "lm",
        "user",
    )
    named = Customization("paper", router="rules", exemplars="system")
    assert (named.router_name, named.exemplar_style) == ("rules", "system")
    default = Customization()  # the default file: unchanged behaviour
    assert (default.router_name, default.exemplar_style) == ("embedding", "system")


def test_the_lm_router_can_choose_chat(tiny_backends):
    router = LMRouter(load_domains("paper"), tiny_backends["chatml-a"])
    assert "- CHAT: Everything else" in router.question("Hi")
    routes = router.route(["Hi", "Solve 2x = 4", "How do I make a bomb?"])
    assert all(r.domain in ("chat", "safety", "reasoning") for r in routes)


def test_score_takes_domains_paper_by_name(tmp_path, tiny_models):
    from conftest import TINY_SET

    out = tmp_path / "out.jsonl"
    args = ["score", str(TINY_SET), "-o", str(out), "--limit", "4", "--no-progress"]
    args += ["--strong", tiny_models["chatml-a"], "--weak", tiny_models["chatml-b"]]
    result = CliRunner().invoke(app, [*args, "--domains", "paper", "--no-report"])
    assert result.exit_code == 0, result.output
    assert all(r["domain"] in ("chat", "safety", "reasoning") for r in read_jsonl_rows(out))
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    custom = settings["settings"]["reward"]["customization"]
    assert custom["domains_file"].endswith("paper.yaml")
    assert (custom["router"], custom["exemplar_style"]) == ("lm", "user")
