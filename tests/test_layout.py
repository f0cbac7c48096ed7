"""The package's layout: imports point down the pipeline, never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import prefsmith

PACKAGE = Path(prefsmith.__file__).parent

# The pipeline, top to bottom: a folder may import itself and the folders before it.
PIPELINE = [
    "defaults",
    "data",
    "models",
    "routing",
    "rewards",
    "generation",
    "relabel",
    "training",
    "evaluation",
    "report",
    "integrations",
    "stages",
    "recipes",
    "cli",
]
# Leaf helpers that any layer may use, and the package's own entry points.
ANYWHERE = {"defaults", "plotting", "testing", "__init__", "__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``prefsmith`` module imported anywhere in the file (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("prefsmith"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("prefsmith"))
    return found


def folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_folders_import_down_the_pipeline() -> None:
    wrong = []
    for module, targets in graph().items():
        source = folder(module)
        if source in ANYWHERE or module == "prefsmith":
            continue
        for target in targets:
            dest = folder(target)
            if dest in ANYWHERE or target == "prefsmith":
                continue
            if PIPELINE.index(dest) > PIPELINE.index(source):
                wrong.append(f"{module} imports {target} ({source} is above {dest})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    edges = graph()
    known = set(edges)
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            # `from prefsmith.x import y` may name a module or a name in prefsmith.x.
            if target not in known or target == "prefsmith":
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state and module != "prefsmith":
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
