"""The contract of the kafka-python calls the runtime makes, held by the in-memory fakes
(tests/runtime/fakes.py), by the real client and by the optional librdkafka transport
(HER2_KAFKA_CLIENT=confluent, consumer/runtime/kafka/confluent.py; skipped when confluent-kafka
is not installed) against the session's broker alike (arroyo's tests/backends/mixins.py):
every case runs on each backend, which build their clients through the `Clients` protocol and
the service's own config builders. A case that fails on the fakes
only means the fakes lie to tests/runtime; fix the fakes, not the case.

What the fakes model more simply than the real client, on purpose (no case depends on it):
- one consumer group per FakeBroker (commits are not keyed by group; the service has one group);
- a refusal under a size limit is decided per record (key + value + headers bytes), where the
  broker measures the record batch; the cases keep sizes far from the limit;
- a refused record fails every later record of the flush on every partition; kafka-python fails
  those still in flight, and a batch already acknowledged on another partition succeeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import make_env
from kafka.errors import IllegalGenerationError, MessageSizeTooLargeError

from consumer.config import Settings
from consumer.errors import ConfigError, OffsetsRefusedError
from consumer.runtime.host import _quorum_leader_time_ms
from consumer.runtime.kafka import (
    REBALANCED,
    REFUSED_FOR_GOOD,
    Admin,
    Clients,
    ConfigResource,
    ConfigResourceType,
    Consumer,
    KafkaError,
    OffsetAndMetadata,
    TopicPartition,
)
from consumer.runtime.kafka.clients import (
    KafkaClients,
    consumer_config,
    restore_consumer_config,
)
from consumer.runtime.kafka.mapping import MappedConsumer
from consumer.runtime.kafka.preflight import connect_admin
from consumer.runtime.kafka.producer import ProducerHandle
from consumer.runtime.records import Output
from consumer.runtime.startup import (
    CHANGELOG_CONFIGS,
    check_changelog_retention,
    check_history_not_lost,
    check_session_timeout,
    partition_counts,
)


def _import_fakes(path: Path = Path(__file__).parents[1] / "runtime" / "fakes.py") -> ModuleType:
    """tests/runtime/fakes.py under the name tests/runtime imports it by (one module, whichever
    folder a session collects first)."""
    if "fakes" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fakes", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["fakes"] = module
        spec.loader.exec_module(module)
    return sys.modules["fakes"]


fakes = _import_fakes()

DEFAULT_ID = "contract"
POLL_MS = 200
REAL_WAIT_S = 30.0  # how long the real client may take to deliver what a case waits for
REAL_QUIET_S = 1.5  # how long the real client must stay quiet to show it returns nothing
MAX_MESSAGE_BYTES = 10_000
SMALL = 100
LARGE = 5 * MAX_MESSAGE_BYTES  # far above the limit, far below MAX_REQUEST_BYTES
CLOCK_SLACK_MS = 5_000


@dataclass
class Backend:
    """Topics, the service's settings and clients on one implementation of `Clients`; the
    clients made here are closed when the test ends."""

    name: str
    clients: Clients
    settings: Settings
    make_topic: Callable[[str, int, int | None], None]
    wait_s: float  # 0: everything a case waits for is there at the first poll (the fakes)
    quiet_s: float
    unique_name: Callable[[str], str]
    closers: list[Callable[[], None]] = field(default_factory=list)

    def topic(self, partitions: int = 1, max_message_bytes: int | None = None) -> str:
        """A new topic (`max_message_bytes`: the topic's max.message.bytes)."""
        name = self.unique_name("topic")
        self.make_topic(name, partitions, max_message_bytes)
        return name

    def reader(self) -> Consumer:
        """A consumer without a group: the service's changelog reader."""
        consumer = self.clients.consumer(**restore_consumer_config(self.settings, DEFAULT_ID))
        self.closers.append(lambda: consumer.close(autocommit=False))
        return consumer

    def member(self, group: str) -> Consumer:
        """A consumer of `group`: the service's group member configuration."""
        settings = dataclasses.replace(self.settings, group_id=group)
        consumer = self.clients.consumer(**consumer_config(settings, DEFAULT_ID))
        self.closers.append(lambda: consumer.close(autocommit=False))
        return consumer

    def producer(self) -> ProducerHandle:
        """The service's producer (at-least-once: idempotent, not transactional)."""
        handle = ProducerHandle(self.clients, self.settings, DEFAULT_ID)
        self.closers.append(lambda: handle.close(1.0))
        return handle

    def admin(self) -> Admin:
        """The service's admin client (a broker that does not answer fails the test at once:
        the first wait between attempts says stop)."""
        admin = connect_admin(
            self.clients,
            self.settings,
            DEFAULT_ID,
            wait=lambda _seconds: True,
            set_ready=lambda *_args: None,
            beat=lambda: None,
        )
        assert admin is not None, "no broker answered"
        self.closers.append(admin.close)
        return admin

    def poll_until(
        self, consumer: Consumer, done: Callable[[list[Any]], bool], what: str
    ) -> list[Any]:
        """Poll, collecting records, until `done(records)`; fail after `wait_s`."""
        records: list[Any] = []
        deadline = time.monotonic() + self.wait_s
        while True:
            for batch in consumer.poll(timeout_ms=POLL_MS).values():
                records.extend(batch)
            if done(records):
                return records
            assert time.monotonic() < deadline, f"{self.name}: {what} not within {self.wait_s}s"

    def poll_for(self, consumer: Consumer) -> list[Any]:
        """Every record polls return during `quiet_s` (one poll on the fakes)."""
        records: list[Any] = []
        deadline = time.monotonic() + self.quiet_s
        while True:
            for batch in consumer.poll(timeout_ms=POLL_MS).values():
                records.extend(batch)
            if time.monotonic() >= deadline:
                return records


def _fake_backend(unique_name: Callable[[str], str]) -> Backend:
    broker = fakes.FakeBroker()

    def make_topic(name: str, partitions: int, max_message_bytes: int | None) -> None:
        broker.create_topic(name, partitions)
        if max_message_bytes is not None:
            broker.configs[name] = {"max.message.bytes": str(max_message_bytes)}
            broker.refuse(
                name,
                MessageSizeTooLargeError(),
                when=lambda record: _record_bytes(record) > max_message_bytes,
            )

    settings = make_env("fake-broker:9092", unique_name).settings()
    return Backend("fakes", broker, settings, make_topic, 0.0, 0.0, unique_name)


def _real_backend(request: pytest.FixtureRequest, unique_name: Callable[[str], str]) -> Backend:
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    create_topics: Callable[..., list[str]] = request.getfixturevalue("create_topics")

    def make_topic(name: str, partitions: int, max_message_bytes: int | None) -> None:
        config = {} if max_message_bytes is None else {"max.message.bytes": str(max_message_bytes)}
        create_topics(name, partitions=partitions, config=config)

    settings = make_env(bootstrap, unique_name).settings()
    if request.param == "confluent":
        pytest.importorskip("confluent_kafka", reason="the confluent extra is not installed")
        from consumer.runtime.kafka.confluent import ConfluentClients  # noqa: PLC0415

        clients: Clients = ConfluentClients()
    else:
        clients = KafkaClients()
    return Backend(
        request.param, clients, settings, make_topic, REAL_WAIT_S, REAL_QUIET_S, unique_name
    )


def _record_bytes(record: Any) -> int:
    headers = sum(len(k) + len(v) for k, v in record.headers)
    return len(record.key or b"") + len(record.value or b"") + headers


@pytest.fixture(params=["fakes", "kafka-python", "confluent"])
def backend(request: pytest.FixtureRequest, unique_name: Callable[[str], str]) -> Iterator[Backend]:
    """The same small interface over the fakes and over the real client (the real broker is
    started only for the latter)."""
    if request.param == "fakes":
        made = _fake_backend(unique_name)
    else:
        made = _real_backend(request, unique_name)
    yield made
    for close in reversed(made.closers):
        with contextlib.suppress(Exception):
            close()


def _send_all(handle: ProducerHandle, records: list[dict[str, Any]]) -> list[Any]:
    """Send `records` (send()'s keyword arguments) and flush; each send's outcome: its
    metadata, or the exception its future failed with.

    flush() may raise a KafkaError while futures are still pending (kafka-python 3.0.12, after
    splitting a batch the broker refused as too large; the fakes do the same): as the
    service's send_and_wait, the futures say what happened to each record.
    """
    producer = handle.producer
    futures = [producer.send(**record) for record in records]
    with contextlib.suppress(KafkaError):
        producer.flush(timeout=20)
    outcomes: list[Any] = []
    for future in futures:
        try:
            outcomes.append(future.get(timeout=20))
        except KafkaError as exc:
            outcomes.append(exc)
    return outcomes


def test_records_read_back_as_sent(backend: Backend) -> None:
    """Key, value, headers, explicit partition and timestamp survive the round trip;
    end_offsets counts the records and the position after reading them is the end."""
    topic = backend.topic(partitions=2)
    base_ms = int(time.time() * 1000) - 600_000  # in the past: the broker keeps CreateTime
    sent = [
        {
            "topic": topic,
            "key": f"key-{i}".encode(),
            "value": f"value-{i}".encode() * (i + 1),
            "headers": [("her2.n", str(i).encode()), ("her2.empty", b"")],
            "partition": i % 2,
            "timestamp_ms": base_ms + i,
        }
        for i in range(6)
    ]
    outcomes = _send_all(backend.producer(), sent)
    assert not [o for o in outcomes if isinstance(o, BaseException)]

    reader = backend.reader()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    reader.assign(tps)
    reader.seek_to_beginning(*tps)
    end = reader.end_offsets(tps)
    assert end == {tps[0]: 3, tps[1]: 3}
    records = backend.poll_until(reader, lambda got: len(got) >= len(sent), "6 records")

    def as_sent(r: Any) -> tuple[Any, ...]:
        return (r.key, r.value, [tuple(h) for h in r.headers], r.partition, r.timestamp)

    expected = [
        (s["key"], s["value"], s["headers"], s["partition"], s["timestamp_ms"]) for s in sent
    ]
    assert sorted(as_sent(r) for r in records) == sorted(expected)
    for tp in tps:
        assert [r.offset for r in records if r.partition == tp.partition] == [0, 1, 2]
        assert reader.position(tp) == end[tp]


@pytest.mark.parametrize("membership", ["assign", "subscribe"])
def test_committed_offsets_of_a_group(backend: Backend, membership: str) -> None:
    """committed() is None before the group's first commit, then the offset committed, also
    for the next member of the group. Both an assign()-ed consumer with a group id (no
    membership, as kafka-python commits for it) and a subscribed member once its first polls
    joined the group (the service's way) can commit."""
    topic = backend.topic(partitions=1)
    tp = TopicPartition(topic, 0)
    _send_all(backend.producer(), [{"topic": topic, "value": b"v", "partition": 0}] * 3)
    group = backend.unique_name("group")
    member = backend.member(group)
    if membership == "assign":
        member.assign([tp])
    else:
        member.subscribe([topic])
        # the service's way (runtime/service.py): metadata before the first join, otherwise
        # kafka-python may assign nothing ("No partition metadata for topic"; seen once in CI)
        member.topics()
        backend.poll_until(member, lambda _: tp in member.assignment(), "the assignment")
    assert member.committed(tp) is None

    member.commit({tp: OffsetAndMetadata(2, "", -1)})
    assert member.committed(tp) == 2
    member.close(autocommit=False)
    assert backend.member(group).committed(tp) == 2


def test_a_record_above_the_topics_limit_is_refused_for_good(backend: Backend) -> None:
    """The large record fails with MessageSizeTooLargeError (refused for good); every other
    record of the same flush succeeds or fails with that error class (kafka-python 3.0.12 fails
    those in flight with it; the fakes fail all later ones). A renewed producer (the service's
    renew()) then sends a small record; the topic holds exactly the acknowledged records."""
    topic = backend.topic(partitions=2, max_message_bytes=MAX_MESSAGE_BYTES)
    handle = backend.producer()
    handle.warm_up([topic])
    sizes = [SMALL, SMALL, SMALL, LARGE, SMALL, SMALL, SMALL, SMALL]
    records = [
        {"topic": topic, "key": b"k%d" % i, "value": b"v" * size, "partition": i % 2}
        for i, size in enumerate(sizes)
    ]
    outcomes = _send_all(handle, records)

    large = outcomes[3]
    assert isinstance(large, MessageSizeTooLargeError)
    assert isinstance(large, REFUSED_FOR_GOOD)
    others = outcomes[:3] + outcomes[4:]
    failed = [o for o in others if isinstance(o, BaseException)]
    assert all(isinstance(o, MessageSizeTooLargeError) for o in failed), failed

    handle.renew()
    [after] = _send_all(handle, [{"topic": topic, "key": b"after", "value": b"small"}])
    assert not isinstance(after, BaseException), after

    reader = backend.reader()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    end = reader.end_offsets(tps)
    assert sum(end.values()) == len(others) - len(failed) + 1


def test_admin_lists_a_groups_committed_offsets_and_startup_reads_them(
    backend: Backend,
) -> None:
    """list_group_offsets gives -1 for a partition the group never committed (a group never
    seen alike), the offset for one it did, and list_partition_offsets the log start (-2);
    start-up refuses to create a missing changelog for a group with an offset past the log
    start (its history would be gone), not for a new group."""
    topic = backend.topic(partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    _send_all(backend.producer(), [{"topic": topic, "value": b"v", "partition": 1}] * 3)
    group, fresh = backend.unique_name("group"), backend.unique_name("fresh")
    member = backend.member(group)
    member.assign([tps[1]])
    member.commit({tps[1]: OffsetAndMetadata(3, "", -1)})
    admin = backend.admin()

    found = admin.list_group_offsets({group: tps, fresh: tps})
    assert {tp.partition: meta.offset for tp, meta in found[group].items()} == {0: -1, 1: 3}
    assert {meta.offset for meta in found[fresh].values()} <= {-1}

    topics = dataclasses.replace(backend.settings.topics, input=topic)
    settings = dataclasses.replace(backend.settings, group_id=group, topics=topics)
    earliest = admin.list_partition_offsets(dict.fromkeys(tps, -2))
    assert {tp.partition: o.offset for tp, o in earliest.items()} == {0: 0, 1: 0}
    with pytest.raises(ConfigError, match=r"processed records of HER2_INPUT_TOPIC .*\[1\]"):
        check_history_not_lost(admin, settings, 2)
    check_history_not_lost(admin, dataclasses.replace(settings, group_id=fresh), 2)


def test_admin_describes_the_brokers_session_bounds_and_startup_reads_them(
    backend: Backend,
) -> None:
    """describe_cluster names a broker whose DescribeConfigs gives the group session bounds;
    start-up accepts the service's session timeout inside them, refuses one above."""
    admin = backend.admin()
    [broker, *_] = admin.describe_cluster()["brokers"]
    assert isinstance(broker["broker_id"], int)
    check_session_timeout(admin, backend.settings)
    tuning = dataclasses.replace(backend.settings.tuning, session_timeout_ms=3_600_000)
    with pytest.raises(ConfigError, match=r"group\.max\.session\.timeout\.ms=\d+\)"):
        check_session_timeout(admin, dataclasses.replace(backend.settings, tuning=tuning))


def test_admin_describes_topics_and_the_quorum_leaders_clock(backend: Backend) -> None:
    """describe_topics lists the partitions (kafka-python's keys; a missing topic has error
    code 3, UNKNOWN_TOPIC_OR_PARTITION), and the KRaft quorum leader's own last fetch time is
    the cluster's clock (start-up's clock check reads it)."""
    topic = backend.topic(partitions=3)
    missing = backend.unique_name("missing")
    admin = backend.admin()

    described = {info["name"]: info for info in admin.describe_topics([topic, missing])}
    assert described[topic]["error_code"] == 0
    assert sorted(p["partition_index"] for p in described[topic]["partitions"]) == [0, 1, 2]
    assert described[missing]["error_code"] == 3
    assert described[missing]["partitions"] == []
    assert partition_counts(admin, [topic, missing]) == {topic: 3}

    before_ms = time.time() * 1000
    leader_ms = _quorum_leader_time_ms(admin.describe_metadata_quorum())
    after_ms = time.time() * 1000
    assert leader_ms is not None
    assert before_ms - CLOCK_SLACK_MS <= leader_ms <= after_ms + CLOCK_SLACK_MS


def test_admin_describes_a_topics_retention_and_startup_reads_it(backend: Backend) -> None:
    """describe_configs (filter "all") gives a topic's settings with the broker's defaults as
    kafka-python returns them; start-up's changelog check refuses a topic created with the
    defaults (cleanup.policy=delete), accepts the changelog it creates itself, and only warns
    when nothing is answered (a missing topic here; no DescribeConfigs permission alike)."""
    admin = backend.admin()
    plain = backend.topic()
    changelog = backend.unique_name("changelog")
    spec = {"num_partitions": 1, "replication_factor": 1, "configs": dict(CHANGELOG_CONFIGS)}
    created = admin.create_topics({changelog: spec}, raise_errors=False)
    assert [entry["error_code"] for entry in created["topics"]] == [0]
    admin.wait_for_topics([changelog], timeout_ms=30_000)
    missing = backend.unique_name("missing")
    keys = dict.fromkeys(["cleanup.policy", "min.compaction.lag.ms"])
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=keys)
        for name in (plain, changelog, missing)
    ]
    found = admin.describe_configs(resources, config_filter="all")["topic"]
    values = {name: {k: v["value"] for k, v in found[name].items()} for name in found}
    assert values[plain] == {"cleanup.policy": "delete", "min.compaction.lag.ms": "0"}
    assert values[changelog] == CHANGELOG_CONFIGS
    assert values.get(missing, {}) == {}

    with pytest.raises(ConfigError, match=f"{plain} has cleanup.policy=delete"):
        check_changelog_retention(admin, plain)
    check_changelog_retention(admin, changelog)
    check_changelog_retention(admin, missing)


