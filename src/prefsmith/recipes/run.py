"""Run a recipe in a run folder: stage by stage, resumable, with one summary.

Run folder (``RUN_DIR``):

* ``recipe.yaml``: the recipe as run (after ``--set`` overrides);
* ``<stage>.jsonl`` (+ the row runner's side files) for sample, pairs, rmboost, score and
  relabel; ``<stage>/`` for train (its ``final/`` is the model), judge and eval;
* ``state.json``: per stage, the settings it ran with (its config, engine, run options and
  the identity of its inputs: an earlier stage's key or a file's SHA-256), whether it finished,
  and its result;
* ``summary.md`` and ``summary.json``: what each stage kept and dropped, and why, with times.

Resume: a finished stage whose settings (inputs included) are unchanged is skipped; an
unfinished one resumes (row stages row by row through the row runner's checkpoint, ``train``
from its newest checkpoint, ``judge`` from its cached answers). A stage whose settings changed
is re-run from scratch (its old output is removed) and says which setting changed; since every
stage's settings include its inputs' keys, the stages that read it re-run too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefsmith.data.io import load_json_file
from prefsmith.data.runner import settings_difference, side_files
from prefsmith.recipes.load import load_recipe
from prefsmith.recipes.schema import (
    RUN_FIELDS,
    Recipe,
    Stage,
    judges_with_labeler,
    model_refs,
    to_plain,
)
from prefsmith.stages import StageContext, StageResult, record, resolve_path, run_stage
from prefsmith.stages.tune import note_labeler

__all__ = ["RecipeResult", "RecipeRunError", "StageResult", "run_recipe"]

Say = Callable[[str], None]


class RecipeRunError(RuntimeError):
    """A stage produced nothing the next stage could use; the summary says why."""


@dataclass
class RecipeResult:
    """What :func:`run_recipe` did.

    Attributes:
        recipe: The recipe's name.
        run_dir: The run folder.
        stages: One result per stage, in order.
        seconds: Wall time of this invocation.
        summary_md: Path of ``summary.md``.
        summary_json: Path of ``summary.json``.
    """

    recipe: str
    run_dir: Path
    stages: list[StageResult]
    seconds: float
    summary_md: Path
    summary_json: Path

    def stage(self, name: str) -> StageResult:
        """The result of the stage called ``name``."""
        return next(s for s in self.stages if s.name == name)


# --------------------------------------------------------------------------------------------
# Stage settings and the state file


def file_key(path: Path) -> str:
    """SHA-256 of a file (of names, sizes and contents for a folder), for the record."""
    digest = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        digest.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with p.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def stage_settings(stage: Stage, keys: Mapping[str, str]) -> dict[str, Any]:
    """Everything that decides a stage's output: config, engine, run options, inputs."""
    run = {k: getattr(stage.run, k) for k in RUN_FIELDS}
    inputs: dict[str, str] = {}
    for ref in stage.needs:
        inputs[ref] = keys[ref]
    for key in ("input", "prompts"):
        text = getattr(stage.config, key, None)
        if isinstance(text, str) and text not in stage.needs:
            inputs[text] = file_key(resolve_path(text))
    return {
        "kind": stage.kind,
        "config": to_plain(stage.config),
        "engine": to_plain(stage.engine),
        "run": run,
        "inputs": inputs,
    }


def settings_key(settings: Mapping[str, Any]) -> str:
    """Short hash of a stage's settings."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _State:
    """``state.json``: per stage, its settings, key, status and result (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = load_json_file(path) if path.exists() else {}
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            raise ValueError(f"{path}: not a recipe run's state (a mapping with 'stages')")
        self.data: dict[str, Any] = data
        self.data.setdefault("stages", {})

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data["stages"].get(name)

    def put(self, name: str, entry: dict[str, Any]) -> None:
        self.data["stages"][name] = entry
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False))
        tmp.replace(self.path)


# --------------------------------------------------------------------------------------------
# Running


