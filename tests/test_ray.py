"""The row runner on Ray workers (``RunOptions(workers=N)``, ``--workers N``): a local Ray instance
with 2 workers on CPU gives the single-process output byte for byte (score, sample, pairs), a
worker that dies is retried without losing or duplicating rows, and a killed run resumes to the
same output. Skipped, with the reason, where ``prefsmith[ray]`` is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefsmith.data.io import read_jsonl_rows
from prefsmith.data.runner import RunOptions, run_rows
from prefsmith.data.step import Outcome, RowItem, Step

TINY_SET = Path(__file__).resolve().parents[1] / "src/prefsmith/resources/rewardbench-tiny.jsonl"


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'prefsmith[ray]'")
    # Workers cannot import this test module: its step classes travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def run_both(tmp_path: Path, rows: Any, make_step, chunk_size: int = 4) -> tuple[bytes, bytes]:
    """The output of one process and of 2 Ray workers, each from a fresh step."""
    outputs = []
    for workers in (0, 2):
        out = tmp_path / f"workers-{workers}.jsonl"
        options = RunOptions(chunk_size=chunk_size, workers=workers, progress=False)
        run_rows(rows, out, make_step(), options)
        outputs.append(out.read_bytes())
    return outputs[0], outputs[1]


def test_score_on_two_workers_equals_one_process(ray, tmp_path, tiny_models):
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward

    def step() -> ScoreStep:  # the cross-tokenizer case, like the default pair
        return ScoreStep(DensityRatioReward(tiny_models["chatml-a"], tiny_models["plain-c"]))

    local, distributed = run_both(tmp_path, TINY_SET, step)
    assert len(local.splitlines()) == 24
    assert distributed == local


def test_score_split_by_model_equals_one_process(ray, tmp_path, tiny_models):
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward

    step = ScoreStep(DensityRatioReward(tiny_models["chatml-a"], tiny_models["plain-c"]))
    local = tmp_path / "local.jsonl"
    run_rows(TINY_SET, local, step, RunOptions(chunk_size=4, progress=False))
    split = tmp_path / "split.jsonl"
    options = RunOptions(chunk_size=4, workers=2, cpus_per_worker=0.5, split_models=True)
    step = ScoreStep(DensityRatioReward(tiny_models["chatml-a"], tiny_models["plain-c"]))
    run_rows(TINY_SET, split, step, options)
    assert split.read_bytes() == local.read_bytes()


def test_a_model_stage_loads_only_its_model(tiny_models):
    """What the workers of a split run do: the strong model's worker begins the chunk and scores
    it, the weak model's worker scores it and ends it; each from the pickled step, each loading
    only its own model's weights."""
    import pickle

    from prefsmith.data.runner import read_items
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward

    def shipped_step() -> ScoreStep:  # as a Ray worker gets it
        step = ScoreStep(DensityRatioReward(tiny_models["chatml-a"], tiny_models["plain-c"]))
        return pickle.loads(pickle.dumps(step))

    reference = shipped_step()
    items, _ = read_items(TINY_SET, reference.prepare, limit=5)
    expected = reference.process(items, lambda rows: None)

    strong_worker, weak_worker = shipped_step(), shipped_step()
    assert strong_worker.model_stages() == ("strong", "weak")
    state = strong_worker.run_model("strong", strong_worker.begin(items))
    assert strong_worker.reward.strong.engine.is_loaded
    assert not strong_worker.reward.weak.engine.is_loaded
    state = pickle.loads(pickle.dumps(state))  # from one pool to the next
    outcomes = weak_worker.end(items, weak_worker.run_model("weak", state))
    assert not weak_worker.reward.strong.engine.is_loaded
    assert [o.rows for o in outcomes] == [o.rows for o in expected]


