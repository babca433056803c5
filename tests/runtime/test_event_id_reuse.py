"""A reused event_id (design.md: unique per published event) with other content is dead-lettered
as `event-id-reused` (stage validate), never taken for a redelivery; a true redelivery still
re-publishes its records."""

from __future__ import annotations

from conftest import Harness

from consumer.avro.codec import Encoder
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime import routing
from consumer.service import EXIT_OK


def test_a_reused_event_id_is_dead_lettered_and_a_redelivery_is_not(harness: Harness) -> None:
    topics = harness.settings.topics
    events = harness.publish(12)
    final = next(e for e in events if e["report_status"] == "FINAL")
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    key = routing.patient_key(final["patient_id"])
    partition = routing.partition_for(key, len(harness.broker.topics[topics.input]))
    reused = {**final, "report_status": "AMENDED", "reported_text": "amended"}
    for event in (reused, final):  # the reused id, then a redelivery of the original
        harness.broker.append(topics.input, key, encoder.encode(event), partition)
    assert harness.run() == EXIT_OK
    [dead] = harness.broker.records(topics.dlq)
    headers = dict(dead.headers)
    assert (headers["her2.errors.stage"], headers["her2.errors.reason"]) == (
        b"validate",
        b"event-id-reused",
    )
    assert b"unique per published event" in headers["her2.errors.exception.message"]
    dlq = harness.value(
        "her2_consumer_dlq_records_total", stage="validate", reason="event-id-reused"
    )
    assert dlq == 1
    # the reused id published nothing; the redelivery its classification once more
    classified = [r for r in harness.broker.records(topics.classification) if r.key == key]
    assert len(classified) == sum(e["patient_id"] == final["patient_id"] for e in events) + 1
