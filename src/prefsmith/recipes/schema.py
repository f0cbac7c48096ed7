"""The recipe schema: a YAML mapping of the library's own configs, validated before anything runs.

A recipe is plain config (no code): shared model names and engine options, then a list of
named stages, each with a ``kind`` and that stage's fields. Every section that holds one of the
library's dataclasses (``sampling`` = :class:`~prefsmith.generation.sampling.SamplingConfig`,
``pairs`` = :class:`~prefsmith.generation.pairs.PairsOptions`, ``train`` =
:class:`~prefsmith.training.config.TrainConfig`, ...) takes exactly that dataclass's fields;
an unknown key is refused with its path::

    stages[1].pairs.min_margn: unknown key (known: strategy, min_margin, format, ...)

A stage reads an earlier stage's output by naming it (``input: sample``); ``@name`` in a model
field (``tuned: "@train"``, ``scorers: ["rm:@rm"]``) is the model a ``train`` stage wrote.
``prefsmith:PATH`` is a file shipped with prefsmith (``prefsmith:prompts/mt-bench.jsonl``);
other strings are paths, relative to the working directory.

>>> recipe = parse_recipe({"stages": [
...     {"name": "sample", "kind": "sample", "input": "prefsmith:prompts/mt-bench.jsonl",
...      "sampling": {"n": 2, "max_new_tokens": 16}},
...     {"name": "pairs", "kind": "pairs", "input": "sample", "pairs": {"min_margn": 1}}]})
Traceback (most recent call last):
...
prefsmith.recipes.schema.RecipeError: invalid recipe:
  stages[1].pairs.min_margn: unknown key (known: strategy, min_margin, format, ...)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from prefsmith.data.runner import RunOptions
from prefsmith.data.step import Columns
from prefsmith.defaults import DEFAULT_GENERATOR, DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.models.pool import ModelOptions
from prefsmith.rewards.fields import RESOURCE_PREFIX, resource_path
from prefsmith.rewards.spec import ScorerSpec
from prefsmith.stages import STAGES, CustomizationSpec, resolve_path
from prefsmith.stages.presets import with_preset
from prefsmith.stages.tune import SET_BY_STAGE
from prefsmith.training.config import TrainConfig

__all__ = [
    "KINDS",
    "CustomizationSpec",
    "Models",
    "Recipe",
    "RecipeError",
    "Stage",
    "parse_recipe",
    "resolve_path",
    "resource_path",
]

#: Stage kinds: every stage of :data:`~prefsmith.stages.STAGES`.
KINDS = tuple(STAGES)
#: Kinds whose output is a file of rows (the others write a folder).
ROW_KINDS = tuple(name for name, kind in STAGES.items() if kind.output == "rows")
#: Top-level sections (``--set models.policy=...``); no stage may take these names.
SECTIONS = ("models", "engine", "run")
#: ``RunOptions`` fields a recipe sets (``progress`` is the caller's).
RUN_FIELDS = ("on_error", "chunk_size", "limit")
#: Run options a recipe may set that place the work (Ray workers) without changing its output,
#: so they are not part of a stage's settings: changing them does not re-run a stage.
RUN_PLACEMENT = ("workers", "ray_address", "cpus_per_worker", "gpus_per_worker", "split_models")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MODEL_REF = re.compile(r"@([A-Za-z0-9][A-Za-z0-9_-]*)")


class RecipeError(ValueError):
    """A recipe that cannot run; the message lists every problem with its key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid recipe:\n" + "\n".join(f"  {p}" for p in self.problems))


# --------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class Models:
    """Model names every stage uses unless it names its own.

    Attributes:
        policy: The generator and the policy to tune (sample, rmboost, train, judge baseline).
        strong: Strong model of density-ratio scorers, checks and the judge.
        weak: Weak model of density-ratio scorers, checks and the judge.
    """

    policy: str = DEFAULT_GENERATOR
    strong: str = DEFAULT_STRONG
    weak: str = DEFAULT_WEAK


#: The fields each stage kind takes (besides name, kind, engine and run): its config class.
STAGE_CLASSES: dict[str, type] = {name: kind.config for name, kind in STAGES.items()}
#: Fields holding model names, where ``@stage`` refers to a trained model.
MODEL_FIELDS = (
    "model",
    "scorer",
    "scorers",
    "strong",
    "weak",
    "tuned",
    "baseline",
    "judge",
    "models",
)


