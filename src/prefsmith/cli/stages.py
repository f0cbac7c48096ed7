"""Every stage's command, derived from its config (:data:`prefsmith.stages.STAGES`).

An option's name, type, default, choices and help come from the config field (help from the
class's ``Attributes:`` docstring): nested configs are flattened (``sampling.n`` is ``--n``;
a name two sections share is prefixed by its section, ``--rmboost-seed``), and options are
grouped in the help by where they belong (models, the stage's sections, engine, run, output).
Every command also takes ``--config FILE`` (YAML of the same names, as TRL's ``--config``)
and ``--set NAME=VALUE``. A command's body is: parse, build the config, one
:func:`~prefsmith.stages.run_stage` call, show the result.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import typer

from prefsmith.cli.common import user_errors
from prefsmith.cli.show import show_result
from prefsmith.stages.base import STAGES, StageKind
from prefsmith.stages.fields import Leaf, choices, leaves, unwrap_optional
from prefsmith.stages.presets import with_preset
from prefsmith.stages.tune import SET_BY_STAGE

#: Fields shown under "Models" wherever they are.
MODEL_FIELDS = (
    "model",
    "strong",
    "weak",
    "scorer",
    "scorers",
    "reduction",
    "rendering",
    "judge",
    "models",
)
#: Short options.
SHORT = {"--model": "-m", "--n": "-n"}
#: Repeatable options whose values may hold commas themselves (scorer specs, model names):
#: not split on commas.
WHOLE_VALUES = ("scorers", "models", "response_markers", "end_markers")
#: Fields a stage fixes, not offered as options.
HIDDEN = {
    "rmboost": ("sampling.n",),
    "rlaif": ("sampling.n",),
    "rlcd": ("sampling.n", "sampling.system_prompt"),
    "train": tuple(f"train.{name}" for name in SET_BY_STAGE),
    "eval": ("scorer", "reduction"),  # --scorer is repeatable: the scorers field
}


@dataclass(frozen=True)
class Option:
    """One command-line option and the setting it fills.

    Attributes:
        param: The Python parameter's name.
        flag: The option (``--max-new-tokens``).
        target: ``config``, ``engine`` or ``run``: which object the value goes to.
        leaf: The setting.
        panel: The help group.
    """

    param: str
    flag: str
    target: str
    leaf: Leaf
    panel: str


def _panel(leaf: Leaf) -> str:
    if (leaf.name in MODEL_FIELDS and len(leaf.path) <= 2) or leaf.path == ("baseline",):
        return "Models"
    if len(leaf.path) > 1 and leaf.path[-2] == "models":  # a ModelOptions section
        return "Engine"
    return leaf.path[-2].replace("_", " ").capitalize() if len(leaf.path) > 1 else "Options"


def options_of(kind: StageKind) -> list[Option]:
    """The options of ``kind``'s command: its config's settings, then the engine's and the
    row runner's (without ``progress``, an output option)."""
    from prefsmith.data.runner import RunOptions
    from prefsmith.models.pool import ModelOptions

    groups = [("config", [x for x in leaves(kind.config) if x.dotted != kind.argument])]
    if kind.engine:
        groups.append(("engine", leaves(ModelOptions)))
    if kind.row_runner:
        groups.append(("run", [x for x in leaves(RunOptions) if x.name != "progress"]))
    return flatten(groups, kind.flags, HIDDEN.get(kind.name, ()))


def flatten(
    groups: list[tuple[str, list[Leaf]]],
    flags: Mapping[str, str] | None = None,
    hidden: tuple[str, ...] = (),
) -> list[Option]:
    """Options for settings (``(target, leaves)`` groups): a leaf's own name, or its dotted
    path where an earlier leaf has that name; ``flags`` respell config settings."""
    usable = [
        (target, leaf)
        for target, group in groups
        for leaf in group
        if _cli_type(leaf) is not None and leaf.dotted not in hidden
    ]
    counts: dict[str, int] = {}
    for _, leaf in usable:
        counts[leaf.name] = counts.get(leaf.name, 0) + 1
    out, seen = [], set()
    for target, leaf in usable:
        name = leaf.name if counts[leaf.name] == 1 or leaf.name not in seen else leaf.dotted
        seen.add(leaf.name)
        flag = (flags or {}).get(leaf.dotted) if target == "config" else None
        flag = flag or "--" + name.replace(".", "-").replace("_", "-")
        panel = {"engine": "Engine", "run": "Run"}.get(target) or _panel(leaf)
        out.append(Option(flag.lstrip("-").replace("-", "_"), flag, target, leaf, panel))
    return out


