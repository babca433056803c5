"""Output records against the fake broker (issue 15 items 1 and 3).

Timestamps: every output (classification, alerts, dead letters, changelog) carries the input
record's timestamp, never the host clock, so a host clock hours fast is not refused by a broker's
`message.timestamp.after.max.ms`.

Outputs refused for good (a non-retriable per-record produce error: a size limit, a missing
write ACL, an invalid timestamp): the record is dead-lettered with the refusal in its headers,
the batch runs again without it and commits; a dead-letter copy the DLQ refuses falls back to
its error headers alone; what cannot be written at all stops the service without committing.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from conftest import Harness
from fakes import FakeRecord
from kafka.errors import (
    InvalidTimestampError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)

from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.resources import HER2_ALERT, PATHOLOGY_RESULT, parsed_schema
from consumer.service import EXIT_FAILURE, EXIT_OK

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from helpers import make_event

HOUR_MS = 3_600_000
GUARANTEES = ["at_least_once", "exactly_once"]


def _headers(record: FakeRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers if k.startswith("her2.errors.")}


def _history_patients(harness: Harness) -> set[str]:
    return {
        json.loads(r.key)[1]
        for r in harness.broker.records(harness.settings.topics.history)
        if r.key is not None
    }


def _refuse_after_max(harness: Harness, broker_now_ms: int, after_ms: int = HOUR_MS) -> None:
    """A Kafka 4.x broker: records stamped more than `after_ms` ahead of its clock are refused
    (`message.timestamp.after.max.ms`), on every topic."""
    for topic in [*harness.settings.topics.outputs(), harness.settings.topics.dlq]:
        harness.broker.refuse(
            topic, InvalidTimestampError(), lambda r: r.timestamp > broker_now_ms + after_ms
        )


class TestTimestamps:
    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_outputs_carry_the_input_records_timestamp_not_the_host_clock(
        self, harness: Harness, guarantee: str
    ) -> None:
        harness.configure(processing_guarantee=guarantee)
        harness.publish(20)
        broker = harness.broker
        topics = harness.settings.topics
        stamps = {}
        for i, record in enumerate(broker.records(topics.input)):
            record.timestamp = broker.clock_ms - 60_000 * (i + 1)  # distinct, in the past
            stamps[record.offset] = record.timestamp
        garbage = broker.append(topics.input, b"k", b"\xffnot avro", timestamp=broker.clock_ms - 7)
        broker.producer_clock_ms = broker.clock_ms + 2 * HOUR_MS  # the host clock 2 h fast
        _refuse_after_max(harness, broker.clock_ms)
        assert harness.run() == EXIT_OK
        sent = [(topic, ts) for topic, ts in broker.sent_timestamps]
        assert sent
        assert all(ts is not None for _, ts in sent), "never the producer's clock"
        inputs = set(stamps.values())
        classified = [r.timestamp for r in broker.records(topics.classification)]
        assert sorted(classified) == sorted(inputs)  # one per valid event, its own timestamp
        for topic in topics.alert_topics():
            assert {r.timestamp for r in broker.records(topic)} <= inputs
        # a changelog record: the timestamp of the last input record of its batch's partition
        changelog = {r.timestamp for r in broker.records(topics.history)}
        assert changelog
        assert changelog <= inputs | {garbage.timestamp}
        [dead] = broker.records(topics.dlq)
        assert dead.timestamp == garbage.timestamp
        assert list(broker.committed.values()) == [21]


class TestRefusedOutputs:
    def _refuse_patient(
        self, harness: Harness, topic: str, exc: Exception, count: int = 12
    ) -> bytes:
        """Publish `count` events; refuse every record of `topic` keyed by one patient."""
        harness.publish(count)
        records = harness.broker.records(harness.settings.topics.input)
        key = records[count // 2].key
        assert key is not None
        harness.broker.refuse(topic, exc, lambda r: r.key == key)
        return key

    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_a_record_whose_output_is_refused_for_good_is_dead_lettered_and_the_rest_commits(
        self, harness: Harness, guarantee: str
    ) -> None:
        harness.configure(processing_guarantee=guarantee)
        topics = harness.settings.topics
        key = self._refuse_patient(harness, topics.classification, MessageSizeTooLargeError())
        inputs = harness.broker.records(topics.input)
        poisoned = [r for r in inputs if r.key == key]
        assert harness.run() == EXIT_OK
        # every record of the partition is accounted for and committed
        assert list(harness.broker.committed.values()) == [len(inputs)]
        dead = harness.broker.records(topics.dlq)
        assert [(d.key, d.value) for d in dead] == [(r.key, r.value) for r in poisoned]
        for d in dead:
            headers = _headers(d)
            assert headers["her2.errors.reason"] == "output-refused"
            assert headers["her2.errors.stage"] == "process"
            assert headers["her2.errors.output.topic"] == topics.classification
            assert headers["her2.errors.output.error"] == "MessageSizeTooLargeError"
            assert headers["her2.errors.exception.class.name"] == "MessageSizeTooLargeError"
        # the others are classified; none of the refused record's outputs is published
        classified = harness.broker.records(topics.classification)
        assert key not in {r.key for r in classified}
        assert {r.value for r in classified if r.key != key}
        expected = len(inputs) - len(poisoned)
        if guarantee == "exactly_once":  # the aborted transaction left nothing behind
            assert len(classified) == expected
            txn = [what for kind, what in harness.broker.events if kind == "txn"]
            # the failed transaction, the probes that isolate the refused record (each an
            # aborted transaction of its own), the re-run
            assert txn[:2] == ["begin", "abort"]
            assert txn[-3:] == ["begin", "offsets", "commit"]
            probes = txn[2:-3]
            assert probes
            assert probes == ["begin", "abort"] * (len(probes) // 2)
        else:  # at-least-once re-sends what was acknowledged before the refusal: duplicates
            assert len({r.value for r in classified}) == expected
        alerted = {r.key for t in topics.alert_topics() for r in harness.broker.records(t)}
        if guarantee == "exactly_once":
            assert key not in alerted, "none of the record's outputs is published"
            assert (
                "none of its outputs was published"
                in _headers(dead[0])["her2.errors.exception.message"]
            )
        else:  # its alerts, acknowledged before the refusal, stay published: so does its
            # evaluation (a copy is dead-lettered to publish the refused outputs again)
            assert key in alerted
            assert (
                "its evaluation is in the patient's history"
                in _headers(dead[0])["her2.errors.exception.message"]
            )
        # exactly-once, a dead-lettered record leaves no trace in the history; at-least-once
        # the record is in it (its outputs but the refused ones are published)
        assert (key.decode() in _history_patients(harness)) is (guarantee == "at_least_once")
        assert _history_patients(harness)
        assert harness.value(
            "her2_consumer_dlq_records_total", stage="process", reason="output-refused"
        ) == len(poisoned)
        assert harness.logged(
            "output refused by the broker for good; the record will be dead-lettered and its "
            "batch run again"
        )
        assert harness.broker.producers[0].closed, "the re-run goes through a new producer"

    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_an_alert_topic_without_a_write_acl_dead_letters_only_the_records_alerting_there(
        self, harness: Harness, guarantee: str
    ) -> None:
        harness.configure(processing_guarantee=guarantee)
        topics = harness.settings.topics
        harness.publish(30)
        topic = topics.documentation
        harness.broker.refuse(topic, TopicAuthorizationFailedError(topic))
        assert harness.run() == EXIT_OK
        assert list(harness.broker.committed.values()) == [30]
        dead = harness.broker.records(topics.dlq)
        assert dead, "some synthetic events raise documentation alerts"
        assert {_headers(d)["her2.errors.output.topic"] for d in dead} == {topic}
        assert harness.broker.records(topic) == []
        # a topic-wide refusal is settled by one record sent alone, not one probe per record:
        # the first producer, its replacement after the refusal, one after the probe
        assert len(dead) > 3
        assert len(harness.broker.producers) == 3
        if guarantee == "exactly_once":  # at-least-once: acknowledged before the refusal
            classified = harness.broker.records(topics.classification)
            assert len(classified) == 30 - len(dead)
        # the alerts counted are those published: none to the refusing topic (a review found
        # at-least-once counting the ones it left out)
        documented = [
            sample
            for metric in harness.metrics.registry.collect()
            if metric.name == "her2_consumer_alerts"
            for sample in metric.samples
            if sample.name.endswith("_total")
            and sample.labels.get("alert_type") == "DOCUMENTATION_GAP"
            and sample.value
        ]
        assert documented == []

    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_a_dead_letter_copy_the_dlq_refuses_falls_back_to_its_error_headers(
        self, harness: Harness, guarantee: str
    ) -> None:
        """The DLQ topic with a small max.message.bytes and a large poison record."""
        harness.configure(processing_guarantee=guarantee)
        topics = harness.settings.topics
        harness.publish(5)
        poison = harness.broker.append(topics.input, b"k", b"\xff" * 300_000)
        harness.publish(5, seed=2)
        harness.broker.refuse(
            topics.dlq, MessageSizeTooLargeError(), lambda r: len(r.value or b"") > 100_000
        )
        assert harness.run() == EXIT_OK
        assert list(harness.broker.committed.values()) == [11]
        [dead] = harness.broker.records(topics.dlq)
        assert (dead.key, dead.value) == (b"k", None)
        headers = _headers(dead)
        assert headers["her2.errors.reason"] == "unknown-magic-byte"
        assert headers["her2.errors.offset"] == str(poison.offset)
        assert headers["her2.errors.dlq.refused"] == "MessageSizeTooLargeError"
        assert "read the record from the input topic" in headers["her2.errors.exception.message"]
        assert len({r.value for r in harness.broker.records(topics.classification)}) == 10

    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_a_dead_letter_the_dlq_refuses_even_as_headers_stops_without_committing(
        self, harness: Harness, guarantee: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        harness.configure(processing_guarantee=guarantee)
        topics = harness.settings.topics
        key = self._refuse_patient(harness, topics.classification, MessageSizeTooLargeError())
        harness.broker.refuse(topics.dlq, TopicAuthorizationFailedError(topics.dlq))
        assert harness.run() == EXIT_FAILURE
        assert harness.broker.committed == {}
        assert harness.broker.records(topics.dlq) == []
        assert key.decode() not in _history_patients(harness)
        err = capsys.readouterr().err
        assert f"the dead-letter topic {topics.dlq} refused a dead-letter record" in err
        assert "TopicAuthorizationFailedError" in err

    @pytest.mark.parametrize("guarantee", GUARANTEES)
    def test_a_refused_changelog_record_stops_without_committing(
        self, harness: Harness, guarantee: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A patient's history is never dropped: stop rather than lose it."""
        harness.configure(processing_guarantee=guarantee)
        topics = harness.settings.topics
        harness.publish(6)
        harness.broker.refuse(topics.history, MessageSizeTooLargeError())
        assert harness.run() == EXIT_FAILURE
        assert harness.broker.committed == {}
        assert harness.broker.records(topics.dlq) == []
        err = capsys.readouterr().err
        assert f"the broker refused a record of {topics.history} for good" in err
        if guarantee == "at_least_once":  # B8: the outputs were acknowledged first
            kinds = harness.broker.events
            assert kinds.index(("nack", topics.history)) > max(
                i for i, e in enumerate(kinds) if e == ("ack", topics.classification)
            )

    def test_a_retriable_failure_is_still_re_sent_not_dead_lettered(self, harness: Harness) -> None:
        harness.configure(publish_retries=1)
        harness.publish(4)
        harness.broker.script(
            f"ack:{harness.settings.topics.classification}", NotEnoughReplicasError()
        )
        assert harness.run() == EXIT_OK
        assert harness.broker.records(harness.settings.topics.dlq) == []
        assert harness.value("her2_consumer_publish_retries_total") == 1


