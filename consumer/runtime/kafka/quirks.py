"""Every kafka-python 3.0.x workaround in one place.

- `disable_topic_auto_creation`: 3.0.12 drops `allow_auto_create_topics=False` on the way to
  its cluster metadata, so metadata requests would create topics.
- `bounded`: send_offsets_to_transaction, commit_transaction and abort_transaction wait
  without a timeout in 3.0.12.
- `is_fenced`: a fenced transactional producer surfaces as ProducerFencedError or, once the
  transaction manager is fatal, as a plain KafkaError naming it.
- `force_close`: close() raises on undeliverable records before stopping its I/O thread.
- `fits`: kafka-python's own upper-bound estimate of a record's size.
- `close_failed_connect_sockets`: 3.0.12 never closes the socket of a connect that failed.
- `static_member_fenced`: a static member fenced by another process with its group.instance.id
  only stops heartbeating and goes on fetching its old partitions.
- `admin_client`: KafkaAdminClient's constructor leaves its IO thread and sockets running when
  its bootstrap fails.
- `bound_metadata_wait`: KafkaConsumer.topics(), and partitions_for_topic() for a topic its
  metadata lacks, wait without a timeout for a broker that does not answer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from consumer.errors import PublishError, StopRequested
from consumer.runtime.kafka import (
    FENCED,
    MAX_REQUEST_BYTES,
    DefaultRecordBatchBuilder,
    KafkaAdminClient,
)

# How often a wait on a broker that does not answer looks at the stop request.
STOP_CHECK_S: Final = 1.0


def disable_topic_auto_creation(client: Any) -> Any:
    """Make a kafka-python client's metadata requests never ask the broker to create topics.

    kafka-python 3.0.12 accepts `allow_auto_create_topics=False` but drops it on the way to its
    ClusterMetadata (kafka/net/manager.py builds ClusterMetadata without that key), so every
    metadata request asks brokers with auto.create.topics.enable=true to create any topic it
    names: a consumer would create a missing input topic, a producer would re-create a deleted
    output topic with broker defaults (a changelog without compaction). Set the flag where
    kafka-python reads it. Returns `client`.
    """
    config = _metadata_config(client)
    if config is not None:
        config["allow_auto_create_topics"] = False
    return client


def _metadata_config(client: Any) -> dict[str, Any] | None:
    """The config dict of a kafka-python client's ClusterMetadata (None if it moved)."""
    cluster = getattr(client, "_metadata", None) or getattr(client, "_cluster", None)
    config = getattr(cluster, "config", None)
    return config if isinstance(config, dict) else None


# The consumer attributes bound_metadata_wait reads (kafka-python 3.0.12).
_METADATA_FETCH_READS: Final = ("_cluster", "_net", "_manager", "config")


def bound_metadata_wait(consumer: Any) -> bool:
    """Make a KafkaConsumer's full metadata fetch (topics(); partitions_for_topic() for a topic
    its cached metadata lacks) wait at most its request_timeout_ms (twice when a refresh is
    already under way: that one is waited for first, then the full one), then raise the retriable
    KafkaTimeoutError, instead of waiting for the broker for ever (3.0.12 passes no timeout).
    Asked for a deleted input topic while the broker is away, the loop stalled until the
    liveness probe restarted the pod; callers already treat a retriable error as "the broker
    did not answer" (the misrouting check retries the record, the lag refresh keeps readiness
    at "broker unreachable"). False when this kafka-python lacks the internals (nothing done)."""
    if not all(hasattr(consumer, name) for name in _METADATA_FETCH_READS):
        return False
    cluster, net, manager = consumer._cluster, consumer._net, consumer._manager
    timeout_ms = consumer.config.get("request_timeout_ms")

    def fetch_all_topic_metadata() -> None:
        if cluster.metadata_refresh_in_progress:
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        stash = cluster.need_all_topic_metadata
        cluster.need_all_topic_metadata = True
        try:
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        finally:
            cluster.need_all_topic_metadata = stash

    consumer._fetch_all_topic_metadata = fetch_all_topic_metadata
    return True


