"""HER2_KAFKA_CLIENT and the confluent transport's translations (configuration, errors), without a
broker: tests/integration/test_client_contract.py holds the transport to the contract on one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from consumer.config import Settings
from consumer.errors import ConfigError
from consumer.ops import events
from consumer.runtime.kafka import FENCED, REBALANCED, REFUSED_FOR_GOOD, errors
from consumer.runtime.kafka.clients import (
    KafkaClients,
    clients_for,
    consumer_config,
    producer_config,
    restore_consumer_config,
)

ck = pytest.importorskip("confluent_kafka", reason="the confluent extra is not installed")
confluent = pytest.importorskip("consumer.runtime.kafka.confluent")


class TestSetting:
    def test_kafka_python_is_the_default(self) -> None:
        assert Settings.from_env({}).kafka_client == "kafka-python"
        assert isinstance(clients_for(Settings()), KafkaClients)

    def test_confluent_picks_the_librdkafka_transport(self) -> None:
        settings = Settings.from_env({"HER2_KAFKA_CLIENT": "confluent"})
        assert settings.kafka_client == "confluent"
        assert settings.summary()["kafka_client"] == "confluent"
        assert isinstance(clients_for(settings), confluent.ConfluentClients)

    def test_an_unknown_client_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="HER2_KAFKA_CLIENT must be one of"):
            Settings.from_env({"HER2_KAFKA_CLIENT": "librdkafka"})

    @pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER"])
    def test_the_confluent_client_refuses_the_unsupported_sasl_mechanisms(
        self, mechanism: str
    ) -> None:
        """librdkafka could do these with settings of its own (sasl.kerberos.*, an OIDC token
        endpoint), but the transport takes only what Settings validated (kafka_common), and the
        service has none of those settings: refused as on kafka-python."""
        env = {
            "HER2_KAFKA_CLIENT": "confluent",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        }
        with pytest.raises(ConfigError, match=f"^KAFKA_SASL_MECHANISM {mechanism} is not supp"):
            Settings.from_env(env)

    @pytest.mark.parametrize("client", ["kafka-python", "confluent"])
    def test_exactly_once_is_accepted_on_either_client(self, client: str) -> None:
        # confluent was refused until its recovery from a rebalance under an open transaction
        # (librdkafka rejoins in the background: ILLEGAL_GENERATION on the offsets, abort, re-run)
        # was proven on a real broker: tests/integration/test_client_contract.py
        env = {"HER2_KAFKA_CLIENT": client, "HER2_PROCESSING_GUARANTEE": "exactly_once"}
        settings = Settings.from_env(env)
        assert settings.exactly_once
        assert settings.kafka_client == client

    def test_confluent_without_the_package_names_the_variable_and_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = importlib.util.find_spec

        def find_spec(name: str, *args: Any) -> Any:
            return None if name == "confluent_kafka" else real(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        with pytest.raises(ConfigError, match=r"HER2_KAFKA_CLIENT=confluent.*\[confluent\]"):
            Settings.from_env({"HER2_KAFKA_CLIENT": "confluent"})


def _settings(**env: str) -> Settings:
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092", **env})


class TestConfiguration:
    def test_the_group_member_translates_every_argument(self) -> None:
        s = _settings(HER2_INSTANCE_ID="pod-0")
        conf = confluent.consumer_conf(consumer_config(s, "host"))
        assert conf["bootstrap.servers"] == "b1:9092,b2:9092"
        assert conf["group.id"] == s.group_id
        assert conf["group.instance.id"] == "pod-0"
        assert conf["enable.auto.commit"] is False
        assert conf["isolation.level"] == "read_committed"
        assert conf["auto.offset.reset"] == "earliest"
        assert conf["partition.assignment.strategy"] == "cooperative-sticky"
        assert conf["allow.auto.create.topics"] is False
        assert conf["session.timeout.ms"] == s.tuning.session_timeout_ms
        assert conf["max.poll.interval.ms"] == s.tuning.max_poll_interval_ms
        assert conf["reconnect.backoff.max.ms"] == 1000

    def test_the_changelog_reader_gets_a_group_it_never_uses(self) -> None:
        conf = confluent.consumer_conf(restore_consumer_config(_settings(), "host"))
        assert conf["group.id"].startswith("her2-no-group-")

    def test_the_producer_partitions_like_kafka_python_and_refuses_auto_creation(self) -> None:
        conf = confluent.producer_conf(producer_config(_settings(), "host"))
        assert conf["partitioner"] == "murmur2_random"
        assert conf["allow.auto.create.topics"] is False
        assert conf["enable.idempotence"] is True
        assert conf["acks"] == "all"
        assert "transactional.id" not in conf

    def test_exactly_once_caps_the_delivery_timeout_at_the_transaction_timeout(self) -> None:
        s = _settings(HER2_PROCESSING_GUARANTEE="exactly_once", HER2_INSTANCE_ID="pod-0")
        conf = confluent.producer_conf(producer_config(s, "host"))
        assert conf["transactional.id"] == s.transactional_id("host")
        assert conf["delivery.timeout.ms"] == s.tuning.transaction_timeout_ms

    def test_a_transaction_timeout_below_the_request_timeout_caps_the_socket_timeout(self) -> None:
        s = _settings(
            HER2_PROCESSING_GUARANTEE="exactly_once",
            HER2_INSTANCE_ID="pod-0",
            HER2_TRANSACTION_TIMEOUT_MS="8000",
            HER2_REQUEST_TIMEOUT_MS="10000",
        )
        conf = confluent.producer_conf(producer_config(s, "host"))
        assert conf["socket.timeout.ms"] == conf["delivery.timeout.ms"] == 8000
        conf.pop("logger")
        ck.Producer(conf)  # librdkafka accepts the combination

    def test_security_settings_are_translated(self, tmp_path: Path) -> None:
        ca = tmp_path / "ca.pem"
        ca.write_text("not checked here")
        s = _settings(
            KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            KAFKA_SASL_USERNAME="u",
            KAFKA_SASL_PASSWORD="p",  # noqa: S106 - a test value
            KAFKA_SSL_CAFILE=str(ca),
            KAFKA_SSL_CHECK_HOSTNAME="false",
        )
        conf = confluent.producer_conf(producer_config(s, "host"))
        assert conf["security.protocol"] == "SASL_SSL"
        assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
            "SCRAM-SHA-512",
            "u",
            "p",
        )
        assert conf["ssl.ca.location"] == str(ca)
        assert conf["ssl.endpoint.identification.algorithm"] == "none"

    def test_an_argument_without_translation_is_an_error_not_dropped(self) -> None:
        with pytest.raises(ValueError, match="fetch_max_bytes"):
            confluent.consumer_conf({"fetch_max_bytes": 1})


def _err(code: int, *, fatal: bool = False, retriable: bool = False) -> Any:
    return ck.KafkaError(code, "reason", fatal=fatal, retriable=retriable)


class TestErrors:
    def test_per_record_refusals_are_kafka_pythons_refused_for_good(self) -> None:
        for code in (
            ck.KafkaError.MSG_SIZE_TOO_LARGE,
            ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
            ck.KafkaError.INVALID_TIMESTAMP,
            ck.KafkaError.INVALID_RECORD,
        ):
            assert isinstance(confluent.kafka_error(_err(code)), REFUSED_FOR_GOOD), code

    def test_fencing_is_kafka_pythons_fenced(self) -> None:
        for code in (
            ck.KafkaError._FENCED,
            ck.KafkaError.PRODUCER_FENCED,
            ck.KafkaError.INVALID_PRODUCER_EPOCH,
        ):
            assert isinstance(confluent.kafka_error(_err(code, fatal=True)), FENCED), code

    def test_a_commit_refused_by_a_rebalance_is_commit_failed(self) -> None:
        err = _err(ck.KafkaError.ILLEGAL_GENERATION)
        assert isinstance(confluent.kafka_error(err, commit=True), errors.CommitFailedError)
        rebalance = confluent.kafka_error(_err(ck.KafkaError.REBALANCE_IN_PROGRESS), commit=True)
        assert isinstance(rebalance, errors.RebalanceInProgressError)

    @pytest.mark.parametrize(
        "code", [ck.KafkaError.ILLEGAL_GENERATION, ck.KafkaError.UNKNOWN_MEMBER_ID]
    )
    def test_transaction_offsets_a_rebalance_refused_are_rebalanced_not_fatal(
        self, code: int
    ) -> None:
        # send_offsets_to_transaction after the group's generation ended (or the member left):
        # librdkafka raises the broker's code as an abortable transaction error (seen on a real
        # broker, tests/integration/test_client_contract.py). ProducerHandle aborts it and
        # raises OffsetsRefusedError for REBALANCED; the producer stays usable
        producer = confluent.ConfluentProducer.__new__(confluent.ConfluentProducer)
        producer.fatal = None
        raw = ck.KafkaError(code, "reason", txn_requires_abort=True)

        def send_offsets() -> None:
            raise ck.KafkaException(raw)

        with pytest.raises(errors.KafkaError) as refused:
            producer.run(send_offsets)
        assert isinstance(refused.value, REBALANCED)
        assert producer.fatal is None

    def test_a_broker_away_is_retriable_as_in_kafka_python(self) -> None:
        # librdkafka calls _TRANSPORT not retriable; kafka-python's KafkaConnectionError is,
        # and the service rides a broker outage out on that (test_faults_broker)
        for code in (
            ck.KafkaError._TRANSPORT,
            ck.KafkaError._ALL_BROKERS_DOWN,
            ck.KafkaError._WAIT_COORD,
            ck.KafkaError._TIMED_OUT,
        ):
            assert confluent.kafka_error(_err(code)).retriable, code

    def test_local_errors_are_retriable_unless_permanent_or_fatal(self) -> None:
        away = confluent.kafka_error(_err(ck.KafkaError._TRANSPORT, retriable=True))
        assert isinstance(away, errors.KafkaConnectionError)
        assert away.retriable
        timed_out = confluent.kafka_error(_err(ck.KafkaError._MSG_TIMED_OUT, retriable=True))
        assert isinstance(timed_out, errors.KafkaTimeoutError)
        purged = confluent.kafka_error(_err(ck.KafkaError._PURGE_QUEUE))
        assert type(purged) is errors.KafkaError
        assert purged.retriable  # re-sent: the producer is replaced first
        invalid = confluent.kafka_error(_err(ck.KafkaError._INVALID_ARG))
        assert not invalid.retriable
        fatal = confluent.kafka_error(_err(ck.KafkaError._TRANSPORT, fatal=True, retriable=True))
        assert not fatal.retriable

    def test_a_fenced_static_member_is_not_a_refused_commit(self) -> None:
        # librdkafka makes its consumer fatal on FENCED_INSTANCE_ID: the service must stop,
        # not shrug it off as a commit refused by a rebalance and poll a dead consumer
        fenced = confluent.kafka_error(_err(ck.KafkaError.FENCED_INSTANCE_ID), commit=True)
        assert not isinstance(fenced, errors.CommitFailedError)
        assert not fenced.retriable


class _Librdkafka:
    """What the adapter calls of a confluent_kafka.Consumer, scripted."""

    def __init__(self, member_id: str | None = "member-1", events: list[Any] | None = None):
        self.member_id = member_id
        self.events = list(events or [])
        self.commits: list[Any] = []
        self.committed_asked = 0
        self.error_cb: Any = None  # the adapter's error callback (_consumer() sets it)
        self.errors: list[Any] = []  # generic errors served to it by the next poll()
        self.asked: list[int] = []  # the partitions whose watermarks were asked of the broker
        self.high = 42  # the high watermark the broker answers
        self.cached_high = 42  # the one of the last fetch response

    def memberid(self) -> str | None:
        return self.member_id

    def commit(self, offsets: Any, asynchronous: bool) -> Any:
        self.commits.append(offsets)
        return offsets

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def assign(self, partitions: list[Any]) -> None:
        pass

    def incremental_assign(self, partitions: list[Any]) -> None:
        pass

    def position(self, partitions: list[Any]) -> list[Any]:
        return [ck.TopicPartition(p.topic, p.partition, ck.OFFSET_INVALID) for p in partitions]

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.committed_asked += 1
        return [ck.TopicPartition(p.topic, p.partition, 7) for p in partitions]

    def close(self) -> None:
        raise ck.KafkaException(ck.KafkaError(ck.KafkaError._FATAL))

    watermark_errors: list[Any]

    def get_watermark_offsets(
        self, tp: Any, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if cached:  # librdkafka's memory: never a request, never an error
            return 0, self.cached_high
        self.asked.append(tp.partition)
        if getattr(self, "watermark_errors", None):
            raise ck.KafkaException(self.watermark_errors.pop(0))
        return 0, self.high

    def poll(self, timeout: float) -> Any:
        while self.errors:  # librdkafka serves its generic errors inside poll()
            self.error_cb(self.errors.pop(0))
        return self.events.pop(0) if self.events else None


class _Event:
    """A consumer event as confluent_kafka returns it: a message whose error() is set."""

    def __init__(self, err: Any) -> None:
        self.err = err

    def error(self) -> Any:
        return self.err

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def _consumer(fake: _Librdkafka, **config: Any) -> Any:
    consumer = confluent.ConfluentConsumer(
        {"bootstrap_servers": "b1:9092", "group_id": "g", **config}
    )
    consumer._c.close()
    consumer._c = fake
    fake.error_cb = consumer._conf["error_cb"]  # as librdkafka was configured
    # the real consumer's close() serves its pending error callbacks, among them the failed
    # resolution of b1 (measured: 6 closes of 10): none of that broker is this fake's
    consumer._broker_away = False
    return consumer


class TestConsumer:
    def test_a_member_without_member_id_refuses_its_commit_without_sending_it(self) -> None:
        # the group session timed out on librdkafka's side (broker away): a commit sent now
        # would carry an empty member id, FENCED_INSTANCE_ID for a static member, fatal
        fake = _Librdkafka(member_id="")
        consumer = _consumer(fake, group_instance_id="static-1")
        consumer.subscribe(["t"])
        offsets = {confluent.TopicPartition("t", 0): confluent.OffsetAndMetadata(5, "", -1)}
        with pytest.raises(errors.CommitFailedError):
            consumer.commit(offsets)
        assert fake.commits == []
        fake.member_id = "member-2"  # rejoined
        consumer.commit(offsets)
        assert len(fake.commits) == 1

    def test_a_member_without_member_id_has_no_group_metadata(self) -> None:
        # it left the group (a batch past max.poll.interval.ms) or its session ended: as
        # kafka-python's generation check, nothing of a batch may be committed or written as
        # history by it (at-least-once checks before the changelog, exactly-once before offsets)
        fake = _Librdkafka(member_id="")
        fake.consumer_group_metadata = lambda: "metadata"  # type: ignore[attr-defined]
        consumer = _consumer(fake)
        consumer.subscribe(["t"])
        with pytest.raises(errors.CommitFailedError):
            consumer.group_metadata()
        fake.member_id = "member-2"  # rejoined
        assert consumer.group_metadata() == "metadata"

    def test_an_assigned_consumer_with_a_group_id_commits_without_membership(self) -> None:
        fake = _Librdkafka(member_id="")
        consumer = _consumer(fake)
        consumer.assign([confluent.TopicPartition("t", 0)])
        consumer.commit({confluent.TopicPartition("t", 0): confluent.OffsetAndMetadata(5, "", -1)})
        assert len(fake.commits) == 1

    def test_end_offsets_ask_again_while_the_partition_is_briefly_unknown(self) -> None:
        # right after a broker comes back: UNKNOWN_TOPIC_OR_PART for a moment (kafka-python's
        # end_offsets retries retriable errors until its timeout; so does the adapter)
        fake = _Librdkafka()
        unknown = ck.KafkaError(ck.KafkaError.UNKNOWN_TOPIC_OR_PART)
        fake.watermark_errors = [unknown, unknown]
        consumer = _consumer(fake)
        tp = confluent.TopicPartition("t", 0)
        assert consumer.end_offsets([tp], timeout_ms=5000) == {tp: 42}
        assert fake.watermark_errors == []

    def test_end_offsets_raise_a_lasting_or_permanent_error(self) -> None:
        fake = _Librdkafka()
        tp = confluent.TopicPartition("t", 0)
        fake.watermark_errors = [ck.KafkaError(ck.KafkaError.UNKNOWN_TOPIC_OR_PART)] * 50
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            _consumer(fake).end_offsets([tp], timeout_ms=300)
        fake.watermark_errors = [ck.KafkaError(ck.KafkaError.TOPIC_AUTHORIZATION_FAILED)]
        with pytest.raises(errors.TopicAuthorizationFailedError):
            _consumer(fake).end_offsets([tp], timeout_ms=5000)

    def test_a_fatal_consumer_error_is_raised_from_poll(self) -> None:
        # librdkafka hands its fatal error to the application as an event of code _FATAL
        # whose fatal() flag is not set
        fake = _Librdkafka(events=[_Event(ck.KafkaError(ck.KafkaError._FATAL))])
        consumer = _consumer(fake)
        with pytest.raises(errors.KafkaError) as raised:
            consumer.poll(timeout_ms=0)
        assert not raised.value.retriable

    def test_a_static_member_fenced_for_its_own_lost_session_rejoins_as_a_new_consumer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # librdkafka heartbeats with the empty member id its session timeout left and makes
        # the FENCED_INSTANCE_ID answer fatal (librdkafka #3437): a new member replaces it
        fenced = _Librdkafka(member_id="", events=[_Event(ck.KafkaError(ck.KafkaError._FATAL))])
        consumer = _consumer(fenced, group_instance_id="static-1")
        told: list[tuple[str, set[Any]]] = []

        class Listener:
            def on_partitions_assigned(self, tps: set[Any]) -> None:
                told.append(("assigned", tps))

            def on_partitions_lost(self, tps: set[Any]) -> None:
                told.append(("lost", tps))

        consumer.subscribe(["t"], listener=Listener())
        consumer._on_assign(fenced, [ck.TopicPartition("t", 0)])
        fresh = _Librdkafka(member_id=None)
        made: list[dict[str, Any]] = []

        def new_consumer(conf: dict[str, Any]) -> _Librdkafka:
            made.append(conf)
            return fresh

        monkeypatch.setattr(ck, "Consumer", new_consumer)
        with structlog.testing.capture_logs() as logged:
            assert consumer.poll(timeout_ms=0) == {}
        assert consumer._c is fresh
        assert made[0]["group.instance.id"] == "static-1"
        tp0 = confluent.TopicPartition("t", 0)
        assert told == [("assigned", {tp0}), ("lost", {tp0})]
        # operators are told, by a declared event (docs/operations.md), with the error's name
        [warning] = [line for line in logged if line["log_level"] == "warning"]
        assert warning["event"] == events.CONSUMER_REPLACED_AFTER_SESSION_LOST
        assert warning["error_type"] == "_FATAL"

    @pytest.mark.parametrize(
        ("member_id", "assigned", "replaced"),
        [
            ("", False, True),  # no partitions, no member id for a session timeout: adrift
            ("m-1", False, False),  # a member without partitions (more members than them)
            ("", True, False),  # partitions still held: the lost callback comes first
        ],
        ids=["adrift", "member-without-partitions", "holding-partitions"],
    )
    def test_a_member_adrift_for_a_session_timeout_rejoins_as_a_new_consumer(
        self,
        monkeypatch: pytest.MonkeyPatch,
        member_id: str,
        assigned: bool,
        replaced: bool,
    ) -> None:
        """After a broker freeze librdkafka 2.12 ended its session (SESSTMOUT), said it was
        rejoining and never did (a soak audit, and the frozen-broker readiness test): a member
        with neither partitions nor a member id for a session timeout is replaced."""
        stuck = _Librdkafka(member_id=member_id)
        consumer = _consumer(stuck, session_timeout_ms=6000)
        consumer.subscribe(["t"])
        if assigned:
            consumer._on_assign(stuck, [ck.TopicPartition("t", 0)])
        clock = [1000.0]
        monkeypatch.setattr(confluent.time, "monotonic", lambda: clock[0])
        fresh = _Librdkafka(member_id=None)
        monkeypatch.setattr(ck, "Consumer", lambda conf: fresh)
        with structlog.testing.capture_logs() as logged:
            consumer.poll(timeout_ms=0)  # adrift from now
            clock[0] += 5.9
            consumer.poll(timeout_ms=0)
            assert consumer._c is stuck, "not before a session timeout"
            clock[0] += 0.2
            consumer.poll(timeout_ms=0)
        assert (consumer._c is fresh) is replaced
        said = [
            line for line in logged if line["event"] == events.CONSUMER_REPLACED_AFTER_SESSION_LOST
        ]
        assert [line["error_type"] for line in said] == (["NoMemberId"] if replaced else [])

    def test_a_static_member_fenced_while_it_held_its_member_id_stops(self) -> None:
        # another process with the same HER2_INSTANCE_ID: raised, the service stops
        fenced = _Librdkafka(member_id="m-1", events=[_Event(ck.KafkaError(ck.KafkaError._FATAL))])
        consumer = _consumer(fenced, group_instance_id="static-1")
        consumer.subscribe(["t"])
        with pytest.raises(errors.KafkaError):
            consumer.poll(timeout_ms=0)

    def test_a_members_start_position_is_asked_once_until_a_record_moves_it(self) -> None:
        # the lag gauges ask every refresh for a partition whose records have not come yet;
        # asking again (and the ListOffsets behind the long-polling fetch) held the loop ~2 s
        fake = _Librdkafka()
        consumer = _consumer(fake)
        consumer.subscribe(["t"])
        tp = confluent.TopicPartition("t", 0)
        assert consumer.position(tp) == 7
        assert consumer.position(tp) == 7
        assert fake.committed_asked == 1


def _fetched(fake: _Librdkafka, partitions: int = 2) -> tuple[Any, list[Any]]:
    """A consumer that fetched records of `partitions` partitions (the lag gauges' case)."""
    consumer = _consumer(fake)
    fake.events = [_Message(p, 9) for p in range(partitions)]
    records = consumer.poll(timeout_ms=0)
    assert sum(len(batch) for batch in records.values()) == partitions
    return consumer, sorted(records)


class TestEndOffsetsFollowTheBroker:
    """The lag refresh's end offsets tell readiness whether the broker answers. librdkafka's
    cached watermarks (the last fetch response's) answer while the broker is away: once its
    error callback told of a broker connection lost, the broker is asked until it answers."""

    def test_a_healthy_broker_is_not_asked_the_fetched_partitions_end(self) -> None:
        # a ListOffsets request waits behind the long-polling fetch: never per lag refresh
        fake = _Librdkafka()
        fake.high, fake.cached_high = 50, 42
        consumer, tps = _fetched(fake)
        for _ in range(3):
            consumer.poll(timeout_ms=0)
            assert consumer.end_offsets(tps, timeout_ms=5000) == dict.fromkeys(tps, 42)
        assert fake.asked == []

    @pytest.mark.parametrize(
        "code",
        [
            ck.KafkaError._TRANSPORT,
            ck.KafkaError._ALL_BROKERS_DOWN,
            ck.KafkaError._RESOLVE,
            ck.KafkaError._TIMED_OUT,
        ],
    )
    def test_after_a_broker_connection_lost_the_broker_is_asked(self, code: int) -> None:
        fake = _Librdkafka()
        fake.high, fake.cached_high = 50, 42
        consumer, tps = _fetched(fake)
        fake.errors = [_err(code)]
        consumer.poll(timeout_ms=0)  # librdkafka's error callback runs inside poll()
        assert consumer.end_offsets(tps, timeout_ms=5000) == dict.fromkeys(tps, 50)
        assert fake.asked == [0, 1]

    def test_an_unanswered_ask_raises_and_the_broker_is_asked_again_until_it_answers(
        self,
    ) -> None:
        # the broker away: no answer within the timeout (a BrokerError: the lag refresh
        # reports the broker unreachable), and the cache is not trusted at the next refresh
        fake = _Librdkafka()
        consumer, tps = _fetched(fake)
        fake.errors = [_err(ck.KafkaError._TRANSPORT), _err(ck.KafkaError._ALL_BROKERS_DOWN)]
        consumer.poll(timeout_ms=0)
        fake.watermark_errors = [ck.KafkaError(ck.KafkaError._TIMED_OUT)]
        with pytest.raises(errors.KafkaTimeoutError):
            consumer.end_offsets(tps, timeout_ms=50)
        fake.watermark_errors = [ck.KafkaError(ck.KafkaError._TRANSPORT)] * 1000
        with pytest.raises(errors.KafkaConnectionError):
            consumer.end_offsets(tps, timeout_ms=50)
        fake.watermark_errors = []
        fake.asked.clear()
        consumer.poll(timeout_ms=0)
        assert consumer.end_offsets(tps, timeout_ms=5000) == dict.fromkeys(tps, 42)
        assert fake.asked == [0, 1]

    def test_once_the_broker_answered_the_cache_is_trusted_again(self) -> None:
        fake = _Librdkafka()
        consumer, tps = _fetched(fake)
        fake.errors = [_err(ck.KafkaError._TRANSPORT)]
        consumer.poll(timeout_ms=0)
        consumer.end_offsets(tps, timeout_ms=5000)
        fake.asked.clear()
        consumer.poll(timeout_ms=0)
        consumer.end_offsets(tps, timeout_ms=5000)
        assert fake.asked == []

    def test_other_generic_errors_leave_the_cache_trusted(self) -> None:
        fake = _Librdkafka()
        consumer, tps = _fetched(fake)
        fake.errors = [_err(ck.KafkaError._MAX_POLL_EXCEEDED), _err(ck.KafkaError._PARTITION_EOF)]
        consumer.poll(timeout_ms=0)
        consumer.end_offsets(tps, timeout_ms=5000)
        assert fake.asked == []

    def test_an_empty_ask_leaves_the_mark_until_the_broker_answers(self) -> None:
        # no partition asked is no answer: the next refresh still asks the broker
        fake = _Librdkafka()
        consumer, tps = _fetched(fake)
        fake.errors = [_err(ck.KafkaError._TRANSPORT)]
        consumer.poll(timeout_ms=0)
        assert consumer.end_offsets([], timeout_ms=5000) == {}
        consumer.end_offsets(tps, timeout_ms=5000)
        assert fake.asked == [0, 1]

    def test_the_error_callback_is_in_the_configuration_replacements_are_made_from(self) -> None:
        consumer = _consumer(_Librdkafka())
        assert consumer._conf["error_cb"] == consumer._on_error  # _revive() creates with _conf


class _Message:
    """A fetched record as confluent_kafka returns it."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return ck.TIMESTAMP_CREATE_TIME, 1

    def leader_epoch(self) -> None:
        return None

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None


class _Rebalancing(_Librdkafka):
    """poll() returns its items in order; a callable item is a rebalance callback librdkafka
    runs inside that poll, between two messages."""

    def poll(self, timeout: float) -> Any:
        while self.events and callable(self.events[0]):
            self.events.pop(0)()
        return self.events.pop(0) if self.events else None

    def incremental_unassign(self, partitions: list[Any]) -> None:
        pass


class TestRebalanceInsidePoll:
    """librdkafka runs rebalance callbacks inside poll(), between the messages one poll drains,
    and still returns what it fetched before: records of a partition revoked (or revoked and
    assigned again, the new assignment starting at the committed offset) must not reach the
    loop, as kafka-python never returns them."""

    def _consumer(self, events: list[Any]) -> tuple[Any, list[tuple[str, set[Any]]]]:
        fake = _Rebalancing(events=events)
        consumer = _consumer(
            fake, partition_assignment_strategy=[confluent.CooperativeStickyAssignor()]
        )
        told: list[tuple[str, set[Any]]] = []

        class Listener:
            def on_partitions_assigned(self, tps: set[Any]) -> None:
                told.append(("assigned", tps))

            def on_partitions_revoked(self, tps: set[Any]) -> None:
                told.append(("revoked", tps))

        consumer.subscribe(["t"], listener=Listener())
        consumer._on_assign(fake, [ck.TopicPartition("t", 0), ck.TopicPartition("t", 1)])
        return consumer, told

    def test_records_of_a_partition_revoked_mid_poll_are_dropped(self) -> None:
        consumer, told = self._consumer([])

        def revoke() -> None:
            consumer._on_revoke(consumer._c, [ck.TopicPartition("t", 1)])

        consumer._c.events = [_Message(0, 5), _Message(1, 8), revoke, _Message(0, 6)]
        tp0, tp1 = confluent.TopicPartition("t", 0), confluent.TopicPartition("t", 1)
        records = consumer.poll(timeout_ms=0)
        assert {tp: [r.offset for r in batch] for tp, batch in records.items()} == {tp0: [5, 6]}
        assert told[-1] == ("revoked", {tp1})

    def test_a_partition_assigned_again_mid_poll_keeps_only_the_new_assignments_records(
        self,
    ) -> None:
        consumer, _ = self._consumer([])
        tp1 = ck.TopicPartition("t", 1)

        def revoke() -> None:
            consumer._on_revoke(consumer._c, [tp1])

        def assign() -> None:
            consumer._on_assign(consumer._c, [tp1])

        stale_eof = _Event(ck.KafkaError(ck.KafkaError._PARTITION_EOF))
        stale_eof.partition = lambda: 1  # type: ignore[method-assign]
        stale_eof.offset = lambda: 9  # type: ignore[method-assign]
        consumer._c.events = [_Message(1, 8), stale_eof, revoke, assign, _Message(1, 3)]
        records = consumer.poll(timeout_ms=0)
        assert {tp.partition: [r.offset for r in b] for tp, b in records.items()} == {1: [3]}
        # the old assignment's end of partition is not the new one's position
        assert confluent.TopicPartition("t", 1) not in consumer._eof
        # and a later poll without a rebalance keeps everything
        consumer._c.events = [_Message(1, 4), _Message(0, 1)]
        records = consumer.poll(timeout_ms=0)
        assert sorted((tp.partition, [r.offset for r in b]) for tp, b in records.items()) == [
            (0, [1]),
            (1, [4]),
        ]


class _Queue:
    """librdkafka's producer handle: produce() refuses with `refusals` first (BufferError for a
    full local queue, a KafkaException), then queues; poll() counts the waits."""

    def __init__(self, *refusals: BaseException) -> None:
        self.refusals = list(refusals)
        self.queued: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.queued.append((topic, kwargs))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def _producer(queue: _Queue, block_s: float = 5.0) -> Any:
    producer = confluent.ConfluentProducer.__new__(confluent.ConfluentProducer)
    producer.fatal = None
    producer.handle = queue
    producer._block_s = block_s
    return producer


class TestSend:
    def test_a_record_is_queued_with_kafka_pythons_arguments_translated(self) -> None:
        queue = _Queue()
        future = _producer(queue).send("t", key=b"k", value=b"v", partition=None)
        [(topic, kwargs)] = queue.queued
        assert topic == "t"
        assert (kwargs["key"], kwargs["value"], kwargs["partition"]) == (b"k", b"v", -1)
        assert (kwargs["timestamp"], kwargs["headers"], kwargs["on_delivery"]) == (0, None, future)
        assert not future.done

    def test_a_full_local_queue_is_waited_on_then_the_record_queued(self) -> None:
        queue = _Queue(BufferError(), BufferError())
        future = _producer(queue).send("t", value=b"v", partition=2, timestamp_ms=5)
        [(_, kwargs)] = queue.queued
        assert (kwargs["partition"], kwargs["timestamp"], kwargs["on_delivery"]) == (2, 5, future)
        assert queue.polls == 2  # deliveries served before each new attempt
        assert not future.done

    def test_a_queue_full_past_max_block_fails_the_future_not_the_call(self) -> None:
        queue = _Queue(*[BufferError()] * 1000)
        future = _producer(queue, block_s=0.0).send("t", value=b"v")
        assert queue.queued == []
        assert future.done
        assert isinstance(future.error, errors.KafkaTimeoutError)

    def test_a_librdkafka_refusal_is_raised_as_kafka_pythons(self) -> None:
        too_large = ck.KafkaException(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE))
        queue = _Queue(too_large, too_large)
        with pytest.raises(errors.KafkaError) as refused:
            _producer(queue).send("t", value=b"v")
        assert isinstance(refused.value, REFUSED_FOR_GOOD)
        assert queue.queued == []
