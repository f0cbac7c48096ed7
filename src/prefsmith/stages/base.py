"""The stage layer: every stage of the pipeline as one config class and one run function,
registered once in :data:`STAGES`; the command line, the recipe schema and the Python API are
all derived from that registration.

A stage (:class:`StageKind`) declares its config (a frozen dataclass whose ``Attributes:``
docstring documents every field, the single source of its settings), whether it reads rows and
which columns (checked before any model loads), what it writes, and its run function
``run(config, context) -> StageResult``. :func:`run_stage` does what every stage needs around
it: it reads the input once, checks every row before any model loads, runs the stage and frees
its models. The :class:`StageContext` says where the input and output are and how models load
and rows run (``engine``: :class:`~prefsmith.models.pool.ModelOptions`, ``run``:
:class:`~prefsmith.data.runner.RunOptions`).

>>> import tempfile, pathlib
>>> from prefsmith.stages import SampleStage, run_stage
>>> from prefsmith.testing import tiny_model
>>> from prefsmith.generation.sampling import SamplingConfig
>>> out = pathlib.Path(tempfile.mkdtemp()) / "sample.jsonl"
>>> config = SampleStage(input="prefsmith:prompts/mt-bench.jsonl", model=tiny_model(seed=0),
...                      sampling=SamplingConfig(n=2, max_new_tokens=4))
>>> result = run_stage(config, StageContext(out, run=RunOptions(limit=2, progress=False)))
>>> result.inputs, result.written
(2, 2)
"""

from __future__ import annotations

import copy
import gc
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.runner import RunOptions, RunSummary
from prefsmith.data.step import Columns
from prefsmith.models.pool import ModelOptions
from prefsmith.rewards.fields import (
    CustomizationSpec,
    ScorerFields,
    resolve_path,
)

# --------------------------------------------------------------------------------------------
# Results