# The coordinator attributes static_member_fenced reads (kafka-python 3.0.12).
_FENCED_CHECK_READS: Final = ("_lock", "_heartbeat_enabled", "rejoining", "stable")


def missing_workarounds(client: Any) -> list[str]:
    """The workarounds of this module whose kafka-python internals `client` lacks (another
    release moved them): each then does nothing, silently, so the caller says so at start-up.
    `topic-auto-creation-off` (disable_topic_auto_creation); for a static member,
    `fenced-static-member-check` (static_member_fenced)."""
    missing = []
    if _metadata_config(client) is None:
        missing.append("topic-auto-creation-off")
    coordinator = getattr(client, "_coordinator", None)
    if getattr(coordinator, "group_instance_id", None) is not None and not all(
        hasattr(coordinator, name) for name in _FENCED_CHECK_READS
    ):
        missing.append("fenced-static-member-check")
    return missing


def bounded(
    what: str,
    timeout_s: float,
    call: Callable[..., Any],
    *args: Any,
    tell_after: float | None = None,
    tell: Callable[[], None] = lambda: None,
    stopping: Callable[[], bool] = lambda: False,
) -> Any:
    """Run a kafka-python call that waits without a timeout (send_offsets_to_transaction,
    commit_transaction, abort_transaction in 3.0.12) in a helper thread, for at most
    `timeout_s`; past that raise PublishError (the service then stops without committing).
    `tell` runs once if the call is still waiting `tell_after` seconds in (readiness); from
    then on the wait looks at `stopping` every STOP_CHECK_S and gives up with StopRequested
    (the broker does not answer and a stop was asked for: the helper thread is left behind)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    name = getattr(call, "__name__", "call")
    worker = threading.Thread(target=target, name=f"her2-{name}", daemon=True)
    worker.start()
    waited = 0.0
    if tell_after is not None and tell_after < timeout_s:
        worker.join(tell_after)
        waited = tell_after
        if worker.is_alive():
            tell()
        while worker.is_alive() and waited < timeout_s:
            if stopping() and worker.is_alive():  # a call that ended meanwhile stands
                raise StopRequested(what)
            piece = min(STOP_CHECK_S, timeout_s - waited)
            worker.join(piece)
            waited += piece
    worker.join(max(0.0, timeout_s - waited))
    if worker.is_alive():
        raise PublishError(f"{what} did not complete within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def is_fenced(exc: BaseException) -> bool:
    """kafka-python reports a fenced transactional producer either as ProducerFencedError or,
    once the transaction manager is in its fatal state, as a plain KafkaError naming it."""
    return isinstance(exc, FENCED) or "ProducerFenced" in str(exc)


def static_member_fenced(consumer: Any) -> bool:
    """A static member (HER2_INSTANCE_ID) that the coordinator fenced because another process
    joined with its group.instance.id. kafka-python 3.0.x's heartbeat only logs "Heartbeat
    thread caught fenced group_instance_id" and disables itself: the member stays stable with
    its assignment and its poll() goes on fetching the partitions now another's, so it would
    process a batch of them (outputs, changelog records from its own, possibly stale, history)
    before its offset commit is refused. A stable member not rejoining whose heartbeat is off
    is in no other state: a join disables the heartbeat while rejoining, and sets the member
    stable and enables it again together under the coordinator's lock, which this reads under
    too. librdkafka makes the fencing fatal itself (runtime/kafka/confluent.py)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "group_instance_id", None) is None:
        return False
    with getattr(coordinator, "_lock", contextlib.nullcontext()):
        return bool(
            coordinator.stable()
            and not coordinator.rejoining
            and not getattr(coordinator, "_heartbeat_enabled", True)
        )


