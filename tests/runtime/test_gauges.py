"""The per-partition gauges the alerts read (runtime/gauges.py): a partition the consumer owns
but cannot place has no lag, so her2_consumer_position_unknown says so (F1 of
docs/fault-report.md: a transaction left hanging on the group's offsets keeps the committed
offset unreadable; Her2ConsumerPartitionPositionUnknown)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from conftest import Harness
from fakes import FakeBroker
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.ops import events
from consumer.ops.metrics import Metrics
from consumer.runtime.gauges import Gauges
from consumer.runtime.kafka.mapping import MappedConsumer
from consumer.runtime.partitions import PartitionTable
from consumer.service import EXIT_OK


def _seen_before_the_second_poll(harness: Harness) -> dict[str, float | None]:
    """The partition's gauges as the loop left them after its first turn (the run's end
    revokes the partition, which removes them)."""
    labels = {"topic": harness.settings.topics.input, "partition": "0"}
    seen: dict[str, float | None] = {}

    def look() -> None:
        registry = harness.metrics.registry
        for name in ("her2_consumer_position_unknown", "her2_consumer_lag_records"):
            seen[name] = registry.get_sample_value(name, labels)

    harness.broker.script("poll", lambda: None, look)
    assert harness.run() == EXIT_OK
    return seen


def test_a_partition_whose_position_cannot_be_told_is_flagged(harness: Harness) -> None:
    harness.broker.script("position", KafkaTimeoutError("offsets unstable"))
    seen = _seen_before_the_second_poll(harness)
    assert seen == {"her2_consumer_position_unknown": 1.0, "her2_consumer_lag_records": None}


def test_a_partition_with_a_position_is_not_flagged(harness: Harness) -> None:
    seen = _seen_before_the_second_poll(harness)
    assert seen == {"her2_consumer_position_unknown": 0.0, "her2_consumer_lag_records": 0.0}


@pytest.mark.parametrize(("answers", "answered"), [(True, True), (False, False)])
def test_a_member_without_partitions_asks_the_broker_for_its_readiness(
    answers: bool, answered: bool
) -> None:
    """The lag refresh is the readiness probe of the broker (runtime/loop.py follow_broker). A
    member without partitions (librdkafka revokes them when the session times out in an
    outage) asks for the end of the input's first partition: ready once the broker answers,
    not while it is away."""
    metrics = Metrics(CollectorRegistry(), "t")
    table = PartitionTable("in", metrics, lambda *_: None)
    broker = FakeBroker()
    settings = Settings()
    broker.create_topic(settings.topics.input, 1)
    if not answers:
        broker.script("end_offsets", KafkaTimeoutError())
    gauges = Gauges(settings, MappedConsumer(broker.consumer(group_id="g")), table, metrics)
    gauges.broker_answered = not answered
    gauges.refresh_lag()
    assert gauges.broker_answered is answered


def _refreshed_twice(
    broker: FakeBroker, *, topics_error: bool = False
) -> tuple[Gauges, PartitionTable, list[tuple[bool, str]], list[dict[str, Any]]]:
    """A member whose lag refresh goes unanswered, refreshed twice; the gauges, the readiness
    states the loop's follow_broker step gives, and the service's log lines."""
    metrics = Metrics(CollectorRegistry(), "t")
    states: list[tuple[bool, str]] = []
    settings = Settings()
    table = PartitionTable(settings.topics.input, metrics, lambda *s: states.append(s))
    broker.script("end_offsets", KafkaTimeoutError(), KafkaTimeoutError())
    if topics_error:
        broker.script("topics", KafkaTimeoutError(), KafkaTimeoutError())
    gauges = Gauges(settings, MappedConsumer(broker.consumer(group_id="g")), table, metrics)
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            gauges.refresh_lag()
            table.set_broker_unreachable(not gauges.broker_answered)
            table.set_input_missing(gauges.input_missing)
    return gauges, table, states, logs


def test_an_input_topic_deleted_while_running_is_the_readiness_reason() -> None:
    """Measured before: /readyz said "broker unreachable" (the on-call was sent to a healthy
    broker) and the service said nothing else; now the reason names the missing topic, and
    an error says so once."""
    broker = FakeBroker()
    gauges, _, states, logs = _refreshed_twice(broker)  # the input topic was never created
    topic = Settings().topics.input
    assert (gauges.broker_answered, gauges.input_missing) == (True, True)
    assert states == [(False, f"waiting for input topic {topic} (input topic missing)")]
    gone = [line for line in logs if line["event"] == events.INPUT_TOPIC_GONE]
    assert [(line["log_level"], line["input_topic"]) for line in gone] == [("error", topic)]


@pytest.mark.parametrize("topics_error", [False, True], ids=["topic-known", "metadata-unread"])
def test_a_broker_away_is_not_taken_for_a_missing_topic(topics_error: bool) -> None:
    broker = FakeBroker()
    if not topics_error:
        broker.create_topic(Settings().topics.input, 1)
    gauges, _, states, logs = _refreshed_twice(broker, topics_error=topics_error)
    assert (gauges.broker_answered, gauges.input_missing) == (False, False)
    assert states == [(False, "broker unreachable")]
    assert not [line for line in logs if line["event"] == events.INPUT_TOPIC_GONE]


def test_the_input_topic_back_clears_the_reason() -> None:
    broker = FakeBroker()
    gauges, table, states, _ = _refreshed_twice(broker)
    broker.create_topic(Settings().topics.input, 1)
    gauges.refresh_lag()
    table.set_input_missing(gauges.input_missing)
    assert (gauges.broker_answered, gauges.input_missing) == (True, False)
    assert states[-1] == (True, "")
