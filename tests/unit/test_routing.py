"""consumer.runtime.routing: the misrouting check and the Java-compatible murmur2 partition it
relies on.

Reference values are Java's own: `Utils.murmur2` in Apache Kafka's clients
(`UtilsTest.testMurmur2`) and a table printed by the same Java code for the kafkajs
"defaultJava" partitioner's tests. kafka-python's murmur2 returns the unsigned 32-bit value,
Java's the signed int; the partition is `toPositive(murmur2(key)) % partitions` either way.
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import pytest

from consumer.errors import DLQ_REASONS, InvalidEvent, RecordError
from consumer.runtime.routing import (
    HEADER_ACTUAL,
    HEADER_COUNT,
    HEADER_EXPECTED,
    KEY_NOT_PATIENT_ID,
    NO_KEY,
    REASON_MISROUTED,
    WRONG_PARTITION,
    Misrouted,
    check,
    murmur2,
    partition_for,
    patient_key,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka.partitioner.default import DefaultPartitioner

# (key bytes, Java's Utils.murmur2 as a signed int)
JAVA_MURMUR2 = [
    # Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java
    pytest.param(b"21", -973932308, id="kafka-21"),
    pytest.param(b"foobar", -790332482, id="kafka-foobar"),
    pytest.param(b"a-little-bit-long-string", -985981536, id="kafka-long"),
    pytest.param(b"a-little-bit-longer-string", -1486304829, id="kafka-longer"),
    pytest.param(
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, id="kafka-48-bytes"
    ),
    pytest.param(b"abc", 479470107, id="kafka-abc"),
    # kafkajs src/producer/partitioners/defaultJava (values printed by Java's murmur2)
    pytest.param(b"0", 971027396, id="java-0"),
    pytest.param(b"1", -1993445489, id="java-1"),
    pytest.param(b"128", -326012175, id="java-128"),
    pytest.param(b"2187", -1508407203, id="java-2187"),
    pytest.param(b"2097152", 607668903, id="java-2097152"),
    pytest.param(b"170859375", -1658323481, id="java-170859375"),
    pytest.param(b"100:48069", 1009543857, id="java-100:48069"),
]


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class TestMurmur2:
    """kafka-python's murmur2 (the one the check uses) is Java's Utils.murmur2."""

    @pytest.mark.parametrize(("key", "java"), JAVA_MURMUR2)
    def test_matches_java(self, key: bytes, java: int) -> None:
        assert _signed(murmur2(key)) == java

    @pytest.mark.parametrize(("key", "java"), JAVA_MURMUR2)
    @pytest.mark.parametrize("partitions", [1, 3, 6, 7, 100])
    def test_partition_is_java_to_positive_mod_count(
        self, key: bytes, java: int, partitions: int
    ) -> None:
        assert partition_for(key, partitions) == (java & 0x7FFFFFFF) % partitions


class _Cluster:
    """The three calls kafka-python's DefaultPartitioner makes on its cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"in"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


class TestPartitionFor:
    """The check and kafka-python's default producer partitioner agree on every key."""

    @pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12])
    def test_agrees_with_kafka_pythons_default_partitioner(self, partitions: int) -> None:
        producer_side: Any = DefaultPartitioner()
        cluster = _Cluster(partitions)
        for i in range(300):
            key = patient_key(f"P{i:06d}-é")
            chosen = producer_side.partition("in", key, key, b"v", b"v", cluster)
            assert partition_for(key, partitions) == chosen

    @pytest.mark.parametrize("partitions", [0, -1])
    def test_a_topic_has_partitions(self, partitions: int) -> None:
        with pytest.raises(ValueError, match="at least one partition"):
            partition_for(b"P1", partitions)

    def test_patient_key_is_utf8(self) -> None:
        assert patient_key("Pé-1") == "Pé-1".encode()
        assert patient_key("Pé-1") != "Pé-1".encode("latin-1")


def _p(patient_id: str, partitions: int) -> int:
    return partition_for(patient_id.encode(), partitions)


