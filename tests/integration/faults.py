"""Shared pieces of the fault-injection suite (tests/integration/test_faults*.py).

Everything here talks to the session's real broker. The helpers:

- `Probe`: committed offsets of a group and end offsets of a topic, with one long-lived admin
  client and consumer (cheap enough to poll several times a second);
- `transactions_decided` / `drain`: wait until no transaction is open on the output topics
  (a killed exactly-once producer's transaction stays open until the broker aborts it), then
  read every record with `read_committed` up to the end, decoded (alerts, classifications,
  history) or raw (DLQ);
- `LogTail`: the JSON log lines of a service subprocess, read incrementally (progress and
  rebalance events without parsing the whole file each time);
- `Supervisor`: runs `her2-consumer run` and restarts it whenever it exits non-zero, as a
  Kubernetes restart policy would, recording every exit;
- `RssSampler`: resident memory of a process, sampled from /proc;
- `check_alerts`: lost / duplicated alerts against the offline expectation, per mode;
- `record_result`: appends a JSON line per test run to `$HER2_FAULT_RESULTS` when it is set
  (docs/fault-report.md is written from those lines);
- `dropped_markers` / `abort_hanging`: F1 of docs/fault-report.md, a Kafka 4.3.1 fault (a
  transaction committed while the broker shuts down loses its markers and hangs its
  partitions for good), found in the broker's log and repaired as an operator would.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import ALERT_TOPIC_KEYS, Out, ServiceProcess

from consumer.avro.codec import Decoder
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, PATIENT_HISTORY, parsed_schema
from consumer.service import disable_topic_auto_creation

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError
    from kafka.structs import TopicPartition

ALO = "at_least_once"
EOS = "exactly_once"


# -- a broker that does not answer -------------------------------------------------------


@contextlib.contextmanager
def frozen_broker(local_kafka: Any) -> Iterator[float]:
    """The launcher's broker stopped with SIGSTOP for the block (its connections stay open,
    nothing is refused, requests go unanswered), SIGCONT after; yields when it froze."""
    pid = local_kafka.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


class Background:
    """A call on a thread of its own, started by start(): what it raised (`error`, None when
    it returned) and when it ended (`ended`, monotonic)."""

    def __init__(self, call: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None
        self.ended: float | None = None
        self._call = call
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # reported by the caller's assertions
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout_s: float) -> bool:
        """Whether the call ended within `timeout_s`."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


# -- F1: transaction markers the broker dropped in a controlled shutdown --------------------

# Kafka 4.3.1's transaction coordinator, committing or aborting while its broker is in a
# controlled shutdown (a one-replica partition then has no leader), takes the partitions for
# deleted topics: it logs this, writes no marker and completes the transaction on its side
# (docs/fault-report.md, F1).
_DROPPED_MARKERS = re.compile(
    r"Couldn't find leader endpoint for partitions \w*\((?P<partitions>[^)]*)\) while trying to "
    r"send transaction markers for (?P<transactional_id>\S+), these partitions are likely "
    r"deleted"
)


# the coordinator's states with no transaction open on its side
_SETTLED = frozenset({"Empty", "CompleteCommit", "CompleteAbort"})


def dropped_markers(server_log: Path, transactional_id: str) -> list[TopicPartition]:
    """The partitions whose transaction markers for `transactional_id` the broker dropped,
    from its log (deploy/kafka/launcher.py's `logs_dir / "server.log"`)."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(set(_dropped_in(server_log.read_text(errors="replace"), transactional_id)))
    return []


def _dropped_in(text: str, transactional_id: str) -> Iterator[TopicPartition]:
    """The partitions of `transactional_id` the broker log's `text` says it dropped markers of."""
    for match in _DROPPED_MARKERS.finditer(text):
        if match["transactional_id"] == transactional_id:
            for name in match["partitions"].split(","):
                topic, _, partition = name.strip().rpartition("-")
                yield TopicPartition(topic, int(partition))


