"""Generation on tiny random models: sampling, on-policy pairs, RMBoost, formats and CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import RowError
from prefsmith.data.runner import RunOptions, RunSettingsError, process_rows, run_rows
from prefsmith.generation.pairs import (
    PairsOptions,
    PairsStep,
    clean_candidates,
    select_pairs,
)
from prefsmith.generation.rmboost import (
    RMBoostConfig,
    RMBoostStep,
    agreement,
    draw_label_and_aspects,
    load_templates,
    rewrite_messages,
)
from prefsmith.generation.sampling import (
    SampleStep,
    SamplingConfig,
    generate,
    stop_token_ids,
)
from prefsmith.models.backend import ScoreRequest
from prefsmith.models.engines.base import finish_completion
from prefsmith.rewards.density_ratio import DensityRatioReward, Reduction

PROMPTS = [
    {"id": "p0", "prompt": "What is 2+2?"},
    {"id": "p1", "prompt": "Name a colour."},
    {"id": "p2", "messages": [{"role": "user", "content": "Write a haiku about rain."}]},
    {"id": "p3", "prompt": "Say hello in French, please, and explain the greeting."},
    {"id": "p4", "prompt": "Is the sky blue?"},
]

CONVS = [[{"role": "user", "content": text}] for text in ("Hi!", "Tell me a story.", "2+2?")]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def generator(tiny_models):
    from prefsmith.models.loading import load_model

    return load_model(tiny_models["chatml-a"])


@pytest.fixture(scope="module")
def plain_generator(tiny_models):
    from prefsmith.models.loading import load_model

    return load_model(tiny_models["plain-c"])


@pytest.fixture
def scorer(tiny_backends):
    return DensityRatioReward(tiny_backends["chatml-a"], tiny_backends["chatml-b"], Reduction.SUM)


def small(**kw) -> SamplingConfig:
    return SamplingConfig(**{"n": 3, "max_new_tokens": 6, "batch_size": 4, **kw})


def quiet(**kw) -> RunOptions:
    """Run options for tests: no progress display."""
    return RunOptions(**{"progress": False, **kw})


def user_turn(row: dict) -> list[dict]:
    """The conversation of a prompt row (``prompt`` text or ``messages``)."""
    if "messages" in row:
        return row["messages"]
    return [{"role": "user", "content": row["prompt"]}]


# ------------------------------------------------------------------ sampling


def test_samples_do_not_depend_on_batch_size_or_order(generator):
    reference = generate(generator, CONVS, small(batch_size=1))
    assert [len(per) for per in reference] == [3, 3, 3]
    for batch_size in (2, 5, 9):
        assert generate(generator, CONVS, small(batch_size=batch_size)) == reference
    reordered = generate(generator, CONVS[::-1], small(batch_size=4))
    assert reordered[::-1] == reference
    alone = generate(generator, CONVS[1:2], small(batch_size=4))
    assert alone == reference[1:2]


def test_seed_changes_samples_and_samples_differ(generator):
    a = generate(generator, CONVS, small(seed=0))
    b = generate(generator, CONVS, small(seed=1))
    assert a != b
    texts = {g.text for g in a[1]}
    assert len(texts) == 3  # three different samples of one prompt


def test_n_handling_larger_n_extends_smaller(generator):
    two = generate(generator, CONVS, small(n=2))
    five = generate(generator, CONVS, small(n=5))
    assert [len(p) for p in five] == [5, 5, 5]
    assert [p[:2] for p in five] == two


def test_greedy_gives_identical_samples(generator):
    out = generate(generator, CONVS[:1], small(temperature=0, n=3))
    assert len({g.text for g in out[0]}) == 1


def test_truncation_is_reported(generator):
    out = generate(generator, CONVS, small(max_new_tokens=4))
    for per in out:
        for g in per:
            # a random model rarely emits its end-of-turn token; when it does, it says so
            assert (g.finish_reason, g.n_tokens) == ("length", 4) or (
                g.finish_reason == "stop" and g.n_tokens <= 4
            )


def test_decode_cuts_at_stop_token(smol_tokenizer):
    stops = stop_token_ids(smol_tokenizer)
    assert smol_tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    hello = smol_tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    end = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    g = finish_completion(smol_tokenizer, [*hello, end, end, end], stops)
    assert (g.text, g.finish_reason, g.n_tokens) == ("Hello there", "stop", len(hello) + 1)
    g = finish_completion(smol_tokenizer, hello, stops)
    assert (g.finish_reason, g.n_tokens) == ("length", len(hello))
    g = finish_completion(smol_tokenizer, [end], stops)
    assert (g.text, g.finish_reason, g.n_tokens) == ("", "stop", 1)


def test_plain_template_model_generates(plain_generator):
    out = generate(plain_generator, CONVS[:2], small(n=2))
    assert [len(p) for p in out] == [2, 2]


def test_system_prompt_changes_samples(generator):
    plain = generate(generator, CONVS[:1], small())
    with_system = generate(generator, CONVS[:1], small(system_prompt="Answer in French."))
    assert plain != with_system


def test_config_validation():
    with pytest.raises(ValueError, match="n must be"):
        SamplingConfig(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


def test_sample_file_writes_rows_and_resumes(tmp_path, generator):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    config = small(n=2)
    options = quiet(chunk_size=2)
    full = run_rows(src, tmp_path / "full.jsonl", SampleStep(generator, config), options)
    rows = read_jsonl_rows(tmp_path / "full.jsonl")
    assert (full.processed, full.written, full.counts["samples"]) == (5, 5, 10)
    assert full.counts["tokens"] == sum(sum(r["n_tokens"]) for r in rows)
    assert full.counts["truncated samples"] == sum(
        fr == "length" for r in rows for fr in r["finish_reasons"]
    )
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert [r["source_index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2]["messages"][0]["content"].startswith("Write a haiku")
    for r in rows:
        assert len(r["responses"]) == len(r["finish_reasons"]) == len(r["n_tokens"]) == 2
        assert r["generated_with"]["model"] == generator.source.name
        assert r["generated_with"]["seed"] == 0
    settings = json.loads((tmp_path / "full.jsonl.settings.json").read_text())
    assert settings["step"] == "sample" and settings["chunk_size"] == 2
    assert settings["settings"]["n"] == 2 and settings["settings"]["model"] == generator.source.name
    # An interrupted run: two complete rows and half a line.
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "resumed.jsonl").write_text("".join(lines[:2]) + lines[2][:30])
    resumed = run_rows(src, tmp_path / "resumed.jsonl", SampleStep(generator, config), options)
    assert (resumed.already_done, resumed.processed) == (2, 3)
    assert read_jsonl_rows(tmp_path / "resumed.jsonl") == rows
    again = run_rows(src, tmp_path / "resumed.jsonl", SampleStep(generator, config), options)
    assert (again.processed, again.already_done, again.written) == (0, 5, 5)
    assert (tmp_path / "resumed.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()
    # Resuming with other settings is refused, naming the setting.
    with pytest.raises(RunSettingsError, match=r"settings\.seed: 0 -> 1"):
        run_rows(
            src, tmp_path / "resumed.jsonl", SampleStep(generator, small(n=2, seed=1)), options
        )


def test_sample_rows_in_memory_match_the_file_run(tmp_path, generator):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:3])
    run_rows(src, tmp_path / "s.jsonl", SampleStep(generator, small(n=2)), quiet())
    in_memory = process_rows(PROMPTS[:3], SampleStep(generator, small(n=2)), chunk_size=2)
    assert in_memory == read_jsonl_rows(tmp_path / "s.jsonl")


def test_sample_file_parquet_and_limit(tmp_path, generator):
    import pyarrow.parquet as pq

    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    run_rows(src, tmp_path / "out.parquet", SampleStep(generator, small(n=2)), quiet(limit=2))
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in table] == ["p0", "p1"]


def test_sample_file_bad_rows(tmp_path, generator):
    bad = [*PROMPTS[:2], {"id": "x", "text": "no prompt"}, {"prompt": ""}]
    src = write_jsonl(tmp_path / "prompts.jsonl", bad)
    with pytest.raises(RowError, match=r"prompts\.jsonl:3: missing field 'prompt'"):
        run_rows(src, tmp_path / "o.jsonl", SampleStep(generator, small()), RunOptions())
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "o.jsonl.settings.json").exists()
    step = SampleStep(generator, small(n=1))
    summary = run_rows(src, tmp_path / "o.jsonl", step, quiet(on_error="skip"))
    assert (summary.processed, summary.rejected) == (2, 2)
    rejected = read_jsonl_rows(tmp_path / "o.jsonl.rejected.jsonl")
    assert [r["location"].rsplit(":", 1)[1] for r in rejected] == ["3", "4"]
    assert [r["source_index"] for r in rejected] == [2, 3]
    assert "missing field 'prompt'" in rejected[0]["reason"]


def test_long_prompts_are_set_aside(tmp_path, generator):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    step = SampleStep(generator, small(n=1), max_prompt_tokens=40)
    summary = run_rows(src, tmp_path / "o.jsonl", step, quiet(on_error="skip"))
    reasons = [r["reason"] for r in read_jsonl_rows(tmp_path / "o.jsonl.rejected.jsonl")]
    assert summary.rejected == len(reasons) >= 1
    assert summary.processed == 5 - len(reasons)
    assert all("more than the 40 allowed" in r for r in reasons)


# ------------------------------------------------------------------ pairs


def test_select_pairs_from_known_rewards():
    assert select_pairs([0.1, -3.0, 7.5, 2.0]) == [(2, 1)]
    assert select_pairs([2.0, 2.0]) == []  # a tie gives no pair
    assert select_pairs([5.0]) == []
    assert select_pairs([1.0, 1.0, 0.0]) == [(0, 2)]  # first of the tied best
    assert select_pairs([0.0, 1.0, 3.0], min_margin=3.0) == []
    assert select_pairs([0.0, 1.0, 3.0], "all-pairs") == [(2, 0), (2, 1), (1, 0)]
    assert select_pairs([1.0, 1.0, 1.0], "all-pairs") == []


def test_clean_candidates_statuses():
    clean = clean_candidates(["x", " ", "x", "y"], ["stop", "stop", "stop", "length"])
    assert clean.status == ("ok", "empty", "duplicate", "truncated")
    assert clean.kept == (0,)
    kept = clean_candidates(["x", " ", "x", "y"], ["stop", "stop", "stop", "length"], True)
    assert kept.status == ("ok", "empty", "duplicate", "ok (truncated)")
    assert kept.kept == (0, 3)


def candidate_rows() -> list[dict]:
    return [
        {
            "id": "a",
            "prompt": "Capital of France?",
            "responses": ["Paris.", "Lyon, I believe.", "It is Paris, of course.", "Nice?"],
            "finish_reasons": ["stop", "stop", "stop", "stop"],
        },
        {  # an empty and (without keep_truncated) a truncated candidate are dropped; two remain
            "id": "b",
            "prompt": [{"role": "user", "content": "Greet me."}],
            "responses": ["Hello!", "", "Hi there, friend", "Good morning"],
            "finish_reasons": ["stop", "stop", "length", "stop"],
        },
        {  # identical candidates: nothing to compare
            "id": "c",
            "prompt": "Say yes.",
            "responses": ["Yes.", "Yes.", " Yes. "],
            "finish_reasons": ["stop", "stop", "stop"],
        },
    ]


def candidate_counts(counts: dict[str, int]) -> dict[str, int]:
    """The candidate statuses of a pairs run's counts (``candidates ok`` -> ``ok``)."""
    return {
        k.removeprefix("candidates "): v for k, v in counts.items() if k.startswith("candidates ")
    }


