"""End-to-end benchmark against a real broker: ceiling, decode, service (at-least-once and
exactly-once), latency at a steady offered load, and memory.

All stages run in one invocation on the same machine, so the ratios between them are meaningful
even on a shared, noisy machine. Stages:
  1. ceiling      a bare kafka-python consumer reading the input topic (no decoding)
  1b. produce     a bare kafka-python producer with the service's producer settings, records of
                  the service's output sizes: the most records/s the service could publish
  2. decode       the same plus Avro decoding and validation
  3. service-alo  `her2-consumer run` (subprocess), at-least-once, until every offset is committed
  3b. x2          the same with two instances in one consumer group (scale-out on this machine)
  4. service-eos  the same with HER2_PROCESSING_GUARANTEE=exactly_once
  5. latency      events produced at --rate/s while the service runs; event-in (send time) to
                  classification available to a read_committed consumer in another process
                  (so the reader shares no interpreter lock with the producer): p50 / p95 / p99
                  of the steady state, after a 2-second warm-up reported apart; the medians of
                  --latency-runs runs (default 3), and the instrument's floor (the same reader's
                  time to the input event itself, no service in between)
  6. memory       RSS of the service process when ready and after the N events of stage 3;
                  with --memory-events M, a separate run of M events (the synthetic stream:
                  about one new patient every two events), RSS sampled as it goes, with the
                  history store of --memory-store (the service's default: disk)

The broker is KAFKA_BOOTSTRAP_SERVERS if set, else a local one from deploy/kafka/launcher.py.

Usage: python bench/kafka_bench.py [--events 100000] [--rate 200] [--latency-seconds 20]
                                   [--latency-runs 3] [--latency-only]
                                   [--memory-events 500000] [--memory-store disk|memory]
                                   [--json bench/results/kafka.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.structs import TopicPartition

import consumer
from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import check_event
from consumer.config import Settings, Tuning
from consumer.errors import ConfigError
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    parsed_schema,
)
from consumer.service import MAX_REQUEST_BYTES
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 2


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS, or a local broker started for the run."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    spec = importlib.util.spec_from_file_location("launcher", REPO / "deploy/kafka/launcher.py")
    assert spec
    assert spec.loader
    launcher = importlib.util.module_from_spec(spec)
    sys.modules["launcher"] = launcher
    spec.loader.exec_module(launcher)
    with tempfile.TemporaryDirectory(prefix="her2-bench-") as work:
        log("starting a local Kafka broker")
        with launcher.LocalKafka(Path(work)) as kafka:
            BROKER["pid"] = kafka.pid
            try:
                yield kafka.bootstrap
            finally:
                BROKER["pid"] = None


def topics_for(run: str) -> dict[str, str]:
    """Environment naming a fresh set of topics and a group for one service run."""
    return {
        "HER2_INPUT_TOPIC": f"bench-{run}-in",
        "HER2_DLQ_TOPIC": f"bench-{run}-dlq",
        "HER2_CLASSIFICATION_TOPIC": f"bench-{run}-class",
        "HER2_HISTORY_TOPIC": f"bench-{run}-history",
        "HER2_RETEST_TOPIC": f"bench-{run}-retest",
        "HER2_DOCUMENTATION_TOPIC": f"bench-{run}-doc",
        "HER2_TDXD_TOPIC": f"bench-{run}-tdxd",
        "HER2_THERAPY_CAUTION_TOPIC": f"bench-{run}-tc",
        "HER2_GROUP_ID": f"bench-{run}-group",
    }


def create_topic(bootstrap: str, name: str) -> None:
    """Create the input topic with PARTITIONS partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        admin.close()


def encoded_events(
    count: int, seed: int, now: bool = False, offset: int | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, single-object value) pairs of synthetic events, interleaved by event time; with
    `offset`, a slice of the endless patient-after-patient stream instead (so a long run can
    be produced one slice at a time)."""
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    out = []
    stream = (
        SyntheticGenerator(seed=seed).events(count)
        if offset is None
        else itertools.islice(SyntheticGenerator(seed=seed).iter_events(), offset, offset + count)
    )
    for event in stream:
        if now:
            event["event_time"] = dt.datetime.now(dt.UTC)
        out.append((event["patient_id"].encode(), encoder.encode(event)))
    return out


def produce(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]) -> None:
    """Produce every pair and wait for all acknowledgements."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in pairs]
        producer.flush()
        for f in futures:
            f.get(timeout=60)
    finally:
        producer.close()


