"""Generation on tiny random models: sampling, on-policy pairs, RMBoost, formats and CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import RowError
from prefsmith.generation.pairs import (
    PairsOptions,
    clean_candidates,
    make_pairs,
    scores_path,
    select_pairs,
)
from prefsmith.generation.rmboost import (
    RMBoostConfig,
    RMBoostFileOptions,
    draw_label_and_aspects,
    generated_path,
    load_templates,
    rewrite_messages,
    rmboost_file,
)
from prefsmith.generation.sampling import (
    SampleFileOptions,
    SamplingConfig,
    decode_generation,
    generate,
    sample_file,
    stop_token_ids,
)
from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.density_ratio import DensityRatioScorer, Reduction

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
    return DensityRatioScorer(tiny_backends["chatml-a"], tiny_backends["chatml-b"], Reduction.SUM)


def small(**kw) -> SamplingConfig:
    return SamplingConfig(**{"n": 3, "max_new_tokens": 6, "batch_size": 4, **kw})


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
    g = decode_generation(smol_tokenizer, [*hello, end, end, end], stops)
    assert (g.text, g.finish_reason, g.n_tokens) == ("Hello there", "stop", len(hello) + 1)
    g = decode_generation(smol_tokenizer, hello, stops)
    assert (g.finish_reason, g.n_tokens) == ("length", len(hello))
    g = decode_generation(smol_tokenizer, [end], stops)
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
    options = SampleFileOptions(chunk_size=2, progress=False)
    full = sample_file(src, tmp_path / "full.jsonl", generator, config, options)
    rows = read_jsonl_rows(tmp_path / "full.jsonl")
    assert full.prompts == 5 and full.samples == 10
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert rows[2]["messages"][0]["content"].startswith("Write a haiku")
    for r in rows:
        assert len(r["responses"]) == len(r["finish_reasons"]) == len(r["n_tokens"]) == 2
        assert r["generated_with"]["model"] == generator.source.name
        assert r["generated_with"]["seed"] == 0
    # An interrupted run: two complete rows and half a line.
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "resumed.jsonl").write_text("".join(lines[:2]) + lines[2][:30])
    resumed = sample_file(src, tmp_path / "resumed.jsonl", generator, config, options)
    assert (resumed.already_done, resumed.prompts) == (2, 3)
    assert read_jsonl_rows(tmp_path / "resumed.jsonl") == rows
    again = sample_file(src, tmp_path / "resumed.jsonl", generator, config, options)
    assert again.prompts == 0


def test_sample_file_parquet_and_limit(tmp_path, generator):
    import pyarrow.parquet as pq

    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    options = SampleFileOptions(limit=2, progress=False)
    sample_file(src, tmp_path / "out.parquet", generator, small(n=2), options)
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in table] == ["p0", "p1"]


def test_sample_file_bad_rows(tmp_path, generator):
    bad = [*PROMPTS[:2], {"id": "x", "text": "no prompt"}, {"prompt": ""}]
    src = write_jsonl(tmp_path / "prompts.jsonl", bad)
    with pytest.raises(RowError, match=r"prompts\.jsonl:3: missing field 'prompt'"):
        sample_file(src, tmp_path / "o.jsonl", generator, small(), SampleFileOptions())
    assert not (tmp_path / "o.jsonl").exists()
    options = SampleFileOptions(on_error="skip", progress=False)
    summary = sample_file(src, tmp_path / "o.jsonl", generator, small(n=1), options)
    assert (summary.prompts, summary.rejected) == (2, 2)
    rejected = read_jsonl_rows(tmp_path / "o.jsonl.rejected.jsonl")
    assert [r["location"].rsplit(":", 1)[1] for r in rejected] == ["3", "4"]


def test_long_prompts_are_set_aside(tmp_path, generator):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    options = SampleFileOptions(max_prompt_tokens=40, on_error="skip", progress=False)
    summary = sample_file(src, tmp_path / "o.jsonl", generator, small(n=1), options)
    reasons = [r["reason"] for r in read_jsonl_rows(tmp_path / "o.jsonl.rejected.jsonl")]
    assert summary.rejected == len(reasons) >= 1
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


def candidate_rows() -> list[dict]:
    return [
        {
            "id": "a",
            "prompt": "Capital of France?",
            "responses": ["Paris.", "Lyon, I believe.", "It is Paris, of course.", "Nice?"],
            "finish_reasons": ["stop", "stop", "stop", "stop"],
        },
        {  # an empty and a truncated candidate are dropped; two remain
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


def test_pairs_pick_best_and_worst_by_reward(tmp_path, scorer):
    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows())
    summary = make_pairs(src, tmp_path / "pairs.jsonl", scorer, PairsOptions(progress=False))
    rows = read_jsonl_rows(tmp_path / "pairs.jsonl")
    assert summary.pairs == 2 and [r["id"] for r in rows] == ["a", "b"]
    assert summary.dropped == {"fewer than 2 usable candidates": 1}
    assert summary.candidates == {"ok": 7, "empty": 1, "truncated": 1, "duplicate": 2}
    for row, cand in zip(rows, candidate_rows()[:2], strict=False):
        # Rewards recomputed independently from the scorer agree with the recorded ones.
        context = (
            [{"role": "user", "content": cand["prompt"]}]
            if isinstance(cand["prompt"], str)
            else cand["prompt"]
        )
        kept = [i for i, s in enumerate(row["candidate_status"]) if s == "ok"]
        rewards = scorer.score([ScoreRequest(tuple(context), cand["responses"][i]) for i in kept])
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
    assert settings["scorer"]["strong"] == scorer.strong.name
    assert settings["pairs"]["strategy"] == "best-worst"
    # Rerun: nothing is scored again, same output.
    again = make_pairs(src, tmp_path / "pairs.jsonl", scorer, PairsOptions(progress=False))
    assert again.scored == 0 and read_jsonl_rows(tmp_path / "pairs.jsonl") == rows


def test_pairs_all_pairs_and_margin(tmp_path, scorer):
    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows()[:1])
    make_pairs(
        src,
        tmp_path / "all.jsonl",
        scorer,
        PairsOptions("all-pairs", format="standard", progress=False),
    )
    rows = read_jsonl_rows(tmp_path / "all.jsonl")
    assert len(rows) == 6  # 4 distinct rewards: every ordered pair with a positive margin
    assert all(isinstance(r["prompt"], str) and r["reward_margin"] > 0 for r in rows)
    margins = sorted(r["reward_margin"] for r in rows)
    options = PairsOptions("all-pairs", min_margin=margins[2], progress=False)
    make_pairs(src, tmp_path / "m.jsonl", scorer, options)
    assert len(read_jsonl_rows(tmp_path / "m.jsonl")) == 3


def test_pairs_bad_input_names_the_line(tmp_path, scorer):
    rows = [*candidate_rows()[:1], {"prompt": "x", "responses": "not a list"}]
    src = write_jsonl(tmp_path / "cands.jsonl", rows)
    with pytest.raises(RowError, match=r"cands\.jsonl:2: field 'responses' must be"):
        make_pairs(src, tmp_path / "p.jsonl", scorer, PairsOptions(progress=False))
    multi = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}],
              "responses": ["a", "b"]}]  # fmt: skip
    src = write_jsonl(tmp_path / "multi.jsonl", multi)
    with pytest.raises(RowError, match="use --format conversational"):
        make_pairs(src, tmp_path / "p.jsonl", scorer, PairsOptions(format="standard"))


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
    options = RMBoostFileOptions(chunk_size=2, progress=False)
    out = tmp_path / "rmb.jsonl"
    summary = rmboost_file(src, out, generator, small(n=1), config, options)
    journal = {r["source_index"]: r for r in read_jsonl_rows(generated_path(out))}
    rows = read_jsonl_rows(out)
    assert summary.generated == 5 and summary.pairs == len(rows)
    assert summary.pairs + sum(summary.dropped.values()) == 5
    assert {r["rmboost_label"] for r in journal.values()} == {"better", "worse"}
    for row in rows:
        j = journal[row["source_index"]]
        label, aspects = draw_label_and_aspects(config, row["source_index"])
        assert (row["rmboost_label"], row["aspects"]) == (label, list(aspects))
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if row["rmboost_label"] == "better":
            assert (chosen, rejected) == (j["second_response"], j["first_response"])
        else:
            assert (chosen, rejected) == (j["first_response"], j["second_response"])
        assert row["generated_with"]["rmboost"]["num_aspects"] == 2
        assert set(row["finish_reasons"]) == {"first", "second"}
    # The first response is sample 0 of `sample` with the same settings.
    first = generate(generator, [[{"role": "user", "content": PROMPTS[0]["prompt"]}]], small(n=1))
    assert journal[0]["first_response"] == first[0][0].text
    again = rmboost_file(src, out, generator, small(n=1), config, options)
    assert again.generated == 0 and read_jsonl_rows(out) == rows


def test_rmboost_check_records_agreement_and_filters(tmp_path, generator, scorer):
    src = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    config = RMBoostConfig(seed=2, keep_truncated=True)
    options = RMBoostFileOptions(progress=False)
    out = tmp_path / "rmb.jsonl"
    summary = rmboost_file(src, out, generator, small(n=1), config, options, scorer=scorer)
    rows = read_jsonl_rows(out)
    assert rows and all(r["scorer_agrees"] == (r["reward_margin"] > 0) for r in rows)
    agreeing = sum(r["scorer_agrees"] for r in rows)
    assert summary.agreement["all"] == pytest.approx(agreeing / len(rows))
    assert summary.checked["all"] == len(rows)
    assert read_jsonl_rows(scores_path(out))
    filtered = rmboost_file(
        src, out, generator, small(n=1), config, options, scorer=scorer, filter_agreement=True
    )
    kept = read_jsonl_rows(out)
    assert len(kept) == agreeing == filtered.pairs and all(r["scorer_agrees"] for r in kept)


# ------------------------------------------------------------------ formats


def test_outputs_load_with_datasets_and_trl(tmp_path, generator, scorer, tiny_models):
    from datasets import load_dataset

    src = write_jsonl(tmp_path / "cands.jsonl", candidate_rows())
    for fmt in ("conversational", "standard"):
        make_pairs(
            src, tmp_path / f"pairs-{fmt}.jsonl", scorer, PairsOptions(format=fmt, progress=False)
        )
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    rmboost_file(
        prompts,
        tmp_path / "rmb.jsonl",
        generator,
        small(n=1),
        RMBoostConfig(keep_truncated=True),
        RMBoostFileOptions(progress=False),
    )
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
    assert "sampled 3 prompts x 3 = 9 responses" in result.output
    assert len(read_jsonl_rows(samples)) == 3
    pairs_out = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        [
            *("pairs", str(samples), "-o", str(pairs_out), "--strong", tiny_models["chatml-a"]),
            *("--weak", tiny_models["chatml-b"], "--keep-truncated", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pairs from 3 prompts" in result.output
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
    assert "scorer agrees with the intended label" in result.output
    rows = read_jsonl_rows(rmb)
    assert rows and all(len(r["aspects"]) == 1 for r in rows)
    assert all(r["aspects"][0] in ("correctness", "wit") for r in rows)


def test_cli_errors_are_clear(tmp_path, tiny_models):
    from prefsmith.cli.main import app

    runner = CliRunner()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "?"}])
    result = runner.invoke(app, ["sample", str(bad), "-m", "/nonexistent/model"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "missing field 'prompt'" in result.output
    result = runner.invoke(app, ["rmboost", str(bad), "--filter-agreement"])
    assert result.exit_code == 2 and "--check" in result.output
    result = runner.invoke(app, ["pairs", str(bad), "--strategy", "best"])
    assert result.exit_code == 2 and "best-worst" in result.output


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
        options = SampleFileOptions(progress=False)
        summary = sample_file(src, tmp_path / "s.jsonl", loaded, config, options)
        rows = read_jsonl_rows(tmp_path / "s.jsonl")
        assert summary.samples == 32 and len(rows) == 8
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
