"""Independent judges and customization everywhere a density ratio scores (issue 22)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.runner import RunOptions
from prefsmith.evaluation.judge import JudgeOptions, judge
from prefsmith.generation.sampling import SamplingConfig
from prefsmith.models.backend import ScoreRequest
from prefsmith.recipes import load_recipe
from prefsmith.recipes.load import shipped_recipes
from prefsmith.recipes.schema import judges_with_labeler
from prefsmith.rewards.spec import parse_scorer
from prefsmith.stages import CustomizationSpec, StageContext, run_stage
from prefsmith.stages.generate import RMBoostStage, WestOfNStage

PROMPTS = [("p1", "What is 2+2?"), ("p2", "Name a colour.")]


def test_judge_takes_any_scorer_spec_and_its_rows_carry_its_name(tiny_models, tmp_path):
    a, b = tiny_models["chatml-a"], tiny_models["chatml-b"]
    options = JudgeOptions(scorer=f"logprob:{b}:mean", max_new_tokens=4, device="cpu")
    _, rows = judge(a, b, PROMPTS, tmp_path / "j", options)
    name = f"logprob:{b}:mean"
    assert all(r["judge"]["scorer"] == name for r in rows)
    assert json.loads((tmp_path / "j" / "summary.json").read_text())["judge"] == name
    # The rewards are that scorer's, computed alone.
    reward = parse_scorer(name)
    ask = [ScoreRequest(({"role": "user", "content": t},), r["tuned"]) for (_, t), r in
           zip(PROMPTS, rows, strict=True)]  # fmt: skip
    assert [s.reward for s in reward.score_requests(ask)] == [r["reward_tuned"] for r in rows]
    # Another judge re-judges the cached answers.
    again = JudgeOptions(scorer=f"density-ratio:{a},{b}:sum", max_new_tokens=4, device="cpu")
    _, rows2 = judge(a, b, PROMPTS, tmp_path / "j", again)
    assert rows2[0]["judge"]["scorer"] == f"density-ratio:{a},{b}:sum"
    assert [r["tuned"] for r in rows2] == [r["tuned"] for r in rows]


def test_judge_command_takes_scorer_and_customization(tiny_models, tmp_path):
    a, b = tiny_models["chatml-a"], tiny_models["chatml-b"]
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in PROMPTS))
    args = ["judge", a, "--baseline", b, "--prompts", str(src), "-o", str(tmp_path / "j")]
    args += ["--strong", a, "--weak", b, "--max-new-tokens", "4", "--device", "cpu"]
    cli = CliRunner().invoke(app, [*args, "--router", "rules", "--scorer", "density-ratio:sum"])
    assert cli.exit_code == 0, cli.output
    assert f"judged by density-ratio:{a},{b}:sum+cdr" in " ".join(cli.output.split())


def test_judge_command_defaults_to_another_scorer_and_finds_the_labeler_of_a_training_run(
    tiny_models, tmp_path
):
    import shutil

    a, b = tiny_models["chatml-a"], tiny_models["chatml-b"]
    # A training run as `prefsmith train` leaves it: the model, its config naming the data,
    # and the data's settings naming the scorer that labeled the pairs.
    run = tmp_path / "run"
    shutil.copytree(a, run / "train" / "final")
    (run / "train" / "train_config.yaml").write_text(f"data: {run / 'pairs.jsonl'}\n")
    labeler = f"density-ratio:{a},{b}:sum"
    settings = {"step": "pairs", "settings": {"reward": {"scorer": labeler}}}
    (run / "pairs.jsonl.settings.json").write_text(json.dumps(settings))
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in PROMPTS))
    args = ["judge", str(run / "train" / "final"), "--baseline", b, "--prompts", str(src)]
    args += ["--strong", a, "--weak", b, "--max-new-tokens", "4", "--device", "cpu"]
    out = tmp_path / "j"
    # By default the judge is the contrast scorer of the strong model: not the labeler.
    cli = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    text = " ".join(cli.output.split())
    assert f"judged by contrast:{a}:mean-char" in text
    assert "the judge did not label the training pairs" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_is_labeler"] is False and summary["labeler"]["scorer"] == labeler
    # Judged by the labeler (the cached answers re-judged), the run says so and warns.
    cli = CliRunner().invoke(app, [*args, "-o", str(out), "--scorer", "density-ratio:sum"])
    assert cli.exit_code == 0, cli.output
    text = " ".join(cli.output.split())
    assert f"the judge IS the labeler of the pairs in {run / 'pairs.jsonl'}" in text
    assert json.loads((out / "summary.json").read_text())["judge_is_labeler"] is True


def test_shipped_recipes_judge_with_a_scorer_that_did_not_label_their_pairs():
    for name in shipped_recipes():
        recipe = load_recipe(name, until="pairs" if name == "rmboost" else None)
        if not any(s.kind == "judge" for s in recipe.stages):
            continue
        assert judges_with_labeler(recipe) == {}, name
        assert recipe.stage("judge").config.judge.scorer.startswith("contrast:")
        # Asked for, the labeler as judge is detected (and said in the run's summary).
        same = load_recipe(name, ["judge.judge.scorer=null"])
        assert judges_with_labeler(same) == {"judge": "pairs"}
        # A customized labeler is another scorer than the plain density ratio.
        custom = load_recipe(name, ["judge.judge.scorer=null", "pairs.customization.router=rules"])
        assert judges_with_labeler(custom) == {}


def test_dr_sow_takes_the_customization_as_a_setting():
    recipe = load_recipe("dr-sow", ["pairs.customization.router=rules"])
    assert recipe.stage("pairs").config.customization == CustomizationSpec(router="rules")


@pytest.mark.parametrize("stage", ["west-of-n", "rmboost"])
def test_west_of_n_and_rmboost_score_with_the_customized_density_ratio(
    stage, tiny_models, tmp_path
):
    a, b = tiny_models["chatml-a"], tiny_models["chatml-b"]
    custom = CustomizationSpec(router="rules")
    common = {"model": a, "strong": a, "weak": b, "customization": custom}
    if stage == "west-of-n":
        config = WestOfNStage(sampling=SamplingConfig(n=2, max_new_tokens=4), **common)
    else:
        config = RMBoostStage(sampling=SamplingConfig(n=1, max_new_tokens=4), **common)
    out = tmp_path / f"{stage}.jsonl"
    result = run_stage(config, StageContext(out, run=RunOptions(limit=2, progress=False)))
    assert result.details["scorer"] == f"density-ratio:{a},{b}:sum+cdr"
    settings = json.loads(out.with_name(out.name + ".settings.json").read_text())
    assert "customization" in json.dumps(settings)
