"""An example downstream consumer of the alert topics (README "Alert lifecycle").

What a care-team notification service does with Her2Alert v2: read the four alert topics with
`isolation_level=read_committed` (so aborted exactly-once transactions are never seen), keep the
highest `revision` per `alert_id`, and treat a patient's open alerts as those whose highest
revision is ACTIVE (docs/her2-rules.md section 8, "Downstream"). `her2-consumer open-alerts`
runs it once over the topics from the beginning and prints the open alerts.
"""

from __future__ import annotations

import argparse
import contextlib
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
from consumer.errors import DecodeError, Her2Error
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
    try:
        fold, undecodable = read_alert_topics(
            # the first connection gives up, and says why, within the request timeout
            {**settings.kafka_common(), "bootstrap_timeout_ms": settings.tuning.request_timeout_ms},
            settings.topics.alert_topics(),
            decoder=decoder,
            timeout_s=args.timeout,
            since_ms=args.since,
            explain=lambda: explained(settings),
        )
    except TimeoutError as exc:
        print(f"open-alerts: {exc} (--timeout {args.timeout:g})", file=sys.stderr)
        return EXIT_FAILURE
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
    since_ms: int | None = None,
    explain: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> tuple[OpenAlerts, int]:
    """Read `topics` from the beginning (or from the first record timestamped `since_ms` or
    later) to their current end (read_committed) and fold every alert in. `client_config`:
    KafkaConsumer settings (bootstrap_servers, security). Returns the fold and the count of
    records that could not be decoded. `explain`: around the first connection (the CLI says
    why it failed, as `run` does)."""
    decoder = decoder or Decoder("auto", parsed_schema(HER2_ALERT))
    with explain():
        consumer = KafkaConsumer(
            **{
                **client_config,
                "group_id": None,
                "enable_auto_commit": False,
                "isolation_level": "read_committed",  # never an aborted transaction's records
                "auto_offset_reset": "earliest",
            }
        )
    fold, undecodable = OpenAlerts(), 0
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        if since_ms is None:
            consumer.seek_to_beginning(*partitions)
        else:  # a partition with nothing from then on starts at its end
            starts = consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
            for tp in partitions:
                found = starts.get(tp)
                consumer.seek(tp, end[tp] if found is None else found.offset)
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
