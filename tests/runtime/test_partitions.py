"""PartitionTable: rebalance callbacks on kafka-python's IO thread, the registry back-off per
partition. (The first test is ported from tests/unit/test_statestore.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

from fakes import FakeBroker
from prometheus_client import CollectorRegistry

from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.records import Backoff
from consumer.state.backends import DISK, DiskStates, StateDir, open_states
from consumer.state.store import HistoryStore, patient_key


def _table(**kwargs: object) -> tuple[PartitionTable, FakeBroker]:
    broker = FakeBroker()
    broker.create_topic("in", 2)
    table = PartitionTable(
        "in",
        Metrics(CollectorRegistry(), "t"),
        lambda *a: None,
        **kwargs,  # type: ignore[arg-type]
    )
    consumer = broker.consumer(group_id="g")
    consumer.assign([TopicPartition("in", 0), TopicPartition("in", 1)])
    table.attach(consumer)
    return table, broker


def test_a_revoked_partitions_file_is_deleted_from_the_io_thread(tmp_path: Path) -> None:
    """kafka-python 3.0.12 calls the rebalance listener on its IO thread while the main thread
    waits in poll(): a store made on the main thread is closed there (no sqlite thread error),
    its file is deleted, and the other partition's store is untouched until the table closes."""
    table, _ = _table()
    directory = StateDir(tmp_path)
    tp0, tp1 = TopicPartition("in", 0), TopicPartition("in", 1)
    disk = {tp: open_states(DISK, directory, f"p{tp.partition}") for tp in (tp0, tp1)}
    files = {tp: states.path for tp, states in disk.items() if isinstance(states, DiskStates)}
    for tp, states in disk.items():
        table.stores[tp] = HistoryStore(states=states)
        table.stores[tp].restore(patient_key("P1"), None)  # the connection is used on this thread
    failures: list[BaseException] = []

    def io_thread() -> None:
        try:
            table.listener().on_partitions_revoked([tp0])
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    worker = threading.Thread(target=io_thread, name="kafka-io-test")
    worker.start()
    worker.join()
    assert failures == []
    assert not files[tp0].exists()
    assert files[tp1].is_file()
    table.close()
    directory.close()
    assert not files[tp1].exists()
    assert not directory.path.exists()


def test_an_assignment_pauses_the_partitions_until_restored() -> None:
    table, broker = _table()
    tp0 = TopicPartition("in", 0)
    table.listener().on_partitions_assigned({tp0})
    consumer = broker.consumers[0]
    assert table.pending == {tp0}
    assert consumer.paused == {tp0}
    table.restored({tp0: HistoryStore()})
    assert table.pending == set()
    assert consumer.paused == set()


def test_a_partition_waiting_for_the_registry_resumes_after_its_back_off() -> None:
    now = [100.0]
    table, broker = _table(backoff=Backoff((1.0, 5.0)), monotonic=lambda: now[0])
    consumer = broker.consumers[0]
    tp = TopicPartition("in", 1)
    table.retry_later(tp, 7)
    assert consumer.positions[tp] == 7
    assert tp in consumer.paused
    now[0] += 0.5
    table.resume_due()
    assert tp in consumer.paused
    now[0] += 0.5
    table.resume_due()
    assert tp not in consumer.paused
    table.retry_later(tp, 7)
    assert table.backoff_until[tp] == now[0] + 5.0, "the second attempt waits longer"
    table.progressed([tp])
    assert tp not in table.backoff_step


def test_a_partition_held_back_is_not_resumed_by_an_earlier_back_off() -> None:
    """A partition waiting out the registry back-off, then held back after its restore
    (block): the back-off's end must not resume it (its records would be polled and dropped,
    every poll)."""
    now = [100.0]
    table, broker = _table(backoff=Backoff((1.0,)), monotonic=lambda: now[0])
    consumer = broker.consumers[0]
    tp = TopicPartition("in", 1)
    table.retry_later(tp, 7)
    table.block(tp, "changelog unreadable")
    now[0] += 2.0
    table.resume_due()
    assert tp in consumer.paused
    assert table.readiness() == (False, "changelog unreadable")


def test_the_next_offset_is_where_a_rerun_starts_until_restored() -> None:
    """The restore's offset guard: a re-run (redrive) resumes at its first record, not at the
    committed offset, until the partition's history is restored or the partition revoked."""
    table, broker = _table()
    consumer = broker.consumers[0]
    tp0, tp1 = TopicPartition("in", 0), TopicPartition("in", 1)
    broker.committed[tp0] = 3
    broker.committed[tp1] = 4
    assert table.next_offset(tp0, 1000) == 3
    table.redrive({tp0: 5, tp1: 6})
    assert (table.next_offset(tp0, 1000), table.next_offset(tp1, 1000)) == (5, 6)
    assert consumer.positions[tp0] == 5
    table.restored({tp0: HistoryStore()})
    table.listener().on_partitions_revoked([tp1])
    assert (table.next_offset(tp0, 1000), table.next_offset(tp1, 1000)) == (3, 4)
