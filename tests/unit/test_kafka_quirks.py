"""quirks.close_failed_connect_sockets against kafka-python's own connect code (no broker): a
refused connect, or a TLS handshake that fails, must not leave its socket open until a garbage
collection."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.inet import KafkaNetSocket
from kafka.net.transport import KafkaSSLTransport

from consumer.runtime.kafka.clients import KafkaClients
from consumer.runtime.kafka.quirks import close_failed_connect_sockets

ATTEMPTS = 20


class _Net:
    """The part of kafka-python's event loop a connect and a TLS handshake use: waiting for the
    socket (a refused connect and a closed peer answer at once), and forgetting it."""

    async def wait_write(self, sock: socket.socket, timeout_at: float | None = None) -> None:
        select.select([], [sock], [], 2.0)

    async def wait_read(self, sock: socket.socket, timeout_at: float | None = None) -> None:
        select.select([sock], [], [], 2.0)

    def unregister_event(self, sock: socket.socket, events: int) -> None:
        raise KeyError(sock)  # never registered here


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """The garbage collector off, as it is for long stretches of an idle service (gen-0
    threshold 50,000): only what closes a socket explicitly counts."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _refused_connects(count: int) -> list[BaseException]:
    """`count` connects through KafkaNetSocket to a closed loopback port; the exceptions, kept
    alive as kafka-python's futures and retry loop keep them."""
    addrinfo = socket.getaddrinfo("127.0.0.1", _closed_port(), socket.AF_INET, socket.SOCK_STREAM)
    failures: list[BaseException] = []
    for _ in range(count):
        coroutine: Any = KafkaNetSocket().connect(_Net(), addrinfo[0])
        with pytest.raises(KafkaConnectionError) as refused:
            coroutine.send(None)  # never suspends: _Net.wait_write returns at once
        failures.append(refused.value)
    return failures


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")
def test_a_refused_connect_leaves_no_open_socket() -> None:
    """kafka-python 3.0.12 leaves one socket per refused connect (measured: ~5 a minute for a
    service whose broker is away); closed where the connect fails, none stays."""
    assert close_failed_connect_sockets()
    with _no_collection():
        before = _open_fds()
        failures = _refused_connects(ATTEMPTS)
        after = _open_fds()
    assert len(failures) == ATTEMPTS
    assert after == before, f"{after - before} sockets left open by {ATTEMPTS} refused connects"