def test_outputs_co_partitioned_with_the_input_go_to_the_input_records_partition(
    harness: Harness,
) -> None:
    """Issue 17: an output topic with the input's partition count gets the input record's
    partition (the routing check made sure it is murmur2(key) mod n, what kafka-python would
    hash again); one with another count is left to the producer's partitioner, and so is the
    dead-letter topic (a dead letter's key need not be a patient id)."""
    topics = harness.settings.topics
    del harness.broker.topics[topics.input]
    harness.broker.create_topic(topics.input, 3)
    harness.broker.create_topic(topics.classification, 2)  # not co-partitioned
    harness.publish(30)
    harness.broker.append(topics.input, b"x", b"\x00garbage", partition=1)
    assert harness.run() == EXIT_OK
    sent = harness.broker.sent_partitions
    alert_topics = set(topics.alert_topics())
    alerts = [(t, p) for t, p in sent if t in alert_topics]
    assert alerts
    assert all(p in (0, 1, 2) for _, p in alerts), alerts
    assert {p for _, p in alerts} == {0, 1, 2}
    assert {p for t, p in sent if t == topics.classification} == {None}
    assert {p for t, p in sent if t == topics.dlq} == {None}
    # every alert record sits on its input record's partition
    by_key = {r.key: r.partition for r in harness.broker.records(topics.input)}
    for topic in alert_topics:
        for record in harness.broker.records(topic):
            assert record.partition == by_key[record.key]


