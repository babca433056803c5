"""quirks.close_failed_connect_sockets against kafka-python's own connect code (no broker): a
refused connect must not leave its socket open until a garbage collection."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.inet import KafkaNetSocket

from consumer.runtime.kafka.clients import KafkaClients
from consumer.runtime.kafka.quirks import close_failed_connect_sockets

ATTEMPTS = 20


class _Net:
    """The part of kafka-python's event loop a connect waits on: the socket turning writable
    (which a refused non-blocking connect does at once)."""

    async def wait_write(self, sock: socket.socket, timeout_at: float | None = None) -> None:
        select.select([], [sock], [], 2.0)


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


def test_the_workaround_finds_kafka_pythons_connect_and_applies_once() -> None:
    """If an upgrade moves KafkaNetSocket.sock_connect this fails: check whether the new release
    still leaks before removing or adapting the workaround."""
    assert close_failed_connect_sockets()
    patched = KafkaNetSocket.sock_connect
    KafkaClients()  # the service's factory applies it too, without wrapping twice
    assert close_failed_connect_sockets()
    assert KafkaNetSocket.sock_connect is patched
