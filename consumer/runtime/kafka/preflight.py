"""The first connection to Kafka, which doubles as the start-up preflight: when it fails, say
why (SASL credentials, TLS trust, or no broker) and name the variables to check; no broker
answering is waited out, a refusal is fatal."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

from consumer.config import Settings
from consumer.errors import BrokerError, KafkaConnectError, kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import Admin, Clients, KafkaError
from consumer.runtime.kafka.clients import client_id
from consumer.runtime.records import BROKER_UNREACHABLE, BROKER_WAIT_BACKOFF, Backoff, StartupWait

log = get_logger("her2.service")

# the diagnoses (log key `reason`), and the variables each asks to check (log key `variable`)
UNREACHABLE: Final = "unreachable"
SASL: Final = "sasl-authentication"
TLS: Final = "tls"
CHECK: Final = {
    UNREACHABLE: "KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL",
    SASL: "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD (or _FILE)",
    TLS: "KAFKA_SSL_CAFILE, KAFKA_SSL_CHECK_HOSTNAME, KAFKA_SECURITY_PROTOCOL",
}
# attempts in a row that end in a refusal that is not definite (see diagnose) before start-up
# takes it for one: a broker starting or stopping does not close every connection for long
DOUBTFUL_REFUSALS: Final = 3


class _ConnectionFailures(logging.Handler):
    """Collects the exceptions kafka-python logs while bootstrapping (it raises only a timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))

    def diagnose(self, s: Settings) -> tuple[str, str, bool]:
        """(reason, message naming the variables to check, definite); never echoes a secret.
        Definite: the broker refused the credentials, or the certificate or the TLS version;
        not definite: what a broker starting, stopping or behind a load balancer without a
        backend also causes (a connection closed during SASL or during the TLS handshake), and
        no broker answering at all."""
        chain: list[BaseException] = []
        for exc in self.errors:
            seen: BaseException | None = exc
            while seen is not None and seen not in chain:
                chain.append(seen)
                seen = seen.__cause__ or seen.__context__
        names = " ".join(type(e).__name__ for e in chain)
        # only to classify, never printed (it may name hosts)
        text = " ".join(str(e) for e in chain).upper()
        where = f"KAFKA_BOOTSTRAP_SERVERS={s.bootstrap_servers}"
        if "Authentication" in names or "Sasl" in names:
            refused = (
                f"Kafka at {where} rejected the SASL authentication "
                f"(KAFKA_SASL_MECHANISM={s.security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
            )
            return SASL, refused, True
        if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in names or "[SSL" in text:
            trust = "CERTIFICATE_VERIFY" in text or "CERTIFICATE VERIFY FAILED" in text
            failed = (
                f"the TLS handshake with {where} failed"
                + (": the broker's certificate is not trusted" if trust else "")
                + " (check KAFKA_SSL_CAFILE, KAFKA_SSL_CHECK_HOSTNAME and KAFKA_SECURITY_PROTOCOL)"
            )
            return TLS, failed, trust or "WRONG_VERSION_NUMBER" in text
        if s.security.sasl_mechanism and "SOCKET DISCONNECTED" in text:
            # the broker accepted the connection and closed it: after a failed SASL exchange it
            # may close before kafka-python reads its error response (seen against Kafka 4.3)
            closed = (
                f"Kafka at {where} closed the connection during SASL authentication "
                f"(KAFKA_SASL_MECHANISM={s.security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
            )
            return SASL, closed, False
        silent = (
            f"no Kafka broker answered at {where} within HER2_REQUEST_TIMEOUT_MS="
            f"{s.tuning.request_timeout_ms} (check the address and KAFKA_SECURITY_PROTOCOL="
            f"{s.security.protocol})"
        )
        return UNREACHABLE, silent, False


def connect_admin(
    clients: Clients,
    s: Settings,
    default_id: str,
    *,
    wait: Callable[[float], bool],
    set_ready: Callable[..., None],
    beat: Callable[[], None],
    backoff: Backoff = BROKER_WAIT_BACKOFF,
) -> Admin | None:
    """An admin client once a broker answers; None when stopped while waiting for one.

    No broker answering is waited out, as a running service waits out an outage: unready
    (`broker unreachable`), /healthz beating, a warning per attempt naming the variables to
    check (each attempt takes up to HER2_REQUEST_TIMEOUT_MS), so a pod started during an outage
    starts when the brokers are back instead of crash-looping into Kubernetes' back-off. A
    broker that refuses the credentials, the certificate or the TLS version is
    KafkaConnectError naming what to check: waiting would not fix a configuration. A refusal
    that is not definite (a connection closed during SASL or the TLS handshake, which a broker
    starting or stopping causes too) is tried DOUBTFUL_REFUSALS times in a row first."""
    retry = StartupWait(backoff, wait, set_ready, beat)
    doubtful = 0
    while True:
        beat()
        outcome = _try_connect(clients, s, default_id)
        if not isinstance(outcome, _Refused):
            return outcome
        doubtful = doubtful + 1 if outcome.reason != UNREACHABLE else 0
        # the log calls spell their keys out: tests/unit/test_log_events.py checks each
        # against ALLOWED_KEYS, which a shared dict of them would hide from it
        if outcome.definite or doubtful >= DOUBTFUL_REFUSALS:
            log.error(
                events.KAFKA_UNREACHABLE,
                reason=outcome.reason,
                error_type=outcome.error_type,
                bootstrap_servers=s.bootstrap_servers,
                variable=CHECK[outcome.reason],
            )
            raise KafkaConnectError(outcome.hint)
        delay = retry.failed()
        log.warning(
            events.KAFKA_UNREACHABLE_RETRY,
            reason=outcome.reason,
            error_type=outcome.error_type,
            bootstrap_servers=s.bootstrap_servers,
            variable=CHECK[outcome.reason],
            attempt=retry.attempt,
            seconds=delay,
        )
        if retry.pause(BROKER_UNREACHABLE, delay):
            return None


@contextlib.contextmanager
def explained(s: Settings) -> Iterator[None]:
    """For the command-line tools' first connection (a client's constructor, which fails with
    kafka-python's bare "Unable to bootstrap" timeout): a KafkaError raised in the block
    becomes KafkaConnectError with `run`'s diagnosis (SASL, TLS or no broker) naming the
    variables to check. A security audit found `publish`, `open-alerts` and `demo` saying only
    the timeout for a wrong CA or password."""
    failures = _ConnectionFailures()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(failures)
    try:
        yield
    except KafkaError as exc:
        raise KafkaConnectError(failures.diagnose(s)[1]) from exc
    finally:
        kafka_logger.removeHandler(failures)


class _Refused(NamedTuple):
    """An attempt no broker accepted: the diagnosis (_ConnectionFailures.diagnose)."""

    reason: str
    hint: str
    definite: bool
    error_type: str


def _try_connect(clients: Clients, s: Settings, default_id: str) -> Admin | _Refused:
    """One attempt: the admin client, or why there is none."""
    failures = _ConnectionFailures()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(failures)
    try:
        return clients.admin(
            client_id=client_id(s, default_id, "admin"),
            bootstrap_timeout_ms=s.tuning.request_timeout_ms,
            **s.kafka_common(),
        )
    except (KafkaError, BrokerError) as exc:  # BrokerError: `clients` are MappedClients
        error_type = kind_of(exc)
    finally:
        kafka_logger.removeHandler(failures)
    return _Refused(*failures.diagnose(s), error_type)
