"""Health endpoints and Prometheus exposition over HTTP: `/metrics`, `/healthz`, `/readyz`.

A small stdlib server (ThreadingHTTPServer in a daemon thread). It reads only two things:
the injected `CollectorRegistry` and a `Health` object that the service loop updates.

- `/healthz` (liveness): 200 while the poll loop beat within `stall_after` seconds. It never
  looks at the broker, so a broker outage does not make Kubernetes restart every replica.
- `/readyz` (readiness): 200 only while the service says it is ready (group joined, partitions
  assigned, history restored, the broker answering) and the loop is live; otherwise 503 with a
  short JSON reason.
- `/metrics`: the registry in the exposition format the scraper asks for (text or OpenMetrics).

Nothing here logs: request lines carry no patient data, but one log line per scrape and probe
would drown the event log, and the server must never write to stderr behind structlog's back.

Bounded (issue 15, item 6: 2,000 idle keep-alive connections once took 2,005 threads and pushed
`/healthz` past its probe timeout). Each connection has a thread while it is open, so:

- a connection waiting for a request (new, or idle between keep-alive requests) is closed after
  `idle_timeout` seconds without a byte (a socket timeout, so also a request sent too slowly);
- at most `max_connections` handler threads are alive; a new connection beyond that closes the
  connection that has waited longest for a request, else, when every slot is answering, the
  one open longest if open for more than `_OPEN_GRACE_S` (a probe is answered in milliseconds
  and never open that long), never a younger one; the newcomer's thread
  starts only once the closed connection's thread has ended (a slot is free when its thread is
  gone, not when its socket is: an evicted thread still runs until the scheduler lets it read
  the EOF, which under CPU load took long enough for 14 of them to outlive their slots). A probe
  sends its request as soon as it connects and is answered in milliseconds, so neither idle
  clients nor busy ones can crowd it out: while every slot is younger than the grace the
  accept loop waits for the oldest to pass it (at most the grace, since nothing is admitted
  meanwhile); at worst it refuses a new connection when an evicted thread has not ended in
  `_EVICT_JOIN_S`. Clients that pipeline hundreds of requests (and read none of the answers)
  once held every slot "answering", never evicted: 34 of them made every /healthz probe fail,
  so Kubernetes would have restarted a healthy pod (security audit). A response whose write
  (headers, then body: each a socket write) waits `_WRITE_TIMEOUT_S` also drops its connection
  (a client that does not read).

prometheus_client's own `start_http_server` (a ThreadingWSGIServer) has neither bound; its
WSGI handler closes after one response but a silent connection holds its thread as well.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

DEFAULT_STALL_AFTER_S = 60.0
# Prometheus scrapes every 15-60 s and reconnects when its keep-alive connection was closed;
# kubelet probes open a connection per probe. 10 s is far above any request's own needs.
DEFAULT_IDLE_TIMEOUT_S = 10.0
# One scraper, a few probes, an operator's curl: 32 connections leave room for all of them.
DEFAULT_MAX_CONNECTIONS = 32
# How long the accept loop waits for an evicted connection's thread to end (it was woken by the
# shutdown of its socket, so it ends as soon as it is scheduled) before refusing the newcomer.
_EVICT_JOIN_S = 2.0
# How long a connection whose request is being answered is kept from a newcomer when every
# slot answers: a probe or a scrape is answered in milliseconds.
_OPEN_GRACE_S = 0.5
_EVICT_POLL_S = 0.05
# The longest a response may take to be written (the socket timeout while answering): a slot
# held by a client that does not read frees itself even when no newcomer asks for it.
_WRITE_TIMEOUT_S = 2.0
_JSON = "application/json"


class Health:
    """Liveness and readiness state shared between the service loop and the HTTP server.

    `beat()` is called once per loop iteration; `set_ready()` when the group membership,
    assignment or history restore changes. Reads and writes are single attribute stores of
    immutable values, guarded by a lock so a reader sees `ready` and `reason` together.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        stall_after: float = DEFAULT_STALL_AFTER_S,
    ) -> None:
        """Start live (the constructor counts as a beat) and not ready."""
        if stall_after <= 0:
            raise ValueError("stall_after must be positive")
        self._clock = clock
        self.stall_after = float(stall_after)
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._ready = False
        self._reason = "starting"

    def beat(self) -> None:
        """Record that the poll loop made progress (one iteration, even an empty poll)."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Mark the service ready or not; `reason` (no patient data) explains a not-ready state."""
        with self._lock:
            self._ready = bool(ready)
            self._reason = "" if ready else (reason or "not ready")

    @property
    def ready(self) -> bool:
        """Whether the service said it is ready (group joined, assigned, history restored)."""
        with self._lock:
            return self._ready

    def seconds_since_beat(self) -> float:
        """Seconds since the last `beat()` (or since construction)."""
        with self._lock:
            last = self._last_beat
        return max(0.0, self._clock() - last)

    def is_live(self) -> bool:
        """Whether the loop beat within `stall_after` seconds."""
        return self.seconds_since_beat() < self.stall_after

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(live, JSON body) for `/healthz`."""
        since = self.seconds_since_beat()
        live = since < self.stall_after
        body: dict[str, Any] = {
            "status": "ok" if live else "stalled",
            "seconds_since_beat": round(since, 3),
            "stall_after_seconds": self.stall_after,
        }
        if not live:
            body["reason"] = f"poll loop has not made progress for {since:.0f}s"
        return live, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON body) for `/readyz`: ready only when also live."""
        with self._lock:
            ready, reason = self._ready, self._reason
        live, _ = self.liveness()
        if ready and not live:
            ready, reason = False, "poll loop stalled"
        body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
        if not ready:
            body["reason"] = reason
        return ready, body


