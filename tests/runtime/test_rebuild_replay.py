"""rebuild-history's replay (consumer/tools/rebuild.py) judges each record at its own time.

With HER2_HISTORY_RETENTION_DAYS set, a replay on the host clock drops a report older than the
retention right after its own step, before the reports that came minutes after it in real time
are evaluated; findings resting on it never fire and the reconciliation resolved them (review of
the first version: a T-DXd eligibility alert resolved). Evaluated at each record's timestamp, as
`run` evaluated it, the replay raises what the service raised."""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

from conftest import pipeline
from fakes import FakeBroker, FakeConsumer

from consumer.avro.codec import Encoder
from consumer.avro.outputs import Codecs
from consumer.config import Settings
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.processor import Processor
from consumer.state.store import HistoryStore
from consumer.tools.rebuild import Rebuild, _Recording, _ReplayClock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from helpers import make_event

MET = {"site": "DISTANT_METASTASIS"}


def test_the_replay_judges_retention_at_each_records_time() -> None:
    settings = Settings.from_env(
        {"HER2_HISTORY_RETENTION_DAYS": "30", "HER2_HISTORY_STORE": "memory"}
    )
    events = [  # A1's HER2-low sample makes A2's metastatic setting eligible (README timeline)
        make_event("b-e1", "b1", "b1-a1", setting="EARLY", chemo_lines=None, minutes=0),
        {**make_event("b-e2", "b1", "b1-a2", minutes=1, **MET), "her2_ihc": None},
    ]
    topic = settings.topics.input
    broker = FakeBroker()
    broker.create_topic(topic)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    for event in events:  # sent as reported, long before this rebuild (2025 against today)
        sent = event["event_time"] + dt.timedelta(minutes=1)
        broker.append(topic, b"b1", encoder.encode(event), timestamp=int(sent.timestamp() * 1000))
    rebuild = Rebuild(settings, pipeline().ruleset, io.StringIO())
    clock = _ReplayClock(rebuild.clock)
    recording = _Recording(pipeline().ruleset, clock)
    processor = Processor(settings, recording, Codecs.build(settings, None), lambda _t: 1, clock)
    tp = TopicPartition(topic, 0)
    store = HistoryStore(settings.evaluation.history_retention, clock)
    done, dead = rebuild._replay(
        FakeConsumer(broker, {}), [tp], {tp: 2}, processor, recording, clock, {tp: store}
    )
    assert (done, sum(dead.values())) == (2, 0)
    raised = {(a["code"], a["status"]) for a in recording.last.values()}
    assert ("TDXD-LOW-DB04", "ACTIVE") in raised
    assert clock() > dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the host clock after the replay
