"""The only importer of kafka-python 3.0.x: the names the runtime uses, and the Protocols of the
consumer and producer it calls (tests/runtime/fakes.py implements both in memory; confluent.py,
the optional librdkafka transport, implements them on confluent-kafka with kafka-python's data
types and error classes)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

with warnings.catch_warnings():
    # kafka-python 3.0.x calls importlib.resources.read_text/open_text at import time, which
    # warns on Python 3.11/3.12; harmless, and it must not fail runs with warnings as errors.
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, errors
    from kafka import __version__ as KAFKA_PYTHON_VERSION
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.errors import (
        CommitFailedError,
        IllegalGenerationError,
        InvalidProducerEpochError,
        InvalidRecordError,
        InvalidTimestampError,
        InvalidTopicError,
        KafkaError,
        MessageSizeTooLargeError,
        PolicyViolationError,
        ProducerFencedError,
        RebalanceInProgressError,
        RecordListTooLargeError,
        TopicAuthorizationFailedError,
        UnknownMemberIdError,
        UnsupportedForMessageFormatError,
    )
    from kafka.partitioner.default import murmur2
    from kafka.producer.future import RecordMetadata
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.structs import OffsetAndMetadata, TopicPartition

__all__ = [
    "FENCED",
    "KAFKA_PYTHON_VERSION",
    "MAX_REQUEST_BYTES",
    "REBALANCED",
    "REFUSED_FOR_GOOD",
    "CommitFailedError",
    "ConfigResource",
    "ConfigResourceType",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "CooperativeStickyAssignor",
    "DefaultRecordBatchBuilder",
    "KafkaAdminClient",
    "KafkaConsumer",
    "KafkaError",
    "KafkaProducer",
    "OffsetAndMetadata",
    "RebalanceInProgressError",
    "RecordMetadata",
    "TopicPartition",
    "errors",
    "murmur2",
]

FENCED: Final = (ProducerFencedError, InvalidProducerEpochError)

# A transaction's offsets refused because the group moved on to a new generation (exactly-once):
# librdkafka rejoins in the background, so a rebalance can complete under an open transaction;
# kafka-python rejoins only inside poll(). Nothing is wrong with the records: abort and re-run.
REBALANCED: Final = (
    CommitFailedError,
    IllegalGenerationError,
    UnknownMemberIdError,
    RebalanceInProgressError,
)

# Per-record produce errors that no re-send of the same record can cure: the broker (or the
# client, for a record above max_request_size) refuses this record on this topic for good.
# Everything else (timeouts, leader changes, a broker away, NOT_ENOUGH_REPLICAS, ...) is
# retriable: re-sent, then the service stops without committing. Producer-wide refusals
# (ClusterAuthorizationFailed, fencing) are not listed: they are nobody's record's fault.
REFUSED_FOR_GOOD: Final = (
    MessageSizeTooLargeError,  # above the topic's max.message.bytes (or max_request_size)
    RecordListTooLargeError,
    InvalidTimestampError,  # outside message.timestamp.{before,after}.max.ms
    TopicAuthorizationFailedError,  # no WRITE ACL on the topic
    InvalidRecordError,  # e.g. a null key on a compacted topic
    PolicyViolationError,
    InvalidTopicError,
    UnsupportedForMessageFormatError,
)

# The producer's max_request_size (kafka-python's default, also the broker's message.max.bytes
# default): a record larger than this is refused on every attempt, so it is a record's fault.
MAX_REQUEST_BYTES: Final = 1_048_576


class Consumer(Protocol):
    """The KafkaConsumer calls the runtime makes (the group member and the restore reader)."""

    def subscribe(self, topics: list[str], listener: Any = ...) -> None: ...
    def topics(self) -> Any: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> Mapping[Any, Any]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def position(self, tp: TopicPartition, timeout_ms: int | None = ...) -> int: ...
    def end_offsets(
        self, partitions: list[TopicPartition], timeout_ms: int | None = ...
    ) -> Any: ...
    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None: ...
    def committed(self, partition: TopicPartition, timeout_ms: int | None = ...) -> int | None: ...
    def group_metadata(self) -> Any: ...
    def close(self, autocommit: bool = ..., timeout_ms: int | None = ...) -> None: ...


class Producer(Protocol):
    """The KafkaProducer calls the runtime makes."""

    def partitions_for(self, topic: str) -> Any: ...
    def send(  # noqa: PLR0917 - kafka-python's signature
        self,
        topic: str,
        key: bytes | None = ...,
        value: bytes | None = ...,
        headers: Sequence[tuple[str, bytes]] | None = ...,
        partition: int | None = ...,
        timestamp_ms: int | None = ...,
    ) -> Any: ...
    def flush(self, timeout: float | None = ...) -> None: ...
    def close(self, timeout: float | None = ...) -> None: ...
    def init_transactions(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None: ...
    def commit_transaction(self) -> None: ...
    def abort_transaction(self) -> None: ...


class Admin(Protocol):
    """The KafkaAdminClient calls start-up makes."""

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]: ...
    def create_topics(self, specs: dict[str, dict[str, Any]], raise_errors: bool = ...) -> Any: ...
    def wait_for_topics(self, topics: list[str], timeout_ms: int) -> Any: ...
    def describe_configs(
        self, config_resources: list[ConfigResource], *, config_filter: str = ...
    ) -> dict[str, Any]: ...
    def describe_metadata_quorum(self) -> dict[str, Any]: ...
    def describe_cluster(self) -> dict[str, Any]: ...
    def list_partition_offsets(
        self, topic_partition_specs: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]: ...
    def list_group_offsets(
        self, group_specs: dict[str, list[TopicPartition] | None]
    ) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]: ...
    def close(self) -> None: ...


class Clients(Protocol):
    """Makes the three clients from kafka-python keyword arguments (a FakeBroker fits)."""

    def admin(self, **config: Any) -> Admin: ...
    def consumer(self, **config: Any) -> Consumer: ...
    def producer(self, **config: Any) -> Producer: ...
