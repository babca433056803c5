"""In-memory fakes of the kafka-python clients the runtime uses, with scripted failures.

One `FakeBroker` holds the topics (a list of records per partition), the group's committed
offsets and an ordered `events` journal of what the clients did (`("send", topic)`,
`("ack", topic)`, `("commit", {partition: offset})`, `("txn", "begin" | "commit" | "abort")`,
...), so a test can assert the order of sends, acknowledgements and commits.

Failures are scripted per operation: `broker.script(op, *effects)` queues effects that the next
calls of `op` consume, one each. An effect is an exception (raised) or a callable (called: to
block, or to change the broker mid-call). Operations: "poll", "commit", "send:<topic>",
"ack:<topic>", "init_transactions", "send_offsets", "commit_transaction", "abort_transaction",
"restore.poll", "end_offsets", "restore.end_offsets", "admin", "describe". Topic creation
failures: `broker.create_errors[topic] = code`.
Permanent refusals (a broker that refuses some records for good, on every attempt):
`broker.refuse(topic, exc, when=predicate)` fails the future of every record of `topic` for
which `predicate(record)` holds (default: all), e.g. a size limit. A record refused as too large
that shared its partition's flush with others makes flush() raise UnknownError, as kafka-python
3.0.12 does (tests/integration/test_client_contract.py holds the fakes to the real client).
Records carry a timestamp: `append(..., timestamp=)` (default `broker.clock_ms`), and what a
producer passed as `timestamp_ms` (None: the producer's clock, `broker.producer_clock_ms`).

The group has one member: the first poll assigns every partition of the subscribed topic
(calling the listener, as kafka-python does from its IO thread), close() revokes them.
Records a producer sends become visible on acknowledgement (at-least-once) or when the
transaction commits (exactly-once; an abort discards them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnknownError,
)
from kafka.structs import OffsetAndMetadata, OffsetAndTimestamp, TopicPartition


@dataclass
class FakeRecord:
    """A consumer record as kafka-python returns it (the attributes the service reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0
    leader_epoch: int | None = None


class FakeBroker:
    """Topics, committed offsets, the journal of client calls and the failure script."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[FakeRecord]]] = {}
        self.configs: dict[str, dict[str, str]] = {}  # a topic's settings besides the defaults
        self.configs_unreadable: set[str] = set()  # topics DescribeConfigs answers nothing for
        # more brokers DescribeCluster lists (none answers DescribeConfigs: down), and which
        # one it lists first
        self.other_brokers: list[int] = []
        self.first_broker = 1
        self.cluster_id = "fake"  # DescribeCluster's cluster_id
        # DescribeTopics' topic_id, a new one at each creation (a mirror or a re-creation is
        # another topic); topic_ids_unsupported: a broker that answers the all-zero id
        self.topic_ids: dict[str, str] = {}
        self.topic_ids_unsupported = False
        # the broker's own settings DescribeConfigs answers (Kafka's defaults); None: nothing
        self.broker_configs: dict[str, str] | None = {
            "group.min.session.timeout.ms": "6000",
            "group.max.session.timeout.ms": "1800000",
        }
        self.committed: dict[TopicPartition, int] = {}
        # the same commits by group id (what the admin client's OffsetFetch answers)
        self.group_committed: dict[str, dict[TopicPartition, int]] = {}
        self.log_start: dict[TopicPartition, int] = {}  # a partition's earliest offset (else 0)
        self.events: list[tuple[str, Any]] = []
        self.create_errors: dict[str, int] = {}
        self._script: dict[str, list[BaseException | Callable[[], Any]]] = {}
        self.on_idle: Callable[[], None] = lambda: None  # called by a poll that finds nothing
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.admins: list[FakeAdmin] = []
        # topics (names) or partitions (TopicPartition) whose records never arrive (a stuck fetch)
        self.stalled: set[str | TopicPartition] = set()
        # topics the consumers' metadata does not list (deleted under a running member)
        self.unlisted: set[str] = set()
        self.refusals: list[tuple[str, BaseException, Callable[[FakeRecord], bool]]] = []
        # a refusal fails the producer's other records in flight too (kafka-python 3.0.12)
        self.refusal_fails_in_flight = True
        self.clock_ms = 1_767_225_600_000  # timestamp of appended input records (2026-01-01)
        self.producer_clock_ms = self.clock_ms  # what a producer stamps when given None
        self.sent_timestamps: list[tuple[str, int | None]] = []  # (topic, timestamp_ms)
        self.sent_partitions: list[tuple[str, int | None]] = []  # (topic, partition as sent)
        # the cluster's wall clock (DescribeQuorum), the real one unless a test skews it
        self.cluster_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)

    # -- set-up ---------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """A topic with `partitions` empty partitions (and a new topic id)."""
        self.topics[name] = [[] for _ in range(partitions)]
        self.topic_ids[name] = str(uuid.uuid4())

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = 0,
        headers: Iterable[tuple[str, bytes]] = (),
        *,
        timestamp: int | None = None,
    ) -> FakeRecord:
        """Write one record to the end of a partition's log."""
        log = self.topics[topic][partition]
        stamp = self.clock_ms if timestamp is None else timestamp
        record = FakeRecord(topic, partition, len(log), key, value, list(headers), stamp)
        log.append(record)
        return record

    def refuse(
        self,
        topic: str,
        exc: BaseException,
        when: Callable[[FakeRecord], bool] = lambda record: True,
    ) -> None:
        """Refuse, on every attempt, the records of `topic` for which `when` holds."""
        self.refusals.append((topic, exc, when))

    def script(self, op: str, *effects: BaseException | Callable[[], Any]) -> None:
        """Queue effects for the next calls of `op` (one per call)."""
        self._script.setdefault(op, []).extend(effects)

    def scripted(self, op: str) -> None:
        """Apply the next effect queued for `op`, if any."""
        queue = self._script.get(op)
        if not queue:
            return
        effect = queue.pop(0)
        if isinstance(effect, BaseException):
            raise effect
        effect()

    # -- reading --------------------------------------------------------------------------

    def records(self, topic: str) -> list[FakeRecord]:
        """Every record of `topic`, partition by partition."""
        return [r for log in self.topics.get(topic, []) for r in log]

    def kinds(self) -> list[str]:
        """The journal's event kinds in order."""
        return [kind for kind, _ in self.events]

    # -- client factories (kafka-python's constructors) ------------------------------------

    def admin(self, **config: Any) -> FakeAdmin:
        """KafkaAdminClient(**config)."""
        self.scripted("admin")
        admin = FakeAdmin(self, config)
        self.admins.append(admin)
        return admin

    def consumer(self, **config: Any) -> FakeConsumer:
        """KafkaConsumer(**config)."""
        consumer = FakeConsumer(self, config)
        self.consumers.append(consumer)
        return consumer

    def producer(self, **config: Any) -> FakeProducer:
        """KafkaProducer(**config)."""
        self.scripted("producer")  # KafkaTimeoutError: its bootstrap failed
        producer = FakeProducer(self, config)
        self.producers.append(producer)
        return producer


# the topic defaults of a broker configured as Kafka ships (a week's retention)
ZERO_TOPIC_ID: Final = "00000000-0000-0000-0000-000000000000"  # a broker without topic ids
BROKER_TOPIC_DEFAULTS: Final = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "min.compaction.lag.ms": "0",
}


