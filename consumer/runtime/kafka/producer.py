"""The producer's lifecycle: creation (transactions initialised, fencing mapped), send and wait
for every acknowledgement under one deadline, renewal after a failed attempt (B5), and
transactions whose blocking calls are bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.config import Settings
from consumer.errors import (
    CommitRefusedError,
    ConfigError,
    FencedError,
    OffsetsRefusedError,
    OutputRefusedError,
    ProducerUnavailableError,
    PublishError,
    StopRequested,
    kind_of,
)
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import (
    FENCED,
    REBALANCED,
    REFUSED_FOR_GOOD,
    Clients,
    KafkaError,
    Producer,
    errors,
)
from consumer.runtime.kafka.clients import producer_config
from consumer.runtime.kafka.mapping import broker_error
from consumer.runtime.kafka.quirks import STOP_CHECK_S, bounded, force_close, is_fenced
from consumer.runtime.kafka.refusals import isolate_refused
from consumer.runtime.records import Output, topics_of

ABORT_TIMEOUT_S: Final = 10.0
PRODUCER_CLOSE_S: Final = 1.0  # closing a producer replaced after a failed publish attempt

log = get_logger("her2.service")


def refused_for_good(exc: BaseException) -> bool:
    """Whether a send's error refuses this record for good (re-sending cannot help): the
    adapter's one classification of kafka-python's per-record errors (REFUSED_FOR_GOOD)."""
    return isinstance(exc, REFUSED_FOR_GOOD)


@dataclass
class Sent:
    """What one send_and_wait() achieved: the outputs to re-send (retriable failures, with the
    last error type) and those refused for good (with the broker's error class name)."""

    failed: list[Output] = field(default_factory=list)
    error_type: str | None = None
    refused: list[tuple[Output, str]] = field(default_factory=list)

    def add(self, out: Output, exc: BaseException) -> None:
        """Classify one failed send."""
        if refused_for_good(exc):
            self.refused.append((out, type(exc).__name__))
        else:
            self.failed.append(out)
            self.error_type = type(exc).__name__


def _sleep(seconds: float) -> bool:
    """A wait with no stop to wake it (tools and tests)."""
    time.sleep(seconds)
    return False


class ProducerHandle:
    """The current producer; `renew()` replaces it."""

    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        default_id: str,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        beat: Callable[[], None] = lambda: None,
        unanswered: Callable[[], None] = lambda: None,
        wait: Callable[[float], bool] = _sleep,
    ) -> None:
        """Create (and, under exactly-once, initialise) the producer. `beat` tells /healthz the
        loop is turning, before each bounded wait here (a send-and-wait, a transaction's offsets
        and commit): its stall limit covers the longest single wait, not their sum.
        `unanswered` tells readiness that outputs went a request timeout without an
        acknowledgement (the broker does not answer) while the wait goes on; from then on
        the wait gives up with StopRequested once a stop was asked for. `wait` sleeps up to
        its argument and returns True once a stop was asked for (the service's stop event's
        wait): the one view of the stop for every wait of a delivery (see back_off)."""
        self._clients = clients
        self._settings = settings
        self._default_id = default_id  # the instance id when HER2_INSTANCE_ID is unset
        self._monotonic = monotonic
        self._beat = beat
        self._unanswered = unanswered
        self._wait = wait
        self._producer: Producer | None = self._make()

    def _make(self) -> Producer:
        s = self._settings
        producer = self._clients.producer(**producer_config(s, self._default_id))
        if s.exactly_once:
            try:
                producer.init_transactions()
            except FENCED:
                producer.close(timeout=5)
                raise FencedError() from None
            except KafkaError as exc:
                producer.close(timeout=5)
                if _transaction_timeout_refused(exc):
                    raise ConfigError(
                        "the broker refused HER2_TRANSACTION_TIMEOUT_MS="
                        f"{s.tuning.transaction_timeout_ms}: it is above the broker's "
                        "transaction.max.timeout.ms (900000, 15 minutes, unless the cluster sets "
                        "it); lower the variable or raise the broker's limit"
                    ) from exc
                raise broker_error(exc) from exc
            except BaseException:
                producer.close(timeout=5)
                raise
        return producer

    @property
    def producer(self) -> Producer:
        """The live producer (PublishError if a renewal failed)."""
        if self._producer is None:
            raise PublishError("no producer")
        return self._producer

    def warm_up(self, topics: Iterable[str]) -> None:
        """The producer's metadata of every output now, not at the first record for each (a
        service just started otherwise waits for it inside its first batches)."""
        for topic in topics:
            try:
                self.producer.partitions_for(topic)
            except KafkaError as exc:
                raise broker_error(exc) from exc

    def send_and_wait(self, outputs: list[Output]) -> Sent:
        """Send every output and wait for every acknowledgement; what failed, classified.

        One deadline for the whole batch (delivery timeout + 5 s): a future still pending then
        counts as not acknowledged. (Seen with kafka-python 3.0.12 after a broker outage: some
        futures never complete, so per-future timeouts would add up without bound.)
        """
        # a renewal that failed (its bootstrap: a broker not answering yet) left no producer:
        # this attempt tries again
        producer = self._producer or self._replace()
        self._beat()
        sent: list[tuple[Output, Any]] = []
        # A send that waited its max_block_ms for a topic's metadata (a topic deleted while
        # the service runs) fails the topic's other outputs of the batch without sending:
        # each would block as long (measured: 40 records, 200 s, SIGTERM unanswered).
        blocked: dict[str, KafkaError] = {}
        for out in outputs:
            future: Any = blocked.get(out.topic)
            if future is None:
                try:
                    future = producer.send(
                        out.topic,
                        key=out.key,
                        value=out.value,
                        headers=out.headers or None,
                        partition=out.partition,
                        timestamp_ms=out.timestamp_ms,
                    )
                except errors.KafkaTimeoutError as exc:
                    future = blocked[out.topic] = exc
                    self._beat()  # it waited max_block_ms; the next topic may too
                    if self.stopping():
                        raise StopRequested("outputs") from None
                except KafkaError as exc:
                    future = exc
            sent.append((out, future))
        now = self._monotonic
        deadline = now() + self._settings.tuning.delivery_timeout_ms / 1000 + 5
        self._flush(producer, deadline, len(sent))
        result = Sent()
        for out, future in sent:
            if isinstance(future, BaseException):
                result.add(out, future)
                continue
            if future.succeeded():  # acknowledged: no need to build its metadata (per record)
                continue
            try:
                future.get(timeout=max(0.001, deadline - now()))
            except FENCED:
                raise
            except Exception as exc:  # any failure of the send means "not acknowledged"
                result.add(out, exc)
        return result

    def _flush(self, producer: Producer, deadline: float, count: int) -> None:
        """Wait for every acknowledgement until `deadline`, STOP_CHECK_S at a time. A broker
        that answers acknowledges within a request timeout; once the wait has lasted one with
        records still unacknowledged, readiness is told once (`unanswered`: without it /readyz
        stayed 200 for the whole wait, up to the delivery timeout per send attempt), and from
        then on a stop request ends the wait (StopRequested: the batch is not committed)
        instead of outlasting the orchestrator's grace period. (kafka-python's flush waits its
        timeout for each unfinished batch: a piece lasts longer while a slow broker answers.)
        Errors other than the timeout end the wait: the futures say which records failed. So
        does a flush that gives up well before its piece, which neither client does today but
        would make this loop spin: told at once, the futures' own waits to the same deadline
        follow in send_and_wait."""
        now = self._monotonic
        step = self._settings.tuning.request_timeout_ms / 1000
        piece = min(step, STOP_CHECK_S)
        start = now()
        told = False
        while True:
            began = now()
            left = deadline - began
            try:
                producer.flush(timeout=max(0.0, min(piece, left)))
            except errors.KafkaTimeoutError:
                gave_up = now() - began < piece / 2
                if not told and (gave_up or now() - start >= step):
                    told = True
                    self._silent("outputs", step, count)
                if gave_up or left <= piece:
                    return
                if told and self.stopping():
                    raise StopRequested("outputs") from None
                continue
            except KafkaError:
                return
            return

    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._wait(0)

    def back_off(self, seconds: float) -> bool:
        """Sleep a re-send's back-off; True (at once) when a stop is asked for meanwhile."""
        return self._wait(seconds)

    def _silent(self, stage: str, seconds: float, count: int = 0) -> None:
        """A wait went a request timeout without the broker's answer: say so, tell readiness."""
        log.warning(events.BROKER_UNANSWERED, stage=stage, seconds=seconds, count=count)
        self._unanswered()

    def renew(self) -> None:
        """At-least-once, after a failed publish attempt: replace the producer (B5 of
        docs/fault-report.md).

        When records expire in kafka-python 3.0.12 (a broker outage longer than the delivery
        timeout), it resets the idempotent producer id and that producer then sends nothing:
        re-sending through it only waits out the delivery timeout again. A new producer sends
        at once. Records the old one still delivers become duplicates (same alert ids), which
        at-least-once allows.
        """
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.close(timeout=PRODUCER_CLOSE_S)
            except Exception as exc:
                # close() flushes first and raises on records it cannot deliver before it
                # stops its I/O thread
                force_close(old, PRODUCER_CLOSE_S)
                log.info(events.PRODUCER_FORCE_CLOSED, error_type=type(exc).__name__)
        self._replace()
        log.warning(events.PRODUCER_REPLACED)

    def _replace(self) -> Producer:
        """A new producer in place of none (ProducerUnavailableError when none can be made:
        its bootstrap failed). Its bootstrap can last a request timeout and is not
        interruptible: a beat before it, and a stop asked for ends the attempt here."""
        self._beat()
        if self.stopping():
            raise StopRequested("making a new producer")
        try:
            self._producer = self._make()
        except (FencedError, ConfigError):  # not a broker away: as at start-up
            raise
        except Exception as exc:
            log.warning(events.PRODUCER_UNAVAILABLE, error_type=kind_of(exc))
            raise ProducerUnavailableError(kind_of(exc)) from exc
        return self._producer

    def transaction(
        self,
        outputs: list[Output],
        before_commit: Callable[[], None],
        offsets: Any,
        group_metadata: Callable[[], Any],
        on_failure: Callable[[], None],
    ) -> None:
        """Outputs and offsets in one transaction; abort (bounded) on any error and raise
        PublishError, or FencedError when another producer took over. Outputs refused for good
        raise OutputRefusedError once the transaction is aborted and the producer replaced (a
        new transaction can then re-run the batch without their records)."""
        producer = self.producer
        try:
            producer.begin_transaction()
            sent = self.send_and_wait(outputs)
            if sent.refused:
                raise OutputRefusedError(sent.refused)
            if sent.failed:
                raise PublishError(
                    f"{len(sent.failed)} output records were not acknowledged "
                    f"({sent.error_type}; topics {topics_of(sent.failed)}); "
                    "the transaction is aborted"
                )
            before_commit()
            limit = self._settings.tuning.transaction_timeout_ms / 1000
            request_s = self._settings.tuning.request_timeout_ms / 1000
            self._beat()
            bounded(
                "sending offsets to the transaction",
                limit,
                producer.send_offsets_to_transaction,
                offsets,
                group_metadata(),
                tell_after=request_s,
                tell=lambda: self._silent("transaction offsets", request_s),
                stopping=self.stopping,
            )
            self._beat()
            bounded(
                "committing the transaction",
                limit,
                producer.commit_transaction,
                tell_after=request_s,
                tell=lambda: self._silent("transaction commit", request_s),
                stopping=self.stopping,
            )
        except FENCED:
            raise FencedError() from None
        except StopRequested:  # no abort: the broker does not answer; the next instance's
            raise  # init_transactions fences the transaction, or the broker's timeout ends it
        except Exception as exc:
            if is_fenced(exc):
                raise FencedError() from None
            on_failure()
            try:
                bounded("aborting the transaction", ABORT_TIMEOUT_S, producer.abort_transaction)
            except Exception as abort_exc:  # best effort: the broker aborts it after the
                # transaction timeout, or the next instance's init_transactions fences it
                log.warning(events.TRANSACTION_ABORT_FAILED, error_type=type(abort_exc).__name__)
            if isinstance(exc, OutputRefusedError):
                # the transaction manager saw a failed record: start the re-run from a new
                # producer (init_transactions bumps the epoch; nothing of the batch is visible),
                # after finding the records refused on their own (not kafka-python's collateral)
                self.renew()
                suspects = [(out, err) for out, err in exc.refused if isinstance(out, Output)]
                refused = isolate_refused(self, suspects, transactional=True)
                if not refused:
                    raise PublishError(
                        "outputs refused in the transaction were accepted when sent alone; the "
                        "transaction is aborted"
                    ) from None
                raise OutputRefusedError(refused) from None
            if isinstance(exc, PublishError):
                raise
            if isinstance(exc, (*REBALANCED, CommitRefusedError)):
                # the group's generation ended under the transaction (the client's own error
                # from sending the offsets, or our mapped consumer's refusal of its metadata)
                raise OffsetsRefusedError(kind_of(exc)) from None
            raise PublishError(f"the transaction failed ({kind_of(exc)}) and was aborted") from None

    def close(self, timeout_s: float) -> None:
        """Close the producer (logged, never raised). kafka-python's close() flushes first and
        raises when records are still unacknowledged (a batch given up on a stop, a failed
        delivery) before it stops its I/O thread: that thread is then stopped here, as at a
        renewal, so it neither delivers the given-up records after the consumer closed nor
        keeps the producer open for its __del__ to close again."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except Exception as exc:
            force_close(producer, timeout_s)
            log.warning(events.PRODUCER_CLOSE_FAILED, error_type=type(exc).__name__)


def _transaction_timeout_refused(exc: KafkaError) -> bool:
    """INVALID_TRANSACTION_TIMEOUT from InitProducerId: librdkafka's mapping gives the class;
    kafka-python 3.0.12 raises a plain KafkaError whose message names it."""
    return isinstance(exc, errors.InvalidTransactionTimeoutError) or (
        "InvalidTransactionTimeout" in str(exc)
    )