class _Handler(BaseHTTPRequestHandler):
    """Routes GET/HEAD requests to the three endpoints."""

    server: HealthHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "her2-consumer"
    sys_version = ""

    def setup(self) -> None:
        """Apply the idle timeout to the socket (every read waits at most that long)."""
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)

    def handle_one_request(self) -> None:
        """Mark the connection waiting (evictable) until its request line and headers are in."""
        self.server.connection_waiting(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        """Read the headers; from here until the next request the connection is answering."""
        parsed = super().parse_request()
        self.server.connection_answering(self.connection)
        return parsed

    def do_GET(self) -> None:
        """Serve one endpoint (answers carry Content-Length, so keep-alive works)."""
        self._serve(head=False)

    def do_HEAD(self) -> None:
        """Like GET without the body (some load balancers probe with HEAD)."""
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(HTTPStatus.OK, encoder(self.server.registry), content_type, head=head)
        elif path == "/healthz":
            live, body = self.server.health.liveness()
            self._json(HTTPStatus.OK if live else HTTPStatus.SERVICE_UNAVAILABLE, body, head)
        elif path == "/readyz":
            ready, body = self.server.health.readiness()
            self._json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, head)
        else:
            body = {"error": "not found", "endpoints": ["/metrics", "/healthz", "/readyz"]}
            self._json(HTTPStatus.NOT_FOUND, body, head)

    def _json(self, status: HTTPStatus, body: dict[str, Any], head: bool) -> None:
        self._reply(status, json.dumps(body).encode() + b"\n", _JSON, head=head)

    def _reply(self, status: HTTPStatus, payload: bytes, content_type: str, *, head: bool) -> None:
        # written within _WRITE_TIMEOUT_S or the connection is dropped (a client that does not
        # read what it asked for frees its slot), then back to the idle timeout
        self.connection.settimeout(_WRITE_TIMEOUT_S)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(payload)
        finally:
            self.connection.settimeout(self.server.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request line that BaseHTTPRequestHandler writes to stderr."""


class HealthHTTPServer(ThreadingHTTPServer):
    """The server returned by `start_http_server`; `shutdown()` stops it and frees the port.

    One thread per open connection, at most `max_connections` of them alive (see the module doc).
    """

    daemon_threads = True  # a hung scrape never blocks interpreter exit
    request_queue_size = 128  # listen backlog: a burst of connections still reaches accept()

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        health: Health,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """Bind the socket (port 0 picks a free one; see `server_port`)."""
        if idle_timeout <= 0 or max_connections < 1:
            raise ValueError("idle_timeout must be positive and max_connections at least 1")
        super().__init__(address, _Handler)
        self.registry = registry
        self.health = health
        self.idle_timeout = float(idle_timeout)
        self.max_connections = int(max_connections)
        self._lock = threading.Lock()
        # open connections -> (monotonic time it started waiting for a request, None while one
        # is being answered; monotonic time it was admitted); insertion order is not relied on
        self._open: dict[socket.socket, tuple[float | None, float]] = {}
        # every connection admitted -> its handler thread, until that thread is seen ended; only
        # the accept loop adds and removes entries, so it needs no lock
        self._handlers: dict[socket.socket, threading.Thread] = {}
        self._thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """Connections that hold a handler thread now."""
        with self._lock:
            return len(self._open)

    def connection_waiting(self, connection: socket.socket) -> None:
        """`connection` now waits for a request (it may be evicted).

        A new connection has waited since it was accepted, not since its thread first ran:
        under CPU load a thread may start after later ones, and the oldest must go first.
        """
        with self._lock:
            if connection in self._open and self._open[connection][0] is None:
                self._open[connection] = (time.monotonic(), self._open[connection][1])

    def connection_answering(self, connection: socket.socket) -> None:
        """`connection` has a request being answered (it is not evicted)."""
        with self._lock:
            if connection in self._open:
                self._open[connection] = (None, self._open[connection][1])

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection once a handler slot is free (its thread ended), then thread it."""
        self._handlers = {c: t for c, t in self._handlers.items() if t.is_alive()}
        if len(self._handlers) >= self.max_connections:
            victim = self._evict()
            # every slot is younger than the grace: the oldest passes it within the grace, as
            # nothing is admitted meanwhile (this is the accept loop)
            deadline = time.monotonic() + _OPEN_GRACE_S
            while victim is None and time.monotonic() < deadline:
                time.sleep(_EVICT_POLL_S)
                victim = self._evict()
            # outside the lock: the victim's thread takes it to forget its connection
            if victim is None or not _ended(self._handlers[victim], _EVICT_JOIN_S):
                self.shutdown_request(request)
                return
            del self._handlers[victim]
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"her2-http-{self.server_port}-handler",
            daemon=self.daemon_threads,
        )
        now = time.monotonic()
        with self._lock:
            self._open[request] = (now, now)
        self._handlers[request] = thread
        thread.start()

    def _evict(self) -> socket.socket | None:
        """The connection whose thread's end frees a slot (closed here), in this order: one
        already ending; one waiting for its next request (the longest waiting first); one new
        and yet to send its first request, but never the newest of those; one being answered
        for more than _OPEN_GRACE_S (open longest first: a client that pipelines, or does not
        read); the newest new one. None while every slot is answering a fresh request.
        The newest new connection goes last: a probe admitted while pipelining clients held
        the other slots was evicted by the next newcomer before its thread read it (review: 9
        of 20 probes failed); and a scrape being answered goes after silent connections
        (review: it lost its answer to an idle newcomer)."""
        with self._lock:
            for connection in self._handlers:
                if connection not in self._open:  # ending on its own, or evicted earlier
                    return connection
            now = time.monotonic()
            silent = [
                (since, c, since == at)
                for c, (since, at) in self._open.items()
                if since is not None
            ]
            idle = [(since, c) for since, c, new in silent if not new]  # served, now waiting
            new = sorted(((since, c) for since, c, is_new in silent if is_new), key=_first)
            cutoff = now - _OPEN_GRACE_S  # answered past the grace: pipelining, or not reading
            late = [
                (at, c) for c, (since, at) in self._open.items() if since is None and at < cutoff
            ]
            candidates = idle or new[:-1] or late or new
            if not candidates:  # every slot is answering a fresh request: milliseconds
                return None
            _, oldest = min(candidates, key=_first)
            del self._open[oldest]  # its thread ends on the EOF (or the failed write) below
        _close_read(oldest)
        return oldest

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def start(self) -> HealthHTTPServer:
        """Serve in a daemon thread and return self."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"her2-http-{self.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and every open connection, and join the
        serving thread."""
        if self._thread is not None:
            super().shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            _close_read(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Drop a failed connection quietly (the default prints a traceback to stderr)."""


def _first(pair: tuple[float, socket.socket]) -> float:
    """The time of a (time, connection) pair: connections themselves do not compare."""
    return pair[0]


def _ended(thread: threading.Thread, timeout: float) -> bool:
    """Whether `thread` ended within `timeout` seconds."""
    thread.join(timeout)
    return not thread.is_alive()


def _close_read(connection: socket.socket) -> None:
    """Wake the handler thread blocked reading `connection` (it sees EOF, ends and closes it)."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def start_http_server(
    port: int,
    registry: CollectorRegistry,
    health: Health,
    host: str = "0.0.0.0",  # noqa: S104
    *,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> HealthHTTPServer:
    """Start serving `/metrics`, `/healthz` and `/readyz` on `host:port` in a daemon thread."""
    server = HealthHTTPServer(
        (host, port), registry, health, idle_timeout=idle_timeout, max_connections=max_connections
    )
    return server.start()
