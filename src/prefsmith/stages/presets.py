"""Presets: the published hyperparameters of the methods, one option away.

A preset is a YAML file of settings by stage kind, written as a recipe writes a stage (a
``train`` stage's settings by its method), each value with its source in a comment; the shipped
one is ``paper`` (``resources/presets/paper.yaml``). A stage command takes it as ``--preset
paper`` (the settings given on the command line win over it); a recipe as ``prefsmith run
RECIPE --preset paper`` (the preset wins over the recipe file's CPU-sized values, ``--set``
over the preset). Without a preset the CPU-sized defaults stay.

>>> stage_preset("paper", "train", "simpo")["train"]["beta"]
2.5
>>> with_preset({"preset": "paper", "train": {"method": "dpo", "beta": 0.05}}, "train")["train"]
... # doctest: +ELLIPSIS
{'finetune': 'full', 'beta': 0.05, 'learning_rate': 5e-07, ...}
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from prefsmith.rewards.fields import resource_path

#: The shipped presets.
PresetName = Literal["paper"]
PRESETS: tuple[str, ...] = ("paper",)
#: A ``train`` stage's method when its settings do not name one (``TrainConfig.method``).
DEFAULT_METHOD = "dpo"


def preset_file(name: str) -> Path:
    """The file of preset ``name`` (a shipped name, else a YAML path).

    >>> preset_file("paper").name
    'paper.yaml'
    """
    if name in PRESETS:
        return resource_path(f"prefsmith:presets/{name}.yaml")
    path = Path(name)
    if not path.exists():
        raise ValueError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)} or a file")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """Preset ``name`` as a mapping of stage kind -> settings."""
    from prefsmith.data.io import load_yaml_file

    data = load_yaml_file(preset_file(name)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"preset {name!r}: expected a mapping of stage kind -> settings")
    return data


def stage_preset(name: str, kind: str, method: str | None = None) -> dict[str, Any]:
    """The settings preset ``name`` gives a stage of ``kind`` (``train``: of ``method``);
    ``{}`` where it sets none."""
    values = load_preset(name).get(kind) or {}
    if kind == "train":
        values = values.get(method or DEFAULT_METHOD) or {}
    return copy.deepcopy(values)


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values put in, nested mappings merged key by key.

    >>> merged({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}})
    {'a': {'x': 1, 'y': 5}, 'b': 3}
    """
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _method(values: Mapping[str, Any]) -> str | None:
    train = values.get("train")
    return train.get("method") if isinstance(train, Mapping) else None


def with_preset(values: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A stage's settings with its ``preset`` (if any) filled in under them: the settings
    given win (a command line's options, a recipe stage's keys). The preset's ``run`` section
    is left out here (a recipe-level preset sets it: :func:`recipe_with_preset`)."""
    name = values.get("preset")
    if not name:
        return dict(values)
    preset = stage_preset(str(name), kind, _method(values))
    preset.pop("run", None)
    return merged(preset, values)


def recipe_with_preset(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A recipe mapping with preset ``name`` put over each stage (the preset wins over the
    file's values; apply ``--set`` after it) and ``preset: NAME`` recorded at the top.

    >>> out = recipe_with_preset({"stages": [{"name": "s", "kind": "sample",
    ...                                       "sampling": {"n": 2, "seed": 3}}]}, "paper")
    >>> out["preset"], out["stages"][0]["sampling"]["n"], out["stages"][0]["sampling"]["seed"]
    ('paper', 8, 3)
    """
    out = copy.deepcopy(dict(data))
    stages = out.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if isinstance(stage, Mapping) and isinstance(stage.get("kind"), str):
            stages[i] = merged(stage, stage_preset(name, stage["kind"], _method(stage)))
    out["preset"] = name
    return out
