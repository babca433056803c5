"""`her2-consumer publish [FILE|-]`: send NDJSON PathologyResults to the input topic the way a
lab system must, so that a lab team can send real cases and watch them flow.

Input is the `evaluate` form: one PathologyResult per line (field names as in the schema,
enums as strings, ISO-8601 dates; blank lines skipped). Each line is converted and checked as
`evaluate` does; an invalid line is reported on stderr with its line number and skipped (never
sent), and the exit code is then 1. Valid events are sent in file order:

- keyed by `patient_id` (UTF-8) and placed by kafka-python's default partitioner, Kafka's
  Java-compatible murmur2 (what the service's misrouting check expects: consumer/routing.py);
- framed as HER2_INPUT_FORMAT says (single-object for `auto`; `confluent` registers the schema
  under `<input topic>-value`; `raw` uses HER2_RAW_WRITER_SCHEMA), the demo's encoder path;
- acks=all with the idempotent producer (kafka-python's default), so per-patient order holds.

Progress (one line per acknowledged event: line number, event id, partition, offset) goes to
stdout, then a summary. Patient identifiers are never printed. Configuration is the service's
environment (KAFKA_BOOTSTRAP_SERVERS, HER2_INPUT_TOPIC, the KAFKA_SASL_*/KAFKA_SSL_* settings,
...). The input topic must exist: it is never created here.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TextIO

from consumer.avro.codec import Encoder
from consumer.avro.registry import SchemaRegistryClient
from consumer.clinical.model import Event
from consumer.clinical.validate import DEFAULT_MAX_EVENT_TIME_SKEW
from consumer.config import Settings, load_writer_schema
from consumer.errors import ConfigError, Her2Error, SchemaError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.kafka.preflight import explained
from consumer.runtime.kafka.quirks import disable_topic_auto_creation
from consumer.runtime.routing import patient_key
from consumer.tools.evaluate import Refused, checked_lines, ndjson_source

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.errors import KafkaError

EXIT_OK: Final = 0
EXIT_INVALID: Final = 1  # some lines invalid (skipped) or not acknowledged
EXIT_CONFIG: Final = 2
_IN_FLIGHT: Final = 500  # sends awaited (and reported) in chunks of this size


def input_encoder(settings: Settings, registry: SchemaRegistryClient | None) -> Encoder:
    """A PathologyResult encoder in the input framing HER2_INPUT_FORMAT configures (single-object
    for `auto`): what a lab system's serializer must produce."""
    fmt = settings.input_format
    if fmt == "confluent":
        return Encoder(
            "confluent",
            parsed_schema(PATHOLOGY_RESULT),
            registry=registry,
            subject=f"{settings.topics.input}-value",
        )
    if fmt == "raw":
        writer = (
            load_writer_schema(settings.raw_writer_schema)
            if settings.raw_writer_schema
            else parsed_schema(PATHOLOGY_RESULT)
        )
        return Encoder("raw", writer)
    return Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))


@dataclass(frozen=True, slots=True)
class Parsed:
    """One non-blank input line: an event ready to send, or why it cannot be sent."""

    line: int
    event: Event | None
    problem: str = ""  # "stage/reason: message" (never field values)


def parse_lines(
    lines: Iterable[str | bytes],
    max_event_time_skew: dt.timedelta = DEFAULT_MAX_EVENT_TIME_SKEW,
) -> Iterator[Parsed]:
    """Convert and check each non-blank NDJSON line as `evaluate` does (an event_time more than
    `max_event_time_skew` ahead of now is refused, as the service refuses it)."""
    for line in checked_lines(lines, max_event_time_skew=max_event_time_skew):
        if isinstance(line.event, Refused):
            stage, reason, message = line.event
            yield Parsed(line.number, None, f"{stage}/{reason}: {message}")
        else:
            yield Parsed(line.number, line.event)