@dataclass
class StageResult:
    """What one stage did.

    Attributes:
        name: The stage's name (its kind outside a recipe).
        kind: Its kind.
        status: ``ran``; in a recipe also ``resumed``, ``re-ran`` or ``skipped``.
        reason: Why it re-ran (the changed settings), empty otherwise.
        output: Its output file or folder.
        inputs: Input rows (row stages, eval: pairs, judge: prompts, train: pairs).
        written: Output rows (row stages), or pairs evaluated / prompts judged.
        rejected: Bad input rows set aside (``on_error: skip``).
        dropped: Input rows that gave no output, by reason.
        counts: Step-specific counters (candidate statuses, tokens, ties, ...).
        seconds: Wall time of the work.
        details: Kind-specific results (train: steps and loss; judge: win rate; eval: sections);
            ``headline`` is the line shown for it.
        warnings: Things to look at, with the setting that changes them.
        value: The stage's own result object (``EvalResult``, ``StudyResult``, ...) for display;
            not recorded (:func:`record` leaves it out).
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
    value: Any = field(default=None, repr=False, compare=False)


def record(result: StageResult) -> dict[str, Any]:
    """``result`` as JSON-ready values, without :attr:`StageResult.value`."""
    from dataclasses import fields as fields_of

    return {
        f.name: copy.deepcopy(getattr(result, f.name))
        for f in fields_of(result)
        if f.name != "value"
    }


def from_rows(kind: str, summary: RunSummary, audience: str = "recipe") -> StageResult:
    """A row stage's result from the row runner's summary (with its drop warning)."""
    from prefsmith.data.advice import drop_warning

    warning = drop_warning(summary.inputs, summary.dropped, audience)  # type: ignore[arg-type]
    result = StageResult(
        kind,
        kind,
        output=str(summary.output),
        inputs=summary.inputs,
        written=summary.written,
        rejected=summary.rejected,
        dropped=dict(summary.dropped),
        counts=dict(summary.counts),
        seconds=summary.seconds,
        warnings=[warning] if warning else [],
    )
    result.details["summary"] = summary.describe()
    if not summary.written and not warning:
        result.warnings.append("no output rows")
    return result


# --------------------------------------------------------------------------------------------
# The context


@dataclass
class StageContext:
    """Where a stage reads and writes, and how its models load and its rows run.

    Attributes:
        output: The output file (row stages) or folder.
        engine: How models load and batch.
        run: How the row runner reads and writes.
        resolve_input: An ``input`` field's text -> the file (a recipe maps stage names to
            their outputs); default: :func:`resolve_path`.
        resolve_model: A model field's text -> a model (a recipe maps ``@stage`` to the model
            that stage trained); default: unchanged.
        audience: Who reads the advice on dropped rows: ``cli`` or ``recipe``.
        rows: The input as read and checked by :func:`run_stage` (set there).
    """

    output: Path
    engine: ModelOptions = field(default_factory=ModelOptions)
    run: RunOptions = field(default_factory=RunOptions)
    resolve_input: Callable[[str], Path] = resolve_path
    resolve_model: Callable[[str], str] = str
    audience: str = "recipe"
    rows: Any = None
    _pools: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.output = Path(self.output)

    @property
    def progress(self) -> bool:
        """Whether to show progress."""
        return self.run.progress

    def source(self, text: str) -> Any:
        """The rows to run on: those :func:`run_stage` read, else the file ``text`` names."""
        return self.rows if self.rows is not None else self.resolve_input(text)

    def pool(self, cache: bool = False, cache_path: str | None = None) -> Any:
        """One :class:`~prefsmith.models.pool.ModelPool` per cache setting, shared by the
        stage's rewards (each model loads once)."""
        from prefsmith.models.cache import LogProbCache
        from prefsmith.models.pool import ModelPool

        key = (cache, cache_path)
        if key not in self._pools:
            store = LogProbCache(cache_path) if cache else None
            self._pools[key] = ModelPool(self.engine, store)
        return self._pools[key]

    def reward(
        self,
        spec: str,
        strong: str,
        weak: str,
        customization: CustomizationSpec | None = None,
        *,
        rendering: str | None = None,
        cache: bool = False,
        cache_path: str | None = None,
        contrast_prompts: str | None = None,
    ) -> Any:
        """The reward a scorer spec names, on this stage's models (``rendering``: where the
        spec says none, see :attr:`ScorerFields.rendering`)."""
        from prefsmith.rewards.spec import ScorerSpec

        parsed = ScorerSpec.parse(
            self.resolve_model(spec), self.resolve_model(strong), self.resolve_model(weak)
        ).with_rendering(rendering)
        return parsed.build(
            self.pool(cache, cache_path),
            customization.build() if customization else None,
            contrast_prompts,
        )

    def scorer(self, config: ScorerFields) -> Any:
        """The reward of a stage's :class:`ScorerFields`, customized as they say."""
        spec = config.scorer_spec()
        return self.reward(
            spec, config.strong, config.weak, config.customization, rendering=config.rendering
        )

    def policy(self, model: str) -> Any:
        """The engine to sample from, with this stage's engine options (weights on first use)."""
        from prefsmith.defaults import GENERATION_DTYPES
        from prefsmith.models.engines import load_engine

        if self.engine.dtype not in GENERATION_DTYPES:
            raise ValueError(
                f"dtype {self.engine.dtype} is for scoring only; a generator takes one of"
                f" {', '.join(GENERATION_DTYPES)}"
            )
        options = self.engine
        return load_engine(
            self.resolve_model(model),
            options.engine,
            options.load_options(),
            vllm_options=options.vllm_options,
        )

    def release(self) -> None:
        """Free the stage's models (the next stage may need the memory)."""
        self._pools.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class StageKind:
    """One stage of the pipeline, as the command line, the recipes and the API see it.

    Attributes:
        name: The kind (``score``, ``sample``, ...): the command's and the recipe kind's name.
        config: Its config class (a frozen, keyword-only dataclass; ``Attributes:`` documents
            every field).
        run: ``run(config, context) -> StageResult``: the work, on :class:`StageContext`.
        output: ``rows`` (a rows file: .jsonl or .parquet) or ``folder``.
        engine: Whether it loads models through :class:`~prefsmith.models.pool.ModelOptions`
            (the ``engine`` section).
        row_runner: Whether its rows go through the row runner (the ``run`` section).
        reads: Columns its input rows must hold (any one alternative suffices), as a function
            of the config; ``None``: it reads no rows (``judge``) or checks them itself.
        writes: The columns of its output rows (row stages).
        keeps_columns: Its output rows keep the input rows' columns (``score``).
        check_row: ``check_row(config)`` gives a function that validates one input row without
            a model (raising ``ValueError``), run on every row before any model loads.
        run_defaults: :class:`~prefsmith.data.runner.RunOptions` defaults of this kind.
        default_input: The input when none is given (``None``: required).
        argument: The field the command line takes as its argument (``input``; ``judge``:
            ``tuned``).
        flags: Command-line spellings that differ from the field's name (``"scorers":
            "--scorer"``), by dotted field path.
    """

    name: str
    config: type
    run: Callable[[Any, StageContext], StageResult]
    output: Literal["rows", "folder"] = "rows"
    engine: bool = True
    row_runner: bool = True
    reads: Callable[[Any], Columns] | None = None
    writes: tuple[str, ...] = ()
    keeps_columns: bool = False
    check_row: Callable[[Any], Callable[[Mapping[str, Any]], Any]] | None = None
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    default_input: str | None = None
    argument: str = "input"
    flags: Mapping[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first line of the config's docstring."""
        return (self.config.__doc__ or self.name).strip().splitlines()[0]


#: Every stage kind by name, in pipeline order (filled by the modules of
#: :mod:`prefsmith.stages`).
STAGES: dict[str, StageKind] = {}


def register(kind: StageKind) -> StageKind:
    """Add ``kind`` to :data:`STAGES` (its name must be new)."""
    if kind.name in STAGES:
        raise ValueError(f"stage kind {kind.name!r} is registered twice")
    STAGES[kind.name] = kind
    return kind


def kind_of(config: Any) -> StageKind:
    """The registered kind whose config ``config`` is."""
    for kind in STAGES.values():
        if type(config) is kind.config:
            return kind
    raise TypeError(f"{type(config).__name__} is not a stage config")


def run_stage(config: Any, context: StageContext) -> StageResult:
    """Run one stage: read its input once, check every row before any model loads (with
    ``on_error="raise"``), run it, free its models.

    Raises the first bad row's :class:`~prefsmith.data.rows.RowError` (file and line) before
    any model loads.
    """
    kind = kind_of(config)
    if kind.engine:  # a missing extra (vllm) is named before any row is read
        from prefsmith.models.engines import engine_class

        engine_class(context.engine.engine).check_installed()
    if kind.row_runner and context.run.workers:
        from prefsmith.data.ray_executor import import_ray

        import_ray()
    text = getattr(config, "input", None)
    if kind.row_runner and isinstance(text, str) and context.rows is None:
        from prefsmith.data.runner import first_error, read_input, read_items

        context.rows = read_input(context.resolve_input(text), context.run.limit)
        if kind.check_row is not None and context.run.on_error == "raise":
            _, bad = read_items(context.rows, kind.check_row(config))
            if bad:
                raise first_error(bad, None)
    try:
        return kind.run(config, context)
    finally:
        context.release()
