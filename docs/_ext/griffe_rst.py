"""A griffe extension for the API reference: prefsmith's docstrings as Markdown.

prefsmith's docstrings are Google style ("Args:", "Attributes:") with two reStructuredText
habits that Markdown reads differently, so mkdocstrings would render them wrongly:

* doctest examples (``>>> ...`` lines and their output) written in the text, not under an
  "Examples:" heading: Markdown reads ``>>>`` as nested block quotes and ``x["a"]`` as a link.
  Each run of doctest lines becomes a fenced ``pycon`` block (``# doctest:`` flags removed);
* ``text::`` followed by an indented literal block becomes ``text:`` and a fenced block;
* list items continued with two spaces (reStructuredText's habit) are indented as Markdown
  wants them, four spaces per level, so that a continuation paragraph or a literal block
  stays inside its item;
* Sphinx roles (``:class:`~prefsmith.x.Y```, ``:func:`name```, ``:mod:`.sampling```, ...)
  become inline code linked to the object's API entry when it is rendered (an optional
  cross-reference: a target that is not rendered stays plain code, without a warning).

Only the text handed to mkdocstrings changes; the source files and their doctests do not.
Used by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

DOCTEST = re.compile(r"^(\s*)>>>( |$)")
DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")
FENCE = re.compile(r"^\s*(```|~~~)")
BULLET = re.compile(r"^(\s*)([*+-]|\d+\.) ")
ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def reindent_lists(lines: list[str]) -> list[str]:
    """Double the indentation of every line inside a list, relative to the list's bullets.

    reStructuredText continues an item at the item's text (two spaces after ``* ``); Markdown
    needs four, or the continuation leaves the list. In a list with blank lines between an
    item's paragraphs, the next item gets a blank line before it too (Markdown would otherwise
    read it as part of the paragraph).
    """
    out: list[str] = []
    base: int | None = None
    in_doctest = loose = False
    for line in lines:
        if not line.strip():
            in_doctest = False
            loose = base is not None
            out.append(line)
            continue
        if in_doctest or DOCTEST.match(line):  # doctest lines and their output stay as they are
            in_doctest, base = True, None
            out.append(line)
            continue
        indent = _indent(line)
        bullet = BULLET.match(line)
        if base is not None and indent < base:
            base = None
        if base is not None and indent == base and not bullet:
            base = None
        if base is None and bullet:
            base, loose = indent, False
        elif bullet and indent == base and loose and out and out[-1].strip():
            out.append("")  # an item after a blank-separated paragraph: keep it a new item
        if base is not None and indent > base:
            line = " " * (base + 2 * (indent - base)) + line.lstrip()
        out.append(line)
    return out


def fence_doctests(lines: list[str]) -> list[str]:
    """Wrap each run of doctest lines (up to the next blank line) in a ``pycon`` fence."""
    out: list[str] = []
    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else DOCTEST.match(line)
        if match is None:
            out.append(line)
            i += 1
            continue
        pad = match.group(1)
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(DOCTEST_FLAG.sub("", lines[i][len(pad) :]))
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{pad}```pycon", *(f"{pad}{b}" for b in block), f"{pad}```", ""]
    return out


def fence_literal_blocks(lines: list[str]) -> list[str]:
    """``text::`` + an indented block -> ``text:`` + a fenced block."""
    out: list[str] = []
    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence or not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or _indent(lines[j]) <= base:
            out.append(line)
            i += 1
            continue
        block = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        text = line.rstrip()[:-2].rstrip()
        out.append(text + ":" if text.strip() else "")
        cut = min(_indent(b) for b in block if b.strip())
        pad = " " * (0 if base == 0 else -(-base // 4) * 4)
        out += ["", f"{pad}```", *(f"{pad}{b[cut:]}" if b.strip() else "" for b in block)]
        out += [f"{pad}```", ""]
        i = j
    return out


def _target(obj: Object, name: str) -> str:
    """The full path a role's target most likely names, seen from ``obj``."""
    if name.startswith("prefsmith."):
        return name
    module = obj if obj.is_module else obj.module
    if name.startswith("."):
        package = module.path if module.is_package else module.path.rpartition(".")[0]
        return package + name
    scope = obj if obj.is_class else obj.parent
    if scope is not None and scope.is_class and name.partition(".")[0] in scope.members:
        return f"{scope.path}.{name}"
    return f"{module.path}.{name}"


def link_roles(text: str, obj: Object) -> str:
    """Sphinx roles as inline code, linked when the target is rendered."""

    def replace(match: re.Match[str]) -> str:
        _, short, name = match.groups()
        name = name.strip()
        shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
        path = _target(obj, name)
        return f'<code><autoref identifier="{path}" optional>{shown}</autoref></code>'

    lines, in_fence = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
        lines.append(line if in_fence else ROLE.sub(replace, line))
    return "\n".join(lines)


def to_markdown(text: str, obj: Object) -> str:
    """A docstring's text as Markdown (see the module docstring)."""
    lines = fence_literal_blocks(fence_doctests(reindent_lists(text.split("\n"))))
    return link_roles("\n".join(lines), obj)


class RstDocstrings(Extension):
    """Rewrite every docstring once the object tree is complete."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value, obj)