def main(args: argparse.Namespace) -> int:
    """Publish the lines of `args.file` (or stdin); return the exit code."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"publish: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with ndjson_source(args.file) as source:
        try:
            return Publisher(settings, sys.stdout, sys.stderr).run(source)
        except ConfigError as exc:
            print(f"publish: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except (KafkaError, Her2Error) as exc:
            print(f"publish: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_INVALID


class Publisher:
    """Sends parsed lines to the input topic and reports what happened."""

    def __init__(self, settings: Settings, out: TextIO, err: TextIO) -> None:
        self.s = settings
        self.out = out
        self.err = err
        registry = settings.registry_client()
        self.encoder = input_encoder(settings, registry)
        self.sent = 0
        self.invalid = 0
        self.failed = 0
        self.partitions: collections.Counter[int] = collections.Counter()

    def run(self, lines: Iterable[str | bytes]) -> int:
        """Send every valid line, report invalid ones; 0 only if every line was sent."""
        topic = self.s.topics.input
        self._check_topic(topic)
        producer = disable_topic_auto_creation(
            KafkaProducer(
                **self.s.kafka_common(),
                acks="all",
                linger_ms=5,
                client_id="her2-publish",
                allow_auto_create_topics=False,
                max_block_ms=self.s.tuning.request_timeout_ms,
            )
        )
        pending: list[tuple[int, str, Any]] = []
        try:
            for parsed in parse_lines(lines, self.s.event_time_skew):
                if parsed.event is None:
                    self._invalid(parsed.line, parsed.problem)
                    continue
                event = parsed.event
                try:
                    value = self.encoder.encode(event)
                except SchemaError:
                    self._invalid(parsed.line, "encode/schema: the event does not fit the schema")
                    continue
                key = patient_key(event["patient_id"])  # the default partitioner: murmur2(key)
                future = producer.send(topic, key=key, value=value)
                pending.append((parsed.line, event["event_id"], future))
                if len(pending) >= _IN_FLIGHT:
                    self._drain(producer, pending)
            self._drain(producer, pending)
        finally:
            producer.close(timeout=self.s.tuning.request_timeout_ms / 1000)
        self._summary(topic)
        return EXIT_OK if not (self.invalid or self.failed) else EXIT_INVALID

    def _check_topic(self, topic: str) -> None:
        """Refuse to start when the input topic does not exist (ConfigError)."""
        with explained(self.s):
            admin = KafkaAdminClient(
                **self.s.kafka_common(),
                client_id="her2-publish-admin",
                bootstrap_timeout_ms=self.s.tuning.request_timeout_ms,
            )
        try:
            info = admin.describe_topics([topic])
        finally:
            admin.close()
        if not info or info[0].get("error_code", 0) != 0 or not info[0].get("partitions"):
            raise ConfigError(
                f"the input topic {topic} (HER2_INPUT_TOPIC) does not exist; create it "
                "(publish never creates topics)"
            )

    def _drain(self, producer: Any, pending: list[tuple[int, str, Any]]) -> None:
        """Wait for the pending sends in order and report each."""
        producer.flush()
        timeout = self.s.tuning.delivery_timeout_ms / 1000 + 5
        for line, event_id, future in pending:
            try:
                meta = future.get(timeout=timeout)
            except KafkaError as exc:
                self.failed += 1
                print(
                    f"line {line}: not acknowledged ({type(exc).__name__})",
                    file=self.err,
                )
                continue
            self.sent += 1
            self.partitions[meta.partition] += 1
            print(
                f"line {line}: event {event_id} -> partition {meta.partition} "
                f"offset {meta.offset} ({self.sent} sent)",
                file=self.out,
            )
        pending.clear()

    def _invalid(self, line: int, problem: str) -> None:
        self.invalid += 1
        print(f"line {line}: invalid, not sent ({problem})", file=self.err)

    def _summary(self, topic: str) -> None:
        spread = ", ".join(f"partition {p}: {n}" for p, n in sorted(self.partitions.items()))
        print(
            f"published {self.sent} events to {topic}"
            + (f" ({spread})" if spread else "")
            + f"; {self.invalid} invalid lines skipped"
            + (f"; {self.failed} not acknowledged" if self.failed else ""),
            file=self.out,
        )
