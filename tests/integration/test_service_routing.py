"""The misrouting check end to end (issue 14, item 1): an input record that is not where its
patient's history lives is dead-lettered as `misrouted`, never evaluated, while the patient's
correctly routed records are processed against the history of their own partition.
"""

from __future__ import annotations

import warnings
from typing import Any

from helpers import (
    Env,
    encoder,
    make_event,
    offline_alerts,
    output_reader,
    running,
)

from consumer.runtime.routing import partition_for

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaProducer

PARTITIONS = 3
INPUT_PARTITIONS = PARTITIONS  # the `env` fixture creates the input topic
PATIENT = "route-patient-1"
STANDARD_HEADERS = (
    "her2.errors.topic",
    "her2.errors.partition",
    "her2.errors.offset",
    "her2.errors.stage",
    "her2.errors.reason",
    "her2.errors.exception.class.name",
    "her2.errors.exception.message",
    "her2.errors.timestamp",
)


def _send(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, int | None]]
) -> list[tuple[int, int]]:
    """Produce (key, value, partition or None for the default partitioner) in order; return
    (partition, offset) of each once acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    try:
        futures = [
            producer.send(topic, key=key, value=value, partition=partition)
            for key, value, partition in records
        ]
        producer.flush()
        placed = [future.get(timeout=20) for future in futures]
    finally:
        producer.close()
    return [(meta.partition, meta.offset) for meta in placed]


def test_misrouted_records_are_dead_lettered_and_never_evaluated(env: Env) -> None:
    enc = encoder()
    home = partition_for(PATIENT.encode(), PARTITIONS)  # where the patient's history lives
    wrong = (home + 1) % PARTITIONS
    first = make_event("route-e1", PATIENT, "route-a1", minutes=0)
    # a 3+ result that would make the last event a conversion (RT-CONVERSION, RT-DISCORDANT)
    positive = make_event(
        "route-e2",
        PATIENT,
        "route-a2",
        minutes=1,
        score="THREE_PLUS",
        percent=90.0,
        intensity="STRONG",
        completeness="COMPLETE",
    )
    other_key = make_event("route-e3", PATIENT, "route-a3", minutes=2)
    no_key = make_event("route-e4", PATIENT, "route-a4", minutes=3)
    last = make_event("route-e5", PATIENT, "route-a5", minutes=4, planned=["trastuzumab"])
    key = PATIENT.encode()
    records: list[tuple[bytes | None, bytes, int | None]] = [
        (key, enc.encode(first), None),  # kafka-python's default partitioner: murmur2
        (key, enc.encode(positive), wrong),  # right key, explicitly on another partition
        (b"route-a3", enc.encode(other_key), home),  # keyed by accession, on the right partition
        (None, enc.encode(no_key), home),  # no key, on the right partition
        (key, enc.encode(last), None),
    ]
    placed = _send(env.bootstrap, env.input, records)
    assert [p for p, _ in placed] == [home, wrong, home, home, home]
    misrouted = {placed[1]: "route-e2", placed[2]: "route-e3", placed[3]: "route-e4"}

    with running(env.settings()) as svc, output_reader(env) as reader:
        reader.wait(
            lambda r: len(r.classified_ids()) == 2 and len(r.records["dlq"]) == 3,
            what="2 classifications and 3 dead letters",
        )
        reader.settle(0.5)
        dlq_metric = svc.metric(
            "her2_consumer_dlq_records_total", {"stage": "validate", "reason": "misrouted"}
        )
        processed = svc.metric("her2_consumer_events_total", {"outcome": "processed"})

    assert reader.classified_ids() == {"route-e1", "route-e5"}
    assert (dlq_metric, processed) == (3, 2)
    # the last event was evaluated against the history of its own partition only: the 3+ that
    # was published to another partition did not enter it
    assert reader.alert_triples() == offline_alerts([first, last])
    assert offline_alerts([first, positive, last]) != offline_alerts([first, last]), (
        "the misrouted 3+ result would have changed the alerts: the test would prove nothing"
    )

    by_place = {(o.partition, o.offset): o for o in reader.records["dlq"]}
    assert len(by_place) == 3
    for letter in reader.records["dlq"]:
        h: dict[str, Any] = letter.headers
        place = (int(h["her2.errors.partition"]), int(h["her2.errors.offset"]))
        assert place in misrouted, f"{place} dead-lettered but routed right"
        original = records[placed.index(place)]
        assert set(STANDARD_HEADERS) <= set(h)
        assert h["her2.errors.topic"] == env.input.encode()
        assert (h["her2.errors.stage"], h["her2.errors.reason"]) == (b"validate", b"misrouted")
        assert h["her2.errors.exception.class.name"] == b"InvalidEvent"
        assert h["her2.errors.partition.expected"] == str(home).encode()
        assert h["her2.errors.partition.actual"] == str(place[0]).encode()
        assert h["her2.errors.partition.count"] == str(PARTITIONS).encode()
        assert (letter.key, letter.raw) == (original[0], original[1]), "key or value changed"
        for name, value in h.items():
            if name.startswith("her2.errors."):
                assert PATIENT.encode() not in value, f"{name} names the patient"
                assert b"route-a" not in value, f"{name} names an accession"
