"""K-wise rows: validation, RewardBench 2 and RM-Bench arithmetic (hand-computed), scoring each
completion once through the harness, glob inputs, the report, study and ``eval --fit``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.runner import RunOptions, read_input, read_items, run_rows
from prefsmith.evaluation.fit import FitOptions, fit_evaluation
from prefsmith.evaluation.harness import PairScoreStep, evaluate, evaluate_file, prepare_pair
from prefsmith.evaluation.kwise import (
    benchmark_of,
    best_of_k_credit,
    hard_normal_easy,
    rewardbench2_scores,
    rmbench_matrix,
    rmbench_scores,
    ties_score,
)
from prefsmith.evaluation.study import run_study, study_columns, study_markdown
from prefsmith.models.cache import LogProbCache
from prefsmith.models.pool import ModelPool
from prefsmith.report import write_report
from prefsmith.rewards.density_ratio import DensityRatioReward

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scored(chosen: list[float], rejected: list[float], **fields) -> dict:
    return {"rewards_chosen": chosen, "rewards_rejected": rejected, **fields}


# ------------------------------------------------------------------------------ validation


def test_kwise_rows_are_validated_and_bad_ones_named_with_file_and_line(tmp_path):
    rows = [
        {"prompt": "q", "chosen": ["a"], "rejected": ["b", "c", "d"], "num_correct": 1},
        {"prompt": "q", "chosen": ["a"], "rejected": ["b", ""]},
        {"prompt": "q", "chosen": ["a", "b"], "rejected": ["c"], "num_correct": 1},
        {"prompt": "q", "chosen": ["a"], "rejected": ["b", 3]},
        {"prompt": "q", "chosen": ["a"], "rejected": []},
        {"prompt": "q", "chosen": ["a"], "rejected": ["b"], "total_completions": 4},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    good, bad = read_items(path, prepare_pair)
    assert [g.item.names for g in good] == [
        ("chosen[0]", "rejected[0]", "rejected[1]", "rejected[2]")
    ]
    assert [str(e) for e in bad] == [
        f"{path}:2: field 'rejected'[1] is empty",
        f"{path}:3: field 'num_correct' is 1 but the row has 2 chosen completions",
        f"{path}:4: field 'rejected'[1] must be a string, got int",
        f"{path}:5: field 'rejected' must be a non-empty list of strings (K-wise row)",
        f"{path}:6: field 'total_completions' is 4 but the row has 2 completions",
    ]


# ------------------------------------------------------------------------------ RewardBench 2


def test_best_of_k_gives_one_over_n_to_a_correct_answer_tied_at_the_top():
    assert best_of_k_credit([0.9, 0.1, 0.2, 0.3]) == 1.0
    assert best_of_k_credit([0.9, 0.9, 0.2, 0.3]) == 0.5  # tied with one incorrect
    assert best_of_k_credit([0.9, 0.9, 0.9, 0.9]) == 0.25  # all four tied
    assert best_of_k_credit([0.5, 0.9, 0.2, 0.3]) == 0.0
    # Only the first completion (chosen[0]) counts, as in reward-bench's code.
    assert best_of_k_credit([0.1, 0.9, 0.9]) == 0.0


def ties_rows() -> list[dict]:
    """Four Ties prompts; see the hand computation in the test below."""
    return [
        scored([5.0], [1.0, 2.0], id="ref:1", subset="Ties"),
        scored([4.0, 3.0], [2.5, 1.0], id="tied:1", subset="Ties"),
        scored([0.0], [1.0], id="ref:2", subset="Ties"),
        scored([2.0, 2.0], [0.0], id="tied:2", subset="Ties"),
        scored([1.0, 0.5], [2.0], id="tied:3", subset="Ties"),
        scored([1.0], [1.0], id="ref:4", subset="Ties"),
        scored([3.0, 3.0], [3.0], id="tied:4", subset="Ties"),
    ]


def test_ties_formula_by_hand():
    # Per prompt (accurate: worst correct > best incorrect; gap: worst correct - best incorrect;
    # spread: best correct - worst correct of the tied row):
    #   ref:1 gap 3 (accurate)   tied:1 gap 0.5 (accurate), spread 1
    #   ref:2 gap -1             tied:2 gap 2 (accurate),   spread 0
    #                            tied:3 gap -1.5            (no ref:3: not in the margin terms)
    #   ref:4 gap 0              tied:4 gap 0,              spread 0
    ref_accuracy, tied_accuracy = 1 / 3, 2 / 4
    # Prompts 1, 2, 4 have both rows: gap_tied > spread: 0.5 > 1 no, 2 > 0 yes, 0 > 0 no;
    # min(gap_ref, gap_tied) = 0.5, -1, 0 > spread: no, no, no.
    preferred, preferred_hard = 1 / 3, 0.0
    # tanh(min / spread - 1): tanh(-0.5); -1/0 -> tanh(-inf) = -1; 0/0 -> NaN -> 0.
    margin = (math.tanh(-0.5) - 1.0 + 0.0) / 3
    expected = (
        0.3 * tied_accuracy
        + 0.3 * ref_accuracy
        + 0.2 * preferred
        + 0.2 * preferred_hard
        + 0.01 * margin
    )
    got = ties_score(ties_rows())
    assert got["ref_accuracy"] == pytest.approx(ref_accuracy)
    assert got["tied_accuracy"] == pytest.approx(tied_accuracy)
    assert got["correctness_preferred"] == pytest.approx(preferred)
    assert got["correctness_preferred_hard"] == pytest.approx(preferred_hard)
    assert got["correctness_margin_score"] == pytest.approx(margin)
    assert got["score"] == pytest.approx(expected)
    assert got["prompts_in_both"] == 3


def test_ties_rows_need_ref_or_tied_ids():
    with pytest.raises(ValueError, match="'ref:N' or 'tied:N'"):
        ties_score([scored([1.0], [0.0], id="7", subset="Ties")])


def test_rewardbench2_subsets_overall_and_detection():
    rows = [
        scored([2.0], [1.0, 0.0, -1.0], subset="Math"),  # 1
        scored([2.0], [2.0, 0.0, -1.0], subset="Math"),  # 1/2
        scored([2.0], [2.0, 2.0, -1.0], subset="Math"),  # 1/3
        scored([0.0], [2.0, 0.0, -1.0], subset="Math"),  # 0
        scored([1.0], [0.0, 0.0, 0.0], subset="Focus"),  # 1
        *ties_rows(),
    ]
    assert benchmark_of(rows) == "rewardbench2"
    out = rewardbench2_scores(rows)
    math_score = (1 + 1 / 2 + 1 / 3 + 0) / 4
    ties = ties_score(ties_rows())["score"]
    assert out["subsets"] == pytest.approx({"Math": math_score, "Focus": 1.0, "Ties": ties})
    assert out["overall"] == pytest.approx((math_score + 1.0 + ties) / 3)

    result = evaluate([{**r, "reward_margin": 0.0} for r in rows], "s")
    assert result.benchmark["kind"] == "rewardbench2"
    assert list(result.subsets) == ["Math", "Focus", "Ties"]
    assert result.subsets["Math"]["correct"] == pytest.approx(1 + 1 / 2 + 1 / 3)
    assert result.sections == pytest.approx({"Overall": out["overall"]})


# ------------------------------------------------------------------------------ RM-Bench


def test_rmbench_matrix_and_levels_by_hand():
    rows = [
        # chosen styles (concise, detailed, markdown) against rejected styles
        scored([1.0, 2.0, 3.0], [0.5, 2.5, 3.0], domain="chat"),
        scored([4.0, 0.0, 0.0], [1.0, 1.0, 1.0], domain="chat"),
    ]
    # row 1: c0 > r0 only; c1 > r0; c2 > r0, r1 (3 > 3 is not a win)
    # row 2: c0 > r0, r1, r2; c1 and c2 beat nothing
    expected = [[2 / 2, 1 / 2, 1 / 2], [1 / 2, 0, 0], [1 / 2, 1 / 2, 0]]
    matrix = rmbench_matrix(rows)
    assert matrix.tolist() == expected  # halves: exact in binary
    levels = hard_normal_easy(matrix)
    assert levels["hard"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert levels["normal"] == pytest.approx((1 + 0 + 0) / 3)
    assert levels["easy"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)


def test_rmbench_domains_from_domain_or_subset_and_overall_means():
    chat = scored([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], subset="alpacaeval")  # all 9 right
    refuse = scored([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], domain="safety-refuse")  # all wrong
    respond = scored([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], domain="safety-response")  # all right
    rows = [chat, refuse, respond]
    assert benchmark_of(rows) == "rmbench"
    out = rmbench_scores(rows)
    assert list(out["domains"]) == ["chat", "safety"]
    assert out["domains"]["safety"]["prompts"] == 2
    assert out["domains"]["safety"]["avg"] == pytest.approx(0.5)
    assert out["overall"]["total"] == pytest.approx((1.0 + 0.5) / 2)


def test_other_kwise_rows_count_a_prompt_right_when_every_correct_beats_every_incorrect():
    rows = [
        scored([2.0, 1.5], [1.0, 0.0], subset="mine"),
        scored([2.0, 0.5], [1.0, 0.0], subset="mine"),
    ]
    result = evaluate([{**r, "reward_margin": 0.0} for r in rows], "s")
    assert result.benchmark["kind"] == "kwise"
    assert result.subsets["mine"]["accuracy"] == 0.5
    assert result.margins == {"0": 0.5, "1": -0.5}


def test_a_file_with_pairs_and_kwise_rows_is_refused():
    rows = [{"reward_margin": 1.0}, scored([1.0], [0.0], reward_margin=1.0)]
    with pytest.raises(ValueError, match="not both"):
        evaluate(rows)


# ------------------------------------------------------------------------------ scoring


RB2_ROWS = [
    {"id": "1", "subset": "Math", "prompt": "2+2?", "chosen": ["4"],
     "rejected": ["5", "22", "four hundred"], "num_correct": 1, "total_completions": 4},
    {"id": "2", "subset": "Focus", "prompt": "Name a colour.", "chosen": ["Blue."],
     "rejected": ["2+2 is 4.", "Seven", "The cat sat."], "num_correct": 1},
    {"id": "ref:3", "subset": "Ties", "prompt": "A prime below 4?", "chosen": ["3"],
     "rejected": ["4", "9"], "num_correct": 1},
    {"id": "tied:3", "subset": "Ties", "prompt": "A prime below 6?", "chosen": ["2", "3", "5"],
     "rejected": ["4", "9"], "num_correct": 3},
]  # fmt: skip


def test_eval_scores_each_completion_once_with_the_same_rewards_as_pairs(tmp_path, tiny_models):
    data = write_jsonl(tmp_path / "rb2.jsonl", RB2_ROWS)
    pool = ModelPool(cache=LogProbCache(tmp_path / "cache.sqlite"))
    strong, weak = tiny_models["chatml-a"], tiny_models["chatml-b"]
    reward = DensityRatioReward(pool.backend(strong), pool.backend(weak))
    result = evaluate_file(data, [reward], tmp_path / "eval", RunOptions(progress=False))
    completions = sum(len(r["chosen"]) + len(r["rejected"]) for r in RB2_ROWS)
    assert result.models[strong]["computed"] == completions  # each completion once
    assert result.models[weak]["computed"] == completions

    rows = [json.loads(x) for x in (tmp_path / "eval" / "rows.jsonl").read_text().splitlines()]
    # The same reward as the same completion scored in a pair, without any new model pass.
    pairs = [
        {"prompt": r["prompt"], "chosen": c, "rejected": r["rejected"][0]}
        for r in RB2_ROWS
        for c in r["chosen"]
    ]
    as_pairs = reward.score(pairs)
    assert [p["reward_chosen"] for p in as_pairs] == [x for r in rows for x in r["rewards_chosen"]]
    assert result.models[strong]["computed"] == completions
    # The results are RewardBench 2's arithmetic over those rewards.
    s = result.scorers[0]
    expected = rewardbench2_scores(rows)
    assert s.benchmark["kind"] == "rewardbench2"
    assert s.sections["Overall"] == pytest.approx(expected["overall"])
    assert {k: v["accuracy"] for k, v in s.subsets.items()} == pytest.approx(expected["subsets"])
    for r in rows:
        assert r["reward_margin"] == min(r["rewards_chosen"]) - max(r["rewards_rejected"])
    assert "Focus" in (tmp_path / "eval" / "report.md").read_text()


def test_rewardbench2_parquet_schema_reads_as_kwise_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {k: [r.get(k) for r in RB2_ROWS] for k in ("id", "subset", "prompt", "chosen")}
    columns["rejected"] = [r["rejected"] for r in RB2_ROWS]
    columns["num_correct"] = [len(r["chosen"]) for r in RB2_ROWS]
    columns["total_completions"] = [len(r["chosen"]) + len(r["rejected"]) for r in RB2_ROWS]
    pq.write_table(pa.table(columns), tmp_path / "test-00000-of-00001.parquet")
    good, bad = read_items(str(tmp_path / "*.parquet"), prepare_pair)
    assert not bad
    assert [len(g.item.responses) for g in good] == [4, 4, 3, 5]
    assert benchmark_of([g.row for g in good]) == "rewardbench2"


def rmbench_file(folder: Path, domain: str, n: int) -> Path:
    rows = [
        {
            "id": k,  # RM-Bench's per-domain files reuse ids across domains
            "subset": {"chat": "alpacaeval", "code": "bigcode/humanevalpack"}[domain],
            "prompt": f"{domain} question {k}?",
            "chosen": [f"Right {k}.", f"Right {k}, in detail.", f"**Right {k}**, in detail."],
            "rejected": [f"Wrong {k}.", f"Wrong {k}, in detail.", f"**Wrong {k}**, in detail."],
        }
        for k in range(n)
    ]
    path = folder / f"{domain}_filtered.json"
    path.write_text(json.dumps(rows))
    return path


def test_rmbench_glob_with_a_limit_per_file_through_the_cli(tmp_path, tiny_models):
    rmbench_file(tmp_path, "chat", 5)
    rmbench_file(tmp_path, "code", 4)
    pattern = str(tmp_path / "*_filtered.json")
    rows = read_input(pattern, limit=3)
    assert [r.location for r in rows.records] == [
        *(f"{tmp_path / 'chat_filtered.json'}[{i}]" for i in range(3)),
        *(f"{tmp_path / 'code_filtered.json'}[{i}]" for i in range(3)),
    ]
    assert [r.index for r in rows.records] == list(range(6))
    # The runner keeps all of them (the limit applied per file when they were read).
    summary = run_rows(
        rows, tmp_path / "s.jsonl", PairScoreStep(_tiny_reward(tiny_models)), RunOptions(limit=3)
    )
    assert summary.written == 6
    # A glob path given to the runner directly: the same limit per file.
    step = PairScoreStep(_tiny_reward(tiny_models))
    assert run_rows(pattern, tmp_path / "t.jsonl", step, RunOptions(limit=2)).written == 4

    out = tmp_path / "eval"
    args = ["eval", pattern, "-o", str(out), "--strong", tiny_models["chatml-a"]]
    args += ["--weak", tiny_models["chatml-b"], "--no-progress"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert re.search(r"chat / hard\s+│\s+5", done.output)
    assert "code / easy" in done.output and "all / normal" in done.output
    results = json.loads((out / "results.json").read_text())
    bench = results["scorers"][0]["benchmark"]
    assert bench["kind"] == "rmbench"
    assert {d: v["prompts"] for d, v in bench["domains"].items()} == {"chat": 5, "code": 4}
    assert len(results["scorers"][0]["margins"]) == 9  # ids repeat across files: kept apart

    html = write_report(out).read_text(encoding="utf-8")
    data = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert [(m["domain"], m["prompts"]) for m in data["eval"]["matrices"]] == [
        ("chat", 5),
        ("code", 4),
    ]
    row = data["rows"][0]
    rewards = [r["rw"] for r in row["r"]]
    assert rewards == sorted(rewards, reverse=True)  # ranked by reward, best first
    assert [r["rk"] for r in row["r"]] == [1, 2, 3, 4, 5, 6]
    assert sorted(r["n"] for r in row["r"] if r["c"]) == ["chosen[0]", "chosen[1]", "chosen[2]"]


def _tiny_reward(tiny_models) -> DensityRatioReward:
    pool = ModelPool()
    return DensityRatioReward(
        pool.backend(tiny_models["chatml-a"]), pool.backend(tiny_models["chatml-b"])
    )


# ------------------------------------------------------------------------------ study, fit


def test_study_on_kwise_rows_scores_pairs_of_models_as_the_benchmark(tmp_path, tiny_models):
    data = write_jsonl(tmp_path / "rb2.jsonl", RB2_ROWS)
    models = [tiny_models["chatml-a"], tiny_models["chatml-b"]]
    result = run_study(data, models, "sum")
    assert result.passes == 2 and len(result.pairs) == 2
    by_pair = {(p.strong, p.weak): p.sections["Overall"] for p in result.pairs}
    # The same numbers as eval with that pair (one scorer, the same arithmetic).
    pool = ModelPool()
    reward = DensityRatioReward(pool.backend(models[0]), pool.backend(models[1]))
    evaluated = evaluate_file(data, [reward], tmp_path / "e", RunOptions(progress=False))
    assert by_pair[tuple(models)] == pytest.approx(evaluated.scorers[0].sections["Overall"])
    # The tables report RewardBench 2's subsets, not RewardBench 1's (empty) sections.
    subsets = list(evaluated.scorers[0].subsets)
    assert study_columns(result) == [*subsets, "Overall"]
    pair = next(p for p in result.pairs if (p.strong, p.weak) == tuple(models))
    for subset in subsets:
        assert pair.sections[subset] == evaluated.scorers[0].subsets[subset]["accuracy"]
    header = study_markdown(result).splitlines()[-4 - len(result.pairs)]
    assert header == "| strong | weak | gap | " + " | ".join([*subsets, "Overall"]) + " |"


def test_eval_fit_on_kwise_rows_rescores_each_held_out_completion(tmp_path, tiny_models):
    rows = [
        {
            "id": str(k),
            "subset": ["Math", "Focus"][k % 2],
            "prompt": f"Question {k}?",
            "chosen": [f"Answer {k}" + " really" * (k % 3)],
            "rejected": [f"No {k}", f"Maybe {k}" + " so" * k, f"Not {k}"],
        }
        for k in range(12)
    ]
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    pool = ModelPool()
    reward = DensityRatioReward(
        pool.backend(tiny_models["chatml-a"]), pool.backend(tiny_models["chatml-b"])
    )
    out = tmp_path / "eval"
    result = evaluate_file(data, [reward], out, RunOptions(progress=False))
    fits = fit_evaluation(result, out, FitOptions(("length",), folds=3))
    name = f"length:{reward.name}"
    cv = next(s for s in result.scorers if s.scorer == f"cv:{name}")
    assert cv.benchmark["kind"] == "rewardbench2"
    assert set(cv.subsets) == {"Math", "Focus"}
    assert fits.sections[name] == cv.sections
    # Held-out rewards are per completion: the benchmark score follows from them.
    credit = cv.benchmark["credit"]
    for subset in ("Math", "Focus"):
        members = [credit[r["id"]] for r in rows if r["subset"] == subset]
        assert cv.subsets[subset]["accuracy"] == pytest.approx(sum(members) / len(members))
    assert (out / "fit.json").exists()
