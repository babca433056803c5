"""The service facade: build the runtime's parts, `run()` until `stop()` or a fatal error, map
our exceptions to exit codes, close every resource (an ExitStack) on the way out.

At-least-once (default): offsets are committed only after every output of the batch is
acknowledged (acks=all, idempotent producer); a failed output is re-sent up to
HER2_PUBLISH_RETRIES times, then the service stops WITHOUT committing and exits non-zero.
Exactly-once (HER2_PROCESSING_GUARANTEE=exactly_once): outputs and offsets in one Kafka
transaction; any failure aborts it and the service stops non-zero; a fenced producer stops
the service cleanly with EXIT_FENCED. (runtime/delivery.py)

History stores (HER2_HISTORY_STORE) are a cache of the changelog: a new store is restored at
every assignment (runtime/restore.py), and its file is deleted when the partition is revoked or
lost (runtime/partitions.py), a restore fails, or the service stops.

Test-only hook: HER2_TEST_CRASH_BEFORE_COMMIT=N kills the process with SIGKILL after the
outputs of the N-th non-empty batch are acknowledged and before its offsets are committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Final, Protocol

from consumer import __version__
from consumer.avro.outputs import Codecs
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.config import Settings
from consumer.errors import BrokerError, StopRequested, kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.delivery import delivery_for
from consumer.runtime.exits import EXIT_FAILURE, EXIT_OK, exit_code
from consumer.runtime.host import check_clock, claim_instance, open_state_dir
from consumer.runtime.instance import InstanceSlot
from consumer.runtime.kafka import Clients, Consumer
from consumer.runtime.kafka.clients import clients_for, consumer_config
from consumer.runtime.kafka.mapping import MappedClients
from consumer.runtime.kafka.preflight import connect_admin
from consumer.runtime.kafka.producer import ProducerHandle
from consumer.runtime.loop import Loop
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.processor import Processor
from consumer.runtime.restore import Restorer
from consumer.runtime.startup import (
    check_session_timeout,
    copartitioned,
    ensure_topics,
    input_topic_id,
    register_output_schemas,
)
from consumer.state.backends import DISK, StateDir

log = get_logger("her2.service")

# the consumer's close after a batch given up on a silent broker (StopRequested)
GAVE_UP_CLOSE_MS: Final = 1000


class HealthHook(Protocol):
    """What the service tells the health endpoints (consumer.ops.http.Health fits)."""

    def beat(self) -> None:
        """The loop made progress."""

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Readiness changed."""