def test_a_paused_partition_returns_nothing_until_resumed(backend: Backend) -> None:
    """Records of a paused partition are not returned by poll (the other partition's are);
    after resume() they are, from where the partition was."""
    topic = backend.topic(partitions=2)
    paused, running = TopicPartition(topic, 0), TopicPartition(topic, 1)
    records = [{"topic": topic, "value": b"v%d" % i, "partition": i % 2} for i in range(6)]
    _send_all(backend.producer(), records)

    reader = backend.reader()
    reader.assign([paused, running])
    reader.seek_to_beginning(paused, running)
    reader.pause(paused)
    got = backend.poll_until(reader, lambda got: len(got) >= 3, "the running partition")
    got += backend.poll_for(reader)
    assert sorted((r.partition, r.offset) for r in got) == [(1, 0), (1, 1), (1, 2)]

    reader.resume(paused)
    got = backend.poll_until(reader, lambda got: len(got) >= 3, "the resumed partition")
    assert sorted((r.partition, r.offset) for r in got) == [(0, 0), (0, 1), (0, 2)]
    assert reader.position(paused) == 3


@pytest.mark.parametrize("before", [0, 2])
def test_a_partition_read_to_its_end_paused_and_resumed_returns_the_next_record(
    backend: Backend, before: int
) -> None:
    """A group member reads its partition to the end (`before` records, then nothing), is
    paused, a record arrives, and it is resumed (the service pauses and resumes partitions
    around a restore, librdkafka around every cooperative rebalance): the record is returned.
    librdkafka 2.12's batch consume (rd_kafka_consume_batch, confluent-kafka's consume())
    advanced the application position to the partition EOF's offset + 1 (librdkafka #4844), and
    resuming fetches from there: the first record after the end was skipped for good (three
    exactly-once processes lost one event each, their offsets committed past it)."""
    topic = backend.topic(partitions=1)
    tp = TopicPartition(topic, 0)
    handle = backend.producer()
    _send_all(handle, [{"topic": topic, "value": b"old", "partition": 0}] * before)
    member = backend.member(backend.unique_name("group"))
    member.assign([tp])
    got = backend.poll_until(member, lambda got: len(got) >= before, "the records before")
    deadline = time.monotonic() + backend.quiet_s
    while True:  # nothing more: polls that drain what is fetched (the EOF event included)
        for batch in member.poll(timeout_ms=0).values():
            got.extend(batch)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    assert [r.offset for r in got] == list(range(before))

    member.pause(tp)
    outcomes = _send_all(handle, [{"topic": topic, "value": b"next", "partition": 0}])
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    member.resume(tp)
    got = backend.poll_until(member, lambda got: len(got) >= 1, "the record after the end")
    assert [(r.offset, r.value) for r in got] == [(before, b"next")]