def test_pairs_pick_best_and_worst_by_reward(tmp_path, scorer, monkeypatch):
    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows())
    step = PairsStep(scorer, PairsOptions(keep_truncated=False))
    summary = run_rows(src, tmp_path / "pairs.jsonl", step, quiet())
    rows = read_jsonl_rows(tmp_path / "pairs.jsonl")
    assert summary.written == 2 and [r["id"] for r in rows] == ["a", "b"]
    assert [r["source_index"] for r in rows] == [0, 1]
    assert summary.dropped == {"fewer than 2 usable candidates": 1}
    assert candidate_counts(summary.counts) == {"ok": 7, "empty": 1, "truncated": 1, "duplicate": 2}
    for row, cand in zip(rows, candidate_rows()[:2], strict=False):
        # Rewards recomputed independently from the scorer agree with the recorded ones.
        context = (
            [{"role": "user", "content": cand["prompt"]}]
            if isinstance(cand["prompt"], str)
            else cand["prompt"]
        )
        kept = [i for i, s in enumerate(row["candidate_status"]) if s == "ok"]
        rewards = scorer.score_requests(
            [ScoreRequest(tuple(context), cand["responses"][i]) for i in kept]
        )
        by_index = dict(zip(kept, (r.reward for r in rewards), strict=True))
        best = max(by_index, key=by_index.get)
        worst = min(by_index, key=by_index.get)
        assert (row["chosen_index"], row["rejected_index"]) == (best, worst)
        assert row["chosen"][0]["content"] == cand["responses"][best]
        assert row["rejected"][0]["content"] == cand["responses"][worst]
        assert row["reward_margin"] == pytest.approx(by_index[best] - by_index[worst], abs=1e-6)
        assert row["reward_margin"] > 0
        for i, status in enumerate(row["candidate_status"]):
            assert (row["candidate_rewards"][i] is None) == (status != "ok")
        assert row["scored_with"]["reduction"] == "sum"
    assert rows[1]["candidate_status"] == ["ok", "empty", "truncated", "ok"]
    settings = json.loads((tmp_path / "pairs.jsonl.settings.json").read_text())
    assert settings["step"] == "pairs"
    assert settings["settings"]["reward"]["strong"]["name"] == scorer.strong.name
    assert settings["settings"]["pairs"]["strategy"] == "best-worst"
    assert settings["settings"]["pairs"]["keep_truncated"] is False

    # Rerun: nothing is scored again, same output.
    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(scorer, "score_requests", no_scoring)
    again = run_rows(src, tmp_path / "pairs.jsonl", step, quiet())
    assert (again.processed, again.already_done) == (0, 3)
    assert read_jsonl_rows(tmp_path / "pairs.jsonl") == rows
    assert again.dropped == summary.dropped and again.counts == summary.counts


