"""`her2-consumer demo`: play the lab system for a minute and show what the consumer makes of it.

It publishes `--count` synthetic PathologyResults (consumer.tools.synthetic; at most
cli.DEMO_MAX_COUNT, as all are generated before the first send) plus a few malformed payloads
to the input topic, in the input framing the environment configures (single-object unless
HER2_INPUT_FORMAT says confluent or raw), then reads the classification, alert and
dead-letter topics and prints, per event, the HER2 category and the alerts (code, severity,
title), and a dead-letter section. It exits 0 once every event is accounted for (classified
or dead-lettered) within `--timeout` seconds, and 1 otherwise, saying what is missing.

It assumes `her2-consumer run` is running against the same broker and topics (same
environment). Like a lab system, it creates the input topic when it is missing (3 partitions);
the consumer waits for that topic and creates its own output topics.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from consumer.config import Settings
from consumer.errors import ConfigError, DecodeError, Her2Error
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION
from consumer.runtime.kafka.preflight import explained
from consumer.runtime.kafka.quirks import disable_topic_auto_creation
from consumer.tools.downstream import output_decoder
from consumer.tools.publish import input_encoder
from consumer.tools.synthetic import SyntheticGenerator, malformed_values

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError
    from kafka.structs import TopicPartition

DEMO_SEED: Final = 2025
DEMO_PARTITIONS: Final = 3
MALFORMED_LABELS: Final = ("garbage bytes", "truncated Avro")
SETTLE_S: Final = 1.0
_SEVERITY_MARK: Final = {"CRITICAL": "!!", "WARNING": "! ", "INFO": "  "}


@dataclass
class _Seen:
    """What came back for this run."""

    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    dead: dict[bytes, dict[str, str]] = field(default_factory=dict)


def main(args: argparse.Namespace) -> int:
    """Publish, collect and print; return 0 when every event is accounted for."""
    out = sys.stdout
    try:
        settings = Settings.from_env(os.environ)
        return _Demo(settings, args.count, args.timeout, out).run()
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, Her2Error) as exc:
        print(f"demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


class _Demo:
    def __init__(self, settings: Settings, count: int, timeout: float, out: TextIO) -> None:
        if count < 1:
            raise ConfigError("--count must be at least 1")
        self.s = settings
        self.count = count
        self.timeout = timeout
        self.out = out
        self.run_id = dt.datetime.now(dt.UTC).strftime("demo%Y%m%d%H%M%S")
        registry = settings.registry_client()
        self.registry = registry
        self.encoder = input_encoder(settings, registry)
        self.classification_decoder = output_decoder(settings, HER2_CLASSIFICATION, registry)
        self.alert_decoder = output_decoder(settings, HER2_ALERT, registry)

    def run(self) -> int:
        events = SyntheticGenerator(DEMO_SEED, id_prefix=self.run_id).events(self.count)
        valid_bytes = [self.encoder.encode(e) for e in events]
        malformed = [
            (f"{self.run_id}-malformed-{i}".encode(), label, value)
            for i, (label, value) in enumerate(malformed_values(valid_bytes[0], DEMO_SEED))
            if label in MALFORMED_LABELS
        ]
        self._ensure_input_topic()
        reader = disable_topic_auto_creation(
            KafkaConsumer(
                **self.s.kafka_common(),
                isolation_level="read_committed",
                enable_auto_commit=False,
                allow_auto_create_topics=False,
                client_id="her2-demo-reader",
            )
        )
        try:
            start_offsets = self._assign(reader, {}, at_end=True)
            self._publish(events, valid_bytes, malformed)
            print(
                f"published {len(events)} synthetic events and {len(malformed)} malformed payloads "
                f"to {self.s.topics.input}; waiting up to {self.timeout:g}s for the consumer...",
                file=self.out,
            )
            seen = self._collect(reader, start_offsets, events, malformed)
        finally:
            reader.close()
        self._print(events, malformed, seen)
        missing = [e["event_id"] for e in events if e["event_id"] not in seen.categories]
        missing_dead = [label for key, label, _ in malformed if key not in seen.dead]
        if missing or missing_dead:
            print(
                f"\nNOT ACCOUNTED FOR after {self.timeout:g}s: {len(missing)} of {len(events)} "
                f"events have no classification and {len(missing_dead)} of {len(malformed)} "
                f"malformed payloads are not in {self.s.topics.dlq}. Is `her2-consumer run` "
                f"running against {self.s.bootstrap_servers} with the same HER2_* topics?",
                file=self.out,
            )
            return 1
        print(
            f"\nall {len(events)} events and {len(malformed)} malformed payloads accounted for.",
            file=self.out,
        )
        return 0

    def _ensure_input_topic(self) -> None:
        with explained(self.s):
            admin = KafkaAdminClient(
                **self.s.kafka_common(),
                client_id="her2-demo-admin",
                bootstrap_timeout_ms=self.s.tuning.request_timeout_ms,
            )
        try:
            info = admin.describe_topics([self.s.topics.input])
            if not info or info[0].get("error_code", 0) != 0:
                admin.create_topics(
                    {
                        self.s.topics.input: {
                            "num_partitions": DEMO_PARTITIONS,
                            "replication_factor": self.s.tuning.replication_factor,
                        }
                    },
                    raise_errors=False,
                    wait_for_metadata=True,
                )
                print(
                    f"created the input topic {self.s.topics.input} ({DEMO_PARTITIONS} partitions)",
                    file=self.out,
                )
        finally:
            admin.close()

    def _topics(self) -> dict[str, str]:
        t = self.s.topics
        topics = {t.classification: "classification", t.dlq: "dlq"}
        for topic in t.alert_topics():
            topics[topic] = "alert"
        return topics

    def _assign(
        self, reader: Any, known: dict[TopicPartition, int], *, at_end: bool
    ) -> dict[TopicPartition, int]:
        """Assign every output partition that exists. Before publishing (`at_end`), start at the
        current end; a partition that appears later was created after our start, so read it
        from its beginning (this run's ids filter out anything else)."""
        partitions = dict(known)
        new = []
        for topic in self._topics():
            for p in reader.partitions_for_topic(topic) or ():
                tp = TopicPartition(topic, p)
                if tp not in partitions:
                    new.append(tp)
        if new:
            starts = reader.end_offsets(new) if at_end else reader.beginning_offsets(new)
            partitions.update(starts)
            reader.assign(list(partitions))
            for tp in new:
                reader.seek(tp, starts[tp])
        return partitions

    def _publish(
        self,
        events: list[dict[str, Any]],
        values: list[bytes],
        malformed: list[tuple[bytes, str, bytes]],
    ) -> None:
        producer = KafkaProducer(
            **self.s.kafka_common(), acks="all", linger_ms=5, client_id="her2-demo-producer"
        )
        try:
            futures = [
                producer.send(self.s.topics.input, key=e["patient_id"].encode(), value=v)
                for e, v in zip(events, values, strict=True)
            ]
            futures += [producer.send(self.s.topics.input, key=k, value=v) for k, _, v in malformed]
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()

    def _collect(
        self,
        reader: Any,
        partitions: dict[TopicPartition, int],
        events: list[dict[str, Any]],
        malformed: list[tuple[bytes, str, bytes]],
    ) -> _Seen:
        ids = {e["event_id"] for e in events}
        keys = {k for k, _, _ in malformed}
        kinds = self._topics()
        seen = _Seen()
        deadline = time.monotonic() + self.timeout
        done_at: float | None = None
        while time.monotonic() < deadline:
            if len(partitions) < sum(len(reader.partitions_for_topic(t) or ()) for t in kinds):
                partitions = self._assign(reader, partitions, at_end=False)
            batches = reader.poll(timeout_ms=300) if partitions else {}
            if not partitions:
                time.sleep(0.3)
            for tp, records in batches.items():
                for record in records:
                    self._take(kinds[tp.topic], record, ids, keys, seen)
            if done_at is None and ids <= set(seen.categories) and keys <= set(seen.dead):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= SETTLE_S:
                break
        return seen

    def _take(self, kind: str, record: Any, ids: set[str], keys: set[bytes], seen: _Seen) -> None:
        if kind == "dlq":
            if record.key in keys:
                headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
                seen.dead[record.key] = headers
            return
        try:
            decoder = (
                self.classification_decoder if kind == "classification" else self.alert_decoder
            )
            value = decoder.decode(record.value)
        except DecodeError:
            return
        if value.get("event_id") not in ids:
            return
        if kind == "classification":
            seen.categories[value["event_id"]] = value
        else:
            seen.alerts[value["event_id"]].append(value)

    def _print(
        self, events: list[dict[str, Any]], malformed: list[tuple[bytes, str, bytes]], seen: _Seen
    ) -> None:
        w = self.out
        print("\n== HER2 classifications and alerts ==", file=w)
        categories: collections.Counter[str] = collections.Counter()
        codes: collections.Counter[str] = collections.Counter()
        for event in events:
            eid = event["event_id"]
            c = seen.categories.get(eid)
            site = (event.get("specimen") or {}).get("site", "UNKNOWN")
            setting = (event.get("clinical_context") or {}).get("disease_setting") or "UNKNOWN"
            head = f"{eid:<28} {event['report_status']:<11} {site:<24} {setting:<29}"
            if c is None:
                print(f"{head} (no classification yet)", file=w)
                continue
            categories[c["category"]] += 1
            print(f"{head} -> {c['category']} ({c['decided_by']})", file=w)
            alerts = sorted(seen.alerts.get(eid, ()), key=lambda a: (a["alert_type"], a["code"]))
            for a in alerts:
                codes[a["code"]] += 1
                mark = _SEVERITY_MARK.get(a["severity"], "  ")
                rev = a.get("revision", 1)
                if a["status"] != "ACTIVE":
                    change = f" [{a['status']} r{rev}]"
                else:
                    change = "" if rev == 1 else f" [updated r{rev}]"
                print(
                    f"      {mark} {a['severity']:<8} {a['code']:<30} {a['title']}{change}", file=w
                )
        print("\n== dead-letter topic ==", file=w)
        for key, label, _ in malformed:
            headers = seen.dead.get(key)
            if headers is None:
                print(f"  {label:<16} (not dead-lettered yet)", file=w)
            else:
                print(
                    f"  {label:<16} stage={headers.get('her2.errors.stage')} "
                    f"reason={headers.get('her2.errors.reason')} "
                    f"({headers.get('her2.errors.exception.message')})",
                    file=w,
                )
        print("\n== totals ==", file=w)
        print("  categories: " + ", ".join(f"{k} {v}" for k, v in categories.most_common()), file=w)
        print("  alert codes: " + ", ".join(f"{k} {v}" for k, v in codes.most_common()), file=w)
