"""The Kafka limits of consumer/config.py held against the real clients, without a broker.

The edges of these limits that Settings.from_env accepts are accepted by kafka-python and by
librdkafka, each given the service's own client configuration (consumer/runtime/kafka/clients.py,
translated for librdkafka by confluent.py); one step past each edge from_env refuses, and so does
one of the clients: each check exists because a client has that limit.

Both clients check their configuration when built, before any connection. kafka-python is given
an `api_version`, so that it does not wait to bootstrap, and cannot open a socket (its IO thread
still tries to reach the broker in the background, and 3.0.12 leaves the socket of a refused
connection open); librdkafka's attempts fail at once in its own threads (nothing listens there).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from kafka.net.inet import KafkaNetSocket

from consumer.config import AT_LEAST_ONCE, Settings, Tuning
from consumer.errors import ConfigError
from consumer.runtime.kafka import KafkaError
from consumer.runtime.kafka.clients import (
    KafkaClients,
    consumer_config,
    producer_config,
    restore_consumer_config,
)

NOWHERE = "127.0.0.1:9"  # the discard port: nothing listens
API_VERSION = (3, 9)  # kafka-python skips its bootstrap when told the broker's version
CLOSE_S = 1.0  # a producer's close: returns as soon as its IO thread has ended
BUILDERS: tuple[tuple[str, Callable[[Settings, str], dict[str, Any]]], ...] = (
    ("consumer", consumer_config),
    ("restore", restore_consumer_config),
    ("producer", producer_config),
)


def kafka_python_refusals(settings: Settings) -> list[str]:
    """What kafka-python refuses of the service's three clients (empty: every one built)."""
    refusals = []
    with mock.patch.object(KafkaNetSocket, "socket", side_effect=_no_socket):
        for role, build in BUILDERS:
            config = {**build(settings, "host"), "api_version": API_VERSION}
            try:
                if role == "producer":
                    # a timeout, not 0: close(timeout=0) returns before the IO thread ends
                    KafkaClients().producer(**config).close(timeout=CLOSE_S)
                else:
                    KafkaClients().consumer(**config).close(autocommit=False, timeout_ms=100)
            except KafkaError as exc:
                refusals.append(f"{role}: {exc}")
    return refusals


def _no_socket(*args: Any, **kwargs: Any) -> Any:
    """kafka-python's socket factory in these tests: every connection is refused."""
    raise ConnectionRefusedError(errno.ECONNREFUSED, "no broker in this test")


def librdkafka_refusals(settings: Settings) -> list[str]:
    """What librdkafka refuses of the service's three clients (empty: every one built)."""
    pytest.importorskip("confluent_kafka", reason="the confluent extra is not installed")
    from consumer.runtime.kafka.confluent import ConfluentClients  # noqa: PLC0415

    refusals = []
    for role, build in BUILDERS:
        config = build(settings, "host")
        try:
            if role == "producer":
                ConfluentClients().producer(**config).close(timeout=0)
            else:
                ConfluentClients().consumer(**config).close()
        except KafkaError as exc:
            refusals.append(f"{role}: {exc}")
    return refusals


REFUSALS: dict[str, Callable[[Settings], list[str]]] = {
    "kafka-python": kafka_python_refusals,
    "librdkafka": librdkafka_refusals,
}


def settings(env: dict[str, str]) -> Settings:
    """Settings.from_env with a bootstrap address no test reaches."""
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": NOWHERE, **env})


@pytest.mark.parametrize("client", sorted(REFUSALS))
class TestTheEdgesFromEnvAcceptsAreBuilt:
    @pytest.mark.parametrize(
        "env",
        [
            pytest.param({}, id="defaults"),
            pytest.param({"HER2_REQUEST_TIMEOUT_MS": "1000"}, id="request-timeout-lowest"),
            pytest.param({"HER2_REQUEST_TIMEOUT_MS": "300000"}, id="request-timeout-highest"),
            pytest.param(
                {
                    "HER2_SESSION_TIMEOUT_MS": "60000",
                    "HER2_MAX_POLL_INTERVAL_MS": "60000",
                    "HER2_RESTORE_TIMEOUT_SECONDS": "1",
                },
                id="session-equals-poll-interval",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_PRODUCER_LINGER_MS": "999",
                },
                id="eos-linger-below-transaction-timeout",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_REQUEST_TIMEOUT_MS": "300000",
                },
                id="eos-request-timeout-above-transaction-timeout",
            ),
            pytest.param(
                {"HER2_TRANSACTION_TIMEOUT_MS": "1000", "HER2_PRODUCER_LINGER_MS": "1000"},
                id="at-least-once-linger-above-transaction-timeout",
            ),
        ],
    )
    def test_accepted(self, client: str, env: dict[str, str]) -> None:
        assert REFUSALS[client](settings(env)) == []


class TestOneStepPastAnEdgeAClientRefuses:
    @pytest.mark.parametrize(
        ("env", "tuning", "client", "refusal"),
        [
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "300001"},
                {"request_timeout_ms": 300_001},
                "librdkafka",
                "socket.timeout.ms",
                id="request-timeout-librdkafka",
            ),
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "540000"},
                {"request_timeout_ms": 540_000},
                "kafka-python",
                "connections_max_idle_ms",
                id="request-timeout-kafka-python",
            ),
            pytest.param(
                {"HER2_SESSION_TIMEOUT_MS": "300001"},
                {"session_timeout_ms": 300_001},
                "librdkafka",
                "max.poll.interval.ms",
                id="session-above-poll-interval",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_PRODUCER_LINGER_MS": "1000",
                },
                {"transaction_timeout_ms": 1000, "linger_ms": 1000},
                "librdkafka",
                "linger.ms",
                id="eos-linger-not-below-transaction-timeout",
            ),
        ],
    )
    def test_refused_by_from_env_and_by_the_client(
        self, env: dict[str, str], tuning: dict[str, Any], client: str, refusal: str
    ) -> None:
        with pytest.raises(ConfigError):
            settings(env)
        unchecked = Settings(
            bootstrap_servers=NOWHERE,
            processing_guarantee=env.get("HER2_PROCESSING_GUARANTEE", AT_LEAST_ONCE),
            tuning=dataclasses.replace(Tuning(), **tuning),
        )
        refusals = REFUSALS[client](unchecked)
        assert refusals, f"{client} accepts it: from_env's check may be relaxed"
        assert all(refusal in text for text in refusals), refusals
