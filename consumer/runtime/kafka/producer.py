"""The producer's lifecycle: creation (transactions initialised, fencing mapped), send and wait
for every acknowledgement under one deadline, renewal after a failed attempt (B5), and
transactions whose blocking calls are bounded in time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from consumer.config import Settings
from consumer.errors import FencedError, PublishError
from consumer.logs import get_logger
from consumer.runtime.kafka import FENCED, Clients, KafkaError, Producer
from consumer.runtime.kafka.clients import producer_config
from consumer.runtime.kafka.quirks import bounded, force_close, is_fenced
from consumer.runtime.records import Output

ABORT_TIMEOUT_S: Final = 10.0
PRODUCER_CLOSE_S: Final = 1.0  # closing a producer replaced after a failed publish attempt

log = get_logger("her2.service")


class ProducerHandle:
    """The current producer; `renew()` replaces it."""

    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        hostname: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create (and, under exactly-once, initialise) the producer."""
        self._clients = clients
        self._settings = settings
        self._hostname = hostname
        self._monotonic = monotonic
        self._producer: Producer | None = self._make()

    def _make(self) -> Producer:
        s = self._settings
        producer = self._clients.producer(**producer_config(s, self._hostname))
        if s.exactly_once:
            try:
                producer.init_transactions()
            except FENCED:
                producer.close(timeout=5)
                raise FencedError() from None
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
            self.producer.partitions_for(topic)

    def send_and_wait(self, outputs: list[Output]) -> tuple[list[Output], str | None]:
        """Send every output and wait for every acknowledgement; the failed ones, one error type.

        One deadline for the whole batch (delivery timeout + 5 s): a future still pending then
        counts as not acknowledged. (Seen with kafka-python 3.0.12 after a broker outage: some
        futures never complete, so per-future timeouts would add up without bound.)
        """
        producer = self.producer
        sent: list[tuple[Output, Any]] = []
        for out in outputs:
            try:
                future = producer.send(
                    out.topic,
                    key=out.key,
                    value=out.value,
                    headers=out.headers or None,
                    partition=out.partition,
                )
            except KafkaError as exc:
                future = exc
            sent.append((out, future))
        now = self._monotonic
        deadline = now() + self._settings.tuning.delivery_timeout_ms / 1000 + 5
        with contextlib.suppress(KafkaError):  # the futures below say which records failed
            producer.flush(timeout=max(0.0, deadline - now()))
        failed: list[Output] = []
        error_type = None
        for out, future in sent:
            if isinstance(future, BaseException):
                failed.append(out)
                error_type = type(future).__name__
                continue
            try:
                future.get(timeout=max(0.001, deadline - now()))
            except FENCED:
                raise
            except Exception as exc:  # any failure of the send means "not acknowledged"
                failed.append(out)
                error_type = type(exc).__name__
        return failed, error_type

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
                log.info("producer force-closed", error_type=type(exc).__name__)
        try:
            self._producer = self._make()
        except Exception as exc:
            raise PublishError(
                f"could not create a new producer ({type(exc).__name__}); stopping without "
                "committing"
            ) from exc
        log.warning("producer replaced after a failed publish attempt")

    def transaction(
        self, outputs: list[Output], before_commit: Callable[[], None],
        offsets: Any, group_metadata: Callable[[], Any], on_failure: Callable[[], None],
    ) -> None:
        """Outputs and offsets in one transaction; abort (bounded) on any error and raise
        PublishError, or FencedError when another producer took over."""
        producer = self.producer
        try:
            producer.begin_transaction()
            failed, error_type = self.send_and_wait(outputs)
            if failed:
                raise PublishError(
                    f"{len(failed)} output records were not acknowledged ({error_type}); "
                    "the transaction is aborted"
                )
            before_commit()
            limit = self._settings.tuning.transaction_timeout_ms / 1000
            bounded(
                "sending offsets to the transaction",
                limit,
                producer.send_offsets_to_transaction,
                offsets,
                group_metadata(),
            )
            bounded("committing the transaction", limit, producer.commit_transaction)
        except FENCED:
            raise FencedError() from None
        except Exception as exc:
            if is_fenced(exc):
                raise FencedError() from None
            on_failure()
            try:
                bounded("aborting the transaction", ABORT_TIMEOUT_S, producer.abort_transaction)
            except Exception as abort_exc:  # best effort: the broker aborts it after the
                # transaction timeout, or the next instance's init_transactions fences it
                log.warning("transaction abort failed", error_type=type(abort_exc).__name__)
            if isinstance(exc, PublishError):
                raise
            raise PublishError(
                f"the transaction failed ({type(exc).__name__}) and was aborted"
            ) from None

    def close(self, timeout_s: float) -> None:
        """Close the producer (logged, never raised)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except Exception as exc:
            log.warning("producer close failed", error_type=type(exc).__name__)
