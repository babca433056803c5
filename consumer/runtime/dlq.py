"""Dead-letter records: the error headers of design.md and the fallbacks when the copy does not
fit a Kafka request. A dead-letter record is one more output of the batch: never dropped."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from consumer.runtime.kafka import MAX_REQUEST_BYTES, TopicPartition
from consumer.runtime.kafka.quirks import fits
from consumer.runtime.records import Output, Refusal, input_timestamp

DLQ_HEADER_PREFIX: Final = "her2.errors."


def dlq_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    reason: str,
    exception_class: str,
    message: str,
    timestamp_ms: int,
) -> list[tuple[str, bytes]]:
    """The dead-letter headers of design.md (values UTF-8; the timestamp in epoch millis)."""
    values = (
        ("topic", topic),
        ("partition", str(partition)),
        ("offset", str(offset)),
        ("stage", stage),
        ("reason", reason),
        ("exception.class.name", exception_class),
        ("exception.message", message),
        ("timestamp", str(timestamp_ms)),
    )
    return [(DLQ_HEADER_PREFIX + name, value.encode("utf-8")) for name, value in values]


def output_fits(out: Output, limit: int = MAX_REQUEST_BYTES) -> bool:
    """Whether kafka-python would accept `out` (its own upper-bound estimate of the size)."""
    return fits(out.key, out.value, out.headers, limit)


def outputs_fit(outputs: list[Output], limit: int = MAX_REQUEST_BYTES) -> bool:
    """Whether kafka-python would accept every one of `outputs` (one call per record)."""
    return all(fits(out.key, out.value, out.headers, limit) for out in outputs)


def dead_letter(
    dlq: str,
    tp: TopicPartition,
    record: Any,
    *,
    stage: str,
    reason: str,
    exception_class: str,
    message: str,
    timestamp_ms: int,
    extra_headers: Sequence[tuple[str, bytes]] = (),
    limit: int = MAX_REQUEST_BYTES,
) -> Output:
    """The dead-letter copy of `record`: its value and headers plus the error headers; when that
    cannot fit, the error headers alone (they point at the record still in the input topic)."""

    def error_headers(text: str) -> list[tuple[str, bytes]]:
        standard = dlq_headers(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            stage=stage,
            reason=reason,
            exception_class=exception_class,
            message=text,
            timestamp_ms=timestamp_ms,
        )
        return [*standard, *extra_headers]

    kept = [(k, v) for k, v in (record.headers or []) if not k.startswith(DLQ_HEADER_PREFIX)]
    # the input record's timestamp (never the host clock) and where the copy comes from
    stamp, origin = input_timestamp(record), (tp, record.offset)
    dead = Output(
        dlq,
        record.key,
        record.value,
        [*kept, *error_headers(message)],
        timestamp_ms=stamp,
        origin=origin,
    )
    if not output_fits(dead, limit):
        # the copy (value plus error headers) cannot be produced: keep the headers, which
        # point at the record still in the input topic, and say so
        headers = error_headers(
            f"{message}; the original value ({len(record.value or b'')} bytes) does not fit "
            "the dead-letter topic: read it from the input topic at this offset"
        )
        dead = Output(dlq, record.key, None, headers, timestamp_ms=stamp, origin=origin)
        if not output_fits(dead, limit):
            # kafka-python refuses a record with neither key nor value: an empty value
            dead = Output(dlq, None, b"", headers, timestamp_ms=stamp, origin=origin)
    return dead


def headers_only(dead: Output, error: str) -> Output:
    """The last resort of a dead-letter copy the DLQ topic refused for good (`error`, e.g.
    MessageSizeTooLargeError under a small max.message.bytes): the original key, no value (an
    empty one without a key: kafka-python refuses neither), no original headers, the
    producer's timestamp (the input's may be what was refused); the error headers point at the
    record still in the input topic. If the DLQ refuses this too, the service
    stops without committing (runtime/loop.py): a dead letter is never dropped."""
    headers: list[tuple[str, bytes]] = []
    note = (
        f"; the dead-letter topic refused the copy ({error}): read the record from the input "
        "topic at this offset"
    ).encode()
    for name, text in dead.headers:
        if name == DLQ_HEADER_PREFIX + "exception.message":
            headers.append((name, text + note))
        elif name.startswith(DLQ_HEADER_PREFIX):
            headers.append((name, text))
    headers.append((DLQ_HEADER_PREFIX + "dlq.refused", error.encode()))
    empty = None if dead.key is not None else b""
    return dataclasses.replace(dead, value=empty, headers=headers, timestamp_ms=None)


def refusal_letter(
    refusal: Refusal, *, exactly_once: bool
) -> tuple[str, str, list[tuple[str, bytes]]]:
    """The exception class, message and extra headers of the dead letter of a record an output
    of which the broker refused for good."""
    topic = ",".join(sorted(refusal.topics)) or refusal.topic or "?"
    error = refusal.error or "?"
    if exactly_once:
        message = (
            f"the broker refused an output of this record to {topic} for good ({error}); "
            "none of its outputs was published; its evaluation is not in the patient's history"
        )
    else:
        # at-least-once: outputs acknowledged before the refusal cannot be withdrawn, so the
        # record stays evaluated (left out of the history, later records collided with them)
        message = (
            f"the broker refused this record's outputs to {topic} for good ({error}); its "
            "evaluation is in the patient's history and its other outputs are published; "
            "once the cause is fixed, replay this record into the input topic: read as a "
            "redelivery, it publishes them all again (unless the accession has a later report)"
        )
    headers = [
        ("her2.errors.output.topic", topic.encode("utf-8")),
        ("her2.errors.output.error", error.encode("utf-8")),
    ]
    return error, message, headers
