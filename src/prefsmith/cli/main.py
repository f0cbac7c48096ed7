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

from prefsmith.cli.baselines import rlaif, rlcd, west_of_n
from prefsmith.cli.common import show_warnings_as_lines
from prefsmith.cli.evaluate import evaluate, study
from prefsmith.cli.generate import pairs, rmboost, sample
from prefsmith.cli.models import models_app
from prefsmith.cli.recipe import run
from prefsmith.cli.report import report
from prefsmith.cli.score import score
from prefsmith.cli.train import judge, relabel, train

app = typer.Typer(
    help="Preference data for LLM alignment from off-the-shelf open models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup() -> None:
    """Before every command: prefsmith's warnings show as one line each."""
    show_warnings_as_lines()


app.command()(score)
app.command("eval")(evaluate)
app.command()(study)
app.command()(sample)
app.command()(pairs)
app.command()(rmboost)
app.command()(rlaif)
app.command()(rlcd)
app.command("west-of-n")(west_of_n)
app.command()(relabel)
app.command()(train)
app.command()(judge)
app.command()(report)
app.command("run")(run)
app.add_typer(models_app, name="models")

if __name__ == "__main__":
    app()
