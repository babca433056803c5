"""Unit tests of consumer.ops.http: the Health state and the /metrics, /healthz, /readyz server."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from consumer.app import stall_limit_s
from consumer.config import Settings
from consumer.ops import http as http_module
from consumer.ops.http import Health, HealthHTTPServer, start_http_server
from consumer.ops.metrics import Metrics


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    return Health(clock=clock, stall_after=60.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Metrics(registry, ruleset_version="test-1")
    return registry


@pytest.fixture
def server(registry: CollectorRegistry, health: Health) -> Iterator[HealthHTTPServer]:
    server = start_http_server(0, registry, health, host="127.0.0.1")
    try:
        yield server
    finally:
        server.shutdown()


def get(
    server: HealthHTTPServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class TestHealth:
    """Liveness follows beats; readiness follows set_ready and liveness."""

    def test_starts_live_and_not_ready(self, health: Health) -> None:
        assert health.is_live()
        assert not health.ready
        ready, body = health.readiness()
        assert (ready, body) == (False, {"status": "not ready", "reason": "starting"})

    @pytest.mark.parametrize(
        ("elapsed", "live"),
        [
            pytest.param(0.0, True, id="just-beat"),
            pytest.param(59.9, True, id="just-under"),
            pytest.param(60.0, False, id="at-threshold"),
            pytest.param(3600.0, False, id="long-stall"),
        ],
    )
    def test_liveness_after_elapsed_seconds(
        self, health: Health, clock: FakeClock, elapsed: float, live: bool
    ) -> None:
        health.beat()
        clock.now += elapsed
        assert health.is_live() is live
        assert health.liveness()[0] is live

    def test_beat_revives_a_stalled_loop(self, health: Health, clock: FakeClock) -> None:
        clock.now += 120
        assert not health.is_live()
        health.beat()
        assert health.is_live()
        assert health.seconds_since_beat() == 0.0

    def test_stall_after_is_configurable(self, clock: FakeClock) -> None:
        health = Health(clock=clock, stall_after=5)
        clock.now += 5
        live, body = health.liveness()
        assert not live
        assert body["status"] == "stalled"
        assert body["stall_after_seconds"] == 5.0
        assert "5s" in body["reason"]

    def test_rejects_non_positive_stall_after(self) -> None:
        with pytest.raises(ValueError, match="stall_after"):
            Health(stall_after=0)

    @pytest.mark.parametrize(
        ("ready", "reason", "expected"),
        [
            pytest.param(True, "", {"status": "ready"}, id="ready"),
            pytest.param(True, "ignored", {"status": "ready"}, id="ready-reason-ignored"),
            pytest.param(
                False,
                "restoring history",
                {"status": "not ready", "reason": "restoring history"},
                id="restoring",
            ),
            pytest.param(False, "", {"status": "not ready", "reason": "not ready"}, id="no-reason"),
        ],
    )
    def test_set_ready(
        self, health: Health, ready: bool, reason: str, expected: dict[str, str]
    ) -> None:
        health.set_ready(ready, reason)
        assert health.ready is ready
        assert health.readiness() == (ready, expected)

    def test_a_stalled_loop_is_not_ready(self, health: Health, clock: FakeClock) -> None:
        health.set_ready(True)
        clock.now += 61
        assert health.ready  # what the service said
        assert health.readiness() == (False, {"status": "not ready", "reason": "poll loop stalled"})

    def test_real_clock_default(self) -> None:
        health = Health()
        health.beat()
        assert health.is_live()
        assert health.stall_after == 60.0


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        pytest.param({}, 155.0, id="default-delivery-120s"),
        pytest.param(
            {"HER2_DELIVERY_TIMEOUT_MS": "10000", "HER2_REQUEST_TIMEOUT_MS": "20000"},
            60.0,
            id="floor-60s",
        ),
        pytest.param(
            {"HER2_REQUEST_TIMEOUT_MS": "300000", "HER2_MAX_POLL_INTERVAL_MS": "400000"},
            335.0,
            id="request-timeout-longer",
        ),
        pytest.param({"HER2_DELIVERY_TIMEOUT_MS": "600000"}, 635.0, id="delivery-longer"),
        pytest.param(
            {"HER2_PROCESSING_GUARANTEE": "exactly_once", "HER2_TRANSACTION_TIMEOUT_MS": "600000"},
            635.0,
            id="transaction-timeout-longer",
        ),
        pytest.param({"HER2_TRANSACTION_TIMEOUT_MS": "600000"}, 155.0, id="no-transaction"),
    ],
)
def test_the_stall_limit_outlasts_the_longest_single_wait(
    environ: dict[str, str], limit: float
) -> None:
    """A lag refresh waits for the broker up to the request timeout (during an outage, every
    HER2_LAG_REFRESH_SECONDS); a limit below that restarted pods that were only waiting."""
    assert stall_limit_s(Settings.from_env(environ)) == limit


class TestServer:
    """The three endpoints over a real socket on a free loopback port."""

    def test_port_zero_picks_a_free_port(self, server: HealthHTTPServer) -> None:
        assert server.server_port > 0

    def test_metrics_exposes_the_injected_registry(
        self, server: HealthHTTPServer, registry: CollectorRegistry
    ) -> None:
        Counter("her2_test_probe", "probe", registry=registry).inc(3)
        status, headers, body = get(server, "/metrics")
        assert status == 200
        assert headers["content-type"] == choose_encoder("")[1]  # prometheus_client's type
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "her2_test_probe_total 3.0" in text
        assert 'her2_consumer_build_info{ruleset_version="test-1"' in text
        assert "# TYPE her2_consumer_processing_seconds histogram" in text

    def test_metrics_speaks_openmetrics_when_asked(self, server: HealthHTTPServer) -> None:
        accept = "application/openmetrics-text; version=1.0.0"
        status, headers, body = get(server, "/metrics", headers={"Accept": accept})
        assert status == 200
        assert headers["content-type"] == choose_encoder(accept)[1]
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")

    def test_metrics_ignores_query_string(self, server: HealthHTTPServer) -> None:
        assert get(server, "/metrics?name[]=x")[0] == 200

    def test_healthz_200_while_beating(self, server: HealthHTTPServer, health: Health) -> None:
        health.beat()
        status, headers, body = get(server, "/healthz")
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["status"] == "ok"

    def test_healthz_503_after_stall_and_200_again(
        self, server: HealthHTTPServer, health: Health, clock: FakeClock
    ) -> None:
        clock.now += 61
        status, _, body = get(server, "/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "stalled"
        health.beat()
        assert get(server, "/healthz")[0] == 200

    def test_healthz_ignores_readiness(self, server: HealthHTTPServer, health: Health) -> None:
        # A broker outage makes the service not ready; liveness must not follow, or every
        # replica restarts at once.
        health.set_ready(False, "broker unreachable")
        assert get(server, "/healthz")[0] == 200

    def test_readyz_follows_set_ready(self, server: HealthHTTPServer, health: Health) -> None:
        status, _, body = get(server, "/readyz")
        assert (status, json.loads(body)) == (503, {"status": "not ready", "reason": "starting"})
        health.set_ready(True)
        status, _, body = get(server, "/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        health.set_ready(False, "partitions revoked")
        status, _, body = get(server, "/readyz")
        assert (status, json.loads(body)["reason"]) == (503, "partitions revoked")

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            pytest.param("/", 404, id="root"),
            pytest.param("/metricsx", 404, id="prefix"),
            pytest.param("/healthz/", 200, id="trailing-slash"),
        ],
    )
    def test_routing(
        self, server: HealthHTTPServer, health: Health, path: str, status: int
    ) -> None:
        assert get(server, path)[0] == status

    def test_head_has_headers_and_no_body(self, server: HealthHTTPServer) -> None:
        status, headers, body = get(server, "/metrics", method="HEAD")
        assert status == 200
        assert int(headers["content-length"]) > 0
        assert body == b""

    def test_post_is_not_allowed(self, server: HealthHTTPServer) -> None:
        assert get(server, "/metrics", method="POST")[0] == 501

    def test_keep_alive_serves_several_requests(self, server: HealthHTTPServer) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
        try:
            for path in ("/metrics", "/healthz", "/readyz", "/metrics"):
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                assert response.status in {200, 503}
        finally:
            conn.close()

    def test_concurrent_requests(self, server: HealthHTTPServer) -> None:
        results: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            status = get(server, "/metrics")[0]
            with lock:
                results.append(status)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [200] * 8

    def test_no_request_logging(
        self, server: HealthHTTPServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        get(server, "/healthz")
        get(server, "/nope")
        out, err = capfd.readouterr()
        assert (out, err) == ("", "")

    def test_a_broken_client_does_not_kill_the_server(
        self, server: HealthHTTPServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
            sock.recv(1024)
        assert get(server, "/healthz")[0] == 200
        assert capfd.readouterr().err == ""


class TestShutdown:
    """shutdown() stops serving and frees the port."""

    def test_shutdown_frees_the_port(self, registry: CollectorRegistry, health: Health) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1")
        port = server.server_port
        assert get(server, "/healthz")[0] == 200
        server.shutdown()
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=1),
        ):
            pass
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # free again

    def test_shutdown_is_idempotent(self, registry: CollectorRegistry, health: Health) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1")
        server.shutdown()
        server.shutdown()

    def test_serving_thread_is_a_daemon(self, registry: CollectorRegistry, health: Health) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1")
        try:
            names: dict[str, Any] = {t.name: t for t in threading.enumerate()}
            thread = names[f"her2-http-{server.server_port}"]
            assert thread.daemon
        finally:
            server.shutdown()


def _big_registry() -> CollectorRegistry:
    """A registry whose /metrics body is some 20 KB: answers that fill a socket's buffers."""
    registry = CollectorRegistry()
    counter = Counter("big", "a /metrics body of some 20 KB", ["series"], registry=registry)
    for i in range(400):
        counter.labels(series=f"s{i:04d}").inc()
    return registry


