#!/usr/bin/env python3
"""A SASL_SSL + SCRAM-SHA-512 listener for the local broker of ``launcher.py``.

The broker keeps its PLAINTEXT listener (the launcher's readiness probe and inter-broker
traffic use it) and gains a ``SASL_SSL`` listener on another loopback port:

- TLS: a throw-away CA made with ``trustme`` signs a server certificate for ``127.0.0.1`` and
  ``localhost``. Kafka reads it as a PEM keystore (``ssl.keystore.type=PEM``, KIP-651): one file
  holding the PKCS#8 private key and the certificate chain. Clients trust ``ca.pem``.
- SASL: ``SCRAM-SHA-512`` only. Credentials live in the KRaft metadata log; they are created
  either when the storage is formatted (``kafka-storage format --add-scram``, see
  :meth:`SecureListener.format_args`) or, on a running broker, with the AlterUserScramCredentials
  admin API over the PLAINTEXT listener (:meth:`SecureListener.create_users`, what the tests use
  because ``LocalKafka`` does not take extra format arguments).

Usage (the tests load this file by path, like the launcher)::

    secure = SecureListener.create(tmp_path / "tls", users={"alice": "alice-secret"})
    kafka = LocalKafka(tmp_path / "kafka", extra_ports=[PORT_NAME],
                       extra_properties=secure.extra_properties())
    kafka.start()
    secure.bind(kafka.ports)                      # the listener's port, picked by the launcher
    secure.create_users(kafka.bootstrap)          # then wait_until_login() for one of them
    KafkaConsumer(..., **secure.client_config("alice", "alice-secret"))
    env = secure.consumer_env("alice", "alice-secret")   # KAFKA_* for the service's Settings

Only the standard library, ``trustme`` (and its ``cryptography``) and, for the admin calls,
kafka-python are used.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LISTENER = "SASL_SSL"
MECHANISM = "SCRAM-SHA-512"
SERVER_NAMES = ("127.0.0.1", "localhost")
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# The launcher's ``extra_ports`` name of this listener's port. The launcher picks it together
# with the broker's other ports (a port picked here on its own and released could be handed
# out again for the controller: Kafka then refuses two listeners on one port).
PORT_NAME = "sasl_ssl"


def _pkcs8(private_key_pem: bytes) -> bytes:
    """The same key as unencrypted PKCS#8 PEM (Kafka's PEM keystore reads only PKCS#8)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - via trustme

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_ca(directory: Path, name: str = "ca.pem") -> Path:
    """Write the certificate of a fresh, unrelated CA (for "untrusted CA" tests); return it."""
    import trustme  # noqa: PLC0415 - test-only dependency

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@dataclass
class SecureListener:
    """Certificates, SCRAM users and the broker/client settings of one SASL_SSL listener."""

    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # set by :meth:`bind` once the launcher has picked it

    @property
    def cafile(self) -> Path:
        """PEM of the CA that signed the broker certificate (clients' ``ssl_cafile``)."""
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        """PEM holding the broker's PKCS#8 key and certificate chain."""
        return self.directory / "broker-keystore.pem"

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the SASL_SSL listener (after :meth:`bind`)."""
        if self.port is None:
            raise RuntimeError("the listener has no port yet: bind() it to the started broker")
        return f"{HOST}:{self.port}"

    def bind(self, ports: Mapping[str, int]) -> None:
        """Take this listener's port from the started launcher's ``ports``."""
        self.port = ports[f"{PORT_NAME}_port"]

    @classmethod
    def create(cls, directory: Path | str, users: Mapping[str, str]) -> SecureListener:
        """Make a CA and a broker certificate in ``directory`` for the listener."""
        import trustme  # noqa: PLC0415 - test-only dependency

        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="her2 local test CA")
        server = ca.issue_cert(*SERVER_NAMES)
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
        keystore = directory / "broker-keystore.pem"
        keystore.write_bytes(_pkcs8(server.private_key_pem.bytes()) + chain)
        keystore.chmod(0o600)
        return cls(directory, dict(users))

    def extra_properties(self) -> dict[str, str]:
        """``LocalKafka(extra_properties=...)``: the launcher's listeners plus SASL_SSL.

        ``{host}``, ``{port}``, ``{controller_port}`` and ``{sasl_ssl_port}`` are the launcher's
        placeholders: give the launcher ``extra_ports=[PORT_NAME]``. Inter-broker and
        controller traffic stay on PLAINTEXT (a single node).
        """
        prefix = f"listener.name.{LISTENER.lower()}"
        mechanism = MECHANISM.lower()
        secure = f"{LISTENER}://{{host}}:{{{PORT_NAME}_port}}"
        return {
            "listeners": (
                f"PLAINTEXT://{{host}}:{{port}},CONTROLLER://{{host}}:{{controller_port}},{secure}"
            ),
            "advertised.listeners": f"PLAINTEXT://{{host}}:{{port}},{secure}",
            "listener.security.protocol.map": (
                f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{LISTENER}:{LISTENER}"
            ),
            # The default (GSSAPI) would need Kerberos: enable exactly one mechanism.
            "sasl.enabled.mechanisms": MECHANISM,
            f"{prefix}.sasl.enabled.mechanisms": MECHANISM,
            f"{prefix}.{mechanism}.sasl.jaas.config": _SCRAM_LOGIN,
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(self.keystore),
            f"{prefix}.ssl.client.auth": "none",
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM users with the metadata log.

        For a launcher that accepts extra format arguments; :meth:`create_users` does the same
        on a running broker.
        """
        args: list[str] = []
        for name, password in self.users.items():
            if any(char in name + password for char in ',=[]"'):
                raise ValueError(f"user {name!r}: ',', '=', '[', ']' and '\"' are not supported")
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def create_users(self, plaintext_bootstrap: str, timeout: float = 30.0) -> None:
        """Create the SCRAM users through the PLAINTEXT listener and wait until they log in."""
        from kafka import KafkaAdminClient  # noqa: PLC0415 - optional dependency
        from kafka.admin import UserScramCredentialUpsertion  # noqa: PLC0415

        admin = KafkaAdminClient(bootstrap_servers=plaintext_bootstrap, client_id="her2-secure")
        try:
            result = admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(n, MECHANISM, p) for n, p in self.users.items()]
            )
        finally:
            admin.close()
        failed = {user: error for user, error in result.items() if error}
        if failed:
            raise RuntimeError(f"creating SCRAM credentials failed: {failed}")
        for name, password in self.users.items():
            self.wait_until_login(name, password, timeout)

    def wait_until_login(self, username: str, password: str, timeout: float = 30.0) -> None:
        """Retry a SASL_SSL login until it succeeds (credentials reach the broker's cache)."""
        from kafka import KafkaAdminClient  # noqa: PLC0415 - optional dependency

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="her2-secure-probe",
                    bootstrap_timeout_ms=3000,
                    request_timeout_ms=3000,
                    **self.client_config(username, password),
                )
            except Exception as exc:
                last = exc
                time.sleep(0.2)
                continue
            with contextlib.suppress(Exception):
                admin.close()
            return
        raise TimeoutError(f"{username} could not log in on {self.bootstrap}: {last!r}")

    def client_config(
        self, username: str, password: str, cafile: Path | None = None
    ) -> dict[str, Any]:
        """kafka-python keyword arguments for this listener (``bootstrap_servers`` excluded)."""
        return {
            "security_protocol": LISTENER,
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": username,
            "sasl_plain_password": password,
            "ssl_cafile": str(cafile or self.cafile),
            "ssl_check_hostname": True,
        }

    def consumer_env(
        self, username: str, password: str, cafile: Path | None = None
    ) -> dict[str, str]:
        """The service's environment variables for this listener."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": LISTENER,
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": username,
            "KAFKA_SASL_PASSWORD": password,
            "KAFKA_SSL_CAFILE": str(cafile or self.cafile),
        }