def service_outputs(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record the service publishes for the events of `encoded_events`:
    classification, alert changes and the changelog records of the parts each event changed
    (offline, same code)."""
    pipeline = Pipeline(load_ruleset())
    store = HistoryStore()
    classification = Encoder("single-object", parsed_schema(HER2_CLASSIFICATION))
    alert = Encoder("single-object", parsed_schema(HER2_ALERT))
    out = []
    for event in SyntheticGenerator(seed=seed).events(count):
        key = event["patient_id"].encode()
        outcome = store.apply(event, pipeline)
        out.append((key, classification.encode(outcome.classification)))
        out.extend((key, alert.encode(a)) for a in outcome.alerts)
        out.extend((k, value or b"") for k, value in store.take_dirty())
    return out


def produce_ceiling(
    bootstrap: str, records: list[tuple[bytes, bytes]], events: int
) -> dict[str, Any]:
    """Stage 1b: a bare producer with the service's settings publishing the service's outputs."""
    topic = f"bench-produce-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    tuning = Tuning()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=tuning.linger_ms,
        batch_size=tuning.batch_size,
        max_request_size=MAX_REQUEST_BYTES,
    )
    try:
        producer.send(topic, b"warm-up", b"").get(timeout=30)
        start = time.perf_counter()
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush()
        for f in futures:
            f.get(timeout=60)
        elapsed = time.perf_counter() - start
    finally:
        producer.close()
    per_event = len(records) / events
    return {
        "records": len(records),
        "records_per_event": per_event,
        "mean_record_bytes": statistics.fmean(len(v) for _, v in records),
        "seconds": elapsed,
        "records_per_s": len(records) / elapsed,
        "events_per_s": len(records) / elapsed / per_event,
    }


def read_all(
    bootstrap: str, topic: str, count: int, decode: bool, passes: int = 3
) -> dict[str, Any]:
    """Stages 1 and 2: read `count` records from the beginning (optionally decoding them),
    `passes` times with a new consumer each; the median pass counts. Each pass is timed from its
    first fetched records (handled before the clock starts, and not counted), so connection
    set-up and offset look-ups are not part of it (on 20,000 events they were: one pass measured
    26k events/s where others measured 70-86k). Not the fastest pass: when one fetch brings
    nearly the whole topic, a pass only times Python iterating over buffered records (seen:
    passes of 29k, 194k and 30k events/s)."""
    runs = sorted(
        (_read_once(bootstrap, topic, count, decode) for _ in range(passes)),
        key=lambda run: run["events_per_s"],
    )
    median = runs[len(runs) // 2]
    return {**median, "passes_events_per_s": [run["events_per_s"] for run in runs]}


def _read_once(bootstrap: str, topic: str, count: int, decode: bool) -> dict[str, Any]:
    """One pass of read_all."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=2000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    decoder = Decoder("auto", parsed_schema(PATHOLOGY_RESULT))
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        seen = first = 0
        start = None
        while seen < count:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if decode:
                        check_event(decoder.decode(record.value))
                    seen += 1
                if start is None:  # the clock starts once the first records are handled
                    start, first = time.perf_counter(), seen
        elapsed = time.perf_counter() - start if start is not None else float("nan")
    finally:
        consumer.close()
    timed = seen - first
    return {"events": timed, "seconds": elapsed, "events_per_s": timed / elapsed}


def committed_total(reader: Any, topic: str) -> int:
    """Sum of the group's committed offsets on the input topic (0 before the first commit)."""
    total = 0
    for p in range(PARTITIONS):
        offset = reader.committed(TopicPartition(topic, p))
        total += offset or 0
    return total


def commit_progress(  # noqa: PLR0917 - positional at its callers
    bootstrap: str,
    group: str,
    topic: str,
    count: int,
    procs: list[subprocess.Popen[bytes]],
    timeout_s: float,
    interval_s: float = 0.2,
) -> Iterator[int]:
    """The group's committed input offsets every `interval_s` until `count` are committed;
    RuntimeError if a service process exits or `timeout_s` passes. Reads committed offsets with
    a consumer of the group that never joins it, and never touches the output topics (a
    metadata request for a topic the service has not created yet could auto-create it with the
    broker's default partition count)."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not commit {count} offsets in {timeout_s} s")
            done = committed_total(reader, topic)
            yield done
            if done >= count:
                return
            time.sleep(interval_s)
    finally:
        reader.close()


# the local broker's JVM while broker() runs one (None for KAFKA_BOOTSTRAP_SERVERS: its CPU is
# not on this machine's books, or not only ours)
BROKER: dict[str, int | None] = {"pid": None}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, every thread) a process has used so far; nan if unknown."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_snapshot(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds of these processes together, of the local broker)."""
    return sum(cpu_s(pid) for pid in pids), cpu_s(BROKER["pid"])


@dataclasses.dataclass
class Window:
    """The measured window of a run, from the first commit to all offsets committed: its time,
    the events in it, and the CPU the processes under test and the local broker used in it (a
    wall-clock rate on a shared 2-core machine mixes in whatever else runs; CPU per event does
    not, so it is the steadier comparison)."""

    pids: list[int]
    first_t: float | None = None
    first_n: int = 0
    end_t: float = float("nan")
    cpu_start: tuple[float, float] = (float("nan"), float("nan"))
    cpu_end: tuple[float, float] = (float("nan"), float("nan"))

    def progress(self, done: int) -> bool:
        """`done` offsets committed so far; True when this opens the window."""
        if self.first_t is not None or done <= 0:
            return False
        self.first_t, self.first_n = time.perf_counter(), done
        self.cpu_start = cpu_snapshot(self.pids)
        return True

    def close(self) -> None:
        """Every offset is committed."""
        self.end_t = time.perf_counter()
        self.cpu_end = cpu_snapshot(self.pids)

    def figures(self, count: int) -> dict[str, float]:
        """Events, seconds and rate of the window, CPU per event and cores of each side."""
        assert self.first_t is not None, "no commit was seen"
        events = count - self.first_n
        seconds = max(self.end_t - self.first_t, 1e-9)
        proc_s = self.cpu_end[0] - self.cpu_start[0]
        broker_s = self.cpu_end[1] - self.cpu_start[1]

        def rate(amount: float, base: float) -> float:
            # the first commit seen was already the last (a run shorter than one poll of the
            # commits): no window, so no rate, rather than 0/s or a ZeroDivisionError
            return amount / base if events > 0 else float("nan")

        return {
            "events": events,
            "seconds": seconds,
            "events_per_s": rate(events, seconds),
            "cpu_us_per_event": rate(proc_s * 1e6, events),
            "broker_cpu_us_per_event": rate(broker_s * 1e6, events),
            "cores": rate(proc_s, seconds),
            "broker_cores": rate(broker_s, seconds),
        }


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_service(
    bootstrap: str,
    env_topics: dict[str, str],
    guarantee: str,
    http_port: int = 0,
    client: str | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m consumer run` with the given topics (`client`: HER2_KAFKA_CLIENT, else the
    environment's or the service's default)."""
    env = {
        **os.environ,
        **env_topics,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HER2_PROCESSING_GUARANTEE": guarantee,
        "HER2_HTTP_PORT": str(http_port),
        "HER2_LOG_LEVEL": "WARNING",
        "HER2_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
        **({"HER2_KAFKA_CLIENT": client} if client else {}),
    }
    return subprocess.Popen(  # our own module
        [sys.executable, "-m", "consumer", "run"], env=env, stderr=subprocess.DEVNULL
    )


def stop_service(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM and wait."""
    proc.terminate()
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def group_members(bootstrap: str, group: str) -> int:
    """Members of a consumer group with partitions assigned (0 while it forms)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        with contextlib.suppress(Exception):
            info = admin.describe_groups([group])[group]
            if info["group_state"] == "Stable":
                return sum(
                    1
                    for member in info["members"]
                    if any(
                        a["partitions"] for a in member["member_assignment"]["assigned_partitions"]
                    )
                )
        return 0
    finally:
        admin.close()


def service_throughput(  # noqa: PLR0917 - positional at its callers
    bootstrap: str,
    count: int,
    seed: int,
    guarantee: str,
    instances: int = 1,
    keep_alerts: bool = False,
    client: str | None = None,
) -> dict[str, Any]:
    """Stages 3/4 (+6): time from the first commit to all `count` offsets committed.

    One instance starts on the loaded topic. Several start on the empty topic and the events are
    produced once the group is stable (otherwise the second instance's arrival rebalances the
    first in the middle of the measurement)."""
    run = f"{guarantee[:3]}-{uuid.uuid4().hex[:6]}"
    env_topics = topics_for(run)
    topic = env_topics["HER2_INPUT_TOPIC"]
    group = env_topics["HER2_GROUP_ID"]
    create_topic(bootstrap, topic)
    pairs = encoded_events(count, seed)
    procs = []
    if instances == 1:
        log(f"{guarantee}: producing {count} events")
        produce(bootstrap, topic, pairs)
        procs.append(start_service(bootstrap, env_topics, guarantee, client=client))
    else:
        procs.extend(
            start_service(bootstrap, env_topics, guarantee, client=client) for _ in range(instances)
        )
        deadline = time.monotonic() + 120
        while group_members(bootstrap, group) < instances:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{instances} instances did not form a stable group")
            time.sleep(0.5)
        log(f"{guarantee} x{instances}: group stable; producing {count} events")
        produce(bootstrap, topic, pairs)
    try:
        rss_start = float("nan")
        window = Window([proc.pid for proc in procs])
        for done in commit_progress(bootstrap, group, topic, count, procs, 1800):
            if window.progress(done):
                rss_start = sum(rss_mb(proc.pid) for proc in procs)
        window.close()
        rss_end = sum(rss_mb(proc.pid) for proc in procs)
    finally:
        codes = [stop_service(proc) for proc in procs]
    figures = window.figures(count)
    log(
        f"{guarantee} x{instances} ({client or 'default client'}): "
        f"{figures['events_per_s']:,.0f} events/s, exit {codes}"
    )
    volume = output_volume(bootstrap, env_topics, count)
    if keep_alerts:
        volume["alerts"] = alert_keys(bootstrap, env_topics)
    return {
        **volume,
        **figures,
        "instances": instances,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "exit_code": max(codes),
    }


def output_volume(bootstrap: str, env_topics: dict[str, str], events: int) -> dict[str, float]:
    """What the service wrote for `events` input events: records per event on the output topics
    (classification, alerts, changelog) and changelog bytes (key + value) per event. Counted on
    the topics after the run (a compacted changelog is not compacted this soon)."""
    outputs = {
        "classification": env_topics["HER2_CLASSIFICATION_TOPIC"],
        "alerts": [
            env_topics[k]
            for k in (
                "HER2_RETEST_TOPIC",
                "HER2_DOCUMENTATION_TOPIC",
                "HER2_TDXD_TOPIC",
                "HER2_THERAPY_CAUTION_TOPIC",
            )
        ],
        "changelog": env_topics["HER2_HISTORY_TOPIC"],
    }
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        counts: dict[str, int] = {}
        changelog_bytes = 0
        for name, topics in outputs.items():
            total = 0
            for topic in [topics] if isinstance(topics, str) else topics:
                parts = [
                    TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
                ]
                if not parts:
                    continue
                end = consumer.end_offsets(parts)
                total += sum(end.values())
                if name == "changelog":
                    consumer.assign(parts)
                    consumer.seek_to_beginning(*parts)
                    while any(consumer.position(tp) < end[tp] for tp in parts):
                        for records in consumer.poll(timeout_ms=500).values():
                            changelog_bytes += sum(
                                len(r.key or b"") + len(r.value or b"") for r in records
                            )
            counts[name] = total
    finally:
        consumer.close()
    return {
        "classification_records_per_event": counts["classification"] / events,
        "alert_records_per_event": counts["alerts"] / events,
        "changelog_records_per_event": counts["changelog"] / events,
        "records_per_event": sum(counts.values()) / events,
        "changelog_bytes_per_event": changelog_bytes / events,
    }


def alert_keys(
    bootstrap: str, env_topics: dict[str, str]
) -> collections.Counter[tuple[str, int, str]]:
    """(alert_id, revision, status) of every alert record on a run's alert topics
    (read_committed)."""
    decoder = Decoder("auto", parsed_schema(HER2_ALERT))
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    found: collections.Counter[tuple[str, int, str]] = collections.Counter()
    try:
        parts = [
            TopicPartition(env_topics[k], p)
            for k in (
                "HER2_RETEST_TOPIC",
                "HER2_DOCUMENTATION_TOPIC",
                "HER2_TDXD_TOPIC",
                "HER2_THERAPY_CAUTION_TOPIC",
            )
            for p in consumer.partitions_for_topic(env_topics[k]) or ()
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    a = decoder.decode(r.value)
                    found[(a["alert_id"], a["revision"], a["status"])] += 1
    finally:
        consumer.close()
    return found


def peer_throughput(bootstrap: str, count: int, seed: int, guarantee: str) -> dict[str, Any]:
    """The Quix Streams peer (bench/peer/app.py) on the same events, timed as the service is
    (first commit to all `count` offsets committed); its alert records are returned for the
    comparison with the service's."""
    run = f"peer-{guarantee[:3]}-{uuid.uuid4().hex[:6]}"
    env_topics = topics_for(run)
    topic, group = env_topics["HER2_INPUT_TOPIC"], env_topics["HER2_GROUP_ID"]
    for key, name in env_topics.items():  # outputs as the service would create them
        if key.endswith("_TOPIC") and key != "HER2_HISTORY_TOPIC":
            create_topic(bootstrap, name)
    produce(bootstrap, topic, encoded_events(count, seed))
    state_dir = tempfile.mkdtemp(prefix="her2-peer-")
    env = {
        **os.environ,
        **env_topics,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HER2_PROCESSING_GUARANTEE": guarantee,
        "PEER_STATE_DIR": state_dir,
        "HER2_INSTANCE_ID": f"peer-{uuid.uuid4().hex[:6]}",
    }  # its own id: no host slot to claim
    peer_log = Path(state_dir) / "peer.log"
    with peer_log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(REPO / "bench/peer/app.py")],
            env=env,
            stderr=sink,
            stdout=sink,
        )
    try:
        window = Window([proc.pid])
        try:
            for done in commit_progress(bootstrap, group, topic, count, [proc], 1800):
                window.progress(done)
        except RuntimeError:
            log("peer failed; its log ends:\n" + peer_log.read_text(errors="replace")[-3000:])
            raise
        window.close()
    finally:
        code = stop_service(proc)
        shutil.rmtree(state_dir, ignore_errors=True)
    figures = window.figures(count)
    log(f"peer {guarantee}: {figures['events_per_s']:,.0f} events/s, exit {code}")
    return {
        **figures,
        "exit_code": code,
        "alerts": alert_keys(bootstrap, env_topics),
    }


def refused(client: str | None, guarantee: str) -> str | None:
    """Why the service refuses this client and guarantee at start-up (its own configuration
    check, consumer/config.py: the confluent transport is at-least-once only), None when it
    starts: such stages are not run."""
    env = {"HER2_PROCESSING_GUARANTEE": guarantee}
    if client:
        env["HER2_KAFKA_CLIENT"] = client
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        return str(exc)
    return None


def peer_comparison(
    bootstrap: str, count: int, seed: int, rounds: int, clients: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Project and peer stages interleaved (A B A B ...) per delivery mode, `rounds` rounds:
    medians, ratios project/peer, the machine's load before and after each stage, and whether
    the peer published the same (alert_id, revision, status) records as the service. With
    several `clients` (HER2_KAFKA_CLIENT values) the project runs once per client in each round
    ("project" is the first; the others are reported as "project:<client>")."""
    runs: tuple[str | None, ...] = clients or (None,)  # None: the service's default client
    projects = {
        ("project" if n == 0 else f"project:{client}"): client for n, client in enumerate(runs)
    }
    participants = (*projects, "peer")
    stages: list[dict[str, Any]] = []
    for n in range(rounds):
        for guarantee in ("at_least_once", "exactly_once"):
            for who in participants:
                if who in projects and refused(projects[who], guarantee):
                    continue
                load_before = os.getloadavg()
                if who in projects:
                    result = service_throughput(
                        bootstrap, count, seed, guarantee, keep_alerts=True, client=projects[who]
                    )
                else:
                    result = peer_throughput(bootstrap, count, seed, guarantee)
                result.update(
                    round=n + 1,
                    who=who,
                    client=projects.get(who),
                    guarantee=guarantee,
                    load_before=load_before,
                    load_after=os.getloadavg(),
                )
                stages.append(result)
    summary: dict[str, Any] = {"rounds": rounds, "events": count, "clients": list(runs)}
    for guarantee in ("at_least_once", "exactly_once"):
        ran = [w for w in projects if not refused(projects[w], guarantee)]
        by_who = {
            who: [s for s in stages if s["who"] == who and s["guarantee"] == guarantee]
            for who in (*ran, "peer")
        }
        rates = {who: [s["events_per_s"] for s in r] for who, r in by_who.items()}
        medians = {who: statistics.median(r) for who, r in rates.items()}
        cpu = {
            who: statistics.median(s["cpu_us_per_event"] for s in r) for who, r in by_who.items()
        }
        summary[guarantee] = {
            **rates,
            **{f"{who}_median": median for who, median in medians.items()},
            **{f"ratio_{who}_over_peer": medians[who] / medians["peer"] for who in ran},
            "cpu_us_per_event_median": cpu,
            # > 1: the project needs less CPU per event than the peer
            **{f"cpu_ratio_peer_over_{who}": cpu["peer"] / cpu[who] for who in ran},
        }
    same = []
    for n in range(rounds):
        for guarantee in ("at_least_once", "exactly_once"):
            pair = {
                s["who"]: s["alerts"]
                for s in stages
                if s["round"] == n + 1 and s["guarantee"] == guarantee
            }
            same.extend(pair[who] == pair["peer"] for who in projects if who in pair)
    summary["same_records"] = same
    for s in stages:
        s["alert_records"] = sum(s.pop("alerts").values())
    summary["stages"] = stages
    return summary


def client_comparison(
    bootstrap: str, count: int, seed: int, rounds: int, clients: tuple[str, ...]
) -> dict[str, Any]:
    """The service on each Kafka client (HER2_KAFKA_CLIENT), stages interleaved per round and
    delivery mode (A B A B ...): medians, and the ratio of each client to the first, measured
    in the same run (the machine's noise hits both alike)."""
    stages: list[dict[str, Any]] = []
    for n in range(rounds):
        for guarantee in ("at_least_once", "exactly_once"):
            for client in clients:
                if refused(client, guarantee):
                    continue
                load_before = os.getloadavg()
                result = service_throughput(bootstrap, count, seed, guarantee, client=client)
                result.update(
                    round=n + 1,
                    client=client,
                    guarantee=guarantee,
                    load_before=load_before,
                    load_after=os.getloadavg(),
                )
                stages.append(result)
    summary: dict[str, Any] = {"rounds": rounds, "events": count, "clients": list(clients)}
    for guarantee in ("at_least_once", "exactly_once"):
        ran = [c for c in clients if not refused(c, guarantee)]
        if not ran:
            continue
        rates = {
            c: [
                s["events_per_s"]
                for s in stages
                if s["client"] == c and s["guarantee"] == guarantee
            ]
            for c in ran
        }
        medians = {c: statistics.median(r) for c, r in rates.items()}
        summary[guarantee] = {
            "rates": rates,
            "medians": medians,
            "ratio_over_first": {c: medians[c] / medians[ran[0]] for c in ran},
        }
    summary["stages"] = stages
    return summary


def _latency_reader(  # noqa: PLR0917 - a process target's positional arguments
    bootstrap: str, topic: str, input_topic: str, ready: Any, stop: Any, results: Any
) -> None:
    """In a separate process: event_id -> wall time its classification was read, and event_id
    -> wall time the input event itself was read (the floor: the same producer, broker and
    reader without the service in between)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
        from kafka import KafkaConsumer as Reader  # noqa: PLC0415 - under the filter above
    decoders = {
        topic: Decoder("auto", parsed_schema(HER2_CLASSIFICATION)),
        input_topic: Decoder("auto", parsed_schema(PATHOLOGY_RESULT)),
    }
    reader = Reader(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    reader.assign([TopicPartition(t, p) for t in decoders for p in range(PARTITIONS)])
    seen: dict[str, dict[str, float]] = {t: {} for t in decoders}
    reader.poll(timeout_ms=100)
    ready.set()
    while not stop.is_set():
        for tp, records in reader.poll(timeout_ms=100).items():
            now = time.time()
            decode, into = decoders[tp.topic].decode, seen[tp.topic]
            for r in records:
                into.setdefault(decode(r.value)["event_id"], now)
    reader.close()
    results.put((seen[topic], seen[input_topic]))


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max / mean of `values` (milliseconds)."""
    v = sorted(values)
    n = len(v)
    return {
        "p50_ms": v[n // 2],
        "p95_ms": v[min(n - 1, int(n * 0.95))],
        "p99_ms": v[min(n - 1, int(n * 0.99))],
        "max_ms": v[-1],
        "mean_ms": statistics.fmean(v),
    }


def latency(  # noqa: PLR0917 - positional at its callers
    bootstrap: str,
    rate: float,
    seconds: float,
    guarantee: str,
    warmup_s: float = 2.0,
    client: str | None = None,
) -> dict[str, Any]:
    """Stage 5, one run: steady offered load; send time -> classification readable
    (read_committed), and the same reader's time to the input event itself (`floor`: what the
    producer, the broker and the reader cost without the service).

    The first `warmup_s` seconds of the load are reported apart ("warm_up"): a service just
    started on new topics stalls once in its first second or so (seen: single batches of
    60-340 ms whose time goes to the first acknowledgements from the new output partitions,
    then none over 40 ms in the ~3,000 batches after), which in a 20-second window decides
    the p99 by itself. The figures are of the steady state after it."""
    run = f"lat-{uuid.uuid4().hex[:6]}"
    env_topics = topics_for(run)
    topic = env_topics["HER2_INPUT_TOPIC"]
    create_topic(bootstrap, topic)
    proc = start_service(bootstrap, env_topics, guarantee, client=client)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    warm_count = int(rate * warmup_s)
    count = int(rate * seconds) + warm_count
    events = SyntheticGenerator(seed=99).events(count + 1)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    reader = spawn.Process(
        target=_latency_reader,
        args=(bootstrap, env_topics["HER2_CLASSIFICATION_TOPIC"], topic, ready, stop, results),
    )
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}
    inputs: dict[str, float] = {}
    try:
        # warm-up: one event end to end proves the group is joined and the topics exist
        warm = events[0]
        producer.send(topic, key=warm["patient_id"].encode(), value=encoder.encode(warm)).get(30)
        for _ in commit_progress(bootstrap, env_topics["HER2_GROUP_ID"], topic, 1, [proc], 120):
            pass
        reader.start()
        if not ready.wait(60):
            raise RuntimeError("latency reader did not start")
        interval = 1.0 / rate
        start = time.perf_counter()
        for i, event in enumerate(events[1:]):
            target = start + i * interval
            while (delay := target - time.perf_counter()) > 0:
                time.sleep(min(delay, 0.001))
            event["event_time"] = dt.datetime.now(dt.UTC)
            value = encoder.encode(event)
            sent_at[event["event_id"]] = time.time()
            producer.send(topic, key=event["patient_id"].encode(), value=value)
        producer.flush()
        time.sleep(5)  # every classification is readable well within this on this machine
    finally:
        stop.set()
        try:
            if reader.pid is not None:  # started
                received, inputs = results.get(timeout=60)
                reader.join(timeout=30)
        finally:  # a reader that died without its figures still leaves no service running
            producer.close()
            stop_service(proc)
    return _latency_figures(list(sent_at.items()), warm_count, received, inputs, rate, warmup_s)


def _latency_figures(  # noqa: PLR0917 - positional at its one caller
    sends: list[tuple[str, float]],
    warm_count: int,
    received: dict[str, float],
    inputs: dict[str, float],
    rate: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One latency run's percentiles from the send times (in send order) and the reader's."""

    def ms(seen: dict[str, float], part: list[tuple[str, float]]) -> list[float]:
        return [(seen[k] - sent) * 1000 for k, sent in part if k in seen]

    steady, warm_part = sends[warm_count:], sends[:warm_count]
    total, floor, warm_ms = ms(received, steady), ms(inputs, steady), ms(received, warm_part)
    if not total or not floor or not warm_ms:
        raise RuntimeError("no latency samples")
    return {
        "offered_rate": rate,
        "events": len(steady),
        "received": len(total),
        **percentiles(total),
        "floor": {"received": len(floor), **percentiles(floor)},
        "warm_up": {
            "seconds": warmup_s,
            "events": warm_count,
            "received": len(warm_ms),
            **percentiles(warm_ms),
        },
    }


def latency_runs(  # noqa: PLR0917 - positional at its callers
    bootstrap: str,
    rate: float,
    seconds: float,
    runs: int,
    guarantee: str = "at_least_once",
    client: str | None = None,
) -> dict[str, Any]:
    """Stage 5: `runs` latency runs one after the other, each with a service of its own; the
    median of each percentile over the runs is the figure (one 20-second run on a shared
    2-core host moved the p99 between 39 and 70 ms from one run to the next)."""
    each = []
    for n in range(runs):
        log(f"latency run {n + 1}/{runs}")
        each.append(latency(bootstrap, rate, seconds, guarantee, client=client))
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
    return {
        "offered_rate": rate,
        "runs": each,
        **{k: statistics.median(r[k] for r in each) for k in keys},
        "floor": {k: statistics.median(r["floor"][k] for r in each) for k in keys},
        "events": sum(r["events"] for r in each),
        "received": sum(r["received"] for r in each),
    }


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def history_bytes(port: int) -> float:
    """her2_consumer_history_bytes from the service's /metrics (NaN if unreachable)."""
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response,
    ):
        for line in response.read().decode().splitlines():
            if line.startswith("her2_consumer_history_bytes "):
                return float(line.split()[1])
    return float("nan")


def memory_run(
    bootstrap: str, count: int, seed: int, store: str, client: str | None = None
) -> dict[str, Any]:
    """Stage 6b: RSS of the service over `count` events with the `store` history backend,
    against the size of the history it holds (her2_consumer_history_bytes; with the disk store
    in sqlite files under a state directory of its own, whose size is measured too)."""
    run = f"mem-{uuid.uuid4().hex[:6]}"
    env_topics = topics_for(run)
    topic = env_topics["HER2_INPUT_TOPIC"]
    create_topic(bootstrap, topic)
    log(f"memory: producing {count} events")
    for start in range(0, count, 50_000):  # in slices: the encoded events of 500k are ~300 MB
        produce(bootstrap, topic, encoded_events(min(50_000, count - start), seed, offset=start))
    port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="her2-bench-state-"))
    env_topics = {**env_topics, "HER2_HISTORY_STORE": store, "HER2_STATE_DIR": str(state_dir)}
    proc = start_service(bootstrap, env_topics, "at_least_once", http_port=port, client=client)
    group = env_topics["HER2_GROUP_ID"]
    samples: list[tuple[int, float]] = []
    window = Window([proc.pid])
    try:
        next_report = 0.0
        for done in commit_progress(bootstrap, group, topic, count, [proc], 3600, 1.0):
            window.progress(done)
            samples.append((done, rss_mb(proc.pid)))
            if time.monotonic() >= next_report:
                log(f"memory: {done:,}/{count:,} events committed, RSS {samples[-1][1]:.1f} MB")
                next_report = time.monotonic() + 30
        window.close()
        time.sleep(6)  # the history gauges refresh every 5 s
        held = history_bytes(port) / 2**20
        end = rss_mb(proc.pid)
        on_disk = sum(f.stat().st_size for f in state_dir.rglob("*.sqlite")) / 2**20
    finally:
        code = stop_service(proc)
        shutil.rmtree(state_dir, ignore_errors=True)
    first = next(rss for n, rss in samples if n > 0)
    return {
        "events": count,
        # from the first commit seen (NaN if that commit was already the last)
        "events_per_s": window.figures(count)["events_per_s"],
        "rss_first_commit_mb": first,
        "rss_end_mb": end,
        "growth_mb": end - first,
        "store": store,
        "history_mb": held,
        "history_files_mb": on_disk,
        "growth_beyond_history_mb": end - first - (held if store == "memory" else 0.0),
        "samples": samples[:: max(1, len(samples) // 200)],
        "exit_code": code,
    }


def main() -> int:  # noqa: PLR0915 - the stages in order, one script
    """Run every stage and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=3,
        help="latency runs (stage 5), each with a service of its own; the figures are medians",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only stage 5 (figures to bench/results/latency.json unless --json says otherwise)",
    )
    parser.add_argument("--skip-eos", action="store_true")
    parser.add_argument(
        "--memory-events",
        type=int,
        default=0,
        help="also run the memory stage over this many events (e.g. 500000)",
    )
    parser.add_argument(
        "--memory-store",
        choices=("disk", "memory"),
        default="disk",
        help="HER2_HISTORY_STORE of the memory stage (default: disk)",
    )
    parser.add_argument("--json", default=str(REPO / "bench/results/kafka.json"))
    parser.add_argument(
        "--peer",
        action="store_true",
        help="only the comparison with the Quix Streams peer (bench/peer/app.py; "
        "needs the bench extra): project and peer interleaved, --rounds rounds",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--client",
        default="",
        help="HER2_KAFKA_CLIENT of the service stages: kafka-python or confluent (default: the "
        "environment's, else the service's default). Several, comma-separated (e.g. "
        "kafka-python,confluent): the clients interleaved, --rounds rounds per delivery mode, "
        "medians and ratios (with --peer: each client and the peer interleaved)",
    )
    args = parser.parse_args()
    # the service runs as `python -m consumer run` with this interpreter and environment, so it
    # is the `consumer` package imported here: say which (an editable install may point at
    # another checkout; PYTHONPATH picks a tree on purpose)
    measured = Path(consumer.__file__).resolve().parent
    log(f"measuring the consumer package at {measured}")
    if not measured.is_relative_to(REPO):
        log(f"note: that is not this checkout ({REPO}); `pip install -e .` here to measure it")
    args.clients = tuple(c.strip() for c in args.client.split(",") if c.strip())
    if args.latency_runs < 1:
        parser.error("--latency-runs must be at least 1")
    if args.peer:
        return peer_main(args)
    if args.latency_only:  # before the several-clients run, which would silently ignore it
        return latency_main(args)
    if len(args.clients) > 1:
        return clients_main(args)
    client = args.clients[0] if args.clients else None
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "events": args.events,
    }
    with broker() as bootstrap:
        run = f"raw-{uuid.uuid4().hex[:6]}"
        topic = f"bench-{run}-in"
        create_topic(bootstrap, topic)
        log(f"producing {args.events} events for the ceiling and decode stages")
        produce(bootstrap, topic, encoded_events(args.events, args.seed))
        log("stage 1: ceiling")
        results["ceiling"] = read_all(bootstrap, topic, args.events, decode=False)
        log("stage 1b: producer ceiling (the service's outputs of the same events)")
        results["produce"] = produce_ceiling(
            bootstrap, service_outputs(args.events, args.seed), args.events
        )
        log("stage 2: decode")
        results["decode"] = read_all(bootstrap, topic, args.events, decode=True)
        log("stage 3: service at-least-once")
        results["service_alo"] = service_throughput(
            bootstrap, args.events, args.seed, "at_least_once", client=client
        )
        log("stage 3b: service at-least-once, two instances in one group")
        results["service_alo_x2"] = service_throughput(
            bootstrap, args.events, args.seed, "at_least_once", instances=2, client=client
        )
        if reason := refused(client, "exactly_once"):
            log(f"stage 4 skipped: {reason}")
        elif not args.skip_eos:
            log("stage 4: service exactly-once")
            results["service_eos"] = service_throughput(
                bootstrap, args.events, args.seed, "exactly_once", client=client
            )
        log(f"stage 5: latency at {args.rate}/s for {args.latency_seconds}s")
        # every stage on --client (the latency and memory stages took the environment's client
        # before: a --client confluent run measured them on kafka-python)
        results["latency"] = latency_runs(
            bootstrap, args.rate, args.latency_seconds, args.latency_runs, client=client
        )
        if args.memory_events:
            log(f"stage 6b: memory over {args.memory_events} events")
            results["memory"] = memory_run(
                bootstrap, args.memory_events, args.seed, args.memory_store, client
            )
    ceiling = results["ceiling"]["events_per_s"]
    print(f"\nmachine: {results['machine']}")
    print(f"{'stage':<14} {'events/s':>10} {'vs ceiling':>11}")
    for key in ("ceiling", "produce", "decode", "service_alo", "service_alo_x2", "service_eos"):
        if key in results:
            eps = results[key]["events_per_s"]
            print(f"{key:<14} {eps:>10,.0f} {eps / ceiling:>10.1%}")
    prod = results["produce"]
    print(
        f"producer ceiling: {prod['records_per_s']:,.0f} records/s of the service's outputs "
        f"({prod['records_per_event']:.2f} records/event, mean {prod['mean_record_bytes']:,.0f} "
        "bytes) = the events/s above"
    )
    if "service_eos" in results:
        ratio = results["service_eos"]["events_per_s"] / results["service_alo"]["events_per_s"]
        results["eos_vs_alo"] = ratio
        print(f"exactly-once / at-least-once: {ratio:.1%}")
    print_latency(results["latency"])
    alo = results["service_alo"]
    print(
        f"service outputs per event (at-least-once run): {alo['records_per_event']:.2f} records "
        f"({alo['classification_records_per_event']:.2f} classification, "
        f"{alo['alert_records_per_event']:.2f} alert, {alo['changelog_records_per_event']:.2f} "
        f"changelog), changelog {alo['changelog_bytes_per_event']:,.0f} bytes/event"
    )
    print(
        f"service RSS: {alo['rss_start_mb']:.1f} MB at start, {alo['rss_end_mb']:.1f} MB after "
        f"{args.events} events (+{alo['rss_end_mb'] - alo['rss_start_mb']:.1f} MB)"
    )
    if "memory" in results:
        mem = results["memory"]
        where = (
            "in memory"
            if mem["store"] == "memory"
            else f"on disk ({mem['history_files_mb']:.1f} MB of sqlite files)"
        )
        print(
            f"memory run ({mem['store']} history store): {mem['events']:,} events "
            f"({mem['events_per_s']:,.0f}/s): RSS {mem['rss_first_commit_mb']:.1f} MB at the "
            f"first commit, {mem['rss_end_mb']:.1f} MB at the end (+{mem['growth_mb']:.1f} MB); "
            f"patient history held {where}: {mem['history_mb']:.1f} MB encoded; growth beyond "
            f"the history held in memory: {mem['growth_beyond_history_mb']:+.1f} MB"
        )
    write_summary(args.json, "kafka.json", results)
    return 0


def print_latency(lat: dict[str, Any]) -> None:
    """Stage 5's figures: the medians, then each run."""
    print(
        f"latency at {lat['offered_rate']:.0f}/s, median of {len(lat['runs'])} runs "
        f"({lat['received']}/{lat['events']} events): p50 {lat['p50_ms']:.1f} ms, p95 "
        f"{lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms; the "
        f"instrument's floor (the input itself read back): p50 {lat['floor']['p50_ms']:.1f}, "
        f"p99 {lat['floor']['p99_ms']:.1f} ms"
    )
    for n, r in enumerate(lat["runs"], 1):
        print(
            f"  run {n}: p50 {r['p50_ms']:.1f}, p99 {r['p99_ms']:.1f}, max {r['max_ms']:.1f} ms "
            f"(floor p99 {r['floor']['p99_ms']:.1f}); warm-up {r['warm_up']['seconds']:g} s: "
            f"p99 {r['warm_up']['p99_ms']:.1f}, max {r['warm_up']['max_ms']:.1f} ms"
        )


def latency_main(args: argparse.Namespace) -> int:
    """--latency-only: stage 5 alone, on --client (one; default the environment's)."""
    if len(args.clients) > 1:
        raise SystemExit("--latency-only measures one client at a time")
    client = args.clients[0] if args.clients else None
    with broker() as bootstrap:
        log(f"stage 5: latency at {args.rate}/s for {args.latency_seconds}s")
        lat = latency_runs(
            bootstrap, args.rate, args.latency_seconds, args.latency_runs, client=client
        )
    print_latency(lat)
    write_summary(args.json, "latency.json", {"latency": lat})
    return 0


def peer_main(args: argparse.Namespace) -> int:
    """`--peer`: the interleaved comparison with the Quix Streams peer, printed and as JSON."""
    with broker() as bootstrap:
        summary = peer_comparison(bootstrap, args.events, args.seed, args.rounds, args.clients)
    summary["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"\n{'mode':<14} {'who':<24} {'events/s':>30} {'median':>8} {'/ peer':>7}")
    for guarantee in ("at_least_once", "exactly_once"):
        g = summary[guarantee]
        projects = [w for w in g if w.startswith("ratio_")]
        for ratio_key in [*projects, None]:
            who = "peer" if ratio_key is None else ratio_key[len("ratio_") : -len("_over_peer")]
            rates = " / ".join(f"{r:,.0f}" for r in g[who])
            ratio = "" if ratio_key is None else f"{g[ratio_key]:.2f}"
            print(f"{guarantee:<14} {who:<24} {rates:>30} {g[who + '_median']:>8,.0f} {ratio:>7}")
    print(f"\n{'mode':<14} {'CPU µs/event: who':<24} {'median':>8} {'peer/who':>9}")
    for guarantee in ("at_least_once", "exactly_once"):
        g = summary[guarantee]
        cpu = g["cpu_us_per_event_median"]
        for who in cpu:
            ratio = "" if who == "peer" else f"{g['cpu_ratio_peer_over_' + who]:.2f}"
            print(f"{guarantee:<14} {who:<24} {cpu[who]:>8,.0f} {ratio:>9}")
    print(
        f"same (alert_id, revision, status) records in every stage pair: {summary['same_records']}"
    )
    for s in summary["stages"]:
        print(
            f"  round {s['round']} {s['guarantee']:<14} {s['who']:<20} "
            f"{s['events_per_s']:>8,.0f}/s "
            f"CPU {s['cpu_us_per_event']:,.0f} µs/event ({s['cores']:.2f} cores; broker "
            f"{s['broker_cpu_us_per_event']:,.0f} µs/event, {s['broker_cores']:.2f} cores) "
            f"load {s['load_before'][0]:.2f} -> {s['load_after'][0]:.2f}"
        )
    write_summary(args.json, "peer.json", summary)
    return 0 if all(summary["same_records"]) else 1


def write_summary(json_arg: str, default_name: str, summary: dict[str, Any]) -> None:
    """Write a mode's summary to --json, or beside the default kafka.json as `default_name`."""
    out = Path(json_arg)
    if json_arg.endswith("kafka.json"):
        out = out.with_name(default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=list))
    print(f"figures written to {out}")


def clients_main(args: argparse.Namespace) -> int:
    """`--client a,b`: the service on each Kafka client, interleaved, printed and as JSON."""
    with broker() as bootstrap:
        summary = client_comparison(bootstrap, args.events, args.seed, args.rounds, args.clients)
    summary["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    first = args.clients[0]
    print(f"\n{'mode':<14} {'client':<14} {'events/s':>30} {'median':>8} {'/ ' + first:>16}")
    for guarantee in ("at_least_once", "exactly_once"):
        g = summary.get(guarantee, {"rates": {}})
        for c in g["rates"]:
            rates = " / ".join(f"{r:,.0f}" for r in g["rates"][c])
            print(
                f"{guarantee:<14} {c:<14} {rates:>30} {g['medians'][c]:>8,.0f} "
                f"{g['ratio_over_first'][c]:>16.2f}"
            )
    for s in summary["stages"]:
        print(
            f"  round {s['round']} {s['guarantee']:<14} {s['client']:<14} "
            f"{s['events_per_s']:>8,.0f}/s load {s['load_before'][0]:.2f} -> "
            f"{s['load_after'][0]:.2f} exit {s['exit_code']}"
        )
    write_summary(args.json, "clients.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