def test_sample_then_pairs_on_two_workers_equal_one_process(ray, tmp_path, tiny_models):
    from prefsmith.generation.pairs import PairsStep
    from prefsmith.generation.sampling import SampleStep, SamplingConfig
    from prefsmith.rewards.density_ratio import DensityRatioReward

    prompts = [{"prompt": f"Tell me about {topic}."} for topic in ("cats", "tea", "rain", "maps")]
    config = SamplingConfig(n=3, max_new_tokens=8, seed=7)
    local, distributed = run_both(
        tmp_path, prompts, lambda: SampleStep(tiny_models["chatml-a"], config), chunk_size=1
    )
    assert distributed == local
    samples = [json.loads(line) for line in local.splitlines()]
    assert [len(r["responses"]) for r in samples] == [3, 3, 3, 3]

    def pairs() -> PairsStep:
        return PairsStep(DensityRatioReward(tiny_models["chatml-a"], tiny_models["chatml-b"]))

    (tmp_path / "pairs").mkdir()
    local, distributed = run_both(tmp_path / "pairs", samples, pairs, chunk_size=1)
    assert local and distributed == local


class DieOnce(Step):
    """Kills its worker process the first time it meets row ``victim`` (a marker file remembers)."""

    name, input_columns, output_columns = "die-once", "n", ("square",)

    def __init__(self, marker: Path, victim: int) -> None:
        self.marker, self.victim = marker, victim

    def prepare(self, row: Mapping[str, Any]) -> int:
        return int(row["n"])

    def process(self, batch: Sequence[RowItem], advance) -> list[Outcome]:
        if any(b.key == self.victim for b in batch) and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker dies mid-chunk, as on a lost node
        return [Outcome([{"n": b.item, "square": b.item**2}]) for b in batch]


def test_a_worker_that_dies_is_retried_without_loss_or_duplicates(ray, tmp_path):
    marker = tmp_path / "died"
    out = tmp_path / "out.jsonl"
    rows = [{"n": n} for n in range(12)]
    summary = run_rows(
        rows, out, DieOnce(marker, victim=5), RunOptions(chunk_size=2, workers=2, progress=False)
    )
    assert marker.exists(), "the worker should have died once"
    assert int(marker.read_text()) != os.getpid()
    written = read_jsonl_rows(out)
    assert [r["source_index"] for r in written] == list(range(12))
    assert [r["square"] for r in written] == [n * n for n in range(12)]
    assert summary.written == 12


def test_fewer_chunks_than_workers_says_which_chunk_size_keeps_them_busy(ray, tmp_path, capfd):
    rows = [{"n": n} for n in range(6)]
    options = RunOptions(chunk_size=64, workers=2, progress=False)
    run_rows(rows, tmp_path / "out.jsonl", DieOnce(tmp_path / "never", victim=-1), options)
    assert (
        "6 rows make 1 chunk(s) of up to 64 for 2 workers; --chunk-size 3" in capfd.readouterr().err
    )
    assert len(read_jsonl_rows(tmp_path / "out.jsonl")) == 6


def score_command(src: Path, out: Path, tiny_models, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "prefsmith.cli.main", "score", str(src), "-o", str(out),
        "--strong", tiny_models["chatml-a"], "--weak", tiny_models["chatml-b"],
        "--chunk-size", "2", "--threads", "1", "--no-progress", "--no-report", *extra,
    ]  # fmt: skip


def test_a_killed_ray_run_resumes_to_the_single_process_output(ray, tmp_path, tiny_models):
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(30)
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = tmp_path / "reference.jsonl"
    subprocess.run(score_command(src, reference, tiny_models), check=True, capture_output=True)

    out = tmp_path / "out.jsonl"
    cmd = score_command(src, out, tiny_models, "--workers", "2")
    run = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and run.poll() is None and len(read_jsonl_rows(out)) < 4:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    run.wait()
    assert 0 < len(read_jsonl_rows(out)) < 30, "the run should have been killed part-way"
    resumed = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "already done" in resumed.stdout
    assert out.read_bytes() == reference.read_bytes()


def test_workers_without_ray_name_the_extra(monkeypatch, tmp_path):
    from prefsmith.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without the extra
    result = CliRunner().invoke(app, ["score", "--workers", "2", "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert 'pip install "prefsmith[ray]"' in " ".join(result.output.split())
    assert not (tmp_path / "o.jsonl").exists()
