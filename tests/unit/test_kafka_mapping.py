"""The adapter boundary of kafka-python's errors (consumer/runtime/kafka/mapping.py): each
KafkaError of a consumer or admin call becomes our BrokerError (CommitRefusedError for a commit
refused in a rebalance), chained; anything else passes through untouched; the rebalance listener
reaches the wrapped consumer as is."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    TopicAuthorizationFailedError,
)
from kafka.structs import ConsumerGroupMetadata

from consumer.errors import BrokerError, CommitRefusedError, Her2Error, InvalidEvent, kind_of
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.kafka.mapping import MappedAdmin, MappedClients, MappedConsumer, broker_error


class Raising:
    """Every call raises `exc`; `calls` records (name, args, kwargs)."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            if self.exc is not None:
                raise self.exc
            return name

        return call


@pytest.mark.parametrize(
    ("exc", "cls", "retriable"),
    [
        pytest.param(CommitFailedError(), CommitRefusedError, False, id="commit-failed"),
        pytest.param(RebalanceInProgressError(), CommitRefusedError, False, id="rebalance"),
        pytest.param(KafkaConnectionError("gone"), BrokerError, True, id="connection"),
        pytest.param(KafkaTimeoutError(), BrokerError, True, id="timeout"),
        pytest.param(IllegalStateError("no"), BrokerError, False, id="illegal-state"),
        pytest.param(TopicAuthorizationFailedError(), BrokerError, False, id="acl"),
        pytest.param(KafkaError("generic"), BrokerError, False, id="base"),
    ],
)
def test_each_kafka_error_maps_to_our_class(exc: KafkaError, cls: type, retriable: bool) -> None:
    mapped = broker_error(exc)
    assert type(mapped) is cls
    assert isinstance(mapped, Her2Error)
    assert not isinstance(mapped, KafkaError)
    assert mapped.kind == type(exc).__name__ == kind_of(mapped)
    assert mapped.retriable is exc.retriable is retriable
    assert str(mapped) == str(exc)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("poll", ()),
        ("commit", ({},)),
        ("end_offsets", ([TopicPartition("t", 0)],)),
        ("position", (TopicPartition("t", 0),)),
        ("committed", (TopicPartition("t", 0),)),
        ("close", ()),
        ("subscribe", (["t"],)),
        ("pause", (TopicPartition("t", 0),)),
    ],
)
def test_consumer_calls_raise_our_errors_chained(op: str, args: tuple[Any, ...]) -> None:
    cause = KafkaConnectionError("111 ECONNREFUSED")
    consumer = MappedConsumer(Raising(cause))  # type: ignore[arg-type]
    with pytest.raises(BrokerError) as info:
        getattr(consumer, op)(*args)
    assert info.value.__cause__ is cause
    assert info.value.kind == "KafkaConnectionError"
    assert info.value.retriable