class FakeAdmin:
    """KafkaAdminClient: describe, create, wait, close."""

    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.config = config
        self.closed = False

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.broker.scripted("describe")
        out = []
        for name in topics:
            log = self.broker.topics.get(name)
            if log is None:
                out.append({"name": name, "error_code": 3, "partitions": []})
            else:
                # kafka-python's MetadataResponse keys (partition_index, not partition)
                partitions = [{"partition_index": p, "error_code": 0} for p in range(len(log))]
                topic_id = ZERO_TOPIC_ID if self.broker.topic_ids_unsupported else None
                topic_id = topic_id or self.broker.topic_ids.get(name, ZERO_TOPIC_ID)
                out.append(
                    {"name": name, "error_code": 0, "partitions": partitions, "topic_id": topic_id}
                )
        return out

    def create_topics(self, specs: dict[str, dict[str, Any]], raise_errors: bool = True) -> Any:
        results = []
        for name, spec in specs.items():
            code = self.broker.create_errors.get(name, 0)
            if code == 0:
                self.broker.create_topic(name, spec["num_partitions"])
                self.broker.configs[name] = dict(spec.get("configs", {}))
            results.append({"name": name, "error_code": code})
            self.broker.events.append(("create", name))
        return {"topics": results}

    def wait_for_topics(self, topics: list[str], timeout_ms: int) -> None:
        pass

    def describe_configs(
        self, config_resources: list[ConfigResource], *, config_filter: str = "modified"
    ) -> dict[str, Any]:
        """DescribeConfigs of topics as kafka-python 3.0.12 returns it: the broker's defaults
        under the topic's own settings; nothing for a missing or unreadable topic (kafka-python
        drops a resource's error code)."""
        self.broker.scripted("configs")
        assert config_filter == "all", "the defaults are asked for too"
        if all(r.resource_type is ConfigResourceType.BROKER for r in config_resources):
            if any(r.name != "1" for r in config_resources):  # another broker: down
                raise KafkaConnectionError("broker down")
            values = self.broker.broker_configs or {}
            return {
                "broker": {
                    r.name: {k: {"value": values[k]} for k in r.configs or values if k in values}
                    for r in config_resources
                    if r.name == "1"
                }
            }
        out: dict[str, dict[str, Any]] = {}
        for resource in config_resources:
            assert resource.resource_type is ConfigResourceType.TOPIC
            name = resource.name
            if name not in self.broker.topics or name in self.broker.configs_unreadable:
                out[name] = {}
                continue
            values = {**BROKER_TOPIC_DEFAULTS, **self.broker.configs.get(name, {})}
            keys = resource.configs or values
            out[name] = {key: {"value": values[key]} for key in keys if key in values}
        return {"topic": out}

    def describe_metadata_quorum(self) -> dict[str, Any]:
        """DescribeQuorum as a one-node KRaft cluster answers it: the leader's own entry
        carries the controller's clock (broker.cluster_clock_ms)."""
        self.broker.scripted("quorum")
        voter = {"replica_id": 1, "last_fetch_timestamp": self.broker.cluster_clock_ms()}
        partition = {"leader_id": 1, "current_voters": [voter], "error": None}
        return {"topics": [{"topic_name": "__cluster_metadata", "partitions": [partition]}]}

    def describe_cluster(self) -> dict[str, Any]:
        """DescribeCluster of a one-broker cluster (kafka-python's keys)."""
        self.broker.scripted("cluster")
        ids = sorted({1, *self.broker.other_brokers}, key=lambda n: n != self.broker.first_broker)
        brokers = [
            {"broker_id": n, "host": "127.0.0.1", "port": 9092, "rack": None, "is_fenced": False}
            for n in ids
        ]
        return {"cluster_id": self.broker.cluster_id, "controller_id": 1, "brokers": brokers}

    def list_partition_offsets(
        self, topic_partition_specs: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Any]:
        """ListOffsets for the earliest offset (-2): the log start (broker.log_start, else 0)."""
        self.broker.scripted("list_offsets")
        assert set(topic_partition_specs.values()) == {-2}, "only the earliest is asked"
        return {
            tp: OffsetAndTimestamp(self.broker.log_start.get(tp, 0), -1, -1)
            for tp in topic_partition_specs
        }

    def list_group_offsets(
        self, group_specs: dict[str, list[TopicPartition] | None]
    ) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
        """OffsetFetch as kafka-python 3.0.12 answers it: -1 for a partition the group never
        committed (a group never seen alike)."""
        self.broker.scripted("group_offsets")
        out = {}
        for group, partitions in group_specs.items():
            committed = self.broker.group_committed.get(group, {})
            out[group] = {
                tp: OffsetAndMetadata(committed.get(tp, -1), "", -1)
                for tp in partitions or list(committed)
            }
        return out

    def close(self) -> None:
        self.closed = True


