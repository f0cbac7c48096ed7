"""``prefsmith run``: a recipe's stages, from prompts to a tuned, judged model, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefsmith.cli.common import console, fail, user_errors

RecipeName = Annotated[
    str,
    typer.Argument(
        help="A recipe YAML file, or a shipped recipe: dr-sow, reward-augmented, rmboost, cdr-eval."
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a field: STAGE.KEY=VALUE or models./engine./run.KEY=VALUE, e.g."
        " sample.sampling.n=8 (YAML values; repeatable).",
    ),
]


def run(
    recipe: RecipeName,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run folder (default: runs/<recipe>).")
    ] = None,
    set_: Sets = None,
    until: Annotated[
        str | None, typer.Option(help="Run the stages up to and including this one.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Published hyperparameters over the recipe's CPU-sized ones: paper (each value"
            " with its source in resources/presets/paper.yaml); --set wins over it."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate and print the recipe; run nothing.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe: each stage's output in the run folder, resumable, one summary."""
    from prefsmith.recipes import RecipeRunError, load_recipe, run_recipe

    with user_errors():
        source = Path(recipe) if Path(recipe).exists() else recipe
        loaded = load_recipe(source, set_ or (), until=until, preset=preset)
    if check:
        _print_valid(loaded)
        return
    try:
        with user_errors():
            result = run_recipe(
                loaded,
                output,
                progress=progress,
                say=lambda text: console.print(text, highlight=False, markup=False),
            )
    except RecipeRunError as err:
        fail(str(err))
        return
    console.print(
        f"recipe {result.recipe}: {len(result.stages)} stages in {result.seconds:.0f}s;"
        f" summary in {result.summary_md}",
        highlight=False,
    )


def _print_valid(recipe: Any) -> None:
    """The recipe as it will run, and a line saying it is valid."""
    import yaml

    console.print(yaml.safe_dump(recipe.raw, sort_keys=False), highlight=False, markup=False)
    stages = ", ".join(f"{s.name} ({s.kind})" for s in recipe.stages)
    console.print(f"recipe {recipe.name} is valid: {stages}", highlight=False)