@dataclass
class _Run:
    """What the stages of one run share: the recipe and its folder."""

    recipe: Recipe
    run_dir: Path
    progress: bool

    def output(self, stage: Stage) -> Path:
        return self.run_dir / (f"{stage.name}.jsonl" if stage.writes_rows else stage.name)

    def source(self, text: str) -> Path:
        """An input: an earlier stage's output file, else a path or resource."""
        for stage in self.recipe.stages:
            if stage.name == text:
                return self.output(stage)
        return resolve_path(text)

    def model(self, text: str) -> str:
        """A model field with ``@stage`` replaced by that train stage's final model."""
        for ref in model_refs(text):
            text = text.replace(f"@{ref}", str(self.output(self.recipe.stage(ref)) / "final"))
        return text

    def context(self, stage: Stage) -> StageContext:
        """The stage's context: its output, engine and run options, names resolved here."""
        return StageContext(
            self.output(stage),
            stage.engine,
            replace(stage.run, progress=self.progress),
            resolve_input=self.source,
            resolve_model=self.model,
            audience="recipe",
        )


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run_recipe(
    recipe: Recipe | str | Path,
    run_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    until: str | None = None,
    progress: bool = True,
    say: Say | None = None,
) -> RecipeResult:
    """Run ``recipe`` (a :class:`Recipe`, a YAML file or a shipped recipe's name) in
    ``run_dir`` (default ``runs/<recipe name>``); resume what an earlier run left.

    Args:
        recipe: What to run.
        run_dir: The run folder.
        overrides: ``stage.key=value`` / ``section.key=value`` strings (see
            :func:`~prefsmith.recipes.load.apply_overrides`).
        until: Run the stages up to and including this one (the rest are left out).
        progress: Show the row runner's progress bars (and the trainer's).
        say: Where stage lines go (default: standard error).

    >>> import tempfile
    >>> from prefsmith.testing import tiny_model
    >>> recipe = {"models": {"policy": tiny_model(seed=0), "strong": tiny_model(seed=0),
    ...                      "weak": tiny_model(seed=1)},
    ...           "stages": [{"name": "sample", "kind": "sample", "run": {"limit": 2},
    ...                       "input": "prefsmith:prompts/mt-bench.jsonl",
    ...                       "sampling": {"n": 3, "max_new_tokens": 8}},
    ...                      {"name": "pairs", "kind": "pairs", "input": "sample"}]}
    >>> result = run_recipe(recipe, tempfile.mkdtemp(), progress=False, say=lambda s: None)
    >>> [(s.name, s.status, s.written) for s in result.stages]
    [('sample', 'ran', 2), ('pairs', 'ran', 2)]
    """
    say = say or _stderr
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, until=until)
    elif overrides or until:
        raise ValueError("give overrides and until with a recipe file or name, not a Recipe")
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.raw, sort_keys=False, allow_unicode=True)
    )
    state = _State(run_dir / "state.json")
    context = _Run(recipe, run_dir, progress)
    keys: dict[str, str] = {}
    results: list[StageResult] = []
    start = time.perf_counter()
    total = len(recipe.stages)
    failure: Exception | None = None
    for number, stage in enumerate(recipe.stages, start=1):
        settings = stage_settings(stage, keys)
        keys[stage.name] = key = settings_key(settings)
        label = f"[{number}/{total}] {stage.name} ({stage.kind})"
        previous = state.get(stage.name)
        output = context.output(stage)
        if previous and previous["key"] == key and previous["done"] and output.exists():
            result = StageResult(**previous["result"])
            result.status, result.reason = "skipped", ""
            say(f"{label}: done earlier with the same settings, skipped -> {_rel(output, run_dir)}")
            results.append(result)
            continue
        status, reason = "ran", ""
        if previous and previous["key"] == key:
            status = "resumed"
            say(f"{label}: resuming the interrupted run -> {_rel(output, run_dir)}")
        else:
            if previous:
                status, reason = "re-ran", _what_changed(previous["settings"], settings)
                say(f"{label}: {reason}; re-running it (and the stages that read it)")
            elif output.exists():
                status, reason = "re-ran", "output found without a record in state.json"
                say(f"{label}: {reason}; starting it over")
            else:
                say(f"{label}: running -> {_rel(output, run_dir)}")
            remove_output(output)
        state.put(stage.name, {"key": key, "settings": settings, "done": False, "result": None})
        result = run_stage(stage.config, context.context(stage))
        result.name, result.status, result.reason = stage.name, status, reason
        if stage.kind == "judge":
            labeler = judges_with_labeler(recipe).get(stage.name)
            note_labeler(result, labeler, f"{stage.name}.judge.scorer")
        result.output = _rel(output, run_dir)
        state.put(
            stage.name, {"key": key, "settings": settings, "done": True, "result": record(result)}
        )
        say(f"{label}: {describe(result)}")
        for warning in result.warnings:
            say(f"{label}: warning: {warning}")
        results.append(result)
        if stage.writes_rows and not result.written:
            failure = RecipeRunError(
                f"stage {stage.name} wrote no rows, so the stages after it cannot run"
                + (f": {result.warnings[0]}" if result.warnings else "")
            )
            break
    seconds = time.perf_counter() - start
    md, js = write_summary(recipe, run_dir, results, seconds)
    say(f"summary: {md}")
    if failure is not None:
        raise failure
    return RecipeResult(recipe.name, run_dir, results, seconds, md, js)


