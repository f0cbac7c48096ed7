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
from dataclasses import dataclass, field, fields, is_dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, Union

from prefsmith.data.runner import RunOptions
from prefsmith.defaults import DEFAULT_GENERATOR, DEFAULT_STRONG, DEFAULT_WEAK
from prefsmith.evaluation.judge import JudgeOptions
from prefsmith.generation.pairs import PairFormat, PairsOptions
from prefsmith.generation.rmboost import RMBoostConfig
from prefsmith.generation.sampling import SamplingConfig
from prefsmith.models.pool import ModelOptions
from prefsmith.relabel.step import RelabelOptions
from prefsmith.rewards.spec import ScorerSpec
from prefsmith.training.config import TrainConfig

#: Stage kinds, in the order a loop usually runs them.
KINDS = ("sample", "pairs", "rmboost", "score", "relabel", "train", "judge", "eval")
#: Kinds whose output is a file of rows (the others write a folder).
ROW_KINDS = ("sample", "pairs", "rmboost", "score", "relabel")
#: Top-level sections (``--set models.policy=...``); no stage may take these names.
SECTIONS = ("models", "engine", "run")
#: Prefix of a file shipped with prefsmith.
RESOURCE_PREFIX = "prefsmith:"
#: ``TrainConfig`` fields a recipe does not set: the runner does.
TRAIN_FIELDS_SET_BY_RUN = ("data", "output_dir")
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


@dataclass(frozen=True)
class CustomizationSpec:
    """The customized density ratio (:class:`~prefsmith.routing.customize.Customization`).

    Attributes:
        domains: Domains YAML (``None``: the shipped default; ``prefsmith:`` paths allowed).
        router: ``embedding``, ``rules`` or ``lm``.
        exemplars: ``system``, ``turns`` or ``none``.
    """

    domains: str | None = None
    router: Literal["embedding", "rules", "lm"] = "embedding"
    exemplars: Literal["system", "turns", "none"] = "system"


# --------------------------------------------------------------------------------------------
# Stages. Common fields: name, kind, engine (ModelOptions fields over the recipe's engine),
# run (RunOptions fields over the recipe's run; row stages only).


@dataclass(frozen=True)
class SampleStage:
    """``sample``: N responses per prompt (:class:`~prefsmith.generation.sampling.SampleStep`).

    Attributes:
        input: Prompts: an earlier stage, a file, or a ``prefsmith:`` resource.
        model: Generator (default: ``models.policy``; ``@stage`` for a trained model).
        sampling: :class:`~prefsmith.generation.sampling.SamplingConfig` fields.
        max_prompt_tokens: Reject longer prompts (``None``: what fits the context).
    """

    input: str
    model: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_prompt_tokens: int | None = None


@dataclass(frozen=True)
class PairsStage:
    """``pairs``: best-of-N pairs under a reward (:class:`~prefsmith.generation.pairs.PairsStep`).

    Attributes:
        input: Candidates (a ``sample`` stage, or a file with ``prompt`` + ``responses``).
        scorer: Scorer spec (``density-ratio:sum``; models left out are ``models.strong`` and
            ``models.weak``).
        customization: Route and customize contexts before scoring (``None``: plain).
        pairs: :class:`~prefsmith.generation.pairs.PairsOptions` fields.
    """

    input: str
    scorer: str = "density-ratio:sum"
    customization: CustomizationSpec | None = None
    pairs: PairsOptions = field(default_factory=PairsOptions)


@dataclass(frozen=True)
class RMBoostStage:
    """``rmboost``: RMBoost pairs (:class:`~prefsmith.generation.rmboost.RMBoostStep`).

    Attributes:
        input: Prompts.
        model: Generator (default: ``models.policy``).
        sampling: :class:`~prefsmith.generation.sampling.SamplingConfig` fields (``n`` is 1).
        rmboost: :class:`~prefsmith.generation.rmboost.RMBoostConfig` fields.
        format: ``conversational`` or ``standard`` output.
        check: Scorer spec that scores every pair and records whether it agrees with the
            label (``None``: no check).
        filter_agreement: Keep only pairs the check agrees with.
        max_prompt_tokens: Reject longer prompts.
        min_probability: Keep only pairs a calibrated check (``fitted:FILE#calibration:...``)
            prefers with P(chosen preferred) above this (``None``: no threshold).
    """

    input: str
    model: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    rmboost: RMBoostConfig = field(default_factory=RMBoostConfig)
    format: PairFormat = "conversational"
    check: str | None = None
    filter_agreement: bool = False
    max_prompt_tokens: int | None = None
    min_probability: float | None = None


@dataclass(frozen=True)
class ScoreStage:
    """``score``: rewards for every response (:class:`~prefsmith.rewards.base.ScoreStep`).

    Attributes:
        input: Pairs or candidates.
        scorer: Scorer spec.
        customization: Customized density ratio (``None``: plain).
        system_prompt: System turn for rows without one.
        save_token_logprobs: Store per-token log-probs (for ``prefsmith report``).
    """

    input: str
    scorer: str = "density-ratio:sum"
    customization: CustomizationSpec | None = None
    system_prompt: str | None = None
    save_token_logprobs: bool = False


@dataclass(frozen=True)
class RelabelStage:
    """``relabel``: goal-conditioned pairs (:class:`~prefsmith.relabel.step.RelabelStep`).

    Attributes:
        input: Scored pairs (``pairs`` or ``score`` output).
        relabel: :class:`~prefsmith.relabel.step.RelabelOptions` fields (``scale`` holds
            :class:`~prefsmith.relabel.scale.GoalScale` fields).
    """

    input: str
    relabel: RelabelOptions = field(default_factory=RelabelOptions)


