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

import dataclasses
import datetime as dt
import io
import sys
from pathlib import Path

import pytest
from conftest import pipeline
from fakes import FakeBroker, FakeConsumer

from consumer.avro.codec import Encoder
from consumer.config import Settings
from consumer.errors import DecodeError, RegistryError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.kafka import TopicPartition
from consumer.tools.rebuild import Rebuild, Refused

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
    clock, recording, processor, stores = rebuild.replay_parts([tp], 1, {}, None)
    done, dead = rebuild._replay(
        FakeConsumer(broker, {}), [tp], {tp: 2}, processor, recording, clock, stores
    )
    assert (done, dict(dead)) == (2, {})
    raised = {(a["code"], a["status"]) for a in recording.last.values()}
    assert (("TDXD-LOW-DB04", "ACTIVE") in raised) is kept
    assert clock() > dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the host clock after the replay


def test_a_group_without_offsets_is_refused_only_where_the_input_has_records() -> None:
    """Alerts held for patients of an input partition the group has committed nothing on: the
    replay would evaluate none of their reports (refused); on an empty partition it evaluates
    the same with any group (third review: refused falsely)."""
    settings = Settings.from_env({})
    rebuild = Rebuild(settings, pipeline().ruleset, io.StringIO())
    tp = TopicPartition(settings.topics.input, 0)
    held = {"a1": {"patient_id": "b1", "event_id": "b-e1"}}
    rebuild._check_committed({tp: 0}, {tp: 0}, held, 1)  # empty: nothing to replay either way
    rebuild._check_committed({tp: 3}, {tp: 5}, held, 1)  # committed: replayed to 3
    with pytest.raises(Refused, match="no committed offset on input partition"):
        rebuild._check_committed({tp: 0}, {tp: 5}, held, 1)


class _Decoder:
    """Stands in for the input decoder of the tail read: raises `error` for every record."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def decode(self, _value: bytes) -> dict[str, object]:
        raise self.error


@pytest.mark.parametrize(
    ("guarantee", "error", "outcome"),
    [
        # a registry that does not answer stops the rebuild (exit 1), as in the replay: else
        # later reports were invisible and their alerts resolved, then opened again by `run`
        ("at_least_once", RegistryError("down", "unreachable"), RegistryError),
        ("at_least_once", DecodeError("unknown-magic-byte", "not Avro"), set()),  # unreadable
        # exactly-once: outputs and offsets commit together, nothing is read
        ("exactly_once", RegistryError("down", "unreachable"), set()),
        ("at_least_once", None, {("b1", "b-e2")}),  # a held report past the commit: found
    ],
    ids=["registry-down", "unreadable", "exactly-once", "found"],
)
def test_the_tail_read(guarantee: str, error: Exception | None, outcome: object) -> None:
    settings = Settings.from_env(
        {"HER2_HISTORY_STORE": "memory", "HER2_PROCESSING_GUARANTEE": guarantee}
    )
    topic = settings.topics.input
    broker = FakeBroker()
    broker.create_topic(topic)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    for event in EVENTS:
        broker.append(topic, b"b1", encoder.encode(event))
    rebuild = Rebuild(settings, pipeline().ruleset, io.StringIO())
    tp = TopicPartition(topic, 0)
    held = {"a": {"patient_id": "b1", "event_id": "b-e2"}}
    _clock, recording, processor, _stores = rebuild.replay_parts([tp], 1, held, None)
    if error is not None:
        processor.codecs = dataclasses.replace(processor.codecs, decoder=_Decoder(error))
    reader = FakeConsumer(broker, {})
    if outcome is RegistryError:
        with pytest.raises(RegistryError):
            rebuild._ahead(reader, [tp], {tp: 1}, {tp: 2}, processor, recording)
    else:
        assert rebuild._ahead(reader, [tp], {tp: 1}, {tp: 2}, processor, recording) == outcome