def test_pairs_keep_truncated_candidates_by_default(scorer):
    (row,) = process_rows(candidate_rows()[1:2], PairsStep(scorer))
    assert row["candidate_status"] == ["ok", "empty", "ok (truncated)", "ok"]
    assert [r is None for r in row["candidate_rewards"]] == [False, True, False, False]
    kept = [0, 2, 3]
    rewards = [row["candidate_rewards"][i] for i in kept]
    assert row["chosen_index"] == kept[max(range(3), key=lambda i: (rewards[i], -i))]
    assert row["rejected_index"] == kept[min(range(3), key=lambda i: (rewards[i], i))]
    assert row["source_index"] == 0


def test_pairs_all_pairs_and_margin(tmp_path, scorer):
    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows()[:1])
    step = PairsStep(scorer, PairsOptions("all-pairs", format="standard"))
    run_rows(src, tmp_path / "all.jsonl", step, quiet())
    rows = read_jsonl_rows(tmp_path / "all.jsonl")
    assert len(rows) == 6  # 4 distinct rewards: every ordered pair with a positive margin
    assert all(isinstance(r["prompt"], str) and r["reward_margin"] > 0 for r in rows)
    margins = sorted(r["reward_margin"] for r in rows)
    step = PairsStep(scorer, PairsOptions("all-pairs", min_margin=margins[2]))
    run_rows(src, tmp_path / "m.jsonl", step, quiet())
    assert len(read_jsonl_rows(tmp_path / "m.jsonl")) == 3
    # Every pair at or below the margin: the row is dropped, with the reason counted.
    step = PairsStep(scorer, PairsOptions(min_margin=margins[-1]))
    summary = run_rows(src, tmp_path / "none.jsonl", step, quiet())
    assert summary.written == 0
    assert summary.dropped == {f"margin not above {margins[-1]}": 1}