def admin_client(**config: Any) -> Any:
    """KafkaAdminClient(**config), whose parts are closed when its bootstrap fails. 3.0.12's
    constructor starts its IO thread, then bootstraps; when no broker answers it raises, and
    nothing stops that thread or closes its client and metrics (the caller never gets the
    object to close): measured, a thread and 4 descriptors per failed attempt, which the
    start-up wait for a broker would pile up over an outage."""
    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**config)
    except BaseException:
        for part, close in (("_metrics", "close"), ("_client", "close"), ("_net", "stop")):
            with contextlib.suppress(Exception):
                getattr(getattr(admin, part), close)()  # what close() does, in its order
        raise
    return admin


def force_close(producer: Any, timeout_s: float) -> None:
    """After close() raised: stop the producer's I/O thread, or every renewal leaks one (private
    API of 3.0.x), then mark it closed."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()  # fails the records it still holds
        sender.join(timeout_s)
    with contextlib.suppress(Exception):
        producer.close(timeout=0)  # nothing left to flush: marks it closed


# kafka-python's fixed part of the estimate (batch header, record overhead) and the varints of
# the key length, the value length and the header count (5 bytes each at most)
_BUILDER = DefaultRecordBatchBuilder
_ESTIMATE_FIXED: Final = _BUILDER.HEADER_STRUCT.size + _BUILDER.MAX_RECORD_OVERHEAD + 15


def fits(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    limit: int = MAX_REQUEST_BYTES,
) -> bool:
    """Whether kafka-python would accept the record (its own upper-bound size estimate).

    kafka-python's estimate walks every length in pure Python; a record whose sizes are far
    from the limit is settled by a bound on that estimate (each length varint at most 5 bytes,
    a header name at most 4 UTF-8 bytes per character), and only the rest is estimated."""
    bound = _ESTIMATE_FIXED + len(key or b"") + len(value or b"")
    for name, content in headers:
        bound += 10 + 4 * len(name) + len(content or b"")
    if bound <= limit:
        return True
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
    return int(size) <= limit


_CLOSES_ON_FAILURE: Final = "_her2_closes_on_failure"  # marks a wrapped kafka-python step


def close_failed_connect_sockets() -> bool:
    """Close the socket of a failed broker connect, which kafka-python 3.0.12 leaves open.

    Two steps of a connect raise without closing the socket they made: `sock_connect`
    (kafka/net/inet.py: ECONNREFUSED, a timeout) and the TLS transport's `handshake`
    (kafka/net/transport.py, called by the connection manager before it owns the transport: a
    listener that accepts and closes, a certificate refused). The socket lives on in the
    exception's frames until the garbage collector frees that cycle. While a broker is away each
    client retries on its own (consumer, producer, changelog reader), so a service on
    kafka-python gathered about 5 open sockets a minute, peaks of ~50 between collections (the
    service's gen-0 threshold of 50,000 makes collections rare in an idle process), nothing
    capping them; an instance left in a long outage could reach its file-descriptor limit.
    librdkafka closes its own. Wraps both steps once (idempotent) to close what they were given
    when they raise. Returns False when kafka-python's code has moved
    (tests/unit/test_kafka_quirks.py fails then, so an upgrade is checked rather than silently
    unpatched)."""
    from kafka.net import inet, transport  # noqa: PLC0415 - the private modules worked around

    applied = [
        _close_on_failure(
            getattr(inet, "KafkaNetSocket", None), "sock_connect", lambda _, args: args[1].close()
        ),
        _close_on_failure(
            getattr(transport, "KafkaSSLTransport", None), "handshake", lambda self, _: self.close()
        ),
    ]
    return all(applied)


def _close_on_failure(owner: Any, name: str, close: Callable[[Any, tuple[Any, ...]], None]) -> bool:
    """Wrap the coroutine method `owner.name` once so that `close(self, args)` runs when it
    raises (nobody else holds what it closes: the caller only sees the exception)."""
    original = getattr(owner, name, None)
    if original is None:
        return False
    if getattr(original, _CLOSES_ON_FAILURE, False):
        return True

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except BaseException:
            close(self, args)
            raise

    setattr(wrapper, _CLOSES_ON_FAILURE, True)
    setattr(owner, name, wrapper)
    return True
