"""What the loop records: a delivered batch (counters, histograms and the "batch committed"
line) and the time-gated gauges (consumer lag, history sizes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from consumer.config import Settings
from consumer.errors import BrokerError
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import Consumer, OffsetAndMetadata, TopicPartition
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.records import Batch

HISTORY_REFRESH_S: Final = 5.0

log = get_logger("her2.service")


class Gauges:
    """Records delivered batches and refreshes the lag and history gauges of the owned
    partitions (each refresh time-gated on the injected monotonic clock)."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        table: PartitionTable,
        metrics: Metrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The loop's collaborators (runtime/loop.py builds one)."""
        self.settings = settings
        self.consumer = consumer
        self.table = table
        self.metrics = metrics
        self._monotonic = monotonic
        self._last_lag = 0.0
        self.broker_answered = True  # the broker answered the last lag refresh
        # ... without the input topic (deleted while the service runs): unready, with that
        # reason instead of "broker unreachable" (measured before: the on-call was sent to a
        # healthy broker, and kafka-python logged ten errors a second)
        self.input_missing = False
        self._last_history = 0.0

    def batch_committed(
        self,
        batch: Batch,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        seconds: float,
        batches: int,
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
            batch=batches,
            count=sum(batch.outcomes.values()),
            processed=batch.outcomes.get("processed", 0),
            dead_lettered=batch.outcomes.get("dead_lettered", 0),
            published=len(batch.outputs) + len(batch.changes),
            records=len(batch.changes),
            partitions=sorted(tp.partition for tp in offsets),
            duration_ms=round(seconds * 1000, 3),
        )

    def refresh(self) -> None:
        """Lag and history sizes, each time-gated."""
        now = self._monotonic()
        if now - self._last_lag >= self.settings.tuning.lag_refresh_s:
            self._last_lag = now
            self.refresh_lag()
        self.refresh_history()

    def refresh_lag(self) -> None:
        """Consumer lag per owned partition (end offset minus the next offset to process),
        held-back partitions included."""
        partitions = self.table.owned()
        # a member without partitions asks for the end of the input's first partition instead:
        # the broker's answer is all the readiness probe needs (librdkafka revokes a member's
        # partitions when its session times out in an outage; asking nothing, such a member
        # reported ready while the broker was away)
        asked = partitions or [TopicPartition(self.settings.topics.input, 0)]
        try:
            ends = self.consumer.end_offsets(
                asked, timeout_ms=self.settings.tuning.request_timeout_ms
            )
        except BrokerError as exc:
            log.warning(events.LAG_REFRESH_FAILED, error_type=exc.kind)
            missing = self._input_missing()
            if missing and not self.input_missing:
                log.error(events.INPUT_TOPIC_GONE, input_topic=self.settings.topics.input)
            self.broker_answered = self.input_missing = missing
            return
        self.broker_answered = True
        self.input_missing = False
        wall = time.time()
        for tp in partitions:
            position = self.table.positions.get(tp)
            if position is None:
                try:
                    position = self.consumer.position(tp, timeout_ms=1000)
                except BrokerError:
                    position = None
            end = ends.get(tp)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            # F1 of docs/fault-report.md: a transaction left hanging on the group's offsets keeps
            # the committed offset unreadable, so the partition never starts and has no lag to
            # alert on; this gauge does (Her2ConsumerPartitionPositionUnknown)
            self.metrics.position_unknown.labels(**labels).set(position is None)
            if position is None or end is None:
                continue
            lag = max(0, end - position)
            self.metrics.lag.labels(**labels).set(lag)
            if lag == 0:
                self.metrics.last_progress.labels(**labels).set(wall)

    def _input_missing(self) -> bool:
        """Whether the broker answers a metadata request without the input topic. The
        consumer's cached metadata is asked first: while the broker is away it still knows
        the topic, so an outage costs no second request; a metadata request confirms."""
        topic = self.settings.topics.input
        try:
            return not self.consumer.partitions_for_topic(topic) and (
                topic not in self.consumer.topics()
            )
        except BrokerError:
            return False

    def refresh_history(self, *, force: bool = False) -> None:
        """Patients, accessions, bytes and open alerts of the owned stores (every 5 s)."""
        now = self._monotonic()
        if not force and now - self._last_history < HISTORY_REFRESH_S:
            return
        self._last_history = now
        stores = list(self.table.stores.values())
        self.metrics.history_patients.set(sum(len(s) for s in stores))
        self.metrics.history_accessions.set(sum(s.accession_count() for s in stores))
        self.metrics.history_bytes.set(sum(s.encoded_bytes() for s in stores))
        self.metrics.open_alerts.set(sum(s.open_alerts() for s in stores))