@contextlib.contextmanager
def _closing_listener() -> Iterator[int]:
    """A loopback listener that accepts and closes at once (a load balancer in front of a
    broker that is away): a TLS handshake through it fails. Yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(ATTEMPTS)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                peer, _ = server.accept()
                peer.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            socket.create_connection(server.getsockname(), timeout=1).close()  # wake accept()
        thread.join(5)
        server.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")
def test_a_failed_tls_handshake_leaves_no_open_socket() -> None:
    """The connection manager owns a transport only once its handshake succeeded; kafka-python
    3.0.12 leaves the socket of a failed one to the garbage collector too."""
    assert close_failed_connect_sockets()
    with _closing_listener() as port, _no_collection():
        before = _open_fds()
        failures: list[BaseException] = []
        for _ in range(ATTEMPTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.setblocking(False)
            coroutine: Any = KafkaSSLTransport(
                _Net(), sock, host="127.0.0.1", ssl_check_hostname=False
            ).handshake()
            with pytest.raises((ssl.SSLError, ConnectionResetError)) as failed:
                coroutine.send(None)
            failures.append(failed.value)
        after = _open_fds()
    assert len(failures) == ATTEMPTS
    assert after == before, f"{after - before} sockets left open by {ATTEMPTS} failed handshakes"


def test_the_workaround_finds_kafka_pythons_connect_and_applies_once() -> None:
    """If an upgrade moves KafkaNetSocket.sock_connect this fails: check whether the new release
    still leaks before removing or adapting the workaround."""
    assert close_failed_connect_sockets()
    patched = (KafkaNetSocket.sock_connect, KafkaSSLTransport.handshake)
    KafkaClients()  # the service's factory applies it too, without wrapping twice
    assert close_failed_connect_sockets()
    assert (KafkaNetSocket.sock_connect, KafkaSSLTransport.handshake) == patched


def test_an_admin_client_whose_bootstrap_fails_leaves_no_thread_and_no_descriptor() -> None:
    """kafka-python 3.0.12's KafkaAdminClient starts its IO thread before it bootstraps and
    leaves it running when no broker answers: the start-up wait for a broker tries again and
    again (measured before: a thread and 3-4 descriptors per attempt)."""
    clients = KafkaClients()

    def io_threads() -> int:
        return sum(t.name.startswith("kafka-io") for t in threading.enumerate())

    threads, fds = io_threads(), len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(Exception, match="bootstrap"):
            clients.admin(bootstrap_servers="127.0.0.1:1", bootstrap_timeout_ms=200)
    gc.collect()
    assert io_threads() == threads
    assert len(os.listdir("/proc/self/fd")) <= fds


def test_the_fenced_member_check_waits_for_a_join_under_way() -> None:
    """A join sets the member stable and enables its heartbeat under the coordinator's lock;
    between the two the member looks fenced. The check reads under the same lock, so it sees
    the join's end instead of stopping a healthy member (a real coordinator; the lock held by
    this thread as the join would hold it)."""
    from kafka import KafkaConsumer  # noqa: PLC0415
    from kafka.structs import MemberState  # noqa: PLC0415

    from consumer.runtime.kafka.quirks import static_member_fenced  # noqa: PLC0415

    # as in the service: its IO thread's refused connects to port 1 during the wait close
    assert close_failed_connect_sockets()
    consumer = KafkaConsumer(
        bootstrap_servers="127.0.0.1:1", group_id="g", group_instance_id="i", api_version=(3, 0)
    )
    try:
        coordinator = consumer._coordinator
        seen: list[bool] = []
        checker = threading.Thread(target=lambda: seen.append(static_member_fenced(consumer)))
        with coordinator._lock:
            coordinator.state = MemberState.STABLE  # the join half-way: heartbeat still off
            checker.start()
            checker.join(0.5)
            assert checker.is_alive(), f"the check did not wait for the join: {seen}"
            coordinator._enable_heartbeat()
        checker.join(10)
        assert seen == [False]
    finally:
        consumer.close(autocommit=False)


def test_the_fenced_member_check_reads_kafka_pythons_own_coordinator() -> None:
    """quirks.static_member_fenced reads private state of kafka-python's coordinator: a rename
    in an upgrade must fail here, not turn the check into 'never fenced'. A real KafkaConsumer
    (no broker needed), its coordinator put in the state the fenced heartbeat leaves."""
    from kafka import KafkaConsumer  # noqa: PLC0415
    from kafka.structs import MemberState  # noqa: PLC0415

    from consumer.runtime.kafka.quirks import static_member_fenced  # noqa: PLC0415

    consumer = KafkaConsumer(
        bootstrap_servers="127.0.0.1:1", group_id="g", group_instance_id="i", api_version=(3, 0)
    )
    try:
        coordinator = consumer._coordinator
        for name in ("_heartbeat_enabled", "_lock", "rejoining", "group_instance_id", "stable"):
            assert hasattr(coordinator, name), name
        assert not static_member_fenced(consumer)  # not joined
        with coordinator._lock:
            coordinator.state = MemberState.STABLE
            coordinator._enable_heartbeat()
        assert not static_member_fenced(consumer)  # joined, heartbeating
        coordinator._disable_heartbeat()  # what its heartbeat does on FencedInstanceIdError
        assert static_member_fenced(consumer)
    finally:
        consumer.close(autocommit=False)


# -- workarounds that cannot reach kafka-python's internals are said, once ----------------------


class _Moved:
    """A kafka-python client of another release: none of the internals the workarounds reach."""

    def __init__(self, **config: Any) -> None:
        self.config = config


class _MovedStatic(_Moved):
    """The same, a static member: its coordinator has an instance id and nothing else."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._coordinator = type("Coordinator", (), {"group_instance_id": "pod-0"})()