def test_pairs_bad_input_names_the_line(tmp_path, scorer):
    rows = [*candidate_rows()[:1], {"prompt": "x", "responses": "not a list"}]
    src = write_jsonl(tmp_path / "cands.jsonl", rows)
    with pytest.raises(RowError, match=r"cands\.jsonl:2: field 'responses' must be"):
        run_rows(src, tmp_path / "p.jsonl", PairsStep(scorer), quiet())
    multi = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}],
              "responses": ["a", "b"]}]  # fmt: skip
    src = write_jsonl(tmp_path / "multi.jsonl", multi)
    with pytest.raises(RowError, match="use --format conversational"):
        run_rows(src, tmp_path / "p.jsonl", PairsStep(scorer, PairsOptions(format="standard")))


# ------------------------------------------------------------------ RMBoost


def test_rewrite_prompt_carries_label_and_aspects():
    templates = load_templates()
    context = [{"role": "user", "content": "How do magnets work?"}]
    better = rewrite_messages(context, "They just do.", "better", ["correctness"], templates)
    worse = rewrite_messages(
        context, "They just do.", "worse", ["relevance", "harmlessness"], templates
    )
    assert better[0]["role"] == "system" and better[1]["role"] == "user"
    assert "clearly better" in better[1]["content"] and "worse" not in better[1]["content"]
    assert "noticeably worse" in worse[1]["content"]
    for msgs in (better, worse):
        assert "How do magnets work?" in msgs[1]["content"]
        assert "They just do." in msgs[1]["content"]
        assert "$" not in msgs[1]["content"]
    assert "- correctness: " in better[1]["content"]
    assert "- relevance: " in worse[1]["content"] and "- harmlessness: " in worse[1]["content"]
    assert "- correctness" not in worse[1]["content"]


