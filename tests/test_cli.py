"""The `prefsmith` command line on tiny models."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import read_jsonl_rows

runner = CliRunner()


def test_score_prints_table_and_writes_rows(tmp_path, tiny_models):
    from conftest import TINY_SET

    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "score",
            str(TINY_SET),
            "-o",
            str(out),
            "--strong",
            tiny_models["chatml-a"],
            "--weak",
            tiny_models["plain-c"],
            "--no-progress",
            "--reduction",
            "mean-char",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Overall" in result.output and "Reasoning" in result.output
    rows = read_jsonl_rows(out)
    assert len(rows) == 24 and all(r["scored_with"]["reduction"] == "mean-char" for r in rows)
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert settings["step"] == "score"
    assert settings["settings"]["reward"]["shared_tokenizer"] is False


def test_score_refuses_token_mean_across_tokenizers(tmp_path, tiny_models):
    from conftest import TINY_SET

    result = runner.invoke(
        app,
        [
            "score",
            str(TINY_SET),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--strong",
            tiny_models["chatml-a"],
            "--weak",
            tiny_models["plain-c"],
            "--reduction",
            "mean",
        ],
    )
    assert result.exit_code == 2
    assert "mean-char" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_score_reports_bad_row_before_loading_models(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "p", "chosen": "c"}\n')
    result = runner.invoke(
        app, ["score", str(src), "--strong", "no/such-model", "--weak", "/nonexistent.gguf"]
    )
    assert result.exit_code == 2
    assert f"{src}:1" in result.output and "missing field 'rejected'" in result.output


def test_unknown_model_fails_fast_with_advice(tmp_path):
    src = tmp_path / "ok.jsonl"
    src.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    result = runner.invoke(
        app, ["score", str(src), "--strong", "someorg/not-cached-model", "--weak", "gemma3-270m"]
    )
    assert result.exit_code == 2
    assert "not in the local Hugging Face cache" in result.output.replace("\n", " ")


def test_models_list_shows_packaged_models():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "smollm2-135m-instruct" in result.output and "gemma3-270m" in result.output


def test_score_shows_no_transformers_progress(tmp_path, tiny_models, transformers_defaults, capfd):
    """The CLI shows its own progress only: not transformers' "Loading weights" bars."""
    from conftest import TINY_SET

    capfd.readouterr()
    result = runner.invoke(
        app,
        [
            "score",
            str(TINY_SET),
            "-o",
            str(tmp_path / "out.jsonl"),
            "--strong",
            tiny_models["chatml-a"],
            "--weak",
            tiny_models["chatml-b"],
            "--limit",
            "2",
        ],
    )
    out, err = capfd.readouterr()
    assert result.exit_code == 0, result.output
    for text in (result.output, out, err):
        assert "Loading weights" not in text and "it/s]" not in text
    assert "score: 2 rows processed" in " ".join(result.output.split())


def test_cli_reads_the_input_once(tmp_path, tiny_models, monkeypatch):
    """The rows checked before any model loads are the rows the runner processes."""
    import prefsmith.data.runner as runner_module

    real, calls = runner_module.iter_records, []
    monkeypatch.setattr(runner_module, "iter_records", lambda p: calls.append(p) or real(p))
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "Say hi."}\n{"prompt": "Say bye."}\n')
    args = ["sample", str(src), "-o", str(tmp_path / "out.jsonl"), "-m", tiny_models["chatml-a"]]
    result = runner.invoke(app, [*args, "-n", "1", "--max-new-tokens", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert calls == [src] and len(read_jsonl_rows(tmp_path / "out.jsonl")) == 2


def test_score_with_the_strong_rendering_for_both_models(tmp_path, tiny_models):
    from conftest import TINY_SET

    strong, weak = tiny_models["chatml-a"], tiny_models["plain-c"]
    margins = {}
    for rendering in ("own", "same-text"):
        out = tmp_path / f"{rendering}.jsonl"
        args = ["score", str(TINY_SET), "-o", str(out), "--strong", strong, "--weak", weak]
        extra = ["--limit", "4", "--no-progress", "--no-report", "--rendering", rendering]
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        rows = read_jsonl_rows(out)
        assert all(r["scored_with"]["rendering"] == rendering for r in rows)
        settings = json.loads((tmp_path / f"{rendering}.jsonl.settings.json").read_text())
        assert settings["settings"]["reward"]["rendering"] == rendering
        margins[rendering] = [r["reward_margin"] for r in rows]
    assert rows[0]["scored_with"]["scorer"].endswith(":sum+same-text")
    assert rows[0]["scored_with"]["weak_template"] == rows[0]["scored_with"]["strong_template"]
    assert margins["own"] != margins["same-text"]