# (key, patient_id, partition, partitions, expected cause or None)
CASES = [
    pytest.param(b"P1", "P1", _p("P1", 6), 6, None, id="keyed-and-placed-right"),
    pytest.param(b"P1", "P1", 0, 1, None, id="one-partition"),
    pytest.param("Pé-1".encode(), "Pé-1", _p("Pé-1", 6), 6, None, id="utf8-key"),
    pytest.param(None, "P1", _p("P1", 6), 6, NO_KEY, id="null-key-on-the-right-partition"),
    pytest.param(None, "P1", 0, 1, NO_KEY, id="null-key-one-partition"),
    pytest.param(b"", "P1", _p("P1", 6), 6, KEY_NOT_PATIENT_ID, id="empty-key"),
    pytest.param(b"A-778", "P1", _p("A-778", 6), 6, KEY_NOT_PATIENT_ID, id="keyed-by-accession"),
    pytest.param(b"A-778", "P1", _p("P1", 6), 6, KEY_NOT_PATIENT_ID, id="other-key-lands-right"),
    pytest.param(b"P1 ", "P1", _p("P1", 6), 6, KEY_NOT_PATIENT_ID, id="trailing-space"),
    pytest.param(
        "Pé-1".encode("latin-1"), "Pé-1", _p("Pé-1", 6), 6, KEY_NOT_PATIENT_ID, id="latin1-key"
    ),
    pytest.param(b"P1", "P1", (_p("P1", 6) + 1) % 6, 6, WRONG_PARTITION, id="explicit-partition"),
    # librdkafka's default (consistent_random) places a key by CRC32: P1 -> 3 of 6, murmur2 -> 1
    pytest.param(b"P1", "P1", zlib.crc32(b"P1") % 6, 6, WRONG_PARTITION, id="crc32-partitioner"),
    # ...and where CRC32 and murmur2 agree the record is where the history is: accepted
    pytest.param(b"P000123", "P000123", zlib.crc32(b"P000123") % 6, 6, None, id="crc32-agrees"),
    # a producer that saw another partition count (e.g. before partitions were added)
    pytest.param(
        b"patient-42",
        "patient-42",
        _p("patient-42", 3),
        6,
        WRONG_PARTITION,
        id="other-partition-count",
    ),
]


class TestCheck:
    """check(key, patient_id, partition, partitions) -> None or Misrouted."""

    @pytest.mark.parametrize(("key", "patient_id", "partition", "partitions", "cause"), CASES)
    def test_cases(
        self,
        key: bytes | None,
        patient_id: str,
        partition: int,
        partitions: int,
        cause: str | None,
    ) -> None:
        found = check(key, patient_id, partition, partitions)
        if cause is None:
            assert found is None
            return
        assert found == Misrouted(cause, _p(patient_id, partitions), partition, partitions)

    def test_the_crc32_case_really_differs(self) -> None:
        assert zlib.crc32(b"P1") % 6 != _p("P1", 6), "pick another example key"
        assert zlib.crc32(b"P000123") % 6 == _p("P000123", 6), "pick another example key"
        assert _p("patient-42", 3) != _p("patient-42", 6), "pick another example key"


class TestMisrouted:
    """What the service dead-letters: numbers in headers, no identifiers anywhere."""

    @pytest.mark.parametrize(
        ("key", "cause"),
        [
            pytest.param(None, NO_KEY, id="no-key"),
            pytest.param(b"ACC-SECRET-1", KEY_NOT_PATIENT_ID, id="other-key"),
            pytest.param(b"PAT-SECRET-9", WRONG_PARTITION, id="wrong-partition"),
        ],
    )
    def test_error_is_a_validate_stage_record_error(self, key: bytes | None, cause: str) -> None:
        expected = _p("PAT-SECRET-9", 4)
        found = check(key, "PAT-SECRET-9", (expected + 1) % 4, 4)
        assert found is not None
        assert found.cause == cause
        exc = found.error()
        assert isinstance(exc, InvalidEvent)
        assert isinstance(exc, RecordError)
        assert (exc.stage, exc.reason) == ("validate", REASON_MISROUTED)
        assert REASON_MISROUTED in DLQ_REASONS
        assert dict(exc.headers) == {
            HEADER_EXPECTED: str(expected).encode(),
            HEADER_ACTUAL: str((expected + 1) % 4).encode(),
            HEADER_COUNT: b"4",
        }
        assert all(value.isdigit() for _, value in exc.headers)
        assert "SECRET" not in exc.message
        assert f"partition is {expected} of 4" in exc.message

    @pytest.mark.parametrize(
        ("cause", "words"),
        [
            pytest.param(NO_KEY, "no key", id="no-key"),
            pytest.param(KEY_NOT_PATIENT_ID, "key is not the event's patient_id", id="key"),
            pytest.param(WRONG_PARTITION, "murmur2 partitioner", id="partition"),
        ],
    )
    def test_message_says_what_to_fix(self, cause: str, words: str) -> None:
        assert words in Misrouted(cause, 1, 2, 3).message

    def test_record_errors_have_no_extra_headers_by_default(self) -> None:
        assert InvalidEvent("schema-validation", "x").headers == ()
