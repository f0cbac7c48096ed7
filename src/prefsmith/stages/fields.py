"""A config's fields as data: their help text (from the class docstring) and the flat list of
settings that nested configs hold, as the command line and the recipe checks see them.

A field is documented once, in its class's ``Attributes:`` section; the API reference shows
that docstring, and the command line takes its help text from it.

>>> from prefsmith.generation.sampling import SamplingConfig
>>> field_docs(SamplingConfig)["n"]
'Responses per prompt.'
>>> [leaf.name for leaf in leaves(SamplingConfig)][:3]
['n', 'temperature', 'top_p']
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any, Literal, Union

_ENTRY = re.compile(r"^(\w+)(?: \([^)]*\))?: ?(.*)$")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr):`~?(?:[\w.]+\.)?([\w]+)`")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the text of its entry in ``cls``'s ``Attributes:`` docstring section,
    on one line, reStructuredText roles reduced to the name (for terminal help).

    >>> @dataclass
    ... class Example:
    ...     '''An example.
    ...
    ...     Attributes:
    ...         size: How many, at most
    ...             (``0``: all).
    ...     '''
    ...     size: int = 0
    >>> field_docs(Example)
    {'size': 'How many, at most (``0``: all).'}
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's entry wins over its base's
        if is_dataclass(klass):
            docs.update(_attributes(inspect.getdoc(klass) or ""))
    return docs


def _attributes(doc: str) -> dict[str, str]:
    lines = doc.splitlines()
    docs: dict[str, list[str]] = {}
    inside, current = False, None
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        match = _ENTRY.match(stripped)
        if indent <= 4 and match:
            current = match.group(1)
            docs[current] = [match.group(2)]
        elif current is not None:
            docs[current].append(stripped)
    return {name: _ROLE.sub(r"\1", " ".join(parts)).strip() for name, parts in docs.items()}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether ``None`` is allowed).

    >>> unwrap_optional(int | None), unwrap_optional(str)
    ((<class 'int'>, True), (<class 'str'>, False))
    """
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else hint), optional
    return hint, False


def choices(hint: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` type (``None`` for other types)."""
    inner, _ = unwrap_optional(hint)
    if typing.get_origin(inner) is Literal:
        return tuple(str(a) for a in typing.get_args(inner))
    return None


@dataclass(frozen=True)
class Leaf:
    """One setting of a config, nested configs flattened.

    Attributes:
        path: Field names from the top config down (``("sampling", "n")``).
        hint: The field's type.
        default: Its default (``dataclasses.MISSING`` when required).
        help: Its docstring entry.
        section: The nested config holding it (``""`` at the top).
        optional_section: The nested config is ``None`` unless one of its settings is given.
    """

    path: tuple[str, ...]
    hint: Any
    default: Any
    help: str
    section: str = ""
    optional_section: bool = False

    @property
    def name(self) -> str:
        """The field's own name."""
        return self.path[-1]

    @property
    def dotted(self) -> str:
        """``sampling.n``."""
        return ".".join(self.path)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def leaves(cls: type, prefix: tuple[str, ...] = (), section: str = "") -> list[Leaf]:
    """Every setting of dataclass ``cls``, nested dataclasses flattened in field order.

    A nested config's defaults are those of the field's own default (``sampling:
    SamplingConfig = field(default_factory=lambda: SamplingConfig(n=1))`` gives ``n`` = 1).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Leaf] = []
    for f in fields(cls):
        if not f.init:
            continue
        hint, optional = unwrap_optional(hints[f.name])
        default = _default(f)
        if is_dataclass(hint):
            inner = leaves(hint, (*prefix, f.name), f.name)
            if is_dataclass(default):
                inner = [
                    dataclasses.replace(leaf, default=_get(default, leaf.path[len(prefix) + 1 :]))
                    for leaf in inner
                ]
            if optional:
                inner = [dataclasses.replace(leaf, optional_section=True) for leaf in inner]
            out += inner
        else:
            out.append(
                Leaf((*prefix, f.name), hints[f.name], default, docs.get(f.name, ""), section)
            )
    return out


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        value = getattr(value, name)
    return value
