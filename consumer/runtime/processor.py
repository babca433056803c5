"""One input record -> Processed | DeadLettered | Retry.

decode -> validate -> routing check -> history + pipeline (through the store) -> encode. The
handler ladder maps each failure to its result: the registry unreachable is not the record's
fault (Retry, the partition backs off); a record that can never be used, or whose outputs can
never fit a Kafka request, is dead-lettered; a bug dead-letters the record and the partition
moves on; a failing disk store (StateStoreError) propagates and stops the service without
committing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from consumer.avro.outputs import Codecs
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.validate import check_event
from consumer.config import Settings
from consumer.errors import (
    BrokerError,
    OutputTooLargeError,
    RecordError,
    RegistryError,
    StateStoreError,
)
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime import routing
from consumer.runtime.dlq import dead_letter, outputs_fit, refusal_letter
from consumer.runtime.kafka import MAX_REQUEST_BYTES, TopicPartition
from consumer.runtime.outputs import encoded_outputs
from consumer.runtime.records import Refusal
from consumer.runtime.results import DeadLettered, Processed, Result, Retry
from consumer.state.store import Checkpoint, HistoryStore

REASON_OUTPUT_TOO_LARGE: Final = "output-too-large"
REASON_OUTPUT_REFUSED: Final = "output-refused"
REASON_PROCESSING_ERROR: Final = "processing-error"
PROCESS_ERROR_MESSAGE: Final = "unexpected error while processing the record"
# The dead-letter header exception.class.name of an output-too-large record: a contract with the
# DLQ's readers, kept when the class became OutputTooLargeError.
OUTPUT_TOO_LARGE_CLASS: Final = "OutputTooLarge"

log = get_logger("her2.service")


class Processor:
    """Turns one input record into a result; the store holds the patient's state."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        codecs: Codecs,
        input_partitions: Callable[[str], int],
        clock: Callable[[], dt.datetime],
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        copartitioned: frozenset[str] = frozenset(),
    ) -> None:
        """`input_partitions(topic)`: the input's partition count (the routing check);
        `copartitioned`: output topics with the input's partition count, whose records go to
        the input record's partition number (what the key would hash to)."""
        self.settings = settings
        self.pipeline = pipeline
        self.codecs = codecs
        self._input_partitions = input_partitions
        self._clock = clock
        self._limit = max_request_bytes
        self._debug = settings.log_level == "DEBUG"
        self._copartitioned = copartitioned

    def process(self, tp: TopicPartition, record: Any, store: HistoryStore) -> Result:
        """Process one record against its partition's history store."""
        started = time.perf_counter()
        event_id = None
        undo: Checkpoint | None = None  # the patient's state before this event
        topics = self.settings.topics
        now = self._clock()  # one reading per record: the future-time check and the event age
        try:
            event = check_event(
                self.codecs.decoder.decode(record.value), now, self.settings.event_time_skew
            )
            event_id = event["event_id"]
            # after decode and validation (an unreadable record keeps its own reason), before
            # the history: a misrouted event is never evaluated against a partial history
            misrouted = routing.check(
                record.key, event["patient_id"], tp.partition, self._input_partitions(tp.topic)
            )
            if misrouted is not None:
                raise misrouted.error()
            undo = store.checkpoint(event["patient_id"])
            outcome = store.apply(event, self.pipeline)
            outputs = encoded_outputs(self.codecs, topics, outcome, tp, record, self._copartitioned)
            if not outputs_fit(outputs, self._limit):
                raise OutputTooLargeError(
                    "an output of this record (classification or alert) is larger than the "
                    f"maximum Kafka request ({MAX_REQUEST_BYTES} bytes)"
                )
        except RegistryError as exc:
            _roll_back(store, undo)  # the record is processed again later, from scratch
            log.warning(
                events.REGISTRY_UNAVAILABLE_RETRY,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                error_type=type(exc).__name__,
                reason=exc.kind,
            )
            return Retry()
        except BrokerError as exc:
            # the input's partition count (the misrouting check) needed a metadata request the
            # broker did not answer: not the record's fault, so it is retried, never dead-lettered;
            # a refusal for good (authorization) stops the service as any other Kafka error does
            _roll_back(store, undo)
            if not exc.retriable:
                raise
            log.warning(
                events.BROKER_METADATA_RETRY,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                error_type=exc.kind,
            )
            return Retry()
        except OutputTooLargeError as exc:  # never fits: retrying would stop the partition
            _roll_back(store, undo)  # a dead-lettered event leaves no trace in the history
            return self._dead_letter(
                tp,
                record,
                stage="process",
                reason=REASON_OUTPUT_TOO_LARGE,
                exception_class=OUTPUT_TOO_LARGE_CLASS,
                message=str(exc),
                started=started,
            )
        except RecordError as exc:  # decode, validation, routing; or a reused event_id (apply)
            _roll_back(store, undo)
            return self._dead_letter(
                tp,
                record,
                stage=exc.stage,
                reason=exc.reason,
                exception_class=type(exc).__name__,
                message=exc.message,
                started=started,
                extra_headers=exc.headers,
            )
        except StateStoreError:
            # The disk history store failed (full disk, I/O error): not the record's fault, so
            # never dead-lettered; the service stops without committing and the record is
            # redelivered after the restart (a new store restored from the changelog).
            raise
        except Exception as exc:  # a bug: dead-letter the record and keep the partition moving
            _roll_back(store, undo)
            log.error(
                events.RECORD_PROCESSING_FAILED,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                event_id=event_id,
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            return self._dead_letter(
                tp,
                record,
                stage="process",
                reason=REASON_PROCESSING_ERROR,
                exception_class=type(exc).__name__,
                message=PROCESS_ERROR_MESSAGE,
                started=started,
            )
        duration = time.perf_counter() - started
        category = outcome.classification["category"]
        event_time = event.get("event_time")
        age = None
        if event_time is not None:
            age = max(0.0, (now - event_time).total_seconds())
        if self._debug:
            log.debug(
                events.RECORD_PROCESSED,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                event_id=event_id,
                outcome="processed",
                duration_ms=round(duration * 1000, 3),
                category=category,
                alerts=len(outcome.alerts),
            )
        return Processed(
            outputs=outputs,
            category=category,
            alerts=[(a["alert_type"], a["code"], a["status"]) for a in outcome.alerts],
            transitions=[
                (transition, alert["code"])
                for alert, transition in zip(outcome.alerts, outcome.transitions, strict=False)
            ],
            duration=duration,
            age=age,
        )

    def refused(self, tp: TopicPartition, record: Any, refusal: Refusal) -> DeadLettered:
        """The dead letter of a record an output of which the broker refused for good, the
        refusal in its headers. Exactly-once, the record is dead-lettered unevaluated (no
        trace in the history, none of its outputs published); at-least-once, it is the copy
        beside the record's evaluation (runtime/loop.py)."""
        started = time.perf_counter()
        error, message, headers = refusal_letter(refusal, exactly_once=self.settings.exactly_once)
        return self._dead_letter(
            tp,
            record,
            stage="process",
            reason=REASON_OUTPUT_REFUSED,
            exception_class=error,
            message=message,
            started=started,
            extra_headers=headers,
        )

    def _dead_letter(
        self,
        tp: TopicPartition,
        record: Any,
        *,
        stage: str,
        reason: str,
        exception_class: str,
        message: str,
        started: float,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> DeadLettered:
        dead = dead_letter(
            self.settings.topics.dlq,
            tp,
            record,
            stage=stage,
            reason=reason,
            exception_class=exception_class,
            message=message,
            timestamp_ms=int(self._clock().timestamp() * 1000),
            extra_headers=extra_headers,
            limit=self._limit,
        )
        duration = time.perf_counter() - started
        log.warning(
            events.RECORD_DEAD_LETTERED,
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            outcome="dead_lettered",
            stage=stage,
            reason=reason,
            error_type=exception_class,
            duration_ms=round(duration * 1000, 3),
        )
        return DeadLettered(dead, stage, reason, duration)


def _roll_back(store: HistoryStore, undo: Checkpoint | None) -> None:
    """Put the patient's state back as it was before the record (no-op before apply)."""
    if undo is not None:
        store.roll_back(undo)