def _alerts_by_id(harness: Harness) -> dict[str, list[tuple[int, str]]]:
    """alert_id -> (revision, status) of every alert record, in topic order."""
    decoder = Decoder("single-object", parsed_schema(HER2_ALERT))
    found: dict[str, list[tuple[int, str]]] = {}
    for topic in harness.settings.topics.alert_topics():
        for record in harness.broker.records(topic):
            alert = decoder.decode(record.value)
            found.setdefault(alert["alert_id"], []).append((alert["revision"], alert["status"]))
    return found


def test_at_least_once_a_record_with_a_refused_output_stays_evaluated(harness: Harness) -> None:
    """At-least-once, the broker refuses one output of a cancellation for good (here its
    classification) after acknowledging its T-DXd retractions. Dead-lettered unevaluated, the
    record left those retractions published under revisions the history did not know: the
    patient's next HER2-low report published r2 ACTIVE again beside r2 RETRACTED, and readers
    keeping the first of a revision showed no T-DXd alert (runbook audit, reproduced on a
    broker). Now the record stays evaluated without the refused output, a copy is
    dead-lettered, and replaying the copy (a redelivery) publishes the refused output."""
    topics = harness.settings.topics
    events = [
        make_event("pr1-e1", "pr1", "pr1-a1", minutes=0),
        make_event("pr1-e2", "pr1", "pr1-a1", status="CANCELLED", minutes=1),
        make_event("pr1-e3", "pr1", "pr1-a2", minutes=2, collected=dt.date(2024, 6, 1)),
    ]
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    for event in events:
        harness.broker.append(topics.input, b"pr1", encoder.encode(event))
    harness.broker.refuse(
        topics.classification, MessageSizeTooLargeError(), lambda r: b"pr1-e2" in r.value
    )
    assert harness.run() == EXIT_OK
    by_id = _alerts_by_id(harness)
    for records in by_id.values():  # (alert_id, revision) unique across the topics
        revisions = [revision for revision, _ in records]
        assert len(set(revisions)) == len({(r, s) for r, s in records}), records
    offline = Pipeline(load_ruleset())
    state = None
    expected: dict[str, tuple[int, str]] = {}
    for event in events:
        step = offline.step(state, event)
        state = step.state
        for alert in step.alerts:
            expected[alert["alert_id"]] = (alert["revision"], alert["status"])
    assert {aid: max(records) for aid, records in by_id.items()} == expected
    [dead] = harness.broker.records(topics.dlq)
    assert _headers(dead)["her2.errors.reason"] == "output-refused"
    classified = [r for r in harness.broker.records(topics.classification) if b"pr1-e2" in r.value]
    assert classified == []
    # the cause fixed, the copy replayed into the input: a redelivery publishes the refused
    # classification, and the alerts again under the same revisions
    harness.broker.refusals.clear()
    harness.broker.append(topics.input, dead.key, dead.value)
    before = {aid: list(records) for aid, records in _alerts_by_id(harness).items()}
    assert harness.run() == EXIT_OK
    classified = [r for r in harness.broker.records(topics.classification) if b"pr1-e2" in r.value]
    assert len(classified) == 1
    after = _alerts_by_id(harness)
    assert {aid: max(records) for aid, records in after.items()} == {
        aid: max(records) for aid, records in before.items()
    }
