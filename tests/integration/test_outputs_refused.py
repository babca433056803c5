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
from faults import Probe, classified_ids, outputs, produce_records, wait_committed
from helpers import Env, delete_outputs, encoder, make_env, pipeline
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
