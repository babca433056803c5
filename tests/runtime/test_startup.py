"""Start-up against the fake broker: output topics created like the input, the changelog
co-partitioned and compacted, a failed creation, the wait for a missing input topic."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import Harness
from kafka.errors import (
    ClusterAuthorizationFailedError,
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
)
from kafka.structs import TopicPartition

from consumer.config import Settings
from consumer.errors import BrokerError, RegistryError
from consumer.ops import events
from consumer.runtime.host import file_system_type
from consumer.runtime.records import INPUT_OFFSET_HEADER, INPUT_TOPIC_ID_HEADER, Backoff
from consumer.runtime.startup import (
    CHANGELOG_BEING_REBUILT,
    input_topic_id,
    register_output_schemas,
)
from consumer.service import EXIT_CONFIG, EXIT_OK
from consumer.state.backends import DISK


def test_missing_outputs_are_created_like_the_input_and_the_changelog_compacted(
    harness: Harness,
) -> None:
    harness.broker.create_topic(harness.settings.topics.input, 3)
    assert harness.run() == EXIT_OK
    topics = harness.settings.topics
    for topic in topics.outputs():
        assert len(harness.broker.topics[topic]) == 3, topic
    assert harness.broker.configs[topics.history] == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "86400000",
    }
    assert all(admin.closed for admin in harness.broker.admins)


REBUILT = "rebuilt"  # the message for a changelog rebuild-history left part-written


@pytest.mark.parametrize(
    ("configs", "refused"),
    [
        ({}, "cleanup.policy=delete"),  # created by someone else with the broker's defaults
        # kept for ever but not compacted: as rebuild-history leaves it until the whole history
        # is written (retention.bytes -1 is the broker's default)
        ({"cleanup.policy": "delete", "retention.ms": "-1"}, REBUILT),
        ({"cleanup.policy": "compact,delete"}, "cleanup.policy=compact,delete, retention.ms="),
        (
            {"cleanup.policy": "compact,delete", "retention.ms": "-1", "retention.bytes": "1024"},
            "cleanup.policy=compact,delete, retention.bytes=1024",
        ),
        (dict(CHANGELOG_BEING_REBUILT), REBUILT),
        ({"cleanup.policy": "compact"}, None),
        ({"cleanup.policy": "compact, delete", "retention.ms": "-1"}, None),
    ],
    ids=[
        "defaults",
        "delete-kept",
        "compact-delete-week",
        "compact-delete-bytes",
        "being-rebuilt",
        "compact",
        "compact-delete-for-ever",
    ],
)
def test_a_changelog_the_broker_would_delete_from_is_a_configuration_error(
    harness: Harness, capsys: object, configs: dict[str, str], refused: str | None
) -> None:
    """A changelog created by someone else must keep every key for ever: under "delete" the
    broker removes patients' history after retention.ms (a week by default)."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.create_topic(topics.history, 1)
    harness.broker.configs[topics.history] = configs
    code = harness.run()
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    if refused is None:
        assert code == EXIT_OK
        return
    assert code == EXIT_CONFIG
    if refused == REBUILT:
        assert f"HER2_HISTORY_TOPIC {topics.history} is not compacted and keeps every record" in err
        assert "a rebuild stopped part way, and the history in it is partial" in err
    else:
        assert f"HER2_HISTORY_TOPIC {topics.history} has {refused}" in err
        assert "the broker would delete patients' history" in err
    assert harness.broker.consumers == [], "never joins the group"
    assert all(admin.closed for admin in harness.broker.admins)