def test_a_transactional_partition_read_to_its_end_is_positioned_at_the_end_offset(
    backend: Backend,
) -> None:
    """Under exactly-once the changelog ends with a transaction's commit marker: end_offsets
    (read_committed) counts it, and a reader that returned every record is positioned at that
    end offset, past the marker (the restore reads until position >= end). librdkafka returns
    its partition EOF event possibly before records fetched ahead of it: the position must
    never pass a record not yet returned."""
    topic = backend.topic(partitions=1)
    tp = TopicPartition(topic, 0)
    settings = dataclasses.replace(backend.settings, processing_guarantee="exactly_once")
    handle = ProducerHandle(backend.clients, settings, backend.unique_name("txn")[-40:])
    backend.closers.append(lambda: handle.close(1.0))
    producer = handle.producer
    for batch in range(3):
        producer.begin_transaction()
        sent = handle.send_and_wait(
            [Output(topic, b"k%d" % i, b"v%d-%d" % (batch, i), partition=0) for i in range(100)]
        )
        assert not sent.failed
        assert not sent.refused
        producer.commit_transaction()

    reader = backend.reader()
    reader.assign([tp])
    reader.seek_to_beginning(tp)
    end = reader.end_offsets([tp])[tp]

    def at_end(got: list[Any]) -> bool:
        position = reader.position(tp)
        if len(got) < 300:
            returned = got[-1].offset + 1 if got else 0
            assert position <= returned, "positioned past a record not returned yet"
        return position >= end

    records = backend.poll_until(reader, at_end, "the end offset")
    assert len(records) == 300
    assert [r.value for r in records[:2]] == [b"v0-0", b"v0-1"]


