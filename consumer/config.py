"""Settings of the service, built once at start-up from an environment mapping.

`Settings.from_env(os.environ)` reads every variable of `ENV_VARS` (name, default, meaning),
validates them together and returns frozen dataclasses. A bad value raises ConfigError whose
message names the variable and never echoes a secret. Secrets (the SASL password, registry
credentials) are masked in `repr`, so printing or logging a Settings object is safe.

The pinned names come from docs/design.md ("Configuration"); the others are ours and are
listed in `ENV_VARS` with their defaults (docs/operations.md's settings table is generated from
it; a test holds the two together).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import fastavro

from consumer.avro.registry import ErrorHook, RegistryAccess, SchemaRegistryClient
from consumer.avro.wire import INPUT_FORMATS, OUTPUT_FORMATS
from consumer.clinical.validate import DEFAULT_MAX_EVENT_TIME_SKEW
from consumer.errors import ConfigError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.state.backends import BACKENDS, DISK

AT_LEAST_ONCE: Final = "at_least_once"
EXACTLY_ONCE: Final = "exactly_once"
GUARANTEES: Final = (AT_LEAST_ONCE, EXACTLY_ONCE)
KAFKA_PYTHON: Final = "kafka-python"
CONFLUENT: Final = "confluent"
KAFKA_CLIENTS: Final = (KAFKA_PYTHON, CONFLUENT)

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# the mechanisms the service can authenticate with: each takes KAFKA_SASL_USERNAME and
# KAFKA_SASL_PASSWORD. Kafka's other two need settings the service does not have, and are refused
# by name rather than left to fail at the broker as a misleading bad-password error.
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_UNSUPPORTED: Final = {
    "GSSAPI": "no Kerberos settings",
    "OAUTHBEARER": "no OAuth token provider",
}
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MASK: Final = "***"

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_MAX_PORT = 65535
_MAX_SKEW_S = 10 * 366 * 86400  # ten years: beyond that the check would mean nothing
# the defaults `run` and `evaluate` share (EvaluationSettings, Settings, ENV_VARS)
_RETENTION_DAYS: Final = 0  # keep every accession: forgetting a sample can change findings
_SKEW_S: Final = int(DEFAULT_MAX_EVENT_TIME_SKEW.total_seconds())  # the validator's, 24 h
# HER2_REQUEST_TIMEOUT_MS must suit both transports. kafka-python's consumers want it above
# their fetch_max_wait_ms (500, left at its default) and below connections_max_idle_ms (540,000);
# librdkafka takes it as socket.timeout.ms (at most 300,000; confluent.py's translation)
_MIN_REQUEST_TIMEOUT_MS = 1000
_MAX_REQUEST_TIMEOUT_MS = 300_000
# The longest wait between two connection attempts to a broker that went away: the Java
# client's default (reconnect.backoff.max.ms). kafka-python's is 30 s (librdkafka's 10 s), and
# with it the service's first commit came 17-67 s after a restarted broker was back
# (docs/fault-report.md); one attempt a second per broker is no load on a broker that is down.
RECONNECT_BACKOFF_MAX_MS: Final = 1000
# (variable, default, meaning). The default is the text the variable would hold; "" = unset.
ENV_VARS: Final[tuple[tuple[str, str, str], ...]] = (
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "brokers, comma-separated host:port"),
    ("HER2_GROUP_ID", "her2-alert-consumer", "consumer group"),
    ("HER2_INPUT_TOPIC", "lab.pathology.results.v1", "input topic (never auto-created)"),
    ("HER2_DLQ_TOPIC", "lab.pathology.results.v1.dlq", "dead-letter topic"),
    ("HER2_CLASSIFICATION_TOPIC", "her2.classifications.v1", "classification topic"),
    ("HER2_HISTORY_TOPIC", "her2.patient-history.v2", "compacted patient-history changelog"),
    ("HER2_RETEST_TOPIC", "her2.alerts.retest.v2", "alerts of type RETEST"),
    (
        "HER2_DOCUMENTATION_TOPIC",
        "her2.alerts.documentation.v2",
        "alerts of type DOCUMENTATION_GAP",
    ),
    ("HER2_TDXD_TOPIC", "her2.alerts.tdxd-eligibility.v2", "alerts of type TDXD_ELIGIBILITY"),
    (
        "HER2_THERAPY_CAUTION_TOPIC",
        "her2.alerts.therapy-caution.v2",
        "alerts of type THERAPY_CAUTION",
    ),
    ("HER2_INPUT_FORMAT", "auto", "auto | confluent | single-object | raw"),
    ("HER2_OUTPUT_FORMAT", "single-object", "confluent | single-object | raw"),
    ("HER2_SCHEMA_REGISTRY_URL", "", "Confluent-compatible registry (may carry user:password@)"),
    ("HER2_SCHEMA_REGISTRY_TIMEOUT_SECONDS", "10", "HTTP timeout of registry calls"),
    ("HER2_SCHEMA_REGISTRY_CA_FILE", "", "CA bundle (PEM) that signed the registry's certificate"),
    ("HER2_SCHEMA_REGISTRY_CERT_FILE", "", "client certificate (PEM) for registry mTLS"),
    ("HER2_SCHEMA_REGISTRY_KEY_FILE", "", "client key (PEM) for registry mTLS"),
    ("HER2_SCHEMA_REGISTRY_KEY_PASSWORD", "", "password of an encrypted client key; never printed"),
    (
        "HER2_SCHEMA_REGISTRY_KEY_PASSWORD_FILE",
        "",
        "file holding HER2_SCHEMA_REGISTRY_KEY_PASSWORD (a mounted Secret), instead of it",
    ),
    ("HER2_SCHEMA_REGISTRY_USERNAME", "", "registry basic-auth user (or API key)"),
    ("HER2_SCHEMA_REGISTRY_PASSWORD", "", "registry basic-auth password; never printed"),
    (
        "HER2_SCHEMA_REGISTRY_PASSWORD_FILE",
        "",
        "file holding HER2_SCHEMA_REGISTRY_PASSWORD (a mounted Secret), instead of it",
    ),
    (
        "HER2_RAW_WRITER_SCHEMA",
        "",
        "path of the .avsc writer schema of `raw` input (UTF-8; a PathologyResult record with "
        "every field the service's schema has no default for)",
    ),
    ("HER2_PROCESSING_GUARANTEE", AT_LEAST_ONCE, "at_least_once | exactly_once"),
    (
        "HER2_KAFKA_CLIENT",
        KAFKA_PYTHON,
        "kafka-python | confluent (librdkafka; needs the `confluent` extra)",
    ),
    ("HER2_HTTP_PORT", "8000", "port of the metrics/health HTTP server (0 = any free port)"),
    (
        "HER2_HISTORY_RETENTION_DAYS",
        str(_RETENTION_DAYS),
        "drop accessions reported longer ago than this, except cancelled ones and POSITIVE "
        "samples; one with published report findings keeps only them (0 = keep forever; a "
        "dropped sample can change findings)",
    ),
    ("HER2_HISTORY_STORE", DISK, "disk (one sqlite file per partition) | memory"),
    (
        "HER2_HISTORY_CACHE_PATIENTS",
        "6144",
        "patients held decoded across the owned partitions (at most 1,024 per partition)",
    ),
    (
        "HER2_STATE_DIR",
        "",
        "directory of the disk history store, not tmpfs (unset = a private temp directory)",
    ),
    ("HER2_LOG_LEVEL", "INFO", "DEBUG | INFO | WARNING | ERROR | CRITICAL"),
    ("HER2_MAX_POLL_RECORDS", "500", "records per poll batch (one commit per batch)"),
    (
        "HER2_PUBLISH_RETRIES",
        "3",
        "re-sends of unacknowledged outputs before stopping (at_least_once; exactly_once aborts "
        "and stops at the first)",
    ),
    (
        "HER2_INSTANCE_ID",
        "",
        "static membership id and transactional id suffix: unique per process, stable across "
        "its restarts (unset: no static membership; exactly_once claims a slot N on the host, "
        "id <host>-<tag>-<N>)",
    ),
    (
        "HER2_MAX_EVENT_TIME_SKEW_SECONDS",
        str(_SKEW_S),
        "an event_time further ahead of the clock is dead-lettered (event-time-in-future)",
    ),
    ("HER2_POLL_TIMEOUT_MS", "1000", "longest wait in one poll (bounds shutdown latency)"),
    (
        "HER2_SESSION_TIMEOUT_MS",
        "45000",
        "group session timeout (at most HER2_MAX_POLL_INTERVAL_MS)",
    ),
    (
        "HER2_HEARTBEAT_INTERVAL_MS",
        "3000",
        "group heartbeat interval (below HER2_SESSION_TIMEOUT_MS)",
    ),
    ("HER2_MAX_POLL_INTERVAL_MS", "300000", "longest time between polls before eviction"),
    ("HER2_PRODUCER_LINGER_MS", "5", "producer linger (batching)"),
    ("HER2_PRODUCER_BATCH_SIZE", "131072", "producer batch size in bytes"),
    (
        "HER2_GC_GEN0_THRESHOLD",
        "50000",
        "allocations between young garbage collections (Python's default 700 costs about a "
        "fifth of the service's CPU here; 0 = the interpreter's default)",
    ),
    (
        "HER2_REQUEST_TIMEOUT_MS",
        "30000",
        "Kafka request timeout (1000-300000: librdkafka's socket.timeout.ms limit)",
    ),
    ("HER2_DELIVERY_TIMEOUT_MS", "120000", "producer delivery timeout (per send)"),
    (
        "HER2_TRANSACTION_TIMEOUT_MS",
        "60000",
        "transaction timeout (exactly_once; above HER2_PRODUCER_LINGER_MS, at most the broker's "
        "transaction.max.timeout.ms, 15 minutes by default: above it start-up exits 2)",
    ),
    ("HER2_RESTORE_TIMEOUT_SECONDS", "120", "longest history restore before failing"),
    (
        "HER2_MAX_UNREADABLE_CHANGELOG_SHARE",
        "0",
        "share (0-1) of a partition's changelog records a restore may skip as unreadable before "
        "the partition is held back and /readyz refuses",
    ),
    (
        "HER2_CLOCK_SKEW_TOLERANCE_SECONDS",
        "60",
        "warn (log, her2_consumer_clock_offset_seconds, alert Her2ConsumerClockSkew) when the "
        "host clock differs from the Kafka cluster's by more at start-up (0 = no check)",
    ),
    (
        "HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS",
        "100",
        "stop when a partition dead-letters this many processing-error records in a row (a bad "
        "deployment must not drain the input into the DLQ; 0 = no limit)",
    ),
    ("HER2_LAG_REFRESH_SECONDS", "5", "how often lag gauges are refreshed"),
    (
        "HER2_TOPIC_REPLICATION_FACTOR",
        "-1",
        "replication of topics created at start (-1 = broker default)",
    ),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    (
        "KAFKA_SASL_MECHANISM",
        "",
        "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (GSSAPI and OAUTHBEARER are not supported)",
    ),
    ("KAFKA_SASL_USERNAME", "", "SASL user (PLAIN, SCRAM)"),
    ("KAFKA_SASL_PASSWORD", "", "SASL password (PLAIN, SCRAM); never printed"),
    (
        "KAFKA_SASL_PASSWORD_FILE",
        "",
        "file holding KAFKA_SASL_PASSWORD (a mounted Secret), instead of it",
    ),
    ("KAFKA_SSL_CAFILE", "", "CA bundle (PEM)"),
    ("KAFKA_SSL_CERTFILE", "", "client certificate (PEM)"),
    ("KAFKA_SSL_KEYFILE", "", "client key (PEM)"),
    ("KAFKA_SSL_CHECK_HOSTNAME", "true", "verify the broker's host name"),
    (
        "HER2_TEST_CRASH_BEFORE_COMMIT",
        "",
        "TEST ONLY: SIGKILL itself after batch N is acknowledged",
    ),
)
_DEFAULTS: Final = {name: default for name, default, _ in ENV_VARS}


@dataclass(frozen=True)
class Topics:
    """Names of every topic the service reads or writes."""

    input: str
    dlq: str
    classification: str
    history: str
    retest: str
    documentation: str
    tdxd: str
    therapy_caution: str

    def alert_topic(self, alert_type: str) -> str:
        """The topic of alerts of `alert_type` (one topic per type, design.md); KeyError for
        another type."""
        return self._alert_topics[alert_type]

    @cached_property
    def _alert_topics(self) -> Mapping[str, str]:
        """Alert type -> topic, built at the first alert instead of at each (alert_topic runs
        once per published alert). Cached in the instance's __dict__, not a field: equality,
        hash and repr stay the fields' own, and `dataclasses.replace` builds a new mapping."""
        return {
            "RETEST": self.retest,
            "DOCUMENTATION_GAP": self.documentation,
            "TDXD_ELIGIBILITY": self.tdxd,
            "THERAPY_CAUTION": self.therapy_caution,
        }

    def alert_topics(self) -> tuple[str, ...]:
        """The alert topics, de-duplicated, in alert-type order."""
        return tuple(
            dict.fromkeys((self.retest, self.documentation, self.tdxd, self.therapy_caution))
        )

    def outputs(self) -> tuple[str, ...]:
        """Every topic the service writes, de-duplicated."""
        return tuple(
            dict.fromkeys((self.classification, *self.alert_topics(), self.dlq, self.history))
        )


