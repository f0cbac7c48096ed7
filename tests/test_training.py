"""A tiny random model trains a few DPO and SimPO steps on CPU; checkpoints reload and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prefsmith.data.rows import RowError
from prefsmith.models.backend import ScoreRequest, load_backend
from prefsmith.relabel.pairs import load_template, relabel_pair, to_trl_row
from prefsmith.training.config import TrainConfig, load_config
from prefsmith.training.rows import load_preference_rows
from prefsmith.training.trainer import latest_checkpoint, train

FACTS = [
    ("What is 2+2?", "2+2 is 4.", "I refuse to answer that."),
    ("Name a primary colour.", "Red is a primary colour.", "No idea, sorry."),
    ("What is the capital of France?", "Paris.", "I cannot help with that."),
    ("Is ice cold?", "Yes, ice is cold.", "Whatever."),
]


@pytest.fixture(scope="module")
def relabeled(tmp_path_factory) -> Path:
    """Goal-conditioned pairs built by the relabel functions from hand-made scored pairs."""
    template = load_template()
    rows = []
    for prompt, good, bad in FACTS:
        context = [{"role": "user", "content": prompt}]
        for pair in relabel_pair(context, good, bad, 9.0, 2.0, template):
            rows.append(to_trl_row(pair))
    path = tmp_path_factory.mktemp("data") / "relabeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def margins(model: str, data: Path) -> np.ndarray:
    """log p(chosen) - log p(rejected) of every row under ``model`` (loaded from disk)."""
    backend = load_backend(model)
    rows = load_preference_rows(data)
    requests = []
    for row in rows:
        context = tuple(row["prompt"])
        requests += [ScoreRequest(context, row[k][0]["content"]) for k in ("chosen", "rejected")]
    totals = np.array([r.total for r in backend.score(requests)])
    return totals[0::2] - totals[1::2]


def weights(folder: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_changed(before: str, after: Path) -> None:
    a, b = weights(before), weights(after)
    assert a.keys() == b.keys()
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    assert changed, "no weight changed"


def test_simpo_full_finetuning_learns_and_reloads(tiny_models, relabeled, tmp_path):
    base = tiny_models["chatml-a"]
    config = TrainConfig(
        data=str(relabeled),
        model=base,
        method="simpo",
        finetune="full",
        output_dir=str(tmp_path / "simpo"),
        max_steps=4,
        batch_size=8,
        grad_accum=1,
        learning_rate=1e-4,
        warmup_ratio=0.0,
        save_steps=2,
        device="cpu",
        max_length=128,
    )
    result = train(config, progress=False)
    losses = [e["loss"] for e in result.log]
    assert result.steps == 4 and len(losses) == 4
    assert losses[-1] < losses[0]
    assert_changed(base, result.final_model)
    # The reloaded tuned model prefers the chosen responses more than the starting one.
    assert margins(str(result.final_model), relabeled).mean() > margins(base, relabeled).mean()
    assert (tmp_path / "simpo" / "loss.png").stat().st_size > 0
    assert latest_checkpoint(tmp_path / "simpo").endswith("checkpoint-4")


def test_cli_dpo_lora_from_yaml_with_overrides_and_resume(tiny_models, relabeled, tmp_path):
    from prefsmith.cli.main import app

    base = tiny_models["chatml-a"]
    out = tmp_path / "dpo"
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {relabeled}\nmodel: {base}\nmethod: simpo\nfinetune: lora\n"
        "batch_size: 8\ngrad_accum: 1\nlearning_rate: 1.0e-3\nwarmup_ratio: 0.0\n"
        "save_steps: 2\ndevice: cpu\nmax_length: 128\nlora_r: 8\n"
    )
    runner = CliRunner()
    common = ["train", "--config", str(config), "--method", "dpo", "-o", str(out)]
    first = runner.invoke(app, [*common, "--max-steps", "2", "--set", "lr_scheduler=constant"])
    assert first.exit_code == 0, first.output
    saved = load_config(out / "train_config.yaml")
    assert (saved.method, saved.lr_scheduler, saved.lora_r) == ("dpo", "constant", 8)
    assert latest_checkpoint(out).endswith("checkpoint-2")
    # Without --resume an existing run is not overwritten.
    again = runner.invoke(app, [*common, "--max-steps", "4"])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*common, "--max-steps", "4", "--resume", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and "4 steps" in resumed.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert log[-1]["loss"] < log[0]["loss"]
    assert_changed(base, out / "final")
    assert (out / "adapter" / "adapter_config.json").exists()
    assert margins(str(out / "final"), relabeled).mean() > margins(base, relabeled).mean()


def test_bad_training_rows_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "q", "chosen": "a"})
        + "\n"
    )
    with pytest.raises(RowError, match=r"bad\.jsonl:2: missing field\(s\) rejected"):
        load_preference_rows(bad)


def test_config_rejects_unknown_options(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1e-4\nlerning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown training option 'lerning_rate'"):
        load_config(config)
    config.write_text("learning_rate: 1e-4\nmethod: ppo\n")
    with pytest.raises(ValueError, match="method must be dpo or simpo"):
        load_config(config)
    assert load_config(sets=["learning_rate=1e-4"]).learning_rate == 1e-4


def test_sample_goal_conditions_on_the_relabel_template(tiny_models, tmp_path):
    from prefsmith.cli.main import app
    from prefsmith.relabel.pairs import goal_system_prompt

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    out = tmp_path / "s.jsonl"
    args = ["sample", str(prompts), "-o", str(out), "-m", tiny_models["chatml-a"], "-n", "1"]
    args += ["--max-new-tokens", "3", "--goal", "10", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    system = row["generated_with"]["system_prompt"]
    assert system == goal_system_prompt(10) and "score of 10 on a scale from 1" in system


def test_judge_counts_wins_from_density_ratio_rewards(tiny_models, tmp_path):
    from prefsmith.evaluation.judge import JudgeOptions, judge

    prompts = [("p1", "What is 2+2?"), ("p2", "Name a colour."), ("p3", "Hello!")]
    options = JudgeOptions(
        goal=10,
        strong=tiny_models["chatml-a"],
        weak=tiny_models["chatml-b"],
        max_new_tokens=4,
        device="cpu",
    )
    tuned, base = tiny_models["chatml-a"], tiny_models["chatml-b"]
    result, rows = judge(tuned, base, prompts, tmp_path / "j", options)
    assert result.n == 3 and [r["id"] for r in rows] == ["p1", "p2", "p3"]
    for r in rows:
        diff = r["reward_tuned"] - r["reward_baseline"]
        assert r["outcome"] == (0.5 if diff == 0 else float(diff > 0))
    assert result.rate == sum(r["outcome"] for r in rows) / 3
    assert 0.0 <= result.low <= result.rate <= result.high <= 1.0
    summary = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert summary["win_rate"]["wins"] == result.wins
    answers = [
        json.loads(x) for x in (tmp_path / "j" / "answers-tuned.jsonl").read_text().split("\n") if x
    ]
    assert [a["goal"] for a in answers] == [10, 10, 10]
    # A second call reuses the cached answers and judgements.
    again, _ = judge(tuned, base, prompts, tmp_path / "j", options)
    assert again == result
    # So does `prefsmith judge` with the same folder (-o/--output).
    from prefsmith.cli.main import app

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in prompts))
    args = ["judge", tuned, "--baseline", base, "--prompts", str(src), "-o", str(tmp_path / "j")]
    args += ["--goal", "10", "--strong", tuned, "--weak", base, "--max-new-tokens", "4"]
    cli = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    assert f"win rate {result.rate:.3f}" in " ".join(cli.output.split())


def test_default_judge_prompts_ship_with_the_package():
    """`prefsmith judge` needs no data beside the checkout: MT-Bench is a package resource."""
    from prefsmith.evaluation.judge import MT_BENCH, read_prompts

    prompts = read_prompts(MT_BENCH)
    assert len(prompts) == 80
    assert len({pid for pid, _ in prompts}) == 80
    assert all(pid.startswith("mt-bench/") and text.strip() for pid, text in prompts)
    assert read_prompts(MT_BENCH, limit=2, offset=78) == prompts[78:]