def test_custom_templates_are_checked(tmp_path):
    for name in ("system", "better", "worse"):
        (tmp_path / f"{name}.txt").write_text("$prompt $response $aspects")
    assert load_templates(tmp_path).descriptions == {}
    (tmp_path / "worse.txt").write_text("$prompt $response")
    with pytest.raises(ValueError, match=r"worse\.txt: missing placeholder\(s\) \$aspects"):
        load_templates(tmp_path)


def test_label_and_aspect_draws():
    config = RMBoostConfig(num_aspects=3, seed=5)
    draws = [draw_label_and_aspects(config, i) for i in range(200)]
    labels = [d[0] for d in draws]
    assert 60 < labels.count("better") < 140
    assert all(len(a) == 3 and len(set(a)) == 3 for _, a in draws)
    assert draws == [draw_label_and_aspects(config, i) for i in range(200)]
    assert all(d[0] == "worse" for d in map(lambda i: draw_label_and_aspects(
        RMBoostConfig(p_better=0.0), i), range(20)))  # fmt: skip
    with pytest.raises(ValueError, match="num_aspects"):
        RMBoostConfig(aspects=("a", "b"), num_aspects=3)


def test_rmboost_orders_pairs_by_label_and_resumes(tmp_path, generator):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    config = RMBoostConfig(num_aspects=2, seed=1, keep_truncated=True)
    options = quiet(chunk_size=2)
    out = tmp_path / "rmb.jsonl"
    summary = run_rows(src, out, RMBoostStep(generator, small(n=1), config), options)
    rows = read_jsonl_rows(out)
    assert summary.processed == 5 and summary.written == len(rows)
    assert summary.written + sum(summary.dropped.values()) == 5
    assert {draw_label_and_aspects(config, i)[0] for i in range(5)} == {"better", "worse"}
    # The first response is sample 0 of `sample` with the same settings; the second is the
    # generator's answer to the rewrite prompt with the drawn label and aspects.
    templates = load_templates()
    contexts = [user_turn(p) for p in PROMPTS]
    firsts = [g[0].text for g in generate(generator, contexts, small(n=1))]
    for row in rows:
        i = row["source_index"]
        label, aspects = draw_label_and_aspects(config, i)
        assert (row["rmboost_label"], row["aspects"]) == (label, list(aspects))
        assert row["id"] == PROMPTS[i]["id"]
        rewrite = rewrite_messages(contexts[i], firsts[i], label, aspects, templates)
        second = generate(generator, [rewrite], small(n=1))[0][0].text
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if row["rmboost_label"] == "better":
            assert (chosen, rejected) == (second, firsts[i])
        else:
            assert (chosen, rejected) == (firsts[i], second)
        assert row["prompt"] == contexts[i]
        assert row["generated_with"]["rmboost"]["num_aspects"] == 2
        assert set(row["finish_reasons"]) == {"first", "second"}
        assert set(row["n_tokens"]) == {"first", "second"}
    assert summary.counts["tokens"] > 0
    again = run_rows(src, out, RMBoostStep(generator, small(n=1), config), options)
    assert (again.processed, again.already_done) == (0, 5)
    assert read_jsonl_rows(out) == rows
    # A run stopped after three prompts resumes to the same output.
    part = tmp_path / "part.jsonl"
    run_rows(src, part, RMBoostStep(generator, small(n=1), config), quiet(chunk_size=2, limit=3))
    resumed = run_rows(src, part, RMBoostStep(generator, small(n=1), config), options)
    assert (resumed.already_done, resumed.processed) == (3, 2)
    assert part.read_bytes() == out.read_bytes()