@pytest.mark.parametrize(
    ("lag", "warned"),
    [(None, True), ("3600000", True), ("86400000", False), ("604800000", False)],
)
def test_a_changelog_compacted_sooner_than_a_day_is_a_warning(
    harness: Harness, lag: str | None, warned: bool
) -> None:
    """A changelog created before the service set min.compaction.lag.ms (broker default 0), or
    by someone else with less: the service starts and says it."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.create_topic(topics.history, 1)
    configs = {"cleanup.policy": "compact"}
    if lag is not None:
        configs["min.compaction.lag.ms"] = lag
    harness.broker.configs[topics.history] = configs
    assert harness.run() == EXIT_OK
    lines = harness.logged(events.CHANGELOG_COMPACTION_LAG_SHORT)
    expected = int(lag or "0")
    assert [(x["min_compaction_lag_ms"], x["recommended_ms"]) for x in lines] == (
        [(expected, 86_400_000)] if warned else []
    )


def test_a_changelog_whose_settings_cannot_be_read_is_a_warning(harness: Harness) -> None:
    """Without DescribeConfigs permission kafka-python returns no settings: the service starts
    and says what to check."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.configs_unreadable.add(topics.history)
    assert harness.run() == EXIT_OK
    assert [line["topic"] for line in harness.logged(events.CHANGELOG_CONFIG_UNREAD)] == [
        topics.history
    ]


def test_a_changelog_with_another_partition_count_is_a_configuration_error(
    harness: Harness, capsys: object
) -> None:
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 2)
    harness.broker.create_topic(topics.history, 1)
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"HER2_HISTORY_TOPIC {topics.history} has 1 partitions" in err
    assert "co-partitioned" in err
    assert harness.broker.consumers == [], "never joins the group"


def test_a_topic_that_cannot_be_created_is_a_configuration_error(
    harness: Harness, capsys: object
) -> None:
    dlq = harness.settings.topics.dlq
    harness.broker.create_errors[dlq] = 29  # TOPIC_AUTHORIZATION_FAILED
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"cannot create output topic {dlq} (TopicAuthorizationFailedError, Kafka" in err
    assert "grant it Create" in err
    assert harness.broker.consumers == []
    assert all(admin.closed for admin in harness.broker.admins)


def test_a_replication_factor_above_the_brokers_names_its_setting(
    harness: Harness, capsys: object
) -> None:
    harness.broker.create_errors[harness.settings.topics.dlq] = 38  # INVALID_REPLICATION_FACTOR
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "InvalidReplicationFactorError, Kafka error code 38" in err
    assert "HER2_TOPIC_REPLICATION_FACTOR" in err


@pytest.mark.parametrize(
    ("timeout_ms", "accepted"),
    [(5999, False), (6000, True), (1800000, True), (1800001, False)],
)
def test_a_session_timeout_outside_the_brokers_bounds_stops_start_up(
    harness: Harness, capsys: object, timeout_ms: int, accepted: bool
) -> None:
    """The broker refuses a join with a session timeout outside its group bounds; librdkafka
    only logs that at debug level (measured live: unready for ever, not one line)."""
    harness.configure(tuning={"session_timeout_ms": timeout_ms})
    code = harness.run()
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    if accepted:
        assert code == EXIT_OK
        return
    assert code == EXIT_CONFIG
    assert f"HER2_SESSION_TIMEOUT_MS={timeout_ms} is outside the broker's" in err
    assert "group.min.session.timeout.ms=6000, group.max.session.timeout.ms=1800000" in err
    assert harness.broker.consumers == [], "never joins the group"


def test_the_session_bounds_come_from_a_broker_that_answers(
    harness: Harness, capsys: object
) -> None:
    """A cluster whose first-listed broker is down (a rolling restart): the next one answers;
    the check still refuses a timeout outside the bounds, and does not stop start-up on the
    broker that is down."""
    harness.broker.other_brokers = [2]
    harness.broker.first_broker = 2
    harness.configure(tuning={"session_timeout_ms": 1_800_001})
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "group.max.session.timeout.ms=1800000" in err


def test_no_broker_answering_for_its_settings_is_a_warning(harness: Harness) -> None:
    harness.broker.script("cluster", KafkaTimeoutError("no answer"))
    assert harness.run() == EXIT_OK
    [line] = harness.logged(events.BROKER_CONFIG_UNREAD)
    assert line["variable"] == "HER2_SESSION_TIMEOUT_MS"


