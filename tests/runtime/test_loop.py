"""Loop.poll and AtLeastOnce.commit (F4 of docs/fault-report.md): kafka-python 3.0.12 can raise
KafkaConnectionError from inside KafkaConsumer.poll when the broker goes away. The loop must wait
for the broker with back-off instead of exiting. (The whole outage, with a real broker, is
tests/integration/test_faults_broker.py; this pins the loop's part without waiting for the rare
moment kafka-python raises.) The stand-ins raise kafka-python's errors through the adapter
(runtime/kafka/mapping.py), as the service's consumer does. Ported from
tests/unit/test_service_poll.py."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest
from conftest import Harness
from kafka.errors import IllegalStateError, KafkaConnectionError
from prometheus_client import CollectorRegistry

from consumer.avro.codec import Decoder
from consumer.config import Settings
from consumer.errors import BrokerError, RegistryError
from consumer.ops.metrics import Metrics
from consumer.runtime.delivery import AtLeastOnce
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.kafka.mapping import MappedConsumer
from consumer.runtime.loop import Loop
from consumer.runtime.records import REGISTRY_BACKOFF, Backoff, Batch
from consumer.service import EXIT_OK


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


class Waits:
    """The loop's injected wait: records the delays, returns whether stopped."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.stopped = threading.Event()

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return self.stopped.is_set()


def _loop(consumer: Any, waits: Waits) -> Loop:
    metrics = Metrics(CollectorRegistry(), "t")
    return Loop(
        Settings(),
        MappedConsumer(consumer),
        None,
        None,
        None,
        None,
        metrics,  # type: ignore[arg-type]
        stopping=waits.stopped.is_set,
        wait=waits,
        beat=lambda: None,
        set_ready=lambda *a: None,
        poll_backoff=Backoff((0.01, 0.02)),
    )


def test_a_connection_error_in_poll_is_waited_out_not_fatal() -> None:
    waits = Waits()
    loop = _loop(FlakyPoll(failures=3), waits)
    results: list[Any] = [loop.poll(100, 10) for _ in range(4)]
    assert results[:3] == [{}, {}, {}]
    assert results[3] == {"tp": [1, 2]}
    assert waits.delays == [0.01, 0.02, 0.02], "one Backoff schedule, its last delay repeated"
    assert loop.poll_failures == 0  # reset by the successful poll


def test_other_errors_still_stop_the_service() -> None:
    class Broken:
        def poll(self, timeout_ms: int, max_records: int) -> None:
            raise RuntimeError("not a connection problem")

    with pytest.raises(RuntimeError):
        _loop(Broken(), Waits()).poll(100, 10)


class FailingCommit:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def commit(self, offsets: object) -> None:
        raise self.exc


def _delivery(exc: BaseException) -> tuple[AtLeastOnce, Metrics]:
    metrics = Metrics(CollectorRegistry(), "t")
    delivery = AtLeastOnce(
        None,
        MappedConsumer(FailingCommit(exc)),  # type: ignore[arg-type]
        Settings(),
        metrics,
        lambda: None,  # type: ignore[arg-type]
    )
    return delivery, metrics


def test_a_commit_that_cannot_reach_the_broker_is_left_to_the_next_batch() -> None:
    """Every output of the batch is acknowledged before the commit; a later commit covers the
    offsets (or the partition's next owner gets the records again): not a reason to stop."""
    delivery, metrics = _delivery(KafkaConnectionError("111 ECONNREFUSED"))
    delivery.commit(Batch())  # returns
    assert metrics.registry.get_sample_value("her2_consumer_commit_failures_total") == 1


def test_a_commit_refused_for_good_still_stops_the_service() -> None:
    cause = IllegalStateError("not retriable")
    delivery, metrics = _delivery(cause)
    with pytest.raises(BrokerError) as info:
        delivery.commit(Batch())
    assert info.value.kind == "IllegalStateError"
    assert info.value.__cause__ is cause
    assert metrics.registry.get_sample_value("her2_consumer_commit_failures_total") == 1


def test_backoff_repeats_its_last_delay() -> None:
    assert [Backoff((1.0, 2.0)).delay(n) for n in range(4)] == [1.0, 2.0, 2.0, 2.0]


def test_a_stop_request_ends_the_poll_back_off_at_once(harness: Harness) -> None:
    """The service's wait is its stop event: a stop during the back-off returns at once."""
    service = harness.new_service()

    def stop_then_fail() -> None:
        service.stop()
        raise KafkaConnectionError("gone")

    harness.broker.script("poll", stop_then_fail)
    started = time.monotonic()
    assert service.run() == 0
    assert time.monotonic() - started < 0.4, "the back-off (0.5 s) ignored the stop request"


def test_the_lag_refresh_after_a_batch_follows_a_beat(harness: Harness) -> None:
    """A batch's commit and the lag refresh after it each wait up to the request timeout for
    the broker: a beat between them keeps /healthz's stall limit about one such wait."""
    harness.configure(tuning={"lag_refresh_s": 0.0})
    harness.publish(3)
    at: dict[str, list[int]] = {"commit": [], "end_offsets": []}

    def noting(kind: str) -> Any:
        return lambda: at[kind].append(harness.health.beats)

    harness.broker.script("commit", noting("commit"))
    harness.broker.script("end_offsets", *[noting("end_offsets") for _ in range(50)])
    assert harness.run() == EXIT_OK
    [commit] = at["commit"]
    after = [n for n in at["end_offsets"] if n >= commit]
    assert after, at
    assert after[0] > commit, "a beat between the commit and the lag refresh"


def test_a_committed_batch_resets_its_partitions_registry_back_off(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition waits out an unreachable registry with a growing back-off (the record is
    retried, never dead-lettered); a committed batch of the partition shows the registry
    answers again, so its next outage starts from the first delay, not from where the last one
    left off. Batches of 2: record 0 fails twice, record 4 once."""
    harness.configure(max_poll_records=2)
    harness.publish(6)
    values = [r.value for r in harness.broker.records(harness.settings.topics.input)]
    failures = collections.Counter({values[0]: 2, values[4]: 1})
    decode = Decoder.decode

    def flaky(self: Decoder, value: bytes) -> Any:
        if failures[value] > 0:
            failures[value] -= 1
            raise RegistryError("schema registry unreachable")
        return decode(self, value)

    attempts: list[int] = []  # the registry back-off's attempt number at each wait
    delay = Backoff.delay

    def recorded(self: Backoff, attempt: int) -> float:
        if self is not REGISTRY_BACKOFF:
            return delay(self, attempt)
        attempts.append(attempt)
        return 0.0  # no real wait

    monkeypatch.setattr(Decoder, "decode", flaky)
    monkeypatch.setattr(Backoff, "delay", recorded)
    assert harness.run() == EXIT_OK
    assert attempts == [0, 1, 0]
    assert harness.broker.committed == {TopicPartition(harness.settings.topics.input, 0): 6}
    retried = harness.logged("schema registry unavailable; record will be retried")
    assert [line["reason"] for line in retried] == ["unreachable"] * 3