def test_rmboost_check_records_agreement_and_filters(tmp_path, generator, scorer):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    config = RMBoostConfig(seed=2, keep_truncated=True)
    out = tmp_path / "rmb.jsonl"
    step = RMBoostStep(generator, small(n=1), config, check=scorer)
    summary = run_rows(src, out, step, quiet())
    rows = read_jsonl_rows(out)
    assert rows and all(r["scorer_agrees"] == (r["reward_margin"] > 0) for r in rows)
    for r in rows:
        assert r["reward_margin"] == pytest.approx(r["reward_chosen"] - r["reward_rejected"])
        assert r["scored_with"]["scorer"] == scorer.name
    agreeing = sum(r["scorer_agrees"] for r in rows)
    assert agreement(summary.counts)["all"] == pytest.approx(agreeing / len(rows))
    assert summary.counts["checked"] == len(rows)
    for label in ("better", "worse"):
        mine = [r for r in rows if r["rmboost_label"] == label]
        assert summary.counts.get(f"checked {label}", 0) == len(mine)
        assert summary.counts.get(f"agrees {label}", 0) == sum(r["scorer_agrees"] for r in mine)
    # Other settings into the same output are refused, naming the setting.
    filtering = RMBoostStep(generator, small(n=1), config, check=scorer, filter_agreement=True)
    with pytest.raises(RunSettingsError, match="filter_agreement"):
        run_rows(src, out, filtering, quiet())
    filtered = run_rows(src, tmp_path / "filtered.jsonl", filtering, quiet())
    kept = read_jsonl_rows(tmp_path / "filtered.jsonl")
    assert len(kept) == agreeing == filtered.written and all(r["scorer_agrees"] for r in kept)
    assert filtered.dropped.get("scorer disagrees", 0) == len(rows) - agreeing

    def pair(row: dict) -> dict:  # generated_with records filter_agreement
        return {k: v for k, v in row.items() if k != "generated_with"}

    assert [pair(r) for r in kept] == [pair(r) for r in rows if r["scorer_agrees"]]
    assert all(r["generated_with"]["filter_agreement"] for r in kept)


