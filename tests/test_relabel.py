"""Reward-augmented relabeling on hand-made rows: pairs, goals, score mapping, ties, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import RowError
from prefsmith.data.runner import RunOptions, RunSettingsError, process_rows, run_rows
from prefsmith.relabel.pairs import load_template
from prefsmith.relabel.scale import GoalScale, fit_scale
from prefsmith.relabel.step import RelabelOptions, RelabelStep

ROWS = [
    {"id": "a", "prompt": "2+2?", "chosen": "4", "rejected": "5", "r_c": 10.0, "r_r": 0.0},
    {"id": "b", "prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome",
     "r_c": 7.5, "r_r": 2.5},
    # The reward disagrees with the label: relabeling follows the rewards.
    {"id": "c", "prompt": "Say hi", "chosen": "bye", "rejected": "hi", "r_c": 5.0, "r_r": 8.0},
]  # fmt: skip


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def minmax_options(**kw) -> RelabelOptions:
    base = dict(chosen_reward="r_c", rejected_reward="r_r", scale=GoalScale("minmax", 1, 10, 1))
    return RelabelOptions(**{**base, **kw})


def relabel_file(source, output, options: RelabelOptions | None = None, **run):
    """Relabel ``source`` into ``output`` with the row runner (no progress display)."""
    return run_rows(source, output, RelabelStep(options), RunOptions(progress=False, **run))


def goal_mapping(output) -> dict:
    """The goal mapping recorded in the run's settings file."""
    settings = json.loads(output.with_name(output.name + ".settings.json").read_text())
    assert settings["step"] == "relabel"
    return settings["settings"]["goal_mapping"]