def test_broker_settings_that_cannot_be_read_are_a_warning(harness: Harness) -> None:
    harness.broker.broker_configs = None
    assert harness.run() == EXIT_OK
    [line] = harness.logged(events.BROKER_CONFIG_UNREAD)
    assert line["variable"] == "HER2_SESSION_TIMEOUT_MS"


def test_a_missing_changelog_with_committed_input_offsets_stops_start_up(
    harness: Harness, capsys: object
) -> None:
    """The changelog deleted (or HER2_HISTORY_TOPIC changed) after the group committed: a
    changelog created empty would have every later report evaluated without the patients'
    history (measured live: retractions missing, a CRITICAL caution left active)."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 2)
    harness.broker.group_committed[harness.settings.group_id] = {
        TopicPartition(topics.input, 1): 40
    }
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"HER2_HISTORY_TOPIC {topics.history} does not exist" in err
    assert "has processed records of HER2_INPUT_TOPIC" in err
    assert "partitions [1]" in err
    assert "rebuild it from the input with `her2-consumer rebuild-history`" in err
    assert ("create", topics.history) not in harness.broker.events, "not created empty"
    assert harness.broker.consumers == [], "never joins the group"


def test_a_group_reset_to_the_log_start_may_start_without_a_changelog(
    harness: Harness,
) -> None:
    """README's recovery and upgrade reset the group to the earliest offsets; with retention
    (or deleted records) the log start, and so the committed offset, is above 0. Nothing was
    processed since: the changelog is created, as at a first start."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 2)
    tp = TopicPartition(topics.input, 1)
    harness.broker.group_committed[harness.settings.group_id] = {tp: 40}
    harness.broker.log_start[tp] = 40
    assert harness.run() == EXIT_OK
    assert ("create", topics.history) in harness.broker.events


def test_a_changelog_a_metadata_answer_left_out_is_looked_for_again(harness: Harness) -> None:
    """The first describe left the changelog out (a stale metadata answer); before refusing,
    the service looks again and finds it."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.create_topic(topics.history, 1)
    harness.broker.configs[topics.history] = {"cleanup.policy": "compact"}
    harness.broker.group_committed[harness.settings.group_id] = {TopicPartition(topics.input, 0): 5}
    real = harness.broker.topics

    def hide_once() -> None:  # the outputs' describe does not see the changelog
        harness.broker.topics = {k: v for k, v in real.items() if k != topics.history}

    def show() -> None:
        harness.broker.topics = real

    harness.broker.script("describe", lambda: None, hide_once, show)
    harness.broker.create_errors[topics.history] = 36  # TOPIC_ALREADY_EXISTS, as the broker
    assert harness.run() == EXIT_OK


def test_a_first_start_creates_the_changelog(harness: Harness) -> None:
    """No committed offset (or one at 0): nothing was processed, the changelog is created."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 2)
    harness.broker.group_committed[harness.settings.group_id] = {TopicPartition(topics.input, 0): 0}
    assert harness.run() == EXIT_OK
    assert ("create", topics.history) in harness.broker.events


def test_group_offsets_that_cannot_be_read_are_a_warning(harness: Harness) -> None:
    """No Describe permission on the group: the changelog is created, and the log says what
    went unchecked."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.script("group_offsets", GroupAuthorizationFailedError())
    assert harness.run() == EXIT_OK
    [line] = harness.logged(events.GROUP_OFFSETS_UNREAD)
    assert (line["group_id"], line["error_type"]) == (
        harness.settings.group_id,
        "GroupAuthorizationFailedError",
    )
    assert ("create", topics.history) in harness.broker.events


def test_group_offsets_unanswered_are_waited_for_before_the_changelog_is_created(
    harness: Harness,
) -> None:
    """A coordinator not loaded yet (a broker just started): retried, like the input topic's
    wait, not an exit (measured live: exit 1 with CoordinatorNotAvailable on a fresh broker);
    nothing is created unchecked meanwhile."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    created_before: list[bool] = []

    def unanswered() -> None:
        created_before.append(topics.history in harness.broker.topics)
        raise CoordinatorNotAvailableError()

    harness.broker.script("group_offsets", unanswered, unanswered)
    assert harness.run() == EXIT_OK
    assert created_before == [False, False]
    retries = harness.logged(events.GROUP_OFFSETS_RETRY)
    assert [(r["attempt"], r["error_type"]) for r in retries] == [
        (1, "CoordinatorNotAvailableError"),
        (2, "CoordinatorNotAvailableError"),
    ]
    assert ("create", topics.history) in harness.broker.events
    # unready with the reason meanwhile (it said "starting" before), ready once it answered
    waiting = (False, "waiting for the group coordinator")
    states = harness.health.states
    assert states.count(waiting) == 2
    after = states[len(states) - states[::-1].index(waiting) :]
    assert after[0] == (False, "starting"), "the reason does not outlive the wait"
    assert (True, "") in after


