"""Recipes: a method's whole loop (prompts to data to a tuned, judged model) as one config.

A recipe is YAML naming the library's own stage configs (see :mod:`prefsmith.recipes.schema`);
:func:`run_recipe` runs it in a run folder, resumably, and writes one summary
(:mod:`prefsmith.recipes.run`). ``prefsmith run RECIPE`` is the command line.

>>> from prefsmith.recipes import load_recipe, shipped_recipes
>>> sorted(shipped_recipes())
['cdr-eval', 'dr-sow', 'reward-augmented', 'rmboost']
"""

from __future__ import annotations

from prefsmith.recipes.load import apply_overrides, load_recipe, shipped_recipes
from prefsmith.recipes.run import RecipeResult, RecipeRunError, StageResult, run_recipe
from prefsmith.recipes.schema import Recipe, RecipeError, Stage, parse_recipe

__all__ = [
    "Recipe",
    "RecipeError",
    "RecipeResult",
    "RecipeRunError",
    "Stage",
    "StageResult",
    "apply_overrides",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
    "shipped_recipes",
]
