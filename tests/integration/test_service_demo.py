"""`her2-consumer demo` against a running service (in-process), and without one."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest
from helpers import Env, delete_outputs, make_env, running
from kafka import KafkaAdminClient  # imported first by conftest.py, under its warning filter

from consumer.tools import demo


@pytest.fixture
def env(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    test_env = make_env(kafka_bootstrap, unique_name)
    for name, value in test_env.environ().items():
        monkeypatch.setenv(name, value)
    yield test_env
    delete_outputs(kafka_bootstrap, test_env)
    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:  # the demo created it
        if test_env.input in admin.list_topics():
            admin.delete_topics([test_env.input], raise_errors=False)


def test_demo_accounts_for_every_event_and_prints_a_readable_summary(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(env.settings()):
        code = demo.main(argparse.Namespace(count=30, timeout=40.0))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "all 30 events and 2 malformed payloads accounted for" in out
    assert "== dead-letter topic ==" in out
    assert "reason=unknown-magic-byte" in out
    assert "reason=avro-decode" in out
    assert " -> " in out
    assert "WARNING" in out


def test_demo_says_what_is_missing_when_no_consumer_runs(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code = demo.main(argparse.Namespace(count=3, timeout=1.0))
    out = capsys.readouterr().out
    assert code == 1
    assert "NOT ACCOUNTED FOR" in out
    assert "her2-consumer run" in out