def _handler_threads(server: HealthHTTPServer) -> int:
    """Live handler threads of `server` (it names them), whatever else the process runs."""
    name = f"her2-http-{server.server_port}-handler"
    return sum(1 for thread in threading.enumerate() if thread.name == name)


def _closed_by_server(sock: socket.socket, timeout: float = 2.0) -> bool:
    """Whether the server closed `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _timed_healthz(port: int, timeout: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


class TestBounds:
    """Issue 15, item 6: idle connections can neither exhaust threads nor hold up /healthz."""

    IDLE = 500  # bounded, loopback only: enough to be 15 x the cap

    def test_many_idle_connections_keep_threads_bounded_and_healthz_fast(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        cap = 32
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=60.0, max_connections=cap
        )
        idle: list[socket.socket] = []
        try:
            peak = 0
            for _ in range(self.IDLE):  # connect and say nothing, as the fault campaign did
                idle.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
                peak = max(peak, _handler_threads(server))
            # Until the server has admitted every connection: each admission beyond the cap
            # closes the oldest, so all older ones closed means all 500 were seen (a socket
            # still in the listen backlog looks open too, so the newest tell nothing alone).
            older = idle[:-cap]
            deadline = time.monotonic() + 10
            while older and time.monotonic() < deadline:
                peak = max(peak, _handler_threads(server))
                older = [s for s in older if not _closed_by_server(s, 0.001)]
            peak = max(peak, _handler_threads(server))
            assert peak <= cap, f"{peak} handler threads for {cap} slots"
            assert not older, f"{len(older)} older connections still open"  # they made room
            assert not any(_closed_by_server(s, 0.001) for s in idle[-cap:])  # the newest stay
            assert _handler_threads(server) == server.open_connections == cap
            status, seconds = _timed_healthz(server.server_port)
            assert status == 200
            assert seconds < 1.0, f"/healthz took {seconds:.2f}s behind {self.IDLE} idle sockets"
        finally:
            for sock in idle:
                sock.close()
            server.shutdown()

    def test_clients_that_pipeline_and_never_read_cannot_hold_every_slot(
        self, health: Health, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Security audit: clients that pipeline hundreds of /metrics requests and read none of
        the answers kept every handler blocked writing, "answering", never evicted; with 34 of
        them (32 slots) every /healthz probe failed, so Kubernetes would restart a healthy pod.
        A connection answered for longer than the grace now makes room for a newcomer."""
        # the write timeout frees such slots too, later: kept out of the way, so that only the
        # eviction can let the probes in (review: with it, only the first probe failed)
        monkeypatch.setattr(http_module, "_WRITE_TIMEOUT_S", 60.0)
        cap = 4
        registry = _big_registry()
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=30.0, max_connections=cap
        )
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 300
        stuck: list[socket.socket] = []
        try:
            for _ in range(cap * 2):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                sock.connect(("127.0.0.1", server.server_port))
                sock.sendall(request)  # read nothing
                stuck.append(sock)
            time.sleep(3.0)  # every slot blocked writing since past the grace
            probes = []
            for _ in range(5):
                try:
                    probes.append(_timed_healthz(server.server_port, timeout=3.0))
                except OSError as exc:  # refused, reset, or no answer within kubelet's 3 s
                    probes.append((type(exc).__name__, 3.0))
                time.sleep(0.2)
            assert [status for status, _ in probes] == [200] * 5, probes
            assert _handler_threads(server) <= cap
        finally:
            for sock in stuck:
                sock.close()
            server.shutdown()

    def test_a_probe_admitted_among_pipelining_clients_is_not_evicted_unanswered(
        self, health: Health, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Review: a probe admitted while pipelining clients held the other slots counted as
        waiting until its thread read its request, so the next newcomer evicted it first (9 of
        20 probes failed). A connection not yet served is kept for the grace."""
        monkeypatch.setattr(http_module, "_WRITE_TIMEOUT_S", 60.0)
        registry = _big_registry()
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 300
        failed = []
        for trial in range(8):  # each trial failed about half the time before
            server = start_http_server(
                0, registry, health, host="127.0.0.1", idle_timeout=30.0, max_connections=4
            )
            port = server.server_port
            clients: list[socket.socket] = []

            def pipeline(port: int = port, clients: list[socket.socket] = clients) -> None:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                sock.connect(("127.0.0.1", port))
                sock.sendall(request)  # read nothing
                clients.append(sock)

            try:
                for _ in range(4):
                    pipeline()
                time.sleep(0.8)  # every slot answering, past the grace
                with socket.create_connection(("127.0.0.1", port), timeout=3) as probe:
                    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    for _ in range(3):  # the pipelining clients reconnect at once
                        pipeline()
                    try:
                        answer = probe.recv(100)
                    except OSError as exc:
                        answer = type(exc).__name__.encode()
                if not answer.startswith(b"HTTP/1.1 200"):
                    failed.append((trial, answer[:40]))
            finally:
                for sock in clients:
                    sock.close()
                server.shutdown()
        assert failed == []

    def test_a_slow_scrape_keeps_its_answer_when_silent_connections_crowd_in(
        self, health: Health
    ) -> None:
        """Review: a scrape whose collection took a second lost its answer to an idle
        newcomer (open longest, it went first); silent connections go before it."""

        class Slow:
            def collect(self) -> Iterator[Any]:
                time.sleep(1.0)
                yield from ()

        registry = CollectorRegistry()
        registry.register(Slow())  # type: ignore[arg-type]
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=30.0, max_connections=3
        )
        port = server.server_port
        result: dict[str, Any] = {}

        def scrape() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/metrics")
                result["status"] = conn.getresponse().status
            except OSError as exc:
                result["status"] = type(exc).__name__
            finally:
                conn.close()

        silent: list[socket.socket] = []
        try:
            scraper = threading.Thread(target=scrape)
            scraper.start()
            time.sleep(0.6)  # the scrape is being answered, past the grace
            for _ in range(3):  # two fill the slots, the third is the newcomer
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                time.sleep(0.05)
            scraper.join(10)
            assert result.get("status") == 200, result
        finally:
            for sock in silent:
                sock.close()
            server.shutdown()

    def test_a_client_that_does_not_read_its_answers_frees_its_slot(self, health: Health) -> None:
        """Without a newcomer to evict it, a connection whose answers go unread is dropped once
        a write has waited the write timeout (2 s), long before the idle timeout."""
        registry = _big_registry()
        server = start_http_server(0, registry, health, host="127.0.0.1", idle_timeout=60.0)
        try:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                sock.connect(("127.0.0.1", server.server_port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 300)  # read nothing
                wait_until(lambda: server.open_connections == 1)
                began = time.monotonic()
                wait_until(lambda: server.open_connections == 0, timeout=20.0)
                assert time.monotonic() - began < 15.0
        finally:
            server.shutdown()

    def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1", idle_timeout=0.3)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
            conn.request("GET", "/healthz")  # HTTP/1.1: the server keeps the connection open
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert conn.sock is not None
            assert _closed_by_server(conn.sock, 3.0)
            wait_until(lambda: server.open_connections == 0)
            conn.close()
        finally:
            server.shutdown()

    def test_a_silent_connection_is_closed_after_the_timeout(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1", idle_timeout=0.3)
        try:
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
                started = time.monotonic()
                assert _closed_by_server(sock, 3.0)
                assert time.monotonic() - started < 2.0
        finally:
            server.shutdown()

    def test_a_slow_request_is_evicted_for_a_new_connection(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        # slowloris: the request line and one header, then nothing; the slot is still "waiting"
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=60.0, max_connections=1
        )
        try:
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as slow:
                slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                wait_until(lambda: server.open_connections == 1)
                status, seconds = _timed_healthz(server.server_port)
                assert (status, seconds < 1.0) == (200, True)
                assert _closed_by_server(slow, 2.0)
        finally:
            server.shutdown()

    def test_the_longest_waiting_connection_is_the_one_closed(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=60.0, max_connections=2
        )
        try:
            port = server.server_port
            with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
                wait_until(lambda: server.open_connections == 1)
                with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
                    wait_until(lambda: server.open_connections == 2)
                    with socket.create_connection(("127.0.0.1", port), timeout=5):
                        assert _closed_by_server(first, 2.0)
                        assert not _closed_by_server(second, 0.3)
        finally:
            server.shutdown()

    def test_a_connection_has_waited_since_its_accept_not_since_its_thread_ran(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        # under CPU load the first connection's thread may run after the second's; the first has
        # still waited longest and is the one a third connection evicts
        server = start_http_server(
            0, registry, health, host="127.0.0.1", idle_timeout=60.0, max_connections=2
        )
        serve, mark_waiting = server.process_request_thread, server.connection_waiting
        started: list[socket.socket] = []
        waiting: list[socket.socket] = []
        release = threading.Event()

        def late_first(request: socket.socket, address: Any) -> None:
            started.append(request)
            if len(started) == 1:
                release.wait(5)
            serve(request, address)

        def recorded(connection: socket.socket) -> None:
            mark_waiting(connection)
            waiting.append(connection)

        server.process_request_thread = late_first  # type: ignore[method-assign]
        server.connection_waiting = recorded  # type: ignore[method-assign]
        try:
            port = server.server_port
            with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
                wait_until(lambda: len(started) == 1)
                with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
                    wait_until(lambda: len(waiting) == 1)  # the second's thread ran first
                    release.set()
                    wait_until(lambda: len(waiting) == 2)
                    with socket.create_connection(("127.0.0.1", port), timeout=5):
                        assert _closed_by_server(first, 2.0)
                        assert not _closed_by_server(second, 0.3)
        finally:
            release.set()
            server.shutdown()

    def test_shutdown_closes_open_connections(
        self, registry: CollectorRegistry, health: Health
    ) -> None:
        server = start_http_server(0, registry, health, host="127.0.0.1", idle_timeout=60.0)
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            wait_until(lambda: server.open_connections == 1)
            server.shutdown()
            assert _closed_by_server(sock, 2.0)

    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"idle_timeout": 0}, id="zero-timeout"),
            pytest.param({"max_connections": 0}, id="no-connections"),
        ],
    )
    def test_rejects_nonsense_bounds(
        self, registry: CollectorRegistry, health: Health, kwargs: dict[str, Any]
    ) -> None:
        with pytest.raises(ValueError, match="idle_timeout"):
            HealthHTTPServer(("127.0.0.1", 0), registry, health, **kwargs)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
