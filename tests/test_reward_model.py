"""Reward models: ``train --method rm`` on a tiny random model, the ``rm:`` scorer, bad rows."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.data.rows import RowError
from prefsmith.data.runner import RunOptions
from prefsmith.evaluation.harness import evaluate_file
from prefsmith.rewards.density_ratio import DensityRatioReward
from prefsmith.rewards.reward_model import RewardModelReward, load_reward_model, rm_input_ids
from prefsmith.rewards.spec import ScorerSpec, parse_scorer
from prefsmith.testing import tiny_backend, tiny_model, tiny_reward_model, tiny_tokenizer
from prefsmith.training.config import TrainConfig
from prefsmith.training.reward_model import load_reward_pairs, tokenize_pairs
from prefsmith.training.trainer import train

GOOD, BAD = "Yes, of course: here is a clear answer.", "no"
PAIRS = [
    {"prompt": f"Question {i}?", "chosen": GOOD, "rejected": BAD, "reward_margin": 0.5}
    for i in range(6)
] + [
    {
        "prompt": [{"role": "user", "content": "Conversational?"}],
        "chosen": [{"role": "assistant", "content": GOOD}],
        "rejected": [{"role": "assistant", "content": BAD}],
        "reward_margin": 1.0,
    }
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """A full fine-tune of a tiny random classifier, 4 steps, with an eval split and margins."""
    folder = tmp_path_factory.mktemp("rm")
    data = write_jsonl(folder / "pairs.jsonl", PAIRS)
    config = TrainConfig(
        data=str(data),
        model=tiny_model(seed=0),
        method="rm",
        output_dir=str(folder / "run"),
        finetune="full",
        max_steps=4,
        batch_size=2,
        grad_accum=1,
        learning_rate=1e-3,
        save_steps=2,
        margin=True,
        eval_fraction=0.2,
    )
    return data, train(config, progress=False)


def test_reward_trainer_trains_saves_and_loads(trained):
    _, result = trained
    assert result.steps == 4
    assert result.log and all(math.isfinite(e["loss"]) for e in result.log)
    assert result.eval is not None and math.isfinite(result.eval["eval_loss"])
    assert (result.output_dir / "loss.png").exists()
    assert (result.output_dir / "log.jsonl").read_text().count("eval_loss") >= 1
    model, tokenizer = load_reward_model(str(result.final_model))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id


def test_rm_scorer_through_evaluate_file(trained, tmp_path):
    data, result = trained
    spec = ScorerSpec.parse(f"rm:{result.final_model}")
    assert spec.name == f"rm:{result.final_model}"
    rm = spec.build()
    ratio = DensityRatioReward(tiny_backend(seed=0), tiny_backend(seed=1))
    evaluated = evaluate_file(data, [rm, ratio], tmp_path / "eval", RunOptions(progress=False))
    names = [s.scorer for s in evaluated.scorers]
    assert names == [rm.name, ratio.name]
    # trained on these pairs with a margin: the reward model ranks them
    assert evaluated.scorers[0].subsets["all"]["accuracy"] > 0.5
    scored = [json.loads(line) for line in (tmp_path / "eval" / "rows.jsonl").open()]
    assert all(rm.name in row["margins"] for row in scored)


def test_rm_rewards_do_not_depend_on_batching():
    requests_rows = [
        {"prompt": "Hi", "chosen": "Hello there, friend!", "rejected": "Go."},
        {"prompt": "A much longer question " * 5, "chosen": "x", "rejected": "y z"},
    ]
    together = RewardModelReward(tiny_reward_model(seed=0)).score(requests_rows)
    alone = [RewardModelReward(tiny_reward_model(seed=0)).score([r])[0] for r in requests_rows]
    for a, b in zip(together, alone, strict=True):
        assert a["reward_chosen"] == pytest.approx(b["reward_chosen"], abs=1e-5)


def test_training_and_scoring_render_alike():
    tokenizer = tiny_tokenizer("chatml")
    pair = {"prompt": [{"role": "user", "content": "Q?"}], "chosen": "yes", "rejected": "no"}
    row = tokenize_pairs(tokenizer, [pair], 512)[0]
    assert row["chosen_ids"] == rm_input_ids(tokenizer, pair["prompt"], "yes")[0]


def test_rm_spec_errors():
    with pytest.raises(ValueError, match="give the reward model's folder"):
        ScorerSpec.parse("rm:")
    with pytest.raises(ValueError, match="not a sequence-classification"):
        parse_scorer(f"rm:{tiny_model(seed=0)}").score(
            [{"prompt": "a", "chosen": "b", "rejected": "c"}]
        )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "q", "chosen": "a"}, "missing field(s) rejected"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' is empty"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "assistant", "content": " "}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "the chosen response is empty",
        ),
        ({"prompt": "q", "chosen": "same", "rejected": "same "}, "same response"),
    ],
)
def test_bad_pairs_are_named_and_skipped(tmp_path, row, reason):
    data = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], row])
    with pytest.raises(RowError, match=rf"pairs.jsonl:2: .*{re.escape(reason)}"):
        load_reward_pairs(data)
    good, bad = load_reward_pairs(data, on_error="skip")
    assert len(good) == 1 and bad[0].location.endswith("pairs.jsonl:2")


def test_margin_needs_reward_margin(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(RowError, match="reward_margin"):
        load_reward_pairs(data, margin=True)
    assert "margin" not in load_reward_pairs(data)[0][0]


def test_train_cli_rm_skips_bad_rows_and_resumes(tmp_path):
    from prefsmith.cli.main import app

    data = write_jsonl(
        tmp_path / "pairs.jsonl", [*PAIRS[:4], {"prompt": "q", "chosen": "x", "rejected": "x"}]
    )
    out = tmp_path / "run"
    args = ["train", str(data), "--method", "rm", "--model", tiny_model(seed=0), "-o", str(out)]
    args += ["--finetune", "lora", "--batch-size", "2", "--grad-accum", "1", "--no-progress"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--max-steps", "2"])
    assert first.exit_code == 2 and "pairs.jsonl:5" in first.output  # raise by default
    done = runner.invoke(
        app, [*args, "--max-steps", "2", "--on-error", "skip", "--set", "save_steps=2"]
    )
    assert done.exit_code == 0, done.output
    assert "1 bad pairs set aside" in done.output
    assert json.loads((out / "rejected.jsonl").read_text())["location"].endswith(":5")
    more = runner.invoke(
        app, [*args, "--max-steps", "3", "--on-error", "skip", "--set", "save_steps=2", "--resume"]
    )
    assert more.exit_code == 0, more.output
    assert "resumed from" in more.output and "3 steps" in more.output
    assert (out / "final" / "config.json").exists() and (out / "adapter").is_dir()


def test_eval_cli_with_rm_scorer(trained, tmp_path):
    from prefsmith.cli.main import app

    data, result = trained
    ratio = f"density-ratio:{tiny_model(seed=0)},{tiny_model(seed=1)}:sum"
    args = ["eval", str(data), "-o", str(tmp_path / "eval"), "--scorer", f"rm:{result.final_model}"]
    args += ["--scorer", ratio, "--no-cache", "--no-report", "--no-progress"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    scorers = json.loads((tmp_path / "eval" / "results.json").read_text())["settings"]["scorers"]
    assert scorers == [f"rm:{result.final_model}", ratio]
