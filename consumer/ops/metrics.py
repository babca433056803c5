"""The Prometheus metric container, built against an injected registry.

Names start with `her2_consumer_`, counters end in `_total`, durations are `_seconds`.
Label values come from closed sets (outcomes, categories, alert codes, DLQ reasons, topic and
partition numbers): never patient or accession identifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from consumer import __version__
from consumer.errors import DLQ_STAGES

# the fast paths whose fallbacks to fastavro are counted (the `codec` label): the output
# encoders (consumer/avro/codec.py) and the changelog parts both ways (consumer/state/store.py)
CODEC_FALLBACKS: Final = ("output", "history_encode", "history_decode")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# up to ten years: a lab that re-publishes historical results (a migration, a back-fill) sends
# events that are months or years old, and those must land in a bucket of their own, not +Inf
_DAY = 86400
_AGE_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    5,
    15,
    60,
    300,
    900,
    3600,
    21600,
    _DAY,
    7 * _DAY,
    30 * _DAY,
    90 * _DAY,
    365 * _DAY,
    2 * 365 * _DAY,
    5 * 365 * _DAY,
    10 * 365 * _DAY,
)


class Metrics:
    """Every metric the service records (the runtime records them; the layers below it through
    the hooks the runtime hands them: the schema registry client's `registry_error`, the
    codecs' `fallback_hook`s)."""

    @classmethod
    def on_new_registry(cls, ruleset_version: str = "") -> Metrics:
        """The container on a CollectorRegistry of its own (the service's, served at /metrics)."""
        return cls(CollectorRegistry(), ruleset_version)

    def __init__(self, registry: CollectorRegistry, ruleset_version: str = "") -> None:
        """Create every metric on `registry`, with the process_* and python_* collectors (the
        default registry's, which the service does not use) and no `_created` series (a
        second series per counter and histogram that dashboards never read)."""
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide
        p = "her2_consumer"
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.events = Counter(
            f"{p}_events",
            "Input records by outcome (processed, dead_lettered).",
            ["outcome"],
            registry=registry,
        )
        self.classifications = Counter(
            f"{p}_classifications",
            "Classifications published by HER2 category.",
            ["category"],
            registry=registry,
        )
        self.alerts = Counter(
            f"{p}_alerts",
            "Alerts published by type, code and status.",
            ["alert_type", "code", "status"],
            registry=registry,
        )
        self.alert_transitions = Counter(
            f"{p}_alert_transitions",
            "Alert records published by transition (opened, updated, "
            "resolved, retracted) and code.",
            ["transition", "code"],
            registry=registry,
        )
        self.open_alerts = Gauge(
            f"{p}_open_alerts",
            "Findings whose latest revision is ACTIVE, in the local history "
            "stores of the assigned partitions.",
            registry=registry,
        )
        self.clock_offset = Gauge(
            f"{p}_clock_offset_seconds",
            "Host clock minus the Kafka cluster's clock, measured "
            "at start-up (the KRaft quorum leader's time); positive: the host is ahead.",
            registry=registry,
        )
        self.clock_skew_tolerance = Gauge(
            f"{p}_clock_skew_tolerance_seconds",
            "HER2_CLOCK_SKEW_TOLERANCE_SECONDS as configured: the "
            "clock offset beyond which the service warns and Her2ConsumerClockSkew fires "
            "(0: the check is off).",
            registry=registry,
        )
        self.history_unwritable_records = Counter(
            f"{p}_history_unwritable_records",
            "Patient-state changelog records larger than a "
            "Kafka request (the service stops without committing).",
            registry=registry,
        )
        self.history_ahead_records = Counter(
            f"{p}_history_ahead_records",
            "Changelog records a restore skipped because they "
            "cover input records past the group's committed offset (processed again instead).",
            registry=registry,
        )
        self.history_unreadable_records = Counter(
            f"{p}_history_unreadable_records",
            "Changelog records that could not be read while restoring history (skipped).",
            registry=registry,
        )
        self.schema_registry_errors = Counter(
            f"{p}_schema_registry_errors",
            "Schema registry calls that failed, by operation "
            "(get-schema, get-reference, register, probe) and kind (unreachable, tls, auth, "
            "server-error, http-error, bad-answer, refused); records waiting on them are retried.",
            ["operation", "kind"],
            registry=registry,
        )
        self.codec_fallbacks = Counter(
            f"{p}_codec_fallbacks",
            "Values a hand-written fast path left to fastavro, the reference (slower, the same "
            "bytes and values), by codec (output, history_encode, history_decode).",
            ["codec"],
            registry=registry,
        )
        # each exported as 0 from the start (a series born at 1 shows no increase), and its
        # labels resolved once: a hook is one call in the fallback branch
        self._fallbacks = {c: self.codec_fallbacks.labels(codec=c) for c in CODEC_FALLBACKS}
        self.dlq = Counter(
            f"{p}_dlq_records",
            "Records sent to the dead-letter topic by stage and reason.",
            ["stage", "reason"],
            registry=registry,
        )
        # every (stage, reason) exported as 0 from the start, so that increase() in the alerts
        # on dead letters (misrouted, processing errors, refused outputs) sees the first record
        # after a start: a series born at 1 shows no increase
        for reason, stage in DLQ_STAGES.items():
            self.dlq.labels(stage=stage, reason=reason)
        self.processing_seconds = Histogram(
            f"{p}_processing_seconds",
            "Time to decode, classify and evaluate one record.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds",
            "Time from poll to commit for one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_age_seconds = Histogram(
            f"{p}_event_age_seconds",
            "Now minus event_time when the record is processed.",
            buckets=_AGE_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            f"{p}_lag_records",
            "Consumer lag per partition (end offset - position).",
            ["topic", "partition"],
            registry=registry,
        )
        self.committed_offset = Gauge(
            f"{p}_committed_offset",
            "Last committed offset per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.last_progress = Gauge(
            f"{p}_last_progress_timestamp_seconds",
            "Unix time a partition last committed progress or was seen idle at its end.",
            ["topic", "partition"],
            registry=registry,
        )
        self.position_unknown = Gauge(
            f"{p}_position_unknown",
            "1 while an owned input partition's position cannot be told (its committed offset "
            "unreadable: no lag either), else 0.",
            ["topic", "partition"],
            registry=registry,
        )
        self.rebalances = Counter(
            f"{p}_rebalances",
            "Rebalance callbacks by kind (assigned, revoked, lost).",
            ["kind"],
            registry=registry,
        )
        self.commit_failures = Counter(
            f"{p}_commit_failures", "Offset commits that failed.", registry=registry
        )
        self.publish_retries = Counter(
            f"{p}_publish_retries",
            "Output batches re-sent after a failed acknowledgement.",
            registry=registry,
        )
        self.history_patients = Gauge(
            f"{p}_history_patients",
            "Patients held in the local history store.",
            registry=registry,
        )
        self.history_accessions = Gauge(
            f"{p}_history_accessions",
            "Accessions held in the local history store.",
            registry=registry,
        )
        self.history_bytes = Gauge(
            f"{p}_history_bytes",
            "Bytes of encoded patient history held in memory (the store's own size; RSS adds the "
            "interpreter and client buffers).",
            registry=registry,
        )
        self.history_restore_seconds = Histogram(
            f"{p}_history_restore_seconds",
            "Time to restore history for newly assigned partitions.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.history_restored_records = Counter(
            f"{p}_history_restored_records",
            "Changelog records read while restoring history.",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            f"{p}_assigned_partitions", "Input partitions currently assigned.", registry=registry
        )
        self.held_back_partitions = Gauge(
            f"{p}_held_back_partitions",
            "Assigned input partitions held back: their history changelog too unreadable to "
            "trust (HER2_MAX_UNREADABLE_CHANGELOG_SHARE); never processed until revoked or "
            "restarted.",
            registry=registry,
        )
        self.build = Info(f"{p}_build", "Build and rule-set version.", registry=registry)
        self.build.info({"version": __version__, "ruleset_version": ruleset_version})

    def registry_error(self, operation: str, kind: str) -> None:
        """Count one failed schema registry call (the registry client's `on_error` hook)."""
        self.schema_registry_errors.labels(operation=operation, kind=kind).inc()

    def fallback_hook(self, codec: str) -> Callable[[], None]:
        """The `on_fallback` hook of one fast path (`codec` one of CODEC_FALLBACKS, KeyError
        else): each call counts one value it left to fastavro."""
        return self._fallbacks[codec].inc
