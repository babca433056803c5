"""rebuild-history's replay (consumer/tools/rebuild.py), wired as the tool wires it.

Retention judges each record at its timestamp. With HER2_HISTORY_RETENTION_DAYS set, a replay on
the host clock dropped a report older than the retention right after its own step, before the
reports minutes after it in real time were evaluated; findings resting on it never fired and
the reconciliation resolved them (first review: a T-DXd eligibility alert resolved).

The event-time check judges on the host clock. A record's timestamp is only a lower bound of
when `run` judged it (the sender sets it): judged against it, a report whose event_time lies
more than the skew after it was dead-lettered as event-time-in-future though `run` accepted it,
and its findings resolved (second review). A timestamp that is not in milliseconds is the
host clock's business too, never a traceback."""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import pytest
from conftest import pipeline
from fakes import FakeBroker, FakeConsumer

from consumer.avro.codec import Encoder
from consumer.config import Settings
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.kafka import TopicPartition
from consumer.tools.rebuild import Rebuild

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from helpers import make_event

MET = {"site": "DISTANT_METASTASIS"}
EVENTS = [  # A1's HER2-low sample makes A2's metastatic setting eligible (README timeline)
    make_event("b-e1", "b1", "b1-a1", setting="EARLY", chemo_lines=None, minutes=0),
    {**make_event("b-e2", "b1", "b1-a2", minutes=1, **MET), "her2_ihc": None},
]


def _millis(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("stamp", "kept"),
    [
        (lambda e: _millis(e["event_time"] + dt.timedelta(minutes=1)), True),  # as reported
        (lambda e: _millis(e["event_time"] - dt.timedelta(days=3)), True),  # a clock behind
        # not milliseconds: retention on the host clock, which expires the 2025 reports
        (lambda e: _millis(e["event_time"]) * 1000, False),
    ],
    ids=["sent-as-reported", "stamped-days-before-event-time", "microseconds"],
)
def test_the_replay_evaluates_what_run_evaluated(stamp: object, kept: bool) -> None:
    settings = Settings.from_env(
        {"HER2_HISTORY_RETENTION_DAYS": "30", "HER2_HISTORY_STORE": "memory"}
    )
    topic = settings.topics.input
    broker = FakeBroker()
    broker.create_topic(topic)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    for event in EVENTS:  # reported in 2025, long before this rebuild
        broker.append(topic, b"b1", encoder.encode(event), timestamp=stamp(event))  # type: ignore[operator]
    rebuild = Rebuild(settings, pipeline().ruleset, io.StringIO())
    tp = TopicPartition(topic, 0)
    clock, recording, processor, stores = rebuild.replay_parts([tp], 1, None)
    done, dead, unread = rebuild._replay(
        FakeConsumer(broker, {}), ({tp: 2}, {tp: 2}), processor, recording, clock, stores
    )
    assert (done, dict(dead), unread) == (2, {}, [])
    raised = {(a["code"], a["status"]) for a in recording.last.values()}
    assert (("TDXD-LOW-DB04", "ACTIVE") in raised) is kept
    assert clock() > dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the host clock after the replay


def test_the_records_past_the_committed_offset_get_their_classifications_and_dead_letters() -> None:
    """What `run` publishes for a record besides alerts (its classification, or its dead
    letter) is published by the rebuild for the records past the committed offset, which
    `run` does not read again; the alerts are the reconciliation's."""
    settings = Settings.from_env({"HER2_HISTORY_STORE": "memory"})
    topics = settings.topics
    broker = FakeBroker()
    broker.create_topic(topics.input)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    for event in EVENTS:
        broker.append(topics.input, b"b1", encoder.encode(event))
    broker.append(topics.input, b"b1", b"not avro")
    rebuild = Rebuild(settings, pipeline().ruleset, io.StringIO())
    tp = TopicPartition(topics.input, 0)
    clock, recording, processor, stores = rebuild.replay_parts([tp], 1, None)
    done, dead, unread = rebuild._replay(
        FakeConsumer(broker, {}), ({tp: 1}, {tp: 3}), processor, recording, clock, stores
    )
    assert (done, sum(dead.values())) == (3, 1)
    assert [out.topic for out in unread] == [topics.classification, topics.dlq]
    assert [out.key for out in unread] == [b"b1", b"b1"]  # partitioned as `run` partitions them
    assert any(a["code"] == "TDXD-LOW-DB04" for a in recording.last.values())  # not in unread
