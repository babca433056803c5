"""Import layers (docs/architecture.md), read from the source with `ast`: only
consumer/runtime/kafka imports kafka-python; only the metrics and HTTP modules import
prometheus_client. The package-wide layers (clinical/avro/state/ops/tools) come with the
package moves, which are not done yet."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"

# Modules that may import kafka-python besides consumer/runtime/kafka, and why.
KAFKA_ALLOWED = {
    "tools/demo.py": "a tool, not on the `run` path (its own producer and readers)",
    "tools/publish.py": "a tool, not on the `run` path (`her2-consumer publish`)",
    "tools/downstream.py": "a tool, not on the `run` path (the example alert reader)",
}
PROMETHEUS_ALLOWED = {"ops/metrics.py", "ops/http.py"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth of its code)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


MODULES = sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_only_runtime_kafka_imports_kafka_python(module: Path) -> None:
    if module.parts[:2] == ("runtime", "kafka") or str(module) in KAFKA_ALLOWED:
        return
    assert "kafka" not in _imports(PACKAGE / module)


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_only_metrics_and_http_import_prometheus_client(module: Path) -> None:
    if str(module) in PROMETHEUS_ALLOWED:
        return
    assert "prometheus_client" not in _imports(PACKAGE / module)


def test_the_allow_lists_name_existing_modules() -> None:
    for name in (*KAFKA_ALLOWED, *PROMETHEUS_ALLOWED):
        assert (PACKAGE / name).is_file(), name
