"""The adapter boundary of kafka-python's errors: every KafkaError raised by a call of the
consumer or the admin client becomes a BrokerError of our tree (CommitRefusedError for a commit
refused because of a rebalance), the cause chained, so the runtime outside this package catches
only our classes. Anything else (our own errors raised from a rebalance listener inside poll(),
programming errors) passes through untouched.

`MappedClients` wraps any `Clients` (KafkaClients, the in-memory FakeBroker): the service
applies it once where it receives its clients, so the group member, the changelog reader and
the admin client are mapped alike, real or fake. The producer is handed out as is:
ProducerHandle classifies kafka-python's per-record errors itself (refused for good, fenced)
and raises PublishError, FencedError, OutputRefusedError or BrokerError."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from consumer.errors import BrokerError, CommitRefusedError
from consumer.runtime.kafka import (
    Admin,
    Clients,
    CommitFailedError,
    ConfigResource,
    Consumer,
    KafkaError,
    OffsetAndMetadata,
    Producer,
    RebalanceInProgressError,
    TopicPartition,
    errors,
)
from consumer.runtime.kafka.quirks import static_member_fenced

# the `kind` (error_type) of a transaction's offsets refused before they are sent: the group
# member has no generation (it is not in the group now)
NO_GENERATION = "NoGroupGeneration"

P = ParamSpec("P")
R = TypeVar("R")


def broker_error(exc: KafkaError) -> BrokerError:
    """Our error for a kafka-python error (the caller chains it: `raise ... from exc`)."""
    kind = type(exc).__name__
    if isinstance(exc, (CommitFailedError, RebalanceInProgressError)):
        return CommitRefusedError(str(exc), kind=kind, retriable=exc.retriable)
    return BrokerError(str(exc), kind=kind, retriable=exc.retriable)


def mapped(call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`call(*args, **kwargs)`, a KafkaError raised as our BrokerError."""
    try:
        return call(*args, **kwargs)
    except KafkaError as exc:
        raise broker_error(exc) from exc


