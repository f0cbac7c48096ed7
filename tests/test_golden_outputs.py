"""Every stage's output on tiny models, byte for byte, against the outputs recorded before the
stage layer was rebuilt (issue 21: behaviour unchanged).

The recorded files are in ``tests/fixtures/golden/``; the temporary folder of the tiny models
is written ``<models>`` in them. Floating-point results of the same code can differ in the last
digits between CPU instruction sets (AVX-512 here, AVX2 elsewhere), so the files are compared
byte for byte on a machine with the recording's instruction set, and value by value (numbers
to 1e-4 relative) on another; ``golden/machine.json`` says which set recorded them.

Regenerate after an intended change of output: ``PREFSMITH_REGENERATE_GOLDEN=1 pytest
tests/test_golden_outputs.py``, and say why in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.testing import tiny_model

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
REGENERATE = os.environ.get("PREFSMITH_REGENERATE_GOLDEN") == "1"
PROMPTS = "src/prefsmith/resources/prompts/mt-bench.jsonl"
PAIRS = "src/prefsmith/resources/rewardbench-tiny.jsonl"
ROOT = Path(__file__).parent.parent


def _isa() -> str:
    from prefsmith.models.hardware import cpu_facts

    flags = set(cpu_facts()["flags"])
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def _commands(out: Path) -> list[tuple[str, list[str]]]:
    """(output file name, arguments) of each command, in the order they run."""
    strong, weak = tiny_model(seed=0), tiny_model(seed=1)
    models = ["--strong", strong, "--weak", weak]
    quiet = ["--no-progress"]
    gen = ["--model", strong, "--max-new-tokens", "6", "--limit", "3", *quiet]
    return [
        ("score.jsonl", ["score", PAIRS, "--limit", "6", "--no-report", *models, *quiet]),
        ("sample.jsonl", ["sample", PROMPTS, "-n", "3", *gen]),
        ("pairs.jsonl", ["pairs", str(out / "sample.jsonl"), *models, *quiet]),
        ("rmboost.jsonl", ["rmboost", PROMPTS, "--check", *models, *gen]),
        ("relabel.jsonl", ["relabel", str(out / "score.jsonl"), *quiet]),
        ("rlaif.jsonl", ["rlaif", PROMPTS, "--judge", weak, *gen]),
        ("rlcd.jsonl", ["rlcd", PROMPTS, *gen]),
        ("west-of-n.jsonl", ["west-of-n", PROMPTS, "-n", "3", *models, *gen]),
    ]


def _recipe(out: Path) -> dict:
    return {
        "models": {"policy": tiny_model(seed=0), "strong": tiny_model(seed=0),
                   "weak": tiny_model(seed=1)},
        "stages": [
            {"name": "sample", "kind": "sample", "input": "prefsmith:prompts/mt-bench.jsonl",
             "run": {"limit": 3}, "sampling": {"n": 3, "max_new_tokens": 6}},
            {"name": "pairs", "kind": "pairs", "input": "sample"},
            {"name": "relabel", "kind": "relabel", "input": "pairs"},
        ],
    }  # fmt: skip


def _normalized(path: Path) -> str:
    root = str(Path(tiny_model(seed=0)).parent)
    return path.read_text().replace(root, "<models>")


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _outputs(tmp_path: Path) -> dict[str, str]:
    """Run every command and the recipe; their outputs, normalized."""
    from prefsmith.recipes import run_recipe

    runner = CliRunner()
    outputs = {}
    for name, args in _commands(tmp_path):
        result = runner.invoke(app, [*args, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, f"{args[0]}: {result.output}"
        outputs[name] = _normalized(tmp_path / name)
    run_dir = tmp_path / "recipe"
    run_recipe(_recipe(tmp_path), run_dir, progress=False, say=lambda _: None)
    for stage in ("sample", "pairs", "relabel"):
        outputs[f"recipe-{stage}.jsonl"] = _normalized(run_dir / f"{stage}.jsonl")
    return outputs


def test_outputs_equal_the_recorded_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    outputs = _outputs(tmp_path)
    if REGENERATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in outputs.items():
            (GOLDEN / name).write_text(text)
        (GOLDEN / "machine.json").write_text(json.dumps({"isa": _isa()}) + "\n")
        pytest.skip("golden outputs regenerated")
    recorded_isa = json.loads((GOLDEN / "machine.json").read_text())["isa"]
    assert sorted(outputs) == sorted(p.name for p in GOLDEN.glob("*.jsonl"))
    for name, text in outputs.items():
        expected = (GOLDEN / name).read_text()
        if recorded_isa == _isa():
            assert text == expected, f"{name} differs from tests/fixtures/golden/{name}"
        else:
            got = [json.loads(line) for line in text.splitlines()]
            want = [json.loads(line) for line in expected.splitlines()]
            assert _close(got, want), f"{name} differs from tests/fixtures/golden/{name}"