@dataclass(frozen=True)
class TrainStage:
    """``train``: DPO/SimPO (or any method ``TrainConfig`` knows) through TRL.

    Attributes:
        input: Preference rows in TRL format (``pairs``, ``rmboost`` or ``relabel`` output).
        train: :class:`~prefsmith.training.config.TrainConfig` fields except ``data`` and
            ``output_dir`` (the stage's input and folder); ``model`` defaults to
            ``models.policy``, ``device``/``threads`` to the engine's.
    """

    input: str
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class JudgeStage:
    """``judge``: win rate of a tuned policy over a baseline (density-ratio judge).

    Attributes:
        tuned: The tuned policy: ``@stage`` (a ``train`` stage) or a model.
        baseline: The starting policy (default: ``models.policy``).
        prompts: Prompts with ``turns`` or ``prompt`` (default: the shipped MT-Bench).
        limit: Prompts to use (0: all).
        offset: Skip this many prompts first.
        judge: :class:`~prefsmith.evaluation.judge.JudgeOptions` fields (``strong``/``weak``
            default to ``models``, ``device``/``threads`` to the engine's).
    """

    tuned: str
    baseline: str | None = None
    prompts: str = "prefsmith:prompts/mt-bench.jsonl"
    limit: int = 0
    offset: int = 0
    judge: JudgeOptions = field(default_factory=JudgeOptions)


@dataclass(frozen=True)
class EvalStage:
    """``eval``: RewardBench-style accuracy of scorers (``evaluate_file``).

    Attributes:
        input: Pairs with ``prompt``/``chosen``/``rejected`` (+ ``subset``, ``id``).
        scorers: Scorer specs (``rm:@stage`` for a reward model a ``train`` stage wrote).
        customization: Also evaluate every scorer customized this way (plain vs. CDR).
        system_prompt: System turn for rows without one.
        cache: Use the on-disk log-prob cache (``$PREFSMITH_HOME/logprobs.sqlite``).
    """

    input: str
    scorers: list[str] = field(default_factory=lambda: ["density-ratio:sum"])
    customization: CustomizationSpec | None = None
    system_prompt: str | None = None
    cache: bool = True


#: The fields each stage kind takes (besides name, kind, engine and run).
STAGE_CLASSES: dict[str, type] = {
    "sample": SampleStage,
    "pairs": PairsStage,
    "rmboost": RMBoostStage,
    "score": ScoreStage,
    "relabel": RelabelStage,
    "train": TrainStage,
    "judge": JudgeStage,
    "eval": EvalStage,
}
#: Fields holding model names, where ``@stage`` refers to a trained model.
MODEL_FIELDS = ("model", "scorer", "check", "scorers", "tuned", "baseline")


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


def resource_path(text: str) -> Path:
    """The file behind ``prefsmith:PATH`` (a file shipped in ``prefsmith/resources``).

    >>> resource_path("prefsmith:prompts/mt-bench.jsonl").name
    'mt-bench.jsonl'
    """
    return Path(str(files("prefsmith").joinpath("resources", text.removeprefix(RESOURCE_PREFIX))))


def resolve_path(text: str) -> Path:
    """A recipe's path: ``prefsmith:`` resources, else relative to the working directory."""
    return resource_path(text) if text.startswith(RESOURCE_PREFIX) else Path(text)


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
    top_known = ("recipe", "description", *SECTIONS, "stages")
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
    stage_run = run
    if "run" in raw:
        if kind not in ROW_KINDS:
            problems.append(f"{path}.run: only row stages ({', '.join(ROW_KINDS)}) take run")
        else:
            stage_run = _merged(RunOptions, run, raw["run"], f"{path}.run", problems, run_skip)
    body = _inherit(kind, body, models, stage_engine)
    skip = TRAIN_FIELDS_SET_BY_RUN if kind == "train" else ()
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
    if cls is not TrainStage:
        return build(cls, body, path, problems)
    config = build(cls, {k: v for k, v in body.items() if k != "train"}, path, problems)
    train = build(TrainConfig, body.get("train"), f"{path}.train", problems, skip=train_skip)
    if config is None or train is None:
        return None
    return dataclasses.replace(config, train=train)


def _inherit(kind: str, body: dict[str, Any], models: Models, engine: ModelOptions) -> dict:
    """Fill defaults from ``models`` and ``engine`` where the stage does not set them."""
    body = dict(body)
    if kind in ("sample", "rmboost"):
        body.setdefault("model", models.policy)
    if kind == "train":
        train = body.get("train") or {}
        if isinstance(train, Mapping):
            train = dict(train)
            train.setdefault("model", models.policy)
            train.setdefault("device", engine.device)
            train.setdefault("threads", engine.threads)
            if engine.dtype in ("float32", "bfloat16"):
                train.setdefault("dtype", engine.dtype)
            body["train"] = train
    if kind == "judge":
        body.setdefault("baseline", models.policy)
        judge = body.get("judge") or {}
        if isinstance(judge, Mapping):
            judge = dict(judge)
            judge.setdefault("strong", models.strong)
            judge.setdefault("weak", models.weak)
            judge.setdefault("device", engine.device)
            judge.setdefault("threads", engine.threads)
            body["judge"] = judge
    return body


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
    for key in ("scorer", "check", "scorers"):
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
