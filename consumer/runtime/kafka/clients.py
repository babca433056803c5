"""kafka-python clients of the service: their keyword arguments, and the real factory."""

from __future__ import annotations

from typing import Any

from consumer.config import CONFLUENT, Settings
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import (
    KAFKA_PYTHON_VERSION,
    MAX_REQUEST_BYTES,
    Admin,
    Clients,
    Consumer,
    CooperativeStickyAssignor,
    KafkaConsumer,
    KafkaProducer,
    Producer,
)
from consumer.runtime.kafka.quirks import (
    admin_client,
    bound_metadata_wait,
    close_failed_connect_sockets,
    disable_topic_auto_creation,
    missing_workarounds,
)

log = get_logger("her2.service")
_warned: set[str] = set()  # workarounds already reported missing by this process


def _not_applied(workarounds: list[str]) -> None:
    """One warning per workaround and process: kafka-python's internals it needs are not there."""
    for workaround in workarounds:
        if workaround not in _warned:
            _warned.add(workaround)
            log.warning(
                events.KAFKA_WORKAROUND_NOT_APPLIED,
                workaround=workaround,
                kafka_python=KAFKA_PYTHON_VERSION,
            )


class KafkaClients:
    """The real clients (the `Clients` Protocol), never auto-creating topics, closing the socket
    of a failed connect (quirks.close_failed_connect_sockets). A workaround of quirks.py that
    cannot reach this kafka-python's internals is said once (KAFKA_WORKAROUND_NOT_APPLIED)."""

    def __init__(self) -> None:
        if not close_failed_connect_sockets():
            _not_applied(["close-failed-connect-sockets"])

    def admin(self, **config: Any) -> Admin:
        """A KafkaAdminClient (connects at once; its parts closed when no broker answers)."""
        return admin_client(**config)  # type: ignore[no-any-return]

    def consumer(self, **config: Any) -> Consumer:
        """A KafkaConsumer whose metadata requests wait at most two request timeouts."""
        consumer = _worked_around(KafkaConsumer(**config))
        if not bound_metadata_wait(consumer):
            _not_applied(["bounded-metadata-wait"])
        return consumer  # type: ignore[no-any-return]

    def producer(self, **config: Any) -> Producer:
        """A KafkaProducer."""
        return _worked_around(KafkaProducer(**config))  # type: ignore[no-any-return]


def _worked_around(client: Any) -> Any:
    """`client` never auto-creating topics; a workaround its internals do not allow is said."""
    _not_applied(missing_workarounds(client))
    return disable_topic_auto_creation(client)


def clients_for(settings: Settings) -> Clients:
    """The clients HER2_KAFKA_CLIENT names: kafka-python's (the default), or the librdkafka
    transport (imported only then: confluent-kafka is an optional extra)."""
    if settings.kafka_client == CONFLUENT:
        from consumer.runtime.kafka.confluent import ConfluentClients  # noqa: PLC0415

        return ConfluentClients()
    return KafkaClients()


def client_id(settings: Settings, default_id: str, role: str) -> str:
    """`her2-<role>-<HER2_INSTANCE_ID or default_id>`.

    `default_id` is the process's instance id when HER2_INSTANCE_ID is unset: under
    exactly-once the id of its claimed host slot (runtime/startup.py), else the host name.
    """
    return f"her2-{role}-{settings.instance_id or default_id}"


def consumer_config(s: Settings, default_id: str) -> dict[str, Any]:
    """The group member's configuration; a static member only with HER2_INSTANCE_ID."""
    t = s.tuning
    kwargs: dict[str, Any] = {
        **s.kafka_common(),
        "client_id": client_id(s, default_id, "consumer"),
        "group_id": s.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "partition_assignment_strategy": [CooperativeStickyAssignor()],
        "max_poll_records": s.max_poll_records,
        "session_timeout_ms": t.session_timeout_ms,
        "heartbeat_interval_ms": t.heartbeat_interval_ms,
        "max_poll_interval_ms": t.max_poll_interval_ms,
        "allow_auto_create_topics": False,
        # bounds how long a missed metadata change (e.g. new partitions) can go unnoticed
        "metadata_max_age_ms": 30000,
    }
    if s.instance_id:
        kwargs["group_instance_id"] = s.instance_id
    return kwargs


def restore_consumer_config(s: Settings, default_id: str) -> dict[str, Any]:
    """The changelog reader's configuration (no group)."""
    return {
        **s.kafka_common(),
        "client_id": client_id(s, default_id, "restore"),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
    }


def producer_config(s: Settings, default_id: str) -> dict[str, Any]:
    """The producer's configuration (transactional under exactly-once)."""
    t = s.tuning
    kwargs: dict[str, Any] = {
        **s.kafka_common(),
        "client_id": client_id(s, default_id, "producer"),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": t.linger_ms,
        "batch_size": t.batch_size,
        "max_request_size": MAX_REQUEST_BYTES,
        "delivery_timeout_ms": max(t.delivery_timeout_ms, t.request_timeout_ms + t.linger_ms),
        "max_block_ms": t.request_timeout_ms,
        "allow_auto_create_topics": False,
    }
    if s.exactly_once:
        kwargs["transactional_id"] = s.transactional_id(default_id)
        kwargs["transaction_timeout_ms"] = t.transaction_timeout_ms
    return kwargs
