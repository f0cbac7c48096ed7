"""The distributed side of the row runner: a step's chunks on a Ray cluster (``prefsmith[ray]``).

:func:`~prefsmith.data.runner.run_rows` with ``RunOptions(workers=N)`` keeps everything about
files in this process (reading, validation, settings, rejected rows, the checkpoint, progress)
and sends only the work out: the pending chunks stream through ``ray.data`` to an actor pool
of ``N`` workers (``map_batches(..., compute=ActorPoolStrategy(size=N), num_cpus=...,
num_gpus=...)``). Each worker unpickles the step once, so it holds its own models (loaded
lazily on its first chunk, on its own CPU or GPU), and turns one chunk of validated rows into
outcomes, exactly as the local runner's ``step.process`` does.

With ``split_models=True`` a step that runs several models one after the other (the score and
eval steps of a density ratio: strong, then weak) is split by model: one actor pool per model,
``N`` actors each, so that each actor (each GPU) holds one model; a chunk's requests and the
strong model's log-probs stream on to the weak model's pool, which combines them into rewards.
The chunk index is the row key that joins the stages.

Results come back in input order (``preserve_order``), and the driver appends and checkpoints
them chunk by chunk as the local runner does: a run killed at any moment resumes (locally or
on Ray) to the same bytes, and an output started on Ray can be finished in one process and the
other way round; the number of workers is not a setting.

A worker that dies is restarted and its chunk retried by Ray Data (its actor pools default to
``max_restarts=-1, max_task_retries=-1``); since only the driver writes, a retried chunk is
neither lost nor written twice. Outputs equal the single-process run's because each chunk is
the same rows as in that run and prefsmith's engines give batch-invariant results.

Everything here imports Ray lazily: without the extra, asking for workers raises
:class:`RayNotInstalledError` naming it.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from prefsmith.data.step import Outcome, RowItem, Step

INSTALL_HINT = 'pip install "prefsmith[ray]"'


class RayNotInstalledError(ImportError):
    """``workers`` was asked for but Ray Data is not installed."""


def import_ray() -> Any:
    """``ray`` with ``ray.data``, or :class:`RayNotInstalledError` saying what to install."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RayNotInstalledError(
            f"--workers runs the rows on Ray, which is not installed here ({err});"
            f" install it with: {INSTALL_HINT}"
        ) from err
    return ray


def start_ray(address: str | None, workers: int, cpus_per_worker: float) -> Any:
    """Connect to the cluster at ``address``, or start a local one that fits ``workers``."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    # Ray's C++ core logs an error-level notice for every Ray Data actor that can restart
    # (ray-project/ray#53727), which is how prefsmith retries workers; real failures still
    # reach the driver as Python exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    common: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "include_dashboard": False,
        # Workers import prefsmith as the driver does (an editable install or the same wheel).
        "runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    }
    if address:
        ray.init(address=address, **common)
    else:
        cpus = max(int(workers * cpus_per_worker + 0.999), os.cpu_count() or 1)
        ray.init(num_cpus=cpus, **common)
    for name in ("ray", "ray.data"):  # prefsmith shows the progress; Ray's INFO lines go
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    return ray


def chunk_worker(
    step_bytes: bytes, role: str | None = None, first: bool = True, last: bool = True
) -> type:
    """A Ray Data actor class that holds the pickled step (unpickled once per actor).

    With ``role=None`` it runs the whole step on a chunk. With a model ``role`` it is one stage
    of a step split by model (``step.model_stages()``): the first stage begins the chunk, each
    stage runs its model, the last one ends it into outcomes. The step travels inside the
    class, not as a constructor argument, so that a restarted actor does not depend on an
    object-store entry that may be gone.
    """

    class ChunkWorker:
        def __init__(self) -> None:
            from ray import cloudpickle

            self.step = cloudpickle.loads(step_bytes)

        def run(self, chunk: Any, state: Any) -> Any:
            if role is None:
                return self.step.process(chunk, lambda rows: None)
            if first:
                state = self.step.begin(chunk)
            state = self.step.run_model(role, state)
            return self.step.end(chunk, state) if last else state

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            out = []
            for chunk_bytes, state_bytes in zip(batch["chunk"], batch["state"], strict=True):
                chunk, state = pickle.loads(chunk_bytes), pickle.loads(state_bytes)
                out.append(pickle.dumps(self.run(chunk, state)))
            return {"index": batch["index"], "chunk": batch["chunk"], "state": out}

    return ChunkWorker


def ray_outcomes(
    step: Step,
    chunks: Sequence[Sequence[RowItem]],
    *,
    workers: int,
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    split_models: bool = False,
) -> Iterator[tuple[Sequence[RowItem], list[Outcome]]]:
    """Each chunk with the outcomes ``step`` made of it on Ray actors, in input order.

    ``workers`` actors run the whole step; with ``split_models`` and a step that has model
    stages (``step.model_stages()``, e.g. ``("strong", "weak")`` for a density ratio), each
    model gets its own pool of ``workers`` actors, so that each actor (each GPU) holds one
    model, and the chunks stream from one model's pool to the next.
    """
    if not chunks:
        return
    ray = start_ray(address, workers, cpus_per_worker)
    from ray import cloudpickle

    step_bytes = cloudpickle.dumps(step)
    roles = step.model_stages() if split_models else ()
    stages = [(role, k == 0, k == len(roles) - 1) for k, role in enumerate(roles)] or [
        (None, True, True)
    ]
    resources: dict[str, float] = {"num_cpus": cpus_per_worker}
    if gpus_per_worker:
        resources["num_gpus"] = gpus_per_worker
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    empty = pickle.dumps(None)
    items = [
        {"index": i, "chunk": pickle.dumps(list(c)), "state": empty} for i, c in enumerate(chunks)
    ]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    for role, first, last in stages:
        dataset = dataset.map_batches(
            chunk_worker(step_bytes, role, first, last),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(chunks))),
            **resources,
        )
    for row in dataset.iter_rows():
        index = int(row["index"])
        yield chunks[index], pickle.loads(row["state"])
