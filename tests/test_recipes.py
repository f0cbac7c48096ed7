"""Recipes: the schema (unknown keys and bad references named by path), a tiny loop end to end,
stage-level skip and re-run after a changed setting, and a SIGKILLed `prefsmith run` resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from prefsmith.data.io import read_jsonl_rows
from prefsmith.recipes import (
    RecipeError,
    RecipeRunError,
    apply_overrides,
    load_recipe,
    parse_recipe,
    run_recipe,
    shipped_recipes,
)
from prefsmith.testing import tiny_model

PROMPTS = [{"id": f"p{i}", "prompt": f"Tell me one fact about the number {i}."} for i in range(6)]


def quiet(text: str) -> None:
    """Stage lines are not needed in tests."""


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    return {"policy": tiny_model(seed=0), "strong": tiny_model(seed=0), "weak": tiny_model(seed=1)}


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def tiny_recipe(models, prompts: Path, train: bool = False, chunk_size: int = 2) -> dict:
    """sample -> pairs -> relabel (-> a 2-step LoRA DPO -> judge) on tiny random models."""
    stages = [
        {
            "name": "sample",
            "kind": "sample",
            "input": str(prompts),
            "run": {"chunk_size": chunk_size},
            "sampling": {"n": 3, "max_new_tokens": 8},
        },
        {"name": "pairs", "kind": "pairs", "input": "sample", "pairs": {"min_margin": 0.0}},
        {"name": "relabel", "kind": "relabel", "input": "pairs"},
    ]
    if train:
        stages += [
            {
                "name": "train",
                "kind": "train",
                "input": "relabel",
                "train": {"method": "dpo", "max_steps": 2, "batch_size": 4, "grad_accum": 1,
                          "max_length": 96, "lora_r": 4, "save_steps": 1},
            },
            {
                "name": "judge",
                "kind": "judge",
                "tuned": "@train",
                "prompts": str(prompts),
                "limit": 3,
                "judge": {"goal": 10, "max_new_tokens": 4, "scorer": None},
            },
        ]  # fmt: skip
    return {"recipe": "tiny", "models": models, "engine": {"device": "cpu"}, "stages": stages}


# --------------------------------------------------------------------------------------------
# Schema


def test_unknown_keys_are_refused_with_their_path(models, prompts):
    recipe = tiny_recipe(models, prompts)
    recipe["stages"][1]["pairs"]["min_margn"] = 1
    recipe["stages"][0]["sampling"]["n"] = "four"
    recipe["stages"][2]["colour"] = "red"
    recipe["engine"]["gpus"] = 8
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe)
    problems = err.value.problems
    assert "stages[1].pairs.min_margn: unknown key" in "\n".join(problems)
    assert any(p.startswith("stages[0].sampling.n: expected int") for p in problems)
    assert any(p.startswith("stages[2].colour: unknown key") for p in problems)
    assert any(p.startswith("engine.gpus: unknown key") for p in problems)


def test_bad_stage_references_are_refused(models, prompts):
    recipe = tiny_recipe(models, prompts, train=True)
    recipe["stages"][1]["input"] = "relabel"  # a later stage
    recipe["stages"][2]["input"] = "pairz"  # nothing of that name
    recipe["stages"][4]["tuned"] = "@pairs"  # not a train stage
    recipe["stages"][3]["train"]["data"] = "x.jsonl"  # set by the runner
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe)
    text = str(err.value)
    assert "stages[1].input: stage 'relabel' runs later" in text
    assert "stages[2].input: no earlier stage and no file named 'pairz'" in text
    assert "stages[4].tuned: @pairs is a pairs stage" in text
    assert "stages[3].train.data: set by the recipe runner" in text


def test_values_checked_by_the_library_configs_name_the_stage(models, prompts):
    recipe = tiny_recipe(models, prompts)
    recipe["stages"][0]["sampling"]["top_p"] = 1.5
    recipe["stages"][1]["scorer"] = "ratio:sum"
    recipe["stages"][1]["pairs"]["min_probability"] = 1.5
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe)
    assert "stages[0].sampling: top_p must be in (0, 1]" in str(err.value)
    assert "stages[1].pairs: a probability threshold must be strictly between" in str(err.value)
    assert "stages[1].scorer: unknown scorer 'ratio'" in str(err.value)


def test_overrides_set_nested_keys_and_refuse_unknown_stages():
    data = {"stages": [{"name": "sample", "kind": "sample"}]}
    sets = ["sample.sampling.n=8", "engine.device=cuda", "sample.run.limit=null"]
    out = apply_overrides(data, sets)
    assert out["stages"][0]["sampling"] == {"n": 8} and out["engine"] == {"device": "cuda"}
    assert out["stages"][0]["run"] == {"limit": None}
    assert data == {"stages": [{"name": "sample", "kind": "sample"}]}  # not modified
    with pytest.raises(RecipeError, match="no stage or section 'smple'"):
        apply_overrides(data, ["smple.sampling.n=8"])


def test_shipped_recipes_validate_and_take_overrides():
    assert set(shipped_recipes()) == {"dr-sow", "reward-augmented", "rmboost", "cdr-eval"}
    dr_sow = load_recipe("dr-sow", ["sample.sampling.n=8", "engine.device=cpu"])
    assert dr_sow.stage("sample").config.sampling.n == 8
    assert dr_sow.stage("train").config.train.method == "simpo"
    assert dr_sow.stage("train").config.train.device == "cpu"
    assert dr_sow.stage("judge").needs == ("train",)
    assert [s.kind for s in load_recipe("reward-augmented").stages] == [
        "sample", "pairs", "relabel", "train", "judge"
    ]  # fmt: skip
    assert load_recipe("cdr-eval").stage("eval").config.customization.router == "embedding"
    # The RMBoost data stage validates on its own; the reward-model stages need `method: rm`.
    assert [s.kind for s in load_recipe("rmboost", until="pairs").stages] == ["rmboost"]
    try:
        rmboost = load_recipe("rmboost")
    except RecipeError as err:  # before the reward-model trainer: named, not a crash
        assert "stages[1].train.method" in str(err)
    else:
        assert rmboost.stage("rm").config.train.method == "rm"


def test_ray_workers_and_vllm_options_are_recipe_keys_and_workers_are_not_a_setting():
    from prefsmith.recipes.run import stage_settings

    overrides = ["run.workers=4", "run.gpus_per_worker=1", "run.split_models=true"]
    placed = load_recipe("dr-sow", [*overrides, "engine.vllm_options.tensor_parallel_size=2"])
    sample = placed.stage("sample")
    assert (sample.run.workers, sample.run.gpus_per_worker, sample.run.split_models) == (4, 1, True)
    assert sample.engine.vllm_options.tensor_parallel_size == 2
    plain = load_recipe("dr-sow", ["engine.vllm_options.tensor_parallel_size=2"])
    # Where the rows run does not change what they give: a finished stage is not re-run.
    assert stage_settings(sample, {}) == stage_settings(plain.stage("sample"), {})


# --------------------------------------------------------------------------------------------
# Running


def test_tiny_loop_end_to_end_then_skipped_on_rerun(models, prompts, tmp_path):
    run_dir = tmp_path / "run"
    result = run_recipe(tiny_recipe(models, prompts, train=True), run_dir, progress=False,
                        say=quiet)  # fmt: skip
    by_name = {s.name: s for s in result.stages}
    assert [s.status for s in result.stages] == ["ran"] * 5
    assert by_name["sample"].written == 6 and by_name["pairs"].written > 0
    ties = by_name["relabel"].counts.get("ties", 0)
    assert by_name["relabel"].written == 2 * (by_name["pairs"].written - ties)
    assert by_name["train"].details["steps"] == 2
    assert (run_dir / "train" / "final" / "config.json").exists()
    assert by_name["judge"].written == 3
    # The judge here is the density ratio that labeled the pairs: the run says so.
    assert by_name["judge"].details["judge_is_labeler"] == "pairs"
    assert by_name["judge"].details["judge"].startswith("density-ratio:")
    assert "the judge IS the labeler of stage pairs" in (run_dir / "summary.md").read_text()
    assert any("labeled the training pairs" in w for w in by_name["judge"].warnings)
    summary = json.loads((run_dir / "summary.json").read_text())
    names = ["sample", "pairs", "relabel", "train", "judge"]
    assert [s["name"] for s in summary["stages"]] == names
    assert "| 2 | pairs | pairs | ran |" in (run_dir / "summary.md").read_text()
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["recipe"] == "tiny"
    outputs = {p: p.read_bytes() for p in run_dir.glob("*.jsonl")}

    again = run_recipe(tiny_recipe(models, prompts, train=True), run_dir, progress=False,
                       say=quiet)  # fmt: skip
    assert [s.status for s in again.stages] == ["skipped"] * 5
    assert again.stage("train").details == by_name["train"].details
    assert {p: p.read_bytes() for p in run_dir.glob("*.jsonl")} == outputs


def test_changed_setting_reruns_that_stage_and_the_ones_after(models, prompts, tmp_path):
    run_dir = tmp_path / "run"
    run_recipe(tiny_recipe(models, prompts), run_dir, progress=False, say=quiet)
    sample_bytes = (run_dir / "sample.jsonl").read_bytes()
    lines: list[str] = []
    changed = tiny_recipe(models, prompts)
    changed["stages"][1]["pairs"]["strategy"] = "all-pairs"
    result = run_recipe(changed, run_dir, progress=False, say=lines.append)
    assert [s.status for s in result.stages] == ["skipped", "re-ran", "re-ran"]
    assert "pairs.strategy" in result.stage("pairs").reason
    assert "input changed (pairs)" in result.stage("relabel").reason
    assert any("pairs.strategy" in line and "re-running" in line for line in lines)
    assert (run_dir / "sample.jsonl").read_bytes() == sample_bytes
    assert result.stage("pairs").written >= 6  # all pairs: more than one per prompt
    assert "re-ran" in (run_dir / "summary.md").read_text()


def test_a_stage_that_writes_nothing_stops_the_run_with_advice(models, prompts, tmp_path):
    recipe = tiny_recipe(models, prompts)
    recipe["stages"][1]["pairs"]["min_margin"] = 1e9
    with pytest.raises(RecipeRunError, match=r"a lower pairs\.min_margin"):
        run_recipe(recipe, tmp_path / "run", progress=False, say=quiet)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "6 of 6 rows gave no output" in summary and "1 stage(s) did not run" in summary


def run_command(recipe: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "prefsmith.cli.main", "run", str(recipe), "-o", str(run_dir),
        "--no-progress",
    ]  # fmt: skip


def kill_after(cmd: list[str], out: Path, rows: int, timeout: float = 240) -> None:
    """Start ``cmd`` and SIGKILL it once ``out`` holds at least ``rows`` complete rows."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(read_jsonl_rows(out)) >= rows:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_run_resumes_to_the_same_outputs(models, prompts, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(models, prompts, chunk_size=1)))
    reference = tmp_path / "reference"
    subprocess.run(run_command(recipe, reference), check=True, capture_output=True)
    run_dir = tmp_path / "run"
    kill_after(run_command(recipe, run_dir), run_dir / "sample.jsonl", 2)
    assert len(read_jsonl_rows(run_dir / "sample.jsonl")) < 6, "killed part-way through sample"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["sample"]["done"] is False
    done = subprocess.run(run_command(recipe, run_dir), check=True, capture_output=True, text=True)
    assert "resuming the interrupted run" in done.stderr + done.stdout
    for name in ("sample.jsonl", "pairs.jsonl", "relabel.jsonl"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["resumed", "ran", "ran"]


def test_cli_check_validates_and_names_bad_keys():
    from typer.testing import CliRunner

    from prefsmith.cli.main import app

    runner = CliRunner()
    ok = runner.invoke(app, ["run", "dr-sow", "--check", "--set", "sample.sampling.n=2"])
    assert ok.exit_code == 0, ok.output
    assert "recipe dr-sow is valid" in ok.output and "n: 2" in ok.output
    bad = runner.invoke(app, ["run", "dr-sow", "--check", "--set", "pairs.pairs.min_margn=1"])
    assert bad.exit_code == 2
    assert "stages[1].pairs.min_margn: unknown key" in " ".join(bad.output.split())
    missing = runner.invoke(app, ["run", "no-such-recipe"])
    assert missing.exit_code == 2 and "shipped: cdr-eval" in " ".join(missing.output.split())