@dataclass(frozen=True)
class Stage:
    """One validated stage.

    Attributes:
        name: Unique name; its output in the run folder is ``<name>.jsonl`` (row stages) or
            ``<name>/`` (train, judge, eval).
        kind: One of :data:`KINDS`.
        config: The kind's fields (a ``SampleStage``, ``PairsStage``, ...).
        engine: How models load and batch (the recipe's ``engine`` with this stage's keys).
        run: How the row runner reads and writes (the recipe's ``run`` with this stage's keys).
        raw: The stage as written (after overrides), for the record.
        needs: Earlier stages this one reads (inputs and ``@`` models).
    """

    name: str
    kind: str
    config: Any
    engine: ModelOptions
    run: RunOptions
    raw: dict[str, Any]
    needs: tuple[str, ...]

    @property
    def writes_rows(self) -> bool:
        """Whether the output is a file of rows (else a folder)."""
        return self.kind in ROW_KINDS


@dataclass(frozen=True)
class Recipe:
    """A validated recipe.

    Attributes:
        name: The recipe's name (``recipe:`` key, else the file's stem).
        description: What it does, in words.
        models: Shared model names.
        stages: The stages in run order.
        raw: The recipe as written (after overrides), saved as ``recipe.yaml`` in the run.
        source: Where it was read from.
    """

    name: str
    description: str
    models: Models
    stages: tuple[Stage, ...]
    raw: dict[str, Any]
    source: str = ""

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain values, with paths in the errors


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if is_dataclass(hint):
        return "a mapping"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any, path: str, problems: list[str]) -> Any:
    """``value`` as type ``hint`` (YAML values: lists become tuples where needed); problems go
    to ``problems`` with ``path``.

    >>> problems = []
    >>> coerce(["a", "b"], tuple[str, ...], "x", problems), coerce(3, float, "y", problems)
    (('a', 'b'), 3.0)
    >>> _ = coerce("many", int, "stages[0].sampling.n", problems)
    >>> print(problems[0])
    stages[0].sampling.n: expected int, got str 'many'
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            trial: list[str] = []
            out = coerce(value, option, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {_type_name(hint)}, got {_describe(value)}")
        return None
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(str(a) for a in typing.get_args(hint))
            problems.append(f"{path}: must be one of {choices}, not {value!r}")
        return value
    if is_dataclass(hint):
        return build(hint, value, path, problems)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected a list, got {_describe(value)}")
            return None
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        items = [coerce(v, inner, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a mapping, got {_describe(value)}")
            return None
        return dict(value)
    if hint is type(None):
        if value is not None:
            problems.append(f"{path}: expected null, got {_describe(value)}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected int, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 5e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{path}: expected a number, got {_describe(value)}")
            return value
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_describe(value)}")
        return value
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"


def build(
    cls: type,
    value: Any,
    path: str,
    problems: list[str],
    skip: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> Any:
    """An instance of dataclass ``cls`` from a mapping; unknown keys and bad values go to
    ``problems`` with their path. ``base`` gives values used where the mapping has none.

    >>> from prefsmith.generation.sampling import SamplingConfig
    >>> problems = []
    >>> build(SamplingConfig, {"n": 2, "top_k": 5}, "s", problems) is None
    True
    >>> print(problems[0])
    s.top_k: unknown key (known: n, temperature, top_p, max_new_tokens, seed, batch_size, ...)
    """
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a mapping, got {_describe(value)}")
        return None
    hints = _hints(cls)
    known = [f.name for f in fields(cls) if f.name not in skip and f.init]
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key, inner in value.items():
        if key in skip:
            problems.append(f"{path}.{key}: set by the recipe runner, not in a recipe")
        elif key not in known:
            problems.append(f"{path}.{key}: unknown key (known: {', '.join(known)})")
        else:
            kwargs[key] = coerce(inner, hints[key], f"{path}.{key}", problems)
    for key, inner in (base or {}).items():
        if key in known and key not in kwargs:
            kwargs[key] = coerce(inner, hints[key], f"{path}.{key}", problems)
    missing = [
        f.name
        for f in fields(cls)
        if f.name in known
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    problems.extend(f"{path}.{name}: required" for name in missing)
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        problems.append(f"{path}: {err}")
        return None


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and paths as JSON-ready values.

    >>> from prefsmith.generation.sampling import SamplingConfig
    >>> to_plain(SamplingConfig(n=2))["n"]
    2
    """
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------
# Files and references


