"""The long-running consumer: the poll loop, its delivery guarantees, and the only place that
records metrics.

One thread, one loop, data moving one way:

    poll -> decode -> validate -> history + pipeline (classify, rules, alerts)
         -> encode -> produce (classification, alerts, DLQ, history changelog)
         -> wait for every acknowledgement -> commit offsets

At-least-once (default): offsets are committed only after every output of the batch is
acknowledged (acks=all, idempotent producer). A failed output is re-sent up to
HER2_PUBLISH_RETRIES times; then the service stops WITHOUT committing and exits non-zero.
A crash redelivers; the history changelog makes a redelivered event re-emit the same alerts.

Exactly-once (HER2_PROCESSING_GUARANTEE=exactly_once): the batch's outputs and its offsets go
in one Kafka transaction (`send_offsets_to_transaction` with the consumer's group metadata);
any failure aborts it and the service stops non-zero (a restart reprocesses from the last
committed transaction); a fenced producer stops the service cleanly with EXIT_FENCED.

Rebalances (cooperative-sticky). kafka-python 3.x runs rebalance callbacks on the consumer's
IO thread while the main thread is blocked inside `poll()`/`close()`: there is never a batch
in flight then (batches are processed synchronously between polls and committed before the
next poll), and the callbacks must not call the consumer's blocking APIs (kafka-python raises
RuntimeError) nor block heartbeats. So `on_partitions_assigned` only pauses the new partitions
and marks them for restore; right after `poll()` returns, the main thread restores their
history from the compacted changelog (bounded by the end offsets captured at start and by
HER2_RESTORE_TIMEOUT_SECONDS) and resumes them. Their records are processed only after that.
`on_partitions_revoked` / `on_partitions_lost` drop (close) the partitions' history stores.

History stores (HER2_HISTORY_STORE): committed patient states live in one sqlite file per
owned partition under a private directory of HER2_STATE_DIR ("disk", default), or in memory.
Either way they are a cache of the changelog: a new store is restored at every assignment,
and its file is deleted when the partition is revoked or lost, a restore fails, or the
service stops (consumer/statestore.py).

Start-up: the input topic is never created here. While it is missing the service logs
"input topic missing" and waits (re-checking with back-off) until it exists or it is stopped.
Missing output topics are created with the input's partition count; the changelog topic is
compacted and must have exactly the input's partition count (co-partitioning: the history of
input partition p lives in changelog partition p).

A record whose classification or alerts would be larger than a Kafka request (1 MiB) can
never be published: it is dead-lettered (stage process, reason output-too-large) instead of
being retried until the service stops. A dead-letter copy that cannot fit keeps the error
headers (which point at the record in the input topic) without the value, and a patient
history state that cannot fit is kept in the local store only and logged as an error.

An input record that is not where its patient's history lives (key not its patient_id, or a
partition other than murmur2(key) mod the input's partition count: consumer/routing.py) is
dead-lettered (stage validate, reason misrouted) after it decodes and validates, and is never
evaluated. The partition count is the consumer's metadata of the input topic.

A schema registry that cannot be reached is not a record's fault: the record is retried
with back-off (its partition is paused and sought back), never dead-lettered, and no offset
past it is committed.

Test-only hook: HER2_TEST_CRASH_BEFORE_COMMIT=N kills the process with SIGKILL after the
outputs of the N-th non-empty batch are acknowledged and before its offsets are committed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sqlite3
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, Protocol, cast

from consumer import __version__, routing
from consumer.codec import Decoder, Encoder, schema_json
from consumer.config import Settings, load_writer_schema
from consumer.errors import (
    ConfigError,
    Her2Error,
    PublishError,
    RecordError,
    RegistryError,
    RuleSetError,
    SchemaError,
)
from consumer.history import Checkpoint, HistoryRecordError, HistoryStore
from consumer.http import Health, start_http_server
from consumer.logs import configure_logging, get_logger
from consumer.metrics import Metrics
from consumer.pipeline import Pipeline, utc_now
from consumer.registry import SchemaRegistryClient
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    parsed_schema,
)
from consumer.statestore import DISK, StateDir, open_states
from consumer.validate import check_event

with warnings.catch_warnings():
    # kafka-python 3.0.x calls importlib.resources.read_text/open_text at import time, which
    # warns on Python 3.11/3.12; harmless, and it must not fail runs with warnings as errors.
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.errors import (
        CommitFailedError,
        InvalidProducerEpochError,
        KafkaError,
        ProducerFencedError,
        RebalanceInProgressError,
    )
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.structs import OffsetAndMetadata, TopicPartition

_FENCED: Final = (ProducerFencedError, InvalidProducerEpochError)

# The producer's max_request_size (kafka-python's default, also the broker's message.max.bytes
# default): a record larger than this is refused on every attempt, so it is a record's fault.
MAX_REQUEST_BYTES: Final = 1_048_576

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FENCED: Final = 3

DLQ_HEADER_PREFIX: Final = "her2.errors."
PROCESS_ERROR_MESSAGE: Final = "unexpected error while processing the record"
_TOPIC_EXISTS: Final = 36  # TOPIC_ALREADY_EXISTS
_REGISTRY_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_INPUT_WAIT_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
_PUBLISH_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
_POLL_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0)
_HISTORY_REFRESH_S: Final = 5.0
_ABORT_TIMEOUT_S: Final = 10.0
_PRODUCER_CLOSE_S: Final = 1.0  # closing a producer replaced after a failed publish attempt

log = get_logger("her2.service")


class HealthHook(Protocol):
    """What the service tells the health endpoints (consumer.http.Health fits)."""

    def beat(self) -> None:
        """The loop made progress."""

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Readiness changed."""


class HistoryRestoreError(Her2Error):
    """The history changelog could not be read to its end in time (fatal)."""


class KafkaConnectError(Her2Error):
    """Kafka could not be reached or refused us at start-up (the message names what to check)."""


