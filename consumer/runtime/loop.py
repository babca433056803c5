"""The loop: poll -> restore pending -> process -> deliver -> progress -> gauges.

One poll batch = one checkpoint: every output of a batch is acknowledged (or the transaction
committed) before the next poll, so a rebalance never finds work in flight.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from consumer.config import Settings
from consumer.errors import (
    BrokerError,
    GroupLeftError,
    OffsetsRefusedError,
    OutputRefusedError,
    StateTooLargeError,
)
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.delivery import Delivery
from consumer.runtime.dlq import headers_only, output_fits
from consumer.runtime.dlqlimit import count_errors
from consumer.runtime.gauges import Gauges
from consumer.runtime.kafka import Consumer, TopicPartition
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.processor import Processor
from consumer.runtime.records import (
    POLL_BACKOFF,
    Backoff,
    Batch,
    Output,
    Refusal,
    covers,
    input_timestamp,
)
from consumer.runtime.redrive import mark_refused
from consumer.runtime.restore import Restorer
from consumer.runtime.results import DeadLettered, Processed, Retry, add_letter, add_to
from consumer.state.store import HistoryStore

log = get_logger("her2.service")


class Loop:
    """Runs batches until stopped; `batches` counts the delivered ones."""

    def __init__(  # noqa: PLR0917 - the composition root hands over the runtime parts in order
        self,
        settings: Settings,
        consumer: Consumer,
        table: PartitionTable,
        processor: Processor,
        delivery: Delivery,
        restorer: Restorer,
        metrics: Metrics,
        *,
        stopping: Callable[[], bool],
        wait: Callable[[float], bool],
        beat: Callable[[], None],
        set_ready: Callable[..., None],
        poll_backoff: Backoff = POLL_BACKOFF,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Every collaborator is built by the service (runtime/service.py)."""
        self.settings = settings
        self.consumer = consumer
        self.table = table
        self.processor = processor
        self.delivery = delivery
        self.restorer = restorer
        self.metrics = metrics
        self._stopping = stopping
        self._wait = wait
        self._beat = beat
        self._set_ready = set_ready
        self._poll_backoff = poll_backoff
        self._monotonic = monotonic
        self.batches = 0
        self.poll_failures = 0  # consecutive polls that could not reach the broker
        # input records an output of which the broker refused for good: dead-lettered when the
        # batch is re-driven (exactly-once instead of evaluated; at-least-once evaluated without
        # the refused outputs, a copy dead-lettered beside it: _evaluate); dropped from here
        # once committed past
        self.refused: dict[tuple[TopicPartition, int], Refusal] = {}
        self.gauges = Gauges(settings, consumer, table, metrics, monotonic)
        # the DLQ limit: processing-error dead letters in a row per partition, as of the last
        # delivered batch (a batch run again after a refusal counts from there again)
        self.error_runs: dict[TopicPartition, int] = {}

    def run(self) -> None:
        """Until stopped."""
        s = self.settings
        while not self._stopping():
            self.table.resume_due()
            records = self.poll(s.tuning.poll_timeout_ms, s.max_poll_records)
            self._beat()
            if self.table.pending:
                self.restore_pending()
            if records:
                self.process_batch(records)
                self._beat()  # the lag refresh below may wait for the broker as long again
            self.gauges.refresh()
            self.follow_broker()

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, list[Any]]:
        """One poll. A broker that cannot be reached (kafka-python 3.0.12 can raise
        KafkaConnectionError from a metadata refresh inside poll when the broker goes away; any
        retriable BrokerError) is waited for with back-off, the loop staying alive: nothing was
        fetched, so nothing is lost, and the group coordinator re-joins once the broker is back."""
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except BrokerError as exc:
            if not exc.retriable:
                raise
            delay = self._poll_backoff.delay(self.poll_failures)
            self.poll_failures += 1
            log.warning(
                events.POLL_BROKER_UNREACHABLE,
                attempt=self.poll_failures,
                error_type=exc.kind,
                seconds=delay,
            )
            self._wait(delay)
            return {}
        self.poll_failures = 0
        return records

    def follow_broker(self) -> None:
        """Not ready while the broker does not answer (design.md: /readyz needs the broker
        reachable) or without the input topic (deleted while running; the lag refresh tells
        which): the last poll failed, or the last lag refresh could not fetch end offsets
        (during an outage kafka-python's poll mostly returns nothing rather than failing), or
        a batch's outputs went a request timeout unacknowledged (the producer handle says so
        during the wait: Service._broker_silent); ready again, as the partitions allow, once
        it answers."""
        if self._stopping():  # "stopping" stays the reason once stop() was called
            return
        self.table.set_broker_unreachable(self.poll_failures > 0 or not self.gauges.broker_answered)
        self.table.set_input_missing(self.gauges.input_missing)

    def restore_pending(self) -> None:
        """Restore the pending partitions; ready once none is left."""
        if not self.restorer.restore_pending(self.table):
            return
        self.gauges.refresh_history(force=True)
        if not self.table.pending:
            self._set_ready(*self.table.readiness())

    def build_batch(self, records: Mapping[TopicPartition, list[Any]]) -> Batch:
        """Process every record of a poll; a partition stops at a record to retry."""
        batch = Batch()
        table = self.table
        history = self.settings.topics.history
        limit = self.settings.max_consecutive_processing_errors  # the DLQ limit
        for tp in sorted(records):
            store = table.stores.get(tp)
            if store is None:  # defensive: never process a partition whose history is not loaded
                self.consumer.seek(tp, records[tp][0].offset)
                continue
            run = self.error_runs.get(tp, 0)
            refused = self.refused
            for record in records[tp]:
                refusal = refused.get((tp, record.offset)) if refused else None
                result, letter = self._evaluate(tp, record, store, refusal)
                if isinstance(result, Retry):
                    table.retry_later(tp, record.offset)
                    break
                run = count_errors(tp, result, run, limit)
                add_to(batch, result)
                if letter is not None:
                    add_letter(batch, letter)
                batch.last[tp] = record
                table.positions[tp] = record.offset + 1
            batch.error_runs[tp] = run
            last = batch.last.get(tp)
            # the changelog record carries the timestamp and the offset of the last input
            # record it covers, and the input topic that offset is of (the restore's offset guard)
            stamp = None if last is None else input_timestamp(last)
            headers = covers(None if last is None else last.offset, self.restorer.input_topic_id)
            for key, value in store.take_dirty():  # one record per changed part of a patient
                change = Output(
                    history, key, value, headers, partition=tp.partition, timestamp_ms=stamp
                )
                if not output_fits(change):
                    # Never keep a state the changelog does not hold: a restore elsewhere would
                    # evaluate the patient against an older history (wrong alerts). Stop without
                    # committing; the batch is redelivered after the restart (and stops again
                    # until the cause is fixed: the alert Her2ConsumerStateUnwritable says so).
                    self.metrics.history_unwritable_records.inc()
                    log.error(
                        events.HISTORY_STATE_TOO_LARGE,
                        topic=history,
                        partition=tp.partition,
                        count=len(value or b""),
                    )
                    raise StateTooLargeError(
                        f"a patient-state record for {history} partition {tp.partition} is "
                        f"{len(value or b'')} bytes, more than a Kafka request: stopping "
                        "without committing (see the runbook, Her2ConsumerStateUnwritable)"
                    )
                batch.changes.append(change)
        return batch

    def _evaluate(
        self, tp: TopicPartition, record: Any, store: HistoryStore, refusal: Refusal | None
    ) -> tuple[Processed | DeadLettered | Retry, DeadLettered | None]:
        """One record's result, and the dead-letter copy of a record evaluated although outputs
        of it were refused for good (at-least-once)."""
        if refusal is None:
            return self.processor.process(tp, record, store), None
        letter: DeadLettered | None = None
        result: Processed | DeadLettered | Retry
        if refusal.topic is not None and self.settings.exactly_once:
            # none of its outputs was visible (the transaction was aborted): unevaluated
            result = self.processor.refused(tp, record, refusal)
        else:
            result = self.processor.process(tp, record, store)
        if refusal.topic is not None and isinstance(result, Processed):
            # at-least-once: outputs the broker acknowledged before the refusal stay published,
            # so the evaluation stays in the history (left out, a later report published other
            # records under the same alert revisions: an audit measured a T-DXd alert lost),
            # without the refused outputs; a copy is dead-lettered to publish them again once
            # the cause is fixed (a replay of it is a redelivery)
            kept = [o for o in result.outputs if o.topic not in refusal.topics]
            alert_topic = self.settings.topics.alert_topic
            sent = [alert_topic(a[0]) not in refusal.topics for a in result.alerts]
            result = dataclasses.replace(  # the alerts counted are those published
                result,
                outputs=kept,
                alerts=[a for a, ok in zip(result.alerts, sent, strict=True) if ok],
                transitions=[t for t, ok in zip(result.transitions, sent, strict=False) if ok],
            )
            letter = self.processor.refused(tp, record, refusal)
        if refusal.dlq_error:  # the DLQ refused the copy: its error headers alone
            if isinstance(result, DeadLettered):
                result = dataclasses.replace(
                    result, output=headers_only(result.output, refusal.dlq_error)
                )
            if letter is not None:
                letter = dataclasses.replace(
                    letter, output=headers_only(letter.output, refusal.dlq_error)
                )
        return result, letter

    def process_batch(self, records: Mapping[TopicPartition, list[Any]]) -> None:
        """Build, deliver and record one batch."""
        started = time.perf_counter()
        batch = self.build_batch(records)
        if not batch.last:
            return
        try:
            self.delivery.deliver(batch)
        except OutputRefusedError as exc:
            self.redrive(batch, records, exc)
            return
        except OffsetsRefusedError as exc:
            # exactly-once: the group's generation ended under the open transaction (librdkafka
            # rejoins in the background). The transaction was aborted, so nothing of the batch
            # is visible: its partitions restore their history and poll the records again (a
            # partition the rebalance moved is revoked at the next poll and its new owner does
            # the same from the committed offsets).
            log.warning(events.TRANSACTION_OFFSETS_REFUSED, error_type=exc.kind)
            self._run_again(batch, records)
            return
        except GroupLeftError as exc:
            # at-least-once: the outputs are delivered, the changelog is not written, nothing is
            # committed; the outputs are sent again by whoever runs the batch (duplicates with
            # the same alert ids)
            self.metrics.commit_failures.inc()
            log.warning(events.GROUP_LEFT_BEFORE_CHANGELOG, error_type=exc.kind)
            self._run_again(batch, records)
            return
        self.batches += 1
        self.table.progressed(batch.last)
        self.error_runs.update(batch.error_runs)
        for tp in [tp for tp in self.error_runs if tp not in self.table.stores]:
            del self.error_runs[tp]  # revoked: a new owner starts counting afresh
        if self.refused:
            self.refused = {
                (tp, offset): refusal
                for (tp, offset), refusal in self.refused.items()
                if tp not in batch.last or offset > batch.last[tp].offset
            }
        seconds = time.perf_counter() - started
        self.gauges.batch_committed(batch, batch.offsets(), seconds, self.batches)

    def redrive(
        self,
        batch: Batch,
        records: Mapping[TopicPartition, list[Any]],
        refused: OutputRefusedError,
    ) -> None:
        """The broker refused outputs of the batch for good. Nothing of the batch is committed
        (at-least-once: no changelog record was sent yet, B8; exactly-once: the transaction was
        aborted). Mark each record whose output was refused, then run the batch again from a
        restored history: those records are dead-lettered with the refusal reason (exactly-once
        instead of evaluated; at-least-once evaluated without their refused outputs, a copy
        dead-lettered beside: _evaluate), the rest is published (at-least-once re-sends outputs
        the broker already acknowledged: duplicates with the same alert ids) and committed.

        Never dropped: a refused changelog record (a patient's history) or a dead-letter copy
        refused even with its error headers alone stops the service without committing."""
        mark_refused(self.refused, refused, self.settings.topics.dlq)
        self._run_again(batch, records)

    def _run_again(self, batch: Batch, records: Mapping[TopicPartition, list[Any]]) -> None:
        """Nothing of `batch` was committed: its partitions restore their history and poll its
        records again from the first one (PartitionTable.redrive)."""
        self.table.redrive({tp: records[tp][0].offset for tp in batch.last})