def test_a_stop_while_waiting_for_the_group_offsets_ends_the_run_cleanly(
    harness: Harness,
) -> None:
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    service = harness.new_service()

    def stop_and_fail() -> None:
        service.stop()
        raise CoordinatorNotAvailableError()

    harness.broker.script("group_offsets", stop_and_fail)
    assert service.run() == EXIT_OK
    assert ("create", topics.history) not in harness.broker.events
    assert harness.broker.consumers == []


@pytest.mark.parametrize("which", ["classification", "dlq", "retest"])
@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_a_compacted_output_topic_stops_start_up(
    harness: Harness, capsys: object, which: str, policy: str
) -> None:
    """Outputs are keyed by patient: compaction would keep each patient's latest record only
    (measured live: a reader from the start saw 102 of 206 alerts)."""
    topic = {
        "classification": harness.settings.topics.classification,
        "dlq": harness.settings.topics.dlq,
        "retest": harness.settings.topics.alert_topics()[0],
    }[which]
    harness.broker.create_topic(harness.settings.topics.input, 1)
    harness.broker.create_topic(topic, 1)
    harness.broker.configs[topic] = {"cleanup.policy": policy}
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"output topic {topic} has cleanup.policy={policy}" in err
    assert "cleanup.policy=delete" in err
    assert harness.broker.consumers == []


def test_outputs_are_created_uncompacted_whatever_the_brokers_default(harness: Harness) -> None:
    """A broker whose log.cleanup.policy is compact: the outputs the service creates say
    delete (else start-up would refuse the topics it had just created)."""
    topics = harness.settings.topics
    assert harness.run() == EXIT_OK
    policies = {t: harness.broker.configs[t].get("cleanup.policy") for t in topics.outputs()}
    assert policies.pop(topics.history) == "compact"
    assert set(policies.values()) == {"delete"}
    # the alert topics keep every record (readers build the open alerts from their start), and
    # the dead-letter topic (a dead letter is replayed once its cause is fixed)
    kept = {t for t in topics.outputs() if harness.broker.configs[t].get("retention.ms") == "-1"}
    assert kept == {*topics.alert_topics(), topics.dlq}
    assert harness.logged(events.ALERT_TOPIC_RETENTION_FINITE) == []
    assert harness.logged(events.DLQ_RETENTION_FINITE) == []


def test_an_alert_topic_that_deletes_by_age_is_a_warning(harness: Harness) -> None:
    """Created by someone else with the broker's default (a week): a reader rebuilding the
    open alerts from the start (open-alerts, a new notification-service instance) would miss
    every alert opened before. One warning per such alert topic; other outputs may expire."""
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    for topic in topics.outputs():
        if topic != topics.history:
            harness.broker.create_topic(topic, 1)  # the broker's defaults
    kept, *expiring = topics.alert_topics()
    harness.broker.configs[kept] = {"retention.ms": "-1"}
    harness.broker.configs[expiring[0]] = {"retention.ms": "-1", "retention.bytes": "1073741824"}
    assert harness.run() == EXIT_OK
    warned = [line["topic"] for line in harness.logged(events.ALERT_TOPIC_RETENTION_FINITE)]
    assert warned == expiring
    # the classification topic may expire; the dead-letter topic, at the broker's week, warned
    dlq_warned = [line["topic"] for line in harness.logged(events.DLQ_RETENTION_FINITE)]
    assert dlq_warned == [topics.dlq]