class _ConnectionFailures(logging.Handler):
    """Collects the exceptions kafka-python logs while bootstrapping (it raises only a timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))

    def diagnose(self, s: Settings) -> tuple[str, str]:
        """(reason, message) naming the variables to check; never echoes a secret."""
        chain: list[BaseException] = []
        for exc in self.errors:
            seen: BaseException | None = exc
            while seen is not None and seen not in chain:
                chain.append(seen)
                seen = seen.__cause__ or seen.__context__
        names = " ".join(type(e).__name__ for e in chain)
        # only to classify, never printed (it may name hosts)
        text = " ".join(str(e) for e in chain).upper()
        where = f"KAFKA_BOOTSTRAP_SERVERS={s.bootstrap_servers}"
        if "Authentication" in names or "Sasl" in names:
            return "sasl-authentication", (
                f"Kafka at {where} rejected the SASL authentication "
                f"(KAFKA_SASL_MECHANISM={s.security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD"
            )
        if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in names or "[SSL" in text:
            trust = "CERTIFICATE_VERIFY" in text or "CERTIFICATE VERIFY FAILED" in text
            return "tls", (
                f"the TLS handshake with {where} failed"
                + (": the broker's certificate is not trusted" if trust else "")
                + " (check KAFKA_SSL_CAFILE, KAFKA_SSL_CHECK_HOSTNAME and KAFKA_SECURITY_PROTOCOL)"
            )
        return "unreachable", (
            f"no Kafka broker answered at {where} within HER2_REQUEST_TIMEOUT_MS="
            f"{s.tuning.request_timeout_ms} (check the address and KAFKA_SECURITY_PROTOCOL="
            f"{s.security.protocol})"
        )


REASON_OUTPUT_TOO_LARGE = "output-too-large"


class OutputTooLarge(Her2Error):
    """An output of one record can never be produced (larger than a Kafka request)."""


class _Fenced(Her2Error):
    """Another producer with our transactional id took over (exactly-once)."""


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


@dataclass
class _Batch:
    """What one poll batch produced and what to record once it is acknowledged."""

    outputs: list[Output] = field(default_factory=list)
    last: dict[TopicPartition, Any] = field(default_factory=dict)  # tp -> last processed record
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    categories: collections.Counter[str] = field(default_factory=collections.Counter)
    alerts: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    transitions: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    dlq: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    durations: list[float] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    changes: list[Output] = field(default_factory=list)  # history changelog records


_RETRY: Final = object()  # _process_record: registry unavailable, retry this record later


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Forwards rebalance callbacks (run on kafka-python's IO thread) to the service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._service._on_revoked(revoked, kind="revoked")

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._service._on_assigned(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self._service._on_revoked(lost, kind="lost")


class Service:
    """The consumer loop: `run()` until `stop()` (thread-safe) or a signal; returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        health: HealthHook | None = None,
        hostname: str | None = None,
    ) -> None:
        """Build the service; nothing connects to Kafka before `run()`."""
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self._clock = clock
        self._health = health
        self._hostname = hostname or socket.gethostname()
        self._stop_event = threading.Event()
        self._retention = (
            dt.timedelta(days=settings.history_retention_days)
            if settings.history_retention_days > 0
            else None
        )
        self._stores: dict[TopicPartition, HistoryStore] = {}
        self._state_dir: StateDir | None = None  # disk stores' private directory (run() only)
        self._pending_restore: set[TopicPartition] = set()
        self._backoff_until: dict[TopicPartition, float] = {}
        self._backoff_step: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._input_partition_count = 0  # last count seen (routing check); set by _start()
        self._consumer: Any = None
        self._producer: Any = None
        self._restore_consumer: Any = None
        self._registry: SchemaRegistryClient | None = None
        self._batches = 0
        self._poll_failures = 0  # consecutive polls that could not reach the broker
        self._last_lag_refresh = 0.0
        self._last_history_refresh = 0.0
        self._debug = settings.log_level == "DEBUG"
        self.started = threading.Event()  # set once the consumer subscribed (for tests, probes)

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return (thread-safe)."""
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stop_event.is_set()

    def assigned_partitions(self) -> list[int]:
        """Input partitions whose history is restored and which are being processed."""
        return sorted(tp.partition for tp in list(self._stores))  # read from other threads

    def run(self) -> int:
        """Run until stopped; return an exit code (EXIT_OK on a clean stop)."""
        code = EXIT_FAILURE
        try:
            self._start()
            if not self.stopping:
                self._loop()
            code = EXIT_OK
        except ConfigError as exc:
            log.error("configuration error", error_type=type(exc).__name__)
            _print_error(str(exc))
            code = EXIT_CONFIG
        except _Fenced:
            log.error("producer fenced: another instance uses this transactional id; stopping")
            code = EXIT_FENCED
        except (PublishError, HistoryRestoreError, SchemaError, KafkaConnectError) as exc:
            log.error("stopping without committing", error_type=type(exc).__name__)
            _print_error(str(exc))
        except sqlite3.Error as exc:  # the disk history store (full disk, I/O error)
            log.error("history store failed; stopping without committing", exc_info=exc)
            _print_error(f"history store failed ({type(exc).__name__}); check HER2_STATE_DIR")
        except KafkaError as exc:
            log.error("stopping on a Kafka error", error_type=type(exc).__name__, exc_info=exc)
        except Exception as exc:
            log.error(
                "stopping on an unexpected error", error_type=type(exc).__name__, exc_info=exc
            )
        finally:
            self._close(clean=code == EXIT_OK)
        log.info("shutdown", state="stopped", committed=code == EXIT_OK, batch=self._batches)
        return code

    # -- start-up -------------------------------------------------------------------------

    def _start(self) -> None:
        s = self.settings
        self._set_ready(False, "starting")
        self._build_codecs()
        if s.history_store == DISK:
            self._state_dir = _open_state_dir(s)
        log.info(
            "started",
            version=__version__,
            ruleset_version=self.pipeline.ruleset.version,
            group_id=s.group_id,
            input_topic=s.topics.input,
            bootstrap_servers=s.bootstrap_servers,
            guarantee=s.processing_guarantee,
            input_format=s.input_format,
            output_format=s.output_format,
            http_port=s.http_port,
        )
        self._register_output_schemas()
        if self.stopping:
            return
        partitions = self._ensure_topics()
        if partitions is None:
            return
        self._input_partition_count = partitions
        self._producer = self._make_producer()
        for topic in s.topics.outputs():
            # the producer's metadata of every output now, not at the first record for each
            # (a service just started otherwise waits for it inside its first batches)
            self._producer.partitions_for(topic)
        self._consumer = disable_topic_auto_creation(KafkaConsumer(**self._consumer_kwargs()))
        self._consumer.subscribe([s.topics.input], listener=_Listener(self))
        # Fetch metadata now that the subscription is set, before the first join. Otherwise
        # kafka-python may run the first assignment without the input's partitions ("No
        # partition metadata for topic": nothing assigned) or with a metadata snapshot older
        # than its cluster view, and rebalance again right after (refusing the first commits).
        self._consumer.topics()
        self.started.set()

    def _build_codecs(self) -> None:
        s = self.settings
        self._registry = s.registry_client(on_error=self.metrics.registry_error)
        raw_writer = load_writer_schema(s.raw_writer_schema) if s.raw_writer_schema else None
        self._decoder = Decoder(
            s.input_format,
            parsed_schema(PATHOLOGY_RESULT),
            registry=self._registry,
            raw_writer_schema=raw_writer,
        )
        fmt = s.output_format
        self._classification_encoder = Encoder(
            fmt,
            parsed_schema(HER2_CLASSIFICATION),
            registry=self._registry,
            subject=f"{s.topics.classification}-value",
        )
        self._alert_encoders = {
            topic: Encoder(
                fmt, parsed_schema(HER2_ALERT), registry=self._registry, subject=f"{topic}-value"
            )
            for topic in s.topics.alert_topics()
        }

    def _register_output_schemas(self) -> None:
        """Confluent output: register the output schemas now, retrying while the registry is
        unreachable, so that encoding never waits on the registry mid-batch."""
        s = self.settings
        if s.output_format != "confluent" or self._registry is None:
            return
        subjects = [
            (f"{s.topics.classification}-value", HER2_CLASSIFICATION),
            *((f"{topic}-value", HER2_ALERT) for topic in s.topics.alert_topics()),
        ]
        for subject, schema in subjects:
            attempt = 0
            while not self.stopping:
                try:
                    self._registry.register(subject, schema_json(parsed_schema(schema)))
                    break
                except RegistryError as exc:
                    delay = _REGISTRY_BACKOFF_S[min(attempt, len(_REGISTRY_BACKOFF_S) - 1)]
                    attempt += 1
                    log.warning(
                        "schema registry unavailable; retrying",
                        attempt=attempt,
                        error_type=type(exc).__name__,
                        seconds=delay,
                    )
                    self._stop_event.wait(delay)

    def _ensure_topics(self) -> int | None:
        """Wait for the input topic, create missing outputs; return the input's partition count
        (None when stopped while waiting)."""
        s = self.settings
        admin = self._connect_admin()
        try:
            attempt = 0
            while True:
                counts = _partition_counts(admin, [s.topics.input])
                if s.topics.input in counts:
                    break
                delay = _INPUT_WAIT_BACKOFF_S[min(attempt, len(_INPUT_WAIT_BACKOFF_S) - 1)]
                attempt += 1
                log.warning(
                    "input topic missing; waiting for it to be created (it is never auto-created)",
                    input_topic=s.topics.input,
                    attempt=attempt,
                    seconds=delay,
                )
                self._set_ready(False, "input topic missing")
                if self._stop_event.wait(delay):
                    return None
            partitions = counts[s.topics.input]
            existing = _partition_counts(admin, list(s.topics.outputs()))
            missing = [t for t in s.topics.outputs() if t not in existing]
            if missing:
                specs: dict[str, dict[str, Any]] = {}
                for topic in missing:
                    spec: dict[str, Any] = {
                        "num_partitions": partitions,
                        "replication_factor": s.tuning.replication_factor,
                    }
                    if topic == s.topics.history:
                        spec["configs"] = {"cleanup.policy": "compact"}
                    specs[topic] = spec
                result = admin.create_topics(specs, raise_errors=False)
                for topic in result.get("topics", []):
                    code = topic.get("error_code", 0)
                    if code not in (0, _TOPIC_EXISTS):
                        raise ConfigError(
                            f"cannot create output topic {topic.get('name')} "
                            f"(Kafka error code {code}); create it or fix the permissions"
                        )
                admin.wait_for_topics(missing, timeout_ms=s.tuning.request_timeout_ms)
                log.info("output topics created", count=len(missing))
                existing = _partition_counts(admin, list(s.topics.outputs()))
            history_partitions = existing.get(s.topics.history)
            if history_partitions != partitions:
                raise ConfigError(
                    f"HER2_HISTORY_TOPIC {s.topics.history} has {history_partitions} partitions "
                    f"but HER2_INPUT_TOPIC has {partitions}: the changelog must be co-partitioned "
                    "with the input (same partition count)"
                )
            return partitions
        finally:
            admin.close()

    def _connect_admin(self) -> Any:
        """The first connection to Kafka, which doubles as the start-up preflight: when it fails,
        say why (SASL credentials, TLS trust, or no broker) and name the variables to check."""
        s = self.settings
        failures = _ConnectionFailures()
        kafka_logger = logging.getLogger("kafka")
        kafka_logger.addHandler(failures)
        try:
            return KafkaAdminClient(
                client_id=self._client_id("admin"),
                bootstrap_timeout_ms=s.tuning.request_timeout_ms,
                **s.kafka_common(),
            )
        except KafkaError as exc:
            error_type = type(exc).__name__
        finally:
            kafka_logger.removeHandler(failures)
        reason, hint = failures.diagnose(s)
        log.error(
            "cannot connect to Kafka",
            reason=reason,
            error_type=error_type,
            bootstrap_servers=s.bootstrap_servers,
        )
        raise KafkaConnectError(hint)

    def _client_id(self, role: str) -> str:
        return f"her2-{role}-{self.settings.instance_id or self._hostname}"

    def _consumer_kwargs(self) -> dict[str, Any]:
        s, t = self.settings, self.settings.tuning
        kwargs: dict[str, Any] = {
            **s.kafka_common(),
            "client_id": self._client_id("consumer"),
            "group_id": s.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            "partition_assignment_strategy": [CooperativeStickyAssignor()],
            "max_poll_records": s.max_poll_records,
            "session_timeout_ms": t.session_timeout_ms,
            "heartbeat_interval_ms": t.heartbeat_interval_ms,
            "max_poll_interval_ms": t.max_poll_interval_ms,
            "allow_auto_create_topics": False,
            # bounds how long a missed metadata change (e.g. new partitions) can go unnoticed
            "metadata_max_age_ms": 30000,
        }
        if s.instance_id:
            kwargs["group_instance_id"] = s.instance_id
        return kwargs

    def _make_producer(self) -> Any:
        s, t = self.settings, self.settings.tuning
        kwargs: dict[str, Any] = {
            **s.kafka_common(),
            "client_id": self._client_id("producer"),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": t.linger_ms,
            "batch_size": t.batch_size,
            "max_request_size": MAX_REQUEST_BYTES,
            "delivery_timeout_ms": max(t.delivery_timeout_ms, t.request_timeout_ms + t.linger_ms),
            "max_block_ms": t.request_timeout_ms,
            "allow_auto_create_topics": False,
        }
        if s.exactly_once:
            kwargs["transactional_id"] = s.transactional_id(self._hostname)
            kwargs["transaction_timeout_ms"] = t.transaction_timeout_ms
        producer = disable_topic_auto_creation(KafkaProducer(**kwargs))
        if s.exactly_once:
            try:
                producer.init_transactions()
            except _FENCED:
                producer.close(timeout=5)
                raise _Fenced() from None
            except BaseException:
                producer.close(timeout=5)
                raise
        return producer

    def _renew_producer(self) -> None:
        """At-least-once, after a failed publish attempt: replace the producer (B5 of
        docs/fault-report.md).

        When records expire in kafka-python 3.0.12 (a broker outage longer than the delivery
        timeout), it resets the idempotent producer id and that producer then sends nothing:
        re-sending through it only waits out the delivery timeout again. A new producer sends
        at once. Records the old one still delivers become duplicates (same alert ids), which
        at-least-once allows.
        """
        old, self._producer = self._producer, None
        try:
            old.close(timeout=_PRODUCER_CLOSE_S)
        except Exception as exc:
            # close() flushes first and raises on records it cannot deliver before it stops
            # its I/O thread; stop that thread, or every renewal leaks one (private API)
            sender = getattr(old, "_sender", None)
            if sender is not None:
                sender.force_close()  # fails the records it still holds
                sender.join(_PRODUCER_CLOSE_S)
            with contextlib.suppress(Exception):
                old.close(timeout=0)  # nothing left to flush: marks it closed
            log.info("producer force-closed", error_type=type(exc).__name__)
        try:
            self._producer = self._make_producer()
        except Exception as exc:
            raise PublishError(
                f"could not create a new producer ({type(exc).__name__}); stopping without "
                "committing"
            ) from exc
        log.warning("producer replaced after a failed publish attempt")

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.settings
        while not self.stopping:
            self._resume_after_backoff()
            records = self._poll(s.tuning.poll_timeout_ms, s.max_poll_records)
            self._beat()
            if self._pending_restore:
                self._restore_pending()
            if records:
                self._process_batch(records)
            self._refresh_gauges()

    def _poll(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, list[Any]]:
        """One poll. A broker that cannot be reached (kafka-python 3.0.12 can raise
        KafkaConnectionError from a metadata refresh inside poll when the broker goes away; any
        retriable Kafka error) is waited for with back-off, the loop staying alive: nothing was
        fetched, so nothing is lost, and the group coordinator re-joins once the broker is back."""
        try:
            records = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            delay = _POLL_BACKOFF_S[min(self._poll_failures, len(_POLL_BACKOFF_S) - 1)]
            self._poll_failures += 1
            log.warning(
                "broker unreachable while polling; retrying",
                attempt=self._poll_failures,
                error_type=type(exc).__name__,
                seconds=delay,
            )
            self._stop_event.wait(delay)
            return {}
        self._poll_failures = 0
        return cast(Mapping[TopicPartition, list[Any]], records)

    def _process_batch(self, records: Mapping[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        batch = _Batch()
        for tp in sorted(records):
            store = self._stores.get(tp)
            if store is None:  # defensive: never process a partition whose history is not loaded
                self._consumer.seek(tp, records[tp][0].offset)
                continue
            for record in records[tp]:
                if self._process_record(tp, record, store, batch) is _RETRY:
                    self._consumer.seek(tp, record.offset)
                    self._positions[tp] = record.offset
                    self._back_off(tp)
                    break
                batch.last[tp] = record
                self._positions[tp] = record.offset + 1
            for key, value in store.take_dirty():  # one record per changed part of a patient
                change = Output(self.settings.topics.history, key, value, partition=tp.partition)
                if not _fits(change):
                    # kept in the local store and used while this instance owns the partition;
                    # a restore elsewhere sees the patient's previous state (stated loudly)
                    log.error(
                        "history state larger than a Kafka request; not written to the changelog",
                        topic=self.settings.topics.history,
                        partition=tp.partition,
                        count=len(value),
                    )
                    continue
                batch.changes.append(change)
        if not batch.last:
            return
        offsets = {
            tp: OffsetAndMetadata(
                record.offset + 1,
                "",
                record.leader_epoch if record.leader_epoch is not None else -1,
            )
            for tp, record in batch.last.items()
        }
        if self.settings.exactly_once:
            self._publish_transaction([*batch.outputs, *batch.changes], offsets)
        else:
            # At-least-once: the changelog is written only after every other output of the batch
            # is acknowledged. Written together, a broker failure could store a patient's new
            # state without all of its alerts; the redelivered batch would then find the later
            # state and never re-emit the missing alerts of an earlier event.
            self._publish(batch.outputs)
            self._publish(batch.changes)
            self._test_crash_hook()
            self._commit(offsets)
        self._batches += 1
        self._record_batch(batch, offsets, time.perf_counter() - started)

    def _process_record(
        self, tp: TopicPartition, record: Any, store: HistoryStore, batch: _Batch
    ) -> object:
        """Process one record into `batch`; return _RETRY if it must be retried later."""
        started = time.perf_counter()
        event_id = None
        undo: Checkpoint | None = None  # the patient's state before this event
        try:
            event = check_event(self._decoder.decode(record.value))
            event_id = event["event_id"]
            # after decode and validation (an unreadable record keeps its own reason), before
            # the history: a misrouted event is never evaluated against a partial history
            misrouted = routing.check(
                record.key, event["patient_id"], tp.partition, self._input_partitions(tp.topic)
            )
            if misrouted is not None:
                raise misrouted.error()
            undo = store.checkpoint(event["patient_id"])
            outcome = store.apply(event, self.pipeline)
            key = record.key if record.key else event["patient_id"].encode("utf-8")
            outputs = [
                Output(
                    self.settings.topics.classification,
                    key,
                    self._classification_encoder.encode(outcome.classification),
                )
            ]
            for alert in outcome.alerts:
                topic = self.settings.topics.alert_topic(alert["alert_type"])
                outputs.append(Output(topic, key, self._alert_encoders[topic].encode(alert)))
            if not all(map(_fits, outputs)):
                raise OutputTooLarge(
                    "an output of this record (classification or alert) is larger than the "
                    f"maximum Kafka request ({MAX_REQUEST_BYTES} bytes)"
                )
        except RegistryError as exc:
            _roll_back(store, undo)  # the record is processed again later, from scratch
            log.warning(
                "schema registry unavailable; record will be retried",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                error_type=type(exc).__name__,
            )
            return _RETRY
        except OutputTooLarge as exc:  # never fits: retrying would stop the partition for good
            _roll_back(store, undo)  # a dead-lettered event leaves no trace in the history
            self._dead_letter(
                batch,
                tp,
                record,
                stage="process",
                reason=REASON_OUTPUT_TOO_LARGE,
                exception_class=type(exc).__name__,
                message=str(exc),
                started=started,
            )
            return None
        except RecordError as exc:
            self._dead_letter(
                batch,
                tp,
                record,
                stage=exc.stage,
                reason=exc.reason,
                exception_class=type(exc).__name__,
                message=exc.message,
                started=started,
                extra_headers=exc.headers,
            )
            return None
        except sqlite3.Error:
            # The disk history store failed (full disk, I/O error): not the record's fault, so
            # never dead-lettered; the service stops without committing and the record is
            # redelivered after the restart (a new store restored from the changelog).
            raise
        except Exception as exc:  # a bug: dead-letter the record and keep the partition moving
            _roll_back(store, undo)
            log.error(
                "record processing failed",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                event_id=event_id,
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            self._dead_letter(
                batch,
                tp,
                record,
                stage="process",
                reason="processing-error",
                exception_class=type(exc).__name__,
                message=PROCESS_ERROR_MESSAGE,
                started=started,
            )
            return None
        duration = time.perf_counter() - started
        batch.outputs.extend(outputs)
        batch.outcomes["processed"] += 1
        category = outcome.classification["category"]
        batch.categories[category] += 1
        for alert in outcome.alerts:
            batch.alerts[(alert["alert_type"], alert["code"], alert["status"])] += 1
        for alert, transition in zip(outcome.alerts, outcome.transitions, strict=False):
            batch.transitions[(transition, alert["code"])] += 1
        batch.durations.append(duration)
        event_time = event.get("event_time")
        if event_time is not None:
            batch.ages.append(max(0.0, (self._clock() - event_time).total_seconds()))
        if self._debug:
            log.debug(
                "record processed",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                event_id=event_id,
                outcome="processed",
                duration_ms=round(duration * 1000, 3),
                category=category,
                alerts=len(outcome.alerts),
            )
        return None

    def _dead_letter(
        self,
        batch: _Batch,
        tp: TopicPartition,
        record: Any,
        *,
        stage: str,
        reason: str,
        exception_class: str,
        message: str,
        started: float,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        now_ms = int(self._clock().timestamp() * 1000)

        def error_headers(text: str) -> list[tuple[str, bytes]]:
            standard = dlq_headers(
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                stage=stage,
                reason=reason,
                exception_class=exception_class,
                message=text,
                timestamp_ms=now_ms,
            )
            return [*standard, *extra_headers]

        kept = [(k, v) for k, v in (record.headers or []) if not k.startswith(DLQ_HEADER_PREFIX)]
        dlq = self.settings.topics.dlq
        dead = Output(dlq, record.key, record.value, [*kept, *error_headers(message)])
        if not _fits(dead):
            # the copy (value plus error headers) cannot be produced: keep the headers, which
            # point at the record still in the input topic, and say so
            headers = error_headers(
                f"{message}; the original value ({len(record.value or b'')} bytes) does not fit "
                "the dead-letter topic: read it from the input topic at this offset"
            )
            dead = Output(dlq, record.key, None, headers)
            if not _fits(dead):
                dead = Output(dlq, None, None, headers)
        batch.outputs.append(dead)
        batch.outcomes["dead_lettered"] += 1
        batch.dlq[(stage, reason)] += 1
        duration = time.perf_counter() - started
        batch.durations.append(duration)
        log.warning(
            "record dead-lettered",
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            outcome="dead_lettered",
            stage=stage,
            reason=reason,
            error_type=exception_class,
            duration_ms=round(duration * 1000, 3),
        )

    def _input_partitions(self, topic: str) -> int:
        """The input topic's partition count in the consumer's metadata (what producers
        partition by); the last count seen while a metadata refresh lacks the topic."""
        count = len(self._consumer.partitions_for_topic(topic) or ())
        if count:
            self._input_partition_count = count
        return self._input_partition_count

    # -- publish and commit ---------------------------------------------------------------

    def _send(self, outputs: list[Output]) -> list[tuple[Output, Any]]:
        sent: list[tuple[Output, Any]] = []
        for out in outputs:
            try:
                future = self._producer.send(
                    out.topic,
                    key=out.key,
                    value=out.value,
                    headers=out.headers or None,
                    partition=out.partition,
                )
            except KafkaError as exc:
                future = exc
            sent.append((out, future))
        return sent

    def _await(self, sent: list[tuple[Output, Any]]) -> tuple[list[Output], str | None]:
        """Wait for every future; return the outputs that failed and one error type.

        One deadline for the whole batch (delivery timeout + 5 s): a future still pending then
        counts as not acknowledged. (Seen with kafka-python 3.0.12 after a broker outage: some
        futures never complete, so per-future timeouts would add up without bound.)
        """
        deadline = time.monotonic() + self.settings.tuning.delivery_timeout_ms / 1000 + 5
        with contextlib.suppress(KafkaError):  # the futures below say which records failed
            self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        failed: list[Output] = []
        error_type = None
        for out, future in sent:
            if isinstance(future, BaseException):
                failed.append(out)
                error_type = type(future).__name__
                continue
            try:
                future.get(timeout=max(0.001, deadline - time.monotonic()))
            except _FENCED:
                raise
            except Exception as exc:  # any failure of the send means "not acknowledged"
                failed.append(out)
                error_type = type(exc).__name__
        return failed, error_type

    def _publish(self, outputs: list[Output]) -> None:
        """Send and wait for every acknowledgement; re-send failures a bounded number of times."""
        pending = outputs
        retries = self.settings.publish_retries
        for attempt in range(retries + 1):
            failed, error_type = self._await(self._send(pending))
            if not failed:
                return
            if attempt == retries:
                break
            self.metrics.publish_retries.inc()
            delay = _PUBLISH_BACKOFF_S[min(attempt, len(_PUBLISH_BACKOFF_S) - 1)]
            log.warning(
                "outputs not acknowledged; re-sending",
                count=len(failed),
                attempt=attempt + 1,
                error_type=error_type,
                seconds=delay,
            )
            time.sleep(delay)
            self._renew_producer()
            pending = failed
        raise PublishError(
            f"{len(failed)} output records were not acknowledged after {retries} retries "
            f"({error_type}); stopping without committing"
        )

    def _publish_transaction(
        self, outputs: list[Output], offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Exactly-once: outputs and offsets in one transaction; abort and stop on failure."""
        producer = self._producer
        try:
            producer.begin_transaction()
            failed, error_type = self._await(self._send(outputs))
            if failed:
                raise PublishError(
                    f"{len(failed)} output records were not acknowledged ({error_type}); "
                    "the transaction is aborted"
                )
            self._test_crash_hook()
            limit = self.settings.tuning.transaction_timeout_ms / 1000
            _bounded(
                "sending offsets to the transaction",
                limit,
                producer.send_offsets_to_transaction,
                offsets,
                self._consumer.group_metadata(),
            )
            _bounded("committing the transaction", limit, producer.commit_transaction)
        except _FENCED:
            raise _Fenced() from None
        except Exception as exc:
            if _is_fenced(exc):
                raise _Fenced() from None
            self.metrics.commit_failures.inc()
            try:
                _bounded("aborting the transaction", _ABORT_TIMEOUT_S, producer.abort_transaction)
            except Exception as abort_exc:  # best effort: the broker aborts it after the
                # transaction timeout, or the next instance's init_transactions fences it
                log.warning("transaction abort failed", error_type=type(abort_exc).__name__)
            if isinstance(exc, PublishError):
                raise
            raise PublishError(
                f"the transaction failed ({type(exc).__name__}) and was aborted"
            ) from None

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit after every output is acknowledged. A commit refused because of a rebalance
        is not fatal: the records are redelivered to the partition's next owner, which restores
        the same history and re-emits identical outputs."""
        try:
            self._consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            self.metrics.commit_failures.inc()
            log.warning(
                "offset commit refused during a rebalance; records may be redelivered",
                error_type=type(exc).__name__,
            )
            return
        except KafkaError as exc:
            self.metrics.commit_failures.inc()
            if not exc.retriable:
                raise
            # the broker is unreachable (F4 of docs/fault-report.md): every output of these
            # records is acknowledged, so the next batch's commit covers them, or their
            # partition's next owner gets them again (at-least-once)
            log.warning(
                "offset commit failed; a later commit covers these records or they are "
                "redelivered",
                error_type=type(exc).__name__,
            )

    def _test_crash_hook(self) -> None:
        """TEST ONLY (HER2_TEST_CRASH_BEFORE_COMMIT): die like `kill -9` between ack and commit."""
        crash_at = self.settings.test_crash_before_commit
        if crash_at is not None and self._batches + 1 == crash_at:
            log.warning("test hook: killing the process before commit", batch=crash_at)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- rebalance and restore ------------------------------------------------------------

    def _on_assigned(self, assigned: Any) -> None:
        """IO thread: pause new partitions until their history is restored (no blocking here)."""
        partitions = sorted(assigned)
        self.metrics.rebalances.labels(kind="assigned").inc()
        if not partitions:
            if not self._pending_restore:  # a member without partitions is ready too
                self._set_ready(True)
            return
        self._consumer.pause(*partitions)
        self._pending_restore.update(partitions)
        self.metrics.assigned_partitions.set(len(self._stores) + len(self._pending_restore))
        self._set_ready(False, "restoring history")
        log.info(
            "partitions assigned",
            topic=self.settings.topics.input,
            partitions=[tp.partition for tp in partitions],
        )

    def _on_revoked(self, revoked: Any, *, kind: str) -> None:
        """IO thread: nothing is in flight (batches commit before the next poll); drop state."""
        partitions = sorted(revoked)
        self.metrics.rebalances.labels(kind=kind).inc()
        for tp in partitions:
            store = self._stores.pop(tp, None)
            if store is not None:
                store.close()  # on the IO thread: see DiskStates for why that is safe
            self._pending_restore.discard(tp)
            self._backoff_until.pop(tp, None)
            self._backoff_step.pop(tp, None)
            self._positions.pop(tp, None)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            for gauge in (
                self.metrics.lag,
                self.metrics.committed_offset,
                self.metrics.last_progress,
            ):
                with contextlib.suppress(KeyError):  # never set for this partition
                    gauge.remove(*labels.values())
        self.metrics.assigned_partitions.set(len(self._stores) + len(self._pending_restore))
        if partitions:
            log.info(
                f"partitions {kind}",
                topic=self.settings.topics.input,
                partitions=[tp.partition for tp in partitions],
            )

    def _restore_pending(self) -> None:
        """Main thread, between polls: read each pending partition's changelog to its end."""
        partitions = sorted(self._pending_restore)
        started = time.monotonic()
        stores = {tp: self._new_store(tp) for tp in partitions}
        count = None
        try:
            count = self._read_changelog(stores, started + self.settings.tuning.restore_timeout_s)
        finally:
            if count is None:  # failed, or stopped while restoring (partitions left paused)
                for store in stores.values():
                    store.close()
        if count is None:
            return
        seconds = time.monotonic() - started
        self._stores.update(stores)
        self._pending_restore.difference_update(partitions)
        still_assigned = [tp for tp in partitions if tp in self._consumer.assignment()]
        self._consumer.resume(*still_assigned)
        self.metrics.history_restore_seconds.observe(seconds)
        self.metrics.history_restored_records.inc(count)
        self.metrics.assigned_partitions.set(len(self._stores) + len(self._pending_restore))
        log.info(
            "history restored",
            topic=self.settings.topics.history,
            partitions=[tp.partition for tp in partitions],
            records=count,
            seconds=round(seconds, 3),
            patients=sum(len(stores[tp]) for tp in partitions),
        )
        self._refresh_history_gauges(force=True)
        if not self._pending_restore:
            self._set_ready(True)

    def _new_store(self, tp: TopicPartition) -> HistoryStore:
        """An empty history store for input partition `tp`, on the configured backend."""
        states = open_states(self.settings.history_store, self._state_dir, f"p{tp.partition}")
        return HistoryStore(self._retention, self._clock, states)

    def _read_changelog(
        self, stores: dict[TopicPartition, HistoryStore], deadline: float
    ) -> int | None:
        """Apply changelog records up to the end offsets captured now; None if stopped."""
        history_topic = self.settings.topics.history
        by_changelog = {TopicPartition(history_topic, tp.partition): stores[tp] for tp in stores}
        changelog = sorted(by_changelog)
        if self._restore_consumer is None:
            self._restore_consumer = disable_topic_auto_creation(
                KafkaConsumer(
                    **self.settings.kafka_common(),
                    client_id=self._client_id("restore"),
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    auto_offset_reset="earliest",
                    allow_auto_create_topics=False,
                )
            )
        rc = self._restore_consumer
        timeout_ms = self.settings.tuning.request_timeout_ms
        rc.assign(changelog)
        try:
            rc.seek_to_beginning(*changelog)
            end = rc.end_offsets(changelog, timeout_ms=timeout_ms)
            remaining = {tp for tp in changelog if rc.position(tp, timeout_ms=timeout_ms) < end[tp]}
            count = 0
            while remaining:
                if self.stopping:
                    return None
                if time.monotonic() > deadline:
                    raise HistoryRestoreError(
                        f"history restore of {history_topic} partitions "
                        f"{sorted(tp.partition for tp in remaining)} did not reach the end offsets "
                        "within HER2_RESTORE_TIMEOUT_SECONDS="
                        f"{self.settings.tuning.restore_timeout_s:g}"
                    )
                for tp, records in rc.poll(timeout_ms=200).items():
                    store = by_changelog[tp]
                    for record in records:
                        if record.offset >= end[tp]:
                            continue
                        count += self._restore_record(store, tp, record)
                for tp in list(remaining):
                    if rc.position(tp, timeout_ms=timeout_ms) >= end[tp]:
                        remaining.discard(tp)
            return count
        finally:
            rc.assign([])

    def _restore_record(self, store: HistoryStore, tp: TopicPartition, record: Any) -> int:
        try:
            store.restore(record.key, record.value)
        except HistoryRecordError as exc:
            self.metrics.history_unreadable_records.inc()
            log.error(
                "history record unreadable; skipped",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                reason=exc.reason,
                error_type=type(exc).__name__,
            )
            return 0
        return 1

    # -- back-off while the registry is down ----------------------------------------------

    def _back_off(self, tp: TopicPartition) -> None:
        step = self._backoff_step.get(tp, 0)
        delay = _REGISTRY_BACKOFF_S[min(step, len(_REGISTRY_BACKOFF_S) - 1)]
        self._backoff_step[tp] = step + 1
        self._backoff_until[tp] = time.monotonic() + delay
        self._consumer.pause(tp)

    def _resume_after_backoff(self) -> None:
        if not self._backoff_until:
            return
        now = time.monotonic()
        for tp, until in list(self._backoff_until.items()):
            if now >= until:
                del self._backoff_until[tp]
                if tp in self._consumer.assignment() and tp not in self._pending_restore:
                    self._consumer.resume(tp)

    # -- metrics and health ---------------------------------------------------------------

    def _record_batch(
        self, batch: _Batch, offsets: dict[TopicPartition, OffsetAndMetadata], seconds: float
    ) -> None:
        m = self.metrics
        for outcome, n in batch.outcomes.items():
            m.events.labels(outcome=outcome).inc(n)
        for category, n in batch.categories.items():
            m.classifications.labels(category=category).inc(n)
        for (alert_type, code, status), n in batch.alerts.items():
            m.alerts.labels(alert_type=alert_type, code=code, status=status).inc(n)
        for (transition, code), n in batch.transitions.items():
            m.alert_transitions.labels(transition=transition, code=code).inc(n)
        for (stage, reason), n in batch.dlq.items():
            m.dlq.labels(stage=stage, reason=reason).inc(n)
        for duration in batch.durations:
            m.processing_seconds.observe(duration)
        for age in batch.ages:
            m.event_age_seconds.observe(age)
        m.batch_seconds.observe(seconds)
        now = time.time()
        for tp, offset in offsets.items():
            m.committed_offset.labels(topic=tp.topic, partition=str(tp.partition)).set(
                offset.offset
            )
            m.last_progress.labels(topic=tp.topic, partition=str(tp.partition)).set(now)
        for tp in offsets:
            self._backoff_step.pop(tp, None)  # progress: the registry answered again
        log.info(
            "batch committed",
            batch=self._batches,
            count=sum(batch.outcomes.values()),
            processed=batch.outcomes.get("processed", 0),
            dead_lettered=batch.outcomes.get("dead_lettered", 0),
            published=len(batch.outputs) + len(batch.changes),
            records=len(batch.changes),
            partitions=sorted(tp.partition for tp in offsets),
            duration_ms=round(seconds * 1000, 3),
        )

    def _refresh_gauges(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_refresh >= self.settings.tuning.lag_refresh_s:
            self._last_lag_refresh = now
            self._refresh_lag()
        self._refresh_history_gauges()

    def _refresh_lag(self) -> None:
        partitions = sorted(self._stores)
        if not partitions:
            return
        try:
            ends = self._consumer.end_offsets(
                partitions, timeout_ms=self.settings.tuning.request_timeout_ms
            )
        except KafkaError as exc:
            log.warning("lag refresh failed", error_type=type(exc).__name__)
            return
        wall = time.time()
        for tp in partitions:
            position = self._positions.get(tp)
            if position is None:
                try:
                    position = self._consumer.position(tp, timeout_ms=1000)
                except KafkaError:
                    position = None
            end = ends.get(tp)
            if position is None or end is None:
                continue
            lag = max(0, end - position)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            self.metrics.lag.labels(**labels).set(lag)
            if lag == 0:
                self.metrics.last_progress.labels(**labels).set(wall)

    def _refresh_history_gauges(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_history_refresh < _HISTORY_REFRESH_S:
            return
        self._last_history_refresh = now
        stores = list(self._stores.values())
        self.metrics.history_patients.set(sum(len(s) for s in stores))
        self.metrics.history_accessions.set(sum(s.accession_count() for s in stores))
        self.metrics.history_bytes.set(sum(s.encoded_bytes() for s in stores))
        self.metrics.open_alerts.set(sum(s.open_alerts() for s in stores))

    def _beat(self) -> None:
        if self._health is not None:
            self._health.beat()

    def _set_ready(self, ready: bool, reason: str = "") -> None:
        if self._health is not None:
            self._health.set_ready(ready, reason)

    # -- shutdown -------------------------------------------------------------------------

    def _close(self, *, clean: bool) -> None:
        """Close every client; the consumer leaves the group (revoking its partitions)."""
        self._set_ready(False, "stopping")
        timeout_ms = self.settings.tuning.request_timeout_ms
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False, timeout_ms=timeout_ms)
            except Exception as exc:
                log.warning("consumer close failed", error_type=type(exc).__name__)
            self._consumer = None
        if self._restore_consumer is not None:
            try:
                self._restore_consumer.close(autocommit=False, timeout_ms=timeout_ms)
            except Exception as exc:
                log.warning("restore consumer close failed", error_type=type(exc).__name__)
            self._restore_consumer = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout_ms / 1000 if clean else 1)
            except Exception as exc:
                log.warning("producer close failed", error_type=type(exc).__name__)
            self._producer = None
        # Closing the consumer revoked its partitions (stores closed by the listener); these
        # are left if it failed or never ran.
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._state_dir is not None:
            self._state_dir.close()
            self._state_dir = None
        self.metrics.assigned_partitions.set(0)


