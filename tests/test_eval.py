"""`prefsmith eval` and `prefsmith study` on tiny models, and the log-prob cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_SET
from prefsmith.cli.main import app
from prefsmith.data.io import iter_records
from prefsmith.data.runner import RunOptions
from prefsmith.evaluation.harness import evaluate_file
from prefsmith.evaluation.sections import section_scores, subset_results
from prefsmith.evaluation.study import run_study
from prefsmith.models.backend import ScoreRequest, load_backend
from prefsmith.models.cache import CachedBackend, LogProbCache
from prefsmith.models.pool import ModelPool
from prefsmith.rewards.spec import parse_scorer

runner = CliRunner()
SPECS = ["density-ratio:sum", "density-ratio:mean", "logprob:mean", "dpo:0.5"]


def test_eval_end_to_end_and_rerun_from_cache(tmp_path, tiny_models):
    cache = tmp_path / "cache.sqlite"
    args = [
        "eval",
        str(TINY_SET),
        "-o",
        str(tmp_path / "run1"),
        "--strong",
        tiny_models["chatml-a"],
        "--weak",
        tiny_models["chatml-b"],
        "--cache-path",
        str(cache),
    ]
    for spec in SPECS:
        args += ["--scorer", spec]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    for name in ("results.json", "report.md", "accuracy_by_section.png", "margins.png"):
        assert (tmp_path / "run1" / name).stat().st_size > 0
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    strong, weak = tiny_models["chatml-a"], tiny_models["chatml-b"]
    assert results["pairs"] == 24 and results["models"][strong]["computed"] == 48
    rows = [
        json.loads(line) for line in (tmp_path / "run1" / "rows.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 24 and len(rows[0]["margins"]) == len(SPECS)

    # Every number agrees with a direct recomputation from the per-pair margins.
    subsets = {str(r.value["id"]): r.value["subset"] for r in iter_records(TINY_SET)}
    for scorer in results["scorers"]:
        margins = scorer["margins"]
        recomputed = section_scores(subset_results((subsets[i], m) for i, m in margins.items()))
        assert scorer["sections"] == pytest.approx(recomputed)
    by_name = {s["scorer"]: s for s in results["scorers"]}
    dr = by_name[f"density-ratio:{strong},{weak}:sum"]["margins"]
    dpo = by_name[f"dpo:{strong},{weak}:0.5"]["margins"]
    assert all(dpo[k] == pytest.approx(0.5 * dr[k]) for k in dr)

    args[args.index("-o") + 1] = str(tmp_path / "run2")
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert again["models"][strong]["computed"] == 0 and again["models"][weak]["computed"] == 0
    for a, b in zip(results["scorers"], again["scorers"], strict=True):
        assert a["margins"] == b["margins"]  # bit-identical from the cache


def test_eval_refuses_token_mean_across_tokenizers(tmp_path, tiny_models):
    with pytest.raises(ValueError, match="mean-char"):
        parse_scorer(
            "density-ratio:mean", strong=tiny_models["chatml-a"], weak=tiny_models["plain-c"]
        )
    result = runner.invoke(
        app,
        [
            "eval",
            str(TINY_SET),
            "-o",
            str(tmp_path / "e"),
            "--strong",
            tiny_models["chatml-a"],
            "--weak",
            tiny_models["plain-c"],
            "--scorer",
            "density-ratio:mean",
        ],
    )
    assert result.exit_code == 2 and "mean-char" in result.output


def test_unknown_subset_is_reported_not_dropped(tmp_path, tiny_models):
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go.", "subset": "my-own"})
        + "\n"
    )
    reward = parse_scorer("logprob:sum", strong=tiny_models["chatml-a"])
    result = evaluate_file(src, [reward], tmp_path / "out", RunOptions(progress=False))
    assert list(result.scorers[0].subsets) == ["my-own"]
    assert result.scorers[0].subsets["my-own"]["section"] is None
    assert result.scorers[0].sections == {}


class _FailsOnSecondChunk:
    """Wraps a real backend; raises on its second call, as an interrupted run would stop."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def score(self, requests, on_progress=None):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.backend.score(requests, on_progress)


