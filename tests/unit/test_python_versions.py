"""Every Python that pyproject.toml's requires-python admits compiles the project's code.

Python 3.13 compiles docstrings differently (it UTF-8-encodes them to strip their indent), and a
docstring of consumer/clinical/validate.py holding a lone surrogate made `import consumer.config`
fail there: `run`, `evaluate` and `publish` died at start on 3.13 while requires-python said
">=3.11" and everything was tested on 3.11 alone (pip installed it without a word). Each admitted
minor version found on the machine compiles every source file here, with warnings as errors
(an invalid escape, a SyntaxWarning since 3.12, is refused too); one not found is skipped, named.
The whole suite runs on the interpreter that runs it (3.11 in CI).
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("consumer", "bench", "deploy", "tests")
ADMITTED = (11, 12, 13)  # the 3.x minors requires-python admits, each checked below
REQUIRES_PYTHON = ">=3.11,<3.14"

_COMPILE_ALL = """
import json, pathlib, sys, warnings
root, bad, count = pathlib.Path(sys.argv[1]), [], 0
for top in sys.argv[2:]:
    for path in sorted((root / top).rglob("*.py")):
        count += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
            except (SyntaxError, ValueError, UnicodeError, Warning) as exc:
                bad.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
print(json.dumps({"version": list(sys.version_info[:2]), "files": count, "bad": bad}))
"""


def interpreter(minor: int) -> str | None:
    """A working python3.<minor>: on PATH, else under pyenv's versions (where this machine
    keeps them without putting them on PATH)."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python3.{minor}")]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.{minor}.*/bin/python3"), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run(  # noqa: S603 - an interpreter found on this machine
            [candidate, "-c", "import sys; print(sys.version_info[1])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(minor):
            return candidate
    return None


def test_requires_python_admits_exactly_the_checked_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == REQUIRES_PYTHON
    assert (sys.version_info[0], sys.version_info[1]) >= (3, min(ADMITTED))


@pytest.mark.parametrize("minor", ADMITTED, ids=[f"3.{m}" for m in ADMITTED])
def test_every_source_file_compiles(minor: int) -> None:
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"no Python 3.{minor} on this machine (PATH or pyenv)")
    run = subprocess.run(  # noqa: S603 - an interpreter found on this machine
        [python, "-c", _COMPILE_ALL, str(REPO), *SOURCES],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["version"] == [3, minor]
    assert result["files"] > 100  # the sources were found
    assert result["bad"] == []


def _docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, nodes) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.append((first.lineno, first.value.value))
    return found


def test_no_docstring_holds_text_that_utf8_cannot_carry() -> None:
    """The 3.13 failure, seen from the interpreter running the suite (if no 3.13 is found)."""
    bad = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_bytes(), str(path))
            for line, text in _docstrings(tree):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    bad.append(f"{path.relative_to(REPO)}:{line}: {exc.reason}")
    assert bad == []