def dlq_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    reason: str,
    exception_class: str,
    message: str,
    timestamp_ms: int,
) -> list[tuple[str, bytes]]:
    """The dead-letter headers of design.md (values UTF-8; the timestamp in epoch millis)."""
    values = (
        ("topic", topic),
        ("partition", str(partition)),
        ("offset", str(offset)),
        ("stage", stage),
        ("reason", reason),
        ("exception.class.name", exception_class),
        ("exception.message", message),
        ("timestamp", str(timestamp_ms)),
    )
    return [(DLQ_HEADER_PREFIX + name, value.encode("utf-8")) for name, value in values]


def disable_topic_auto_creation(client: Any) -> Any:
    """Make a kafka-python client's metadata requests never ask the broker to create topics.

    kafka-python 3.0.12 accepts `allow_auto_create_topics=False` but drops it on the way to its
    ClusterMetadata (kafka/net/manager.py builds ClusterMetadata without that key), so every
    metadata request asks brokers with auto.create.topics.enable=true to create any topic it
    names: a consumer would create a missing input topic, a producer would re-create a deleted
    output topic with broker defaults (a changelog without compaction). Set the flag where
    kafka-python reads it. Returns `client`.
    """
    cluster = getattr(client, "_metadata", None) or getattr(client, "_cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict):
        config["allow_auto_create_topics"] = False
    return client


def _bounded(what: str, timeout_s: float, call: Callable[..., Any], *args: Any) -> Any:
    """Run a kafka-python call that waits without a timeout (send_offsets_to_transaction,
    commit_transaction, abort_transaction in 3.0.12) in a helper thread, for at most
    `timeout_s`; past that raise PublishError (the service then stops without committing)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"her2-{call.__name__}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise PublishError(f"{what} did not complete within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _open_state_dir(settings: Settings) -> StateDir:
    """The private directory of this process's disk stores; ConfigError if it cannot be made."""
    try:
        return StateDir(settings.state_dir)
    except OSError as exc:
        where = settings.state_dir or "the system temp directory (HER2_STATE_DIR unset)"
        raise ConfigError(
            f"HER2_STATE_DIR: cannot create a state directory in {where} ({type(exc).__name__})"
        ) from None


def _roll_back(store: HistoryStore, undo: Checkpoint | None) -> None:
    """Put the patient's state back as it was before the record (no-op before apply)."""
    if undo is not None:
        store.roll_back(undo)


def _fits(out: Output) -> bool:
    """Whether kafka-python would accept `out` (its own upper-bound estimate of the size)."""
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(out.key, out.value, out.headers)
    return int(size) <= MAX_REQUEST_BYTES


def _is_fenced(exc: BaseException) -> bool:
    """kafka-python reports a fenced transactional producer either as ProducerFencedError or,
    once the transaction manager is in its fatal state, as a plain KafkaError naming it."""
    return isinstance(exc, _FENCED) or "ProducerFenced" in str(exc)


def _partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists (missing topics are left out)."""
    counts: dict[str, int] = {}
    for info in admin.describe_topics(topics):
        if info.get("error_code", 0) == 0 and info.get("partitions"):
            counts[info["name"]] = len(info["partitions"])
    return counts


def _print_error(message: str) -> None:
    """Start-up and fatal errors also go to stderr in plain words (messages carry no PHI)."""
    import sys  # noqa: PLC0415 - only on the error path

    print(f"her2-consumer: {message}", file=sys.stderr)


def main(args: argparse.Namespace | None = None) -> int:
    """`her2-consumer run`: settings from the environment, metrics over HTTP, the loop."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from consumer.rules import load_ruleset  # noqa: PLC0415

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        configure_logging("INFO")
        log.error("configuration error", error_type=type(exc).__name__)
        _print_error(f"configuration error: {exc}")
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        ruleset = load_ruleset()
    except RuleSetError as exc:
        log.error("rule set invalid", error_type=type(exc).__name__)
        _print_error(f"rule set invalid: {exc}")
        return EXIT_CONFIG
    metrics = Metrics(CollectorRegistry(), ruleset.version)
    # /healthz tolerates the longest wait the loop can make without beating (a publish).
    health = Health(stall_after=max(60.0, settings.tuning.delivery_timeout_ms / 1000 + 35.0))
    service = Service(settings, Pipeline(ruleset), metrics, health=health)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "signal received; finishing the batch and stopping", signal=signal.Signals(signum).name
        )
        service.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            http_server = start_http_server(settings.http_port, metrics.registry, health)
        except OSError as exc:
            log.error(
                "metrics HTTP server failed to start",
                port=settings.http_port,
                error_type=type(exc).__name__,
            )
            _print_error(f"cannot serve metrics on HER2_HTTP_PORT={settings.http_port}")
            return EXIT_CONFIG
        log.info("serving /metrics, /healthz and /readyz", port=http_server.server_port)
        try:
            return service.run()
        finally:
            http_server.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