def test_kafka_pythons_own_clients_lack_nothing_the_workarounds_reach() -> None:
    """No false warning on the tested release: a real consumer (static member) and producer."""
    from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415

    from consumer.runtime.kafka.quirks import (  # noqa: PLC0415
        bound_metadata_wait,
        missing_workarounds,
    )

    close_failed_connect_sockets()  # as the service: the refused connects to port 1 close
    consumer = KafkaConsumer(
        bootstrap_servers="127.0.0.1:1", group_id="g", group_instance_id="i", api_version=(3, 0)
    )
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(3, 0))
    try:
        assert missing_workarounds(consumer) == []
        assert missing_workarounds(producer) == []
        assert bound_metadata_wait(consumer)
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=0)


@pytest.mark.parametrize(
    ("client", "missing"),
    [
        (_Moved, ["topic-auto-creation-off", "bounded-metadata-wait"]),
        (
            _MovedStatic,
            ["topic-auto-creation-off", "fenced-static-member-check", "bounded-metadata-wait"],
        ),
    ],
    ids=["dynamic", "static"],
)
def test_a_workaround_that_cannot_apply_is_said_once(
    client: type[_Moved], missing: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a kafka-python whose internals moved, each workaround would silently do nothing (a
    consumer creating the topics it names, a fenced member going on): one warning per
    workaround and process, naming it and the kafka-python version."""
    import structlog  # noqa: PLC0415

    from consumer.ops import events  # noqa: PLC0415
    from consumer.runtime.kafka import clients  # noqa: PLC0415

    monkeypatch.setattr(clients, "KafkaConsumer", client)
    monkeypatch.setattr(clients, "KafkaProducer", _Moved)
    monkeypatch.setattr(clients, "_warned", set())
    factory = KafkaClients()
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            factory.consumer(group_id="g")
            factory.producer()
    said = [line for line in logs if line["event"] == events.KAFKA_WORKAROUND_NOT_APPLIED]
    assert [line["workaround"] for line in said] == missing
    assert {line["kafka_python"] for line in said} == {clients.KAFKA_PYTHON_VERSION}
    assert {line["log_level"] for line in said} == {"warning"}


# -- a metadata request the broker does not answer -------------------------------------------


@pytest.mark.parametrize("call", ["topics", "partitions_for_topic"])
def test_a_metadata_fetch_no_broker_answers_gives_up_after_the_request_timeout(call: str) -> None:
    """kafka-python 3.0.12 waits for ever for the full metadata topics() asks, and
    partitions_for_topic() for a topic its cache lacks (the input topic deleted, the broker
    then away: the loop stalled until the liveness probe restarted the pod). The service's
    consumer gives up after its request timeout with a retriable BrokerError, which the
    misrouting check retries and the lag refresh reads as "broker unreachable"."""
    from consumer.errors import BrokerError  # noqa: PLC0415
    from consumer.runtime.kafka.mapping import MappedClients  # noqa: PLC0415

    timeout_s = 1.5
    consumer = MappedClients(KafkaClients()).consumer(
        bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        api_version=(3, 0),
        request_timeout_ms=int(timeout_s * 1000),
        reconnect_backoff_max_ms=200,
    )
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            getattr(consumer, call)(*(["absent-topic"] if call == "partitions_for_topic" else []))
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    began = time.monotonic()
    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(timeout_s + 10)
    try:
        assert not worker.is_alive(), f"{call}() still waiting {timeout_s + 10:g} s in"
        error = outcome.get("error")
        assert isinstance(error, BrokerError), error
        assert error.retriable
        assert error.kind == "KafkaTimeoutError"
        assert timeout_s - 0.2 <= time.monotonic() - began
    finally:
        consumer.close(autocommit=False)
