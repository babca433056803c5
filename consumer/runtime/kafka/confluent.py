"""The optional confluent-kafka (librdkafka) transport behind the runtime's client Protocols
(HER2_KAFKA_CLIENT=confluent; the `confluent` extra). kafka-python stays the default and the
reference: this module presents librdkafka's consumer and producer with kafka-python's shapes,
so the runtime, MappedClients, ProducerHandle and the refusal isolation run unchanged.

- Data types stay kafka-python's: TopicPartition and OffsetAndMetadata in and out, records as
  kafka-python's ConsumerRecord, send() futures with get(timeout), RecordMetadata.
- Errors become kafka-python's classes (`kafka_error`): a broker error code maps to its class
  (`kafka.errors.for_code`: MessageSizeTooLargeError, TopicAuthorizationFailedError, ... so
  REFUSED_FOR_GOOD classifies librdkafka's per-record failures as it does kafka-python's), a
  librdkafka local error to the nearest class (timeouts, transport, fencing), with librdkafka's
  own `retriable()` verdict.
- The admin client is kafka-python's (start-up only, never on the hot path): librdkafka has no
  DescribeQuorum (the start-up clock check) and the preflight's diagnosis reads kafka-python's
  connection errors. So the `confluent` transport still needs kafka-python installed, which the
  service always does.

Where librdkafka differs and what this adapter does about it:
- poll(): kafka-python returns as soon as records are there (librdkafka's consume(n, timeout)
  waits for n messages or the timeout). So: drain what is fetched (timeout 0); if nothing, wait
  for one message, then drain again. Drained one message at a time with poll(0), never with
  consume(): librdkafka 2.12's batch consume moves the application position to a partition EOF
  event's offset + 1 (librdkafka issue #4844; PR #5213 upstream), and a partition paused and
  resumed then (the service's restore, every cooperative rebalance) fetches from there: the
  first record after the end was skipped, its offset later committed.
- Rebalance callbacks run inside poll()/close() on the calling (main) thread, not on an IO
  thread. The adapter applies the (incremental) assignment before calling the listener, so the
  listener may pause the new partitions at once.
- position(): librdkafka answers a logical offset (or none) until a message was consumed; the
  adapter resolves it like kafka-python (the log start after seek_to_beginning, else the
  committed offset, else the reset policy). A partition read to its end (a partition EOF event,
  then a poll that found nothing left) counts as positioned past trailing transaction markers,
  as kafka-python's position is.
- end_offsets(): the broker is asked only for partitions not fetched yet; the lag gauges get the
  high watermark of the last fetch response (see end_offsets()), except after librdkafka told
  of a broker connection lost (its error callback): then the broker is asked until it answers,
  so that readiness follows an outage as on kafka-python.
- partitions_for_topic(): kafka-python answers from its cached metadata; librdkafka's
  list_topics() asks the broker, so the count is cached here (METADATA_CACHE_S).
- The producer partitions with murmur2 (librdkafka's default is CRC32): records without an
  explicit partition land where kafka-python and the Java client would put them.
- Under exactly-once librdkafka requires the delivery and the socket timeouts <= the transaction
  timeout: both are capped to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import confluent_kafka as ck  # no type hints (pyproject: ignore_missing_imports)

from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import (
    Admin,
    ConsumerRecord,
    CooperativeStickyAssignor,
    KafkaError,
    OffsetAndMetadata,
    RecordMetadata,
    TopicPartition,
    errors,
)
from consumer.runtime.kafka.clients import KafkaClients

METADATA_CACHE_S: Final = 5.0  # how long partitions_for_topic trusts a metadata answer
BLOCK_POLL_S: Final = 0.05  # one wait of a blocked send or get() for the delivery reports
WATERMARK_RETRY_S: Final = 0.1  # between two asks of a partition's watermarks (retriable errors)

_log = logging.getLogger("her2.kafka.confluent")  # client chatter, at debug level only
log = get_logger("her2.service")
_librdkafka_log = logging.getLogger("kafka.librdkafka")  # as kafka-python's, client noise

# librdkafka's local error codes (negative), by name: the kafka-python class closest to each
_LOCAL: Final[dict[int, type[KafkaError]]] = {
    ck.KafkaError._MSG_TIMED_OUT: errors.KafkaTimeoutError,
    ck.KafkaError._TIMED_OUT: errors.KafkaTimeoutError,
    ck.KafkaError._TIMED_OUT_QUEUE: errors.KafkaTimeoutError,
    ck.KafkaError._TRANSPORT: errors.KafkaConnectionError,
    ck.KafkaError._ALL_BROKERS_DOWN: errors.KafkaConnectionError,
    ck.KafkaError._RESOLVE: errors.KafkaConnectionError,
    ck.KafkaError._FENCED: errors.ProducerFencedError,
    ck.KafkaError._UNKNOWN_TOPIC: errors.UnknownTopicOrPartitionError,
    ck.KafkaError._UNKNOWN_PARTITION: errors.UnknownTopicOrPartitionError,
    ck.KafkaError._STATE: errors.IllegalStateError,
    ck.KafkaError._AUTHENTICATION: errors.SaslAuthenticationFailedError,
    ck.KafkaError._SSL: errors.KafkaConnectionError,
    ck.KafkaError._WAIT_COORD: errors.CoordinatorNotAvailableError,
    ck.KafkaError._NODE_UPDATE: errors.KafkaConnectionError,
}
# local errors no retry can cure (a programming or configuration error)
_LOCAL_PERMANENT: Final = frozenset(
    {
        ck.KafkaError._INVALID_ARG,
        ck.KafkaError._NOT_IMPLEMENTED,
        ck.KafkaError._UNSUPPORTED_FEATURE,
        ck.KafkaError._INCONSISTENT,
        ck.KafkaError._BAD_MSG,
        ck.KafkaError._FATAL,
        ck.KafkaError._DESTROY,
    }
)
# commits a rebalance refuses: kafka-python raises CommitFailedError for them. Not
# FENCED_INSTANCE_ID: librdkafka makes its consumer fatal on that answer (it polls nothing
# ever after), so it is raised as the non-retriable FencedInstanceIdError and the service stops
_COMMIT_REFUSED: Final = frozenset(
    {
        ck.KafkaError.ILLEGAL_GENERATION,
        ck.KafkaError.UNKNOWN_MEMBER_ID,
        ck.KafkaError._ASSIGNMENT_LOST,
    }
)
# generic errors librdkafka hands the consumer's error callback when it lost a broker: a
# connection closed or refused (its own idle disconnects are not reported), every broker down,
# a broker's name not resolved, requests unanswered past socket.timeout.ms (a frozen broker:
# its connections stay open and nothing is refused; librdkafka disconnects then)
_BROKER_AWAY: Final = frozenset(
    {
        ck.KafkaError._TRANSPORT,
        ck.KafkaError._ALL_BROKERS_DOWN,
        ck.KafkaError._RESOLVE,
        ck.KafkaError._TIMED_OUT,
    }
)
# consumer errors poll() raises (kafka-python raises them too); the others are transient
# (a broker away, a topic not yet there): librdkafka retries them by itself
_POLL_RAISES: Final = frozenset(
    {
        ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ck.KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)

# kafka-python's timestamp_type: 0 CreateTime, 1 LogAppendTime (librdkafka: 1 and 2)
_TIMESTAMP_TYPE: Final = {
    ck.TIMESTAMP_CREATE_TIME: 0,
    ck.TIMESTAMP_LOG_APPEND_TIME: 1,
    ck.TIMESTAMP_NOT_AVAILABLE: -1,
}


def kafka_error(err: Any, *, commit: bool = False) -> KafkaError:
    """kafka-python's error for a confluent_kafka.KafkaError (`commit`: refused commits become
    CommitFailedError, as kafka-python reports them)."""
    code = err.code()
    text = f"{err.name()}: {err.str()}"
    cls: type[KafkaError]
    if commit and code in _COMMIT_REFUSED:
        cls = errors.CommitFailedError
    elif code in _LOCAL:
        cls = _LOCAL[code]
    elif code > 0:
        cls = errors.for_code(code)
    else:
        cls = KafkaError
    exc = cls(text)
    if err.fatal():
        exc.retriable = False
    elif code < 0 and cls is KafkaError:
        # a local error without a class of kafka-python's: retriable unless a programming or
        # configuration error (librdkafka calls even _TRANSPORT and _WAIT_COORD not retriable;
        # kafka-python's connection and timeout errors are, and the service rides a broker
        # outage out on that: a commit failing while the broker is away is not fatal)
        exc.retriable = code not in _LOCAL_PERMANENT
    elif cls in (KafkaError, errors.UnknownError):
        exc.retriable = bool(err.retriable())
    return exc


def _mapped(exc: BaseException, *, commit: bool = False) -> BaseException:
    """kafka-python's error for a confluent_kafka.KafkaException (anything else as is)."""
    if isinstance(exc, ck.KafkaException) and exc.args and isinstance(exc.args[0], ck.KafkaError):
        mapped: BaseException = kafka_error(exc.args[0], commit=commit)
        return mapped
    return exc


