"""Service._poll (F4 of docs/fault-report.md): kafka-python 3.0.12 can raise
KafkaConnectionError from inside KafkaConsumer.poll when the broker goes away. The loop must wait
for the broker with back-off instead of exiting. (The whole outage, with a real broker, is
tests/integration/test_faults_broker.py; this pins the loop's part without waiting for the rare
moment kafka-python raises.)"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka.errors import IllegalStateError, KafkaConnectionError
from prometheus_client import CollectorRegistry

from consumer import service as service_module
from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.rules import load_ruleset
from consumer.service import Service


class FlakyPoll:
    """A stand-in for the consumer's poll only: raises `failures` times, then returns data."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[int]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
        return {"tp": [1, 2]}


@pytest.fixture
def svc(monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setattr(service_module, "_POLL_BACKOFF_S", (0.01, 0.02))
    return Service(Settings(), Pipeline(load_ruleset()), Metrics(CollectorRegistry(), "t"))


def test_a_connection_error_in_poll_is_waited_out_not_fatal(svc: Service) -> None:
    poller = FlakyPoll(failures=3)
    svc._consumer = poller  # noqa: SLF001
    results: list[Any] = [svc._poll(100, 10) for _ in range(4)]  # noqa: SLF001
    assert results[:3] == [{}, {}, {}]
    assert results[3] == {"tp": [1, 2]}
    assert svc._poll_failures == 0  # noqa: SLF001 - reset by the successful poll


def test_a_stop_request_ends_the_back_off_at_once(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc._consumer = FlakyPoll(failures=10)  # noqa: SLF001
    monkeypatch.setattr(service_module, "_POLL_BACKOFF_S", (30.0,))
    svc.stop()
    started = time.monotonic()
    assert svc._poll(100, 10) == {}  # noqa: SLF001
    assert time.monotonic() - started < 5, "the back-off ignored the stop request"


def test_other_errors_still_stop_the_service(svc: Service) -> None:
    class Broken:
        def poll(self, timeout_ms: int, max_records: int) -> None:
            raise RuntimeError("not a connection problem")

    svc._consumer = Broken()  # noqa: SLF001
    with pytest.raises(RuntimeError):
        svc._poll(100, 10)  # noqa: SLF001


class FailingCommit:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def commit(self, offsets: object) -> None:
        raise self.exc


def test_a_commit_that_cannot_reach_the_broker_is_left_to_the_next_batch(svc: Service) -> None:
    """Every output of the batch is acknowledged before the commit; a later commit covers the
    offsets (or the partition's next owner gets the records again): not a reason to stop."""
    svc._consumer = FailingCommit(KafkaConnectionError("111 ECONNREFUSED"))  # noqa: SLF001
    svc._commit({})  # noqa: SLF001 - returns
    assert svc.metrics.commit_failures._value.get() == 1  # noqa: SLF001


def test_a_commit_refused_for_good_still_stops_the_service(svc: Service) -> None:
    svc._consumer = FailingCommit(IllegalStateError("not retriable"))  # noqa: SLF001
    with pytest.raises(IllegalStateError):
        svc._commit({})  # noqa: SLF001
    assert svc.metrics.commit_failures._value.get() == 1  # noqa: SLF001
