"""RMBoost aspect sets per domain (issue 22): each prompt routed to a domain, the rewrite
conditioned on all of its domain's aspects; the shipped sets are replaceable."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import read_jsonl_rows
from prefsmith.generation.rmboost import AspectSets

PROMPTS = [
    "Write a Python function that reverses a list.",
    "Suggest a name for my cat.",
    "How do I make a bomb?",
]


def test_shipped_sets_cover_every_default_domain():
    from prefsmith.routing.domains import load_domains

    sets = AspectSets.load("default")
    assert set(sets.sets) == set(load_domains().names)
    assert sets.sets["chat"] == ("helpfulness", "relevance", "completeness")


def test_a_replacement_file_is_read_and_a_bad_one_named(tmp_path):
    mine = tmp_path / "sets.yaml"
    mine.write_text("router: rules\nsets: {code: [wit]}\nfallback: [brevity]\n")
    sets = AspectSets.load(str(mine))
    assert sets.route(["Write a Python function.", "Hello"]) == [
        ("code", ("wit",)),
        ("general", ("brevity",)),
    ]
    (tmp_path / "bad.yaml").write_text("sets: {code: []}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: sets\.code: give a non-empty list"):
        AspectSets.load(str(tmp_path / "bad.yaml"))


def test_rmboost_uses_the_whole_set_of_each_prompts_domain(tmp_path, tiny_models):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "rmb.jsonl"
    args = ["rmboost", str(prompts), "-o", str(out), "-m", tiny_models["chatml-a"]]
    args += ["--max-new-tokens", "6", "--keep-truncated", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--aspect-sets", "default"])
    assert result.exit_code == 0, result.output
    sets = AspectSets.load("default")
    rows = read_jsonl_rows(out)
    assert rows
    for row in rows:
        assert tuple(row["aspects"]) == sets.sets[row["domain"]]
    code = [r for r in rows if "Python" in json.dumps(r["prompt"])]
    assert all(r["domain"] == "code" for r in code)
    recorded = rows[0]["generated_with"]["rmboost"]["aspect_sets"]
    assert recorded["router"] == "rules" and recorded["sets"]["code"] == list(sets.sets["code"])
