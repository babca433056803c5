"""What flows through the runtime: an output record, a poll batch and its statistics, and the
back-off schedules (and the readiness reason of a broker away)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.runtime.kafka import OffsetAndMetadata, TopicPartition

# The changelog offset guard (issue 15, after quix-streams' recovery): every changelog record
# carries the offset of the last input record whose processing it covers; a restore skips the
# records ahead of the group's committed offset (their input records are processed again).
INPUT_OFFSET_HEADER: Final = "her2.input.offset"
# ... and the id of the input topic that offset is of: offsets of another topic (a DR site's
# mirror, which MirrorMaker fills with records, not offsets; a failback's rebuilt topic; the
# topic re-created) say nothing about this one's (restore.py)
INPUT_TOPIC_ID_HEADER: Final = "her2.input.topic-id"


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce.

    `timestamp_ms`: the record's timestamp, the input record's (as Kafka Streams propagates
    it), never the host clock: a broker refuses timestamps too far ahead of its own clock
    (`message.timestamp.after.max.ms`, 1 h by default in Kafka 4.x), so a host clock running
    fast would otherwise stop every output. None = the producer's clock (no input timestamp).
    `origin`: the input record (partition, offset) whose evaluation produced it; None for a
    changelog record (it belongs to a patient, not to one record).
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None
    timestamp_ms: int | None = None
    origin: tuple[TopicPartition, int] | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The broker refused an output of one input record for good (a non-retriable per-record
    error: size limit, authorization, timestamp). Exactly-once, the record is dead-lettered
    with this reason instead of evaluated (none of its outputs was visible); at-least-once, it
    is evaluated again, its outputs to `topics` are left out and a copy is dead-lettered (its
    other outputs may already be published: runtime/loop.py). `dlq_error` is set once the
    dead-letter copy itself was refused (the next copy carries the error headers only)."""

    topic: str | None  # the output topic that refused (None: only the DLQ copy was refused)
    error: str | None  # the broker's error class, e.g. MessageSizeTooLargeError
    dlq_error: str | None = None
    topics: frozenset[str] = frozenset()  # every output topic that refused the record's outputs


def topics_of(outputs: list[Output]) -> list[str]:
    """The topics `outputs` go to, sorted (for error messages)."""
    return sorted({out.topic for out in outputs})


def covers(offset: int | None, topic_id: bytes | None) -> list[tuple[str, bytes]]:
    """The headers of a changelog record covering input offset `offset` (none for None) of
    the input topic `topic_id` (left out when unknown): what the restore's guard reads."""
    if offset is None:
        return []
    headers = [(INPUT_OFFSET_HEADER, b"%d" % offset)]
    if topic_id:
        headers.append((INPUT_TOPIC_ID_HEADER, topic_id))
    return headers


def input_timestamp(record: Any) -> int | None:
    """The input record's timestamp in epoch millis (None when it carries none: -1)."""
    ts = getattr(record, "timestamp", None)
    return ts if isinstance(ts, int) and ts >= 0 else None


@dataclass
class Batch:
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
    # processing-error dead letters in a row per partition at the end of the batch (DLQ limit)
    error_runs: dict[TopicPartition, int] = field(default_factory=dict)

    def offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """The offsets to commit: one past the last processed record of each partition."""
        return {
            tp: OffsetAndMetadata(
                record.offset + 1,
                "",
                record.leader_epoch if record.leader_epoch is not None else -1,
            )
            for tp, record in self.last.items()
        }


@dataclass(frozen=True, slots=True)
class Backoff:
    """A back-off schedule: the delay of attempt n (0-based), the last one repeated."""

    delays: tuple[float, ...]

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` + 1."""
        return self.delays[min(attempt, len(self.delays) - 1)]


@dataclass(slots=True)
class StartupWait:
    """The failed attempts of one start-up wait (the registry, the input topic, the group
    coordinator, a first broker): each one's number and delay, then the pause, unready with
    the wait's reason and /healthz beating. Each caller logs its own warning between the two
    (the log guard wants its event and keys spelt out at the call)."""

    backoff: Backoff
    wait: Callable[[float], bool]  # waits up to n seconds; True when the service was stopped
    set_ready: Callable[..., None]
    beat: Callable[[], None]
    attempt: int = 0  # failed attempts so far

    def failed(self) -> float:
        """Count a failed attempt; the seconds to wait before the next."""
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def pause(self, reason: str, seconds: float) -> bool:
        """Unready with `reason`, a heartbeat, then the wait; True when stopped meanwhile."""
        self.set_ready(False, reason)
        self.beat()
        return self.wait(seconds)


REGISTRY_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
INPUT_WAIT_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0, 10.0))
PUBLISH_BACKOFF: Final = Backoff((0.2, 0.5, 1.0, 2.0, 5.0))
POLL_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0))
# between the first connection's attempts; each waits up to HER2_REQUEST_TIMEOUT_MS itself
BROKER_WAIT_BACKOFF: Final = Backoff((1.0, 2.0, 5.0))
# the /readyz reason while no broker answers (at start-up, polling, or a lag refresh)
BROKER_UNREACHABLE: Final = "broker unreachable"


def input_missing(topic: str) -> str:
    """The /readyz reason while the broker answers without the input topic (not created yet
    at start-up, or deleted while the service runs)."""
    return f"waiting for input topic {topic} (input topic missing)"
