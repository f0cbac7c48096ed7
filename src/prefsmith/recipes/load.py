"""Read recipes: YAML files, shipped recipes by name, ``--set`` overrides.

>>> sorted(shipped_recipes())
['cdr-eval', 'dr-sow', 'reward-augmented', 'rmboost']
>>> out = apply_overrides({"stages": [{"name": "sample", "kind": "sample"}]},
...                       ["sample.sampling.n=8", "models.policy=my-model"])
>>> out["stages"][0]["sampling"], out["models"]
({'n': 8}, {'policy': 'my-model'})
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from prefsmith.data.io import load_yaml_file, yaml_reason
from prefsmith.recipes.schema import SECTIONS, Recipe, RecipeError, parse_recipe
from prefsmith.stages.presets import recipe_with_preset


def recipes_dir() -> Path:
    """Folder of the shipped recipes (``prefsmith/resources/recipes``)."""
    return Path(str(files("prefsmith").joinpath("resources/recipes")))


def shipped_recipes() -> dict[str, Path]:
    """Shipped recipe name -> file."""
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def read_recipe_file(source: str | Path) -> tuple[dict[str, Any], str]:
    """The mapping in a recipe file, or in the shipped recipe called ``source``.

    Broken YAML raises :class:`~prefsmith.data.io.BadFileError` naming file, line and column.
    """
    path = Path(source)
    if not path.exists():
        shipped = shipped_recipes()
        if str(source) not in shipped:
            raise FileNotFoundError(
                f"no recipe file {source} and no shipped recipe of that name"
                f" (shipped: {', '.join(shipped)})"
            )
        path = shipped[str(source)]
    data = load_yaml_file(path)
    if not isinstance(data, dict):
        raise RecipeError([f"{path}: a recipe is a mapping with 'stages'"])
    return data, str(path)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with ``STAGE.key[.key...]=VALUE`` (or ``models.``/``engine.``/``run.``)
    overrides applied; values are YAML (``8``, ``true``, ``[a, b]``, ``null``).

    Unknown keys are left for validation, which names them with their path.
    """
    import yaml

    out = copy.deepcopy(dict(data))
    problems = []
    for item in overrides:
        target, sep, text = item.partition("=")
        keys = [k for k in target.strip().split(".") if k]
        if not sep or len(keys) < 2:
            problems.append(f"--set {item}: expected STAGE.KEY=VALUE (e.g. sample.sampling.n=8)")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problems.append(f"--set {item}: {yaml_reason(err)}")
            continue
        head, *rest = keys
        if head in SECTIONS:
            node = out.setdefault(head, {})
        else:
            stages = out.get("stages") if isinstance(out.get("stages"), list) else []
            found = [s for s in stages if isinstance(s, dict) and s.get("name") == head]
            if not found:
                names = [str(s.get("name")) for s in stages if isinstance(s, dict)]
                problems.append(
                    f"--set {item}: no stage or section {head!r}"
                    f" (stages: {', '.join(names)}; sections: {', '.join(SECTIONS)})"
                )
                continue
            node = found[0]
        for key in rest[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[rest[-1]] = value
    if problems:
        raise RecipeError(problems)
    return out


def load_recipe(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    until: str | None = None,
    preset: str | None = None,
) -> Recipe:
    """Read, override and validate a recipe (a file, a shipped name, or a mapping).

    ``until`` keeps the stages up to and including that one. ``preset`` (or the recipe's
    ``preset:`` key) puts a preset's settings over the file's (:mod:`prefsmith.stages.presets`);
    ``overrides`` win over both.

    >>> recipe = load_recipe("dr-sow", ["sample.sampling.n=2"])
    >>> [s.kind for s in recipe.stages], recipe.stage("sample").config.sampling.n
    (['sample', 'pairs', 'train', 'judge'], 2)
    """
    if isinstance(source, Mapping):
        data, where = dict(source), ""
    else:
        data, where = read_recipe_file(source)
    data = apply_overrides(data, overrides)
    preset = preset or data.get("preset")
    if preset:
        data = apply_overrides(recipe_with_preset(data, str(preset)), overrides)
    if until is not None:
        stages = data.get("stages") or []
        names = [s.get("name") for s in stages if isinstance(s, dict)]
        if until not in names:
            raise RecipeError([f"--until {until}: no such stage (stages: {', '.join(names)})"])
        data["stages"] = stages[: names.index(until) + 1]
    recipe = parse_recipe(data, where)
    return recipe
