"""Shared pieces of the service integration tests: topics and settings per test, producing
encoded events, reading and decoding output topics, running the service in a thread or as a
subprocess. The schema registry of these tests is the real one (conftest's `apicurio`).

Everything here talks to the real broker of the session; nothing mocks Kafka.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.config import Settings
from consumer.ops.logs import configure_logging
from consumer.ops.metrics import Metrics
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    PATIENT_HISTORY,
    parsed_schema,
)
from consumer.service import Service, disable_topic_auto_creation
from consumer.state.store import HistoryStore
from consumer.tools.jsonout import dumps

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = 45.0

# Short timeouts keep rebalances and shutdowns fast in tests (production defaults are longer).
FAST_SETTINGS: dict[str, str] = {
    "HER2_SESSION_TIMEOUT_MS": "6000",
    "HER2_HEARTBEAT_INTERVAL_MS": "1000",
    "HER2_MAX_POLL_INTERVAL_MS": "60000",
    "HER2_POLL_TIMEOUT_MS": "200",
    "HER2_REQUEST_TIMEOUT_MS": "10000",
    "HER2_DELIVERY_TIMEOUT_MS": "20000",
    "HER2_RESTORE_TIMEOUT_SECONDS": "30",
    "HER2_LAG_REFRESH_SECONDS": "1",
    "HER2_PRODUCER_LINGER_MS": "2",
    "HER2_HTTP_PORT": "0",
    "HER2_LOG_LEVEL": "INFO",
}

_TOPIC_VARS = {
    "input": "HER2_INPUT_TOPIC",
    "dlq": "HER2_DLQ_TOPIC",
    "classification": "HER2_CLASSIFICATION_TOPIC",
    "history": "HER2_HISTORY_TOPIC",
    "retest": "HER2_RETEST_TOPIC",
    "documentation": "HER2_DOCUMENTATION_TOPIC",
    "tdxd": "HER2_TDXD_TOPIC",
    "therapy_caution": "HER2_THERAPY_CAUTION_TOPIC",
}
ALERT_TOPIC_KEYS = ("retest", "documentation", "tdxd", "therapy_caution")
ALERT_TYPE_TOPIC_KEY = {
    "RETEST": "retest",
    "DOCUMENTATION_GAP": "documentation",
    "TDXD_ELIGIBILITY": "tdxd",
    "THERAPY_CAUTION": "therapy_caution",
}


# -- topics and settings ------------------------------------------------------------------


@dataclass
class Env:
    """The topic names and group of one test, and the environment that configures the service."""

    bootstrap: str
    topics: dict[str, str]
    group: str
    extra: dict[str, str] = field(default_factory=dict)

    def environ(self, **overrides: str) -> dict[str, str]:
        """Environment variables for `Settings.from_env` or a subprocess."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "HER2_GROUP_ID": self.group,
            **{_TOPIC_VARS[key]: name for key, name in self.topics.items()},
            **FAST_SETTINGS,
            # the integration and fault tests run on either client: HER2_KAFKA_CLIENT of the
            # test run (kafka-python when unset) reaches every service a test starts
            **{k: v for k, v in os.environ.items() if k == "HER2_KAFKA_CLIENT"},
            **self.extra,
        }
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        """Validated settings for an in-process Service."""
        return Settings.from_env(self.environ(**overrides))

    @property
    def input(self) -> str:
        return self.topics["input"]


def make_env(bootstrap: str, unique_name: Callable[[str], str], **extra: str) -> Env:
    """Unique topic names (not created yet) and group for one test."""
    topics = {key: unique_name(key) for key in _TOPIC_VARS}
    return Env(bootstrap, topics, unique_name("group"), dict(extra))


def delete_outputs(bootstrap: str, env: Env) -> None:
    """Delete the output topics the service created (the input is deleted by its fixture)."""
    outputs = [name for key, name in env.topics.items() if key != "input"]
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        existing = set(admin.list_topics())
        doomed = [t for t in outputs if t in existing]
        if doomed:
            admin.delete_topics(doomed, raise_errors=False)


# -- the pipeline and the offline reference ------------------------------------------------

_RULESET = None


