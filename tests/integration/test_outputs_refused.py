"""Issue 15 against the real broker: a host clock 2 hours fast (item 1) and a dead-letter topic
that refuses a large record for good (item 3), in both delivery modes.

Both were crash loops: every output stamped with the fast host clock was refused
(`InvalidTimestampError`, `message.timestamp.after.max.ms`), and a dead-letter copy above the
DLQ topic's `max.message.bytes` failed on every attempt; the service stopped without committing
and every restart met the same batch. Now the partition must move on and commit everything.

The fast clock is injected, not set on the host: the service's clock, and the wall clock
kafka-python's record builder stamps records with when given no timestamp (a default argument
of `DefaultRecordBatchBuilder.append`, so it is replaced there).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faults import Probe, alerts_of, classified_ids, outputs, produce_records, wait_committed
from helpers import Env, delete_outputs, encoder, make_env, make_event, pipeline
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from prometheus_client import CollectorRegistry

from consumer.clinical.pipeline import utc_now
from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import DefaultRecordBatchBuilder
from consumer.service import EXIT_OK, Service
from consumer.tools.synthetic import SyntheticGenerator

GUARANTEES = ["at_least_once", "exactly_once"]
FAST = dt.timedelta(hours=2)


@pytest.fixture
def env(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Env]:
    e = make_env(kafka_bootstrap, unique_name)
    yield e
    delete_outputs(kafka_bootstrap, e)


def fast_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python stamps a record sent without a timestamp with time.time(), bound as a
    default argument of DefaultRecordBatchBuilder.append: make that clock 2 hours fast (for
    every producer of this process from now on)."""
    append = DefaultRecordBatchBuilder.append
    defaults = tuple(
        (lambda: time.time() + FAST.total_seconds()) if d is time.time else d
        for d in append.__defaults__
    )
    assert defaults != append.__defaults__, "kafka-python's record builder changed"
    monkeypatch.setattr(append, "__defaults__", defaults)


class _Running:
    """A Service in a thread with an injected clock; `stop()` returns its exit code."""

    def __init__(self, env: Env, clock: Callable[[], dt.datetime], **overrides: str) -> None:
        self.service = Service(
            env.settings(**overrides), pipeline(), Metrics(CollectorRegistry(), "t"), clock=clock
        )
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.service.run()

    def stop(self) -> int | None:
        self.service.stop()
        self.thread.join(60)
        return self.code


def _run_until_committed(env: Env, clock: Callable[[], dt.datetime], **overrides: str) -> Metrics:
    """Run a service with `clock` until every input record is committed; its metrics."""
    if overrides.get("HER2_PROCESSING_GUARANTEE") == "exactly_once":
        overrides.setdefault("HER2_INSTANCE_ID", "refused-0")  # explicit: no host slot claimed
    running = _Running(env, clock, **overrides)
    try:
        with Probe(env.bootstrap) as probe:
            wait_committed(probe, env.group, env.input, 90, alive=running.thread.is_alive)
    finally:
        code = running.stop()
    assert code == EXIT_OK
    return running.service.metrics


