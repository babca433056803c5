"""`open-alerts --since` on the real broker: after a changelog replay across a rule-set change,
the replay re-numbers revisions (README "If the changelog topic is lost"), so a reader folding
the alert topics from the beginning keeps the pre-replay records and drops the replay's
retraction under a revision it already holds, and keeps an alert the replay never re-published.
Read from the replay's start, the fold is the replay's state (downstream audit H1)."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from typing import Any

from helpers import Env

from consumer import cli
from consumer.avro.outputs import Codecs
from consumer.tools.downstream import read_alert_topics

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaProducer

BEFORE_MS = 1_700_000_000_000  # the first run's records
REPLAY_MS = BEFORE_MS + 3_600_000  # the replay's, an hour later


def _alert(alert_id: str, revision: int, status: str) -> dict[str, Any]:
    """A Her2Alert v2 record of patient P1."""
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return {
        "alert_id": alert_id, "revision": revision, "alert_type": "TDXD_ELIGIBILITY",
        "code": f"CODE-{alert_id}", "scope": "PATIENT", "status": status, "rule_id": "r",
        "rule_version": 1, "severity": "INFO", "patient_id": "P1", "accession_id": "A1",
        "event_id": "e1", "her2_category": "LOW", "title": "t", "detail": "d",
        "recommendation": "r", "evidence": ["spec"], "ruleset_version": "x",
        "created_at": at, "event_time": at,
    }  # fmt: skip


def test_open_alerts_since_the_replay_is_the_replays_state(
    env: Env,
    create_topics: Callable[..., list[str]],
    capsys: Any,
    monkeypatch: Any,
) -> None:
    settings = env.settings()
    topic = settings.topics.tdxd
    create_topics(settings.topics.alert_topics(), partitions=2)
    encoder = Codecs.build(settings, None).alerts[topic]
    history = [
        # the first run: a1 opened, re-published after an upgrade (text), a2 opened
        (BEFORE_MS, _alert("a1", 1, "ACTIVE")),
        (BEFORE_MS, _alert("a1", 2, "ACTIVE")),
        (BEFORE_MS, _alert("a2", 1, "ACTIVE")),
        # the replay under the new rules: a1 from r1, then retracted (a cancelled report) as
        # r2; a2 is not re-published (the new rules do not raise it)
        (REPLAY_MS, _alert("a1", 1, "ACTIVE")),
        (REPLAY_MS, _alert("a1", 2, "RETRACTED")),
    ]
    producer = KafkaProducer(bootstrap_servers=env.bootstrap)
    for at, record in history:
        producer.send(topic, encoder.encode(record), key=b"P1", timestamp_ms=at)
    producer.flush(30)
    producer.close()

    client = {"bootstrap_servers": env.bootstrap}
    topics = settings.topics.alert_topics()
    everything, _ = read_alert_topics(client, topics)
    # the hazard: the retraction is dropped, the vanished alert stays open
    assert [a["alert_id"] for a in everything.open()] == ["a1", "a2"]
    replay, undecodable = read_alert_topics(client, topics, since_ms=REPLAY_MS - 1)
    assert undecodable == 0
    assert replay.open() == []
    assert replay.latest["a1"]["status"] == "RETRACTED"
    later, _ = read_alert_topics(client, topics, since_ms=REPLAY_MS + 1)
    assert later.latest == {}, "nothing published from then on"

    # the command line: --since with its offset
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    since = dt.datetime.fromtimestamp((REPLAY_MS - 1) / 1000, dt.UTC).isoformat()
    assert cli.main(["open-alerts", "--since", since]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["open-alerts"]) == 0
    assert [line.count('"alert_id":"a') for line in capsys.readouterr().out.splitlines()] == [1, 1]