def test_a_commit_refused_in_a_rebalance_is_its_own_class() -> None:
    cause = CommitFailedError()
    with pytest.raises(CommitRefusedError) as info:
        MappedConsumer(Raising(cause)).commit({})  # type: ignore[arg-type]
    assert info.value.__cause__ is cause
    assert info.value.kind == "CommitFailedError"


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        InvalidEvent("schema-validation", "ours, from a listener inside poll"),
        KeyboardInterrupt(),
    ],
)
def test_other_exceptions_pass_through_untouched(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info:
        MappedConsumer(Raising(exc)).poll()  # type: ignore[arg-type]
    assert info.value is exc
    assert info.value.__cause__ is None


def test_results_and_arguments_are_passed_through() -> None:
    inner = Raising()
    consumer = MappedConsumer(inner)  # type: ignore[arg-type]
    listener = object()
    assert consumer.poll(timeout_ms=5, max_records=3) == "poll"
    consumer.subscribe(["t"], listener=listener)
    consumer.close(autocommit=False, timeout_ms=7)
    assert inner.calls == [
        ("poll", (), {"timeout_ms": 5, "max_records": 3}),
        ("subscribe", (["t"],), {"listener": listener}),
        ("close", (), {"autocommit": False, "timeout_ms": 7}),
    ]
    assert inner.calls[1][2]["listener"] is listener, "the rebalance listener is not wrapped"


def test_admin_calls_and_client_creation_are_mapped() -> None:
    cause = TopicAuthorizationFailedError()
    with pytest.raises(BrokerError) as info:
        MappedAdmin(Raising(cause)).describe_topics(["t"])  # type: ignore[arg-type]
    assert info.value.__cause__ is cause
    clients = MappedClients(Raising(KafkaTimeoutError()))  # type: ignore[arg-type]
    for make in (clients.admin, clients.consumer, clients.producer):
        with pytest.raises(BrokerError) as made:
            make(bootstrap_servers="x")
        assert made.value.kind == "KafkaTimeoutError"


def test_clients_wrap_consumer_and_admin_but_not_the_producer() -> None:
    clients = MappedClients(Raising())  # type: ignore[arg-type]
    assert isinstance(clients.consumer(), MappedConsumer)
    assert isinstance(clients.admin(), MappedAdmin)
    assert clients.producer() == "producer"


class Metadata:
    """A consumer whose group_metadata() returns kafka-python's snapshot."""

    def __init__(self, group_id: str | None, generation_id: int) -> None:
        self.snapshot = ConsumerGroupMetadata(
            group_id=group_id, generation_id=generation_id, member_id="", group_instance_id=None
        )

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.snapshot


@pytest.mark.parametrize(
    ("group_id", "generation", "refused"),
    [
        ("her2-group", -1, True),  # a member that left its group: kafka-python reset it
        ("her2-group", 7, False),  # a member of the group's current generation
        ("her2-group", 0, False),
        (None, -1, False),  # no group at all (assign()): nothing to refuse
    ],
)
def test_group_metadata_without_a_generation_is_refused_as_a_rebalance(
    group_id: str | None, generation: int, refused: bool
) -> None:
    """The coordinator accepts transactional offsets without a generation, so the metadata of a
    member that left the group would commit offsets of partitions another member owns: refused
    (CommitRefusedError, the transaction aborted and its batch run again)."""
    consumer = Metadata(group_id, generation)
    mapped_consumer = MappedConsumer(consumer)  # type: ignore[arg-type]
    if not refused:
        assert mapped_consumer.group_metadata() is consumer.snapshot
        return
    with pytest.raises(CommitRefusedError) as caught:
        mapped_consumer.group_metadata()
    assert (caught.value.kind, caught.value.retriable) == ("NoGroupGeneration", False)


class Coordinator:
    """The parts of kafka-python's ConsumerCoordinator that tell a fenced static member."""

    def __init__(
        self,
        *,
        instance: str | None = "pod-0",
        stable: bool = True,
        rejoining: bool = False,
        heartbeat: bool = True,
    ) -> None:
        self.group_instance_id = instance
        self._stable = stable
        self.rejoining = rejoining
        self._heartbeat_enabled = heartbeat

    def stable(self) -> bool:
        return self._stable


class Member:
    """A KafkaConsumer whose poll returns one record batch."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[str, list[int]]:
        return {"tp": [1, 2]}


def test_a_fenced_static_member_raises_instead_of_handing_over_its_records() -> None:
    """kafka-python only disables a fenced member's heartbeat (another process joined with its
    HER2_INSTANCE_ID): its poll goes on returning records of partitions now another's."""
    consumer = MappedConsumer(Member(Coordinator(heartbeat=False)))  # type: ignore[arg-type]
    with pytest.raises(BrokerError) as raised:
        consumer.poll(timeout_ms=10)
    assert (raised.value.kind, raised.value.retriable) == ("FencedInstanceIdError", False)
    assert "HER2_INSTANCE_ID" in str(raised.value)


@pytest.mark.parametrize(
    "coordinator",
    [
        Coordinator(),  # a member in its group, heartbeating
        Coordinator(instance=None, heartbeat=False),  # a dynamic member (no instance id)
        Coordinator(stable=False, heartbeat=False),  # joining: heartbeat off while not stable
        Coordinator(rejoining=True, heartbeat=False),  # a rejoin under way
    ],
    ids=["heartbeating", "dynamic", "not-stable", "rejoining"],
)
def test_other_members_hand_over_their_records(coordinator: Coordinator) -> None:
    consumer = MappedConsumer(Member(coordinator))  # type: ignore[arg-type]
    assert consumer.poll(timeout_ms=10) == {"tp": [1, 2]}
