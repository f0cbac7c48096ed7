"""`annotate_file`: row shapes, formats, resume (also after SIGKILL) and bad input."""

from __future__ import annotations

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
from prefsmith.rewards.annotate import AnnotateOptions, annotate_file, rejected_path
from prefsmith.rewards.density_ratio import DensityRatioScorer, Reduction

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
def scorer(tiny_backends):
    return DensityRatioScorer(tiny_backends["chatml-a"], tiny_backends["chatml-b"], Reduction.SUM)


def quiet(**kw) -> AnnotateOptions:
    return AnnotateOptions(progress=False, **kw)


def test_all_row_shapes_get_rewards(tmp_path, scorer):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = annotate_file(src, tmp_path / "out.jsonl", scorer, quiet(save_token_logprobs=True))
    out = read_jsonl_rows(tmp_path / "out.jsonl")
    assert summary.scored == 4 and summary.responses == 9
    assert [r["id"] for r in out] == ["a", "b", "c", "d"]
    for r in out[:3]:
        assert r["reward_margin"] == pytest.approx(r["reward_chosen"] - r["reward_rejected"])
        assert r["scored_with"]["strong"] == scorer.strong.name
        detail = r["token_logprobs"]["chosen"]
        total = sum(detail["strong_logprobs"]) - sum(detail["weak_logprobs"])
        assert total == pytest.approx(r["reward_chosen"], abs=1e-4)
    assert len(out[3]["rewards"]) == 3
    # The implicit-prompt row scores exactly like the same pair written with a prompt.
    same = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    annotate_file(
        write_jsonl(tmp_path / "same.jsonl", [same]), tmp_path / "same-out.jsonl", scorer, quiet()
    )
    assert read_jsonl_rows(tmp_path / "same-out.jsonl")[0]["reward_chosen"] == pytest.approx(
        out[2]["reward_chosen"]
    )


def test_formats_parquet_json_and_hf_dataset(tmp_path, scorer):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairs = [ROWS[0], {"id": "e", "prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}]
    base = annotate_file(
        write_jsonl(tmp_path / "in.jsonl", pairs), tmp_path / "o.jsonl", scorer, quiet()
    )
    want = [r["reward_margin"] for r in read_jsonl_rows(base.output)]
    pq.write_table(pa.Table.from_pylist(pairs), tmp_path / "in.parquet")
    (tmp_path / "in.json").write_text(json.dumps(pairs))
    datasets.Dataset.from_list(pairs).save_to_disk(str(tmp_path / "in-ds"))
    for src in ("in.parquet", "in.json", "in-ds"):
        out = tmp_path / f"out-{src}.parquet"
        annotate_file(tmp_path / src, out, scorer, quiet())
        got = pq.read_table(out).to_pylist()
        assert [r["reward_margin"] for r in got] == pytest.approx(want, abs=1e-6)
    # Resuming into a finished Parquet output scores nothing again and keeps every row.
    again = annotate_file(tmp_path / "in.json", tmp_path / "out-in.json.parquet", scorer, quiet())
    assert again.scored == 0 and again.already_done == 2
    assert pq.read_table(tmp_path / "out-in.json.parquet").num_rows == 2


def test_resume_after_partial_write_never_duplicates_or_loses_rows(tmp_path, scorer):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    full = annotate_file(src, tmp_path / "full.jsonl", scorer, quiet(chunk_size=1))
    lines = full.output.read_text().splitlines(keepends=True)
    # An interrupted run: two complete rows and half of the third.
    (tmp_path / "cut.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    resumed = annotate_file(src, tmp_path / "cut.jsonl", scorer, quiet(chunk_size=1))
    assert resumed.already_done == 2 and resumed.scored == 2
    got = read_jsonl_rows(tmp_path / "cut.jsonl")
    assert sorted(r["source_index"] for r in got) == [0, 1, 2, 3]
    by_index = {r["source_index"]: r for r in read_jsonl_rows(full.output)}
    for r in got:
        assert r.get("reward_margin") == pytest.approx(
            by_index[r["source_index"]].get("reward_margin"), abs=1e-4
        )


def test_resume_after_sigkill(tmp_path, tiny_models):
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(40)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "prefsmith.cli.main",
        "score",
        str(src),
        "-o",
        str(out),
        "--strong",
        tiny_models["chatml-a"],
        "--weak",
        tiny_models["chatml-b"],
        "--chunk-size",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl_rows(out)) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl_rows(out))
    assert 3 <= done_before < 40, "the run should have been killed part-way"
    subprocess.run(cmd, check=True, capture_output=True)
    got = read_jsonl_rows(out)
    assert sorted(r["source_index"] for r in got) == list(range(40))


BAD = [
    '{"prompt": "ok", "chosen": "yes", "rejected": "no"}',
    '{"prompt": "broken", "chosen": ',
    '{"prompt": "no rejected", "chosen": "yes"}',
    '{"prompt": "empty", "chosen": "   ", "rejected": "no"}',
    '{"prompt": "typed", "chosen": 3, "rejected": "no"}',
    '["not", "an", "object"]',
]


def test_bad_rows_raise_with_file_and_line(tmp_path, scorer):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(BAD) + "\n")
    with pytest.raises(RowError) as info:
        annotate_file(src, tmp_path / "out.jsonl", scorer, quiet())
    assert f"{src}:2" in str(info.value) and "not valid JSON" in str(info.value)
    assert "4 more bad rows" in str(info.value)
    assert not (tmp_path / "out.jsonl").exists(), "nothing is scored when a row is bad"


def test_bad_rows_skipped_go_to_side_file_once(tmp_path, scorer):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(BAD) + "\n")
    out = tmp_path / "out.jsonl"
    first = annotate_file(src, out, scorer, quiet(on_error="skip"))
    assert first.scored == 1 and first.rejected == 5
    reasons = {r["location"]: r["reason"] for r in read_jsonl_rows(rejected_path(out))}
    assert "missing field 'rejected'" in reasons[f"{src}:3"]
    assert "field 'chosen' is empty" in reasons[f"{src}:4"]
    assert "must be a string, got int" in reasons[f"{src}:5"]
    assert "must be a JSON object" in reasons[f"{src}:6"]
    second = annotate_file(src, out, scorer, quiet(on_error="skip"))
    assert second.scored == 0 and second.rejected == 0
    assert len(read_jsonl_rows(rejected_path(out))) == 5
