"""Log event names are declared once, in consumer/ops/events.py (a contract: operators, alerts,
tests and docs grep for them). Read from the source with `ast`: every `log.<level>(...)` in
consumer/ names its event as `events.NAME` (or a conditional between two of them), never as a
literal or an f-string; every name declared is used; no two names share a text."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consumer.ops import events
from consumer.ops.logs import ALLOWED_KEYS

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"
LEVELS = frozenset({"debug", "info", "warning", "error", "critical", "exception", "msg", "log"})
OPERATOR_LEVELS = frozenset({"warning", "error", "critical", "exception"})
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
DECLARED = {name: value for name, value in vars(events).items() if name.isupper()}


def _log_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls `log.<level>(...)`: the loggers of consumer/ are all bound to the name `log`; and
    warnings or errors on any other `*_log` (a stdlib logger kept for a client's debug chatter
    must not carry what operators are told)."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and isinstance(node.func.value, ast.Name)
        and (
            node.func.value.id == "log"
            or (node.func.value.id.endswith("_log") and node.func.attr in OPERATOR_LEVELS)
        )
    ]


def _event_names(arg: ast.expr) -> list[str] | None:
    """The events.NAME constants `arg` can be, or None if it is anything else."""
    if isinstance(arg, ast.IfExp):
        body, orelse = _event_names(arg.body), _event_names(arg.orelse)
        return None if body is None or orelse is None else body + orelse
    if (
        isinstance(arg, ast.Attribute)
        and isinstance(arg.value, ast.Name)
        and arg.value.id == "events"
    ):
        return [arg.attr]
    return None


def bad_log_calls(source: str) -> list[str]:
    """The log calls of `source` whose event is not an events.NAME constant."""
    return [
        f"line {call.lineno}: {ast.unparse(call)[:80]}"
        for call in _log_calls(ast.parse(source))
        if not call.args or _event_names(call.args[0]) is None
    ]


def _used_names() -> set[str]:
    used: set[str] = set()
    for module in MODULES:
        for call in _log_calls(ast.parse((PACKAGE / module).read_text())):
            if call.args:
                used.update(_event_names(call.args[0]) or [])
    return used


@pytest.mark.parametrize("module", MODULES)
def test_log_calls_name_a_declared_event(module: str) -> None:
    assert not bad_log_calls((PACKAGE / module).read_text())


def test_loggers_are_bound_to_the_name_log() -> None:
    """The scan above finds log calls by the name `log`: a logger bound to another name would
    escape it."""
    for module in MODULES:
        for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func).endswith("get_logger")
            ):
                assert [ast.unparse(t) for t in node.targets] == ["log"], module


def test_every_declared_event_is_used() -> None:
    assert set(DECLARED) - _used_names() == set()


def test_used_events_are_declared_and_texts_unique() -> None:
    assert _used_names() - set(DECLARED) == set()
    assert len(set(DECLARED.values())) == len(DECLARED)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('log.info("batch committed", batch=1)', id="literal"),
        pytest.param('log.warning(f"partitions {kind}")', id="f-string"),
        pytest.param("log.error(name)", id="variable"),
        pytest.param('log.info(events.STARTED if x else "stopped")', id="half-literal"),
        pytest.param('_log.warning("fenced (%s)", name)', id="stdlib-logger-warning"),
    ],
)
def test_the_scan_catches_a_literal_event(source: str) -> None:
    assert bad_log_calls(source)


def test_every_key_a_log_call_passes_reaches_the_output() -> None:
    """The allow-list (consumer/ops/logs.py) drops any key it does not name, silently but for
    `redacted_keys`: a key passed by a log call and not allowed is a figure operators never see
    (the clock-skew warning lost its offset that way). Tests that capture logs before the
    processors would not notice."""
    dropped = [
        f"{module}:{call.lineno}: {keyword.arg}"
        for module in MODULES
        for call in _log_calls(ast.parse((PACKAGE / module).read_text()))
        for keyword in call.keywords
        if keyword.arg is None or (keyword.arg not in ALLOWED_KEYS and keyword.arg != "exc_info")
    ]
    assert dropped == []