@pytest.fixture(params=["kafka-python", "confluent"])
def real_backend(
    request: pytest.FixtureRequest, unique_name: Callable[[str], str]
) -> Iterator[Backend]:
    """The real clients only: the fakes model no group generations."""
    made = _real_backend(request, unique_name)
    yield made
    for close in reversed(made.closers):
        with contextlib.suppress(Exception):
            close()


def _group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state and member count as its coordinator describes them."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - conftest imported it under its filter

    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        described = admin.describe_groups([group])[group]
    return str(described.get("group_state") or described.get("state")), len(described["members"])


def test_offsets_of_a_generation_a_rebalance_ended_are_refused_and_the_batch_runs_again(
    real_backend: Backend, kafka_bootstrap: str
) -> None:
    """The exactly-once race (loop.py, OffsetsRefusedError): member A reads its group metadata
    for the open transaction's offsets, a second member joins and the rebalance completes (on
    librdkafka in A's background thread, A not polling; kafka-python rejoins inside A's poll),
    then the offsets reach the group coordinator with A's ended generation. The client's error
    is one ProducerHandle classifies as REBALANCED: it aborts and raises OffsetsRefusedError,
    nothing of the transaction is visible to read_committed readers, no offset is committed,
    and the same producer then runs the batch again in a new transaction with the metadata of
    the new generation (the service's re-run, without a restart)."""
    backend = real_backend
    source, sink = backend.topic(partitions=2), backend.topic(partitions=1)
    tps = [TopicPartition(source, 0), TopicPartition(source, 1)]
    group = backend.unique_name("group")
    a = MappedConsumer(backend.member(group))  # the service's group member: errors mapped
    a.subscribe([source])
    a.topics()
    backend.poll_until(a, lambda _: a.assignment() == set(tps), "A's assignment")

    settings = dataclasses.replace(backend.settings, processing_guarantee="exactly_once")
    handle = ProducerHandle(backend.clients, settings, backend.unique_name("txn")[-40:])
    backend.closers.append(lambda: handle.close(1.0))
    outputs = [Output(sink, b"k%d" % i, b"v%d" % i, partition=0) for i in range(5)]
    offsets = {tp: OffsetAndMetadata(3, "", -1) for tp in tps}
    members_before = _group_state(kafka_bootstrap, group)
    assert members_before == ("Stable", 1), members_before

    def metadata_then_rebalance() -> Any:
        metadata = a.group_metadata()  # what the service reads for send_offsets_to_transaction
        b = backend.member(group)
        b.subscribe([source])
        deadline = time.monotonic() + REAL_WAIT_S
        while _group_state(kafka_bootstrap, group) != ("Stable", 2):
            assert time.monotonic() < deadline, "the rebalance did not complete"
            b.poll(timeout_ms=POLL_MS)
            if backend.name == "kafka-python":
                a.poll(timeout_ms=0)  # kafka-python rejoins only inside poll()
        return metadata

    failures: list[int] = []
    with pytest.raises(OffsetsRefusedError) as refused:
        handle.transaction(
            outputs, lambda: None, offsets, metadata_then_rebalance, lambda: failures.append(1)
        )
    assert failures == [1]
    refusal = refused.value.__context__  # the client's error, mapped by the adapter
    assert isinstance(refusal, REBALANCED), refusal
    if backend.name == "confluent":
        # librdkafka: ILLEGAL_GENERATION from TxnOffsetCommit, an abortable transaction error
        # (neither fatal nor a fenced producer), raised by send_offsets_to_transaction itself
        assert isinstance(refusal, IllegalGenerationError), refusal
        [raw] = refusal.__cause__.args
        assert (raw.txn_requires_abort(), raw.fatal()) == (True, False)

    reader = backend.reader()
    sink_tp = TopicPartition(sink, 0)
    reader.assign([sink_tp])
    reader.seek_to_beginning(sink_tp)
    assert backend.poll_for(reader) == []  # aborted: nothing visible under read_committed
    assert [a.committed(tp) for tp in tps] == [None, None]

    # the re-run: the same producer, a new transaction, the new generation's metadata
    handle.transaction(outputs, lambda: None, offsets, a.group_metadata, lambda: None)
    records = backend.poll_until(reader, lambda got: len(got) >= 5, "the re-run's records")
    assert [r.value for r in records] == [o.value for o in outputs]
    assert [a.committed(tp) for tp in tps] == [3, 3]