def config_command(
    config: type, call: Callable[[Any], None], summary: str, flags: Mapping[str, str] = {}
) -> Callable[..., None]:
    """A command whose options are every setting of dataclass ``config`` (nested configs
    flattened, as for the stages), whose body builds ``config`` and passes it to ``call``."""
    from prefsmith.recipes.schema import build

    options = flatten([("config", leaves(config))], flags)

    def command(**values: Any) -> None:
        with user_errors():
            settings: dict[str, Any] = {}
            for option in options:
                if values.get(option.param) is not None:
                    _put(settings, option.leaf.path, _value(option, values[option.param]))
            problems: list[str] = []
            built = build(config, settings, "", problems)
            if problems:
                raise ValueError("; ".join(p.lstrip(".") for p in problems))
        call(built)

    ordered = sorted(options, key=lambda o: o.panel != "Models")
    params = [_parameter(o, {}) for o in ordered]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = summary
    return command


def _cli_type(leaf: Leaf) -> Any:
    """The type typer parses the option as, or ``None`` for settings a recipe alone sets."""
    inner, _ = unwrap_optional(leaf.hint)
    if choices(leaf.hint) is not None or inner in (str, int, float):
        return inner if choices(leaf.hint) is None else str
    if inner is bool:
        return bool
    if typing.get_origin(inner) in (tuple, list):
        return list[str]
    return None


def terminal_help(text: str) -> str:
    """A docstring entry as terminal help: ````x```` as ``x``, brackets kept (not markup).

    >>> print(terminal_help("``hf`` or ``vllm`` (``pip install 'prefsmith[vllm]'``)"))
    hf or vllm (pip install 'prefsmith\\[vllm]')
    """
    from rich.markup import escape

    return escape(text.replace("``", ""))


def _shown_default(leaf: Leaf, defaults: Mapping[str, Any]) -> str | bool:
    default = defaults.get(leaf.name, leaf.default)
    if isinstance(default, tuple | list):
        shown = ",".join(map(str, default))
        return shown if default and "\n" not in shown else False
    return False if default is None or default is inspect.Parameter.empty else str(default)


def _parameter(option: Option, defaults: Mapping[str, Any]) -> inspect.Parameter:
    leaf, kind = option.leaf, _cli_type(option.leaf)
    decls = [option.flag]
    if kind is bool:
        decls = [f"{option.flag}/--no-{option.flag.removeprefix('--')}"]
    elif option.flag in SHORT:
        decls.append(SHORT[option.flag])
    allowed = choices(leaf.hint)
    extra = ""
    if kind == list[str]:
        extra = " (repeatable)" if leaf.name in WHOLE_VALUES else " (repeatable or comma-separated)"
    info = typer.Option(
        None,
        *decls,
        help=terminal_help(leaf.help or leaf.dotted) + extra,
        rich_help_panel=option.panel,
        show_default=_shown_default(leaf, defaults if option.target == "run" else {}),
    )
    annotation = (Literal[allowed] if allowed else kind) | None  # type: ignore[valid-type]
    return _keyword(option.param, info, annotation)


def _keyword(name: str, info: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=annotation)  # fmt: skip


def _common_parameters(kind: StageKind) -> list[inspect.Parameter]:
    """The argument and the output options every stage command takes."""
    argument_leaf = next(x for x in leaves(kind.config) if x.dotted == kind.argument)
    default = kind.default_input
    argument = typer.Argument(
        None,
        metavar=kind.argument.upper(),
        help=terminal_help(argument_leaf.help) + (f" Default: {default}." if default else ""),
        show_default=False,
    )
    output_help = "Output file (.jsonl or .parquet)." if kind.output == "rows" else "Folder."
    config_help = (
        "YAML file of settings by option name (underscores), e.g. `max_new_tokens: 64`;"
        " options given on the command line win."
    )
    set_help = "NAME=VALUE (YAML value) for any setting, also those without an option; repeatable."
    panel = {"rich_help_panel": "Output"}
    return [
        _keyword("argument", argument, str | None),
        _keyword(
            "output", typer.Option(None, "--output", "-o", help=output_help, **panel), Path | None
        ),
        _keyword(
            "config_file", typer.Option(None, "--config", help=config_help, **panel), Path | None
        ),
        _keyword("sets", typer.Option(None, "--set", help=set_help, **panel), list[str] | None),
        _keyword("progress", typer.Option(True, help="Show progress.", **panel), bool),
    ]