# ------------------------------------------------------------------ formats


def test_outputs_load_with_datasets_and_trl(tmp_path, generator, scorer, tiny_models):
    from datasets import load_dataset

    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows())
    for fmt in ("conversational", "standard"):
        step = PairsStep(scorer, PairsOptions(format=fmt))
        run_rows(src, tmp_path / f"pairs-{fmt}.jsonl", step, quiet())
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    step = RMBoostStep(generator, small(n=1), RMBoostConfig(keep_truncated=True))
    run_rows(prompts, tmp_path / "rmb.jsonl", step, quiet())
    paths = [tmp_path / f"pairs-{f}.jsonl" for f in ("conversational", "standard")]
    paths.append(tmp_path / "rmb.jsonl")
    datasets = [load_dataset("json", data_files=str(p), split="train") for p in paths]
    for ds in datasets:
        assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
        assert not {"messages", "completion", "label"} & set(ds.column_names)

    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["chatml-a"])
    conversational, standard, rmb = datasets
    assert is_conversational(conversational[0]) and is_conversational(rmb[0])
    assert not is_conversational(standard[0])
    for ds in datasets:
        for example in ds:
            applied = maybe_apply_chat_template(example, tokenizer)
            assert all(isinstance(applied[k], str) for k in ("prompt", "chosen", "rejected"))
    applied = maybe_apply_chat_template(conversational[0], tokenizer)
    assert applied["chosen"].startswith(conversational[0]["chosen"][0]["content"])
    # DPOTrainer and CPOTrainer (SimPO loss) take every output as is (their dataset
    # preparation runs on construction); one training step each on two of them.
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    common = {
        "report_to": [],
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
    }
    model = AutoModelForCausalLM.from_pretrained(tiny_models["chatml-a"])
    for k, ds in enumerate(datasets):
        args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), **common)
        trainer = trl.DPOTrainer(
            model=model, args=args, train_dataset=ds, processing_class=tokenizer
        )
        assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(
            trainer.train_dataset.column_names
        )
        if k == 0:
            trainer.train()
        simpo = CPOConfig(
            output_dir=str(tmp_path / "cpo"), loss_type="simpo", cpo_alpha=0.0, **common
        )
        trainer = CPOTrainer(model=model, args=simpo, train_dataset=ds, processing_class=tokenizer)
        assert {"chosen_input_ids", "rejected_input_ids"} <= set(trainer.train_dataset.column_names)
        if k == 2:
            trainer.train()


# ------------------------------------------------------------------ CLI


def flat(text: str) -> str:
    """CLI output with line breaks (the console wraps long lines) turned into spaces."""
    return " ".join(text.split())


