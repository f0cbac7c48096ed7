"""The row runner with the score step: row shapes, formats, resume (also after SIGKILL), bad
input, settings checks, progress; the Python API against the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.rows import RowError
from prefsmith.data.runner import (
    Progress,
    RunOptions,
    RunSettingsError,
    process_rows,
    rejected_path,
    run_rows,
)
from prefsmith.data.step import Outcome, Step
from prefsmith.rewards.base import ScoreStep
from prefsmith.rewards.density_ratio import DensityRatioReward, Reduction

TINY_SET = Path(__file__).resolve().parents[1] / "src/prefsmith/resources/rewardbench-tiny.jsonl"

ROWS = [
    {"id": "a", "prompt": "What is 2+2?", "chosen": "4.", "rejected": "5, I think."},
    {
        "id": "b",
        "prompt": [{"role": "user", "content": "Greet me."}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    },
    {
        "id": "c",
        "chosen": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        "rejected": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Lyon."},
        ],
    },
    {"id": "d", "prompt": "Pick a colour.", "responses": ["Blue.", "Red, obviously.", "Green"]},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def reward(tiny_backends):
    return DensityRatioReward(tiny_backends["chatml-a"], tiny_backends["chatml-b"], Reduction.SUM)


def quiet(**kw) -> RunOptions:
    return RunOptions(progress=False, **kw)


def test_all_row_shapes_get_rewards(tmp_path, reward):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    step = ScoreStep(reward, save_token_logprobs=True)
    summary = run_rows(src, tmp_path / "out.jsonl", step, quiet())
    out = read_jsonl_rows(tmp_path / "out.jsonl")
    assert summary.processed == 4 and summary.written == 4
    assert [r["id"] for r in out] == ["a", "b", "c", "d"]
    assert [r["source_index"] for r in out] == [0, 1, 2, 3]
    tokenizer = reward.strong.tokenizer
    for r in out[:3]:
        assert r["reward_margin"] == pytest.approx(r["reward_chosen"] - r["reward_rejected"])
        assert r["scored_with"]["strong"] == reward.strong.name
        detail = r["token_logprobs"]["chosen"]
        total = sum(detail["strong_logprobs"]) - sum(detail["weak_logprobs"])
        assert total == pytest.approx(r["reward_chosen"], abs=1e-9)
        # Token texts are the decoded response as the template renders it.
        assert "".join(detail["strong_tokens"]) == tokenizer.decode(detail["strong_ids"])
    assert len(out[3]["rewards"]) == 3
    # The implicit-prompt row scores exactly like the same pair written with a prompt.
    same = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    got = process_rows([same], ScoreStep(reward))
    assert got[0]["reward_chosen"] == pytest.approx(out[2]["reward_chosen"])


def test_formats_parquet_json_and_hf_dataset(tmp_path, reward):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairs = [ROWS[0], {"id": "e", "prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}]
    base = run_rows(
        write_jsonl(tmp_path / "in.jsonl", pairs), tmp_path / "o.jsonl", ScoreStep(reward), quiet()
    )
    want = [r["reward_margin"] for r in read_jsonl_rows(base.output)]
    pq.write_table(pa.Table.from_pylist(pairs), tmp_path / "in.parquet")
    (tmp_path / "in.json").write_text(json.dumps(pairs))
    datasets.Dataset.from_list(pairs).save_to_disk(str(tmp_path / "in-ds"))
    for src in ("in.parquet", "in.json", "in-ds"):
        out = tmp_path / f"out-{src}.parquet"
        run_rows(tmp_path / src, out, ScoreStep(reward), quiet())
        got = pq.read_table(out).to_pylist()
        assert [r["reward_margin"] for r in got] == pytest.approx(want, abs=1e-6)
    # Resuming into a finished Parquet output scores nothing again and keeps every row.
    again = run_rows(
        tmp_path / "in.json", tmp_path / "out-in.json.parquet", ScoreStep(reward), quiet()
    )
    assert again.processed == 0 and again.already_done == 2
    assert pq.read_table(tmp_path / "out-in.json.parquet").num_rows == 2
    # A datasets.Dataset in memory comes back as a Dataset.
    scored = reward.score(datasets.Dataset.from_list(pairs))
    assert isinstance(scored, datasets.Dataset)
    assert scored["reward_margin"] == pytest.approx(want, abs=1e-6)


def test_resume_after_a_cut_write_is_byte_identical(tmp_path, reward):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    full = run_rows(src, tmp_path / "full.jsonl", ScoreStep(reward), quiet(chunk_size=1))
    # Simulate a run killed during its third chunk: two chunks checkpointed, then half a line.
    run_rows(src, tmp_path / "cut.jsonl", ScoreStep(reward), quiet(chunk_size=1, limit=2))
    lines = full.output.read_text().splitlines(keepends=True)
    with (tmp_path / "cut.jsonl").open("a") as handle:
        handle.write(lines[2][: len(lines[2]) // 2])
    resumed = run_rows(src, tmp_path / "cut.jsonl", ScoreStep(reward), quiet(chunk_size=1))
    assert resumed.already_done == 2 and resumed.processed == 2
    assert (tmp_path / "cut.jsonl").read_bytes() == full.output.read_bytes()


def test_resume_with_other_settings_is_refused_naming_the_setting(tmp_path, reward, tiny_backends):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    run_rows(src, out, ScoreStep(reward), quiet(limit=2))
    other = DensityRatioReward(tiny_backends["chatml-a"], tiny_backends["chatml-b"], "mean")
    with pytest.raises(RunSettingsError, match=r"settings\.reward\.reduction: \"sum\" -> \"mean\""):
        run_rows(src, out, ScoreStep(other), quiet())
    with pytest.raises(RunSettingsError, match="system_prompt"):
        run_rows(src, out, ScoreStep(reward, system_prompt="Be brief."), quiet())
    assert len(read_jsonl_rows(out)) == 2  # nothing was lost or added


def score_command(src: Path, out: Path, tiny_models, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "prefsmith.cli.main", "score", str(src), "-o", str(out),
        "--strong", tiny_models["chatml-a"], "--weak", tiny_models["chatml-b"],
        "--no-progress", *extra,
    ]  # fmt: skip


def kill_after(cmd: list[str], out: Path, rows: int, timeout: float = 180) -> None:
    """Start ``cmd`` and SIGKILL it once ``out`` holds at least ``rows`` complete rows."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(read_jsonl_rows(out)) >= rows:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("kill_at", [0, 7, 40])
