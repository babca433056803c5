"""The loop: poll -> restore pending -> process -> deliver -> progress -> gauges.

One poll batch = one checkpoint: every output of a batch is acknowledged (or the transaction
committed) before the next poll, so a rebalance never finds work in flight.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.config import Settings
from consumer.errors import (
    DeadLetterLimitError,
    OutputRefusedError,
    PublishError,
    StateTooLargeError,
)
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.delivery import Delivery
from consumer.runtime.dlq import headers_only, output_fits
from consumer.runtime.kafka import Consumer, KafkaError, OffsetAndMetadata, TopicPartition
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.processor import (
    REASON_PROCESSING_ERROR,
    DeadLettered,
    Processed,
    Processor,
    Retry,
    add_to,
)
from consumer.runtime.records import (
    INPUT_OFFSET_HEADER,
    POLL_BACKOFF,
    Backoff,
    Batch,
    Output,
    Refusal,
    input_timestamp,
)
from consumer.runtime.restore import Restorer

HISTORY_REFRESH_S: Final = 5.0

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
        # batch is re-driven (dropped from here once committed past)
        self.refused: dict[tuple[TopicPartition, int], Refusal] = {}
        self._last_lag_refresh = 0.0
        self._last_history_refresh = 0.0
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
            self.refresh_gauges()

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, list[Any]]:
        """One poll. A broker that cannot be reached (kafka-python 3.0.12 can raise
        KafkaConnectionError from a metadata refresh inside poll when the broker goes away; any
        retriable Kafka error) is waited for with back-off, the loop staying alive: nothing was
        fetched, so nothing is lost, and the group coordinator re-joins once the broker is back."""
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            delay = self._poll_backoff.delay(self.poll_failures)
            self.poll_failures += 1
            log.warning(
                events.POLL_BROKER_UNREACHABLE,
                attempt=self.poll_failures,
                error_type=type(exc).__name__,
                seconds=delay,
            )
            self._wait(delay)
            return {}
        self.poll_failures = 0
        return records

    def restore_pending(self) -> None:
        """Restore the pending partitions; ready once none is left."""
        if not self.restorer.restore_pending(self.table):
            return
        self.refresh_history_gauges(force=True)
        if not self.table.pending:
            self._set_ready(*self.table.readiness())

    def build_batch(self, records: Mapping[TopicPartition, list[Any]]) -> Batch:
        """Process every record of a poll; a partition stops at a record to retry."""
        batch = Batch()
        table = self.table
        history = self.settings.topics.history
        for tp in sorted(records):
            store = table.stores.get(tp)
            if store is None:  # defensive: never process a partition whose history is not loaded
                self.consumer.seek(tp, records[tp][0].offset)
                continue
            run = self.error_runs.get(tp, 0)
            for record in records[tp]:
                refusal = self.refused.get((tp, record.offset))
                result: Processed | DeadLettered | Retry
                if refusal is not None and refusal.topic is not None:
                    result = self.processor.refused(tp, record, refusal)
                else:
                    result = self.processor.process(tp, record, store)
                if isinstance(result, Retry):
                    table.retry_later(tp, record.offset)
                    break
                if refusal is not None and refusal.dlq_error and isinstance(result, DeadLettered):
                    result = dataclasses.replace(
                        result, output=headers_only(result.output, refusal.dlq_error)
                    )
                run = self._count_errors(tp, result, run)
                add_to(batch, result)
                batch.last[tp] = record
                table.positions[tp] = record.offset + 1
            batch.error_runs[tp] = run
            last = batch.last.get(tp)
            # the changelog record carries the timestamp and the offset of the last input
            # record it covers (the offset guard of the restore)
            stamp = None if last is None else input_timestamp(last)
            covers = [] if last is None else [(INPUT_OFFSET_HEADER, b"%d" % last.offset)]
            for key, value in store.take_dirty():  # one record per changed part of a patient
                change = Output(
                    history, key, value, covers, partition=tp.partition, timestamp_ms=stamp
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

    def _count_errors(
        self, tp: TopicPartition, result: Processed | DeadLettered, run: int
    ) -> int:
        """The DLQ limit (HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS, after arroyo's DlqLimit): a
        record processed normally ends a run of processing-error dead letters; bad input
        (any other dead-letter reason) neither counts nor ends it. At the limit the service stops
        without committing the batch: nothing of it reaches the DLQ, and after a restart (or a
        roll-back of the deployment) the records are processed again."""
        if isinstance(result, Processed):
            return 0
        if result.reason != REASON_PROCESSING_ERROR:
            return run
        run += 1
        limit = self.settings.max_consecutive_processing_errors
        if limit and run >= limit:
            log.critical(
                events.DLQ_LIMIT_REACHED,
                topic=tp.topic,
                partition=tp.partition,
                count=run,
                limit=limit,
            )
            raise DeadLetterLimitError(
                f"partition {tp.partition} of {tp.topic} dead-lettered {run} records in a row "
                "for unexpected processing errors (HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS="
                f"{limit}): stopping without committing rather than drain the input into the "
                "dead-letter topic; see the error log lines \"record processing failed\", roll "
                "back or fix the deployment, then restart"
            )
        return run

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
        self.record_batch(batch, batch.offsets(), time.perf_counter() - started)

    def redrive(
        self,
        batch: Batch,
        records: Mapping[TopicPartition, list[Any]],
        refused: OutputRefusedError,
    ) -> None:
        """The broker refused outputs of the batch for good. Nothing of the batch is committed
        (at-least-once: no changelog record was sent yet, B8; exactly-once: the transaction was
        aborted). Mark each record whose output was refused, then run the batch again from a
        restored history: those records are dead-lettered with the refusal reason instead of
        evaluated, the rest is published (at-least-once re-sends outputs the broker already
        acknowledged: duplicates with the same alert ids) and committed.

        Never dropped: a refused changelog record (a patient's history) or a dead-letter copy
        refused even with its error headers alone stops the service without committing."""
        dlq = self.settings.topics.dlq
        before = dict(self.refused)  # one record may have several refused outputs
        for out, error in refused.refused:
            origin = out.origin if isinstance(out, Output) else None
            topic = getattr(out, "topic", "?")
            if origin is None:
                raise PublishError(
                    f"the broker refused a record of {topic} for good ({error}): a patient's "
                    "history cannot be written; stopping without committing (raise the "
                    "topic's max.message.bytes or fix its ACLs)"
                ) from refused
            previous = before.get(origin)
            if topic == dlq:
                if previous is not None and previous.dlq_error is not None:
                    raise PublishError(
                        f"the dead-letter topic {topic} refused a dead-letter record for good "
                        f"({error}), even with its error headers alone; stopping without "
                        "committing"
                    ) from refused
                refusal = Refusal(
                    previous.topic if previous else None,
                    previous.error if previous else None,
                    dlq_error=error,
                )
            else:
                refusal = Refusal(topic, error, previous.dlq_error if previous else None)
            if refusal == previous:  # defensive: a re-run must change something
                raise PublishError(
                    f"the broker refused an output to {topic} again ({error}) after the "
                    "record was dead-lettered; stopping without committing"
                ) from refused
            self.refused[origin] = refusal
            tp, offset = origin
            log.warning(
                events.OUTPUT_REFUSED,
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                output_topic=topic,
                error_type=error,
            )
        starts = {tp: records[tp][0].offset for tp in batch.last}
        self.table.redrive(starts)

    def record_batch(
        self, batch: Batch, offsets: dict[TopicPartition, OffsetAndMetadata], seconds: float
    ) -> None:
        """Metrics and the "batch committed" line of a delivered batch."""
        m = self.metrics
        for outcome, n in batch.outcomes.items():
            m.events.labels(outcome=outcome).inc(n)
        for category, n in batch.categories.items():
            m.classifications.labels(category=category).inc(n)
        for (alert_type, code, status), n in batch.alerts.items():
            m.alerts.labels(alert_type=alert_type, code=code, status=status).inc(n)
        for (transition, code), n in batch.transitions.items():
            m.alert_transitions.labels(transition=transition, code=code).inc(n)
        for (stage, reason), n in batch.dlq.items():
            m.dlq.labels(stage=stage, reason=reason).inc(n)
        for duration in batch.durations:
            m.processing_seconds.observe(duration)
        for age in batch.ages:
            m.event_age_seconds.observe(age)
        m.batch_seconds.observe(seconds)
        now = time.time()
        for tp, offset in offsets.items():
            m.committed_offset.labels(topic=tp.topic, partition=str(tp.partition)).set(
                offset.offset
            )
            m.last_progress.labels(topic=tp.topic, partition=str(tp.partition)).set(now)
        log.info(
            events.BATCH_COMMITTED,
            batch=self.batches,
            count=sum(batch.outcomes.values()),
            processed=batch.outcomes.get("processed", 0),
            dead_lettered=batch.outcomes.get("dead_lettered", 0),
            published=len(batch.outputs) + len(batch.changes),
            records=len(batch.changes),
            partitions=sorted(tp.partition for tp in offsets),
            duration_ms=round(seconds * 1000, 3),
        )

    def refresh_gauges(self) -> None:
        """Lag and history sizes, each time-gated."""
        now = self._monotonic()
        if now - self._last_lag_refresh >= self.settings.tuning.lag_refresh_s:
            self._last_lag_refresh = now
            self.refresh_lag()
        self.refresh_history_gauges()

    def refresh_lag(self) -> None:
        """Consumer lag per owned partition (end offset minus the next offset to process)."""
        partitions = sorted(self.table.stores)
        if not partitions:
            return
        try:
            ends = self.consumer.end_offsets(
                partitions, timeout_ms=self.settings.tuning.request_timeout_ms
            )
        except KafkaError as exc:
            log.warning(events.LAG_REFRESH_FAILED, error_type=type(exc).__name__)
            return
        wall = time.time()
        for tp in partitions:
            position = self.table.positions.get(tp)
            if position is None:
                try:
                    position = self.consumer.position(tp, timeout_ms=1000)
                except KafkaError:
                    position = None
            end = ends.get(tp)
            if position is None or end is None:
                continue
            lag = max(0, end - position)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            self.metrics.lag.labels(**labels).set(lag)
            if lag == 0:
                self.metrics.last_progress.labels(**labels).set(wall)

    def refresh_history_gauges(self, *, force: bool = False) -> None:
        """Patients, accessions, bytes and open alerts of the owned stores (every 5 s)."""
        now = self._monotonic()
        if not force and now - self._last_history_refresh < HISTORY_REFRESH_S:
            return
        self._last_history_refresh = now
        stores = list(self.table.stores.values())
        self.metrics.history_patients.set(sum(len(s) for s in stores))
        self.metrics.history_accessions.set(sum(s.accession_count() for s in stores))
        self.metrics.history_bytes.set(sum(s.encoded_bytes() for s in stores))
        self.metrics.open_alerts.set(sum(s.open_alerts() for s in stores))