@dataclass(frozen=True)
class KafkaSecurity:
    """Kafka client security pass-through; the password never appears in repr."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def __repr__(self) -> str:
        """Fields, with the password masked."""
        password = MASK if self.sasl_password else None
        return (
            f"KafkaSecurity(protocol={self.protocol!r}, sasl_mechanism={self.sasl_mechanism!r}, "
            f"sasl_username={self.sasl_username!r}, sasl_password={password!r}, "
            f"ssl_cafile={self.ssl_cafile!r}, ssl_certfile={self.ssl_certfile!r}, "
            f"ssl_keyfile={self.ssl_keyfile!r}, ssl_check_hostname={self.ssl_check_hostname!r})"
        )

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments (only those that are set)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
        return kwargs


@dataclass(frozen=True)
class Tuning:
    """Client timings and sizes: defaults suit production; tests shorten the timeouts."""

    poll_timeout_ms: int = 1000
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    linger_ms: int = 5
    batch_size: int = 131072
    request_timeout_ms: int = 30000
    delivery_timeout_ms: int = 120000
    transaction_timeout_ms: int = 60000
    restore_timeout_s: float = 120.0
    lag_refresh_s: float = 5.0
    replication_factor: int = -1
    registry_timeout_s: float = 10.0
    gc_gen0_threshold: int = 50000  # 0: the interpreter's default


@dataclass(frozen=True)
class EvaluationSettings:
    """The settings that decide what a patient's history holds: how long a reported accession
    is kept (HER2_HISTORY_RETENTION_DAYS) and how far ahead of the clock an event_time may be
    (HER2_MAX_EVENT_TIME_SKEW_SECONDS). `run` applies them, and `evaluate` applies the same
    ones, read by the same code, since it must evaluate exactly as the service does."""

    history_retention_days: int = _RETENTION_DAYS  # 0: keep every accession
    event_time_skew: dt.timedelta = dt.timedelta(seconds=_SKEW_S)

    @property
    def history_retention(self) -> dt.timedelta | None:
        """The retention of a HistoryStore (None: keep forever, 0 days)."""
        days = self.history_retention_days
        return dt.timedelta(days=days) if days > 0 else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EvaluationSettings:
        """These two variables, read and checked as Settings.from_env reads them (same defaults,
        same ConfigError); nothing else is read, so an offline run needs no Kafka settings."""
        env = _Env(environ)
        return cls(
            history_retention_days=_retention_days(env), event_time_skew=_event_time_skew(env)
        )


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run, validated."""

    bootstrap_servers: str = "localhost:9092"
    group_id: str = "her2-alert-consumer"
    topics: Topics = field(
        default_factory=lambda: Topics(
            input=_DEFAULTS["HER2_INPUT_TOPIC"],
            dlq=_DEFAULTS["HER2_DLQ_TOPIC"],
            classification=_DEFAULTS["HER2_CLASSIFICATION_TOPIC"],
            history=_DEFAULTS["HER2_HISTORY_TOPIC"],
            retest=_DEFAULTS["HER2_RETEST_TOPIC"],
            documentation=_DEFAULTS["HER2_DOCUMENTATION_TOPIC"],
            tdxd=_DEFAULTS["HER2_TDXD_TOPIC"],
            therapy_caution=_DEFAULTS["HER2_THERAPY_CAUTION_TOPIC"],
        )
    )
    input_format: str = "auto"
    output_format: str = "single-object"
    schema_registry_url: str | None = field(default=None, repr=False)
    registry_access: RegistryAccess = field(default_factory=RegistryAccess)
    raw_writer_schema: Path | None = None
    processing_guarantee: str = AT_LEAST_ONCE
    kafka_client: str = KAFKA_PYTHON
    http_port: int = 8000
    history_retention_days: int = _RETENTION_DAYS
    history_store: str = DISK
    history_cache_patients: int = 6144
    state_dir: Path | None = None  # None: a private directory under the system temp dir
    log_level: str = "INFO"
    max_poll_records: int = 500
    publish_retries: int = 3
    instance_id: str | None = None
    event_time_skew: dt.timedelta = dt.timedelta(seconds=_SKEW_S)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    tuning: Tuning = field(default_factory=Tuning)
    test_crash_before_commit: int | None = None
    max_unreadable_changelog_share: float = 0.0  # above it a restored partition is held back
    clock_skew_tolerance_s: int = 60  # 0: the start-up clock check is off
    max_consecutive_processing_errors: int = 100  # 0: no limit

    def __repr__(self) -> str:
        """Fields, with registry credentials masked."""
        shown = ", ".join(
            f"{name}={value!r}" for name, value in self.summary(with_topics=False).items()
        )
        return (
            f"Settings({shown}, topics={self.topics!r}, security={self.security!r}, "
            f"registry_access={self.registry_access!r}, tuning={self.tuning!r})"
        )

    @property
    def evaluation(self) -> EvaluationSettings:
        """The settings `evaluate` shares with the service (retention, event-time skew)."""
        return EvaluationSettings(self.history_retention_days, self.event_time_skew)

    @property
    def exactly_once(self) -> bool:
        """Whether Kafka transactions are used."""
        return self.processing_guarantee == EXACTLY_ONCE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every variable of ENV_VARS; raise ConfigError naming a bad one."""
        env = _Env(environ)
        topics = Topics(
            input=env.topic("HER2_INPUT_TOPIC"),
            dlq=env.topic("HER2_DLQ_TOPIC"),
            classification=env.topic("HER2_CLASSIFICATION_TOPIC"),
            history=env.topic("HER2_HISTORY_TOPIC"),
            retest=env.topic("HER2_RETEST_TOPIC"),
            documentation=env.topic("HER2_DOCUMENTATION_TOPIC"),
            tdxd=env.topic("HER2_TDXD_TOPIC"),
            therapy_caution=env.topic("HER2_THERAPY_CAUTION_TOPIC"),
        )
        _check_topics(topics)
        input_format = env.choice("HER2_INPUT_FORMAT", INPUT_FORMATS)
        output_format = env.choice("HER2_OUTPUT_FORMAT", OUTPUT_FORMATS)
        registry_url = env.optional("HER2_SCHEMA_REGISTRY_URL")
        if registry_url is not None:
            _check_url(registry_url)
        if output_format == "confluent" and registry_url is None:
            raise ConfigError(
                "HER2_SCHEMA_REGISTRY_URL must be set when HER2_OUTPUT_FORMAT is confluent"
            )
        if input_format == "confluent" and registry_url is None:
            raise ConfigError(
                "HER2_SCHEMA_REGISTRY_URL must be set when HER2_INPUT_FORMAT is confluent"
            )
        registry_access = _registry_access(env, registry_url)
        raw_writer = env.optional("HER2_RAW_WRITER_SCHEMA")
        if input_format == "raw" and raw_writer is None:
            raise ConfigError(
                "HER2_RAW_WRITER_SCHEMA must name the writer schema (.avsc) when "
                "HER2_INPUT_FORMAT is raw"
            )
        raw_path = Path(raw_writer) if raw_writer is not None else None
        if raw_path is not None:
            load_writer_schema(raw_path)
        instance_id = env.optional("HER2_INSTANCE_ID")
        if instance_id is not None and (
            not _TOPIC_NAME.match(instance_id) or instance_id in (".", "..")
        ):  # Kafka's JoinGroupRequest.validateGroupInstanceId refuses "." and ".." too
            raise ConfigError(
                "HER2_INSTANCE_ID must be at most 249 characters, each a letter, digit, '.', '_' "
                "or '-', and not '.' or '..' (a Kafka group.instance.id)"
            )
        group_id = env.text("HER2_GROUP_ID")
        guarantee = env.choice("HER2_PROCESSING_GUARANTEE", GUARANTEES)
        kafka_client = env.choice("HER2_KAFKA_CLIENT", KAFKA_CLIENTS)
        if kafka_client == CONFLUENT and importlib.util.find_spec("confluent_kafka") is None:
            raise ConfigError(
                "HER2_KAFKA_CLIENT=confluent needs the confluent-kafka package, which is not "
                "installed (pip install 'her2-alert-consumer[confluent]'), or set "
                "HER2_KAFKA_CLIENT=kafka-python"
            )
        tuning = Tuning(
            poll_timeout_ms=env.integer("HER2_POLL_TIMEOUT_MS", 0, 60_000),
            session_timeout_ms=env.integer("HER2_SESSION_TIMEOUT_MS", 1000, 3_600_000),
            heartbeat_interval_ms=env.integer("HER2_HEARTBEAT_INTERVAL_MS", 100, 3_600_000),
            max_poll_interval_ms=env.integer("HER2_MAX_POLL_INTERVAL_MS", 1000, 86_400_000),
            linger_ms=env.integer("HER2_PRODUCER_LINGER_MS", 0, 60_000),
            batch_size=env.integer("HER2_PRODUCER_BATCH_SIZE", 1024, 64 * 1024 * 1024),
            request_timeout_ms=env.integer(
                "HER2_REQUEST_TIMEOUT_MS", _MIN_REQUEST_TIMEOUT_MS, _MAX_REQUEST_TIMEOUT_MS
            ),
            delivery_timeout_ms=env.integer("HER2_DELIVERY_TIMEOUT_MS", 1000, 86_400_000),
            transaction_timeout_ms=env.integer("HER2_TRANSACTION_TIMEOUT_MS", 1000, 3_600_000),
            restore_timeout_s=env.number("HER2_RESTORE_TIMEOUT_SECONDS", 0.1, 86_400),
            lag_refresh_s=env.number("HER2_LAG_REFRESH_SECONDS", 0.0, 3600),
            replication_factor=env.integer("HER2_TOPIC_REPLICATION_FACTOR", -1, 32767),
            registry_timeout_s=env.number("HER2_SCHEMA_REGISTRY_TIMEOUT_SECONDS", 0.1, 600),
            gc_gen0_threshold=env.integer("HER2_GC_GEN0_THRESHOLD", 0, 10_000_000),
        )
        if tuning.replication_factor == 0:
            raise ConfigError("HER2_TOPIC_REPLICATION_FACTOR must be -1 (broker default) or >= 1")
        _check_timings(tuning, exactly_once=guarantee == EXACTLY_ONCE)
        if tuning.restore_timeout_s * 1000 >= tuning.max_poll_interval_ms:
            raise ConfigError(
                "HER2_RESTORE_TIMEOUT_SECONDS must be shorter than HER2_MAX_POLL_INTERVAL_MS "
                "(the restore runs between two polls)"
            )
        history_store = env.choice("HER2_HISTORY_STORE", BACKENDS)
        state_dir = env.optional("HER2_STATE_DIR")
        state_path = None if state_dir is None else Path(state_dir)
        if state_path is not None and history_store == DISK:
            _check_state_dir(state_path)
        crash = env.optional("HER2_TEST_CRASH_BEFORE_COMMIT")
        return cls(
            bootstrap_servers=_bootstrap(env.text("KAFKA_BOOTSTRAP_SERVERS")),
            group_id=group_id,
            topics=topics,
            input_format=input_format,
            output_format=output_format,
            schema_registry_url=registry_url,
            registry_access=registry_access,
            raw_writer_schema=raw_path,
            processing_guarantee=guarantee,
            kafka_client=kafka_client,
            http_port=env.integer("HER2_HTTP_PORT", 0, _MAX_PORT),
            history_retention_days=_retention_days(env),
            history_store=history_store,
            history_cache_patients=env.integer("HER2_HISTORY_CACHE_PATIENTS", 0, 10_000_000),
            state_dir=state_path,
            log_level=env.choice("HER2_LOG_LEVEL", LOG_LEVELS, upper=True),
            max_poll_records=env.integer("HER2_MAX_POLL_RECORDS", 1, 1_000_000),
            publish_retries=env.integer("HER2_PUBLISH_RETRIES", 0, 100),
            instance_id=instance_id,
            event_time_skew=_event_time_skew(env),
            security=_security(env),
            tuning=tuning,
            test_crash_before_commit=(
                None if crash is None else env.integer("HER2_TEST_CRASH_BEFORE_COMMIT", 1, 10**9)
            ),
            max_unreadable_changelog_share=env.number(
                "HER2_MAX_UNREADABLE_CHANGELOG_SHARE", 0.0, 1.0
            ),
            clock_skew_tolerance_s=env.integer("HER2_CLOCK_SKEW_TOLERANCE_SECONDS", 0, 86400),
            max_consecutive_processing_errors=env.integer(
                "HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS", 0, 10**9
            ),
        )

    def kafka_common(self) -> dict[str, Any]:
        """Keyword arguments shared by KafkaConsumer, KafkaProducer and KafkaAdminClient."""
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "request_timeout_ms": self.tuning.request_timeout_ms,
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            **self.security.client_kwargs(),
        }

    def transactional_id(self, default_id: str) -> str:
        """The producer's transactional id: `<group>-<instance id>`, the instance id being
        HER2_INSTANCE_ID or else `default_id`.

        It must be unique per process and stable across the process's restarts (issue 15,
        item 5): the service passes the id of the host slot it claimed (consumer/instance.py).
        """
        return f"{self.group_id}-{self.instance_id or default_id}"

    def registry_client(self, on_error: ErrorHook | None = None) -> SchemaRegistryClient | None:
        """The schema registry client these settings describe (None without a registry URL);
        `on_error(operation, kind)` hears of registry failures (the service counts them)."""
        if self.schema_registry_url is None:
            return None
        return SchemaRegistryClient(
            self.schema_registry_url,
            timeout=self.tuning.registry_timeout_s,
            access=self.registry_access,
            on_error=on_error,
        )

    def registry_display(self) -> str | None:
        """The registry URL without credentials (for logs)."""
        if self.schema_registry_url is None:
            return None
        parts = urllib.parse.urlsplit(self.schema_registry_url)
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def summary(self, *, with_topics: bool = True) -> dict[str, Any]:
        """Non-secret settings for the start-up log line and repr."""
        shown: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group_id,
            "input_format": self.input_format,
            "output_format": self.output_format,
            "schema_registry_url": self.registry_display(),
            "raw_writer_schema": str(self.raw_writer_schema) if self.raw_writer_schema else None,
            "processing_guarantee": self.processing_guarantee,
            "kafka_client": self.kafka_client,
            "http_port": self.http_port,
            "history_retention_days": self.history_retention_days,
            "history_store": self.history_store,
            "history_cache_patients": self.history_cache_patients,
            "state_dir": str(self.state_dir) if self.state_dir else None,
            "log_level": self.log_level,
            "max_poll_records": self.max_poll_records,
            "publish_retries": self.publish_retries,
            "instance_id": self.instance_id,
            "max_event_time_skew_seconds": int(self.event_time_skew.total_seconds()),
            "test_crash_before_commit": self.test_crash_before_commit,
            "max_unreadable_changelog_share": self.max_unreadable_changelog_share,
            "clock_skew_tolerance_seconds": self.clock_skew_tolerance_s,
            "max_consecutive_processing_errors": self.max_consecutive_processing_errors,
        }
        if with_topics:
            shown["input_topic"] = self.topics.input
        return shown


def load_writer_schema(path: Path) -> Any:
    """Read and parse the .avsc at `path`, a writer schema whose records can be read into the
    service's (PathologyResult); ConfigError naming HER2_RAW_WRITER_SCHEMA if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"HER2_RAW_WRITER_SCHEMA: cannot read {path} ({type(exc).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"HER2_RAW_WRITER_SCHEMA: {path} is not UTF-8 text") from None
    try:
        schema = fastavro.parse_schema(json.loads(text))
    except Exception as exc:  # json and fastavro raise several types; each means unusable
        failure = type(exc).__name__
    else:
        reader = parsed_schema(PATHOLOGY_RESULT)
        problem = _unresolvable(schema, reader)
        if problem is None:
            return schema
        raise ConfigError(
            f"HER2_RAW_WRITER_SCHEMA: {path} cannot be resolved to the reader schema "
            f"{reader['name']}: {problem}"
        )
    raise ConfigError(f"HER2_RAW_WRITER_SCHEMA: {path} is not an Avro schema ({failure})")


