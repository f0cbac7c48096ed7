"""Shared pieces of the command line: the console, error exits, options into configs.

Heavy modules (torch, transformers, the pipeline) are imported inside the functions that need
them, deliberately, so that ``prefsmith --help`` does not load them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

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