def test_an_output_whose_settings_cannot_be_read_is_a_warning(harness: Harness) -> None:
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 1)
    harness.broker.configs_unreadable.add(topics.dlq)
    assert harness.run() == EXIT_OK
    assert [line["topic"] for line in harness.logged(events.OUTPUT_CONFIG_UNREAD)] == [topics.dlq]


def test_an_existing_topic_reported_by_creation_is_not_an_error(harness: Harness) -> None:
    harness.broker.create_errors[harness.settings.topics.dlq] = 36  # TOPIC_ALREADY_EXISTS
    harness.broker.create_topic(harness.settings.topics.dlq, 1)  # created by someone else
    assert harness.run() == EXIT_OK


def test_a_missing_input_topic_is_waited_for_not_created(harness: Harness) -> None:
    topics = harness.settings.topics
    del harness.broker.topics[topics.input]
    harness.broker.script(
        "describe", lambda: None, lambda: harness.broker.create_topic(topics.input, 1)
    )
    assert harness.run() == EXIT_OK
    [waiting] = harness.logged(
        "input topic missing; waiting for it to be created (it is never auto-created)"
    )
    assert waiting["input_topic"] == topics.input
    reason = f"waiting for input topic {topics.input} (input topic missing)"
    assert (False, reason) in harness.health.states, "/readyz names what is awaited"
    assert ("create", topics.input) not in harness.broker.events


def test_a_stop_while_waiting_for_the_input_ends_the_run_cleanly(harness: Harness) -> None:
    del harness.broker.topics[harness.settings.topics.input]
    service = harness.new_service()
    harness.broker.script("describe", service.stop)
    assert service.run() == EXIT_OK
    assert harness.broker.producers == []
    assert harness.broker.consumers == []


def test_the_input_wait_beats_the_health_loop(harness: Harness) -> None:
    """Issue 14 item 4: /healthz stays 200 while the service waits for its input topic."""
    topics = harness.settings.topics
    del harness.broker.topics[topics.input]
    beats_at: list[int] = []

    def create() -> None:
        beats_at.append(harness.health.beats)
        harness.broker.create_topic(topics.input, 1)

    harness.broker.script("describe", lambda: beats_at.append(harness.health.beats), create)
    assert harness.run() == EXIT_OK
    assert beats_at[1] - beats_at[0] == 1, "one beat per attempt, before the first poll"


def test_no_broker_at_start_up_is_waited_out_and_the_service_starts(harness: Harness) -> None:
    """A pod started during an outage: unready ('broker unreachable') and alive while no broker
    answers, then it starts and processes as usual (not exit 1 into Kubernetes' crash-loop
    back-off)."""
    harness.broker.script("admin", KafkaTimeoutError("Unable to bootstrap"))
    harness.publish(3)
    assert harness.run() == EXIT_OK
    retries = harness.logged(events.KAFKA_UNREACHABLE_RETRY)
    assert [(r["attempt"], r["reason"]) for r in retries] == [(1, "unreachable")]
    assert harness.health.states[:2] == [(False, "starting"), (False, "broker unreachable")]
    assert (True, "") in harness.health.states
    assert harness.value("her2_consumer_events_total", outcome="processed") == 3


@pytest.mark.parametrize(
    ("error", "starts"),
    [
        (KafkaTimeoutError("Timed out after 30000 ms"), True),
        (ClusterAuthorizationFailedError(), False),
    ],
    ids=["unanswered", "refused"],
)
def test_the_metadata_request_after_subscribing_unanswered_does_not_stop_start_up(
    harness: Harness, error: Exception, starts: bool
) -> None:
    """The full metadata request made once subscribed (kafka-python's first assignment then
    sees the input's partitions) now gives up after a request timeout (quirks.
    bound_metadata_wait) instead of waiting for ever: a broker gone silent since start-up's
    checks is then waited for by the first poll, as before; a refusal still stops start-up."""
    harness.broker.script("topics", error)
    harness.publish(3)
    code = harness.run()
    assert (code == EXIT_OK) is starts
    processed = harness.value("her2_consumer_events_total", outcome="processed")
    assert processed == (3 if starts else 0)


