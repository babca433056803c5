"""The start-up preflight's diagnosis (consumer/runtime/kafka/preflight.py). kafka-python raises
only a timeout when it cannot bootstrap; the exceptions it logs on the way say why. Synthetic
ones, logged as kafka-python 3.0.12 logs them (`kafka.net.manager`: "Connection failed: %s"),
must give the right `reason` (the log line's field) and a message that names the variables to
check, and never a password, even one an exception's text carried."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import structlog
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

from consumer.config import KafkaSecurity, Settings
from consumer.errors import KafkaConnectError
from consumer.ops import events
from consumer.runtime.kafka.preflight import (
    CHECK,
    DOUBTFUL_REFUSALS,
    _ConnectionFailures,
    connect_admin,
)
from consumer.runtime.records import Backoff

PASSWORD = "s3cret-PASSWORD-marker"  # noqa: S105 - a marker to search output for
SETTINGS = Settings(
    bootstrap_servers="kafka-0.example:9093",
    security=KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="her2-consumer",
        sasl_password=PASSWORD,
        ssl_cafile="/etc/her2/kafka/ca.crt",
    ),
)
SASL_VARIABLES = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
TLS_VARIABLES = ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CHECK_HOSTNAME")
REACH_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "HER2_REQUEST_TIMEOUT_MS", "KAFKA_SECURITY_PROTOCOL")


def _sasl_failure() -> BaseException:
    # the text of a broker's refusal, with the password in it: never to be echoed
    return SaslAuthenticationFailedError(
        f"Authentication failed during authentication due to invalid credentials with SASL "
        f"mechanism SCRAM-SHA-512 (password {PASSWORD})"
    )


def _untrusted_certificate() -> BaseException:
    return ssl.SSLCertVerificationError(
        1,
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
        "issuer certificate (_ssl.c:1006)",
    )


def _wrapped_untrusted_certificate() -> BaseException:
    """A connection error whose cause is the failed verification (the chain is followed)."""
    try:
        try:
            raise _untrusted_certificate()
        except ssl.SSLError as exc:
            raise KafkaConnectionError("connection failed during the TLS handshake") from exc
    except KafkaConnectionError as outer:
        return outer


def _wrong_tls_version() -> BaseException:
    return ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")


def _connection_refused() -> BaseException:
    return ConnectionRefusedError(111, "Connection refused")


def _kafka_connection_refused() -> BaseException:
    return KafkaConnectionError("111 ECONNREFUSED")


def _closed_during_the_handshake() -> BaseException:
    """A listener that accepts and closes during the TLS handshake: a broker starting or
    stopping, a load balancer without a healthy backend."""
    return ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:1006)")


def _closed_after_connect() -> BaseException:
    """A broker that closes the connection after a failed SASL exchange, before kafka-python
    read its error response (Kafka 4.3, SASL_SSL, a wrong password)."""
    return KafkaConnectionError("socket disconnected")


# (failure, reason, variables the message names, variables it must not name)
CASES = [
    pytest.param(_sasl_failure, "sasl-authentication", SASL_VARIABLES, TLS_VARIABLES, id="sasl"),
    pytest.param(
        _closed_after_connect,
        "sasl-authentication",
        SASL_VARIABLES,
        TLS_VARIABLES,
        id="sasl-closed-after-connect",
    ),
    pytest.param(
        _untrusted_certificate, "tls", TLS_VARIABLES, SASL_VARIABLES, id="certificate-verify"
    ),
    pytest.param(
        _wrapped_untrusted_certificate,
        "tls",
        TLS_VARIABLES,
        SASL_VARIABLES,
        id="certificate-verify-as-cause",
    ),
    pytest.param(_wrong_tls_version, "tls", TLS_VARIABLES, SASL_VARIABLES, id="tls-other"),
    pytest.param(
        _closed_during_the_handshake, "tls", TLS_VARIABLES, SASL_VARIABLES, id="tls-closed"
    ),
    pytest.param(
        _connection_refused,
        "unreachable",
        REACH_VARIABLES,
        SASL_VARIABLES + TLS_VARIABLES,
        id="connection-refused",
    ),
    pytest.param(
        _kafka_connection_refused,
        "unreachable",
        REACH_VARIABLES,
        SASL_VARIABLES + TLS_VARIABLES,
        id="kafka-connection-refused",
    ),
]


def _logged(failures: _ConnectionFailures, exc: BaseException) -> None:
    """Hand `exc` to the handler as kafka-python's bootstrap logs a failed connection."""
    record = logging.LogRecord(
        "kafka.net.manager", logging.ERROR, __file__, 0, "Connection failed: %s", (exc,), None
    )
    failures.emit(record)


