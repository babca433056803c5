"""The exception tree of the HER2 consumer.

    Her2Error
    ├── ConfigError            bad configuration: fatal at start-up, names the variable
    ├── RuleSetError           a rule file is invalid or one of its examples fails: fatal
    ├── SchemaError            an Avro schema cannot be loaded or registered: fatal
    ├── RegistryError          the schema registry cannot be reached: retry, never DLQ
    ├── PublishError           outputs were not acknowledged: stop without committing
    │   ├── OutputRefusedError the broker refused outputs for good (size, ACL, timestamp):
    │   │                      their input records are dead-lettered and the batch re-driven
    │   └── ProducerUnavailableError no new producer could be made (its bootstrap failed):
    │                          a failed publish attempt, retried while attempts remain
    ├── FencedError            another producer took our transactional id: stop, EXIT_FENCED
    ├── HistoryRestoreError    the changelog could not be read to its end in time: fatal
    ├── KafkaConnectError      Kafka refusing us at start-up (credentials, certificate):
    │                          fatal (no broker answering is waited out instead)
    ├── BrokerError            a Kafka client call failed (mapped in runtime/kafka/mapping.py
    │   │                      from kafka-python's KafkaError): `retriable`, `kind`
    │   └── CommitRefusedError an offset commit refused because of a rebalance: not fatal
    ├── StateStoreError        the disk history store failed (sqlite: full disk, I/O error):
    │                          stop without committing, never the record's fault
    ├── OutputTooLargeError    an output of one record can never be produced: dead-letter it
    └── RecordError            this one record cannot be used: it goes to the dead-letter topic
        ├── DecodeError        stage "decode": framing, schema lookup, Avro binary
        └── InvalidEvent       stage "validate": decoded but not a usable PathologyResult
                               (or not where its patient's history lives: `misrouted`;
                               or dated beyond the clock tolerance: `event-time-in-future`)

A RecordError carries a `reason` from a closed vocabulary (it becomes the DLQ header
`her2.errors.reason` and a metric label), a message that never contains field values, and
optionally extra `her2.errors.*` dead-letter headers (numbers only, e.g. the expected and
actual partition of a misrouted record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

# every dead-letter reason, with the stage (her2.errors.stage, the metric's `stage` label) that
# dead-letters it: decode (DecodeError), validate (InvalidEvent), process (the processor)
DLQ_STAGES: Final[Mapping[str, str]] = {
    "empty-value": "decode",
    "unknown-magic-byte": "decode",
    "unsupported-framing": "decode",
    "unknown-schema-id": "decode",
    "unknown-fingerprint": "decode",
    "avro-decode": "decode",
    "schema-resolution": "decode",
    "schema-validation": "validate",
    "event-time-in-future": "validate",
    "misrouted": "validate",
    "event-id-reused": "validate",
    "processing-error": "process",
    "output-too-large": "process",
    "output-refused": "process",
}
DLQ_REASONS = frozenset(DLQ_STAGES)


class Her2Error(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(Her2Error):
    """Configuration is missing or invalid; the message names the variable."""


class RuleSetError(Her2Error):
    """The rule set in `rules/` is invalid or one of its embedded examples fails."""


class SchemaError(Her2Error):
    """An Avro schema cannot be loaded, parsed or registered."""


class RegistryError(Her2Error):
    """The schema registry did not answer usefully (transient: never a reason to dead-letter).
    `kind` is the failure's kind as `her2_consumer_schema_registry_errors_total` counts it
    (unreachable, tls, auth, server-error, http-error, bad-answer)."""

    def __init__(self, message: str, kind: str = "unreachable") -> None:
        super().__init__(message)
        self.kind = kind


class PublishError(Her2Error):
    """An output record was not acknowledged by the broker."""


class ProducerUnavailableError(PublishError):
    """No producer could be made after a failed publish attempt (its bootstrap failed: a
    broker not answering yet). `kind` is the client's error class name. A publish attempt
    fails with it, and the next attempt tries a new producer again."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"could not create a new producer ({kind}); stopping without committing")
        self.kind = kind


class OutputRefusedError(PublishError):
    """The broker refused output records for good: re-sending the same bytes cannot help.

    `refused` holds (output, error class name) pairs. Raised by runtime/delivery.py after the
    batch's transaction is aborted (exactly-once) or before any changelog record of the batch
    is sent (at-least-once); runtime/loop.py dead-letters the records the outputs came from
    and re-drives the batch. Uncaught, it stops the service without committing like any
    PublishError.
    """

    def __init__(self, refused: Sequence[tuple[object, str]]) -> None:
        self.refused = list(refused)
        topics = sorted({getattr(out, "topic", "?") for out, _ in self.refused})
        errors = sorted({error for _, error in self.refused})
        super().__init__(
            f"{len(self.refused)} output records refused by the broker for good "
            f"(topics {', '.join(topics)}: {', '.join(errors)})"
        )