def test_changelog_records_name_the_input_topic_their_offset_is_of(harness: Harness) -> None:
    """The input topic's id, read at start-up (DescribeTopics), beside the input offset."""
    harness.publish(3)
    assert harness.run() == EXIT_OK
    assert harness.logged(events.INPUT_TOPIC_ID_UNREAD) == []
    changelog = harness.broker.records(harness.settings.topics.history)
    assert changelog
    expected = harness.broker.topic_ids[harness.settings.topics.input].encode()
    assert {dict(r.headers).get(INPUT_TOPIC_ID_HEADER) for r in changelog} == {expected}


class _Describing:
    """An admin whose DescribeTopics fails `blips` times (retriable or not), then answers."""

    def __init__(self, blips: int, error: BrokerError) -> None:
        self.blips, self.error, self.calls = blips, error, 0

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.blips:
            raise self.error
        return [{"name": topics[0], "error_code": 0, "topic_id": "4f1c-0a"}]


@pytest.mark.parametrize(
    ("blips", "retriable", "found"),
    [(0, True, True), (1, True, True), (2, True, True), (3, True, False), (1, False, False)],
)
def test_the_input_topic_id_is_read_again_after_a_blip(
    blips: int, retriable: bool, found: bool
) -> None:
    """Review: one timeout left the process without the id, so a DR failover lost history
    again; a retriable error is tried again a second later, three attempts in all."""
    admin = _Describing(
        blips, BrokerError("no answer", kind="KafkaTimeoutError", retriable=retriable)
    )
    waits: list[float] = []
    with structlog.testing.capture_logs() as logs:
        got = input_topic_id(admin, "in", lambda s: waits.append(s) or False)  # type: ignore[arg-type, func-returns-value]
    assert got == (b"4f1c-0a" if found else None)
    assert [line["event"] for line in logs] == ([] if found else [events.INPUT_TOPIC_ID_UNREAD])
    assert waits == [1.0] * min(blips, 2 if retriable else 0)


def test_a_broker_that_does_not_tell_the_topic_id_keeps_the_offset_guard_for_every_record(
    harness: Harness,
) -> None:
    """A broker without topic ids (all zeros) or that keeps failing: a warning, and the records
    go without the id, as before it existed: the restore's offset guard holds for all."""
    harness.broker.topic_ids_unsupported = True
    harness.publish(3)
    assert harness.run() == EXIT_OK
    assert len(harness.logged(events.INPUT_TOPIC_ID_UNREAD)) == 1
    changelog = harness.broker.records(harness.settings.topics.history)
    assert changelog
    assert all(INPUT_TOPIC_ID_HEADER not in dict(r.headers) for r in changelog)
    assert all(INPUT_OFFSET_HEADER in dict(r.headers) for r in changelog)


def test_a_stop_while_no_broker_answers_at_start_up_is_exit_0(harness: Harness) -> None:
    service = harness.new_service()
    harness.broker.script(
        "admin", KafkaTimeoutError("Unable to bootstrap"), KafkaTimeoutError("Unable to bootstrap")
    )
    threading.Timer(0.3, service.stop).start()
    assert service.run() == EXIT_OK
    assert len(harness.broker.admins) == 0, "never connected"
    assert (harness.broker.producers, harness.broker.consumers) == ([], [])