def pipeline() -> Pipeline:
    """A Pipeline on the shipped rule set (loaded once per session)."""
    global _RULESET  # noqa: PLW0603 - a cache of an immutable, validated rule set
    if _RULESET is None:
        _RULESET = load_ruleset()
    return Pipeline(_RULESET)


def offline_alerts(events: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(event_id, code, status) of every alert a single consumer would publish, computed
    without Kafka with the same HistoryStore + Pipeline (per-patient order is what counts)."""
    store = HistoryStore(dt.timedelta(days=3650))
    p = pipeline()
    found: set[tuple[str, str, str]] = set()
    for event in events:
        for alert in store.apply(event, p).alerts:
            found.add((alert["event_id"], alert["code"], alert["status"]))
    return found


# -- producing ------------------------------------------------------------------------------


def encoder(
    fmt: str = "single-object", registry: Any = None, subject: str | None = None
) -> Encoder:
    """An Encoder of PathologyResult in `fmt`."""
    return Encoder(fmt, parsed_schema(PATHOLOGY_RESULT), registry=registry, subject=subject)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce (key, value) records and fail unless every one is acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers) for key, value in records
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=20)
    finally:
        producer.close()


def produce_events(
    bootstrap: str, topic: str, events: Iterable[dict[str, Any]], enc: Encoder | None = None
) -> None:
    """Produce events keyed by patient_id, encoded with `enc` (default single-object)."""
    enc = enc or encoder()
    produce(bootstrap, topic, [(e["patient_id"].encode(), enc.encode(e)) for e in events])


# -- reading outputs -----------------------------------------------------------------------


@dataclass
class Out:
    """One output record, decoded (value None for tombstones and undecodable DLQ values)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    headers: dict[str, bytes]
    value: dict[str, Any] | None


class TopicReader:
    """Reads topics from the beginning and keeps everything seen (read_committed)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Mapping[str, str],
        *,
        output_format: str = "single-object",
        registry: Any = None,
        start_offsets: Mapping[str, Mapping[int, int]] | None = None,
    ) -> None:
        """`start_offsets` (topic -> partition -> offset, e.g. from `end_offsets`) reads those
        partitions from there instead of from the beginning."""
        self._start = {
            TopicPartition(topic, p): offset
            for topic, offsets in (start_offsets or {}).items()
            for p, offset in offsets.items()
        }
        self._consumer = disable_topic_auto_creation(  # never create a topic by reading it
            KafkaConsumer(
                bootstrap_servers=bootstrap,
                isolation_level="read_committed",
                enable_auto_commit=False,
                allow_auto_create_topics=False,
            )
        )
        self._names = dict(topics)  # key -> topic
        self._assigned: set[str] = set()
        decode_fmt = "auto" if output_format != "raw" else "raw"
        self._decoders = {
            "classification": Decoder(
                decode_fmt, parsed_schema(HER2_CLASSIFICATION), registry=registry
            ),
            "alert": Decoder(decode_fmt, parsed_schema(HER2_ALERT), registry=registry),
            # the changelog is single-object framed whatever the output format (self-contained)
            "history": Decoder("single-object", parsed_schema(PATIENT_HISTORY)),
        }
        self.records: dict[str, list[Out]] = {key: [] for key in self._names}

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _assign(self) -> None:
        missing = [t for t in self._names.values() if t not in self._assigned]
        if not missing:
            return
        partitions = list(self._consumer.assignment())
        for topic in missing:
            found = self._consumer.partitions_for_topic(topic)
            if found:
                self._assigned.add(topic)
                partitions.extend(TopicPartition(topic, p) for p in found)
        new = [tp for tp in partitions if tp not in self._consumer.assignment()]
        if new:
            self._consumer.assign(partitions)
            self._consumer.seek_to_beginning(*new)
            for tp in new:
                if tp in self._start:
                    self._consumer.seek(tp, self._start[tp])

    def poll(self, timeout_ms: int = 200) -> None:
        """Read what is available now."""
        self._assign()
        if not self._consumer.assignment():
            time.sleep(timeout_ms / 1000)
            return
        by_topic = {name: key for key, name in self._names.items()}
        for tp, batch in self._consumer.poll(timeout_ms=timeout_ms).items():
            key = by_topic[tp.topic]
            for record in batch:
                self.records[key].append(self._out(key, record))

    def _out(self, key: str, record: Any) -> Out:
        headers = dict(record.headers or [])
        value = None
        if record.value is not None and key not in {"input", "dlq"}:
            kind = "alert" if key in ALERT_TOPIC_KEYS else key
            value = self._decoders[kind].decode(record.value)
        return Out(
            record.topic, record.partition, record.offset, record.key, record.value, headers, value
        )

    def wait(
        self,
        condition: Callable[[TopicReader], bool],
        timeout: float = DEFAULT_TIMEOUT_S,
        what: str = "the outputs",
    ) -> None:
        """Poll until `condition(self)` holds; fail with a summary after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                counts = {key: len(v) for key, v in self.records.items()}
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {counts}")
            self.poll()

    def settle(self, quiet_s: float = 1.0) -> None:
        """Poll until nothing new arrives for `quiet_s` seconds."""
        last = -1
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            total = sum(len(v) for v in self.records.values())
            if total != last:
                last = total
                quiet_until = time.monotonic() + quiet_s
            self.poll()

    # convenience views

    def classifications(self) -> list[dict[str, Any]]:
        return [r.value for r in self.records.get("classification", []) if r.value is not None]

    def classified_ids(self) -> set[str]:
        return {c["event_id"] for c in self.classifications()}

    def alerts(self) -> list[Out]:
        return [r for key in ALERT_TOPIC_KEYS for r in self.records.get(key, [])]

    def alert_triples(self) -> set[tuple[str, str, str]]:
        return {
            (a.value["event_id"], a.value["code"], a.value["status"])
            for a in self.alerts()
            if a.value
        }


def output_reader(env: Env, **kwargs: Any) -> TopicReader:
    """A reader of every output topic of `env`."""
    topics = {key: name for key, name in env.topics.items() if key != "input"}
    return TopicReader(env.bootstrap, topics, **kwargs)


def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """The end offset of every partition of `topics` (topic -> partition -> offset)."""
    consumer = disable_topic_auto_creation(
        KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or set()
        ]
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    found: dict[str, dict[int, int]] = {}
    for tp, offset in ends.items():
        found.setdefault(tp.topic, {})[tp.partition] = offset
    return found


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """Committed offsets of `group` on every partition of `topic`."""
    consumer = disable_topic_auto_creation(
        KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        consumer.close()


def wait_for(
    condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT_S, what: str = ""
) -> None:
    """Poll `condition` every 0.1 s until it holds or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        time.sleep(0.1)


# -- running the service --------------------------------------------------------------------


class HealthRecorder:
    """Records what the service reports to its health hook (beats, readiness reasons)."""

    def __init__(self) -> None:
        self.beats = 0
        self.ready = False
        self.reasons: list[str] = []

    def beat(self) -> None:
        self.beats += 1

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready = ready
        self.reasons.append(reason)


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is at write time (pytest swaps it per test,
    and a structlog configured with a test's captured stream breaks once that stream closes)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class ServiceThread:
    """A Service running in a thread of the test process (`stop()` joins and returns its code)."""

    def __init__(self, settings: Settings) -> None:
        if not structlog.is_configured():  # a test may have configured its own (keep it)
            configure_logging(settings.log_level, stream=_CurrentStderr())  # type: ignore[arg-type]
        p = pipeline()
        self.metrics = Metrics(CollectorRegistry(), p.ruleset.version)
        self.health = HealthRecorder()
        self.service = Service(settings, p, self.metrics, health=self.health)
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, name="her2-service", daemon=True)

    def _run(self) -> None:
        self.code = self.service.run()

    def start(self) -> ServiceThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        self.service.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the service did not stop in time"
        return self.code

    def join(self, timeout: float = 30.0) -> int | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the service did not end in time"
        return self.code

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if value is None else value

    def wait_assigned(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_for(
            lambda: bool(self.service.assigned_partitions()) or not self.alive,
            timeout,
            "partitions to be assigned and restored",
        )
        assert self.alive, f"the service ended with code {self.code}"


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[ServiceThread]:
    """Run a Service in a thread for the block; it must stop cleanly (exit code 0)."""
    svc = ServiceThread(settings).start()
    try:
        yield svc
    finally:
        code = svc.stop()
    assert code == 0, f"the service exited with code {code}"


class ServiceProcess:
    """`python -m consumer run` as a subprocess, logs to files under `log_dir`."""

    def __init__(self, environ: Mapping[str, str], log_dir: Path, name: str = "service") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HER2_", "KAFKA_"))}
        env.update(environ)
        env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )

    def logs(self) -> str:
        return self.stderr_path.read_text(errors="replace") + self.stdout_path.read_text(
            errors="replace"
        )

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines (structlog) the process wrote."""
        events = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the service process did not exit in time:\n{self.logs()[-3000:]}"
            ) from None

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- events ---------------------------------------------------------------------------------

_T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def printed_objects(capsys: Any) -> list[dict[str, Any]]:
    """The JSON objects a CLI command printed on stdout. A service thread of an earlier test may
    have left structlog unconfigured (its default prints to stdout): other lines are not the
    command's."""
    found = []
    for line in capsys.readouterr().out.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "event" not in value:
            found.append(value)
    return found


def make_event(
    event_id: str,
    patient_id: str,
    accession_id: str,
    *,
    status: str = "FINAL",
    minutes: int = 0,
    site: str = "PRIMARY_BREAST",
    collected: dt.date | None = dt.date(2024, 5, 2),
    score: str | None = "ONE_PLUS",
    percent: float | None = 30.0,
    intensity: str | None = "FAINT",
    completeness: str | None = "INCOMPLETE",
    setting: str = "METASTATIC",
    chemo_lines: int | None = 1,
    endocrine_lines: int | None = 0,
    er: float | None = 0.0,
    planned: list[str] | None = None,
    prior: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A complete, well-documented PathologyResult (the fields a test cares about are named)."""
    return {
        "event_id": event_id,
        "event_time": _T0 + dt.timedelta(minutes=minutes),
        "source_system": "test-lis",
        "patient_id": patient_id,
        "accession_id": accession_id,
        "report_status": status,
        "specimen": {
            "site": site,
            "body_site": None,
            "collection_date": collected,
            "cold_ischemia_minutes": 20,
            "fixation_hours": 24.0,
            "fixative": "10% NBF",
            "decalcified": None,
        },
        "her2_ihc": {
            "score": score,
            "percent_cells_stained": percent,
            "staining_intensity": intensity,
            "staining_completeness": completeness,
            "antibody_clone": "4B5",
            "assay_type": "FDA_APPROVED",
            "controls_documented": True,
            "reported_text": None,
        },
        "her2_ish": None,
        "er": None
        if er is None
        else {"percent_positive": er, "result": "POSITIVE" if er >= 1 else "NEGATIVE"},
        "pr": None if er is None else {"percent_positive": 0.0, "result": "NEGATIVE"},
        "clinical_context": {
            "disease_setting": setting,
            "menopausal_status": "POST",
            "metastatic_chemotherapy_lines": chemo_lines,
            "metastatic_endocrine_therapy_lines": endocrine_lines,
            "metastatic_anti_her2_lines": 0,
            "adjuvant_chemotherapy_end_date": None,
            "perioperative_anti_her2_end_date": None,
            "recurrence_date": None,
            "planned_therapies": list(planned or []),
            "interstitial_lung_disease_history": False,
            "clinical_flags": [],
        },
        "prior_her2_results": list(prior or []),
    }


def evaluate_history(
    events: list[dict[str, Any]], tmp_path: Path, timeout: float = 300
) -> list[list[dict[str, Any]]]:
    """Per event, the alert records `her2-consumer evaluate --history` prints for the events
    (the offline reference a running service must agree with)."""
    source = tmp_path / "events.ndjson"
    source.write_text("".join(dumps(e) + "\n" for e in events), encoding="utf-8")
    done = subprocess.run(  # noqa: S603 - fixed argv, our own module
        [sys.executable, "-m", "consumer", "evaluate", "--history", str(source)],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(events)
    assert all(not line["errors"] for line in lines), [
        line["errors"] for line in lines if line["errors"]
    ]
    return [line["alerts"] for line in lines]