def test_score_resumes_after_sigkill_to_identical_output(tmp_path, tiny_models, kill_at):
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(40)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    reference = tmp_path / "reference.jsonl"
    subprocess.run(
        score_command(src, reference, tiny_models, "--chunk-size", "3"),
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out.jsonl"
    cmd = score_command(src, out, tiny_models, "--chunk-size", "3")
    kill_after(cmd, out, kill_at)
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.read_bytes() == reference.read_bytes()


def test_sample_resumes_after_sigkill_to_identical_output(tmp_path, tiny_models):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"Tell me about {i}."} for i in range(24)]
    )

    def cmd(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "prefsmith.cli.main", "sample", str(prompts), "-o", str(out),
            "--model", tiny_models["chatml-a"], "-n", "2", "--max-new-tokens", "12",
            "--chunk-size", "1", "--no-progress",
        ]  # fmt: skip

    reference = tmp_path / "reference.jsonl"
    subprocess.run(cmd(reference), check=True, capture_output=True)
    out = tmp_path / "out.jsonl"
    kill_after(cmd(out), out, 3)
    assert len(read_jsonl_rows(out)) < 24, "the run should have been killed part-way"
    subprocess.run(cmd(out), check=True, capture_output=True)
    assert out.read_bytes() == reference.read_bytes()