class FlakyRegistry:
    """Refuses `failures` registrations, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.subjects: list[str] = []

    def register(self, subject: str, schema: str) -> int:
        if self.failures:
            self.failures -= 1
            raise RegistryError("certificate verify failed", "tls")
        self.subjects.append(subject)
        return 1


def test_an_unavailable_registry_is_waited_for_beating_and_named_in_readiness() -> None:
    settings = Settings(output_format="confluent", schema_registry_url="http://registry:8081")
    registry = FlakyRegistry(failures=2)
    waits: list[float] = []
    states: list[tuple[bool, str]] = []
    beats: list[int] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    with structlog.testing.capture_logs() as logs:
        register_output_schemas(
            settings,
            registry,
            wait,
            lambda ready, reason="": states.append((ready, reason)),
            lambda: beats.append(1),
            backoff=Backoff((0.5, 1.0)),
        )
    warned = [line for line in logs if line["event"] == events.REGISTRY_UNAVAILABLE_AT_START]
    # the kind says what to check (security audit: a wrong CA read as "unavailable" only)
    assert [line["reason"] for line in warned] == ["tls", "tls"]
    assert waits == [0.5, 1.0]
    assert len(beats) == 2, "a beat per failed attempt: /healthz stays 200"
    assert states == [(False, "schema registry unavailable")] * 2 + [(False, "starting")]
    assert registry.subjects[0] == f"{settings.topics.classification}-value"


def test_a_stop_while_the_registry_is_down_ends_the_wait() -> None:
    settings = Settings(output_format="confluent", schema_registry_url="http://registry:8081")
    registry = FlakyRegistry(failures=10)
    register_output_schemas(settings, registry, lambda seconds: True, lambda *a: None, lambda: None)
    assert registry.subjects == []


def test_a_host_clock_two_hours_fast_is_measured_and_warned_about(harness: Harness) -> None:
    """Issue 15 item 1: the start-up check compares the host clock with the cluster's (the KRaft
    quorum leader's time), sets the offset gauge and warns beyond the tolerance."""
    two_hours_ms = 2 * 3600 * 1000
    harness.broker.cluster_clock_ms = lambda: int(time.time() * 1000) - two_hours_ms
    assert harness.run() == EXIT_OK
    offset = harness.value("her2_consumer_clock_offset_seconds")
    assert 7199 < offset < 7201, offset
    [warning] = harness.logged("host clock differs from the Kafka cluster's clock")
    assert warning["tolerance_seconds"] == 60
    assert 7199 < warning["offset_seconds"] < 7201


def test_the_tolerance_is_exported_for_the_alert_rule(harness: Harness) -> None:
    """Her2ConsumerClockSkew compares the offset with this gauge, so the alert follows
    HER2_CLOCK_SKEW_TOLERANCE_SECONDS (0: the check is off, and the rule ignores 0)."""
    harness.configure(clock_skew_tolerance_s=300)
    assert harness.run() == EXIT_OK
    assert harness.value("her2_consumer_clock_skew_tolerance_seconds") == 300


def test_a_clock_within_the_tolerance_is_only_logged(harness: Harness) -> None:
    harness.broker.cluster_clock_ms = lambda: int(time.time() * 1000) + 30_000  # host 30 s behind
    assert harness.run() == EXIT_OK
    assert -31 < harness.value("her2_consumer_clock_offset_seconds") < -29
    assert harness.logged("host clock differs from the Kafka cluster's clock") == []
    assert len(harness.logged("clock checked")) == 1


def test_a_cluster_that_does_not_tell_its_time_does_not_stop_start_up(harness: Harness) -> None:
    """No KRaft quorum to describe, or no DESCRIBE permission on the cluster: advisory only."""
    harness.broker.script("quorum", ClusterAuthorizationFailedError())
    assert harness.run() == EXIT_OK
    [line] = harness.logged("clock check unavailable")
    assert line["error_type"] == "ClusterAuthorizationFailedError"
    assert harness.value("her2_consumer_clock_offset_seconds") == 0


def test_the_clock_check_can_be_turned_off(harness: Harness) -> None:
    harness.broker.cluster_clock_ms = lambda: 0
    harness.configure(clock_skew_tolerance_s=0)
    assert harness.run() == EXIT_OK
    assert harness.logged("clock checked") == harness.logged("clock check unavailable") == []
    assert harness.value("her2_consumer_clock_offset_seconds") == 0
    assert harness.value("her2_consumer_clock_skew_tolerance_seconds") == 0