def abort_hanging(
    admin: Any, transactional_id: str, partitions: Iterable[TopicPartition]
) -> list[str] | None:
    """Abort the transactions left open on `partitions` by the producer of `transactional_id`
    with an epoch older than the coordinator's current one, as an operator does with
    `kafka-transactions.sh abort` (the same WriteTxnMarkers request); return them as
    `topic[partition]`, or None while the coordinator has not moved past them yet (or does
    not answer yet). `admin` is the caller's KafkaAdminClient, kept for the whole wait (this
    is polled until it answers: a client per call would connect and close ten times a second).

    Only a fenced epoch's transaction is touched: no producer can write to it or end it any
    more, and the coordinator had completed it on its side before it bumped the epoch, so
    nothing else ever closes it (F1). Aborting is the one consistent repair: the markers may
    be missing on some of the transaction's partitions only (a later abort of the same
    producer closes whatever it touches), and the input offsets it held are then not
    committed, so the service processes those records again.
    """
    from kafka.admin import AbortTransactionSpec  # noqa: PLC0415 - only this repair needs it

    try:
        coordinator = admin.describe_transactions([transactional_id])[transactional_id]
        states = admin.describe_producers(list(partitions))
    except KafkaError:  # a coordinator or leader still loading after the broker's start
        return None
    open_ = [
        (tp, producer)
        for tp, state in states.items()
        for producer in state.active_producers
        if producer.producer_id == coordinator.producer_id
        and producer.current_transaction_start_offset >= 0
    ]
    hanging = [(tp, p) for tp, p in open_ if p.producer_epoch < coordinator.producer_epoch]
    if coordinator.state.value in _SETTLED and any(
        p.producer_epoch == coordinator.producer_epoch for _, p in open_
    ):
        return None  # the restarted service has not fenced the old producer yet
    for tp, producer in hanging:
        admin.abort_transaction(
            AbortTransactionSpec(
                tp, producer.producer_id, producer.producer_epoch, producer.coordinator_epoch
            )
        )
    return sorted(f"{tp.topic}[{tp.partition}]" for tp, _ in hanging)


class MarkerRepair:
    """F1's repair, kept up for the whole wait after the broker is back: the broker may log
    the markers it dropped during its shutdown or later, while its transaction coordinator
    loads again after the start and sends the markers of a transaction it had prepared (the
    first sighting of F1). Each `poll` reads what the log gained since the last (the session's
    broker log grows all session) and asks again about every partition named so far: a
    transaction left open there may only hang once the restarted service has fenced the old
    producer (`abort_hanging` is idempotent)."""

    def __init__(self, server_log: Path, transactional_id: str) -> None:
        self.server_log = server_log
        self.transactional_id = transactional_id
        self.dropped: list[TopicPartition] = []
        self.aborted: list[str] = []
        self._read = 0  # bytes of the log read so far (whole lines only)

    def poll(self, admin: Callable[[], Any]) -> None:
        """Look for newly dropped markers; abort what hangs once the coordinator allows
        (`admin()` gives the wait's admin client, asked for only when a partition is named)."""
        with contextlib.suppress(FileNotFoundError), self.server_log.open("rb") as log:
            log.seek(self._read)
            chunk = log.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._read += len(complete)
            for tp in _dropped_in(complete.decode(errors="replace"), self.transactional_id):
                if tp not in self.dropped:
                    self.dropped.append(tp)
        if self.dropped:
            done = abort_hanging(admin(), self.transactional_id, sorted(self.dropped))
            self.aborted.extend(tp for tp in done or () if tp not in self.aborted)

    def describe(self, lines: int = 12) -> str:
        """The broker's log lines about this transactional id and its markers, for a failure
        message (names of topics and ids only: the broker logs no record contents)."""
        with contextlib.suppress(FileNotFoundError):
            text = self.server_log.read_text(errors="replace")
            found = [
                line[:300]
                for line in text.splitlines()
                if self.transactional_id in line or "marker" in line.lower()
            ]
            return f"broker log, markers and {self.transactional_id}:\n" + "\n".join(found[-lines:])
        return f"no broker log at {self.server_log}"


# -- offsets ---------------------------------------------------------------------------------


