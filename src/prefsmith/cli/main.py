"""``prefsmith`` command-line entry point: registers the sub-commands."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import typer

from prefsmith.cli.evaluate import evaluate, study
from prefsmith.cli.generate import pairs, rmboost, sample
from prefsmith.cli.models import models_app
from prefsmith.cli.report import report
from prefsmith.cli.score import score
from prefsmith.cli.train import judge, relabel, train

app = typer.Typer(
    help="Preference data for LLM alignment from off-the-shelf open models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(score)
app.command("eval")(evaluate)
app.command()(study)
app.command()(sample)
app.command()(pairs)
app.command()(rmboost)
app.command()(relabel)
app.command()(train)
app.command()(judge)
app.command()(report)
app.add_typer(models_app, name="models")


def _quiet_libraries() -> None:
    """Hide transformers' per-load progress bars; prefsmith shows its own progress."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


_quiet_libraries()

if __name__ == "__main__":
    app()
