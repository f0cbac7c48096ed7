"""The TRL reward function: rewards equal to `prefsmith score`, inside a real GRPOTrainer run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.data.io import iter_records
from prefsmith.integrations.trl import reward_function
from prefsmith.testing import tiny_model

runner = CliRunner()


def offline_scores(tmp_path, rows, scorer: str) -> list[list[float]]:
    """`prefsmith score --scorer SPEC` on ``rows``: each row's rewards."""
    source, output = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", str(source), "-o", str(output), "--scorer", scorer]
    result = runner.invoke(app, [*args, "--no-report", "--no-progress"])
    assert result.exit_code == 0, result.output
    return [r.value["rewards"] for r in iter_records(output)]


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    return tiny_model(seed=0), tiny_model(seed=1)


def test_standard_and_conversational_rewards_equal_prefsmith_score(tmp_path, pair) -> None:
    scorer = f"density-ratio:{pair[0]},{pair[1]}:mean"
    f = reward_function(scorer)
    assert f.__name__ == scorer
    prompts = ["Name a colour.", "Name a colour.", "2+2?"]
    completions = ["Blue.", "Red, I think.", "4"]
    standard = f(prompts=prompts, completions=completions, trainer_state=None)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    replies = [[{"role": "assistant", "content": c}] for c in completions]
    assert f(prompts=chats, completions=replies) == standard
    rows = [
        {"prompt": "Name a colour.", "responses": completions[:2]},
        {"prompt": "2+2?", "responses": completions[2:]},
    ]
    assert standard == [x for r in offline_scores(tmp_path, rows, scorer) for x in r]
    # A completion's reward does not depend on its neighbours or on the grouping.
    assert f(prompts=prompts[1:2], completions=completions[1:2]) == standard[1:2]
    assert len(set(standard)) == 3


def test_empty_completions_get_the_empty_reward(pair) -> None:
    f = reward_function("density-ratio", strong=pair[0], weak=pair[1])
    assert f(prompts=["Hi", "Hi"], completions=["  ", "Hello"])[0] is None
    g = reward_function(f.reward, empty_reward=-5.0)
    rewards = g(prompts=["Hi", "Hi"], completions=["", "Hello"])
    assert rewards[0] == -5.0 and rewards[1] == f(prompts=["Hi"], completions=["Hello"])[0]


def test_grpo_trainer_logs_the_rewards_prefsmith_score_gives(tmp_path, pair) -> None:
    """A few real GRPO steps on CPU: a tiny random policy, the density ratio of two tiny models."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    scorer = f"density-ratio:{pair[0]},{pair[1]}:sum"
    f = reward_function(scorer)
    prompts = ["Say hello.", "Name a fruit.", "Count to three.", "Pick a colour."]
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-4,
        logging_steps=1,
        log_completions=True,
        num_completions_to_print=0,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=tiny_model(seed=2),
        reward_funcs=f,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if f"rewards/{scorer}/mean" in h]
    assert len(logged) == 2
    # The completions of the last generation batch and the rewards TRL logged for them.
    table = trainer._logs
    logged_rewards = list(table["rewards"][scorer])
    completions, prompts_seen = list(table["completion"]), list(table["prompt"])
    assert len(logged_rewards) == len(completions) == 4
    kept = [i for i, c in enumerate(completions) if c.strip()]
    assert kept, "the policy produced only empty completions"
    rows = [{"prompt": prompts_seen[i], "responses": [completions[i]]} for i in kept]
    offline = [r[0] for r in offline_scores(tmp_path, rows, scorer)]
    # TRL keeps rewards in a float32 tensor: equal once rounded the same way.
    expected = np.asarray(offline, dtype=np.float32)
    assert np.array_equal(np.asarray([logged_rewards[i] for i in kept], np.float32), expected)
    assert logged[-1][f"rewards/{scorer}/mean"] == pytest.approx(
        float(np.nanmean(np.asarray(logged_rewards, np.float32))), rel=1e-5
    )


def test_the_docs_grpo_example_runs(tmp_path) -> None:
    """docs/examples/grpo_tiny.py, as docs/online-rl.md tells users to run it."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs/examples/grpo_tiny.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rewards/density-ratio:" in done.stdout
