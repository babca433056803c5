"""A batch the broker refused outputs of for good: which input records to dead-letter when the
batch runs again, and which of their output topics to leave out (runtime/loop.py re-drives
it), and when to stop instead.

Never dropped: a refused changelog record (a patient's history) or a dead-letter copy refused
even with its error headers alone stops the service without committing."""

from __future__ import annotations

from consumer.errors import OutputRefusedError, PublishError
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.records import Output, Refusal

log = get_logger("her2.service")


def mark_refused(
    marks: dict[tuple[TopicPartition, int], Refusal], refused: OutputRefusedError, dlq: str
) -> None:
    """Mark in `marks` each input record (by origin) an output of which was refused; raise
    PublishError where a re-run cannot help (no origin, the DLQ refusing a headers-only copy,
    a refusal repeated unchanged)."""
    before = dict(marks)  # one record may have several refused outputs
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
        current = marks.get(origin)  # this round's, when several of its outputs were refused
        topics = current.topics if current is not None else frozenset()
        if topic == dlq:
            if previous is not None and previous.dlq_error is not None:
                raise PublishError(
                    f"the dead-letter topic {topic} refused a dead-letter record for good "
                    f"({error}), even with its error headers alone; stopping without "
                    "committing"
                ) from refused
            refusal = Refusal(
                current.topic if current else None,
                current.error if current else None,
                dlq_error=error,
                topics=topics,
            )
        else:
            refusal = Refusal(
                topic, error, current.dlq_error if current else None, topics=topics | {topic}
            )
        if refusal == previous:  # defensive: a re-run must change something
            raise PublishError(
                f"the broker refused an output to {topic} again ({error}) after the "
                "record was dead-lettered; stopping without committing"
            ) from refused
        marks[origin] = refusal
        tp, offset = origin
        log.warning(
            events.OUTPUT_REFUSED,
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            output_topic=topic,
            error_type=error,
        )