@pytest.mark.parametrize(("failure", "reason", "named", "not_named"), CASES)
def test_diagnose_tells_the_reason_and_the_variables_to_check(
    failure: Any, reason: str, named: tuple[str, ...], not_named: tuple[str, ...]
) -> None:
    failures = _ConnectionFailures()
    _logged(failures, failure())
    got, message, _definite = failures.diagnose(SETTINGS)
    assert got == reason
    for variable in named:
        assert variable in message, (variable, message)
    for variable in not_named:
        assert variable not in message, (variable, message)
    assert PASSWORD.lower() not in message.lower()
    assert "KAFKA_BOOTSTRAP_SERVERS=kafka-0.example:9093" in message


def test_an_untrusted_certificate_is_said_to_be_untrusted() -> None:
    failures = _ConnectionFailures()
    _logged(failures, _untrusted_certificate())
    assert "the broker's certificate is not trusted" in failures.diagnose(SETTINGS)[1]
    other = _ConnectionFailures()
    _logged(other, _wrong_tls_version())
    assert "not trusted" not in other.diagnose(SETTINGS)[1]


def test_a_sasl_failure_names_the_mechanism_and_wins_over_a_tls_error() -> None:
    """A SASL_SSL listener can log both on the way (a first attempt's handshake cut short):
    the refusal of the credentials is what to fix."""
    failures = _ConnectionFailures()
    _logged(failures, _wrong_tls_version())
    _logged(failures, _sasl_failure())
    reason, message, definite = failures.diagnose(SETTINGS)
    assert (reason, definite) == ("sasl-authentication", True)
    assert "KAFKA_SASL_MECHANISM=SCRAM-SHA-512" in message


def test_a_connection_closed_without_sasl_configured_is_unreachable() -> None:
    """Only a SASL listener's closed connection is read as refused credentials."""
    tls_only = Settings(
        bootstrap_servers="kafka-0.example:9093",
        security=KafkaSecurity(protocol="SSL", ssl_cafile="/etc/her2/kafka/ca.crt"),
    )
    failures = _ConnectionFailures()
    _logged(failures, _closed_after_connect())
    assert failures.diagnose(tls_only)[0] == "unreachable"
    assert failures.diagnose(SETTINGS)[0] == "sasl-authentication"


def test_nothing_logged_is_unreachable() -> None:
    assert _ConnectionFailures().diagnose(SETTINGS)[0] == "unreachable"


class _RefusingClients:
    """An admin constructor that logs `exc` through kafka-python's logger, then times out, for
    its first `failures` calls (all of them by default), then returns an admin."""

    def __init__(self, exc: BaseException, failures: int = 1_000_000) -> None:
        self.exc = exc
        self.failures = failures
        self.calls = 0

    def admin(self, **config: Any) -> Any:
        self.calls += 1
        if self.calls > self.failures:
            return "admin"
        logging.getLogger("kafka.net.manager").error("Connection failed: %s", self.exc)
        raise KafkaTimeoutError("Unable to bootstrap from kafka-0.example:9093")


class _Service:
    """The service's side of connect_admin: its stop event's wait, readiness and beats."""

    def __init__(self, stop_after_waits: int | None = None) -> None:
        self.waits: list[float] = []
        self.ready: list[tuple[bool, str]] = []
        self.beats = 0
        self.stop_after_waits = stop_after_waits

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready.append((ready, reason))

    def beat(self) -> None:
        self.beats += 1

    def connect(self, clients: _RefusingClients) -> Any:
        return connect_admin(
            clients,  # type: ignore[arg-type]
            SETTINGS,
            "test",
            wait=self.wait,
            set_ready=self.set_ready,
            beat=self.beat,
            backoff=Backoff((1.0, 2.0)),
        )


# refusals that waiting would not fix: the credentials, the certificate, the TLS version
DEFINITE = {"sasl", "certificate-verify", "certificate-verify-as-cause", "tls-other"}
REFUSALS = [case for case in CASES if case.id in DEFINITE]
# a connection closed during SASL or the TLS handshake: a broker starting or stopping too
DOUBTFUL = [case for case in CASES if case.id in {"sasl-closed-after-connect", "tls-closed"}]
NO_BROKER = [case for case in CASES if case.values[1] == "unreachable"]
assert len(REFUSALS) + len(DOUBTFUL) + len(NO_BROKER) == len(CASES)


