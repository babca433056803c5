"""`her2-consumer run`, the composition root: environment -> logs -> rules -> metrics -> HTTP ->
Service; signals; exit codes."""

from __future__ import annotations

import argparse
import gc
import os
import signal
from types import FrameType

from consumer.clinical.pipeline import Pipeline
from consumer.config import Settings
from consumer.errors import ConfigError, RuleSetError
from consumer.ops import events
from consumer.ops.http import Health, start_http_server
from consumer.ops.logs import configure_logging, get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.exits import EXIT_CONFIG, print_error
from consumer.runtime.service import Service

log = get_logger("her2.service")


def stall_limit_s(settings: Settings) -> float:
    """How long /healthz lets the loop go without turning: the longest wait it makes in one
    call, with room. A send attempt waits up to the delivery timeout; a single broker request
    (the lag refresh's end offsets, a commit, a committed-offset fetch) up to the request
    timeout; under exactly-once a transaction's offsets and its commit each up to the
    transaction timeout. Anything shorter would have the liveness probe restart a pod that is
    only waiting for the broker (deploy/k8s: an outage makes pods unready, not restarted)."""
    t = settings.tuning
    waits = [t.delivery_timeout_ms, t.request_timeout_ms]
    if settings.exactly_once:
        waits.append(t.transaction_timeout_ms)
    return max(60.0, max(waits) / 1000 + 35.0)


def main(args: argparse.Namespace | None = None) -> int:
    """`her2-consumer run`: settings from the environment, metrics over HTTP, the loop."""
    from consumer.clinical.rules import load_ruleset  # noqa: PLC0415

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        configure_logging("INFO")
        log.error(events.CONFIG_ERROR, error_type=type(exc).__name__)
        print_error(f"configuration error: {exc}")
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        ruleset = load_ruleset()
    except RuleSetError as exc:
        log.error(events.RULESET_INVALID, error_type=type(exc).__name__)
        print_error(f"rule set invalid: {exc}")
        return EXIT_CONFIG
    tune_gc(settings.tuning.gc_gen0_threshold)
    metrics = Metrics.on_new_registry(ruleset.version)
    health = Health(stall_after=stall_limit_s(settings))
    service = Service(settings, Pipeline(ruleset), metrics, health=health)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(events.SIGNAL_RECEIVED, signal=signal.Signals(signum).name)
        service.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            http_server = start_http_server(settings.http_port, metrics.registry, health)
        except OSError as exc:
            log.error(
                events.HTTP_START_FAILED,
                port=settings.http_port,
                error_type=type(exc).__name__,
            )
            print_error(f"cannot serve metrics on HER2_HTTP_PORT={settings.http_port}")
            return EXIT_CONFIG
        log.info(events.HTTP_SERVING, port=http_server.server_port)
        try:
            return service.run()
        finally:
            http_server.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def tune_gc(gen0_threshold: int) -> None:
    """Young collections every `gen0_threshold` allocations instead of Python's 700 (0: leave
    the interpreter's default). Each event allocates thousands of short-lived objects (decoded
    records, facts, alert dicts), so at 700 the collector runs several times per event and
    walks the young objects each time: about a fifth of the service's CPU in
    bench/runtime_overhead.py. The older generations keep their thresholds, so cycles are still
    collected and memory stays flat (bench/kafka_bench.py --memory-events)."""
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
