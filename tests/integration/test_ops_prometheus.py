"""A real Prometheus scrapes the running consumer: series and values, rules, dashboard queries.

The consumer Service runs in-process with consumer.ops.http serving /metrics, /healthz and /readyz
on a free loopback port, against the session's broker. A Prometheus server (Debian's `prometheus`
package) on another free loopback port scrapes it every second with deploy/prometheus/alerts.yaml
loaded. The test then checks, through Prometheus' HTTP API, that the key series carry the right
values, that every alert rule evaluates without error, and that every PromQL expression of the
Grafana dashboard and of the alert rules runs.

Skipped (with the reason) only when the prometheus/promtool binaries are not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Env, make_event, pipeline, produce, produce_events
from prometheus_client import CollectorRegistry

from consumer.ops.http import Health, HealthHTTPServer, start_http_server
from consumer.ops.metrics import Metrics
from consumer.service import Service

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "her2-consumer.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
JOB = "her2-consumer"
PARTITIONS = 3
EVENTS = 24
GARBAGE = 2
DEADLINE_S = 60.0

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs the prometheus and promtool binaries (apt-get install prometheus)",
)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url`: (status, body), also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class PrometheusServer:
    """A prometheus process on 127.0.0.1 and a small client of its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer (fails otherwise)."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        answer = json.loads(body)
        assert status == 200, (path, params, answer)
        assert answer["status"] == "success", (path, params, answer)
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (or matrix/scalar as returned)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query returning at most one sample."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


@dataclass
class RunningConsumer:
    """The in-process service with its health state, metrics and HTTP server."""

    service: Service
    metrics: Metrics
    health: Health
    server: HealthHTTPServer
    thread: threading.Thread

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def consumer(env: Env, create_topics: Callable[..., list[str]]) -> Iterator[RunningConsumer]:
    """The consumer, running on a fresh input topic, with its HTTP server on a free port."""
    create_topics(env.input, partitions=PARTITIONS)
    p = pipeline()
    metrics = Metrics(CollectorRegistry(), p.ruleset.version)
    health = Health()
    server = start_http_server(0, metrics.registry, health, host="127.0.0.1")
    service = Service(env.settings(), p, metrics, health=health)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(service.run()), daemon=True)
    thread.start()
    try:
        yield RunningConsumer(service, metrics, health, server, thread)
    finally:
        service.stop()
        thread.join(30)
        server.shutdown()
    assert not thread.is_alive(), "the service did not stop"
    assert codes == [0], f"the service exited with {codes}"