class Service:
    """The consumer: `run()` until `stop()` (thread-safe) or a signal; returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        health: HealthHook | None = None,
        hostname: str | None = None,
        clients: Clients | None = None,
    ) -> None:
        """Build the service; nothing connects to Kafka before `run()`."""
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self._clock = clock
        self._health = health
        self._hostname = hostname or socket.gethostname()
        # the instance id when HER2_INSTANCE_ID is unset (client ids, transactional id): the
        # host name, or under exactly-once the id of the host slot run() claims
        self._default_id = self._hostname
        self._slot: InstanceSlot | None = None
        # kafka-python's errors of the consumers and the admin client become BrokerError here,
        # once for the group member, the changelog reader and start-up, real clients or fake
        self._clients: Clients = MappedClients(clients or clients_for(settings))
        self._stop_event = threading.Event()
        self._state_dir: StateDir | None = None  # disk stores' private directory (run() only)
        self.table = PartitionTable(settings.topics.input, metrics, self._set_ready)
        self.restorer = Restorer(
            self._clients,
            settings,
            lambda: self._default_id,
            metrics,
            lambda: self.stopping,
            clock,
            state_dir=lambda: self._state_dir,
            beat=self._beat,
        )
        self.loop: Loop | None = None
        self._producer: ProducerHandle | None = None
        self._clean = False
        self._gave_up = False  # the last batch was given up on a stop (StopRequested)
        self.started = threading.Event()  # set once the consumer subscribed (for tests, probes)

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return (thread-safe)."""
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stop_event.is_set()

    @property
    def instance_id(self) -> str | None:
        """HER2_INSTANCE_ID, else the id of the host slot claimed under exactly-once."""
        if self.settings.instance_id is not None:
            return self.settings.instance_id
        return self._slot.instance_id if self._slot is not None else None

    def assigned_partitions(self) -> list[int]:
        """Input partitions whose history is restored and which are being processed."""
        return sorted(tp.partition for tp in list(self.table.stores))  # read from other threads

    def run(self) -> int:
        """Run until stopped; return an exit code (EXIT_OK on a clean stop)."""
        code, committed = EXIT_FAILURE, False
        with contextlib.ExitStack() as resources:
            try:
                self._start(resources)
                if not self.stopping and self.loop is not None:
                    self.loop.run()
                code, committed = EXIT_OK, True
            except Exception as exc:
                code = exit_code(exc)  # EXIT_OK for a stop given up on a silent broker
                self._gave_up = isinstance(exc, StopRequested)
            finally:
                # the resources close in reverse order of opening: the consumer first (leaving
                # the group revokes its partitions, closing their stores), then the changelog
                # reader, the producer, the stores left, the state directory
                self._clean = committed
                self._set_ready(False, "stopping")
        batches = self.loop.batches if self.loop is not None else 0
        log.info(events.SHUTDOWN, state="stopped", committed=committed, batch=batches)
        return code

    # -- start-up -------------------------------------------------------------------------

    def _start(self, resources: contextlib.ExitStack) -> None:
        s = self.settings
        self._set_ready(False, "starting")
        registry = s.registry_client(on_error=self.metrics.registry_error)
        codecs = Codecs.build(
            s,
            registry,
            on_fallback=self.metrics.fallback_hook("output"),
            on_unknown_symbols=_unknown_symbols,
        )
        if s.history_store == DISK:
            self._state_dir = open_state_dir(s)
            resources.callback(self._close_state_dir)
        slot = claim_instance(s, self._hostname)
        if slot is not None:
            self._slot, self._default_id = slot, slot.instance_id
            resources.callback(slot.release)
        resources.callback(self.table.close)
        log.info(
            events.STARTED,
            version=__version__,
            ruleset_version=self.pipeline.ruleset.version,
            group_id=s.group_id,
            input_topic=s.topics.input,
            bootstrap_servers=s.bootstrap_servers,
            guarantee=s.processing_guarantee,
            input_format=s.input_format,
            output_format=s.output_format,
            http_port=s.http_port,
            instance_id=self.instance_id,
        )
        if s.history_retention_days:  # off by default: section 8 evaluates every sample
            log.warning(events.HISTORY_RETENTION_ON, days=s.history_retention_days)
        if not self.stopping:
            register_output_schemas(s, registry, self._stop_event.wait, self._set_ready, self._beat)
        if self.stopping:
            return
        admin = connect_admin(
            self._clients,
            s,
            self._default_id,
            wait=self._stop_event.wait,
            set_ready=self._set_ready,
            beat=self._beat,
        )
        if admin is None:  # stopped while no broker answered
            return
        try:
            self.metrics.clock_skew_tolerance.set(s.clock_skew_tolerance_s)
            check_clock(admin, s, self._clock, self.metrics.clock_offset)
            check_session_timeout(admin, s)
            counts = ensure_topics(admin, s, self._stop_event.wait, self._set_ready, self._beat)
            if counts is not None:
                topic_id = input_topic_id(admin, s.topics.input, self._stop_event.wait)
                self.restorer.input_topic_id = topic_id
        finally:
            admin.close()
        if counts is None:
            return
        self.table.input_partition_count = counts[s.topics.input]
        self._producer = producer = ProducerHandle(
            self._clients,
            s,
            self._default_id,
            beat=self._beat,
            unanswered=self._broker_silent,
            wait=self._stop_event.wait,
        )
        resources.callback(self._close_producer)
        producer.warm_up(s.topics.outputs())
        resources.callback(self.restorer.close)
        consumer = self._clients.consumer(**consumer_config(s, self._default_id))
        resources.callback(self._close_consumer, consumer)
        self.table.attach(consumer)
        consumer.subscribe([s.topics.input], listener=self.table.listener())
        # Fetch metadata now that the subscription is set, before the first join. Otherwise
        # kafka-python may run the first assignment without the input's partitions ("No
        # partition metadata for topic": nothing assigned) or with a metadata snapshot older
        # than its cluster view, and rebalance again right after (refusing the first commits).
        # A broker that went silent since it answered start-up gives a retriable error after a
        # request timeout: the first poll then waits for it, as it would have anyway.
        try:
            consumer.topics()
        except BrokerError as exc:
            if not exc.retriable:
                raise
        processor = Processor(
            s,
            self.pipeline,
            codecs,
            self.table.input_partitions,
            self._clock,
            copartitioned=copartitioned(s, counts),
        )
        delivery = delivery_for(
            s,
            producer,
            consumer,
            self.metrics,
            self._test_crash_hook,
            beat=self._beat,
        )
        self.loop = Loop(
            s,
            consumer,
            self.table,
            processor,
            delivery,
            self.restorer,
            self.metrics,
            stopping=lambda: self.stopping,
            wait=self._stop_event.wait,
            beat=self._beat,
            set_ready=self._set_ready,
        )
        self.started.set()

    def _test_crash_hook(self) -> None:
        """TEST ONLY (HER2_TEST_CRASH_BEFORE_COMMIT): die like `kill -9` between ack and commit."""
        crash_at = self.settings.test_crash_before_commit
        batches = self.loop.batches if self.loop is not None else 0
        if crash_at is not None and batches + 1 == crash_at:
            log.warning(events.TEST_CRASH_BEFORE_COMMIT, batch=crash_at)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- health ---------------------------------------------------------------------------

    def _beat(self) -> None:
        if self._health is not None:
            self._health.beat()

    def _broker_silent(self) -> None:
        if not self.stopping:  # "stopping" stays the reason once stop() was called
            self.table.set_broker_unreachable(True)

    def _set_ready(self, ready: bool, reason: str = "") -> None:
        if self._health is not None:
            self._health.set_ready(ready, reason)

    # -- shutdown -------------------------------------------------------------------------

    def _close_consumer(self, consumer: Consumer) -> None:
        # after a batch given up on a silent broker, leaving the group (a dynamic member) would
        # wait another request timeout for nothing: the grace period is what is left
        timeout_ms = GAVE_UP_CLOSE_MS if self._gave_up else self.settings.tuning.request_timeout_ms
        try:
            consumer.close(autocommit=False, timeout_ms=timeout_ms)
        except Exception as exc:
            log.warning(events.CONSUMER_CLOSE_FAILED, error_type=kind_of(exc))

    def _close_producer(self) -> None:
        if self._producer is not None:
            timeout_ms = self.settings.tuning.request_timeout_ms
            self._producer.close(timeout_ms / 1000 if self._clean else 1)

    def _close_state_dir(self) -> None:
        if self._state_dir is not None:
            self._state_dir.close()
            self._state_dir = None


def _unknown_symbols(writer: str, enum: str, symbols: tuple[str, ...]) -> None:
    """A lab's writer schema with enum symbols the service's input schema lacks (its records
    decode without an error, each unknown symbol as the enum's default)."""
    log.warning(events.WRITER_SYMBOLS_UNKNOWN, writer=writer, enum=enum, symbols=list(symbols))
