"""The documentation: the MkDocs site builds without a warning, and the README stays short."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The README's two set-up commands, verbatim (CI runs the second one).
SETUP_COMMANDS = (
    "pip install -e . && prefsmith models fetch && prefsmith score",
    'pip install -e ".[test]" && python -m pytest',
)
README_MAX_LINES = 250


def test_readme_is_short_and_has_the_two_setup_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: move details to docs/"
    )
    for command in SETUP_COMMANDS:
        assert command in lines, f"README.md lost the set-up command {command!r}"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason='mkdocs is not installed: pip install -e ".[docs]" (or ".[test]") to build the docs',
)
def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: no broken link or anchor, no page outside the nav, no
    unresolved cross-reference in a docstring."""
    # mkdocs-material prints an advisory banner about MkDocs 2.0 on every build otherwise.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    command += ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
