"""An example downstream consumer of the alert topics (README "Alert lifecycle").

What a care-team notification service does with Her2Alert v2: read the four alert topics with
`isolation_level=read_committed` (so aborted exactly-once transactions are never seen), keep the
highest `revision` per `alert_id`, and treat a patient's open alerts as those whose highest
revision is ACTIVE (docs/her2-rules.md section 8, "Downstream"). `her2-consumer open-alerts`
runs it once over the topics from the beginning (or from the offsets `--end-offsets` noted
before a changelog replay: README "If the changelog topic is lost") and prints the open alerts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from consumer.avro.codec import Decoder
from consumer.avro.registry import SchemaRegistryClient
from consumer.config import Settings
from consumer.errors import ConfigError, DecodeError, Her2Error
from consumer.resources import HER2_ALERT, parsed_schema
from consumer.runtime.kafka.preflight import explained
from consumer.tools.jsonout import dumps

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

Record = dict[str, Any]
EXIT_FAILURE = 1  # Kafka unreachable or refusing, or the topics not read in time (as `demo`)


def main(args: argparse.Namespace) -> int:
    """`her2-consumer open-alerts`: print the open alerts (`args.patient`'s, or all) as JSON
    lines. A configuration error propagates (the CLI exits 2); Kafka errors and the read
    deadline (`args.timeout`) are one line on stderr and exit 1, as in `demo` and `publish`."""
    settings = Settings.from_env(os.environ)
    decoder = output_decoder(settings, HER2_ALERT, settings.registry_client())
    topics = settings.topics.alert_topics()
    starts = None if args.from_offsets is None else load_offsets(args.from_offsets, topics)
    # the first connection gives up, and says why, within the request timeout
    client = {**settings.kafka_common(), "bootstrap_timeout_ms": settings.tuning.request_timeout_ms}
    try:
        if args.end_offsets:
            ends = alert_end_offsets(client, topics, explain=lambda: explained(settings))
            sys.stdout.write(json.dumps(ends, sort_keys=True) + "\n")
            return 0
        fold, undecodable = read_alert_topics(
            client,
            topics,
            decoder=decoder,
            timeout_s=args.timeout,
            start_offsets=starts,
            explain=lambda: explained(settings),
        )
    except TimeoutError as exc:
        print(f"open-alerts: {exc} (--timeout {args.timeout:g})", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError:  # the offsets file does not fit the topics: the CLI exits 2
        raise
    except (KafkaError, Her2Error) as exc:
        print(f"open-alerts: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for alert in fold.open(args.patient):
        sys.stdout.write(dumps(alert) + "\n")
    if undecodable:  # the list may miss an alert or show a closed one as open: not a success
        print(
            f"open-alerts: {undecodable} alert records could not be decoded; the open alerts "
            "above may be incomplete",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return 0


def alert_end_offsets(
    client_config: Mapping[str, Any],
    topics: Iterable[str],
    *,
    explain: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> dict[str, dict[str, int]]:
    """The end offset of every partition of `topics` (topic -> partition -> offset; partitions
    as strings, as JSON keys are): noted before a changelog replay, `--from-offsets` then reads
    only what the replay and later events published. Offsets, not times: the service stamps
    each output with its input record's timestamp, so a replay's records carry the old ones."""
    consumer = committed_reader(client_config, explain)
    try:
        partitions = topic_partitions(consumer, topics)
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    out: dict[str, dict[str, int]] = {}
    for tp in partitions:
        out.setdefault(tp.topic, {})[str(tp.partition)] = ends[tp]
    return out


def load_offsets(path: str, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """The offsets file `--end-offsets` printed (topic -> partition -> offset), for `topics`;
    ConfigError naming what is wrong with it (never a value read from the topics)."""
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"--from-offsets {path}: cannot read it ({type(exc).__name__})") from None
    offsets: dict[str, dict[int, int]] = {}
    for topic in topics:
        given = loaded.get(topic) if isinstance(loaded, dict) else None
        if not isinstance(given, dict):
            raise ConfigError(
                f"--from-offsets {path}: no offsets for alert topic {topic} (made by "
                "`open-alerts --end-offsets` with these settings?)"
            )
        # as --end-offsets writes them: "partition" (decimal) -> offset (an integer, >= 0)
        if not all(
            p.isdigit() and str(int(p)) == p and type(o) is int and o >= 0 for p, o in given.items()
        ):
            raise ConfigError(f"--from-offsets {path}: {topic}: not partition: offset")
        offsets[topic] = {int(p): o for p, o in given.items()}
    return offsets


def _start(offsets: Mapping[str, Mapping[int, int]], tp: TopicPartition, end: int) -> int:
    """Where `tp` is read from: its noted offset, which must not lie past its end; the start of
    a partition the topic did not have when the offsets were noted (added since)."""
    start = offsets.get(tp.topic, {}).get(tp.partition, 0)
    if start > end:
        raise ConfigError(
            f"--from-offsets: {tp.topic} partition {tp.partition} ends at {end}, before the "
            f"noted {start} (the topic re-created since?)"
        )
    return start


def committed_reader(
    client_config: Mapping[str, Any], explain: Callable[[], AbstractContextManager[None]]
) -> Any:
    """A group-less read_committed KafkaConsumer (its first connection inside `explain`)."""
    with explain():
        return KafkaConsumer(
            **{
                **client_config,
                "group_id": None,
                "enable_auto_commit": False,
                "isolation_level": "read_committed",  # never an aborted transaction's records
                "auto_offset_reset": "earliest",
            }
        )


def topic_partitions(consumer: Any, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics`."""
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


def output_decoder(
    settings: Settings, schema_name: str, registry: SchemaRegistryClient | None
) -> Decoder:
    """A reader of what the service writes with `settings`: raw with the shipped schema, else
    `auto` (single-object, or Confluent through `registry`, which HER2_OUTPUT_FORMAT=confluent
    needs)."""
    fmt = "raw" if settings.output_format == "raw" else "auto"
    return Decoder(fmt, parsed_schema(schema_name), registry=registry)


class OpenAlerts:
    """The latest revision of every alert seen; the open ones are those that are ACTIVE."""

    def __init__(self) -> None:
        self.latest: dict[str, Record] = {}

    def add(self, alert: Mapping[str, Any]) -> None:
        """Fold one alert record in: a revision lower than or equal to the known one is a
        redelivery or a late copy and changes nothing."""
        known = self.latest.get(alert["alert_id"])
        if known is None or alert["revision"] > known["revision"]:
            self.latest[alert["alert_id"]] = dict(alert)

    def add_all(self, alerts: Iterable[Mapping[str, Any]]) -> OpenAlerts:
        """Fold many alert records in; returns self."""
        for alert in alerts:
            self.add(alert)
        return self

    def open(self, patient_id: str | None = None) -> list[Record]:
        """The open alerts (of one patient, or of all), by patient, code and accession."""
        return sorted(
            (
                a
                for a in self.latest.values()
                if a["status"] == "ACTIVE" and (patient_id is None or a["patient_id"] == patient_id)
            ),
            key=lambda a: (a["patient_id"], a["code"], a["accession_id"]),
        )


def read_alert_topics(
    client_config: Mapping[str, Any],
    topics: Iterable[str],
    *,
    decoder: Decoder | None = None,
    timeout_s: float = 30.0,
    start_offsets: Mapping[str, Mapping[int, int]] | None = None,
    explain: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> tuple[OpenAlerts, int]:
    """Read `topics` from the beginning (or from `start_offsets`, topic -> partition -> offset,
    as `alert_end_offsets` gave them before a changelog replay) to their current end
    (read_committed) and fold every alert in. `client_config`: KafkaConsumer settings
    (bootstrap_servers, security). Returns the fold and the count of records that could not be
    decoded. `explain`: around the first connection (the CLI says why it failed, as `run`
    does). ConfigError when `start_offsets` lacks a partition or lies past its end."""
    decoder = decoder or Decoder("auto", parsed_schema(HER2_ALERT))
    consumer = committed_reader(client_config, explain)
    fold, undecodable = OpenAlerts(), 0
    try:
        partitions = topic_partitions(consumer, topics)
        if not partitions:  # no alert topic yet (the service never ran): nothing was published
            return fold, undecodable
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        if start_offsets is None:
            consumer.seek_to_beginning(*partitions)
        else:  # every start checked before any is used
            starts = {tp: _start(start_offsets, tp, end[tp]) for tp in partitions}
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("the alert topics were not read to their end in time")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        fold.add(decoder.decode(record.value))
                    except DecodeError:
                        undecodable += 1
    finally:
        consumer.close()
    return fold, undecodable
