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
import gc
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prefsmith.data.advice import drop_warning
from prefsmith.data.io import load_json_file
from prefsmith.data.runner import RunSummary, run_rows, settings_difference, side_files
from prefsmith.recipes.load import load_recipe
from prefsmith.recipes.schema import (
    RUN_FIELDS,
    CustomizationSpec,
    Recipe,
    Stage,
    model_refs,
    resolve_path,
    to_plain,
)

Say = Callable[[str], None]


class RecipeRunError(RuntimeError):
    """A stage produced nothing the next stage could use; the summary says why."""


@dataclass
class StageResult:
    """What one stage did (this run, or an earlier run when skipped).

    Attributes:
        name: The stage's name.
        kind: Its kind.
        status: ``ran``, ``resumed`` (finished an interrupted run), ``re-ran`` (its settings
            changed) or ``skipped`` (finished earlier with the same settings).
        reason: Why it re-ran (the changed settings), empty otherwise.
        output: Its output file or folder.
        inputs: Input rows (row stages, eval: pairs, judge: prompts, train: pairs).
        written: Output rows (row stages), or pairs evaluated / prompts judged.
        rejected: Bad input rows set aside (``run.on_error: skip``).
        dropped: Input rows that gave no output, by reason.
        counts: Step-specific counters (candidate statuses, tokens, ties, ...).
        seconds: Wall time of the work (of the run that did it, for a skipped stage).
        details: Kind-specific results (train: steps and loss; judge: win rate; eval: sections).
        warnings: Things to look at, with the recipe key that changes them.
    """

    name: str
    kind: str
    status: str = "ran"
    reason: str = ""
    output: str = ""
    inputs: int | None = None
    written: int | None = None
    rejected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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