def model_refs(value: Any) -> list[str]:
    """Stage names referred to as ``@name`` in a model field (a string or list of strings).

    >>> model_refs(["rm:@rm", "density-ratio:sum"]), model_refs("@train")
    (['rm'], ['train'])
    """
    texts = value if isinstance(value, list) else [value]
    return [m for t in texts if isinstance(t, str) for m in _MODEL_REF.findall(t)]


# --------------------------------------------------------------------------------------------
# The recipe


def parse_recipe(data: Any, source: str = "") -> Recipe:
    """Validate a recipe mapping; raise :class:`RecipeError` listing every problem."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise RecipeError([f"a recipe is a mapping with 'stages', got {_describe(data)}"])
    top_known = ("recipe", "description", "preset", *SECTIONS, "stages")
    known_text = ", ".join(top_known)
    problems += [
        f"{key}: unknown key (known: {known_text})" for key in data if key not in top_known
    ]
    models = build(Models, data.get("models"), "models", problems) or Models()
    engine = build(ModelOptions, data.get("engine"), "engine", problems) or ModelOptions()
    run_skip = [f.name for f in fields(RunOptions) if f.name not in RUN_FIELDS + RUN_PLACEMENT]
    run = build(RunOptions, data.get("run"), "run", problems, skip=run_skip) or RunOptions()
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        problems.append("stages: give a non-empty list of stages")
        raise RecipeError(problems)
    stages: list[Stage] = []
    kinds: dict[str, str] = {}
    names = [r.get("name") for r in raw_stages if isinstance(r, Mapping)]
    for i, raw in enumerate(raw_stages):
        later = [n for n in names[i + 1 :] if isinstance(n, str)]
        stage = _parse_stage(raw, f"stages[{i}]", kinds, later, engine, run, models, problems)
        if stage is not None:
            stages.append(stage)
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            kinds.setdefault(raw["name"], str(raw.get("kind")))
    if not problems:
        problems += column_problems(stages)
    if problems:
        raise RecipeError(problems)
    name = data.get("recipe") or (Path(source).stem if source else "recipe")
    return Recipe(
        str(name), str(data.get("description", "")), models, tuple(stages), dict(data), source
    )


def _parse_stage(
    raw: Any,
    path: str,
    earlier: dict[str, str],
    later: Sequence[str],
    engine: ModelOptions,
    run: RunOptions,
    models: Models,
    problems: list[str],
) -> Stage | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: a stage is a mapping with name and kind, got {_describe(raw)}")
        return None
    name, kind = raw.get("name"), raw.get("kind")
    before = len(problems)
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{path}.name: required: letters, digits, '-' and '_' (got {name!r})")
    elif name in earlier:
        problems.append(f"{path}.name: {name!r} is used by an earlier stage")
    elif name in SECTIONS:
        problems.append(f"{path}.name: {name!r} is reserved ({', '.join(SECTIONS)})")
    if kind not in STAGE_CLASSES:
        problems.append(f"{path}.kind: must be one of {', '.join(KINDS)}, not {kind!r}")
        return None
    cls = STAGE_CLASSES[kind]
    body = {k: v for k, v in raw.items() if k not in ("name", "kind", "engine", "run")}
    stage_engine = _merged(ModelOptions, engine, raw.get("engine"), f"{path}.engine", problems)
    run_skip = [f.name for f in fields(RunOptions) if f.name not in RUN_FIELDS + RUN_PLACEMENT]
    stage_run = _merged(RunOptions, run, STAGES[kind].run_defaults, path, problems, run_skip)
    if "run" in raw:
        if not STAGES[kind].row_runner:
            takes = ", ".join(k for k, v in STAGES.items() if v.row_runner)
            problems.append(f"{path}.run: only stages that run rows ({takes}) take run")
        else:
            stage_run = _merged(
                RunOptions, stage_run, raw["run"], f"{path}.run", problems, run_skip
            )
    body = with_preset(_inherit(kind, body, models, stage_engine), kind)
    skip = SET_BY_STAGE if kind == "train" else ()
    config = _build_stage(cls, body, path, problems, skip)
    needs = _check_refs(kind, raw, path, earlier, later, problems)
    if len(problems) > before or config is None:
        return None
    return Stage(str(name), str(kind), config, stage_engine, stage_run, dict(raw), needs)


def _merged(
    cls: type, base: Any, value: Any, path: str, problems: list[str], skip: Sequence[str] = ()
) -> Any:
    """``base`` (a dataclass) with the keys of mapping ``value`` replaced."""
    plain = {k: v for k, v in to_plain(base).items() if k not in skip}
    return build(cls, value, path, problems, skip=skip, base=plain) or base


def _build_stage(
    cls: type, body: dict[str, Any], path: str, problems: list[str], train_skip: Sequence[str]
) -> Any:
    """A stage config; the ``train`` section is a ``TrainConfig`` without data/output_dir."""
    if cls is not STAGE_CLASSES["train"]:
        return build(cls, body, path, problems)
    config = build(cls, {k: v for k, v in body.items() if k != "train"}, path, problems)
    train = build(TrainConfig, body.get("train"), f"{path}.train", problems, skip=train_skip)
    if config is None or train is None:
        return None
    return dataclasses.replace(config, train=train)


#: Top-level config fields that default to a model of the recipe's ``models`` section.
INHERITED_MODELS = {"model": "policy", "strong": "strong", "weak": "weak", "baseline": "policy"}


def _inherit(kind: str, body: dict[str, Any], models: Models, engine: ModelOptions) -> dict:
    """Fill defaults from ``models`` and ``engine`` where the stage does not set them."""
    body = dict(body)
    names = {f.name for f in fields(STAGE_CLASSES[kind])}
    for name, role in INHERITED_MODELS.items():
        if name in names:
            body.setdefault(name, getattr(models, role))
    if kind == "train":
        body.setdefault("resume", True)  # an interrupted train stage goes on from its checkpoint
    section = {"train": "train", "judge": "judge"}.get(kind)
    inner = body.get(section) or {} if section else None
    if isinstance(inner, Mapping):
        inner = dict(inner)
        defaults = {"device": engine.device, "threads": engine.threads}
        if kind == "train":
            defaults["model"] = models.policy
            if engine.dtype in ("float32", "bfloat16"):
                defaults["dtype"] = engine.dtype
        else:
            defaults |= {"strong": models.strong, "weak": models.weak}
        body[section] = {**defaults, **inner}  # type: ignore[index]
    return body


def column_problems(stages: Sequence[Stage]) -> list[str]:
    """Stages whose input is an earlier stage that does not write a column they read.

    Checked when the recipe is read, before any model loads. A stage's columns are those its
    kind writes, plus its input's where it keeps them (``score``); a file's columns are not
    known here (the row runner checks every row of it before the stage's models load).

    >>> import textwrap
    >>> try:
    ...     parse_recipe({"stages": [
    ...         {"name": "sample", "kind": "sample", "input": "prefsmith:prompts/mt-bench.jsonl"},
    ...         {"name": "relabel", "kind": "relabel", "input": "sample"}]})
    ... except RecipeError as err:
    ...     print(textwrap.fill(err.problems[0], 88))
    stages[1].input: stage relabel (relabel) reads 'chosen', 'rejected', 'reward_chosen',
    'reward_rejected', which stage sample (sample) does not write (it writes: responses,
    finish_reasons, n_tokens, generated_with, and its input's columns)
    """
    written: dict[str, frozenset[str] | None] = {}
    problems = []
    for number, stage in enumerate(stages):
        kind = STAGES[stage.kind]
        source = getattr(stage.config, "input", None)
        upstream = written.get(source) if source in written else None
        if source in written and upstream is not None and kind.reads is not None:
            needed: Columns = kind.reads(stage.config)
            if not any(set(columns) <= upstream for columns in needed):
                closest = min(needed, key=lambda c: len(set(c) - upstream))
                lacking = ", ".join(repr(c) for c in closest if c not in upstream)
                producer = next(s for s in stages if s.name == source)
                shown = ", ".join(STAGES[producer.kind].writes)
                if STAGES[producer.kind].keeps_columns:
                    shown += ", and its input's columns"
                problems.append(
                    f"stages[{number}].input: stage {stage.name} ({stage.kind}) reads {lacking},"
                    f" which stage {producer.name} ({producer.kind}) does not write"
                    f" (it writes: {shown})"
                )
        if kind.output == "rows":
            own = frozenset(kind.writes)
            if kind.keeps_columns:
                inherited = written.get(source) if source in written else _prompt_like(source)
                written[stage.name] = None if inherited is None else own | inherited
            else:
                written[stage.name] = own
    return problems


def _prompt_like(source: Any) -> frozenset[str] | None:
    """A file's columns are unknown here, except a shipped prompt set's: ``prompt``."""
    if isinstance(source, str) and source.startswith(f"{RESOURCE_PREFIX}prompts/"):
        return frozenset({"prompt", "id"})
    return None


def _check_refs(
    kind: str,
    raw: Mapping[str, Any],
    path: str,
    earlier: dict[str, str],
    later: Sequence[str],
    problems: list[str],
) -> tuple[str, ...]:
    """Check ``input`` and ``@name`` references; return the stages this one reads."""
    needs: list[str] = []
    if "input" in raw:
        text = raw["input"]
        if not isinstance(text, str):
            pass  # reported by the type check
        elif text in earlier:
            if earlier[text] not in ROW_KINDS:
                problems.append(
                    f"{path}.input: stage {text!r} ({earlier[text]}) writes a folder, not rows"
                )
            needs.append(text)
        elif text in later:
            problems.append(f"{path}.input: stage {text!r} runs later; a stage reads earlier ones")
        elif not resolve_path(text).exists():
            problems.append(
                f"{path}.input: no earlier stage and no file named {text!r}"
                + (f" (earlier stages: {', '.join(earlier)})" if earlier else "")
            )
    for key in MODEL_FIELDS:
        for ref in model_refs(raw.get(key)):
            if ref not in earlier:
                problems.append(f"{path}.{key}: @{ref} names no earlier stage")
            elif earlier[ref] != "train":
                problems.append(f"{path}.{key}: @{ref} is a {earlier[ref]} stage; @ names a model")
            else:
                needs.append(ref)
    for key in ("scorer", "scorers"):
        specs = raw.get(key)
        for i, spec in enumerate(specs if isinstance(specs, list) else [specs]):
            where = f"{path}.{key}" + (f"[{i}]" if isinstance(specs, list) else "")
            if isinstance(spec, str):
                try:
                    ScorerSpec.parse(_MODEL_REF.sub("MODEL", spec))
                except ValueError as err:
                    problems.append(f"{where}: {err}")
    prompts = raw.get("prompts")
    if kind == "judge" and isinstance(prompts, str) and not resolve_path(prompts).exists():
        problems.append(f"{path}.prompts: no file {raw['prompts']!r}")
    return tuple(dict.fromkeys(needs))


# --------------------------------------------------------------------------------------------
# Judges and labelers

#: Stage kinds whose scorer decides which response of a pair is chosen (the labeler).
LABELING_KINDS = ("pairs", "west-of-n", "score")


def _scorer_identity(
    spec: str, strong: str, weak: str, customization: Any, rendering: str | None = None
) -> tuple:
    """A scorer as compared between stages: its full spec name (with the stage's rendering
    where the spec says none) and its customization."""
    parsed = ScorerSpec.parse(_MODEL_REF.sub("MODEL", spec), strong, weak)
    return parsed.with_rendering(rendering).name, customization


def labeler_identity(stage: Stage) -> tuple | None:
    """The scorer that labels ``stage``'s pairs (``None`` for a stage that labels none;
    ``rmboost`` labels by construction, its check only when it filters)."""
    config = stage.config
    labels = stage.kind in LABELING_KINDS or (stage.kind == "rmboost" and config.filter_agreement)
    if not labels:
        return None
    return _scorer_identity(
        config.scorer_spec(),
        config.strong,
        config.weak,
        getattr(config, "customization", None),
        getattr(config, "rendering", None),
    )


def judge_identity(stage: Stage) -> tuple:
    """The scorer a ``judge`` stage judges with, comparable with :func:`labeler_identity`."""
    options = stage.config.judge
    spec = options.scorer or f"density-ratio:{options.reduction}"
    return _scorer_identity(spec, options.strong, options.weak, stage.config.customization)


def judges_with_labeler(recipe: Recipe) -> dict[str, str]:
    """Judge stages whose judge is the scorer that labeled pairs earlier in the recipe: judge
    stage name -> the labeling stage's name.

    >>> recipe = parse_recipe({"stages": [
    ...     {"name": "pairs", "kind": "west-of-n"},
    ...     {"name": "judge", "kind": "judge", "tuned": "x", "judge": {"scorer": None}}]})
    >>> judges_with_labeler(recipe)
    {'judge': 'pairs'}
    >>> recipe = parse_recipe({"stages": [
    ...     {"name": "pairs", "kind": "west-of-n"},
    ...     {"name": "judge", "kind": "judge", "tuned": "x", "judge": {"scorer": "contrast:q"}}]})
    >>> judges_with_labeler(recipe)
    {}
    """
    labelers: dict[tuple, str] = {}
    found: dict[str, str] = {}
    for stage in recipe.stages:
        if stage.kind == "judge":
            identity = judge_identity(stage)
            if identity in labelers:
                found[stage.name] = labelers[identity]
            continue
        identity = labeler_identity(stage)
        if identity is not None:
            labelers.setdefault(identity, stage.name)
    return found