@pytest.mark.parametrize(("failure", "reason", "named", "not_named"), CASES)
def test_only_a_refusal_waiting_would_not_fix_is_definite(
    failure: Any, reason: str, named: tuple[str, ...], not_named: tuple[str, ...]
) -> None:
    failures = _ConnectionFailures()
    _logged(failures, failure())
    assert failures.diagnose(SETTINGS)[2] == (failure in [c.values[0] for c in REFUSALS])


@pytest.mark.parametrize(("failure", "reason", "named", "not_named"), REFUSALS)
def test_a_refusal_is_logged_with_its_reason_and_raised_at_once(
    failure: Any, reason: str, named: tuple[str, ...], not_named: tuple[str, ...]
) -> None:
    """Credentials or a certificate refused: waiting would not fix a configuration. Its
    handler on the `kafka` logger sees what kafka-python logs; the log line carries the
    reason, the error names the variables; neither the password."""
    handlers = list(logging.getLogger("kafka").handlers)
    clients, service = _RefusingClients(failure()), _Service()
    with structlog.testing.capture_logs() as logs, pytest.raises(KafkaConnectError) as raised:
        service.connect(clients)
    [line] = [line for line in logs if line["event"] == "cannot connect to Kafka"]
    assert (line["reason"], line["error_type"]) == (reason, "KafkaTimeoutError")
    assert PASSWORD.lower() not in repr(line).lower()
    message = str(raised.value)
    assert all(variable in message for variable in named), message
    assert PASSWORD.lower() not in message.lower()
    assert logging.getLogger("kafka").handlers == handlers, "the handler is removed afterwards"
    assert (clients.calls, service.waits) == (1, []), "a refusal is not retried"


@pytest.mark.parametrize("failure", [case.values[0] for case in NO_BROKER])
def test_no_broker_answering_is_waited_out_unready(failure: Any) -> None:
    """A pod started during an outage starts when a broker answers, as a running one resumes
    (not exit 1 into a crash loop): a warning per attempt, unready 'broker unreachable', the
    back-off between attempts, a beat around each wait, then the admin client."""
    clients, service = _RefusingClients(failure(), failures=3), _Service()
    with structlog.testing.capture_logs() as logs:
        admin = service.connect(clients)
    assert admin == "admin"
    assert clients.calls == 4
    assert service.waits == [1.0, 2.0, 2.0]
    assert service.ready == [(False, "broker unreachable")] * 3
    assert service.beats >= 7  # before each attempt and after each wait's readiness
    retries = [line for line in logs if line["event"] == events.KAFKA_UNREACHABLE_RETRY]
    assert [(r["attempt"], r["seconds"], r["reason"]) for r in retries] == [
        (1, 1.0, "unreachable"),
        (2, 2.0, "unreachable"),
        (3, 2.0, "unreachable"),
    ]
    assert all(r["log_level"] == "warning" for r in retries)
    assert not [line for line in logs if line["event"] == "cannot connect to Kafka"]
    assert PASSWORD.lower() not in repr(logs).lower()


def test_a_stop_while_no_broker_answers_ends_the_wait() -> None:
    clients, service = _RefusingClients(_connection_refused()), _Service(stop_after_waits=2)
    assert service.connect(clients) is None
    assert (clients.calls, service.waits) == (2, [1.0, 2.0])


@pytest.mark.parametrize(("failure", "reason", "named", "not_named"), DOUBTFUL)
def test_a_doubtful_refusal_is_tried_again_before_it_stops_start_up(
    failure: Any, reason: str, named: tuple[str, ...], not_named: tuple[str, ...]
) -> None:
    """A broker starting or stopping closes connections too: DOUBTFUL_REFUSALS attempts in a
    row, each a warning naming the variables to check, then the refusal stops start-up."""
    clients, service = _RefusingClients(failure()), _Service()
    with structlog.testing.capture_logs() as logs, pytest.raises(KafkaConnectError):
        service.connect(clients)
    assert clients.calls == 3  # docs/operations.md: "tried three times in a row"
    assert DOUBTFUL_REFUSALS == 3
    assert service.waits == [1.0, 2.0]
    retries = [line for line in logs if line["event"] == events.KAFKA_UNREACHABLE_RETRY]
    assert [(r["reason"], r["variable"]) for r in retries] == [(reason, CHECK[reason])] * 2
    [error] = [line for line in logs if line["event"] == "cannot connect to Kafka"]
    assert error["reason"] == reason


def test_a_doubtful_refusal_then_a_broker_answering_starts() -> None:
    clients, service = _RefusingClients(_closed_during_the_handshake(), failures=2), _Service()
    assert service.connect(clients) == "admin"