def _call(call: Callable[..., Any], *args: Any, commit: bool = False, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except ck.KafkaException as exc:
        raise _mapped(exc, commit=commit) from exc


# -- configuration --------------------------------------------------------------------------

_COMMON: Final = {
    "client_id": "client.id",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
_CONSUMER: Final = {
    "enable_auto_commit": "enable.auto.commit",
    "auto_offset_reset": "auto.offset.reset",
    "isolation_level": "isolation.level",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "allow_auto_create_topics": "allow.auto.create.topics",
    "metadata_max_age_ms": "topic.metadata.refresh.interval.ms",
    "group_instance_id": "group.instance.id",
}
_PRODUCER: Final = {
    "acks": "acks",
    "enable_idempotence": "enable.idempotence",
    "linger_ms": "linger.ms",
    "batch_size": "batch.size",
    "max_request_size": "message.max.bytes",
    "transactional_id": "transactional.id",
    "transaction_timeout_ms": "transaction.timeout.ms",
    "allow_auto_create_topics": "allow.auto.create.topics",
}


def _common(config: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """librdkafka properties for kafka-python keyword arguments (ValueError for one not known:
    every argument the service's config builders pass must be translated, none dropped)."""
    # TCP_NODELAY as kafka-python sets it: with Nagle on, every produce request and commit
    # waits for the broker's delayed ACK
    conf: dict[str, Any] = {"logger": _librdkafka_log, "socket.nagle.disable": True}
    for key, value in config.items():
        if key == "bootstrap_servers":
            conf["bootstrap.servers"] = value if isinstance(value, str) else ",".join(value)
        elif key == "request_timeout_ms":
            conf["socket.timeout.ms"] = value
        elif key == "ssl_check_hostname":
            conf["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        elif key in _COMMON:
            conf[_COMMON[key]] = value
        elif key in names:
            conf[names[key]] = value
        elif key not in ("max_poll_records", "max_block_ms", "delivery_timeout_ms"):
            raise ValueError(f"no librdkafka property for the kafka-python argument {key!r}")
    return conf


def consumer_conf(config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka consumer properties for the service's kafka-python consumer arguments."""
    rest = dict(config)
    group = rest.pop("group_id", None)
    strategies = rest.pop("partition_assignment_strategy", None)
    conf = _common(rest, _CONSUMER)
    # confluent-kafka wants a group id even for a consumer that only assign()s: a reader
    # without a group gets one it never joins nor commits to (its client id)
    conf["group.id"] = group if group is not None else f"her2-no-group-{conf.get('client.id')}"
    if strategies is not None:
        if not all(isinstance(s, CooperativeStickyAssignor) for s in strategies):
            raise ValueError("only CooperativeStickyAssignor is translated to librdkafka")
        conf["partition.assignment.strategy"] = "cooperative-sticky"
    conf["enable.partition.eof"] = True  # position() past trailing transaction markers
    return conf


def producer_conf(config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka producer properties for the service's kafka-python producer arguments."""
    conf = _common(config, _PRODUCER)
    conf["partitioner"] = "murmur2_random"  # kafka-python's and the Java client's partitioner
    if "request_timeout_ms" in config:
        conf["request.timeout.ms"] = config["request_timeout_ms"]
    delivery = config.get("delivery_timeout_ms")
    transaction = config.get("transaction_timeout_ms")
    if delivery is not None:
        # librdkafka refuses a delivery timeout above the transaction timeout
        conf["delivery.timeout.ms"] = (
            delivery if transaction is None else min(delivery, transaction)
        )
    if transaction is not None and conf.get("socket.timeout.ms", 0) > transaction:
        conf["socket.timeout.ms"] = transaction  # and a socket timeout above it
    return conf


def _offset(tp: TopicPartition, om: OffsetAndMetadata) -> Any:
    """librdkafka's TopicPartition for an offset to commit (with its leader epoch if known)."""
    epoch = om.leader_epoch
    if epoch is not None and epoch >= 0:
        return ck.TopicPartition(tp.topic, tp.partition, om.offset, om.metadata or "", epoch)
    return ck.TopicPartition(tp.topic, tp.partition, om.offset, om.metadata or "")


# -- consumer -------------------------------------------------------------------------------


def _record_or_eof(message: Any) -> bool:
    """A fetched record, or a partition EOF (its offset belongs to the assignment it came
    from, as a record's does)."""
    err = message.error()
    return err is None or err.code() == ck.KafkaError._PARTITION_EOF


class ConfluentConsumer:
    """A librdkafka consumer with the KafkaConsumer calls of the `Consumer` Protocol."""

    def __init__(self, config: dict[str, Any]) -> None:
        """Translate `config` (kafka-python arguments) and create the consumer."""
        self._max_poll_records: int = config.get("max_poll_records", 500)
        self._timeout_s: float = config.get("request_timeout_ms", 30000) / 1000
        self._group = config.get("group_id") is not None
        self._earliest = config.get("auto_offset_reset", "latest") == "earliest"
        conf = consumer_conf(config)
        conf["error_cb"] = self._on_error  # served inside poll(), on the calling thread
        self._conf = conf
        # librdkafka told of a broker connection lost (see _on_error) and no broker answered
        # since: end_offsets() asks the broker instead of answering from cached watermarks
        self._broker_away = False
        self._cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self._c = _call(ck.Consumer, conf)
        self._listener: Any = None
        self._topics: list[str] = []
        self._subscribed = False  # a group member (subscribe()), not only a group id (assign())
        self._assigned: set[TopicPartition] = set()  # as the listener was told
        # a member without partitions and without a member id since (monotonic), and how long
        # that may last before the consumer is replaced (see _adrift)
        self._adrift_since: float | None = None
        self._adrift_limit_s: float = config.get("session_timeout_ms", 45000) / 1000
        # during a poll's drain: the messages taken so far, and (how many had been taken, the
        # partitions) of each rebalance callback librdkafka ran inside it (see poll())
        self._taken: list[Any] | None = None
        self._moved: list[tuple[int, set[TopicPartition]]] = []
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        # the next offset to fetch as this adapter knows it (records returned, seek(), a
        # partition EOF past trailing transaction markers): librdkafka's own position() lags
        # behind a seek. A partition EOF event can arrive before records fetched ahead of it
        # (seen under load: EOF at 1114 returned before the records 711..1112), so its offset
        # becomes the position only once a poll waited and found nothing left (_drained).
        self._pos: dict[TopicPartition, int] = {}
        self._eof: dict[TopicPartition, int] = {}
        self._logical: dict[TopicPartition, int] = {}  # a seek to the beginning not yet read
        self._counts: dict[str, tuple[float, set[int] | None]] = {}
        self._refreshing: set[str] = set()

    def _tp(self, topic: str, partition: int) -> TopicPartition:
        key = (topic, partition)
        tp = self._tps.get(key)
        if tp is None:
            tp = self._tps[key] = TopicPartition(topic, partition)
        return tp

    def _from(self, ctps: Iterable[Any]) -> set[TopicPartition]:
        return {self._tp(c.topic, c.partition) for c in ctps}

    @staticmethod
    def _to(tps: Iterable[TopicPartition], offset: int | None = None) -> list[Any]:
        if offset is None:
            return [ck.TopicPartition(tp.topic, tp.partition) for tp in tps]
        return [ck.TopicPartition(tp.topic, tp.partition, offset) for tp in tps]

    def _on_error(self, err: Any) -> None:
        """librdkafka's generic errors (called inside poll()). A broker connection lost means
        the cached watermarks may be a dead broker's: end_offsets() asks until it answers."""
        if err.code() in _BROKER_AWAY:
            self._broker_away = True
        _log.debug("consumer error %s: %s", err.name(), err.str())

    # -- group membership ---------------------------------------------------------------

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Subscribe; `listener` is a kafka-python ConsumerRebalanceListener (or None)."""
        self._listener = listener
        self._topics = list(topics)
        self._subscribed = True
        self._subscribe()

    def _subscribe(self) -> None:
        """Subscribe the current librdkafka consumer to the topics, with our callbacks."""
        _call(
            self._c.subscribe,
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        assigned = self._from(partitions)
        self._note_moved(assigned)
        for tp in assigned:
            self._pos.pop(tp, None)
            self._eof.pop(tp, None)
        self._assigned |= assigned
        if self._listener is not None:
            self._listener.on_partitions_assigned(assigned)

    def _dropped(self, consumer: Any, partitions: list[Any], callback: str) -> None:
        dropped = self._from(partitions)
        self._note_moved(dropped)
        try:
            if self._listener is not None:
                getattr(self._listener, callback)(dropped)
        finally:
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
            for tp in dropped:
                self._pos.pop(tp, None)
                self._eof.pop(tp, None)
            self._assigned -= dropped

    def _note_moved(self, partitions: set[TopicPartition]) -> None:
        """A rebalance callback inside a poll's drain: the messages taken before it for these
        partitions belong to an assignment that is over (poll() drops them)."""
        if self._taken is not None and partitions:
            self._moved.append((len(self._taken), partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._dropped(consumer, partitions, "on_partitions_revoked")

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._dropped(consumer, partitions, "on_partitions_lost")

    def topics(self) -> Any:
        """Every topic's name (a metadata request)."""
        metadata = _call(self._c.list_topics, timeout=self._timeout_s)
        return set(metadata.topics)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Manual assignment (no group membership)."""
        for tp in partitions:
            self._pos.pop(tp, None)
            self._eof.pop(tp, None)
            self._logical.pop(tp, None)
        if self._group:
            _call(self._c.assign, self._to(partitions))
            return
        # no group: kafka-python starts from the reset policy, never from committed offsets
        start = ck.OFFSET_BEGINNING if self._earliest else ck.OFFSET_END
        for tp in partitions:
            self._logical[tp] = start
        _call(self._c.assign, self._to(partitions, start))

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now."""
        return self._from(_call(self._c.assignment))

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions from a cached metadata answer (None when the broker does not
        know the topic), as kafka-python answers from its cluster metadata: the processor asks
        for every record. Only the first answer is waited for; one older than METADATA_CACHE_S
        is renewed by a helper thread (a metadata request waits behind the long-polling fetch
        on the same connection)."""
        cached = self._counts.get(topic)
        if cached is None:
            return self._metadata(topic)
        if time.monotonic() - cached[0] >= METADATA_CACHE_S and topic not in self._refreshing:
            self._refreshing.add(topic)
            threading.Thread(
                target=self._metadata, args=(topic,), name="her2-metadata", daemon=True
            ).start()
        return cached[1]

    def _metadata(self, topic: str) -> set[int] | None:
        try:
            metadata = _call(self._c.list_topics, topic, timeout=self._timeout_s)
        except (KafkaError, RuntimeError):  # RuntimeError: the consumer was closed meanwhile
            cached = self._counts.get(topic)
            return cached[1] if cached is not None else None
        finally:
            self._refreshing.discard(topic)
        info = metadata.topics.get(topic)
        found = None if info is None or info.error is not None else set(info.partitions)
        self._counts[topic] = (time.monotonic(), found)
        return found

    # -- fetching -----------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Mapping[Any, Any]:
        """Records fetched, by partition: at once what is there, else the first to arrive
        within `timeout_ms` with what came with it."""
        limit = max_records or self._max_poll_records
        if not self._assigned and self._subscribed:
            self._adrift()
        take = self._c.poll
        messages: list[Any] = []
        self._taken, self._moved = messages, []
        try:
            # one message per call, never consume(): see the module's docstring (#4844)
            m = take(0)
            if m is None and timeout_ms > 0:
                m = take(timeout_ms / 1000)
                if m is None:
                    self._drained()
                    return {}
            while m is not None:
                messages.append(m)
                m = take(0) if len(messages) < limit else None
        except ck.KafkaException as exc:
            raise _mapped(exc) from exc
        finally:
            self._taken = None
        if self._moved:
            messages = self._current(messages)
        records: dict[TopicPartition, list[Any]] = {}
        tps = self._tps
        for m in messages:
            err = m.error()
            if err is not None:
                if self._event(m, err):  # a new consumer replaced the fenced one
                    return {}
                continue
            key = (m.topic(), m.partition())
            tp = tps.get(key) or self._tp(*key)
            kind, stamp = m.timestamp()
            record = ConsumerRecord(
                key[0],
                key[1],
                m.leader_epoch(),
                m.offset(),
                stamp,
                _TIMESTAMP_TYPE.get(kind, -1),
                m.key(),
                m.value(),
                m.headers() or [],
                None,
                -1,
                -1,
                -1,
            )
            batch = records.get(tp)
            if batch is None:
                records[tp] = [record]
            else:
                batch.append(record)
        for tp, batch in records.items():
            self._logical.pop(tp, None)
            self._pos[tp] = batch[-1].offset + 1
        return records

    def _current(self, messages: list[Any]) -> list[Any]:
        """The messages of this poll without those taken before a rebalance callback moved
        their partition: librdkafka runs the callbacks inside poll(), between messages, and
        still returns what it fetched for a partition now revoked (or revoked and assigned
        again, the new assignment starting at the committed offset). kafka-python drops the
        records of a partition it no longer owns; so does this. Messages taken after the
        callback (a new assignment's) are kept."""
        moved, self._moved = self._moved, []
        stale: set[int] = set()
        for count, partitions in moved:
            keys = {(tp.topic, tp.partition) for tp in partitions}
            stale.update(
                i
                for i, m in enumerate(messages[:count])
                if _record_or_eof(m) and (m.topic(), m.partition()) in keys
            )
        return [m for i, m in enumerate(messages) if i not in stale]

    def _left_group(self) -> bool:
        """A group member (subscribe()) without a member id now: its session ended, or it
        left the group after a batch longer than max.poll.interval.ms."""
        return self._subscribed and not self._member_id()

    def _event(self, message: Any, err: Any) -> bool:
        """Note a partition EOF, raise a fatal or a poll-raised error, log the rest; True when
        the consumer was fenced for its own lost session and a new one replaced it."""
        code = err.code()
        if code == ck.KafkaError._PARTITION_EOF:
            tp = self._tp(message.topic(), message.partition())
            self._eof[tp] = message.offset()
            return False
        # a fatal consumer error reaches the application as an event of code _FATAL whose
        # fatal() flag is not set: the consumer is unusable, the service must stop (a static
        # member fenced polled nothing more, silently, while the service waited for records)
        fatal = err.fatal() or code == ck.KafkaError._FATAL
        if fatal and self._subscribed and not self._member_id():
            self._revive(err)
            return True
        if fatal or code in _POLL_RAISES:
            raise kafka_error(err)
        _log.debug("consumer event %s: %s", err.name(), err.str())
        return False

    def _member_id(self) -> str | None:
        try:
            return self._c.memberid()  # type: ignore[no-any-return]
        except RuntimeError:  # closed
            return None

    def _revive(self, err: Any) -> None:
        """Replace a consumer librdkafka fenced for its own lost session with a new member.

        librdkafka ends the group session on its side when the coordinator is away longer
        than session.timeout.ms and forgets its member id; until the application's next poll
        hands over the lost partitions it may still heartbeat, with that empty member id and
        the group.instance.id of a static member (HER2_INSTANCE_ID). The coordinator, which
        still maps the instance to the old member id, answers FENCED_INSTANCE_ID and librdkafka
        makes the consumer fatal for good (librdkafka issue #3437; seen in the broker outage
        test as a heartbeat 3 s after the broker was back, the service still waiting on its
        last batch). Nobody else holds the instance id then, so a new consumer with the same
        configuration joins in its place (the coordinator replaces the static member), as
        kafka-python rejoins after its session expired. A member fenced while it held its
        member id (another process with the same HER2_INSTANCE_ID) is not revived: that
        fatal error is raised and the service stops."""
        self._replace_member(err.name())

    def _replace_member(self, reason: str) -> None:
        """Close this consumer (its lost partitions told) and join with a new one."""
        lost = set(self._assigned)
        old = self._c
        with contextlib.suppress(Exception):  # fatal: close() may raise that error again
            old.close()
        lost &= self._assigned  # what close() did not hand over (its callbacks may have)
        self._assigned.clear()
        self._pos.clear()
        self._eof.clear()
        self._logical.clear()
        if lost and self._listener is not None:
            self._listener.on_partitions_lost(lost)
        self._c = _call(ck.Consumer, self._conf)
        self._subscribe()
        log.warning(events.CONSUMER_REPLACED_AFTER_SESSION_LOST, error_type=reason)

    def _adrift(self) -> None:
        """Replace a member that has had neither partitions nor a member id for a session
        timeout. After a broker was frozen and thawed, librdkafka 2.12 ended its session
        (SESSTMOUT, coordinator "broker -1"), said it was rejoining, and never did, even across
        later broker restarts: alive, unready, no partitions, while the broker served other
        clients (seen by a soak audit about 1 freeze in 4-9, and by the readiness test). A new
        consumer with the same configuration joins. A member waiting its turn in a join has a
        member id and is left alone, and so is one without partitions in a group with more
        members than partitions; during a broker outage a replaced member simply waits again."""
        if self._member_id():
            self._adrift_since = None
            return
        now = time.monotonic()
        if self._adrift_since is None:
            self._adrift_since = now
        elif now - self._adrift_since >= self._adrift_limit_s:
            self._adrift_since = None
            self._replace_member("NoMemberId")

    def _drained(self) -> None:
        """A poll waited and found nothing: every record fetched before the partition EOF
        events seen so far was returned, so their offsets are now the positions."""
        for tp, offset in self._eof.items():
            if offset > self._pos.get(tp, -1):
                self._pos[tp] = offset
                self._logical.pop(tp, None)
        self._eof.clear()

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching these partitions."""
        if partitions:
            _call(self._c.pause, self._to(partitions))

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch these partitions again."""
        if partitions:
            _call(self._c.resume, self._to(partitions))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next record of `tp` to fetch is `offset`."""
        self._pos[tp] = offset
        self._eof.pop(tp, None)
        self._logical.pop(tp, None)
        _call(self._c.seek, ck.TopicPartition(tp.topic, tp.partition, offset))

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch these partitions from their log start."""
        for tp in partitions:
            self._pos.pop(tp, None)
            self._eof.pop(tp, None)
            self._logical[tp] = ck.OFFSET_BEGINNING
            _call(self._c.seek, ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING))

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        """The offset of the next record to fetch, resolved as kafka-python does."""
        timeout = self._timeout_s if timeout_ms is None else timeout_ms / 1000
        known = self._pos.get(tp)
        if known is not None:
            return known
        [at] = _call(self._c.position, [ck.TopicPartition(tp.topic, tp.partition)])
        if at.offset >= 0:
            return int(at.offset)
        logical = self._logical.get(tp)
        member = logical is None and self._group
        if member:
            committed = self.committed(tp, timeout_ms)  # the coordinator: no fetch to wait for
            if committed is not None:
                # where its fetch starts: kept until a record, a seek or a new assignment moves
                # it (the lag gauges asked again every refresh for a partition whose records
                # had not come yet, and the ListOffsets below, queued behind the long-polling
                # fetch, held the loop about 2 s per refresh)
                self._pos[tp] = committed
                return committed
        low, high = self._watermarks(tp, timeout)
        if logical == ck.OFFSET_BEGINNING:
            return low
        if logical == ck.OFFSET_END:
            return high
        start = low if self._earliest else high
        if member:
            self._pos[tp] = start  # as above: no committed offset, the reset policy's start
        return start

    def _watermarks(self, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
        """The partition's watermarks from its leader (ListOffsets). A retriable error is asked
        again until `timeout_s`, as kafka-python's end_offsets does: right after a broker comes
        back its partitions are briefly UNKNOWN_TOPIC_OR_PART (the restore of a partition
        re-assigned then stopped the service, seen in the broker outage test)."""
        ctp = ck.TopicPartition(tp.topic, tp.partition)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                low, high = _call(
                    self._c.get_watermark_offsets, ctp, timeout=max(left, 0.001), cached=False
                )
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() + WATERMARK_RETRY_S >= deadline:
                    raise
                time.sleep(WATERMARK_RETRY_S)
                continue
            return int(low), int(high)

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int | None = None) -> Any:
        """The end offset of each partition: asked of the broker (ListOffsets; under
        read_committed the last stable offset) for a partition this consumer has not fetched
        since its assignment or seek (the restore's end offsets), else the high watermark of
        the last fetch response (the lag gauges: a ListOffsets request waits behind the
        consumer's long-polling fetch on the same connection, up to fetch.wait.max.ms, which
        cost the loop a fifth of its time when asked every HER2_LAG_REFRESH_SECONDS).

        Not the cached watermark once librdkafka told of a broker connection lost (_on_error):
        a broker gone without a clean shutdown (killed, its node lost, frozen) leaves it as the
        last fetch said, and the lag refresh, which tells readiness whether the broker answers,
        found the broker answering until the group session ended and the partitions were
        revoked (about 35 s into an outage). Every partition is then asked of the broker until
        one call is answered in full; an unanswered ask raises (a BrokerError: not ready). A
        harmless connection loss costs one answered ask per owned partition (librdkafka does
        not report its own idle disconnects to the callback)."""
        timeout = self._timeout_s if timeout_ms is None else timeout_ms / 1000
        ends: dict[TopicPartition, int] = {}
        if self._broker_away and partitions:  # (no partition asked: no answer to clear it)
            for tp in partitions:
                ends[tp] = self._watermarks(tp, timeout)[1]
            self._broker_away = False  # answered (error callbacks run inside poll() only)
            return ends
        for tp in partitions:
            if tp in self._pos:
                ctp = ck.TopicPartition(tp.topic, tp.partition)
                _, high = _call(self._c.get_watermark_offsets, ctp, cached=True)
                if high >= 0:
                    ends[tp] = int(high)
                    continue
            ends[tp] = self._watermarks(tp, timeout)[1]
        return ends

    # -- offsets --------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit synchronously (CommitFailedError when a rebalance refuses it, or when this
        member has no member id: then it is refused here, not sent).

        librdkafka forgets its member id when the group session times out on its side (a
        broker away longer than session.timeout.ms) and tells the application at its next
        poll (partitions lost). A commit sent in between carries an empty member id with the
        group.instance.id of a static member (HER2_INSTANCE_ID), which the coordinator answers
        FENCED_INSTANCE_ID, and librdkafka makes that fatal (librdkafka issue #3437): the
        consumer never polls again. kafka-python refuses a commit outside a stable generation
        with CommitFailedError without sending it; so does this adapter."""
        if self._left_group():
            raise errors.CommitFailedError(
                "commit refused: no group membership (the group session ended; the partitions "
                "are lost at the next poll and the records redelivered)"
            )
        ctps = [_offset(tp, om) for tp, om in offsets.items()]
        result = _call(self._c.commit, offsets=ctps, asynchronous=False, commit=True)
        for ctp in result or ():
            if ctp.error is not None:
                raise kafka_error(ctp.error, commit=True)

    def committed(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        """The group's committed offset of `partition` (None: none)."""
        timeout = self._timeout_s if timeout_ms is None else timeout_ms / 1000
        [at] = _call(
            self._c.committed,
            [ck.TopicPartition(partition.topic, partition.partition)],
            timeout=timeout,
        )
        if at.error is not None:
            raise kafka_error(at.error)
        return int(at.offset) if at.offset >= 0 else None

    def group_metadata(self) -> Any:
        """The group metadata for send_offsets_to_transaction; CommitFailedError for a group
        member with no member id now (the group session ended, or the member left the group
        after a batch longer than max.poll.interval.ms), as kafka-python's generation check
        (runtime/kafka/mapping.py): nothing of a batch may be committed or written as the
        partitions' history by a member that no longer owns them."""
        if self._left_group():
            raise errors.CommitFailedError(
                "no group membership (the member left the group or its session ended)"
            )
        return _call(self._c.consumer_group_metadata)

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        """Leave the group (the listener hears of the revocation) and close. Never commits:
        the service's consumers run without auto-commit (`autocommit` is kafka-python's)."""
        del autocommit, timeout_ms  # librdkafka's close() has neither
        _call(self._c.close)


# -- producer -------------------------------------------------------------------------------


class Delivery:
    """A send()'s future: librdkafka calls it with the delivery report (on_delivery)."""

    __slots__ = ("_owner", "done", "error", "message")

    def __init__(self, owner: ConfluentProducer) -> None:
        self._owner = owner
        self.done = False
        self.error: KafkaError | None = None
        self.message: Any = None

    def __call__(self, err: Any, message: Any) -> None:
        self.done = True
        if err is not None:
            self.error = kafka_error(err)
        else:
            self.message = message

    def failed(self, exc: KafkaError) -> Delivery:
        """A future already failed with `exc`."""
        self.done, self.error = True, exc
        return self

    def succeeded(self) -> bool:
        """Delivered (kafka-python's FutureRecordMetadata.succeeded(): done, no error)."""
        return self.done and self.error is None

    def get(self, timeout: float | None = None) -> Any:
        """The record's metadata, or raise its error (KafkaTimeoutError after `timeout`). Once
        the producer is in a fatal state (fenced), that error: librdkafka fails the records it
        still held as merely purged."""
        owner = self._owner
        if not self.done:
            deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
            while not self.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.KafkaTimeoutError("no delivery report within the timeout")
                owner.run(owner.handle.poll, min(remaining, BLOCK_POLL_S))
        if self.error is not None:
            raise owner.fatal or self.error
        m = self.message
        _, stamp = m.timestamp()
        tp = TopicPartition(m.topic(), m.partition())
        return RecordMetadata(m.topic(), m.partition(), tp, m.offset(), stamp, None, -1, -1, -1)


class ConfluentProducer:
    """A librdkafka producer with the KafkaProducer calls of the `Producer` Protocol."""

    def __init__(self, config: dict[str, Any]) -> None:
        """Translate `config` (kafka-python arguments) and create the producer."""
        self._block_s: float = config.get("max_block_ms", 60000) / 1000
        self._txn_s: float = config.get("transaction_timeout_ms", 60000) / 1000
        self.fatal: KafkaError | None = None  # the producer's fatal error (fenced), once seen
        conf = producer_conf(config)
        conf["error_cb"] = self._on_error
        self.handle: Any = _call(ck.Producer, conf)
        self._closed = False

    def _on_error(self, err: Any) -> None:
        if err.fatal() and self.fatal is None:
            self.fatal = kafka_error(err)
        _log.debug("producer event %s: %s", err.name(), err.str())

    def run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)` with librdkafka's errors raised as kafka-python's (a fatal
        one remembered: every later failure of this producer is that one)."""
        try:
            return call(*args, **kwargs)
        except ck.KafkaException as exc:
            mapped = _mapped(exc)
            err = exc.args[0] if exc.args else None
            if isinstance(mapped, KafkaError) and getattr(err, "fatal", lambda: False)():
                self.fatal = self.fatal or mapped
            raise (self.fatal or mapped) from exc

    def partitions_for(self, topic: str) -> Any:
        """The topic's partitions (KafkaTimeoutError when the broker does not know it)."""
        metadata = self.run(self.handle.list_topics, topic, timeout=self._block_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise errors.KafkaTimeoutError(f"no metadata for topic {topic}")
        return set(info.partitions)

    def send(  # noqa: PLR0917 - kafka-python's signature
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Any:
        """Queue one record; its future completes with the delivery report."""
        future = Delivery(self)
        partition = -1 if partition is None else partition
        timestamp = 0 if timestamp_ms is None else timestamp_ms
        produce = self.handle.produce
        try:  # the common case first, without building the arguments twice (per record)
            produce(
                topic,
                value=value,
                key=key,
                partition=partition,
                on_delivery=future,
                timestamp=timestamp,
                headers=headers,
            )
        except (BufferError, ck.KafkaException) as exc:
            kwargs = {
                "value": value,
                "key": key,
                "partition": partition,
                "on_delivery": future,
                "timestamp": timestamp,
                "headers": headers,
            }
            if not isinstance(exc, BufferError):
                self.run(produce, topic, **kwargs)  # raises it as kafka-python's (or succeeds)
                return future
            # the local queue is full: wait for deliveries, up to max_block_ms
            deadline = time.monotonic() + self._block_s
            while True:
                self.run(self.handle.poll, BLOCK_POLL_S)
                try:
                    self.run(produce, topic, **kwargs)
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        return future.failed(errors.KafkaTimeoutError("producer queue full"))
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every delivery report (KafkaTimeoutError if some are missing then)."""
        left = self.run(self.handle.flush, -1 if timeout is None else timeout)
        if left:
            raise errors.KafkaTimeoutError(f"{left} records not delivered within the flush")

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued within `timeout`, fail the rest (their futures report it)."""
        if self._closed:
            return
        self._closed = True
        try:
            left = self.handle.flush(5.0 if timeout is None else timeout)
            if left:
                self.handle.purge(in_queue=True, in_flight=True, blocking=False)
                self.handle.poll(0)  # the purged records' futures fail now
        except ck.KafkaException as exc:  # a fatal producer (fenced): nothing left to deliver
            _log.debug("producer closed after %s", _mapped(exc))

    # -- transactions ---------------------------------------------------------------------

    def init_transactions(self) -> None:
        """Register the transactional id (fences an older producer of the same id)."""
        self.run(self.handle.init_transactions, self._block_s)

    def begin_transaction(self) -> None:
        """Begin a transaction."""
        self.run(self.handle.begin_transaction)

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        """Add the consumer's offsets (TopicPartition -> OffsetAndMetadata) to the transaction."""
        ctps = [_offset(tp, om) for tp, om in offsets.items()]
        self.run(self.handle.send_offsets_to_transaction, ctps, group_metadata, self._txn_s)

    def commit_transaction(self) -> None:
        """Flush and commit the transaction."""
        self.run(self.handle.commit_transaction, self._txn_s)

    def abort_transaction(self) -> None:
        """Abort the transaction (its records are never visible to read_committed readers)."""
        self.run(self.handle.abort_transaction, self._txn_s)


class ConfluentClients:
    """The `Clients` Protocol on librdkafka: its consumer and producer; the admin client is
    kafka-python's (start-up only; see the module's docstring)."""

    def admin(self, **config: Any) -> Admin:
        """kafka-python's KafkaAdminClient (DescribeQuorum, the preflight's diagnosis)."""
        return KafkaClients().admin(**config)

    def consumer(self, **config: Any) -> ConfluentConsumer:
        """A librdkafka consumer."""
        return ConfluentConsumer(config)

    def producer(self, **config: Any) -> ConfluentProducer:
        """A librdkafka producer."""
        return ConfluentProducer(config)