class OffsetsRefusedError(PublishError):
    """Exactly-once: a rebalance refused the transaction's offsets (the group's generation
    ended under the open transaction). The transaction is aborted; runtime/loop.py runs the
    batch again from its partitions' changelog. Uncaught, it stops the service without
    committing like any PublishError. `kind`: the client's error class name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(
            f"a rebalance refused the transaction's offsets ({kind}); the transaction is aborted"
        )


class GroupLeftError(PublishError):
    """At-least-once: the member left the consumer group (its generation ended: a batch that
    outlasted max.poll.interval.ms, the group session lost) after the batch's outputs were
    delivered and before its changelog was written. The changelog is not written and nothing is
    committed: another member may own the partitions now, and history written this late could
    land after its own and roll the patients back. runtime/loop.py runs the batch again from its
    partitions' changelog (a partition the rebalance moved goes to its new owner, which starts
    from the committed offsets). `kind`: the client's error class name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(
            f"the member left the consumer group before the changelog was written ({kind})"
        )


class StopRequested(Her2Error):
    """A stop (SIGTERM, SIGINT) came while the batch in flight waited on the broker (a request
    timeout without an answer, or a re-send's back-off): the batch is given up instead of
    waiting until the delivery timeout, beyond the orchestrator's grace period. This process
    commits nothing of it, and it is processed again at the next start (the same alert ids:
    at-least-once duplicates; exactly-once: the open transaction is aborted by the next
    instance, unless its commit had already been sent and the broker completes it, and then
    the batch counts as processed). Not a PublishError: nothing retries or re-runs it."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(
            f"stopped while the batch in flight waited on the broker ({stage}); it is given up "
            "and processed again at the next start"
        )


class FencedError(Her2Error):
    """Another producer with our transactional id took over (exactly-once)."""


class StateTooLargeError(PublishError):
    """A patient-state changelog record larger than a Kafka request: the service stops without
    committing rather than keep a state that a restore elsewhere would not see (issue 15)."""


class DeadLetterLimitError(Her2Error):
    """A partition dead-lettered HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS `processing-error`
    records in a row: the service stops without committing that batch rather than drain the
    input into the dead-letter topic (a bad deployment; after arroyo's DlqLimit)."""


class HistoryRestoreError(Her2Error):
    """The history changelog could not be read to its end in time (fatal)."""


class KafkaConnectError(Her2Error):
    """Kafka refused us at start-up: credentials or certificate (the message names what to
    check). No broker answering at all is waited out (runtime/kafka/preflight.py)."""


class BrokerError(Her2Error):
    """A Kafka client call failed: kafka-python's KafkaError mapped at the adapter boundary
    (runtime/kafka/mapping.py, the cause chained). `kind` is the client's exception class name
    (the `error_type` of logs and metrics), `retriable` the client's own judgement (a broker
    away, a leader moving: the loop waits or leaves the work to the next batch)."""

    def __init__(self, message: str, *, kind: str, retriable: bool) -> None:
        super().__init__(message or kind)  # kafka-python's own text ("<kind>: <detail>")
        self.kind = kind
        self.retriable = retriable


class CommitRefusedError(BrokerError):
    """An offset commit refused because of a rebalance (kafka-python's CommitFailedError or
    RebalanceInProgressError): the records go to the partition's next owner; not fatal."""


class StateStoreError(Her2Error):
    """The disk history store failed (a sqlite3.Error at the state boundary: full disk, I/O
    error, a closed store). `kind` is the sqlite error's class name, `detail` its message
    (sqlite's own text, never a value); the cause is chained."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"the history store failed ({kind}: {detail})")
        self.kind = kind


def kind_of(exc: BaseException) -> str:
    """The `error_type` of a log line or metric: a mapped error's `kind` (the third-party
    class name, as logged before the mapping), else the exception's class name."""
    if isinstance(exc, BrokerError):
        return exc.kind
    return type(exc).__name__


class OutputTooLargeError(Her2Error):
    """An output of one record can never be produced (larger than a Kafka request)."""


class RecordError(Her2Error):
    """One input record cannot be processed; it belongs in the dead-letter topic."""

    stage = "process"

    def __init__(
        self, reason: str, message: str, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        if reason not in DLQ_REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        if DLQ_STAGES[reason] != self.stage:  # its metric series is pre-created with that stage
            raise ValueError(f"dead-letter reason {reason!r} is not of stage {self.stage!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.headers = tuple(headers)  # extra dead-letter headers, after the standard ones


class DecodeError(RecordError):
    """The bytes could not be turned into a record (framing, schema lookup, Avro)."""

    stage = "decode"


class InvalidEvent(RecordError):
    """The record decoded but is not a valid PathologyResult."""

    stage = "validate"