def test_cli_sample_pairs_rmboost(tmp_path, tiny_models):
    from prefsmith.cli.main import app

    runner = CliRunner()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:3])
    samples = tmp_path / "samples.jsonl"
    common = ["--max-new-tokens", "5", "--no-progress"]
    result = runner.invoke(
        app,
        [
            "sample",
            str(prompts),
            "-o",
            str(samples),
            "-m",
            tiny_models["chatml-a"],
            "-n",
            "3",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sample: 3 rows processed" in flat(result.output)
    assert "0 already done; 0 rejected" in flat(result.output)
    sampled = read_jsonl_rows(samples)
    assert len(sampled) == 3 and sum(len(r["responses"]) for r in sampled) == 9
    assert all(r["generated_with"]["max_new_tokens"] == 5 for r in sampled)
    pairs_out = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        [
            *("pairs", str(samples), "-o", str(pairs_out), "--strong", tiny_models["chatml-a"]),
            *("--weak", tiny_models["chatml-b"], "--keep-truncated", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pairs: 3 rows processed" in flat(result.output)
    assert "candidates: " in result.output
    settings = json.loads((tmp_path / "pairs.jsonl.settings.json").read_text())
    assert settings["settings"]["pairs"]["keep_truncated"] is True
    rmb = tmp_path / "rmb.jsonl"
    result = runner.invoke(
        app,
        [
            *("rmboost", str(prompts), "-o", str(rmb), "-m", tiny_models["chatml-a"], "--check"),
            *("--strong", tiny_models["chatml-a"], "--weak", tiny_models["plain-c"]),
            *("--reduction", "mean-char", "--keep-truncated", "--aspects", "correctness,wit"),
            *("--num-aspects", "1", *common),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scorer agrees with the intended label" in flat(result.output)
    assert "rmboost: 3 rows processed" in flat(result.output)
    rows = read_jsonl_rows(rmb)
    assert rows and all(len(r["aspects"]) == 1 for r in rows)
    assert all(r["aspects"][0] in ("correctness", "wit") for r in rows)


def test_cli_errors_are_clear(tmp_path, tiny_models, monkeypatch):
    from prefsmith.cli.main import app

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded before the rows were checked")

    monkeypatch.setattr("prefsmith.models.loading.load_model", no_weights)
    monkeypatch.setattr("prefsmith.models.engines.hf.load_model", no_weights)
    runner = CliRunner()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "?"}])
    result = runner.invoke(app, ["sample", str(bad), "-m", tiny_models["chatml-a"]])
    assert result.exit_code == 2, result.output
    assert "bad.jsonl:2" in result.output and "missing field 'prompt'" in result.output
    result = runner.invoke(app, ["rmboost", str(bad), "--filter-agreement"])
    assert result.exit_code == 2 and "--check" in result.output
    result = runner.invoke(app, ["pairs", str(bad), "--strategy", "best"])
    assert result.exit_code == 2 and "best-worst" in result.output


def test_cli_bad_rows_are_reported_before_the_model_is_resolved(tmp_path):
    from prefsmith.cli.main import app

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "?"}])
    result = CliRunner().invoke(app, ["sample", str(bad), "-m", "/nonexistent/model"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "missing field 'prompt'" in result.output


# ------------------------------------------------------------------ real model


@pytest.mark.slow
def test_packaged_generator_8_prompts_x_4(tmp_path):
    """The packaged default generator: 8 short prompts x 4 samples of up to 32 tokens."""
    import torch

    from prefsmith.models.loading import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one thread is several times faster
    try:
        loaded = load_model("smollm2-135m-instruct")
        prompts = [
            "What is the capital of Japan?",
            "Give one tip for sleeping better.",
            "Translate 'good morning' into Spanish.",
            "What is 12 times 7?",
            "Name a primary colour.",
            "Write a haiku about autumn.",
            "What does CPU stand for?",
            "Suggest a name for a pet goldfish.",
        ]
        src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in prompts])
        config = SamplingConfig(n=4, max_new_tokens=32, batch_size=16)
        summary = run_rows(src, tmp_path / "s.jsonl", SampleStep(loaded, config), quiet())
        rows = read_jsonl_rows(tmp_path / "s.jsonl")
        assert summary.counts["samples"] == 32 and len(rows) == 8
        assert all(t.strip() for r in rows for t in r["responses"])
        assert sum(fr == "stop" for r in rows for fr in r["finish_reasons"]) >= 8
        assert any("Tokyo" in t for t in rows[0]["responses"])  # an instruct model answers
        # Same seed, another batch size and batch composition: the same samples.
        again = generate(
            loaded, [[{"role": "user", "content": prompts[5]}]], replace(config, batch_size=3)
        )
        assert [g.text for g in again[0]] == rows[5]["responses"]
    finally:
        torch.set_num_threads(threads)
