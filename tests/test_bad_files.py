"""Every reader of a user's file names a broken one: file, line (and column) and what is wrong.

Through the CLI each ends in one ``error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import (
    BadFileError,
    iter_records,
    load_json_file,
    load_yaml_file,
    read_jsonl_rows,
    read_text_file,
)

runner = CliRunner()

BROKEN_YAML = "recipe: [unclosed\n"
BROKEN_JSON = '{"a": 1,\n "b": }\n'
ROW = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows_file(tmp_path: Path) -> Path:
    return write(tmp_path / "ok.jsonl", json.dumps(ROW) + "\n")


def at(path: Path, rest: str) -> str:
    """A regular expression for a message that starts with ``path`` then ``rest`` (a regex)."""
    return f"^{re.escape(str(path))}{rest}"


def one_line_error(args: list[str], *expected: str) -> str:
    """Run the CLI; it must exit 2 with one ``error:`` line holding ``expected``."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- the shared helpers


def test_helpers_name_file_line_and_column(tmp_path):
    with pytest.raises(BadFileError) as err:
        load_yaml_file(write(tmp_path / "a.yaml", BROKEN_YAML))
    assert str(err.value).startswith(f"{tmp_path / 'a.yaml'}:2:1: not valid YAML: expected ',' or")
    assert "flow sequence at line 1, column 9" in str(err.value) and "\n" not in str(err.value)
    assert (err.value.line, err.value.column) == (2, 1)
    with pytest.raises(BadFileError, match=r"b\.json:2:7: not valid JSON: Expecting value$"):
        load_json_file(write(tmp_path / "b.json", BROKEN_JSON))
    with pytest.raises(BadFileError, match=r"c\.txt:2:3: not UTF-8 text: byte 0xff$"):
        read_text_file(write(tmp_path / "c.txt", b"fine\nok\xff\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_text_file(tmp_path / "missing.yaml")
    assert isinstance(BadFileError("x", "y"), ValueError)  # the CLI's user errors


# ---------------------------------------------------------------- recipes


def test_recipe_with_broken_yaml(tmp_path):
    from prefsmith.recipes import load_recipe

    path = write(tmp_path / "recipe.yaml", BROKEN_YAML)
    with pytest.raises(BadFileError, match=at(path, ":2:1: not valid YAML")):
        load_recipe(path)
    one_line_error(["run", str(path)], f"{path}:2:1: not valid YAML")
    one_line_error(["run", str(path), "--check"], f"{path}:2:1:")


def test_recipe_giving_a_key_twice(tmp_path):
    # YAML itself keeps the last of two keys: a whole section would vanish without a word.
    from importlib.resources import files

    shipped = files("prefsmith.resources.recipes").joinpath("dr-sow.yaml").read_text()
    text = shipped.replace("engine:\n", "models:\n  weak: gemma3-270m\nengine:\n", 1)
    line = text.splitlines().index("models:", text.splitlines().index("models:") + 1) + 1
    path = write(tmp_path / "recipe.yaml", text)
    message = f"{path}:{line}:1: not valid YAML: key 'models' is given twice"
    one_line_error(["run", str(path), "--check"], message)


def test_recipe_override_that_is_not_yaml():
    result = runner.invoke(app, ["run", "dr-sow", "--set", "sample.sampling.n=[1", "--check"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--set sample.sampling.n=[1: not valid YAML" in result.output


def test_recipe_run_state_that_is_not_json(tmp_path):
    from prefsmith.recipes import load_recipe, run_recipe

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = write(run_dir / "state.json", '{"stages": {')
    with pytest.raises(BadFileError, match=at(state, ":1:13: not valid JSON")):
        run_recipe(load_recipe("dr-sow"), run_dir, progress=False, say=lambda _: None)
    one_line_error(["run", "dr-sow", "-o", str(run_dir)], f"{state}:1:13: not valid JSON")
    write(state, "[1]")
    one_line_error(["run", "dr-sow", "-o", str(run_dir)], f"{state}: not a recipe run's state")


# ---------------------------------------------------------------- domains, prompts, fits, configs


def test_domains_file_with_broken_yaml(tmp_path):
    from prefsmith.routing.domains import DomainsError, load_domains

    path = write(tmp_path / "domains.yaml", "domains:\n  - name: a\n    description: [x\n")
    with pytest.raises(DomainsError, match=at(path, ":4:1: not valid YAML")):
        load_domains(path)
    one_line_error(
        ["score", str(rows_file(tmp_path)), "--domains", str(path), "--router", "rules"],
        f"{path}:4:1: not valid YAML",
    )


def test_contrast_prompts_with_broken_yaml(tmp_path):
    from prefsmith.rewards.contrast import load_contrast_prompts

    path = write(tmp_path / "prompts.yaml", "positive: [x\n")
    with pytest.raises(BadFileError, match=at(path, ":2:1: not valid YAML")):
        load_contrast_prompts(path)
    args = ["score", str(rows_file(tmp_path)), "--scorer", "contrast:x", "--contrast-prompts"]
    one_line_error([*args, str(path)], f"{path}:2:1: not valid YAML")


def test_fit_file_that_is_not_json_or_not_a_fit(tmp_path):
    from prefsmith.rewards.fitted import load_fitted_model

    path = write(tmp_path / "fit.json", BROKEN_JSON)
    with pytest.raises(BadFileError, match=at(path, ":2:7: not valid JSON")):
        load_fitted_model(path)
    one_line_error(
        ["score", str(rows_file(tmp_path)), "--scorer", f"fitted:{path}"],
        f"{path}:2:7: not valid JSON",
    )
    write(path, "[1, 2]")
    with pytest.raises(ValueError, match=at(path, ": not a fit file")):
        load_fitted_model(path)
    write(path, '{"models": [{"name": "m"}]}')
    with pytest.raises(ValueError, match=r"fitted model 'm' is incomplete or malformed"):
        load_fitted_model(path)


def test_training_config_with_broken_yaml(tmp_path):
    from prefsmith.training.config import load_config

    path = write(tmp_path / "train.yaml", "max_steps: [1\n")
    with pytest.raises(BadFileError, match=at(path, ":2:1: not valid YAML")):
        load_config(path)
    data = str(rows_file(tmp_path))
    one_line_error(["train", data, "--config", str(path)], f"{path}:2:1: not valid YAML")
    one_line_error(["train", data, "--set", "max_steps=[1"], "option 'max_steps': not valid YAML")


def test_study_strengths_that_are_not_json(tmp_path):
    from prefsmith.evaluation.study import load_strengths

    path = write(tmp_path / "strength.json", BROKEN_JSON)
    with pytest.raises(BadFileError, match=at(path, ":2:7: not valid JSON")):
        load_strengths(path)
    args = ["study", str(rows_file(tmp_path)), "--model", "a", "--model", "b", "--strength"]
    one_line_error([*args, str(path)], f"{path}:2:7: not valid JSON")
    write(path, '{"a": "high"}')
    one_line_error([*args, str(path)], f"{path}: expected a JSON object of model name: number")


# ---------------------------------------------------------------- relabel and rmboost resources


def test_templates_that_are_not_utf8(tmp_path):
    from prefsmith.relabel.pairs import load_template

    path = write(tmp_path / "goal.txt", b"Aim for {goal} \xff.\n")
    with pytest.raises(BadFileError, match=at(path, ":1:16: not UTF-8 text: byte 0xff$")):
        load_template(path)
    prompts = write(tmp_path / "prompts.jsonl", '{"prompt": "hi"}\n')
    one_line_error(["rlaif", str(prompts), "--judge-prompt", str(path)], f"{path}:1:16: not UTF-8")
    one_line_error(
        ["relabel", str(rows_file(tmp_path)), "--template", str(path)], f"{path}:1:16: not UTF-8"
    )


def test_rmboost_aspects_line_without_a_colon(tmp_path):
    import shutil

    from prefsmith.generation.rmboost import default_templates_dir, load_templates

    folder = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), folder)
    aspects = write(folder / "aspects.txt", "helpfulness: helps\nno colon here\n")
    with pytest.raises(BadFileError, match=at(aspects, ":2: expected 'name: description'$")):
        load_templates(folder)
    prompts = write(tmp_path / "prompts.jsonl", '{"prompt": "hi"}\n')
    one_line_error(["rmboost", str(prompts), "--templates", str(folder)], f"{aspects}:2:")


# ---------------------------------------------------------------- data readers


def test_row_files_json_parquet_gzip(tmp_path):
    path = write(tmp_path / "rows.json", BROKEN_JSON)
    with pytest.raises(BadFileError, match=at(path, ":2:7: not valid JSON")):
        list(iter_records(path))
    one_line_error(["score", str(path)], f"{path}:2:7: not valid JSON")

    parquet = write(tmp_path / "rows.parquet", b"not parquet at all")
    with pytest.raises(BadFileError, match=at(parquet, ": not a readable Parquet file")):
        list(iter_records(parquet))
    one_line_error(["score", str(parquet)], f"{parquet}: not a readable Parquet file")

    whole = gzip.compress((json.dumps(ROW) + "\n").encode())
    assert [r.value for r in iter_records(write(tmp_path / "rows.jsonl.gz", whole))] == [ROW]
    cut = write(tmp_path / "cut.jsonl.gz", whole[:15])
    with pytest.raises(BadFileError, match=at(cut, ": cannot be read")):
        list(iter_records(cut))


def test_jsonl_lines_that_are_not_json_or_not_utf8(tmp_path):
    path = write(
        tmp_path / "rows.jsonl",
        json.dumps(ROW).encode() + b'\n{"prompt": \n' + b'{"prompt": "caf\xe9"}\n',
    )
    records = list(iter_records(path))
    assert [r.location for r in records] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert records[0].value == ROW
    assert records[1].error == "not valid JSON at column 12: Expecting value"
    assert records[2].error == "not UTF-8 text at column 16: byte 0xe9"
    one_line_error(["score", str(path)], f"{path}:2: not valid JSON at column 12")


def test_read_jsonl_rows_names_a_broken_complete_line(tmp_path):
    path = write(tmp_path / "out.jsonl", json.dumps(ROW) + "\n{broken\n" + '{"partial": ')
    with pytest.raises(BadFileError, match=at(path, ":2:2: not valid JSON")):
        read_jsonl_rows(path)
    write(path, json.dumps(ROW) + "\n" + '{"partial": ')  # a killed writer's last line
    assert read_jsonl_rows(path) == [ROW]


# ---------------------------------------------------------------- the runner's own files


@pytest.fixture
def scored(tmp_path, tiny_backends):
    """A finished score run's output (with its settings and checkpoint files)."""
    from prefsmith.data.runner import RunOptions, run_rows
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward

    reward = DensityRatioReward(tiny_backends["chatml-a"], tiny_backends["chatml-b"])
    src, out = rows_file(tmp_path), tmp_path / "out.jsonl"

    def run() -> None:
        run_rows(src, out, ScoreStep(reward), RunOptions(progress=False))

    run()
    return out, run


def test_checkpoint_and_settings_files_that_are_not_json(scored):
    from prefsmith.data.runner import RunSettingsError, progress_path, settings_path

    out, run = scored
    progress = write(progress_path(out), '{"last_key": 0,')
    with pytest.raises(RunSettingsError) as err:
        run()
    assert str(err.value).startswith(f"{progress}:1:16: not valid JSON")
    assert "delete it" in str(err.value)
    write(progress, "[]")
    with pytest.raises(RunSettingsError, match=at(progress, ": not a checkpoint; delete it")):
        run()
    progress.unlink()
    settings = write(settings_path(out), "{\n  oops\n}")
    with pytest.raises(BadFileError, match=at(settings, ":2:3: not valid JSON")):
        run()


def test_score_cli_resuming_with_a_broken_checkpoint(tmp_path, tiny_models):
    from prefsmith.data.runner import progress_path

    src, out = rows_file(tmp_path), tmp_path / "out.jsonl"
    models = ["--strong", tiny_models["chatml-a"], "--weak", tiny_models["chatml-b"]]
    args = ["score", str(src), "-o", str(out), *models, "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    progress = write(progress_path(out), "{")
    one_line_error(args, f"{progress}:1:2: not valid JSON")


# ---------------------------------------------------------------- report


def broken_second_line(tmp_path: Path) -> Path:
    row = {**ROW, "reward_chosen": 1.0, "reward_rejected": -1.0, "reward_margin": 2.0}
    return write(tmp_path / "scored.jsonl", json.dumps(row) + "\n{not json\n")


def test_report_refuses_a_broken_line_by_default(tmp_path):
    from prefsmith.report import write_report

    source = broken_second_line(tmp_path)
    with pytest.raises(ValueError, match=at(source, ":2: not valid JSON at column 2")):
        write_report(source, on_error="raise")
    line = one_line_error(["report", str(source)], f"{source}:2: not valid JSON at column 2")
    assert "--on-error skip" in line
    assert not (tmp_path / "scored.jsonl.report.html").exists()


def test_report_skip_names_the_line_on_the_terminal_and_in_the_page(tmp_path):
    from prefsmith.report.load import load_run

    source, page = broken_second_line(tmp_path), tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(source), "-o", str(page), "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == str(page)
    assert lines[0].startswith("warning: 1 row of the source could not be parsed, not shown:")
    assert f"{source}:2: not valid JSON at column 2" in lines[0]
    assert f"{source}:2: not valid JSON at column 2" in page.read_text(encoding="utf-8")
    run = load_run(source)
    assert len(run.rows) == 1 and run.skipped_lines == 1


def test_report_of_broken_json_and_eval_files(tmp_path):
    from prefsmith.report.load import load_run

    path = write(tmp_path / "rows.json", BROKEN_JSON)
    one_line_error(["report", str(path)], f"{path}:2:7: not valid JSON")
    folder = tmp_path / "eval"
    folder.mkdir()
    results = write(folder / "results.json", '{"scorers": [')
    one_line_error(["report", str(folder)], f"{results}:1:14: not valid JSON")
    source = write(tmp_path / "s.jsonl", json.dumps(ROW) + "\n")
    side = write(tmp_path / "s.jsonl.settings.json", "{\n")
    settings = load_run(source).settings["s.jsonl.settings.json"]
    assert settings["error"].startswith(f"{side}:2:1: not valid JSON")