class Probe:
    """Committed offsets of a consumer group and end offsets of a topic (one client each)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: Any = None
        self._consumer: Any = None

    def _clients(self) -> tuple[Any, Any]:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=5000
            )
        if self._consumer is None:
            self._consumer = disable_topic_auto_creation(
                KafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    enable_auto_commit=False,
                    request_timeout_ms=5000,
                    allow_auto_create_topics=False,
                )
            )
        return self._admin, self._consumer

    def admin(self) -> Any:
        """The probe's admin client, for other requests of the same wait (`abort_hanging`)."""
        admin, _ = self._clients()
        return admin

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition: the offset after the last record of `topic`."""
        _, consumer = self._clients()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition of `topic`: the offset `group` committed (missing = none yet)."""
        admin, _ = self._clients()
        found = admin.list_group_offsets({group: None}).get(group, {})
        return {
            tp.partition: meta.offset
            for tp, meta in found.items()
            if tp.topic == topic and meta.offset >= 0
        }

    def lag(self, group: str, topic: str) -> int:
        """Records of `topic` not yet committed by `group`."""
        end = self.end_offsets(topic)
        done = self.committed(group, topic)
        return sum(max(0, off - done.get(p, 0)) for p, off in end.items())

    def reset(self) -> None:
        """Drop the clients (after a broker restart they would reconnect, but slowly)."""
        self.close()

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._admin = self._consumer = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_committed(
    probe: Probe,
    group: str,
    topic: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    what: str = "every input offset to be committed",
    each: Callable[[], None] | None = None,
) -> float:
    """Wait until `group` committed every record of `topic`; return the seconds waited.

    Fails early when `alive()` says the processes that should do the work are gone; a failure
    names each partition's committed and end offsets. `each` runs once per look (a repair).
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if each is not None:
            each()
        try:
            lag = probe.lag(group, topic)
        except KafkaError:
            lag = -1
        if lag == 0:
            return time.monotonic() - started
        if alive is not None and not alive():
            raise AssertionError(f"the service is gone while waiting for {what} (lag {lag})")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (lag {lag}; "
                f"{_partition_offsets(probe, group, topic)})"
            )
        time.sleep(0.2)


def _partition_offsets(probe: Probe, group: str, topic: str) -> str:
    """Per partition, committed/end offsets (for a failure message)."""
    try:
        end, done = probe.end_offsets(topic), probe.committed(group, topic)
    except KafkaError as exc:
        return f"offsets unread: {type(exc).__name__}"
    return "committed/end: " + ", ".join(f"[{p}] {done.get(p)}/{end[p]}" for p in sorted(end))


def broker_healthy(bootstrap: str, topic: str, timeout: float = 60.0) -> float:
    """Wait until the broker creates `topic`, takes a record with acks=all and a group
    consumer reads it back (coordinator loaded); delete the topic; return the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000) as admin:
                if topic not in admin.list_topics():
                    admin.create_topics(
                        {topic: {"num_partitions": 1, "configs": {}}}, wait_for_metadata=True
                    )
            produce_records(bootstrap, topic, [(b"k", b"ping", [])])
            consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=f"{topic}-group",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            try:
                seen: list[bytes] = []
                read_until = time.monotonic() + 15
                while b"ping" not in seen and time.monotonic() < read_until:
                    for batch in consumer.poll(timeout_ms=200).values():
                        seen.extend(r.value for r in batch)
                if seen:
                    consumer.commit()
            finally:
                consumer.close()
            if b"ping" in seen:
                with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
                    admin.delete_topics([topic], raise_errors=False)
                return time.monotonic() - started
        except KafkaError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"the broker is not healthy after {timeout:g}s ({last!r})")


# -- producing ---------------------------------------------------------------------------------


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