def stage_command(kind: StageKind) -> Callable[..., None]:
    """The typer command of ``kind``."""
    options = options_of(kind)

    def command(**values: Any) -> None:
        run_stage_command(kind, options, values)

    # Typer shows the panels in the order their first option comes: models first.
    ordered = sorted(options, key=lambda o: o.panel != "Models")
    params = [_parameter(o, kind.run_defaults) for o in ordered] + _common_parameters(kind)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = kind.summary
    command.__name__ = kind.name.replace("-", "_")
    return command


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings by name from ``--config`` (a YAML file), then ``--set`` over it."""
    import yaml

    from prefsmith.data.io import load_yaml_file, yaml_reason

    given: dict[str, Any] = {}
    if values.get("config_file") is not None:
        loaded = load_yaml_file(values["config_file"]) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{values['config_file']}: expected a mapping of option: value")
        given |= {str(k).replace("-", "_"): v for k, v in loaded.items()}
    for item in values.get("sets") or ():
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            given[key.strip().replace("-", "_")] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"option '{key.strip()}': {yaml_reason(err)}") from None
    return given


def settings_from(
    kind: StageKind, options: list[Option], values: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The nested settings (``{"config": {...}, "engine": {...}, "run": {...}}``) of a command
    line: ``--config`` file, then ``--set``, then the options given."""
    by_name = {o.param: o for o in options}
    by_name |= {o.leaf.dotted.replace(".", "_"): o for o in options}
    by_name |= {o.leaf.name: o for o in options if o.leaf.name not in by_name}  # field names
    # Settings without an option (a dict, a list-or-text field): by name, in files and --set.
    offered = {o.leaf.dotted for o in options}
    others = {
        name: Option(name, "", "config", leaf, "")
        for leaf in leaves(kind.config)
        if leaf.dotted not in offered and leaf.dotted != kind.argument
        for name in (leaf.name, leaf.dotted.replace(".", "_"))
    }
    given = _given(values) | {k: v for k, v in values.items() if k in by_name and v is not None}
    argument_key = kind.flags.get(kind.argument, kind.argument).lstrip("-").replace("-", "_")
    settings: dict[str, dict[str, Any]] = {"config": {}, "engine": {}, "run": {}}
    for key, value in given.items():
        if key in (argument_key, kind.argument):
            settings["config"][kind.argument] = value
            continue
        option = by_name.get(key) or others.get(key)
        if option is None:
            known = ", ".join(sorted(o.param for o in options))
            raise ValueError(f"unknown setting {key!r} for {kind.name} (known: {known})")
        _put(settings[option.target], option.leaf.path, _value(option, value))
    if values.get("argument") is not None:
        settings["config"][kind.argument] = values["argument"]
    return settings


def _value(option: Option, value: Any) -> Any:
    """A repeatable option's values, each split on commas unless it may hold commas."""
    split = _cli_type(option.leaf) == list[str] and option.leaf.name not in WHOLE_VALUES
    if isinstance(value, list) and split:
        return [part.strip() for v in value for part in str(v).split(",") if part.strip()]
    return value


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def build_settings(kind: StageKind, settings: Mapping[str, Mapping[str, Any]]) -> tuple:
    """(config, engine options, run options) from nested settings; raises ``ValueError``
    listing every problem with its setting's name."""
    from prefsmith.data.runner import RunOptions
    from prefsmith.models.pool import ModelOptions
    from prefsmith.recipes.schema import build

    problems: list[str] = []
    config_values = with_preset(settings["config"], kind.name)  # the options given win
    if kind.default_input and kind.argument not in config_values:
        config_values[kind.argument] = kind.default_input
    if kind.argument not in config_values and _required(kind.config, kind.argument):
        problems.append(f"missing {kind.argument.upper()}: give it as the argument")
    config = build(kind.config, config_values, kind.name, problems)
    engine = build(ModelOptions, settings["engine"], "engine", problems)
    run = build(RunOptions, {**kind.run_defaults, **settings["run"]}, "run", problems)
    if problems:
        raise ValueError("; ".join(p.removeprefix(f"{kind.name}.") for p in problems))
    return config, engine, run


def _required(cls: type, name: str) -> bool:
    import dataclasses

    return any(
        f.name == name
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        for f in fields(cls)
    )


def default_output(kind: Any, source: Any) -> Path:
    """``runs/<kind>-<input name>.jsonl`` for a row stage, ``runs/<kind>`` for the others.

    >>> str(default_output(STAGES["score"], "prefsmith:rewardbench-tiny.jsonl"))
    'runs/score-rewardbench-tiny.jsonl'
    """
    if kind.output == "folder":
        return Path("runs") / kind.name
    from prefsmith.stages import resolve_path

    return Path("runs") / f"{kind.name}-{resolve_path(str(source)).name.split('.')[0]}.jsonl"


def run_stage_command(kind: Any, options: Any, values: dict[str, Any]) -> None:
    """A stage command's body: settings from the command line, the config, one
    :func:`~prefsmith.stages.run_stage` call, then what it did."""
    from prefsmith.stages import StageContext, run_stage

    with user_errors():
        config, engine, run = build_settings(kind, settings_from(kind, options, values))
        output = values.get("output") or default_output(kind, getattr(config, "input", ""))
        run = replace(run, progress=values.get("progress", True))
        context = StageContext(Path(output), engine, run, audience="cli")
        result = run_stage(config, context)
    show_result(kind, result)


def register_all(app: typer.Typer) -> None:
    """Add one command per stage to ``app``, in pipeline order."""
    for kind in STAGES.values():
        app.command(kind.name, help=kind.summary)(stage_command(kind))