def _rel(path: Path, root: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(root))
    return str(path)


def _what_changed(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """``settings changed (a.b: 1 -> 2)`` or ``input sample changed``."""
    changed = settings_difference(
        {k: v for k, v in before.items() if k != "inputs"},
        {k: v for k, v in now.items() if k != "inputs"},
    )
    inputs = sorted(
        set(before.get("inputs", {})) ^ set(now.get("inputs", {}))
        | {k for k, v in now.get("inputs", {}).items() if before.get("inputs", {}).get(k) != v}
    )
    parts = []
    if changed:
        shown = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
        parts.append(f"settings changed ({shown})")
    if inputs:
        parts.append(f"input changed ({', '.join(inputs)})")
    return ", ".join(parts) or "settings changed"


def remove_output(output: Path) -> None:
    """Delete a stage's output (file and side files, or folder)."""
    if output.is_dir():
        shutil.rmtree(output)
    else:
        for path in [output, *side_files(output)]:
            path.unlink(missing_ok=True)


def describe(result: StageResult) -> str:
    """One line: rows in and out, drops, time, and the kind's headline result."""
    parts = []
    if result.inputs is not None:
        parts.append(f"{result.inputs} in")
    if result.written is not None:
        parts.append(f"{result.written} out")
    if result.dropped:
        parts.append(
            "dropped " + ", ".join(f"{n} {why}" for why, n in sorted(result.dropped.items()))
        )
    if result.rejected:
        parts.append(f"{result.rejected} rejected")
    headline = result.details.get("headline")
    if headline:
        parts.append(headline)
    parts.append(f"{result.seconds:.1f}s")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# The summary


def write_summary(
    recipe: Recipe, run_dir: Path, results: Sequence[StageResult], seconds: float
) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.json``; return their paths."""
    md, js = run_dir / "summary.md", run_dir / "summary.json"
    stage_seconds = sum(r.seconds for r in results)
    data = {
        "recipe": recipe.name,
        "run_dir": str(run_dir),
        "seconds_this_invocation": round(seconds, 2),
        "seconds_all_stages": round(stage_seconds, 2),
        "stages": [record(r) for r in results],
        "finished": len(results) == len(recipe.stages) and all(r.written != 0 for r in results),
    }
    js.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    md.write_text(summary_markdown(recipe, results, seconds))
    return md, js


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def summary_markdown(recipe: Recipe, results: Sequence[StageResult], seconds: float) -> str:
    """The Markdown summary: a table of stages, then each stage's details and warnings."""
    lines = [f"# Recipe `{recipe.name}`", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += [
        "| # | stage | kind | status | in | out | dropped | time (s) |",
        "|---:|---|---|---|---:|---:|---|---:|",
    ]
    for number, r in enumerate(results, start=1):
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(r.dropped.items())) or ""
        lines.append(
            f"| {number} | {r.name} | {r.kind} | {r.status} | {_cell(r.inputs)} |"
            f" {_cell(r.written)} | {dropped} | {r.seconds:.1f} |"
        )
    total = sum(r.seconds for r in results)
    lines += [
        "",
        f"Stage time {total:.0f} s (this invocation {seconds:.0f} s, loading included).",
        "",
    ]
    for r in results:
        notes = []
        if r.reason:
            notes.append(f"re-ran: {r.reason}")
        if r.details.get("headline"):
            notes.append(r.details["headline"])
        if r.counts:
            notes.append("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())))
        if "tokens_per_second" in r.details:
            notes.append(f"{r.details['tokens_per_second']} generated tokens/s")
        if r.rejected:
            notes.append(f"{r.rejected} bad input rows in {r.output}.rejected.jsonl")
        notes += [f"**warning:** {w}" for w in r.warnings]
        lines.append(f"- **{r.name}** → `{r.output}`")
        lines += [f"  - {n}" for n in notes]
    missing = len(recipe.stages) - len(results)
    if missing:
        lines += ["", f"{missing} stage(s) did not run (see the warning above)."]
    return "\n".join(lines) + "\n"