def produce_records(bootstrap: str, topic: str, records: Iterable[Record]) -> list[tuple[int, int]]:
    """Produce (key, value, headers) records in order; return (partition, offset) of each once
    every one is acknowledged."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024
    )
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers or None)
            for key, value, headers in records
        ]
        producer.flush()
        found = [future.get(timeout=30) for future in futures]
    finally:
        producer.close()
    return [(meta.partition, meta.offset) for meta in found]


# -- reading outputs ---------------------------------------------------------------------------


_DECODERS: dict[str, Decoder] = {}


def _decoder(kind: str) -> Decoder:
    if kind not in _DECODERS:
        schema = {"alert": HER2_ALERT, "classification": HER2_CLASSIFICATION}.get(
            kind, PATIENT_HISTORY
        )
        _DECODERS[kind] = Decoder("auto", parsed_schema(schema))
    return _DECODERS[kind]


def transactions_decided(bootstrap: str, topics: Iterable[str], timeout: float = 60.0) -> float:
    """Wait until no transaction is open on `topics` (the last stable offset of every partition
    equals its high watermark); return the seconds waited.

    A producer killed mid-transaction leaves it open until the broker aborts it, at the latest
    transaction.timeout.ms (plus the broker's abort scan interval) after its last write; until
    then read_committed readers stop at its first record."""
    started = time.monotonic()
    clients = [
        disable_topic_auto_creation(
            KafkaConsumer(
                bootstrap_servers=bootstrap,
                isolation_level=level,
                enable_auto_commit=False,
                allow_auto_create_topics=False,
            )
        )
        for level in ("read_committed", "read_uncommitted")
    ]
    try:
        committed_view, uncommitted_view = clients
        tps = [
            TopicPartition(name, p)
            for name in topics
            for p in sorted(uncommitted_view.partitions_for_topic(name) or ())
        ]
        while True:
            stable = committed_view.end_offsets(tps)
            high = uncommitted_view.end_offsets(tps)
            open_ = {f"{tp.topic}[{tp.partition}]" for tp in tps if stable[tp] != high[tp]}
            if not open_:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"transactions still open after {timeout:g}s: {open_}")
            time.sleep(0.25)
    finally:
        for client in clients:
            client.close()


def drain(bootstrap: str, topics: Mapping[str, str], timeout: float = 60.0) -> dict[str, list[Out]]:
    """Every record of `topics` (key -> topic name) from the beginning up to their end, read
    with `read_committed` once no transaction is open on them (`transactions_decided`)."""
    transactions_decided(bootstrap, topics.values(), timeout)
    consumer = disable_topic_auto_creation(
        KafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
    )
    by_topic = {name: key for key, name in topics.items()}
    records: dict[str, list[Out]] = {key: [] for key in topics}
    try:
        tps: list[Any] = []
        for name in topics.values():
            partitions = consumer.partitions_for_topic(name)
            if partitions is None:  # never created
                continue
            tps.extend(TopicPartition(name, p) for p in sorted(partitions))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            if time.monotonic() > deadline:
                state = {f"{tp.topic}[{tp.partition}]": end[tp] for tp in pending}
                raise AssertionError(f"timed out reading outputs to their end offsets: {state}")
            for tp, batch in consumer.poll(timeout_ms=200).items():
                key = by_topic[tp.topic]
                records[key].extend(_out(key, r) for r in batch)
            pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
    finally:
        consumer.close()
    return records


def _out(key: str, record: Any) -> Out:
    value = None
    if record.value is not None and key not in {"input", "dlq"}:
        kind = "alert" if key in ALERT_TOPIC_KEYS else key
        value = _decoder(kind).decode(record.value)
    return Out(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        dict(record.headers or []),
        value,
    )


def outputs(env: Any, timeout: float = 60.0) -> dict[str, list[Out]]:
    """`drain` of every output topic of a helpers.Env."""
    return drain(env.bootstrap, {k: v for k, v in env.topics.items() if k != "input"}, timeout)


def alerts_of(records: Mapping[str, list[Out]]) -> list[Out]:
    return [r for key in ALERT_TOPIC_KEYS for r in records.get(key, [])]


def classified_ids(records: Mapping[str, list[Out]]) -> collections.Counter[str]:
    return collections.Counter(
        r.value["event_id"] for r in records.get("classification", []) if r.value is not None
    )


# -- verdicts ------------------------------------------------------------------------------


@dataclass
class AlertVerdict:
    """Alerts observed against the offline expectation."""

    expected: int  # distinct (event_id, code, status) triples expected
    published: int  # alert records read (duplicates included)
    lost: int  # expected triples never published
    unexpected: int  # published triples not expected
    duplicated: int  # extra copies: sum over (alert_id, revision) of copies - 1
    inconsistent: int  # (alert_id, revision) groups whose copies differ beyond created_at
    lost_triples: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def lost_examples(self) -> list[tuple[str, str, str]]:
        return self.lost_triples[:5]

    def as_dict(self) -> dict[str, Any]:
        found = {k: v for k, v in self.__dict__.items() if k != "lost_triples"}
        if self.lost_triples:
            found["lost_alerts"] = self.lost_triples[:20]
        return found


def check_alerts(alerts: Iterable[Out], expected: set[tuple[str, str, str]]) -> AlertVerdict:
    """Count lost, unexpected and duplicated alerts; duplicates must be identical apart from
    created_at (a redelivered event re-emits the same alert)."""
    copies: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    published = 0
    for out in alerts:
        assert out.value is not None, "an alert topic holds a record that is not an alert"
        published += 1
        copies[(out.value["alert_id"], out.value["revision"])].append(out.value)
    seen = {(v[0]["event_id"], v[0]["code"], v[0]["status"]) for v in copies.values()}
    lost = expected - seen
    inconsistent = 0
    for values in copies.values():
        shapes = {json.dumps(_without_created_at(v), sort_keys=True, default=str) for v in values}
        inconsistent += len(shapes) > 1
    return AlertVerdict(
        expected=len(expected),
        published=published,
        lost=len(lost),
        unexpected=len(seen - expected),
        duplicated=sum(len(v) - 1 for v in copies.values()),
        inconsistent=inconsistent,
        lost_triples=sorted(lost),
    )


def _without_created_at(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "created_at"}


def delivery_counts(
    verdict: AlertVerdict, classified: collections.Counter[str], event_ids: Iterable[str]
) -> dict[str, int]:
    """Events, and classifications lost or duplicated (no assertion: record first)."""
    wanted = set(event_ids)
    return {
        "events": len(wanted),
        "classifications_lost": len(wanted - set(classified)),
        "classifications_duplicated": sum(n - 1 for n in classified.values()),
    }


def judge(
    env: Any, expected: set[tuple[str, str, str]], events: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, list[Out]], AlertVerdict, collections.Counter[str], dict[str, int]]:
    """Read every output topic back and judge it against the expected alerts: the records, the
    alert verdict, the classified event ids and the delivery counts to record."""
    records = outputs(env)
    verdict = check_alerts(alerts_of(records), expected)
    classified = classified_ids(records)
    counts = delivery_counts(verdict, classified, (e["event_id"] for e in events))
    return records, verdict, classified, counts


def assert_delivery(
    mode: str,
    verdict: AlertVerdict,
    classified: collections.Counter[str],
    event_ids: Iterable[str],
) -> None:
    """The delivery contract of `mode` for alerts and classifications."""
    wanted = set(event_ids)
    missing = wanted - set(classified)
    extra = set(classified) - wanted
    duplicate_classifications = sum(n - 1 for n in classified.values())
    assert not missing, f"{len(missing)} events never classified, e.g. {sorted(missing)[:3]}"
    assert not extra, f"classifications of unknown events: {sorted(extra)[:3]}"
    assert verdict.lost == 0, f"{verdict.lost} alerts lost, e.g. {verdict.lost_examples}"
    assert verdict.unexpected == 0, f"{verdict.unexpected} alerts the offline run never made"
    assert verdict.inconsistent == 0, "copies of one alert differ beyond created_at"
    if mode == EOS:
        assert verdict.duplicated == 0, f"{verdict.duplicated} duplicate alerts in exactly_once"
        assert duplicate_classifications == 0, "duplicate classifications in exactly_once"


# -- the service process -------------------------------------------------------------------


class LogTail:
    """Reads the JSON log lines a service subprocess appends to its stderr file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """New events since the last call (all kept in `events`)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    new.append(event)
        self.events.extend(new)
        return new

    def count(self, name: str) -> int:
        self.read()
        return sum(1 for e in self.events if e.get("event") == name)


def wait_log(
    tail: LogTail,
    condition: Callable[[LogTail], bool],
    timeout: float,
    what: str,
    proc: ServiceProcess | None = None,
) -> None:
    """Poll the log until `condition` holds; fail after `timeout` or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        tail.read()
        if condition(tail):
            return
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(
                f"the service exited ({proc.proc.returncode}) while waiting for {what}:\n"
                + proc.logs()[-3000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def kill9(proc: ServiceProcess) -> int:
    """`kill -9` the service process and reap it; return its exit status."""
    if proc.proc.poll() is None:
        os.kill(proc.proc.pid, signal.SIGKILL)
    return proc.proc.wait(10)


def stop_gracefully(proc: ServiceProcess, timeout: float = 30.0) -> int:
    """SIGTERM and wait; the service must exit 0 (finish the batch, commit, leave)."""
    proc.terminate()
    return proc.wait(timeout)


@dataclass
class Exit:
    """One exit of a supervised process."""

    name: str
    code: int
    at: float  # monotonic
    reason: str  # the last error line of its log, if any


class Supervisor:
    """Runs `her2-consumer run` and restarts it whenever it exits non-zero, like Kubernetes
    (restartPolicy Always; a short fixed back-off instead of the kubelet's exponential one).

    A zero exit while not asked to stop is recorded and not restarted (the test fails on it:
    the service must not quit by itself).
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        log_dir: Path,
        name: str = "supervised",
        backoff_s: float = 0.5,
    ) -> None:
        self._environ = dict(environ)
        self._log_dir = log_dir
        self._name = name
        self._backoff_s = backoff_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.exits: list[Exit] = []
        self.procs: list[ServiceProcess] = []
        self.current: ServiceProcess | None = None
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            proc = ServiceProcess(self._environ, self._log_dir, f"{self._name}-{len(self.procs)}")
            self.procs.append(proc)
            self.current = proc

    def _run(self) -> None:
        while True:
            proc = self.current
            assert proc is not None
            code = proc.proc.wait()
            # the service's own last error (kafka-python's connection noise left out)
            errors = [
                f"{e.get('event')} ({e.get('error_type')})"
                for e in proc.log_events()
                if e.get("level") in ("error", "critical")
                and not str(e.get("logger", "")).startswith("kafka")
            ]
            reason = errors[-1] if errors and code != 0 else ""
            self.exits.append(Exit(proc.stdout_path.stem, code, time.monotonic(), reason))
            if self._stopping.is_set() or code == 0:
                return
            if self._stopping.wait(self._backoff_s):
                return
            self._spawn()

    @property
    def restarts(self) -> int:
        return len(self.procs) - 1

    def alive(self) -> bool:
        """Whether a process is running or about to be restarted."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the current process and stop supervising; return its exit code."""
        self._stopping.set()
        proc = self.current
        if proc is not None and proc.proc.poll() is None:
            proc.terminate()
            try:
                proc.proc.wait(timeout)
            except Exception:
                proc.kill()
        self._thread.join(timeout)
        return None if proc is None else proc.proc.returncode

    def describe(self, last: int = 12) -> str:
        """What the supervised processes did, for a failure message (the CI log keeps only its
        tail): each exit, and the current process's event counts and last log events (event
        names, loggers and error types only: the logs carry no identifiers, and this keeps it
        short)."""
        lines = [f"exits: {[(e.name, e.code, e.reason) for e in self.exits]}"]
        proc = self.current
        if proc is not None:
            events = proc.log_events()
            counts = collections.Counter(str(e.get("event"))[:80] for e in events)
            lines.append(f"{proc.stderr_path.stem} (running: {proc.proc.poll() is None}):")
            lines.append(f"  event counts: {counts.most_common(15)}")
            for e in events[-last:]:
                lines.append(
                    f"  {e.get('timestamp', '')} {e.get('level')} {e.get('logger')}: "
                    f"{str(e.get('event'))[:160]} {e.get('error_type') or ''}"
                )
        return "\n".join(lines)

    def kill_all(self) -> None:
        self._stopping.set()
        for proc in self.procs:
            proc.kill()
        self._thread.join(10)


# -- memory --------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


class RssSampler:
    """Samples the RSS of a process every `interval_s` in a thread: (monotonic, bytes)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss is None:
                return
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def at(self, moment: float) -> int:
        """The last sample taken at or before `moment` (the first sample if none)."""
        before = [rss for t, rss in self.samples if t <= moment]
        return before[-1] if before else self.samples[0][1]

    def peak(self, after: float = 0.0) -> int:
        return max(rss for t, rss in self.samples if t >= after)


# -- results ---------------------------------------------------------------------------------


def record_result(test: str, **fields: Any) -> None:
    """Append one JSON line about this run to $HER2_FAULT_RESULTS (if set): the raw material
    of docs/fault-report.md."""
    path = os.environ.get("HER2_FAULT_RESULTS")
    if not path:
        return
    line = {"test": test, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=str) + "\n")