# /proc/self/mountinfo lines: "id parent dev root mount-point options [optional] - type source"
_MOUNTS = "\n".join(
    [
        "22 1 0:21 / / rw,relatime - ext4 /dev/root rw",
        "25 22 0:23 / /dev/shm rw,relatime shared:2 - tmpfs tmpfs rw",
        "26 22 0:24 / /var/lib/her2 rw - xfs /dev/sdb rw",
        "27 26 0:25 / /var/lib/her2/cache rw - tmpfs tmpfs rw",
        "28 22 0:26 / /mnt/state\\040dir rw - ramfs ramfs rw",
        "29 22 0:27 / /srv rw - tmpfs tmpfs rw",
        "30 22 0:28 / /srv rw - ext4 /dev/sdc rw",  # mounted over the tmpfs: hides it
        "not a mountinfo line",
    ]
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "ext4"),
        ("/tmp/her2", "ext4"),  # noqa: S108 - a path to look up, not a file to use
        ("/dev/shm/her2", "tmpfs"),  # noqa: S108 - a path to look up, not a file to use
        ("/dev/shmem", "ext4"),  # noqa: S108 - a prefix of the text is not a parent
        ("/var/lib/her2/state", "xfs"),
        ("/var/lib/her2/cache/state", "tmpfs"),
        ("/mnt/state dir/x", "ramfs"),
        ("/srv/state", "ext4"),
    ],
)
def test_the_file_system_of_a_path_is_its_deepest_mount(path: str, expected: str) -> None:
    assert file_system_type(Path(path), _MOUNTS) == expected


def test_no_parsable_mountinfo_gives_no_file_system() -> None:
    assert file_system_type(Path("/x"), "garbage\n\n") is None


def _memory_fs(path: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text() if Path("/proc/self/mountinfo").exists() else ""
    return file_system_type(path.resolve(), text) in ("tmpfs", "ramfs")


def test_a_state_dir_on_tmpfs_is_warned_about(harness: Harness) -> None:
    """The disk store on a memory file system (a pod's /tmp, a compose tmpfs) holds the
    history in memory, and a small one fills up: a warning at start-up names it."""
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp directory is made in it
    if not shm.is_dir() or not _memory_fs(shm):
        pytest.skip("no tmpfs at /dev/shm on this machine")
    state = Path(tempfile.mkdtemp(prefix="her2-test-", dir=shm))
    try:
        harness.configure(history_store=DISK, state_dir=state)
        assert harness.run() == EXIT_OK
    finally:
        shutil.rmtree(state, ignore_errors=True)
    [warning] = harness.logged(events.STATE_DIR_IN_MEMORY)
    assert warning["file_system"] == "tmpfs"
    assert warning["path"] == str(state)
    assert warning["state_dir_set"] is True


def test_a_state_dir_on_disk_is_not_warned_about(harness: Harness, tmp_path: Path) -> None:
    if _memory_fs(tmp_path):
        pytest.skip("the test's temp dir is itself on tmpfs here")
    harness.configure(history_store=DISK, state_dir=tmp_path)
    assert harness.run() == EXIT_OK
    assert harness.logged(events.STATE_DIR_IN_MEMORY) == []


@pytest.mark.parametrize(("days", "warned"), [(0, False), (3650, True)])
def test_a_history_retention_is_a_warning_at_start(
    harness: Harness, days: int, warned: bool
) -> None:
    """Retention is off by default: a dropped sample can change findings over the patient's
    reports (section 8 evaluates every sample), so a site that sets it is told at each start."""
    harness.configure(history_retention_days=days)
    harness.publish(1)
    assert harness.run() == EXIT_OK
    lines = harness.logged(
        "HER2_HISTORY_RETENTION_DAYS is set: accessions reported longer ago leave the patient "
        "history, and a dropped sample can change findings (README: Patient history)"
    )
    assert [line["days"] for line in lines] == ([days] if warned else [])
