"""Smoke tests of the integration broker: the Kafka features the consumer relies on work.

Idempotent keyed producing, group consumption with manual commits, transactions with
read_committed isolation, and (with the launcher's broker) durability across a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

CONSUME_TIMEOUT_S = 30.0


def _produce(producer: KafkaProducer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send ``(key, value)`` records and fail unless the broker acknowledged every one."""
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush()
    for future in futures:
        future.get(timeout=10)  # flush() returns even when a send failed


def _read_partitions(
    consumer: KafkaConsumer, partitions: list[TopicPartition]
) -> list[tuple[bytes, bytes]]:
    """Read assigned ``partitions`` from the beginning up to their end offsets."""
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        assert time.monotonic() < deadline, f"did not reach {end} within {CONSUME_TIMEOUT_S}s"
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend((record.key, record.value) for record in batch)
    return records


def test_idempotent_keyed_produce_and_group_consume_with_manual_commit(
    kafka_bootstrap: str,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
) -> None:
    [topic] = create_topics(unique_name("topic"), partitions=3)
    sent = {f"event-{i:03d}".encode(): f"patient-{i % 10}".encode() for i in range(100)}

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    try:
        _produce(producer, topic, [(key, value) for value, key in sent.items()])
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("group"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    received: list[tuple[bytes, bytes]] = []
    partitions_of_key: dict[bytes, set[int]] = {}
    try:
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(received) < len(sent) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for record in batch:
                    received.append((record.value, record.key))
                    partitions_of_key.setdefault(record.key, set()).add(tp.partition)
                last = batch[-1]
                consumer.commit({tp: OffsetAndMetadata(last.offset + 1, "", last.leader_epoch)})
        partitions = [TopicPartition(topic, p) for p in range(3)]
        end_offsets = consumer.end_offsets(partitions)
        committed = {tp: consumer.committed(tp) for tp in partitions}
    finally:
        consumer.close()

    assert sorted(received) == sorted(sent.items())  # all 100, keys intact, no duplicates
    assert all(len(found) == 1 for found in partitions_of_key.values()), partitions_of_key
    assert sum(end_offsets.values()) == len(sent)
    assert committed == end_offsets


def test_read_committed_consumer_sees_only_committed_transactions(
    kafka_bootstrap: str,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
) -> None:
    [topic] = create_topics(unique_name("topic"))
    committed = [(b"patient-1", f"committed-{i}".encode()) for i in range(10)]
    aborted = [(b"patient-1", f"aborted-{i}".encode()) for i in range(5)]

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("txn"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        _produce(producer, topic, committed[:5])
        producer.commit_transaction()
        producer.begin_transaction()
        _produce(producer, topic, aborted)
        producer.abort_transaction()
        producer.begin_transaction()
        _produce(producer, topic, committed[5:])
        producer.commit_transaction()
    finally:
        producer.close()

    partitions = [TopicPartition(topic, 0)]
    results: dict[str, list[tuple[bytes, bytes]]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, isolation_level=isolation)
        try:
            results[isolation] = _read_partitions(consumer, partitions)
        finally:
            consumer.close()

    assert results["read_committed"] == committed
    assert results["read_uncommitted"] == committed[:5] + aborted + committed[5:]


@pytest.mark.fault
def test_records_survive_a_broker_restart(
    local_kafka: Any,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
) -> None:
    [topic] = create_topics(unique_name("topic"))
    records = [(f"patient-{i}".encode(), f"event-{i}".encode()) for i in range(20)]
    producer = KafkaProducer(bootstrap_servers=local_kafka.bootstrap, acks="all")
    try:
        _produce(producer, topic, records)
    finally:
        producer.close()

    local_kafka.restart()

    consumer = KafkaConsumer(bootstrap_servers=local_kafka.bootstrap)
    try:
        assert _read_partitions(consumer, [TopicPartition(topic, 0)]) == records
    finally:
        consumer.close()