def test_three_line_api_matches_the_cli(tmp_path, tiny_models):
    out = tmp_path / "cli.jsonl"
    subprocess.run(score_command(TINY_SET, out, tiny_models), check=True, capture_output=True)
    from prefsmith import DensityRatioReward as PublicReward

    rows = [json.loads(line) for line in TINY_SET.read_text().splitlines()]
    reward = PublicReward(strong=tiny_models["chatml-a"], weak=tiny_models["chatml-b"])
    scored = reward.score(rows)
    cli = read_jsonl_rows(out)
    assert [r["reward_chosen"] for r in scored] == [r["reward_chosen"] for r in cli]
    assert [r["reward_rejected"] for r in scored] == [r["reward_rejected"] for r in cli]


BAD = [
    '{"prompt": "ok", "chosen": "yes", "rejected": "no"}',
    '{"prompt": "broken", "chosen": ',
    '{"prompt": "no rejected", "chosen": "yes"}',
    '{"prompt": "empty", "chosen": "   ", "rejected": "no"}',
    '{"prompt": "typed", "chosen": 3, "rejected": "no"}',
    '["not", "an", "object"]',
]


def test_bad_rows_raise_with_file_and_line(tmp_path, reward):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(BAD) + "\n")
    with pytest.raises(RowError) as info:
        run_rows(src, tmp_path / "out.jsonl", ScoreStep(reward), quiet())
    assert f"{src}:2" in str(info.value) and "not valid JSON" in str(info.value)
    assert "4 more bad rows" in str(info.value) and "--on-error skip" in str(info.value)
    assert not (tmp_path / "out.jsonl").exists(), "nothing is scored when a row is bad"


def test_bad_rows_skipped_go_to_side_file_once(tmp_path, reward):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(BAD) + "\n")
    out = tmp_path / "out.jsonl"
    first = run_rows(src, out, ScoreStep(reward), quiet(on_error="skip"))
    assert first.processed == 1 and first.rejected == 5
    reasons = {r["location"]: r["reason"] for r in read_jsonl_rows(rejected_path(out))}
    assert "missing field 'rejected'" in reasons[f"{src}:3"]
    assert "field 'chosen' is empty" in reasons[f"{src}:4"]
    assert "must be a string, got int" in reasons[f"{src}:5"]
    assert "must be an object" in reasons[f"{src}:6"]
    second = run_rows(src, out, ScoreStep(reward), quiet(on_error="skip"))
    assert second.processed == 0 and second.rejected == 5
    assert len(read_jsonl_rows(rejected_path(out))) == 5


def test_progress_prints_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress(10, "score", stream=stream, every=0.0) as bar:
        bar.advance(4)
        bar.advance(6)
        bar.advance(0)  # the runner's top-up after the last chunk: no second final line
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("score: 4/10 rows") and "rows/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("score: 10/10 rows")
    assert len(lines) == 2


class Echo(Step):
    """A step whose prepare accepts any row: the runner checks its required columns."""

    name, input_columns, output_columns = "echo", "text (or words)", ("echo",)
    required_columns = (("text",), ("words",))

    def prepare(self, row):
        return row

    def process(self, batch, advance):
        return [Outcome([{"echo": True}]) for _ in batch]


def test_required_columns_are_checked_on_rows_prepare_accepts(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"other": 1}, {"words": "b"}])
    with pytest.raises(RowError, match=r"in\.jsonl:2: missing field 'text'"):
        run_rows(src, tmp_path / "out.jsonl", Echo(), quiet())
    summary = run_rows(src, tmp_path / "out.jsonl", Echo(), quiet(on_error="skip"))
    assert (summary.processed, summary.rejected) == (2, 1)


def test_score_step_declares_every_shape_it_reads(reward):
    """Each row shape ScoreStep accepts satisfies its required columns; a row with none names
    the columns of the closest shape."""
    step = ScoreStep(reward)
    for row in ROWS:
        step.prepare(row)
        assert step.missing_columns(row) == ""
    assert step.missing_columns({"prompt": "p", "chosen": "c"}) == "missing field 'rejected'"