def test_two_pairs_per_input_with_swapped_order_and_right_goals(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = relabel_file(src, tmp_path / "out.jsonl", minmax_options())
    out = read_jsonl_rows(tmp_path / "out.jsonl")
    assert (summary.inputs, summary.written, summary.counts["ties"]) == (3, 6, 0)
    assert summary.dropped == {}
    assert [r["source_index"] for r in out] == [0, 0, 1, 1, 2, 2]
    template = load_template()
    # minmax over all six rewards: 0 -> 1, 10 -> 10, linear in between.
    expected = {"a": (10.0, 1.0), "b": (7.8, 3.2), "c": (5.5, 8.2)}
    for row_in in ROWS:
        mine = [r for r in out if r["id"] == row_in["id"]]
        assert len(mine) == 2
        first, second = mine
        goal_w, goal_l = expected[row_in["id"]]
        # goal r_w: y_w preferred; goal r_l: y_l preferred (the same two responses, swapped).
        assert (first["chosen"][0]["content"], first["rejected"][0]["content"]) == (
            row_in["chosen"],
            row_in["rejected"],
        )
        assert (second["chosen"][0]["content"], second["rejected"][0]["content"]) == (
            row_in["rejected"],
            row_in["chosen"],
        )
        assert (first["goal"], second["goal"]) == (goal_w, goal_l)
        assert (first["swapped"], second["swapped"]) == (False, True)
        assert (first["reward"], second["reward"]) == (row_in["r_c"], row_in["r_r"])
        for row, goal in ((first, goal_w), (second, goal_l)):
            system, user = row["prompt"]
            assert system["role"] == "system"
            text = f"{goal:g}" if goal != int(goal) else str(int(goal))
            assert system["content"] == template.format(goal=text, low="1", high="10")
            assert user == {"role": "user", "content": row_in["prompt"]}
    # whole goals print as integers
    assert "score of 10 on a scale" in out[0]["prompt"][0]["content"]
    mapping = goal_mapping(tmp_path / "out.jsonl")
    assert mapping["method"] == "minmax"
    assert mapping["params"] == {"min": 0.0, "max": 10.0}
    assert mapping["n_rewards"] == 6
    assert not (tmp_path / "out.jsonl.relabel.json").exists()
    # The same in memory: the mapping is fitted on the rows given.
    assert process_rows(ROWS, RelabelStep(minmax_options())) == out


def test_quantile_mapping_is_monotone_spans_the_scale_and_is_recorded(tmp_path):
    rewards = [-30.0, -2.0, -1.0, 0.0, 0.5, 1.0, 4.0, 250.0]
    fit = fit_scale(rewards, GoalScale("quantile", 1, 10, decimals=2))
    goals = [fit.map(r) for r in sorted(rewards)]
    assert goals == sorted(goals) and len(set(goals)) == len(goals)
    assert goals[0] == 1.0 and goals[-1] == 10.0
    # robust to the outlier: the middle rewards spread over the scale (minmax would squash them)
    assert fit.map(0.0) == pytest.approx(1 + 9 * 3 / 7, abs=0.1)
    squashed = fit_scale(rewards, GoalScale("minmax", 1, 10, decimals=2))
    assert squashed.map(4.0) - squashed.map(-2.0) < 1.5 < fit.map(4.0) - fit.map(-2.0)
    # outside the fitted range: clipped to the scale
    assert fit.map(1e6) == 10.0 and fit.map(-1e6) == 1.0
    pairs = zip(rewards[4:], rewards[:4], strict=True)
    rows = [
        {
            "prompt": f"q{i}",
            "chosen": "a",
            "rejected": "b",
            "reward_chosen": w,
            "reward_rejected": lo,
        }
        for i, (w, lo) in enumerate(pairs)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    relabel_file(src, tmp_path / "out.jsonl")  # defaults: quantile 1..10, reward_* columns
    mapping = goal_mapping(tmp_path / "out.jsonl")
    knots = mapping["params"]["knots"]
    assert mapping["method"] == "quantile" and knots[0] == -30.0
    assert knots[-1] == 250.0 and len(knots) == 101
    # The goals written are the default mapping (one decimal) fitted on these rewards.
    default = fit_scale(rewards, GoalScale())
    assert mapping == default.to_dict()
    for row in read_jsonl_rows(tmp_path / "out.jsonl"):
        assert row["goal"] == default.map(row["reward"])


def test_identity_scale_keeps_judge_scores_and_rejects_out_of_range(tmp_path):
    fit = fit_scale([3, 9], GoalScale("identity", 1, 10, decimals=0))
    assert (fit.map(3), fit.map(9)) == (3.0, 9.0)
    with pytest.raises(ValueError, match="outside the goal scale"):
        fit.map(11)


@pytest.mark.parametrize(("rule", "n_rows"), [("drop", 4), ("chosen", 5), ("both", 6)])
def test_tie_rule(tmp_path, rule, n_rows):
    rows = [*ROWS[:2], {"prompt": "tie", "chosen": "x", "rejected": "y", "r_c": 6.0, "r_r": 6.0}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = relabel_file(src, tmp_path / "out.jsonl", minmax_options(tie_rule=rule))
    out = read_jsonl_rows(tmp_path / "out.jsonl")
    assert summary.counts["ties"] == 1 and len(out) == n_rows
    assert summary.dropped == ({"tie (rule drop)": 1} if rule == "drop" else {})
    tied = [r for r in out if r["prompt"][1]["content"] == "tie"]
    if rule == "chosen":
        assert [r["chosen"][0]["content"] for r in tied] == ["x"]
    if rule == "both":
        assert {r["goal"] for r in tied} == {tied[0]["goal"]}


def test_ties_after_rounding_to_integer_goals(tmp_path):
    rows = [{**ROWS[0], "r_c": 10.0, "r_r": 0.0}, {**ROWS[1], "r_c": 5.3, "r_r": 5.2}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    options = minmax_options(scale=GoalScale("minmax", 1, 10, decimals=0))
    summary = relabel_file(src, tmp_path / "out.jsonl", options)
    assert (summary.counts["ties"], summary.written) == (1, 2)


def test_standard_format_and_existing_system_turn(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS[:1])
    relabel_file(src, tmp_path / "std.jsonl", minmax_options(output_format="standard"))
    first = read_jsonl_rows(tmp_path / "std.jsonl")[0]
    assert first["prompt"].endswith("\n\n2+2?") and "10" in first["prompt"]
    assert (first["chosen"], first["rejected"]) == ("4", "5")
    conv = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
    row = {"prompt": conv, "chosen": "4", "rejected": "5", "r_c": 1.0, "r_r": 0.0}
    src = write_jsonl(tmp_path / "sys.jsonl", [row])
    relabel_file(src, tmp_path / "sys-out.jsonl", minmax_options())
    out = read_jsonl_rows(tmp_path / "sys-out.jsonl")
    assert [len(r["prompt"]) for r in out] == [2, 2]
    assert out[0]["prompt"][0]["content"].endswith("\n\nBe terse.")


def test_bad_rows_name_file_and_line(tmp_path):
    rows = [*ROWS[:1], {"prompt": "q", "chosen": "a", "rejected": "b", "r_c": "high", "r_r": 1}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(RowError, match=r"in\.jsonl:2: reward column 'r_c' must be a finite"):
        relabel_file(src, tmp_path / "out.jsonl", minmax_options())
    with pytest.raises(RowError, match=r"in\.jsonl:1: missing reward column 'reward_chosen'"):
        relabel_file(src, tmp_path / "out.jsonl")
    template = tmp_path / "t.txt"
    template.write_text("no placeholder here")
    with pytest.raises(ValueError, match="must contain the placeholder"):
        relabel_file(src, tmp_path / "out.jsonl", minmax_options(template=str(template)))
    assert not (tmp_path / "out.jsonl").exists()
    # With on_error="skip" the bad row is set aside with its location and reason.
    summary = relabel_file(src, tmp_path / "out.jsonl", minmax_options(), on_error="skip")
    assert (summary.inputs, summary.rejected, summary.written) == (1, 1, 2)
    (rejected,) = read_jsonl_rows(tmp_path / "out.jsonl.rejected.jsonl")
    assert rejected["location"].endswith("in.jsonl:2") and rejected["source_index"] == 1
    assert "reward column 'r_c' must be a finite number" in rejected["reason"]
    # Resuming with another goal scale is refused, naming the setting.
    other = minmax_options(scale=GoalScale("minmax", 0, 5, 1))
    with pytest.raises(RunSettingsError, match=r"settings\.goal_mapping\.high: 10 -> 5"):
        relabel_file(src, tmp_path / "out.jsonl", other, on_error="skip")


def test_cli_relabel(tmp_path):
    from prefsmith.cli.main import app

    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    template = tmp_path / "goal.txt"
    template.write_text("Target: {goal}/{high}.")
    out = tmp_path / "out.parquet"
    runner = CliRunner()
    args = ["relabel", str(src), "-o", str(out), "--chosen-reward", "r_c"]
    args += ["--rejected-reward", "r_r", "--scale", "minmax", "--template", str(template)]
    result = runner.invoke(app, [*args, "--decimals", "0"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6
    assert rows[0]["prompt"][0]["content"] == "Target: 10/10."
    assert "0 ties (rule drop)" in " ".join(result.output.split())
    settings = json.loads((tmp_path / "out.parquet.settings.json").read_text())
    assert settings["settings"]["goal_mapping"]["decimals"] == 0
    assert not (tmp_path / "out.parquet.relabel.json").exists()
    bad = runner.invoke(app, ["relabel", str(src), "-o", str(out)])
    assert bad.exit_code == 2 and "in.jsonl:1" in bad.output
