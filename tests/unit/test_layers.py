"""Import layers (docs/architecture.md), read from the source with `ast` (any import at any depth,
TYPE_CHECKING blocks included): `clinical` <- `state` <- `runtime`, with `avro` and `ops` beside.

- clinical imports only clinical, errors, resources and the standard library (yaml: rules.py);
- avro and state never import runtime; state reads of clinical only the state it stores;
- only runtime/kafka imports kafka-python (the tools below excepted);
- nothing outside runtime/kafka imports a third-party exception class from it (kafka-python's
  errors are mapped there to BrokerError: docs/architecture.md, Errors); judged by importing
  the names, so a class (or a tuple of classes, like FENCED) re-exported under any name counts;
- only ops imports prometheus_client;
- only state/backends.py imports sqlite3 (it maps sqlite3.Error to StateStoreError).

`test_each_rule_catches_a_violation` feeds each rule one import that breaks it."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

from consumer.errors import Her2Error

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"
STDLIB = sys.stdlib_module_names

CLINICAL_OWN = ("consumer.clinical", "consumer.errors", "consumer.resources")
# Third-party modules a clinical module may import, and why.
CLINICAL_THIRD_PARTY = {"clinical/rules.py": {"yaml": "the rule files (rules/*.yaml) are YAML"}}
# What state/ may import of clinical/, and why: the store keeps the patient aggregate's state
# (patient), whose types name events and outcomes (model), and applies one event through the
# pipeline's step (pipeline: HistoryStore.apply, utc_now). Never rules, facts, classify, ...
STATE_CLINICAL = {
    "consumer.clinical.model",
    "consumer.clinical.patient",
    "consumer.clinical.pipeline",
}
# Modules that may import kafka-python besides consumer/runtime/kafka, and why.
KAFKA_ALLOWED = {
    "tools/demo.py": "a tool, not on the `run` path (its own producer and readers)",
    "tools/publish.py": "a tool, not on the `run` path (`her2-consumer publish`)",
    "tools/downstream.py": "a tool, not on the `run` path (the example alert reader)",
    "tools/rebuild.py": "a tool, not on the `run` path (`her2-consumer rebuild-history`)",
}


def _imports(tree: ast.AST) -> set[str]:
    """Dotted names of every module imported (for `from a import b`: `a` and `a.b`)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def clinical_rule(module: str, imports: set[str]) -> set[str]:
    """clinical imports only clinical, errors, resources, stdlib (and its listed third party)."""
    if not module.startswith("clinical/"):
        return set()
    allowed = CLINICAL_THIRD_PARTY.get(module, {})
    return {
        n
        for n in imports
        if not _under(n, *CLINICAL_OWN)
        and n.split(".")[0] not in STDLIB
        and n.split(".")[0] not in allowed
        and n != "consumer"  # `from consumer import x` is judged by its `consumer.x`
    }


def runtime_rule(module: str, imports: set[str]) -> set[str]:
    """avro and state never import runtime."""
    if not module.startswith(("avro/", "state/")):
        return set()
    return {n for n in imports if _under(n, "consumer.runtime")}


def state_clinical_rule(module: str, imports: set[str]) -> set[str]:
    """state imports of clinical only the state it stores (STATE_CLINICAL)."""
    if not module.startswith("state/"):
        return set()
    clinical = {n for n in imports if _under(n, "consumer.clinical") and n != "consumer.clinical"}
    # `from consumer.clinical.patient import PatientState` yields the module and its names
    return {n for n in clinical if not _under(n, *STATE_CLINICAL)}


def kafka_rule(module: str, imports: set[str]) -> set[str]:
    """Only runtime/kafka imports kafka-python (KAFKA_ALLOWED excepted)."""
    if module.startswith("runtime/kafka/") or module in KAFKA_ALLOWED:
        return set()
    return {n for n in imports if _under(n, "kafka")}


def _third_party_exception(obj: object) -> bool:
    if isinstance(obj, tuple):
        return bool(obj) and all(_third_party_exception(o) for o in obj)
    return (
        isinstance(obj, type) and issubclass(obj, BaseException) and not issubclass(obj, Her2Error)
    )


def kafka_errors_rule(module: str, imports: set[str]) -> set[str]:
    """Outside runtime/kafka, no exception class (of kafka-python: not our Her2Error tree) is
    imported from runtime/kafka or its modules: the runtime catches BrokerError."""
    if module.startswith("runtime/kafka/"):
        return set()
    broken = set()
    for name in imports:
        owner, _, attr = name.rpartition(".")
        if _under(owner, "consumer.runtime.kafka"):
            obj = getattr(importlib.import_module(owner), attr, None)
            if _third_party_exception(obj):
                broken.add(name)
    return broken


