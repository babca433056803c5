"""`her2-consumer publish` against a real broker (a subprocess, `python -m consumer publish`):
valid lines reach the input topic keyed by patient_id on their murmur2 partitions, in the
configured framing; an invalid line is reported with its number, not sent, and the exit code is
non-zero; the service then processes what was published (nothing misrouted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import REPO_ROOT, Env, make_env, output_reader, running

from consumer.avro.codec import Decoder
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.routing import partition_for
from consumer.service import disable_topic_auto_creation

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

PARTITIONS = 3
INPUT_PARTITIONS = PARTITIONS  # the `env` fixture creates the input topic
CLI_TIMEOUT_S = 90


def _line(event_id: str, patient_id: str, **fields: Any) -> str:
    record = {
        "event_id": event_id,
        "event_time": "2025-06-01T10:00:00Z",
        "source_system": "LIS-TEST",
        "patient_id": patient_id,
        "accession_id": f"acc-{event_id}",
        "report_status": "FINAL",
        "specimen": {"site": "PRIMARY_BREAST", "collection_date": "2025-05-20"},
        "her2_ihc": {"score": "ONE_PLUS", "percent_cells_stained": 30.0},
        "clinical_context": {"disease_setting": "METASTATIC"},
        **fields,
    }
    return json.dumps(record)


def _publish(
    env: Env, path: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HER2_", "KAFKA_"))}
    environ.update(env.environ())
    environ.update(extra or {})
    environ["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "consumer", "publish", str(path)],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _read_input(env: Env, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = disable_topic_auto_creation(
        KafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False)
    )
    try:
        partitions = [TopicPartition(env.input, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_publish_sends_valid_lines_on_murmur2_partitions_and_reports_invalid_ones(
    env: Env, tmp_path: Path
) -> None:
    # murmur2 puts these two on partitions 2 and 0 of 3, where CRC32 (librdkafka's default)
    # would put both on 1: the partition check below tells the partitioners apart
    lines = [
        _line("pub-e1", "pub-patient-7"),
        _line(
            "pub-e2", "pub-patient-2", her2_ihc={"score": "ONE_PLUS", "percent_cells_stained": 150}
        ),
        "",  # blank lines are skipped, not counted
        _line("pub-e3", "pub-patient-8"),
    ]
    path = tmp_path / "results.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = _publish(env, path)

    assert done.returncode == 1, done.stderr
    assert "line 2: invalid, not sent (validate/schema-validation: " in done.stderr
    assert "her2_ihc.percent_cells_stained" in done.stderr
    assert "pub-patient" not in done.stdout + done.stderr, "no patient id is printed"
    progress = [line for line in done.stdout.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in progress] == ["line 1", "line 4"]
    assert progress[1].endswith("(2 sent)")
    assert f"published 2 events to {env.input}" in done.stdout
    assert "1 invalid lines skipped" in done.stdout

    records = _read_input(env, 2)
    decoder = Decoder("auto", parsed_schema(PATHOLOGY_RESULT))
    seen = {}
    for record in records:
        event = decoder.decode(record.value)  # single-object framing (HER2_INPUT_FORMAT=auto)
        assert record.value[:2] == b"\xc3\x01"
        assert record.key == event["patient_id"].encode("utf-8")
        assert record.partition == partition_for(record.key, PARTITIONS)
        assert f"event {event['event_id']} -> partition {record.partition} " in done.stdout
        seen[event["event_id"]] = event["patient_id"]
    assert seen == {"pub-e1": "pub-patient-7", "pub-e3": "pub-patient-8"}
    assert sorted(r.partition for r in records) == [0, 2]

    # the service takes them as they are: classified, nothing dead-lettered
    with running(env.settings()) as svc, output_reader(env) as reader:
        reader.wait(lambda r: r.classified_ids() == {"pub-e1", "pub-e3"}, what="2 classifications")
        reader.settle(0.5)
        assert reader.records["dlq"] == []
        assert svc.metric("her2_consumer_events_total", {"outcome": "dead_lettered"}) == 0


def test_publish_applies_the_services_event_time_tolerance(env: Env, tmp_path: Path) -> None:
    # HER2_MAX_EVENT_TIME_SKEW_SECONDS=3600: an event_time 2 h ahead is what the service would
    # dead-letter, so publish must not send it; 30 min ahead is sent (the default 24 h sends both)
    now = dt.datetime.now(dt.UTC)
    lines = [
        _line("skew-e1", "skew-patient-1", event_time=(now + dt.timedelta(hours=2)).isoformat()),
        _line("skew-e2", "skew-patient-2", event_time=(now + dt.timedelta(minutes=30)).isoformat()),
    ]
    path = tmp_path / "ahead.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = _publish(env, path, {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "3600"})

    assert done.returncode == 1, done.stderr
    assert "line 1: invalid, not sent (validate/event-time-in-future: " in done.stderr
    assert f"published 1 events to {env.input}" in done.stdout
    [record] = _read_input(env, 1)
    event = Decoder("auto", parsed_schema(PATHOLOGY_RESULT)).decode(record.value)
    assert event["event_id"] == "skew-e2"


def test_publish_refuses_a_missing_input_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = make_env(kafka_bootstrap, unique_name)  # the input topic is never created
    path = tmp_path / "results.ndjson"
    path.write_text(_line("pub-e1", "pub-patient-1") + "\n", encoding="utf-8")

    done = _publish(env, path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the input topic {env.input} (HER2_INPUT_TOPIC) does not exist" in done.stderr
    assert _topic_exists(kafka_bootstrap, env.input) is False, "publish created the topic"


def _topic_exists(bootstrap: str, topic: str) -> bool:
    consumer = disable_topic_auto_creation(KafkaConsumer(bootstrap_servers=bootstrap))
    try:
        return topic in consumer.topics()
    finally:
        consumer.close()
