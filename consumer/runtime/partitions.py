"""The assignment table: each owned input partition's history store, the partitions waiting for
a restore, the registry back-off per partition, and the rebalance listener.

kafka-python 3.x runs rebalance callbacks on the consumer's IO thread while the main thread is
blocked inside `poll()`/`close()`: there is never a batch in flight then (batches are committed
before the next poll), and the callbacks must not call the consumer's blocking APIs nor block
heartbeats. So `on_assigned` only pauses the new partitions and marks them for restore, and
`on_revoked` drops (closes) their stores.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from consumer.errors import kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import Consumer, ConsumerRebalanceListener, TopicPartition
from consumer.runtime.records import BROKER_UNREACHABLE, REGISTRY_BACKOFF, Backoff, input_missing
from consumer.state.store import HistoryStore

log = get_logger("her2.service")


class PartitionTable:
    """Owned partitions and their state; the listener's callbacks run on the IO thread."""

    def __init__(
        self,
        input_topic: str,
        metrics: Metrics,
        set_ready: Callable[..., None],
        *,
        backoff: Backoff = REGISTRY_BACKOFF,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Empty; `attach()` gives it the consumer."""
        self._input_topic = input_topic
        self._metrics = metrics
        self._set_ready = set_ready
        self._backoff = backoff
        self._monotonic = monotonic
        self.consumer: Consumer | None = None
        self.stores: dict[TopicPartition, HistoryStore] = {}
        self.pending: set[TopicPartition] = set()
        # partitions whose changelog was too unreadable to trust (runtime/restore.py): held
        # paused, never processed, the reason in /readyz until revoked or the service restarts
        self.blocked: dict[TopicPartition, str] = {}
        self.backoff_until: dict[TopicPartition, float] = {}
        self.backoff_step: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        # where a batch that was not delivered runs again (redrive): the next offset to process
        # there, which the restore's offset guard must use instead of the committed offset
        self.rerun_from: dict[TopicPartition, int] = {}
        self.input_partition_count = 0  # last count seen (routing check)
        # the broker did not answer the loop's last poll or lag refresh (design.md: /readyz
        # needs the broker reachable); the loop sets it
        self.broker_unreachable = False
        # the broker answers without the input topic (deleted while the service runs)
        self.input_missing = False

    def attach(self, consumer: Consumer) -> None:
        """The group member whose partitions this table tracks."""
        self.consumer = consumer

    def _consumer(self) -> Consumer:
        assert self.consumer is not None, "attach() first"
        return self.consumer

    def committed(self, tp: TopicPartition, timeout_ms: int) -> int | None:
        """The group's committed offset of input partition `tp` (None: none, or unknown: the
        restore's offset guard is then off for it). Main thread only."""
        try:
            return self._consumer().committed(tp, timeout_ms=timeout_ms)
        except Exception as exc:  # the guard is a defence; the restore goes on without it
            log.warning(
                events.OFFSET_GUARD_OFF,
                topic=tp.topic,
                partition=tp.partition,
                error_type=kind_of(exc),
            )
            return None

    def next_offset(self, tp: TopicPartition, timeout_ms: int) -> int | None:
        """The next input offset this member processes in `tp` once its history is restored:
        where a re-run starts (redrive), else the group's committed offset (None: unknown).
        Everything below it was delivered with its changelog, so a changelog record covering an
        input offset at or past it is ahead (runtime/restore.py) and the rest is history: after
        a commit that failed without stopping the service, the committed offset is below
        batches whose history is in the changelog and whose records are not polled again."""
        rerun = self.rerun_from.get(tp)
        return rerun if rerun is not None else self.committed(tp, timeout_ms)

    def set_gauge(self) -> None:
        """The assigned-partitions gauge (restored, waiting for a restore, held back) and the
        held-back gauge."""
        self._metrics.assigned_partitions.set(
            len(self.stores) + len(self.pending) + len(self.blocked)
        )
        self._metrics.held_back_partitions.set(len(self.blocked))

    def owned(self) -> list[TopicPartition]:
        """The partitions whose lag is told: restored, and held back (their lag grows)."""
        return sorted({*self.stores, *self.blocked})

    # -- rebalance callbacks (IO thread) ----------------------------------------------------

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """IO thread: pause new partitions until their history is restored (no blocking here)."""
        partitions = sorted(assigned)
        self._metrics.rebalances.labels(kind="assigned").inc()
        if not partitions:
            if not self.pending and not self.blocked:  # a member without partitions is ready
                self._set_ready(*self.readiness())
            return
        self._consumer().pause(*partitions)
        self.pending.update(partitions)
        self.set_gauge()
        self._set_ready(False, "restoring history")
        log.info(
            events.PARTITIONS_ASSIGNED,
            topic=self._input_topic,
            partitions=[tp.partition for tp in partitions],
        )

    def on_revoked(self, revoked: Iterable[TopicPartition], *, kind: str) -> None:
        """IO thread: nothing is in flight (batches commit before the next poll); drop state."""
        partitions = sorted(revoked)
        self._metrics.rebalances.labels(kind=kind).inc()
        for tp in partitions:
            store = self.stores.pop(tp, None)
            if store is not None:
                store.close()  # on the IO thread: see DiskStates for why that is safe
            self.pending.discard(tp)
            self.blocked.pop(tp, None)
            self.backoff_until.pop(tp, None)
            self.backoff_step.pop(tp, None)
            self.positions.pop(tp, None)
            self.rerun_from.pop(tp, None)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            for gauge in (
                self._metrics.lag,
                self._metrics.committed_offset,
                self._metrics.last_progress,
                self._metrics.position_unknown,
            ):
                with contextlib.suppress(KeyError):  # never set for this partition
                    gauge.remove(*labels.values())
        self.set_gauge()
        if partitions:
            log.info(
                events.PARTITIONS_LOST if kind == "lost" else events.PARTITIONS_REVOKED,
                topic=self._input_topic,
                partitions=[tp.partition for tp in partitions],
            )

    def listener(self) -> Listener:
        """The kafka-python rebalance listener forwarding to this table."""
        return Listener(self)

    # -- main thread ------------------------------------------------------------------------

    def restored(self, stores: dict[TopicPartition, HistoryStore]) -> None:
        """Their history is loaded: own the stores and resume the partitions still assigned."""
        self.stores.update(stores)
        self.pending.difference_update(stores)
        for tp in stores:
            self.rerun_from.pop(tp, None)
        consumer = self._consumer()
        still_assigned = [tp for tp in sorted(stores) if tp in consumer.assignment()]
        consumer.resume(*still_assigned)
        self.set_gauge()

    def block(self, tp: TopicPartition, reason: str) -> None:
        """Its history could not be restored well enough: keep it paused, never process it."""
        self.pending.discard(tp)
        self.rerun_from.pop(tp, None)
        self.backoff_until.pop(tp, None)  # resume_due must not resume it
        self.blocked[tp] = reason
        self._consumer().pause(tp)
        self.set_gauge()

    def set_broker_unreachable(self, unreachable: bool) -> None:
        """Whether the broker answers, and readiness told when that changes: from the loop
        (its polls and lag refreshes) and from the producer handle (outputs unacknowledged for
        a request timeout, during the wait)."""
        if unreachable == self.broker_unreachable:
            return
        self.broker_unreachable = unreachable
        self._set_ready(*self.readiness())

    def set_input_missing(self, missing: bool) -> None:
        """Whether the broker answers without the input topic; readiness told on a change."""
        if missing == self.input_missing:
            return
        self.input_missing = missing
        self._set_ready(*self.readiness())

    def readiness(self) -> tuple[bool, str]:
        """Ready once the broker answers, nothing waits for a restore and no partition is held
        back."""
        if self.broker_unreachable:
            return False, BROKER_UNREACHABLE
        if self.input_missing:
            return False, input_missing(self._input_topic)
        if self.blocked:
            return False, "; ".join(self.blocked[tp] for tp in sorted(self.blocked))
        if self.pending:
            return False, "restoring history"
        return True, ""

    def input_partitions(self, topic: str) -> int:
        """The input topic's partition count in the consumer's metadata (what producers
        partition by); the last count seen while a metadata refresh lacks the topic."""
        count = len(self._consumer().partitions_for_topic(topic) or ())
        if count:
            self.input_partition_count = count
        return self.input_partition_count

    def retry_later(self, tp: TopicPartition, offset: int) -> None:
        """The registry is unreachable: seek back to `offset` and pause `tp` with back-off."""
        consumer = self._consumer()
        consumer.seek(tp, offset)
        self.positions[tp] = offset
        step = self.backoff_step.get(tp, 0)
        self.backoff_step[tp] = step + 1
        self.backoff_until[tp] = self._monotonic() + self._backoff.delay(step)
        consumer.pause(tp)

    def resume_due(self) -> None:
        """Resume the partitions whose back-off is over (still assigned, not restoring)."""
        if not self.backoff_until:
            return
        now = self._monotonic()
        consumer = self._consumer()
        for tp, until in list(self.backoff_until.items()):
            if now >= until:
                del self.backoff_until[tp]
                if tp in consumer.assignment() and tp not in self.pending:
                    consumer.resume(tp)

    def redrive(self, starts: dict[TopicPartition, int]) -> None:
        """A batch that was not delivered is run again from `starts` (offset per partition):
        drop the partitions' stores (they hold the batch's changes, which never reached the
        changelog), seek back, pause and mark them for a restore, as on assignment. The next
        loop turn restores their history from the changelog and polls the records again."""
        consumer = self._consumer()
        for tp, offset in sorted(starts.items()):
            store = self.stores.pop(tp, None)
            if store is not None:
                store.close()
            consumer.seek(tp, offset)
            self.positions[tp] = offset
            self.rerun_from[tp] = offset
            consumer.pause(tp)
            self.pending.add(tp)
        self.set_gauge()

    def progressed(self, partitions: Iterable[TopicPartition]) -> None:
        """A batch committed for these partitions: the registry answered again."""
        for tp in partitions:
            self.backoff_step.pop(tp, None)

    def close(self) -> None:
        """Close the stores left (the consumer's close revoked the others)."""
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.blocked.clear()
        self._metrics.assigned_partitions.set(0)
        self._metrics.held_back_partitions.set(0)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Forwards rebalance callbacks (run on kafka-python's IO thread) to the table."""

    def __init__(self, table: PartitionTable) -> None:
        self._table = table

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._table.on_revoked(revoked, kind="revoked")

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._table.on_assigned(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self._table.on_revoked(lost, kind="lost")
