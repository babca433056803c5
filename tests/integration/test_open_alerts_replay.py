"""`open-alerts --end-offsets` / `--from-offsets` on the real broker, with the service itself
replaying: after a changelog replay across a rule-set change (README "If the changelog topic is
lost") the replay re-numbers revisions, so a reader folding the alert topics from the beginning
keeps what an upgrade re-published before and drops the replay's retraction under a revision it
already holds (downstream audit H1). Read from the offsets noted before the replay, the fold is
the service's state. Offsets, not times: outputs carry their input record's timestamp, so the
replay's records carry the old ones (review of a first version that read from a time)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import Env, make_event, output_reader, printed_objects, produce_events, running

from consumer import cli
from consumer.avro.outputs import Codecs
from consumer.runtime.kafka.quirks import disable_topic_auto_creation

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaProducer

MET = {"site": "DISTANT_METASTASIS"}


def _tdxd(reader: Any) -> list[tuple[int, str]]:
    """(revision, status) of TDXD-LOW-DB04 records, in topic order."""
    return [
        (a.value["revision"], a.value["status"])
        for a in reader.alerts()
        if a.value["code"] == "TDXD-LOW-DB04"
    ]


def _open_codes(capsys: Any, *argv: str) -> list[str]:
    assert cli.main(["open-alerts", *argv]) == 0
    return [alert["code"] for alert in printed_objects(capsys)]


def test_a_replay_read_from_the_noted_offsets_is_the_services_state(
    env: Env,
    unique_name: Callable[[str], str],
    capsys: Any,
    monkeypatch: Any,
    tmp_path: Path,
) -> None:
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    first = [  # A1's HER2-low sample makes A2's metastatic setting eligible (README timeline)
        make_event("r-e1", "r1", "r1-a1", setting="EARLY", chemo_lines=None, minutes=0),
        {**make_event("r-e2", "r1", "r1-a2", minutes=1, **MET), "her2_ihc": None},
    ]
    with running(env.settings()), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, first)
        reader.wait(lambda r: _tdxd(r) == [(1, "ACTIVE")], what="TDXD-LOW-DB04 r1")
        opened = next(a for a in reader.alerts() if a.value["code"] == "TDXD-LOW-DB04")

    # what an upgrade of the rule set then published for it: r2 ACTIVE, another text
    settings = env.settings()
    encoder = Codecs.build(settings, None).alerts[settings.topics.tdxd]
    upgraded = {**opened.value, "revision": 2, "rule_version": 9, "detail": "upgraded text"}
    producer = disable_topic_auto_creation(KafkaProducer(bootstrap_servers=env.bootstrap))
    producer.send(
        settings.topics.tdxd, encoder.encode(upgraded), key=opened.key, partition=opened.partition
    )
    producer.flush(30)
    producer.close()

    # the replay: offsets noted, the changelog deleted, the input read again from the earliest
    # offset (a new group, as a reset does), then A1 cancelled
    assert cli.main(["open-alerts", "--end-offsets"]) == 0
    [offsets] = printed_objects(capsys)
    assert set(offsets) == set(settings.topics.alert_topics())
    noted = tmp_path / "before-replay.json"
    noted.write_text(json.dumps(offsets), encoding="utf-8")
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([settings.topics.history])
    replay = dataclasses.replace(settings, group_id=unique_name("replay"))
    with running(replay), output_reader(env) as reader:
        reader.wait(lambda r: _tdxd(r)[2:] == [(1, "ACTIVE")], what="the replay's r1")
        produce_events(
            env.bootstrap, env.input, [make_event("r-e3", "r1", "r1-a1", status="CANCELLED")]
        )
        reader.wait(lambda r: _tdxd(r)[3:] == [(2, "RETRACTED")], what="the retraction")
        # first run r1, the upgrade's r2, the replay's r1 and r2: a pair used twice
        assert _tdxd(reader) == [(1, "ACTIVE"), (2, "ACTIVE"), (1, "ACTIVE"), (2, "RETRACTED")]

    # from the beginning: the retraction is dropped (r2 already held), the alert stays open;
    # from the noted offsets: the replay's records alone, the service's state (A2's retest
    # finding stands in both)
    assert _open_codes(capsys) == ["RT-METASTATIC-SITE", "TDXD-LOW-DB04"]
    assert _open_codes(capsys, "--from-offsets", str(noted)) == ["RT-METASTATIC-SITE"]