def _output_configs(env: Env, config: dict[str, str]) -> dict[str, dict[str, str]]:
    out = {name: dict(config) for key, name in env.topics.items() if key != "input"}
    out[env.topics["history"]]["cleanup.policy"] = "compact"
    return out


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_host_clock_two_hours_fast_still_publishes_and_commits(
    guarantee: str,
    env: Env,
    create_topics: Callable[..., list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15 item 1: every output topic refuses timestamps more than 60 s ahead."""
    create_topics(env.input, partitions=1)
    for name, config in _output_configs(env, {"message.timestamp.after.max.ms": "60000"}).items():
        create_topics(name, partitions=1, config=config)
    events = SyntheticGenerator(seed=151, id_prefix="clk").events(12)
    enc = encoder()
    produce_records(
        env.bootstrap, env.input, [(e["patient_id"].encode(), enc.encode(e), []) for e in events]
    )
    fast_wall_clock(monkeypatch)  # the lab's producer had a good clock; this host has not
    metrics = _run_until_committed(
        env, lambda: utc_now() + FAST, HER2_PROCESSING_GUARANTEE=guarantee
    )
    # the start-up check measured the host clock against the broker's (KRaft DescribeQuorum)
    offset = metrics.registry.get_sample_value("her2_consumer_clock_offset_seconds")
    assert offset is not None
    assert abs(offset - FAST.total_seconds()) < 5, offset
    out = outputs(env)
    assert set(classified_ids(out)) == {e["event_id"] for e in events}
    assert out["dlq"] == []
    assert out["history"], "the changelog was written too"


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_dlq_topic_with_a_small_max_message_bytes_gets_the_error_headers_and_moves_on(
    guarantee: str, env: Env, create_topics: Callable[..., list[str]]
) -> None:
    """Issue 15 item 3: a 300 KB poison record, a DLQ that accepts 100 KB."""
    create_topics(env.input, partitions=1)
    create_topics(env.topics["dlq"], partitions=1, config={"max.message.bytes": "100000"})
    gen = SyntheticGenerator(seed=153, id_prefix="dlq")
    # many valid reports in flight beside the poison's dead letter: kafka-python 3.0.12 fails
    # them all with the DLQ's refusal; only the poison may be dead-lettered
    before, after = gen.events(5), gen.events(300)
    enc = encoder()
    records: list[Any] = [(e["patient_id"].encode(), enc.encode(e), []) for e in before]
    records.append((b"poison", b"\xff" * 300_000, []))
    records += [(e["patient_id"].encode(), enc.encode(e), []) for e in after]
    produce_records(env.bootstrap, env.input, records)
    _run_until_committed(env, utc_now, HER2_PROCESSING_GUARANTEE=guarantee)
    out = outputs(env)
    assert set(classified_ids(out)) == {e["event_id"] for e in before + after}
    [dead] = out["dlq"]
    assert (dead.key, dead.raw) == (b"poison", None)
    assert dead.headers["her2.errors.reason"] == b"unknown-magic-byte"
    assert dead.headers["her2.errors.offset"] == b"5"
    assert dead.headers["her2.errors.dlq.refused"] == b"MessageSizeTooLargeError"


def test_at_least_once_a_record_whose_classification_is_refused_stays_evaluated(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    """The runbook audit on a real broker: a topic refuses a cancellation's output for good
    after its T-DXd retraction was acknowledged. Dead-lettered unevaluated, the patient's next
    report re-used that revision for an ACTIVE record and a reader keeping the highest
    revision showed no T-DXd alert. Here the classification topic refuses the cancellation's
    classification alone (a long event id, max.message.bytes 1,000; the others are about 500
    bytes), each report in a batch of its own: the report stays evaluated, the alerts equal
    the offline evaluation, and its dead letter replayed once the topic is fixed is a
    redelivery that publishes the classification. Dead-lettered unevaluated (the code
    before), the folded alerts differ."""
    create_topics(env.input, partitions=1)
    create_topics(env.topics["classification"], partitions=1, config={"max.message.bytes": "1000"})
    cancelled = "pr1-e2-" + "x" * 900
    events = [
        make_event("pr1-e1", "pr1", "pr1-a1", minutes=0),
        make_event(cancelled, "pr1", "pr1-a1", status="CANCELLED", minutes=1),
        make_event("pr1-e3", "pr1", "pr1-a2", minutes=2, collected=dt.date(2024, 6, 1)),
    ]
    enc = encoder()
    running = _Running(env, utc_now)
    try:
        with Probe(env.bootstrap) as probe:
            for event in events:  # one batch each, as the audit sent them
                produce_records(env.bootstrap, env.input, [(b"pr1", enc.encode(event), [])])
                wait_committed(probe, env.group, env.input, 90, alive=running.thread.is_alive)
    finally:
        assert running.stop() == EXIT_OK
    out = outputs(env)
    folded: dict[str, tuple[int, str]] = {}
    for record in alerts_of(out):
        alert = record.value
        assert alert is not None
        held = folded.get(alert["alert_id"], (0, ""))
        if alert["revision"] > held[0]:  # a reader keeps the first record of a revision
            folded[alert["alert_id"]] = (alert["revision"], alert["status"])
    offline = pipeline()
    state, expected = None, {}
    for event in events:
        step = offline.step(state, event)
        state = step.state
        expected.update({a["alert_id"]: (a["revision"], a["status"]) for a in step.alerts})
    assert folded == expected
    assert set(classified_ids(out)) == {"pr1-e1", "pr1-e3"}
    [dead] = out["dlq"]
    assert dead.headers["her2.errors.reason"] == b"output-refused"
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:  # the cause fixed
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    env.topics["classification"],
                    configs={"max.message.bytes": "1048576"},
                )
            ]
        )
    produce_records(env.bootstrap, env.input, [(dead.key, dead.raw, [])])
    _run_until_committed(env, utc_now)
    assert set(classified_ids(outputs(env))) == {"pr1-e1", cancelled, "pr1-e3"}