def test_offsets_of_a_member_that_left_the_group_are_refused(
    real_backend: Backend, kafka_bootstrap: str
) -> None:
    """Member A does not poll for longer than max.poll.interval.ms (a batch stuck in a slow
    transaction): it leaves the group and B takes both partitions. The transaction A then
    ends must not commit offsets of partitions B owns: refused as a rebalance (OffsetsRefusedError
    after the abort), nothing committed, nothing visible. librdkafka's metadata is refused by
    the coordinator (UNKNOWN_MEMBER_ID); kafka-python's has no generation (it reset it when the
    member left) and the coordinator would accept it, so the service's mapped consumer refuses it
    (CommitRefusedError, NoGroupGeneration) before it is sent."""
    backend = real_backend
    source, sink = backend.topic(partitions=2), backend.topic(partitions=1)
    tps = [TopicPartition(source, 0), TopicPartition(source, 1)]
    group = backend.unique_name("group")
    short = dataclasses.replace(
        backend.settings.tuning,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=2000,  # librdkafka: at least the session timeout
    )
    member_settings = dataclasses.replace(backend.settings, group_id=group, tuning=short)
    a = MappedConsumer(backend.clients.consumer(**consumer_config(member_settings, DEFAULT_ID)))
    backend.closers.append(lambda: a.close(autocommit=False))
    a.subscribe([source])
    a.topics()
    backend.poll_until(a, lambda _: a.assignment() == set(tps), "A's assignment")

    settings = dataclasses.replace(backend.settings, processing_guarantee="exactly_once")
    handle = ProducerHandle(backend.clients, settings, backend.unique_name("txn")[-40:])
    backend.closers.append(lambda: handle.close(1.0))
    b = backend.member(group)
    b.subscribe([source])
    backend.poll_until(b, lambda _: b.assignment() == set(tps), "B's taking both partitions")

    outputs = [Output(sink, b"k", b"v", partition=0)]
    offsets = {tp: OffsetAndMetadata(3, "", -1) for tp in tps}
    with pytest.raises(OffsetsRefusedError):
        handle.transaction(outputs, lambda: None, offsets, a.group_metadata, lambda: None)
    assert [b.committed(tp) for tp in tps] == [None, None]
    reader = backend.reader()
    reader.assign([TopicPartition(sink, 0)])
    reader.seek_to_beginning(TopicPartition(sink, 0))
    assert backend.poll_for(reader) == []