class _Context:
    """What stages share in one run: the folder, model names, pools, how to report."""

    recipe: Recipe
    run_dir: Path
    progress: bool
    say: Say
    pools: dict[Any, Any] = field(default_factory=dict)

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

    def pool(self, stage: Stage, cache: bool = False) -> Any:
        from prefsmith.models.cache import LogProbCache
        from prefsmith.models.pool import ModelPool

        key = (stage.engine, cache)
        if key not in self.pools:
            self.pools[key] = ModelPool(stage.engine, LogProbCache() if cache else None)
        return self.pools[key]

    def reward(self, stage: Stage, spec: str, custom: CustomizationSpec | None = None) -> Any:
        from prefsmith.rewards.spec import parse_scorer

        models = self.recipe.models
        return parse_scorer(
            self.model(spec),
            strong=models.strong,
            weak=models.weak,
            pool=self.pool(stage, cache=getattr(stage.config, "cache", False)),
            customization=_customization(custom),
        )

    def run_options(self, stage: Stage) -> Any:
        return replace(stage.run, progress=self.progress)

    def release(self) -> None:
        """Free the models of the last stage (the next may need the memory)."""
        self.pools.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _customization(spec: CustomizationSpec | None) -> Any:
    if spec is None:
        return None
    from prefsmith.routing.customize import Customization

    domains = str(resolve_path(spec.domains)) if spec.domains else None
    return Customization(domains, spec.router, spec.exemplars)


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
    context = _Context(recipe, run_dir, progress, say)
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
        try:
            result = RUNNERS[stage.kind](context, stage)
        finally:
            context.release()
        result.status, result.reason = status, reason
        result.output = _rel(output, run_dir)
        state.put(
            stage.name, {"key": key, "settings": settings, "done": True, "result": asdict(result)}
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
# One runner per kind


def _from_rows(stage: Stage, summary: RunSummary) -> StageResult:
    warning = drop_warning(summary.inputs, summary.dropped, "recipe")
    result = StageResult(
        stage.name,
        stage.kind,
        inputs=summary.inputs,
        written=summary.written,
        rejected=summary.rejected,
        dropped=dict(summary.dropped),
        counts=dict(summary.counts),
        seconds=summary.seconds,
        warnings=[warning] if warning else [],
    )
    if not summary.written and not warning:
        result.warnings.append("no output rows")
    return result


def _tokens_per_second(result: StageResult, summary: RunSummary) -> None:
    tokens = summary.counts.get("tokens", 0)
    if tokens and summary.seconds > 0 and summary.processed == summary.inputs:
        result.details["tokens_per_second"] = round(tokens / summary.seconds, 2)


def _policy(context: _Context, stage: Stage, model: str) -> Any:
    """The stage's policy, loaded and sampled with the stage's engine options."""
    from prefsmith.models.loading import LazyModel

    options = stage.engine
    return LazyModel(
        context.model(model), options.load_options(), options.engine, options.vllm_options
    )


def _run_sample(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.generation.sampling import SampleStep

    config = stage.config
    step = SampleStep(
        _policy(context, stage, config.model), config.sampling, config.max_prompt_tokens
    )
    summary = run_rows(
        context.source(config.input), context.output(stage), step, context.run_options(stage)
    )
    result = _from_rows(stage, summary)
    _tokens_per_second(result, summary)
    truncated = summary.counts.get("truncated samples", 0)
    samples = summary.counts.get("samples", 0)
    result.details["headline"] = f"{samples} samples, {truncated} hit max_new_tokens"
    return result


def _run_pairs(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.generation.pairs import PairsStep

    config = stage.config
    reward = context.reward(stage, config.scorer, config.customization)
    step = PairsStep(reward, config.pairs)
    summary = run_rows(
        context.source(config.input), context.output(stage), step, context.run_options(stage)
    )
    result = _from_rows(stage, summary)
    result.details["scorer"] = reward.name
    return result


def _run_rmboost(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.generation.rmboost import RMBoostStep, agreement

    config = stage.config
    check = context.reward(stage, config.check) if config.check else None
    step = RMBoostStep(
        _policy(context, stage, config.model),
        config.sampling,
        config.rmboost,
        config.format,
        check,
        config.filter_agreement,
        config.max_prompt_tokens,
        min_probability=config.min_probability,
    )
    summary = run_rows(
        context.source(config.input), context.output(stage), step, context.run_options(stage)
    )
    result = _from_rows(stage, summary)
    _tokens_per_second(result, summary)
    if check is not None:
        shares = agreement(summary.counts)
        result.details["agreement"] = shares
        if shares["all"] is not None:
            result.details["headline"] = f"check agrees on {shares['all']:.0%}"
    return result


def _run_score(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.rewards.base import ScoreStep

    config = stage.config
    reward = context.reward(stage, config.scorer, config.customization)
    step = ScoreStep(reward, config.system_prompt, config.save_token_logprobs)
    summary = run_rows(
        context.source(config.input), context.output(stage), step, context.run_options(stage)
    )
    result = _from_rows(stage, summary)
    result.details["scorer"] = reward.name
    return result


def _run_relabel(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.relabel.step import RelabelStep

    config = stage.config
    step = RelabelStep(config.relabel)
    summary = run_rows(
        context.source(config.input), context.output(stage), step, context.run_options(stage)
    )
    return _from_rows(stage, summary)


def _run_train(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.training.rows import load_preference_rows
    from prefsmith.training.trainer import latest_checkpoint, train

    config = stage.config
    output = context.output(stage)
    train_config = replace(
        config.train,
        data=str(context.source(config.input)),
        output_dir=str(output),
        model=context.model(config.train.model),
    )
    pairs = len(load_preference_rows(train_config.data, train_config.max_rows))
    if not context.progress:  # TRL's dataset preparation prints bars of its own
        import datasets

        datasets.disable_progress_bars()
    resume = latest_checkpoint(output) is not None
    if not resume and output.exists():
        shutil.rmtree(output)
    done = train(train_config, resume=resume, progress=context.progress)
    losses = [entry["loss"] for entry in done.log]
    details: dict[str, Any] = {
        "method": train_config.method,
        "finetune": train_config.finetune,
        "steps": done.steps,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "model": _rel(done.final_model, context.run_dir),
        "resumed_from": done.resumed_from,
    }
    loss = f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    details["headline"] = (
        f"{train_config.method} ({train_config.finetune}) {done.steps} steps{loss};"
        f" model {details['model']}"
    )
    return StageResult(stage.name, stage.kind, inputs=pairs, seconds=done.seconds, details=details)


def _run_judge(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.evaluation.judge import judge, read_prompts

    config = stage.config
    prompts = read_prompts(resolve_path(config.prompts), config.limit, config.offset)
    tuned, baseline = context.model(config.tuned), context.model(config.baseline)
    start = time.perf_counter()
    rate, judged = judge(tuned, baseline, prompts, context.output(stage), config.judge)
    seconds = time.perf_counter() - start
    details = {
        "tuned": _rel(Path(tuned), context.run_dir) if Path(tuned).exists() else tuned,
        "baseline": baseline,
        "win_rate": asdict(rate),
        "mean_reward_tuned": sum(r["reward_tuned"] for r in judged) / len(judged),
        "mean_reward_baseline": sum(r["reward_baseline"] for r in judged) / len(judged),
        "headline": f"win rate {rate.rate:.3f} (95% {rate.method} CI {rate.low:.3f}-"
        f"{rate.high:.3f}; {rate.wins} wins, {rate.losses} losses, {rate.ties} ties)",
    }
    return StageResult(
        stage.name,
        stage.kind,
        inputs=len(prompts),
        written=len(judged),
        seconds=seconds,
        details=details,
    )


def _run_eval(context: _Context, stage: Stage) -> StageResult:
    from prefsmith.evaluation.harness import evaluate_file

    config = stage.config
    rewards = [context.reward(stage, spec) for spec in config.scorers]
    if config.customization is not None:
        rewards += [context.reward(stage, spec, config.customization) for spec in config.scorers]
    start = time.perf_counter()
    evaluated = evaluate_file(
        context.source(config.input),
        rewards,
        context.output(stage),
        context.run_options(stage),
        config.system_prompt,
    )
    seconds = time.perf_counter() - start
    sections = {s.scorer: s.sections for s in evaluated.scorers}
    overall = ", ".join(f"{name}: {100 * s.get('Overall', 0):.1f}" for name, s in sections.items())
    details = {"sections": sections, "headline": f"overall accuracy {overall}"}
    return StageResult(
        stage.name,
        stage.kind,
        inputs=evaluated.pairs,
        written=evaluated.pairs,
        seconds=seconds,
        details=details,
    )


#: How each stage kind runs.
RUNNERS: dict[str, Callable[[_Context, Stage], StageResult]] = {
    "sample": _run_sample,
    "pairs": _run_pairs,
    "rmboost": _run_rmboost,
    "score": _run_score,
    "relabel": _run_relabel,
    "train": _run_train,
    "judge": _run_judge,
    "eval": _run_eval,
}


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
        "stages": [asdict(r) for r in results],
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
