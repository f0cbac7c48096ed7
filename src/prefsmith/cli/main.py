"""``prefsmith`` command-line entry point: registers the sub-commands.

The command modules import only typer and prefsmith's defaults at import time; the pipeline
(torch, transformers) loads inside each command, so ``prefsmith --help`` stays fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# transformers reads these at import: no per-load progress bars or info logs (prefsmith shows
# its own progress).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import typer

from prefsmith.cli.common import show_warnings_as_lines
from prefsmith.cli.models import models_app
from prefsmith.cli.recipe import run
from prefsmith.cli.report import report
from prefsmith.cli.serve import serve
from prefsmith.cli.stages import register_all

app = typer.Typer(
    help="Preference data for LLM alignment from off-the-shelf open models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup() -> None:
    """Before every command: prefsmith's warnings show as one line each."""
    show_warnings_as_lines()


register_all(app)
app.command("serve")(serve)
app.command()(report)
app.command("run")(run)
app.add_typer(models_app, name="models")

if __name__ == "__main__":
    app()
