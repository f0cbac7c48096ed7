"""What every timing benchmark records: the machine, the packages, the load before each task.

A benchmark imports this (``import _machine``: the scripts run from ``benchmarks/``), makes a
:class:`LoadLog`, calls :meth:`LoadLog.check` right before each timed task, prints
:func:`header` and :meth:`LoadLog.note` with its table, and puts :meth:`LoadLog.record` in
its JSON. A task that starts while the 1-minute load average exceeds the core count is
flagged, not refused: the figures are kept and marked ``LOADED`` (``"loaded": true`` in the
JSON), since on a shared machine they are often the only ones there are; quote them as such.
"""

from __future__ import annotations

from typing import Any

from prefsmith.models.hardware import (
    cpu_facts,
    describe_cpu,
    load_note,
    load_status,
    package_versions,
)


def machine() -> dict[str, Any]:
    """The CPU facts and package versions of this process."""
    return {"cpu": cpu_facts(), "packages": package_versions()}


def header() -> str:
    """The line printed at the top of a table: CPU model, bfloat16 support, torch threads."""
    return describe_cpu(cpu_facts())


def note_of(tasks: list[dict[str, Any]]) -> str:
    """``LOADED: load X > N cores; figures not comparable`` with the highest load, or ``""``."""
    loaded = [t for t in tasks if t["loaded"]]
    return load_note(max(loaded, key=lambda t: t["load_1m"])) if loaded else ""


class LoadLog:
    """The load average before each timed task of one benchmark run."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def check(self, task: str) -> dict[str, Any]:
        """Record the load now, before ``task`` is timed; print a ``LOADED`` line if it is."""
        status = {"task": task, **load_status()}
        self.tasks.append(status)
        if note := load_note(status):
            print(f"{task}: {note}", flush=True)
        return status

    @property
    def loaded(self) -> bool:
        """Whether any task started on a loaded machine."""
        return any(t["loaded"] for t in self.tasks)

    def note(self) -> str:
        """The flag of :func:`note_of` for this run's tasks."""
        return note_of(self.tasks)

    def record(self, **facts: Any) -> dict[str, Any]:
        """For the JSON: ``machine`` (with ``facts`` added), ``loaded`` and ``load_before``."""
        return {
            "machine": {**facts, **machine()},
            "loaded": self.loaded,
            "load_before": self.tasks,
        }