def _unresolvable(writer: Any, reader: Mapping[str, Any]) -> str | None:
    """Why no record of `writer` can be resolved to the record schema `reader`, or None.

    The part of fastavro's resolution that fails every record, whatever it holds (fastavro
    _read_py.py: match_schemas, read_record): the writer must be a record (raw input is records,
    not a union's branches) whose unqualified name is the reader's, or whose name is one of the
    reader's aliases; and every reader field without a default must have a writer field of its
    name or of one of its aliases. Field types are left to fastavro, which resolves them record
    by record (a union's branch may resolve where another does not)."""
    if not isinstance(writer, dict) or writer.get("type") != "record":
        return "it is not a record schema"
    name, reader_name = writer["name"], reader["name"]
    short = name.rpartition(".")[2]
    aliases = reader.get("aliases", ())
    if short != reader_name.rpartition(".")[2] and name not in aliases and short not in aliases:
        return f"its record is named {name}"
    written = {f["name"] for f in writer["fields"]}
    missing = [
        f["name"]
        for f in reader["fields"]
        if "default" not in f and not written & {f["name"], *f.get("aliases", ())}
    ]
    if missing:
        return f"it lacks {', '.join(missing)} (fields the reader has no default for)"
    return None


class _Env:
    """Typed reads of an environment mapping; errors name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None or not value.strip():
            return _DEFAULTS[name]
        return value.strip()

    def optional(self, name: str) -> str | None:
        value = self.raw(name)
        return value or None

    def secret(self, name: str) -> str | None:
        """`name`, or the content of the file `name`_FILE names (a Secret mounted as a file,
        which Kubernetes' hardening guides prefer to environment variables), stripped as a
        variable's value is; errors name the variables, never the content."""
        value, path = self.optional(name), self.optional(f"{name}_FILE")
        if path is None:
            return value
        if value is not None:
            raise ConfigError(f"{name} and {name}_FILE are both set: use one")
        try:
            content = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE: cannot read the file ({type(exc).__name__})") from None
        if not content:
            raise ConfigError(f"{name}_FILE: the file is empty")
        return content

    def text(self, name: str) -> str:
        value = self.raw(name)
        if not value:
            raise ConfigError(f"{name} must not be empty")
        return value

    def topic(self, name: str) -> str:
        value = self.text(name)
        if not _TOPIC_NAME.match(value) or value in (".", ".."):
            raise ConfigError(
                f"{name} is not a legal Kafka topic name (letters, digits, '.', '_', '-'; "
                "at most 249 characters)"
            )
        return value

    def choice(self, name: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
        value = self.raw(name)
        if upper:
            value = value.upper()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        text = self.raw(name)
        expected = f"{name} must be an integer between {low} and {high}"
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigError(expected) from None
        if not low <= value <= high:
            raise ConfigError(expected)
        return value

    def number(self, name: str, low: float, high: float) -> float:
        text = self.raw(name)
        expected = f"{name} must be a number between {low:g} and {high:g}"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(expected) from None
        if not low <= value <= high:  # also refuses nan
            raise ConfigError(expected)
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name).lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false")


def _retention_days(env: _Env) -> int:
    """HER2_HISTORY_RETENTION_DAYS (0: keep forever)."""
    return env.integer("HER2_HISTORY_RETENTION_DAYS", 0, 100_000)


def _event_time_skew(env: _Env) -> dt.timedelta:
    """HER2_MAX_EVENT_TIME_SKEW_SECONDS."""
    return dt.timedelta(seconds=env.integer("HER2_MAX_EVENT_TIME_SKEW_SECONDS", 1, _MAX_SKEW_S))


def _bootstrap(value: str) -> str:
    """Validate `host:port[,host:port...]` (KAFKA_BOOTSTRAP_SERVERS)."""
    servers = [s.strip() for s in value.split(",")]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= _MAX_PORT:
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS must be a comma-separated list of host:port")
    return ",".join(servers)


def _check_timings(tuning: Tuning, *, exactly_once: bool) -> None:
    """The Kafka clients' own cross-checks of these timings, as the service configures them
    (consumer/runtime/kafka/clients.py, confluent.py): a value either client would refuse when
    building it is a ConfigError naming both variables. Both apply whichever HER2_KAFKA_CLIENT
    is set, as the single ranges do."""
    if tuning.heartbeat_interval_ms >= tuning.session_timeout_ms:  # kafka-python's Heartbeat
        raise ConfigError("HER2_HEARTBEAT_INTERVAL_MS must be lower than HER2_SESSION_TIMEOUT_MS")
    if tuning.session_timeout_ms > tuning.max_poll_interval_ms:  # librdkafka's consumer
        raise ConfigError(
            "HER2_SESSION_TIMEOUT_MS must not exceed HER2_MAX_POLL_INTERVAL_MS (librdkafka "
            "refuses a session timeout above the poll interval)"
        )
    # librdkafka's producer: under exactly-once the delivery timeout (message.timeout.ms) is
    # capped at the transaction timeout (confluent.py) and must stay above linger.ms
    if exactly_once and tuning.linger_ms >= tuning.transaction_timeout_ms:
        raise ConfigError(
            "HER2_PRODUCER_LINGER_MS must be lower than HER2_TRANSACTION_TIMEOUT_MS under "
            "exactly_once (librdkafka's delivery timeout is capped at the transaction timeout "
            "and must exceed the linger)"
        )


def _check_state_dir(path: Path) -> None:
    """HER2_STATE_DIR must be (or be creatable as) a directory this process can write files in:
    tried by creating one, since permission bits do not tell about read-only mounts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"HER2_STATE_DIR: {path} is not a writable directory ({type(exc).__name__})"
        ) from None


def _check_url(url: str) -> None:
    """HER2_SCHEMA_REGISTRY_URL must be http(s) with a host (the message never shows the URL)."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError("HER2_SCHEMA_REGISTRY_URL must be an http(s) URL with a host")


_REGISTRY_FILES: Final = (
    "HER2_SCHEMA_REGISTRY_CA_FILE",
    "HER2_SCHEMA_REGISTRY_CERT_FILE",
    "HER2_SCHEMA_REGISTRY_KEY_FILE",
)


def _registry_access(env: _Env, url: str | None) -> RegistryAccess:
    """HER2_SCHEMA_REGISTRY_* TLS files and credentials, checked for consistency (messages name
    variables, never values)."""
    values = {
        name: env.optional(name) for name in (*_REGISTRY_FILES, "HER2_SCHEMA_REGISTRY_USERNAME")
    }
    for name in ("HER2_SCHEMA_REGISTRY_KEY_PASSWORD", "HER2_SCHEMA_REGISTRY_PASSWORD"):
        values[name] = env.secret(name)
    if url is None:
        for name, value in values.items():
            if value is not None:
                raise ConfigError(f"{name} is set but HER2_SCHEMA_REGISTRY_URL is not")
        return RegistryAccess()
    parts = urllib.parse.urlsplit(url)
    for name in _REGISTRY_FILES:
        value = values[name]
        if value is None:
            continue
        if parts.scheme != "https":
            raise ConfigError(f"{name} is set but HER2_SCHEMA_REGISTRY_URL is not https")
        if not Path(value).is_file():
            raise ConfigError(f"{name}: no such file")
    cert, key = values["HER2_SCHEMA_REGISTRY_CERT_FILE"], values["HER2_SCHEMA_REGISTRY_KEY_FILE"]
    if (cert is None) != (key is None):
        missing = (
            "HER2_SCHEMA_REGISTRY_KEY_FILE" if key is None else "HER2_SCHEMA_REGISTRY_CERT_FILE"
        )
        raise ConfigError(f"{missing} must be set too (client certificate and key go together)")
    if values["HER2_SCHEMA_REGISTRY_KEY_PASSWORD"] is not None and key is None:
        raise ConfigError(
            "HER2_SCHEMA_REGISTRY_KEY_PASSWORD is set but HER2_SCHEMA_REGISTRY_KEY_FILE is not"
        )
    username = values["HER2_SCHEMA_REGISTRY_USERNAME"]
    password = values["HER2_SCHEMA_REGISTRY_PASSWORD"]
    if (username is None) != (password is None):
        missing = (
            "HER2_SCHEMA_REGISTRY_PASSWORD" if password is None else "HER2_SCHEMA_REGISTRY_USERNAME"
        )
        raise ConfigError(f"{missing} must be set too (registry user and password go together)")
    if username is not None and parts.username is not None:
        raise ConfigError(
            "HER2_SCHEMA_REGISTRY_USERNAME is set and HER2_SCHEMA_REGISTRY_URL carries "
            "credentials too: use one"
        )
    access = RegistryAccess(
        ca_file=values["HER2_SCHEMA_REGISTRY_CA_FILE"],
        cert_file=cert,
        key_file=key,
        key_password=values["HER2_SCHEMA_REGISTRY_KEY_PASSWORD"],
        username=username,
        password=password,
    )
    if access.has_tls_files:
        access.ssl_context()  # a PEM that cannot be loaded fails now, naming the variable
    return access


def _check_topics(topics: Topics) -> None:
    """The input must not be an output, and the changelog and DLQ are topics of their own."""
    outputs = {
        "HER2_DLQ_TOPIC": topics.dlq,
        "HER2_CLASSIFICATION_TOPIC": topics.classification,
        "HER2_HISTORY_TOPIC": topics.history,
        "HER2_RETEST_TOPIC": topics.retest,
        "HER2_DOCUMENTATION_TOPIC": topics.documentation,
        "HER2_TDXD_TOPIC": topics.tdxd,
        "HER2_THERAPY_CAUTION_TOPIC": topics.therapy_caution,
    }
    for name, topic in outputs.items():
        if topic == topics.input:
            raise ConfigError(f"{name} must differ from HER2_INPUT_TOPIC")
    for name in ("HER2_HISTORY_TOPIC", "HER2_DLQ_TOPIC"):
        topic = outputs[name]
        if sum(1 for other in outputs.values() if other == topic) > 1:
            raise ConfigError(f"{name} must not be shared with another output topic")


def _security(env: _Env) -> KafkaSecurity:
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_*, checked for consistency."""
    protocol = env.choice("KAFKA_SECURITY_PROTOCOL", SECURITY_PROTOCOLS, upper=True)
    mechanism = env.optional("KAFKA_SASL_MECHANISM")
    username = env.optional("KAFKA_SASL_USERNAME")
    password = env.secret("KAFKA_SASL_PASSWORD")
    sasl = protocol.startswith("SASL_")
    if mechanism is not None:
        mechanism = mechanism.upper()
        supported = ", ".join(SASL_MECHANISMS)
        if mechanism in _SASL_UNSUPPORTED:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM {mechanism} is not supported (the service has "
                f"{_SASL_UNSUPPORTED[mechanism]}): use one of {supported}"
            )
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"KAFKA_SASL_MECHANISM must be one of {supported}")
        if not sasl:
            raise ConfigError(
                "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is not SASL_PLAINTEXT "
                "or SASL_SSL"
            )
    if sasl:
        if mechanism is None:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM must be set when KAFKA_SECURITY_PROTOCOL is {protocol}"
            )
        if username is None:
            raise ConfigError(f"KAFKA_SASL_USERNAME must be set for SASL {mechanism}")
        if password is None:
            raise ConfigError(f"KAFKA_SASL_PASSWORD must be set for SASL {mechanism}")
    elif username is not None or password is not None:
        name = "KAFKA_SASL_USERNAME" if username is not None else "KAFKA_SASL_PASSWORD"
        raise ConfigError(f"{name} is set but KAFKA_SECURITY_PROTOCOL is not a SASL protocol")
    files = {}
    for name in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
        value = env.optional(name)
        if value is not None:
            if protocol not in ("SSL", "SASL_SSL"):
                raise ConfigError(f"{name} is set but KAFKA_SECURITY_PROTOCOL is {protocol}")
            if not Path(value).is_file():
                raise ConfigError(f"{name}: no such file")
        files[name] = value
    if (files["KAFKA_SSL_CERTFILE"] is None) != (files["KAFKA_SSL_KEYFILE"] is None):
        missing = (
            "KAFKA_SSL_KEYFILE" if files["KAFKA_SSL_KEYFILE"] is None else "KAFKA_SSL_CERTFILE"
        )
        raise ConfigError(f"{missing} must be set too (client certificate and key go together)")
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=files["KAFKA_SSL_CAFILE"],
        ssl_certfile=files["KAFKA_SSL_CERTFILE"],
        ssl_keyfile=files["KAFKA_SSL_KEYFILE"],
        ssl_check_hostname=env.boolean("KAFKA_SSL_CHECK_HOSTNAME"),
    )
