"""kafka-python's errors, scripted on the fake broker, reach the runtime as our BrokerError
(runtime/kafka/mapping.py, applied by the service to every client it is given): the same log
lines (`error_type` still kafka-python's class name), counters and exit codes as before."""

from __future__ import annotations

from conftest import Harness
from kafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    TopicAuthorizationFailedError,
)

from consumer.runtime.kafka import TopicPartition
from consumer.service import EXIT_FAILURE, EXIT_OK

STOPPING = "stopping on a Kafka error"


def _stop_line(harness: Harness) -> dict[str, object]:
    [line] = harness.logged(STOPPING)
    cause = line["exc_info"]
    assert isinstance(cause, Exception)
    assert type(cause).__name__ == "BrokerError"
    assert type(cause.__cause__).__name__ == line["error_type"], "the client's error is chained"
    return line


def test_a_commit_refused_in_a_rebalance_keeps_its_class_name(harness: Harness) -> None:
    for error in (CommitFailedError(), RebalanceInProgressError()):
        harness.publish(3)
        harness.broker.script("commit", error)
        assert harness.run() == EXIT_OK
        [line] = harness.logged(
            "offset commit refused during a rebalance; records may be redelivered"
        )
        assert line["error_type"] == type(error).__name__
        assert harness.value("her2_consumer_commit_failures_total") == 1


def test_a_commit_that_cannot_reach_the_broker_is_logged_not_fatal(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script("commit", KafkaConnectionError("gone"))
    assert harness.run() == EXIT_OK
    assert harness.value("her2_consumer_commit_failures_total") == 1
    assert harness.logged(STOPPING) == []
    warnings = [line for line in harness.logs if line.get("error_type") == "KafkaConnectionError"]
    assert [line["log_level"] for line in warnings] == ["warning"]


def test_a_commit_refused_for_good_stops_on_a_kafka_error(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script("commit", IllegalStateError("no"))
    assert harness.run() == EXIT_FAILURE
    assert _stop_line(harness)["error_type"] == "IllegalStateError"


def test_a_retriable_poll_error_is_waited_out(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script("poll", KafkaConnectionError("gone"))
    assert harness.run() == EXIT_OK
    [line] = harness.logged("broker unreachable while polling; retrying")
    assert line["error_type"] == "KafkaConnectionError"
    assert harness.broker.committed


def test_a_poll_error_for_good_stops_on_a_kafka_error(harness: Harness) -> None:
    harness.broker.script("poll", IllegalStateError("no"))
    assert harness.run() == EXIT_FAILURE
    assert _stop_line(harness)["error_type"] == "IllegalStateError"


def test_a_failed_lag_refresh_is_only_logged(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script("end_offsets", KafkaTimeoutError())
    assert harness.run() == EXIT_OK
    [line] = harness.logged("lag refresh failed")
    assert line["error_type"] == "KafkaTimeoutError"


def test_the_changelog_reader_stops_on_a_kafka_error(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script("restore.end_offsets", KafkaTimeoutError())
    assert harness.run() == EXIT_FAILURE
    assert _stop_line(harness)["error_type"] == "KafkaTimeoutError"


def test_an_admin_error_at_start_up_stops_on_a_kafka_error(harness: Harness) -> None:
    harness.broker.script("describe", TopicAuthorizationFailedError())
    assert harness.run() == EXIT_FAILURE
    assert _stop_line(harness)["error_type"] == "TopicAuthorizationFailedError"
    assert harness.broker.consumers == []


def _readiness_after(harness: Harness, reason: str) -> list[tuple[bool, str]]:
    """The readiness states from the first `reason` on."""
    states = harness.health.states
    first = states.index((False, reason))
    return states[first:]


def test_a_lag_refresh_the_broker_does_not_answer_makes_the_service_unready(
    harness: Harness,
) -> None:
    """design.md: /readyz needs the broker reachable. During an outage kafka-python's poll mostly
    returns nothing rather than failing, so the lag refresh's end offsets are the probe; ready
    again as soon as the broker answers."""
    harness.configure(tuning={"lag_refresh_s": 0.0})
    harness.publish(3)
    harness.broker.script("end_offsets", KafkaTimeoutError())
    harness.broker.script("poll", lambda: None, lambda: harness.publish(2, seed=3))
    assert harness.run() == EXIT_OK
    after = _readiness_after(harness, "broker unreachable")
    assert after[:2] == [(False, "broker unreachable"), (True, "")]
    assert harness.broker.committed[TopicPartition(harness.settings.topics.input, 0)] == 5


def test_an_input_topic_deleted_while_running_makes_the_service_unready_saying_so(
    harness: Harness,
) -> None:
    """The broker answers without the input topic: unready with that reason, not "broker
    unreachable" (measured before), and ready again once the topic is back."""
    harness.configure(tuning={"lag_refresh_s": 0.0})
    harness.publish(3)
    topic = harness.settings.topics.input
    harness.broker.script("end_offsets", KafkaTimeoutError())
    harness.broker.script(
        "poll",
        lambda: harness.broker.unlisted.add(topic),
        lambda: (harness.broker.unlisted.discard(topic), harness.publish(2, seed=3)),
    )
    assert harness.run() == EXIT_OK
    reason = f"waiting for input topic {topic} (input topic missing)"
    assert _readiness_after(harness, reason)[:2] == [(False, reason), (True, "")]
    assert (False, "broker unreachable") not in harness.health.states
    assert harness.broker.committed[TopicPartition(topic, 0)] == 5


def test_a_poll_that_cannot_reach_the_broker_makes_the_service_unready(harness: Harness) -> None:
    harness.publish(3)
    harness.broker.script(
        "poll", lambda: None, KafkaConnectionError("gone"), lambda: harness.publish(1, seed=4)
    )
    assert harness.run() == EXIT_OK
    after = _readiness_after(harness, "broker unreachable")
    assert after[:2] == [(False, "broker unreachable"), (True, "")]
    assert harness.broker.committed[TopicPartition(harness.settings.topics.input, 0)] == 4


def test_a_partition_count_the_broker_does_not_answer_retries_the_record(harness: Harness) -> None:
    """kafka-python asks the broker for the input's partitions (the misrouting check) when its
    metadata lacks the topic: a timeout there is no fault of the record, so it is retried after a
    back-off, never dead-lettered as a processing error."""
    topics = harness.settings.topics
    harness.publish(3)
    harness.broker.script("partitions_for_topic", KafkaTimeoutError("metadata"))
    assert harness.run() == EXIT_OK
    [line] = harness.logged("input partition count unavailable; record will be retried")
    assert (line["offset"], line["error_type"]) == (0, "KafkaTimeoutError")
    assert harness.broker.records(topics.dlq) == []
    assert harness.value("her2_consumer_events_total", outcome="dead_lettered") == 0
    assert len(harness.broker.records(topics.classification)) == 3  # after its back-off
    assert list(harness.broker.committed.values()) == [3]