@pytest.fixture
def prometheus(tmp_path: Path, consumer: RunningConsumer) -> Iterator[PrometheusServer]:
    """Prometheus scraping the consumer every second, with the project's alert rules."""
    assert PROMETHEUS is not None
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [consumer.target]}]},
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert PROMTOOL is not None
    check = subprocess.run(  # noqa: S603 - fixed argv
        [PROMTOOL, "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                return http_get(f"{server.url}/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, "prometheus to be ready", 30)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard query, Grafana variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    substitutions = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "$job": JOB}
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            found.append((panel["title"], expr))
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_scrapes_the_running_consumer(
    env: Env, consumer: RunningConsumer, prometheus: PrometheusServer
) -> None:
    events = [
        make_event(
            f"ops-e{i:03d}",
            f"ops-p{i % 7}",
            f"ops-a{i:03d}",
            minutes=i,
            site="DISTANT_METASTASIS",
            planned=["trastuzumab"],
        )
        for i in range(EVENTS)
    ]
    produce_events(env.bootstrap, env.input, events)
    produce(env.bootstrap, env.input, [(b"ops-garbage", b"{not avro at all}")] * GARBAGE)

    # The service's own view first (fast, precise), then Prometheus' view of the same numbers.
    wait_until(
        lambda: (
            consumer.sample("her2_consumer_events_total", outcome="processed") == EVENTS
            and consumer.sample("her2_consumer_events_total", outcome="dead_lettered") == GARBAGE
        ),
        "the service to process every event",
    )
    assert http_get(f"http://{consumer.target}/healthz")[0] == 200
    wait_until(lambda: http_get(f"http://{consumer.target}/readyz")[0] == 200, "/readyz 200")
    wait_until(
        lambda: (
            consumer.sample("her2_consumer_lag_records", topic=env.input, partition="0") == 0
            and len(list(consumer.metrics.lag.collect()[0].samples)) == PARTITIONS
        ),
        "lag gauges of every partition",
    )

    processed = f'sum(her2_consumer_events_total{{job="{JOB}", outcome="processed"}})'
    wait_until(
        lambda: prometheus.value(processed) == EVENTS,
        f"Prometheus to scrape {EVENTS} processed events",
    )

    assert prometheus.value(f'up{{job="{JOB}"}}') == 1
    assert (
        prometheus.value(f'sum(her2_consumer_events_total{{job="{JOB}", outcome="dead_lettered"}})')
        == GARBAGE
    )
    assert prometheus.value(f'sum(her2_consumer_dlq_records_total{{job="{JOB}"}})') == GARBAGE
    assert prometheus.value(f'sum(her2_consumer_classifications_total{{job="{JOB}"}})') == EVENTS
    assert prometheus.value(f'her2_consumer_processing_seconds_count{{job="{JOB}"}}') == (
        EVENTS + GARBAGE
    )
    published = sum(
        s.value for s in consumer.metrics.alerts.collect()[0].samples if s.name.endswith("_total")
    )
    assert published > 0  # metastatic HER2-low after chemotherapy raises alerts
    assert prometheus.value(f'sum(her2_consumer_alerts_total{{job="{JOB}"}})') == published
    assert prometheus.value(f'her2_consumer_assigned_partitions{{job="{JOB}"}}') == PARTITIONS
    lag = prometheus.query(f'her2_consumer_lag_records{{job="{JOB}", topic="{env.input}"}}')
    assert sorted(s["metric"]["partition"] for s in lag) == [str(p) for p in range(PARTITIONS)]
    assert all(float(s["value"][1]) == 0 for s in lag)
    progress = prometheus.query(
        f'time() - her2_consumer_last_progress_timestamp_seconds{{job="{JOB}"}}'
    )
    assert progress
    assert all(float(s["value"][1]) < 120 for s in progress)
    build = prometheus.query(f'her2_consumer_build_info{{job="{JOB}"}}')
    assert build
    assert build[0]["metric"]["ruleset_version"] == pipeline().ruleset.version
    wait_until(
        lambda: prometheus.value(f'her2_consumer_history_patients{{job="{JOB}"}}') == 7,
        "the history gauge (7 patients)",
    )

    # Every dashboard query and every alert expression runs without error; rate() needs two
    # scrapes, so wait for a throughput figure before judging emptiness.
    wait_until(
        lambda: bool(prometheus.query(f'sum(rate(her2_consumer_events_total{{job="{JOB}"}}[1m]))')),
        "two scrapes for rate()",
    )
    empty_dashboard = []
    for title, expr in dashboard_exprs():
        if not prometheus.query(expr):
            empty_dashboard.append(title)
        prometheus.api(
            "query_range", query=expr, start=str(time.time() - 60), end=str(time.time()), step="5"
        )
    # Panels that have data after a short run (the others need failures, rebalances or time).
    for title in (
        "Instances up",
        "Assigned partitions",
        "Total lag",
        "Throughput by outcome",
        "Lag per partition",
        "Processing latency",
        "Alerts by type",
        "Dead-lettered by reason",
        "History size",
        "Version",
    ):
        assert title not in empty_dashboard, f"dashboard panel {title!r} shows no data"
    for rule in alert_rules():
        prometheus.query(rule["expr"])  # raises on a PromQL error

    # The rules were loaded from deploy/prometheus/alerts.yaml and evaluate cleanly.
    def evaluated() -> bool:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return len(rules) == len(alert_rules()) and all(
            r.get("lastEvaluation", "").startswith("20") and r["health"] == "ok" for r in rules
        )

    wait_until(evaluated, "every alert rule to be evaluated with health ok", 30)
    firing = prometheus.api("alerts")["alerts"]
    assert not [a["labels"]["alertname"] for a in firing if a["state"] == "firing"]


def test_promtool_accepts_the_alert_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(  # noqa: S603 - fixed argv
        [PROMTOOL, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout
