"""Is an input record where the patient's history lives? The misrouting check (pure).

A patient's history lives on the input partition its events arrive on, so every event of a
patient must arrive on the same one: keyed by its `patient_id` (UTF-8) and placed by Kafka's
Java-compatible default partitioner, `(murmur2(key) & 0x7fffffff) % partitions`. A record
keyed otherwise, or placed by another partitioner (librdkafka's default CRC32
`consistent_random`, a custom one, an explicit partition), would be evaluated against a partial
history and could yield wrong alerts: the service dead-letters it as `misrouted` instead.

A record without a key is misrouted too: the design keys input by patient id, and a null key
is placed by the producer's sticky/random choice, which splits a patient's history.

murmur2 is kafka-python's own (`kafka.partitioner.default.murmur2`, the function its default
partitioner uses, imported by consumer.runtime.kafka), not a copy: the producer side
(`her2-consumer publish`) and this check cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from consumer.errors import InvalidEvent
from consumer.runtime.kafka import murmur2

REASON_MISROUTED: Final = "misrouted"

# Extra dead-letter headers of a misrouted record (values are decimal numbers, never ids).
HEADER_EXPECTED: Final = "her2.errors.partition.expected"
HEADER_ACTUAL: Final = "her2.errors.partition.actual"
HEADER_COUNT: Final = "her2.errors.partition.count"

NO_KEY: Final = "no-key"
KEY_NOT_PATIENT_ID: Final = "key-not-patient-id"
WRONG_PARTITION: Final = "wrong-partition"


@lru_cache(maxsize=8192)  # murmur2 is pure Python; a patient's reports come in runs
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java-compatible default partitioner picks for `key`."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def patient_key(patient_id: str) -> bytes:
    """The record key of a patient's events: its patient_id in UTF-8."""
    # surrogatepass: total for any str (a decoded Avro string is valid UTF-8 and encodes the same)
    return patient_id.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Misrouted:
    """Why a record is not where its patient's history lives (numbers only: no identifiers)."""

    cause: str  # NO_KEY | KEY_NOT_PATIENT_ID | WRONG_PARTITION
    expected: int  # the patient's partition: murmur2(patient_id) mod `partitions`
    actual: int  # the partition the record is on
    partitions: int  # the input topic's partition count the check used

    @property
    def message(self) -> str:
        """The dead-letter message: what is wrong and what the producer must do."""
        where = (
            f"the patient's partition is {self.expected} of {self.partitions}, "
            f"the record is on {self.actual}"
        )
        if self.cause == NO_KEY:
            return f"the record has no key; input must be keyed by patient_id ({where})"
        if self.cause == KEY_NOT_PATIENT_ID:
            return f"the record key is not the event's patient_id (UTF-8) ({where})"
        return (
            f"the record is not on the partition murmur2 of its key gives ({where}): the "
            "producer must use Kafka's Java-compatible murmur2 partitioner"
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Dead-letter headers: expected and actual partition, and the count used."""
        return [
            (HEADER_EXPECTED, str(self.expected).encode("ascii")),
            (HEADER_ACTUAL, str(self.actual).encode("ascii")),
            (HEADER_COUNT, str(self.partitions).encode("ascii")),
        ]

    def error(self) -> InvalidEvent:
        """The record error the service dead-letters (stage validate, reason misrouted)."""
        return InvalidEvent(REASON_MISROUTED, self.message, self.headers())


def check(key: bytes | None, patient_id: str, partition: int, partitions: int) -> Misrouted | None:
    """None if a record with `key` on `partition` of a `partitions`-partition topic is where
    the history of `patient_id` lives; otherwise why not."""
    expected_key = patient_key(patient_id)
    expected = partition_for(expected_key, partitions)
    if key is None:
        return Misrouted(NO_KEY, expected, partition, partitions)
    if key != expected_key:
        # even when this one landed on the right partition: events keyed by something other
        # than the patient id spread over partitions
        return Misrouted(KEY_NOT_PATIENT_ID, expected, partition, partitions)
    if partition != expected:
        return Misrouted(WRONG_PARTITION, expected, partition, partitions)
    return None