class MappedConsumer:
    """A `Consumer` whose calls raise BrokerError instead of kafka-python's errors. The
    rebalance listener is handed to the wrapped consumer as is."""

    def __init__(self, consumer: Consumer) -> None:
        """Wraps `consumer` (a KafkaConsumer, a FakeConsumer, any `Consumer`)."""
        self.wrapped = consumer

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """KafkaConsumer.subscribe."""
        mapped(self.wrapped.subscribe, topics, listener=listener)

    def topics(self) -> Any:
        """KafkaConsumer.topics."""
        return mapped(self.wrapped.topics)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """KafkaConsumer.assign."""
        mapped(self.wrapped.assign, partitions)

    def assignment(self) -> set[TopicPartition]:
        """KafkaConsumer.assignment."""
        return mapped(self.wrapped.assignment)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """KafkaConsumer.partitions_for_topic."""
        return mapped(self.wrapped.partitions_for_topic, topic)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Mapping[Any, Any]:
        """KafkaConsumer.poll. A static member fenced by another process with its instance id
        raises the non-retriable FencedInstanceIdError (the service stops) instead of handing
        over what it fetched from partitions no longer its own (quirks.static_member_fenced),
        as the librdkafka adapter does."""
        records = mapped(self.wrapped.poll, timeout_ms=timeout_ms, max_records=max_records)
        if static_member_fenced(self.wrapped):
            fenced = errors.FencedInstanceIdError(
                "another process joined the group with this HER2_INSTANCE_ID; "
                "this member was fenced"
            )
            raise broker_error(fenced) from fenced
        return records

    def pause(self, *partitions: TopicPartition) -> None:
        """KafkaConsumer.pause."""
        mapped(self.wrapped.pause, *partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        """KafkaConsumer.resume."""
        mapped(self.wrapped.resume, *partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """KafkaConsumer.seek."""
        mapped(self.wrapped.seek, tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """KafkaConsumer.seek_to_beginning."""
        mapped(self.wrapped.seek_to_beginning, *partitions)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        """KafkaConsumer.position."""
        return mapped(self.wrapped.position, tp, timeout_ms=timeout_ms)

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int | None = None) -> Any:
        """KafkaConsumer.end_offsets."""
        return mapped(self.wrapped.end_offsets, partitions, timeout_ms=timeout_ms)

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """KafkaConsumer.commit (CommitRefusedError when a rebalance refuses it)."""
        mapped(self.wrapped.commit, offsets)

    def committed(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        """KafkaConsumer.committed."""
        return mapped(self.wrapped.committed, partition, timeout_ms=timeout_ms)

    def group_metadata(self) -> Any:
        """KafkaConsumer.group_metadata; CommitRefusedError for a group member with no
        generation now (kafka-python resets it when the member left the group, e.g. a batch
        longer than max.poll.interval.ms): the coordinator accepts transactional offsets without
        a generation, so a transaction would commit offsets of partitions another member owns.
        Refused like a commit in a rebalance, the transaction is aborted and its batch runs
        again (librdkafka's coordinator refuses such offsets itself: UNKNOWN_MEMBER_ID)."""
        metadata = mapped(self.wrapped.group_metadata)
        generation = getattr(metadata, "generation_id", None)
        in_group = getattr(metadata, "group_id", None) is not None
        if in_group and isinstance(generation, int) and generation < 0:
            raise CommitRefusedError(
                "the consumer has no group generation (it left the group): its transaction's "
                "offsets are refused",
                kind=NO_GENERATION,
                retriable=False,
            )
        return metadata

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        """KafkaConsumer.close."""
        mapped(self.wrapped.close, autocommit=autocommit, timeout_ms=timeout_ms)


class MappedAdmin:
    """An `Admin` whose calls raise BrokerError instead of kafka-python's errors."""

    def __init__(self, admin: Admin) -> None:
        """Wraps `admin` (a KafkaAdminClient, a FakeAdmin, any `Admin`)."""
        self.wrapped = admin

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        """KafkaAdminClient.describe_topics."""
        return mapped(self.wrapped.describe_topics, topics)

    def create_topics(self, specs: dict[str, dict[str, Any]], raise_errors: bool = True) -> Any:
        """KafkaAdminClient.create_topics (the service's own call shape)."""
        return mapped(self.wrapped.create_topics, specs, raise_errors=raise_errors)

    def wait_for_topics(self, topics: list[str], timeout_ms: int) -> Any:
        """KafkaAdminClient.wait_for_topics."""
        return mapped(self.wrapped.wait_for_topics, topics, timeout_ms=timeout_ms)

    def describe_configs(
        self, config_resources: list[ConfigResource], *, config_filter: str = "modified"
    ) -> dict[str, Any]:
        """KafkaAdminClient.describe_configs."""
        return mapped(self.wrapped.describe_configs, config_resources, config_filter=config_filter)

    def describe_metadata_quorum(self) -> dict[str, Any]:
        """KafkaAdminClient.describe_metadata_quorum."""
        return mapped(self.wrapped.describe_metadata_quorum)

    def describe_cluster(self) -> dict[str, Any]:
        """KafkaAdminClient.describe_cluster."""
        return mapped(self.wrapped.describe_cluster)

    def list_partition_offsets(
        self, topic_partition_specs: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]:
        """KafkaAdminClient.list_partition_offsets (specs: Kafka's wire sentinels)."""
        return mapped(self.wrapped.list_partition_offsets, topic_partition_specs)

    def list_group_offsets(
        self, group_specs: dict[str, list[TopicPartition] | None]
    ) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
        """KafkaAdminClient.list_group_offsets."""
        return mapped(self.wrapped.list_group_offsets, group_specs)

    def close(self) -> None:
        """KafkaAdminClient.close."""
        mapped(self.wrapped.close)


class MappedClients:
    """`Clients` whose consumers and admin clients are mapped; creating any client maps too."""

    def __init__(self, clients: Clients) -> None:
        """Wraps `clients` (KafkaClients, a FakeBroker); wrapping twice is harmless."""
        self.wrapped = clients

    def admin(self, **config: Any) -> Admin:
        """A mapped admin client."""
        return MappedAdmin(mapped(self.wrapped.admin, **config))

    def consumer(self, **config: Any) -> Consumer:
        """A mapped consumer."""
        return MappedConsumer(mapped(self.wrapped.consumer, **config))

    def producer(self, **config: Any) -> Producer:
        """The producer as is (ProducerHandle maps its errors)."""
        return mapped(self.wrapped.producer, **config)
