"""The stage contract: what every step of the pipeline (score, sample, pairs, rmboost, relabel,
eval, the baselines) declares and implements, and what the runners call.

A :class:`Step` turns one input row into a validated item (:meth:`Step.prepare`, raising
``ValueError`` with what is wrong) and a batch of items into :class:`Outcome` s
(:meth:`Step.process`). It declares the columns it reads twice: :attr:`Step.input_columns` in
words (for messages and docs) and :attr:`Step.required_columns` as data, which the row runner
(:mod:`prefsmith.data.runner`) checks on every row that :meth:`Step.prepare` accepted.

Optional capabilities, each with a default on the base class:

* :meth:`Step.fit`: see every valid row before any is processed (the relabel step fits its goal
  scale there); default: nothing;
* model stages (:meth:`Step.model_stages`, :meth:`Step.begin`, :meth:`Step.run_model`,
  :meth:`Step.end`): the same work as :meth:`Step.process` split by model, so that a distributed
  runner (:mod:`prefsmith.data.ray_executor`) can give each model its own workers; default: no
  stages, the step runs in one piece.

>>> class Upper(Step):
...     name, input_columns, output_columns = "upper", "text", ("upper",)
...     required_columns = (("text",),)
...     def prepare(self, row):
...         return str(row["text"])
...     def process(self, batch, advance):
...         return [Outcome([{**b.row, "upper": b.item.upper()}]) for b in batch]
>>> Upper().missing_columns({"text": 1}), Upper().missing_columns({"other": 1})
('', "missing field 'text'")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

Advance = Callable[[float], None]

#: Columns a row must hold: any one of the alternatives, each a tuple of column names.
Columns = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class RowItem:
    """One validated input row, as a step sees it.

    Attributes:
        key: The row's position in the input (written as ``source_index``).
        location: Where it is, for messages (``file.jsonl:12``).
        row: The input row as read.
        item: What :meth:`Step.prepare` made of it.
    """

    key: int
    location: str
    row: Mapping[str, Any]
    item: Any


@dataclass(frozen=True)
class Outcome:
    """What one input row produced.

    Attributes:
        rows: Output rows (zero, one or several).
        dropped: Why the row produced no output (counted in the summary), or ``None``.
        counts: Step-specific counters (e.g. ``{"truncated candidates": 2}``), summed over
            the run.
    """

    rows: Sequence[dict[str, Any]] = ()
    dropped: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


def missing_columns(row: Mapping[str, Any], required: Columns) -> str:
    """What ``row`` lacks of ``required`` (any one alternative suffices): ``""`` when nothing.

    The message names the missing columns of the alternative the row comes closest to.

    >>> shapes = (("chosen", "rejected"), ("prompt", "responses"))
    >>> missing_columns({"prompt": "p", "chosen": "c"}, shapes)
    "missing field 'rejected'"
    >>> missing_columns({"prompt": "p", "responses": []}, shapes)
    ''
    """
    if not required:
        return ""
    lacking = [tuple(c for c in columns if c not in row) for columns in required]
    if any(not gaps for gaps in lacking):
        return ""
    closest = min(lacking, key=len)
    return "missing field " + ", ".join(repr(c) for c in closest)


class Step(ABC):
    """A stage of the pipeline: a function from a batch of rows to a batch of rows.

    Subclasses set :attr:`name`, :attr:`input_columns`, :attr:`required_columns` and
    :attr:`output_columns`, and implement :meth:`prepare` and :meth:`process`; the other
    methods are optional capabilities (see the module docstring).
    """

    #: Short name (``score``, ``sample``, ...).
    name: ClassVar[str] = "step"
    #: The input columns the step reads, in words (for messages and docs).
    input_columns: ClassVar[str] = ""
    #: The same as data: the columns a row must hold, as alternatives (any one suffices; each
    #: a tuple of column names). Checked by the runner; ``()`` checks nothing. A step whose
    #: columns depend on its options sets it per instance.
    required_columns: Columns = ()
    #: The columns it adds or writes.
    output_columns: ClassVar[tuple[str, ...]] = ()
    #: What the progress display calls this run of the step (``None``: its :attr:`name`).
    progress_label: str | None = None

    @abstractmethod
    def prepare(self, row: Mapping[str, Any]) -> Any:
        """Validate and normalize one input row; raise ``ValueError`` saying what is wrong."""

    @abstractmethod
    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        """Outcomes of a batch, aligned with it; call ``advance(rows)`` as work gets done."""

    def settings(self) -> dict[str, Any]:
        """Everything (besides the input) that decides the output; recorded and checked."""
        return {}

    def missing_columns(self, row: Mapping[str, Any]) -> str:
        """What ``row`` lacks of :attr:`required_columns` (``""``: nothing)."""
        return missing_columns(row, self.required_columns)

    # Optional capabilities.

    def fit(self, items: Sequence[RowItem]) -> None:  # noqa: B027 - optional, default: nothing
        """Optional: see every valid row before processing (e.g. fit a goal scale)."""

    def model_stages(self) -> tuple[str, ...]:
        """Optional: the models this step runs one after the other (e.g. ``("strong",
        "weak")``), one stage each, so that a distributed runner can give each model its own
        workers; ``()`` (the default): the step runs in one piece, with :meth:`process`."""
        return ()

    def begin(self, batch: Sequence[RowItem]) -> Any:
        """With :meth:`model_stages`: the state of a chunk before any model ran."""
        raise NotImplementedError(f"step {self.name} has no model stages")

    def run_model(self, role: str, state: Any) -> Any:
        """With :meth:`model_stages`: ``state`` after the model of ``role`` ran."""
        raise NotImplementedError(f"step {self.name} has no model stages")

    def end(self, batch: Sequence[RowItem], state: Any) -> list[Outcome]:
        """With :meth:`model_stages`: the chunk's outcomes once every model ran."""
        raise NotImplementedError(f"step {self.name} has no model stages")
