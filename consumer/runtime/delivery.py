"""The two delivery guarantees behind one protocol: every output of a batch durable and its
offsets committed, or PublishError / FencedError (the service stops without committing)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from consumer.config import Settings
from consumer.errors import (
    BrokerError,
    CommitRefusedError,
    GroupLeftError,
    OutputRefusedError,
    ProducerUnavailableError,
    PublishError,
    StopRequested,
)
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import Consumer
from consumer.runtime.kafka.producer import ProducerHandle, Sent
from consumer.runtime.kafka.refusals import isolate_refused
from consumer.runtime.records import PUBLISH_BACKOFF, Backoff, Batch, Output, topics_of

log = get_logger("her2.service")


class Delivery(Protocol):
    """Outputs durable and offsets committed, or raise PublishError / FencedError."""

    def deliver(self, batch: Batch) -> None:
        """Deliver one batch (`batch.last` is not empty)."""


class AtLeastOnce:
    """Publish, wait for every acknowledgement (bounded re-sends), then commit."""

    def __init__(
        self,
        producer: ProducerHandle,
        consumer: Consumer,
        settings: Settings,
        metrics: Metrics,
        before_commit: Callable[[], None],
        *,
        backoff: Backoff = PUBLISH_BACKOFF,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        """`before_commit` is the crash-test hook (HER2_TEST_CRASH_BEFORE_COMMIT); `beat`
        tells /healthz the loop is turning before the commit, a wait of its own (the producer
        handle beats before each send attempt), so its stall limit covers the longest single
        wait, not their sum. A re-send's back-off is the producer handle's (it ends at once
        on a stop)."""
        self._producer = producer
        self._consumer = consumer
        self._retries = settings.publish_retries
        self._metrics = metrics
        self._before_commit = before_commit
        self._backoff = backoff
        self._beat = beat

    def deliver(self, batch: Batch) -> None:
        """B8 of docs/fault-report.md: the changelog only after the other outputs."""
        # The changelog is written only after every other output of the batch is
        # acknowledged. Written together, a broker failure could store a patient's new state
        # without all of its alerts; the redelivered batch would then find the later state
        # and never re-emit the missing alerts of an earlier event.
        self.publish(batch.outputs)
        self._still_in_group()
        self.publish(batch.changes)
        self._before_commit()
        self._beat()
        self.commit(batch)

    def _still_in_group(self) -> None:
        """GroupLeftError if this member left the group while the outputs were being delivered
        (the longest wait of a batch: re-sends through new producers). Its partitions may have a
        new owner already, which restored their history and went on: a changelog written now
        could land after the new owner's and roll those patients back at the next restore.
        (Exactly-once fences such a member: its transaction's offsets are refused.) A member
        that leaves during the changelog's own sends is not caught: the README says so."""
        try:
            self._consumer.group_metadata()
        except CommitRefusedError as exc:  # no generation (kafka-python), no member id (ours)
            raise GroupLeftError(exc.kind) from exc

    def publish(self, outputs: list[Output]) -> None:
        """Send and wait for every acknowledgement; re-send failures a bounded number of times.
        Outputs refused for good are not re-sent: OutputRefusedError (through a new producer
        for the re-run: an idempotent producer's sequence after a failed batch is its own)."""
        pending = outputs
        retries = self._retries
        failed: list[Output] = []
        error_type = None
        for attempt in range(retries + 1):
            try:
                sent = self._producer.send_and_wait(pending)
            except ProducerUnavailableError as exc:  # a failed attempt: nothing was sent
                sent = Sent(failed=list(pending), error_type=exc.kind)
            failed, error_type = sent.failed, sent.error_type
            if sent.refused:
                self._producer.renew()
                refused = isolate_refused(self._producer, sent.refused, transactional=False)
                if refused:
                    raise OutputRefusedError(refused)
                # refused only beside another record (kafka-python's collateral failures, and
                # that record was accepted alone): re-sent like any failure
                failed = [*failed, *(out for out, _ in sent.refused)]
                error_type = error_type or sent.refused[0][1]
            if not failed:
                return
            if attempt == retries:
                break
            self._metrics.publish_retries.inc()
            delay = self._backoff.delay(attempt)
            log.warning(
                events.OUTPUTS_RESENT,
                count=len(failed),
                attempt=attempt + 1,
                error_type=error_type,
                seconds=delay,
            )
            if self._producer.back_off(delay):  # the attempt failed: no new one on a stop
                raise StopRequested("re-sending outputs")
            with contextlib.suppress(ProducerUnavailableError):  # the next attempt tries again
                self._producer.renew()
            pending = failed
        raise PublishError(
            f"{len(failed)} output records were not acknowledged after {retries} retries "
            f"({error_type}; topics {topics_of(failed)}); stopping without "
            "committing"
        )

    def commit(self, batch: Batch) -> None:
        """Commit after every output is acknowledged. A commit refused because of a rebalance
        is not fatal: the records are redelivered to the partition's next owner, which restores
        the same history and re-emits identical outputs."""
        try:
            self._consumer.commit(batch.offsets())
        except CommitRefusedError as exc:
            self._metrics.commit_failures.inc()
            log.warning(
                events.COMMIT_REFUSED_IN_REBALANCE,
                error_type=exc.kind,
            )
            return
        except BrokerError as exc:
            self._metrics.commit_failures.inc()
            if not exc.retriable:
                raise
            # the broker is unreachable (F4 of docs/fault-report.md): every output of these
            # records is acknowledged, so the next batch's commit covers them, or their
            # partition's next owner gets them again (at-least-once)
            log.warning(
                events.COMMIT_FAILED,
                error_type=exc.kind,
            )


class ExactlyOnce:
    """Outputs, changelog and offsets in one Kafka transaction; abort and stop on failure."""

    def __init__(
        self,
        producer: ProducerHandle,
        consumer: Consumer,
        metrics: Metrics,
        before_commit: Callable[[], None],
    ) -> None:
        """`before_commit` is the crash-test hook (HER2_TEST_CRASH_BEFORE_COMMIT)."""
        self._producer = producer
        self._consumer = consumer
        self._metrics = metrics
        self._before_commit = before_commit

    def deliver(self, batch: Batch) -> None:
        """One transaction (begin, send, wait, offsets, commit), each blocking call bounded."""
        self._producer.transaction(
            [*batch.outputs, *batch.changes],
            self._before_commit,
            batch.offsets(),
            self._consumer.group_metadata,
            self._metrics.commit_failures.inc,
        )


def delivery_for(
    s: Settings,
    producer: ProducerHandle,
    consumer: Consumer,
    metrics: Metrics,
    before_commit: Callable[[], None],
    *,
    beat: Callable[[], None] = lambda: None,
) -> Delivery:
    """The guarantee the settings ask for."""
    if s.exactly_once:
        return ExactlyOnce(producer, consumer, metrics, before_commit)
    return AtLeastOnce(producer, consumer, s, metrics, before_commit, beat=beat)
