"""The Kafka limits of consumer/config.py held against the real clients, without a broker.

Every edge Settings.from_env accepts is accepted by kafka-python and by librdkafka, each given
the service's own client configuration (consumer/runtime/kafka/clients.py, translated for
librdkafka by confluent.py); one step past each edge from_env refuses, and so does one of the
clients: each check exists because a client has that limit. kafka-python is given an
`api_version` so that it does not bootstrap; librdkafka connects only when used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from consumer.config import Settings, Tuning
from consumer.errors import ConfigError
from consumer.runtime.kafka import KafkaError
from consumer.runtime.kafka.clients import (
    KafkaClients,
    consumer_config,
    producer_config,
    restore_consumer_config,
)

NOWHERE = "nowhere.invalid:9"  # never resolves (RFC 6761): no socket is opened
API_VERSION = (3, 9)  # kafka-python skips its bootstrap when told the broker's version
BUILDERS: tuple[tuple[str, Callable[[Settings, str], dict[str, Any]]], ...] = (
    ("consumer", consumer_config),
    ("restore", restore_consumer_config),
    ("producer", producer_config),
)


def kafka_python_refusals(settings: Settings) -> list[str]:
    """What kafka-python refuses of the service's three clients (empty: every one built)."""
    refusals = []
    for role, build in BUILDERS:
        config = {**build(settings, "host"), "api_version": API_VERSION}
        try:
            if role == "producer":
                KafkaClients().producer(**config).close(timeout=0)
            else:
                KafkaClients().consumer(**config).close(autocommit=False, timeout_ms=100)
        except KafkaError as exc:
            refusals.append(f"{role}: {exc}")
    return refusals


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
        ],
    )
    def test_refused_by_from_env_and_by_the_client(
        self, env: dict[str, str], tuning: dict[str, Any], client: str, refusal: str
    ) -> None:
        with pytest.raises(ConfigError):
            settings(env)
        unchecked = Settings(
            bootstrap_servers=NOWHERE, tuning=dataclasses.replace(Tuning(), **tuning)
        )
        refusals = REFUSALS[client](unchecked)
        assert refusals, f"{client} accepts it: from_env's check may be relaxed"
        assert all(refusal in text for text in refusals), refusals
