"""The DLQ limit (HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS, after arroyo's DlqLimit): a run of
processing-error dead letters in a row on one partition stops the service without committing."""

from __future__ import annotations

from consumer.errors import DeadLetterLimitError
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.processor import REASON_PROCESSING_ERROR
from consumer.runtime.results import DeadLettered, Processed

log = get_logger("her2.service")


def count_errors(tp: TopicPartition, result: Processed | DeadLettered, run: int, limit: int) -> int:
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
            'dead-letter topic; see the error log lines "record processing failed", roll '
            "back or fix the deployment, then restart"
        )
    return run
