"""A future-dated event_time end to end (issue 15, item 4): "a report dated 9999-12-31 makes
every later report of the accession older, so a later CANCELLED report changes nothing".

Such a report is dead-lettered (stage validate, reason event-time-in-future), never evaluated
and never stored, so a later CANCELLED report of the same accession still retracts the
accession's alerts.
"""

from __future__ import annotations

import datetime as dt

from helpers import (
    Env,
    encoder,
    make_event,
    offline_alerts,
    output_reader,
    produce,
    running,
)

PATIENT = "future-patient-1"
ACCESSION = "future-acc-1"
FAR_FUTURE = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


INPUT_PARTITIONS = 1  # the `env` fixture creates the input topic


def test_a_9999_report_is_dead_lettered_and_a_later_cancel_still_retracts(env: Env) -> None:
    final = make_event("future-e1", PATIENT, ACCESSION, minutes=0)  # metastatic HER2-low
    corrected = make_event(  # the lab's system stamps it 9999-12-31: a 3+ "correction"
        "future-e2",
        PATIENT,
        ACCESSION,
        status="CORRECTED",
        score="THREE_PLUS",
        percent=90.0,
        intensity="STRONG",
        completeness="COMPLETE",
    )
    corrected["event_time"] = FAR_FUTURE
    cancelled = make_event("future-e3", PATIENT, ACCESSION, status="CANCELLED", minutes=10)
    enc = encoder()
    records = [(PATIENT.encode(), enc.encode(e)) for e in (final, corrected, cancelled)]
    produce(env.bootstrap, env.input, records)

    expected = offline_alerts([final, cancelled])
    opened = {(code, s) for e, code, s in expected if e == "future-e1"}
    assert opened, "the first report must open alerts, or the test proves nothing"
    assert {(code, "RETRACTED") for code, _ in opened} <= {
        (code, s) for e, code, s in expected if e == "future-e3"
    }

    with running(env.settings()) as svc, output_reader(env) as reader:
        reader.wait(
            lambda r: len(r.classified_ids()) == 2 and len(r.records["dlq"]) == 1,
            what="2 classifications and 1 dead letter",
        )
        reader.settle(0.5)
        dead = svc.metric(
            "her2_consumer_dlq_records_total",
            {"stage": "validate", "reason": "event-time-in-future"},
        )

    assert dead == 1
    assert reader.classified_ids() == {"future-e1", "future-e3"}
    # every alert the first report opened is retracted by the cancel: the accession is not locked
    assert reader.alert_triples() == expected
    retracted = {
        a.value["alert_id"] for a in reader.alerts() if a.value and a.value["status"] == "RETRACTED"
    }
    active = {
        a.value["alert_id"] for a in reader.alerts() if a.value and a.value["status"] == "ACTIVE"
    }
    assert active
    assert retracted == active

    (letter,) = reader.records["dlq"]
    h = letter.headers
    assert (h["her2.errors.stage"], h["her2.errors.reason"]) == (
        b"validate",
        b"event-time-in-future",
    )
    assert h["her2.errors.exception.class.name"] == b"InvalidEvent"
    assert b"9999" not in h["her2.errors.exception.message"], "the message carries the value"
    assert h["her2.errors.offset"] == b"1"
    assert (letter.key, letter.raw) == records[1], "key or value changed"
    for name, value in h.items():
        if name.startswith("her2.errors."):
            assert PATIENT.encode() not in value, f"{name} names the patient"
            assert ACCESSION.encode() not in value, f"{name} names the accession"

    # never stored: no changelog record holds the future-dated report
    for record in reader.records["history"]:
        part = record.value["part"] if record.value else {}
        report = part.get("report") if isinstance(part, dict) else None
        if report and report.get("event_time"):
            assert report["event_time"].year < 9999, "the future-dated report reached the history"
