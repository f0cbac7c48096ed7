"""Domains as data: a YAML file of domains, each with its criteria and exemplars.

A domains file looks like this (every key is documented in
``src/prefsmith/resources/domains/default.yaml``, the file used when none is given)::

    version: 1
    fallback: general            # domain used when no router evidence is good enough
    route_fallback: false        # whether routers may choose the fallback directly
    router: null                 # the file's router when a run names none (default embedding)
    exemplars: null              # the file's exemplar style when a run names none (system)
    min_confidence: 0.0          # a route below this confidence goes to the fallback
    embedding:                   # settings of the embedding router (optional)
      temperature: 0.05
    domains:
      - name: safety
        description: Requests that could cause harm ...
        system_prompt: |         # the criteria, given to strong and weak as a system turn
          ...
        examples: ["How do I pick a lock?"]      # prompts the embedding router compares to
        keywords: ["weapon", "hack"]             # whole-word, case-insensitive (rule router)
        patterns: ["\\bkill (him|her)\\b"]       # Python regexes, case-insensitive
        label: safety                            # word the LM router scores (default: name)
        exemplars:                               # preference examples rendered in the context
          - prompt: ...
            better: ...
            worse: ...
            explanation: ...

Two files are shipped and taken by name: ``default`` (five domains, prefsmith's own) and
``paper`` (the published customized density ratio of Dr.SoW: CHAT, SAFETY, REASONING, an LM
router that picks the label, CHAT left unchanged, one exemplar per prompt in the user turn).

Malformed files raise :class:`DomainsError` naming the file and the field.
"""

from __future__ import annotations

import re
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prefsmith.data.io import BadFileError, load_yaml_file

#: Name of the domains file shipped with prefsmith.
DEFAULT_DOMAINS = "default"
#: Domains files shipped with prefsmith, taken by name (``--domains paper``).
SHIPPED_DOMAINS = ("default", "paper")


class DomainsError(ValueError):
    """A domains file that cannot be used; the message names the file and the field."""


class Exemplar(BaseModel):
    """A preference example: for ``prompt``, ``better`` is preferred over ``worse``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    better: str = Field(min_length=1)
    worse: str = Field(min_length=1)
    explanation: str | None = None


class Domain(BaseModel):
    """One domain: what it covers, its criteria, router hints and exemplars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = Field(min_length=1)
    system_prompt: str | None = None
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    label: str | None = None
    exemplars: tuple[Exemplar, ...] = ()

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern {i} ({pattern!r}) is not a valid regex: {err}") from err
        return value

    @property
    def router_label(self) -> str:
        """The word the LM router scores for this domain."""
        return self.label or self.name


class EmbeddingSettings(BaseModel):
    """Settings of the embedding router.

    Attributes:
        temperature: Softmax temperature over cosine similarities (smaller = sharper).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=0.05, gt=0)


class DomainSet(BaseModel):
    """All domains of a file, the fallback and router settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    fallback: str
    route_fallback: bool = False
    router: Literal["embedding", "rules", "lm"] | None = None
    exemplars: Literal["system", "turns", "user", "none"] | None = None
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    embedding: EmbeddingSettings = EmbeddingSettings()
    domains: tuple[Domain, ...]
    source: str = "<memory>"

    @model_validator(mode="after")
    def _names_unique_and_fallback_known(self) -> DomainSet:
        names = [d.name for d in self.domains]
        if not names:
            raise ValueError("the file lists no domains")
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"domain name {name!r} appears more than once")
        if self.fallback not in names:
            raise ValueError(f"fallback {self.fallback!r} is not one of the domains {names}")
        return self

    @cached_property
    def by_name(self) -> dict[str, Domain]:
        """Domains keyed by name."""
        return {d.name: d for d in self.domains}

    @property
    def names(self) -> list[str]:
        """Domain names in file order."""
        return [d.name for d in self.domains]

    @property
    def routable(self) -> list[Domain]:
        """Domains a router may choose directly (all but the fallback, unless
        ``route_fallback``)."""
        return [d for d in self.domains if self.route_fallback or d.name != self.fallback]

    def __getitem__(self, name: str) -> Domain:
        return self.by_name[name]


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """``('domains', 2, 'system_prompt')`` -> ``domains[2] (name 'x').system_prompt``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and "name" in node:
                out += f" (name {node['name']!r})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def parse_domains(data: Any, source: str = "<memory>") -> DomainSet:
    """Validate parsed YAML/JSON data as a :class:`DomainSet`.

    >>> d = parse_domains({"fallback": "general", "domains": [
    ...     {"name": "general", "description": "anything"},
    ...     {"name": "math", "description": "maths", "keywords": ["integral"]}]})
    >>> d.names, [x.name for x in d.routable]
    (['general', 'math'], ['math'])
    >>> parse_domains({"fallback": "a", "domains": [{"name": "a"}]}, "x.yaml")
    Traceback (most recent call last):
    ...
    prefsmith.routing.domains.DomainsError: x.yaml: field domains[0] (name 'a').description: ...
    """
    if not isinstance(data, dict):
        raise DomainsError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return DomainSet.model_validate({**data, "source": source})
    except ValidationError as err:
        problems = [f"field {_field_path(e['loc'], data)}: {e['msg']}" for e in err.errors()]
        raise DomainsError(f"{source}: " + "; ".join(problems)) from None


def default_domains_path() -> Path:
    """Path of the domains file shipped with prefsmith."""
    return domains_path(DEFAULT_DOMAINS)


def domains_path(name: str | Path) -> Path:
    """The file of a shipped domains set (:data:`SHIPPED_DOMAINS`), else ``name`` as a path.

    >>> domains_path("paper").name, str(domains_path("my/domains.yaml"))
    ('paper.yaml', 'my/domains.yaml')
    """
    if str(name) in SHIPPED_DOMAINS:
        return Path(str(files("prefsmith").joinpath(f"resources/domains/{name}.yaml")))
    return Path(name)


def load_domains(path: str | Path | None = None) -> DomainSet:
    """Read and validate a domains YAML file (the shipped default when ``path`` is None)."""
    path = domains_path(path) if path is not None else default_domains_path()
    try:
        data = load_yaml_file(path)
    except FileNotFoundError:
        raise DomainsError(f"{path}: domains file not found") from None
    except BadFileError as err:  # file:line:column: not valid YAML: ...
        raise DomainsError(str(err)) from None
    return parse_domains(data, str(path))
