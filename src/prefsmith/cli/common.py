"""Shared pieces of the command line: the console, error exits, options into configs.

Heavy modules (torch, transformers, the pipeline) are imported inside the functions that need
them, deliberately, so that ``prefsmith --help`` does not load them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from prefsmith.defaults import DEVICES, ON_ERROR

console = Console()


def fail(message: str) -> None:
    """Print ``message`` as an error (as plain text: ``[vllm]`` stays) and exit with status 2.

    The message is not wrapped: a ``file:line:column`` in it stays whole, on one line.
    """
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def warning_line(message: str) -> None:
    """Print ``message`` as one ``warning:`` line (plain text, not wrapped)."""
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _is_own(category: type[Warning]) -> bool:
    return category.__module__.startswith("prefsmith.")


def show_warnings_as_lines() -> None:
    """Show prefsmith's own warnings (e.g. ``SlowDtypeWarning``) as one ``warning:`` line each.

    Python would print the file, the line number and the source line of ``warnings.warn``
    under it; a user of the command needs the message only. Other packages' warnings are
    shown as before. Installing twice changes nothing.
    """
    previous = warnings.showwarning
    if getattr(previous, "__name__", "") == "_show_warning_line":
        return

    def _show_warning_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if _is_own(category):
            warning_line(str(message))
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = _show_warning_line


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; otherwise exit with a message naming ``option``."""
    if value not in choices:
        fail(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return value


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (bad rows, missing models, bad settings) into messages."""
    from prefsmith.data.ray_executor import RayNotInstalledError
    from prefsmith.data.rows import RowError
    from prefsmith.data.runner import RunSettingsError
    from prefsmith.models.engines.base import EngineNotInstalledError
    from prefsmith.models.loading import ModelNotFoundError
    from prefsmith.rewards.base import IncompatibleModelsError
    from prefsmith.routing.domains import DomainsError

    known = (
        RowError,
        RunSettingsError,
        ModelNotFoundError,
        IncompatibleModelsError,
        DomainsError,
        EngineNotInstalledError,
        RayNotInstalledError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
    )
    try:
        yield
    except known as err:
        fail(str(err))


def default_output(kind: str, source: Path, suffix: str = ".jsonl") -> Path:
    """``runs/<kind>-<input name><suffix>``."""
    return Path("runs") / f"{kind}-{source.name.split('.')[0]}{suffix}"


def engine_spec(engine: str) -> tuple[str, Any]:
    """``--engine`` (``hf``, ``vllm``, ``vllm:KEY=VALUE,...``) as (kind, vLLM options).

    The engine's package is checked now, before any row is read: a missing extra (``vllm``) is
    named.
    """
    from prefsmith.models.engines import engine_class, parse_engine

    with user_errors():
        kind, vllm_options = parse_engine(engine)
        engine_class(kind).check_installed()
    return kind, vllm_options


def model_options(dtype: str, device: str, threads: int | None, **batching: Any) -> Any:
    """A :class:`~prefsmith.models.pool.ModelOptions` from the shared options."""
    from prefsmith.defaults import SCORING_DTYPES
    from prefsmith.models.pool import ModelOptions

    check_choice("--dtype", dtype, SCORING_DTYPES)
    check_choice("--device", device, DEVICES)
    kind, vllm_options = engine_spec(batching.pop("engine", "hf"))
    return ModelOptions(
        dtype=dtype,
        device=device,
        threads=threads,
        engine=kind,
        vllm_options=vllm_options,
        **batching,
    )


def generator(model: str, dtype: str, device: str, threads: int | None, engine: str) -> Any:
    """The policy to sample from: a :class:`~prefsmith.models.loading.LazyModel` (no float64)."""
    from prefsmith.defaults import GENERATION_DTYPES
    from prefsmith.models.loading import LazyModel, LoadOptions

    check_choice("--dtype", dtype, GENERATION_DTYPES)
    check_choice("--device", device, DEVICES)
    kind, vllm_options = engine_spec(engine)
    options = LoadOptions(dtype=dtype, device=device, threads=threads)  # type: ignore[arg-type]
    return LazyModel(model, options, kind, vllm_options)


def customization(domains: Path | None, router: str | None, exemplars: str) -> Any:
    """The customization asked for by ``--domains``/``--router``, or ``None``."""
    if domains is None and router is None:
        return None
    from prefsmith.routing.customize import EXEMPLAR_STYLES, Customization
    from prefsmith.routing.routers import ROUTERS

    check_choice("--router", router or "embedding", ROUTERS)
    check_choice("--exemplars", exemplars, EXEMPLAR_STYLES)
    with user_errors():
        return Customization(domains, router or "embedding", exemplars)  # type: ignore[arg-type]


def run_options(
    on_error: str,
    chunk_size: int,
    limit: int | None,
    progress: bool,
    workers: int = 0,
    ray_address: str | None = None,
    gpus_per_worker: float = 0.0,
    split_models: bool = False,
) -> Any:
    """A :class:`~prefsmith.data.runner.RunOptions` from the shared options.

    With ``--workers`` the Ray extra is checked now, before any row is read or model loaded.
    """
    from prefsmith.data.runner import RunOptions

    check_choice("--on-error", on_error, ON_ERROR)
    with user_errors():
        if workers:
            from prefsmith.data.ray_executor import import_ray

            import_ray()
        return RunOptions(
            on_error,  # type: ignore[arg-type]
            chunk_size,
            limit,
            progress,
            workers=workers,
            ray_address=ray_address,
            gpus_per_worker=gpus_per_worker,
            split_models=split_models,
        )


def check_rows(source: Path, prepare: Any, options: Any) -> Any:
    """Read the input once and, with ``--on-error raise``, check every row with ``prepare``
    (which needs no model) before any model loads: a bad row stops the command here.

    Returns the rows read (a :class:`~prefsmith.data.runner.ReadInput`), for :func:`run_step`:
    the runner then checks them with the step's own ``prepare`` without reading the file again.
    """
    from prefsmith.data.runner import first_error, read_input, read_items

    with user_errors():
        rows = read_input(source, options.limit)
        if options.on_error == "raise":
            _, bad = read_items(rows, prepare)
            if bad:
                raise first_error(bad, None)
    return rows


def run_step(source: Any, output: Path, step: Any, options: Any) -> Any:
    """Run ``step`` with the row runner, print its summary, and warn when most rows dropped."""
    from prefsmith.data.runner import run_rows

    with user_errors():
        summary = run_rows(source, output, step, options)
    from prefsmith.data.advice import drop_warning

    console.print(summary.describe(), highlight=False)
    warning = drop_warning(summary.inputs, summary.dropped, "cli")
    if warning:
        warning_line(warning)
    return summary


def write_html_report(source: Path) -> None:
    """Write ``prefsmith report``'s HTML page for ``source`` and print where it went."""
    from prefsmith.report import write_report

    with user_errors():
        path = write_report(source)
    console.print(f"report: {path} (open it in a browser)", highlight=False)
