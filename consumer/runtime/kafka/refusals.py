"""Which outputs did the broker refuse on their own? (kafka-python 3.0.12, issue 15 item 3.)

When the broker refuses one record for good (MessageSizeTooLargeError under a topic's small
max.message.bytes, a missing write ACL, ...), kafka-python 3.0.12's idempotent producer treats
the error as fatal and fails every batch still in flight with the same exception; its
transactional producer aborts the undrained batches with it. (A refused batch of several
records is first split and its parts retried, so records before the large one may get
through; `flush()` may raise meanwhile: send_and_wait reads every future instead.) Taken at
face value, the valid outputs sent beside the one refused record are "refused" too, and their
input records would be dead-lettered unevaluated (seen once in a real-broker run: five valid
reports dead-lettered beside one poison record). So the suspects are sent again in halves,
each group alone through a producer that has seen no refusal: a group acknowledged in full
holds no refused record; a refused group is split until each refused record stands alone
(about 2 k log2 n sends for k refused records among n suspects). At-least-once: the probes are
real publications (the re-run of the batch sends them again: duplicates with the same alert
ids, as at-least-once allows). Exactly-once: each probe runs in its own transaction, always
aborted, so nothing of it is ever visible to read_committed readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka.quirks import bounded
from consumer.runtime.records import Output

if TYPE_CHECKING:
    from consumer.runtime.kafka.producer import ProducerHandle

ABORT_PROBE_TIMEOUT_S: Final = 30.0

log = get_logger("her2.service")


# Refusals of a whole topic (a missing WRITE ACL, an invalid topic): one record of the topic sent
# alone settles them all, instead of a probe per record (a topic without its ACL can refuse every
# output of a batch).
TOPIC_WIDE: Final = frozenset({"TopicAuthorizationFailedError", "InvalidTopicError"})


def isolate_refused(
    handle: ProducerHandle, suspects: list[tuple[Output, str]], *, transactional: bool
) -> list[tuple[Output, str]]:
    """The suspects the broker refuses when sent without the others (`handle` must hold a
    producer that has seen no refusal: renew() it first)."""
    refused: list[tuple[Output, str]] = []
    per_record: list[tuple[Output, str]] = []
    by_topic: dict[tuple[str, str], list[tuple[Output, str]]] = {}
    for out, error in suspects:
        if error in TOPIC_WIDE:
            by_topic.setdefault((out.topic, error), []).append((out, error))
        else:
            per_record.append((out, error))
    for group in by_topic.values():
        if _probe(handle, [group[0][0]], transactional):
            refused += group
    if per_record:
        refused += _split(handle, per_record, transactional)
    log.warning(
        events.REFUSED_OUTPUTS_ISOLATED,
        count=len(suspects),
        refused=len(refused),
    )
    return refused


def _split(
    handle: ProducerHandle, group: list[tuple[Output, str]], transactional: bool
) -> list[tuple[Output, str]]:
    refused = _probe(handle, [out for out, _ in group], transactional)
    if not refused or len(group) == 1:
        return refused
    middle = len(group) // 2
    return _split(handle, group[:middle], transactional) + _split(
        handle, group[middle:], transactional
    )


def _probe(
    handle: ProducerHandle, outputs: list[Output], transactional: bool
) -> list[tuple[Output, str]]:
    """Send `outputs` alone; those refused (a producer that saw a refusal is replaced)."""
    producer = handle.producer
    if transactional:
        producer.begin_transaction()
    try:
        sent = handle.send_and_wait(outputs)
    finally:
        if transactional:
            try:
                abort = producer.abort_transaction
                bounded("aborting a probe transaction", ABORT_PROBE_TIMEOUT_S, abort)
            except Exception as exc:  # the renewal below fences it
                log.warning(events.PROBE_ABORT_FAILED, error_type=type(exc).__name__)
                handle.renew()
    if sent.refused:
        handle.renew()
    return sent.refused
