"""Lint, format and types are part of the suite: `ruff check .`, `ruff format --check .` and
`mypy consumer` (strict, as configured in pyproject.toml) must report nothing. All come with the
`lint` extra, which the `test` extra includes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv, the interpreter running the tests
        [sys.executable, "-m", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_ruff_reports_nothing() -> None:
    done = _run("ruff", "check", "--no-fix", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check . found:\n{done.stdout}{done.stderr}"


def test_ruff_format_changes_nothing() -> None:
    done = _run("ruff", "format", "--check", "--no-cache", ".")
    assert done.returncode == 0, f"ruff format --check . found:\n{done.stdout}{done.stderr}"


def test_mypy_strict_reports_nothing(tmp_path: Path) -> None:
    done = _run("mypy", "--cache-dir", str(tmp_path / "mypy"), "consumer")
    assert done.returncode == 0, f"mypy consumer found:\n{done.stdout}{done.stderr}"