class FakeConsumer:
    """KafkaConsumer: a group member (subscribe) or a manually assigned reader (assign)."""

    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.config = config
        self.group = config.get("group_id") is not None
        self.listener: Any = None
        self.subscribed: list[str] = []
        self._assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.closed = False
        self.closed_with: tuple[bool, int | None] | None = None  # (autocommit, timeout_ms)
        self.polls = 0

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.subscribed = list(topics)
        self.listener = listener

    def topics(self) -> set[str]:
        self.broker.scripted("topics")  # a metadata request
        return set(self.broker.topics) - self.broker.unlisted

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned = set(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self.broker.scripted("partitions_for_topic")  # kafka-python may ask the broker
        log = self.broker.topics.get(topic)
        return None if log is None or topic in self.broker.unlisted else set(range(len(log)))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.polls += 1
        self.broker.scripted("poll" if self.group else "restore.poll")
        if self.group and not self._assigned and self.subscribed:
            topic = self.subscribed[0]
            new = {TopicPartition(topic, p) for p in range(len(self.broker.topics[topic]))}
            self._assigned = set(new)
            for tp in new:
                self.positions[tp] = self.broker.committed.get(tp, 0)
            if self.listener is not None:
                self.listener.on_partitions_assigned(new)
        limit = max_records or 500
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for tp in sorted(self._assigned - self.paused):
            if tp.topic in self.broker.stalled or tp in self.broker.stalled:
                continue
            log = self.broker.topics[tp.topic][tp.partition]
            start = self.positions.get(tp, 0)
            records = log[start : start + limit]
            if records:
                out[tp] = records
                self.positions[tp] = start + len(records)
                limit -= len(records)
            if limit <= 0:
                break
        if not out and self.group and not self.paused:  # nothing to read, nothing waiting
            self.broker.on_idle()
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        self.broker.scripted("position" if self.group else "restore.position")
        return self.positions.get(tp, 0)

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int | None = None) -> Any:
        if not partitions:  # as the real clients: an empty ask never reaches the broker
            return {}
        self.broker.scripted("end_offsets" if self.group else "restore.end_offsets")
        return {tp: len(self.broker.topics[tp.topic][tp.partition]) for tp in partitions}

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.broker.scripted("commit")
        group = self.broker.group_committed.setdefault(self.config.get("group_id") or "", {})
        for tp, meta in offsets.items():
            self.broker.committed[tp] = meta.offset
            group[tp] = meta.offset
        self.broker.events.append(("commit", {tp.partition: m.offset for tp, m in offsets.items()}))

    def committed(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        self.broker.scripted("committed")
        return self.broker.committed.get(partition)

    def group_metadata(self) -> str:
        self.broker.scripted("group_metadata")  # CommitFailedError: the member left the group
        return "group-metadata"

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed_with = (autocommit, timeout_ms)
        if self.group and self._assigned and self.listener is not None:
            self.listener.on_partitions_revoked(set(self._assigned))
        self._assigned = set()
        self.closed = True


class FakeFuture:
    """A send's future: resolved at flush() or get(); an acknowledged record is written."""

    def __init__(self, producer: FakeProducer, record: FakeRecord) -> None:
        self.producer = producer
        self.record = record
        self.done = False
        self.error: BaseException | None = None
        self.refused = False  # failed by one of broker.refusals (not by another's)

    def resolve(self) -> None:
        if self.done:
            return
        self.done = True
        broker = self.producer.broker
        try:
            broker.scripted(f"ack:{self.record.topic}")
            for topic, refusal, when in broker.refusals:
                if topic == self.record.topic and when(self.record):
                    raise refusal
        except BaseException as exc:  # the future fails with it
            self.error = exc
            self.refused = any(exc is r for _, r, _ in broker.refusals)
            broker.events.append(("nack", self.record.topic))
            if broker.refusal_fails_in_flight and self.refused:
                # kafka-python 3.0.12: a refusal is fatal to the idempotent producer (abortable
                # to the transactional one) and every record still in flight fails with it
                for other in self.producer.pending:
                    if not other.done:
                        other.done, other.error = True, exc
                        broker.events.append(("nack", other.record.topic))
            return
        broker.events.append(("ack", self.record.topic))
        if self.producer.transactional:
            self.producer.in_transaction.append(self.record)
        else:
            self.producer.write(self.record)

    def succeeded(self) -> bool:
        """kafka-python's: done without an error (resolves nothing)."""
        return self.done and self.error is None

    def get(self, timeout: float | None = None) -> FakeRecord:
        self.resolve()
        if self.error is not None:
            raise self.error
        return self.record


class FakeProducer:
    """KafkaProducer: send/flush/close, and the transactional calls."""

    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.config = config
        self.transactional = config.get("transactional_id") is not None
        self.pending: list[FakeFuture] = []
        self.in_transaction: list[FakeRecord] = []
        self.closed = False

    def write(self, record: FakeRecord) -> None:
        log = self.broker.topics[record.topic][record.partition]
        record.offset = len(log)
        log.append(record)

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(len(self.broker.topics[topic])))

    def send(  # noqa: PLR0917 - kafka-python's signature
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FakeFuture:
        if key is None and value is None:  # as kafka-python's send()
            raise ValueError("Need at least one: key or value")
        self.broker.scripted(f"send:{topic}")
        self.broker.events.append(("send", topic))
        self.broker.sent_timestamps.append((topic, timestamp_ms))
        self.broker.sent_partitions.append((topic, partition))
        stamp = self.broker.producer_clock_ms if timestamp_ms is None else timestamp_ms
        record = FakeRecord(topic, partition or 0, -1, key, value, list(headers or []), stamp)
        future = FakeFuture(self, record)
        self.pending.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Resolve every pending send. Raises UnknownError('Future not done') when a refused
        record shared its partition's batch with others, as kafka-python 3.0.12 does: it splits
        a batch the broker refused as too large, and the split wakes flush() on the old batch,
        which is not done (the futures still tell each record's outcome). A scripted
        KafkaTimeoutError ("flush") is a broker that does not answer within `timeout`."""
        self.broker.scripted("flush")
        pending = self.pending
        for future in pending:
            future.resolve()  # a refusal fails the later ones in self.pending
        self.pending = []
        for future in pending:
            too_large = isinstance(
                future.error, (MessageSizeTooLargeError, RecordListTooLargeError)
            )
            if not (future.refused and too_large):
                continue
            tp = (future.record.topic, future.record.partition)
            if sum((f.record.topic, f.record.partition) == tp for f in pending) > 1:
                raise UnknownError("Future not done")

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def init_transactions(self) -> None:
        self.broker.scripted("init_transactions")

    def begin_transaction(self) -> None:
        self.in_transaction = []
        self.broker.events.append(("txn", "begin"))

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        self.broker.scripted("send_offsets")
        self.offsets = offsets
        self.broker.events.append(("txn", "offsets"))

    def commit_transaction(self) -> None:
        self.broker.scripted("commit_transaction")
        for record in self.in_transaction:
            self.write(record)
        for tp, meta in getattr(self, "offsets", {}).items():
            self.broker.committed[tp] = meta.offset
        self.in_transaction = []
        self.broker.events.append(("txn", "commit"))

    def abort_transaction(self) -> None:
        self.broker.events.append(("txn", "abort"))
        self.broker.scripted("abort_transaction")
        self.in_transaction = []
