"""What flows through the runtime: an output record, a poll batch and its statistics, and the
back-off schedules."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.runtime.kafka import OffsetAndMetadata, TopicPartition


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


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


REGISTRY_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
INPUT_WAIT_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0, 10.0))
PUBLISH_BACKOFF: Final = Backoff((0.2, 0.5, 1.0, 2.0, 5.0))
POLL_BACKOFF: Final = Backoff((0.5, 1.0, 2.0, 5.0))
