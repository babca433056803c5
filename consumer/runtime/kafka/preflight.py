"""The first connection to Kafka, which doubles as the start-up preflight: when it fails, say
why (SASL credentials, TLS trust, or no broker) and name the variables to check; no broker
answering is waited out, a refusal is fatal."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Final

from consumer.config import Settings
from consumer.errors import BrokerError, KafkaConnectError, kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.kafka import Admin, Clients, KafkaError
from consumer.runtime.kafka.clients import client_id
from consumer.runtime.records import BROKER_UNREACHABLE, BROKER_WAIT_BACKOFF, Backoff

log = get_logger("her2.service")

UNREACHABLE: Final = "unreachable"  # the diagnosis (log key `reason`) of no broker answering


class _ConnectionFailures(logging.Handler):
    """Collects the exceptions kafka-python logs while bootstrapping (it raises only a timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))

    def diagnose(self, s: Settings) -> tuple[str, str]:
        """(reason, message) naming the variables to check; never echoes a secret."""
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
            return "sasl-authentication", (
                f"Kafka at {where} rejected the SASL authentication "
                f"(KAFKA_SASL_MECHANISM={s.security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD"
            )
        if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in names or "[SSL" in text:
            trust = "CERTIFICATE_VERIFY" in text or "CERTIFICATE VERIFY FAILED" in text
            return "tls", (
                f"the TLS handshake with {where} failed"
                + (": the broker's certificate is not trusted" if trust else "")
                + " (check KAFKA_SSL_CAFILE, KAFKA_SSL_CHECK_HOSTNAME and KAFKA_SECURITY_PROTOCOL)"
            )
        if s.security.sasl_mechanism and "SOCKET DISCONNECTED" in text:
            # the broker accepted the connection and closed it: after a failed SASL exchange it
            # may close before kafka-python reads its error response (seen against Kafka 4.3)
            return "sasl-authentication", (
                f"Kafka at {where} closed the connection during SASL authentication "
                f"(KAFKA_SASL_MECHANISM={s.security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD"
            )
        return UNREACHABLE, (
            f"no Kafka broker answered at {where} within HER2_REQUEST_TIMEOUT_MS="
            f"{s.tuning.request_timeout_ms} (check the address and KAFKA_SECURITY_PROTOCOL="
            f"{s.security.protocol})"
        )


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
    (`broker unreachable`), /healthz beating, a warning per attempt (each attempt takes up to
    HER2_REQUEST_TIMEOUT_MS), so a pod started during an outage starts when the brokers are
    back instead of crash-looping into Kubernetes' back-off. A broker that refuses the
    credentials or the certificate is KafkaConnectError naming what to check: waiting would
    not fix a configuration."""
    attempt = 0
    while True:
        beat()
        admin, reason, hint, error_type = _try_connect(clients, s, default_id)
        if admin is not None:
            return admin
        if reason != UNREACHABLE:
            log.error(
                events.KAFKA_UNREACHABLE,
                reason=reason,
                error_type=error_type,
                bootstrap_servers=s.bootstrap_servers,
            )
            raise KafkaConnectError(hint)
        delay = backoff.delay(attempt)
        attempt += 1
        log.warning(
            events.KAFKA_UNREACHABLE_RETRY,
            reason=reason,
            error_type=error_type,
            bootstrap_servers=s.bootstrap_servers,
            attempt=attempt,
            seconds=delay,
        )
        set_ready(False, BROKER_UNREACHABLE)
        beat()
        if wait(delay):
            return None


def _try_connect(
    clients: Clients, s: Settings, default_id: str
) -> tuple[Admin | None, str, str, str]:
    """One attempt: (admin, "", "", "") or (None, reason, message, error type)."""
    failures = _ConnectionFailures()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(failures)
    try:
        admin = clients.admin(
            client_id=client_id(s, default_id, "admin"),
            bootstrap_timeout_ms=s.tuning.request_timeout_ms,
            **s.kafka_common(),
        )
    except (KafkaError, BrokerError) as exc:  # BrokerError: `clients` are MappedClients
        error_type = kind_of(exc)
    else:
        return admin, "", "", ""
    finally:
        kafka_logger.removeHandler(failures)
    reason, hint = failures.diagnose(s)
    return None, reason, hint, error_type