def prometheus_rule(module: str, imports: set[str]) -> set[str]:
    """Only ops imports prometheus_client."""
    if module.startswith("ops/"):
        return set()
    return {n for n in imports if _under(n, "prometheus_client")}


def sqlite_rule(module: str, imports: set[str]) -> set[str]:
    """Only the state backends import sqlite3 (errors are mapped there)."""
    if module == "state/backends.py":
        return set()
    return {n for n in imports if _under(n, "sqlite3")}


RULES = (
    clinical_rule,
    runtime_rule,
    state_clinical_rule,
    kafka_rule,
    kafka_errors_rule,
    prometheus_rule,
    sqlite_rule,
)
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_keeps_the_layers(module: str) -> None:
    imports = _imports(ast.parse((PACKAGE / module).read_text(), module))
    broken = {rule.__name__: sorted(rule(module, imports)) for rule in RULES}
    assert not {name: names for name, names in broken.items() if names}


@pytest.mark.parametrize(
    ("rule", "module", "source"),
    [
        pytest.param(clinical_rule, "clinical/facts.py", "import fastavro", id="clinical-fastavro"),
        pytest.param(clinical_rule, "clinical/model.py", "import yaml", id="clinical-yaml"),
        pytest.param(
            clinical_rule, "clinical/alerts.py", "from consumer.ops import logs", id="clinical-ops"
        ),
        pytest.param(
            clinical_rule,
            "clinical/pipeline.py",
            "from consumer.state.store import HistoryStore",
            id="clinical-state",
        ),
        pytest.param(
            runtime_rule, "avro/codec.py", "from consumer.runtime import dlq", id="avro-runtime"
        ),
        pytest.param(
            runtime_rule, "state/store.py", "import consumer.runtime.kafka", id="state-runtime"
        ),
        pytest.param(
            state_clinical_rule,
            "state/store.py",
            "from consumer.clinical.rules import RuleSet",
            id="state-rules",
        ),
        pytest.param(
            state_clinical_rule,
            "state/backends.py",
            "from consumer.clinical import facts",
            id="state-facts",
        ),
        pytest.param(kafka_rule, "runtime/loop.py", "from kafka import errors", id="kafka-loop"),
        pytest.param(kafka_rule, "tools/evaluate.py", "import kafka", id="kafka-tool"),
        pytest.param(
            kafka_errors_rule,
            "runtime/loop.py",
            "from consumer.runtime.kafka import Consumer, KafkaError",
            id="kafka-error-loop",
        ),
        pytest.param(
            kafka_errors_rule,
            "runtime/delivery.py",
            "from consumer.runtime.kafka import CommitFailedError",
            id="kafka-commit-failed",
        ),
        pytest.param(
            kafka_errors_rule,
            "runtime/exits.py",
            "from consumer.runtime.kafka.producer import KafkaError",
            id="kafka-error-re-exported",
        ),
        pytest.param(
            kafka_errors_rule,
            "runtime/processor.py",
            "from consumer.runtime.kafka import FENCED",
            id="kafka-error-tuple",
        ),
        pytest.param(
            prometheus_rule,
            "runtime/loop.py",
            "from prometheus_client import Counter",
            id="prometheus-runtime",
        ),
        pytest.param(sqlite_rule, "runtime/processor.py", "import sqlite3", id="sqlite-runtime"),
        pytest.param(sqlite_rule, "state/store.py", "from sqlite3 import Error", id="sqlite-store"),
    ],
)
def test_each_rule_catches_a_violation(rule: object, module: str, source: str) -> None:
    assert callable(rule)
    assert rule(module, _imports(ast.parse(source)))


def test_the_allow_lists_name_existing_modules() -> None:
    for name in (*KAFKA_ALLOWED, *CLINICAL_THIRD_PARTY):
        assert (PACKAGE / name).is_file(), name


def test_the_kafka_errors_rule_lets_our_classes_and_other_names_through() -> None:
    source = (
        "from consumer.runtime.kafka import Consumer, TopicPartition, MAX_REQUEST_BYTES\n"
        "from consumer.runtime.kafka.mapping import MappedClients\n"
        "from consumer.runtime.kafka.producer import PublishError, ProducerHandle\n"
        "from consumer.runtime import kafka\n"
    )
    assert not kafka_errors_rule("runtime/loop.py", _imports(ast.parse(source)))