def test_cache_keeps_finished_chunks_after_interruption(tmp_path, tiny_models):
    backend = load_backend(tiny_models["chatml-a"])
    reqs = [ScoreRequest(({"role": "user", "content": f"Q{i}?"},), f"A{i}.") for i in range(6)]
    cache = LogProbCache(tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        CachedBackend(_FailsOnSecondChunk(backend), cache, chunk_size=2).score(reqs)
    assert len(LogProbCache(tmp_path / "c.sqlite")) == 2
    resumed = CachedBackend(backend, LogProbCache(tmp_path / "c.sqlite"), chunk_size=2)
    got = resumed.score(reqs)
    assert resumed.computed == 4 and resumed.hits == 2
    for a, b in zip(got, backend.score(reqs), strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_study_three_models_three_passes(tmp_path, tiny_models):
    cache = LogProbCache(tmp_path / "c.sqlite")
    names = [tiny_models[k] for k in ("chatml-a", "chatml-b", "plain-c")]
    result = run_study(TINY_SET, names, "sum", pool=ModelPool(cache=cache))
    assert len(result.pairs) == 6 and result.passes == 3
    assert len(cache) == 3 * 48  # one entry per model and response: M passes, not M^2
    assert result.spearman is not None and -1.0 <= result.spearman <= 1.0
    # A pair's accuracy equals an eval of that pair from the same cache.
    pool = ModelPool(cache=cache)
    direct = evaluate_file(
        TINY_SET,
        [parse_scorer("density-ratio:sum", strong=names[0], weak=names[2], pool=pool)],
        tmp_path / "direct",
        RunOptions(progress=False),
    )
    pair = next(p for p in result.pairs if (p.strong, p.weak) == (names[0], names[2]))
    assert pair.sections == pytest.approx(direct.scorers[0].sections)
    assert direct.models[names[0]]["computed"] == 0
    out = runner.invoke(
        app,
        [
            "study",
            str(TINY_SET),
            "--model",
            names[0],
            "--model",
            names[1],
            "-o",
            str(tmp_path / "s"),
            "--cache-path",
            str(tmp_path / "c.sqlite"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "s" / "study.png").exists() and (tmp_path / "s" / "study.md").exists()
    # The table fits the terminal: long model names wrap, the scores stay whole.
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and any("Overall" in line for line in lines)
    pair_cells = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert f"{names[0]}>{names[1]}" in pair_cells.replace(" ", "")  # whole names, not cut
    assert "Spearman correlation of gap and overall accuracy" in out.output


def test_eval_with_customization_reports_plain_and_cdr_side_by_side(tmp_path, tiny_models):
    out = tmp_path / "cdr"
    result = runner.invoke(
        app,
        [
            "eval",
            str(TINY_SET),
            "-o",
            str(out),
            "--strong",
            tiny_models["chatml-a"],
            "--weak",
            tiny_models["chatml-b"],
            "--router",
            "rules",
            "--cache-path",
            str(tmp_path / "c.sqlite"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    names = [s["scorer"] for s in results["scorers"]]
    plain_name = f"density-ratio:{tiny_models['chatml-a']},{tiny_models['chatml-b']}:sum"
    assert names == [plain_name, plain_name + "+cdr"]
    assert "#2: " + plain_name + "+cdr" in result.output  # full names, never cut
    plain, cdr = results["scorers"]
    assert plain["margins"].keys() == cdr["margins"].keys()
    assert plain["margins"] != cdr["margins"]  # the criteria changed the context
    routing = results["routing"]
    assert routing["router"] == "rules"
    assert sum(sum(row.values()) for row in routing["confusion"].values()) == 24
    assert "Router `rules`" in (out / "report.md").read_text()


def test_interrupted_eval_resumes_per_scorer(tmp_path, tiny_models):
    """Each scorer scores into its own resumable file: a rerun finds the work done."""
    args = ["eval", str(TINY_SET), "-o", str(tmp_path / "run"), "--strong", tiny_models["chatml-a"],
            "--weak", tiny_models["chatml-b"], "--no-cache", "--no-progress"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "run" / "results.json").read_text())
    assert second["timings"][first["scorers"][0]["scorer"]] < 1.0  # nothing scored again
    assert second["scorers"] == first["scorers"]


def test_eval_tables_split_many_scorers_to_fit_the_terminal():
    from types import SimpleNamespace

    from rich.console import Console

    from prefsmith.cli.show import eval_tables

    subsets = {
        "alpacaeval-easy": {"section": "Chat", "total": 4},
        "llmbar-adver-neighbor": {"section": "Chat Hard", "total": 4},
    }
    scorers = [
        SimpleNamespace(
            scorer=f"s{k}",
            subsets={name: {**info, "accuracy": k / 12} for name, info in subsets.items()},
            sections={"Chat": k / 12, "Chat Hard": k / 12, "Overall": k / 12},
        )
        for k in range(12)
    ]
    result = SimpleNamespace(pairs=8, scorers=scorers)
    tables = eval_tables(result, width=80)
    assert len(tables) > 1
    console = Console(width=80, record=True)
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert all(f"#{k}" in text for k in range(1, 13))  # every scorer shown, in percent
    assert "91.7" in text and "0.917" not in text
    assert len(eval_tables(result, width=300)) == 1


def test_eval_progress_names_which_scorer_runs(tmp_path, capsys):
    from prefsmith.rewards.density_ratio import DensityRatioReward, LogProbReward
    from prefsmith.testing import tiny_backend

    rewards = [
        DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1)),
        LogProbReward(tiny_backend(seed=0), "mean"),
    ]
    evaluate_file(TINY_SET, rewards, tmp_path / "eval", RunOptions(progress=True))
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("eval #1/2: 24/24 rows") for line in lines)
    assert any(line.startswith("eval #2/2: 24/24 rows") for line in lines)
    # Resuming reads the same outputs: the label is not a setting.
    again = evaluate_file(TINY_SET, rewards[:1], tmp_path / "eval", RunOptions(progress=False))
    assert again.pairs == 24
