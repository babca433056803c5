"""The exactly-once rebalance race, at the service level, on librdkafka (HER2_KAFKA_CLIENT=
confluent): a second instance joins while the first one's transaction is open, librdkafka
completes the rebalance in the first one's background thread, the coordinator refuses the
transaction's offsets, and the first instance aborts and runs the batch again (runtime/loop.py,
OffsetsRefusedError) without a restart. Every event is published exactly once and every offset
is committed.

The race needs a rebalance to complete between the moment the service reads its group metadata
and the moment the coordinator sees the transaction's offsets: a few milliseconds in a real
run (seen in 1 of 4 runs of the two-instance kill test before the recovery existed). It is made
certain here from the test's side only: instance a runs in this process, and its consumer's
group_metadata() (librdkafka's, unchanged) is wrapped so that on a's third transaction it
returns the metadata read, then waits until instance b (a process of its own) has joined and
the group is stable again. Nothing in the service knows about it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from faults import (
    EOS,
    Probe,
    assert_delivery,
    judge,
    stop_gracefully,
    wait_committed,
)
from helpers import (
    Env,
    ServiceProcess,
    ServiceThread,
    delete_outputs,
    make_env,
    offline_alerts,
    produce_events,
    wait_for,
)
from kafka import KafkaAdminClient  # imported first by conftest.py, under its warning filter

from consumer.ops import events as log_events
from consumer.tools.synthetic import SyntheticGenerator

pytestmark = pytest.mark.fault

confluent = pytest.importorskip(
    "consumer.runtime.kafka.confluent", reason="the confluent extra is not installed"
)

EVENTS = 600
RACE_AT = 3  # a's transaction whose offsets meet the rebalance (two committed before it)
WAIT_S = 60.0


@pytest.fixture
def env(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    monkeypatch.setenv("HER2_KAFKA_CLIENT", "confluent")
    test_env = make_env(
        kafka_bootstrap,
        unique_name,
        HER2_PROCESSING_GUARANTEE=EOS,
        HER2_MAX_POLL_RECORDS="40",
    )
    yield test_env
    delete_outputs(kafka_bootstrap, test_env)


def _group(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state and member count, as its coordinator describes them."""
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        described: dict[str, Any] = admin.describe_groups([group])[group]
    return str(described.get("group_state") or described.get("state")), len(described["members"])


class Race:
    """Wraps librdkafka's group metadata of the group member: at call `RACE_AT` it reads the
    metadata, then holds it until the test says the rebalance completed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.in_window = threading.Event()
        self.rebalanced = threading.Event()
        original = confluent.ConfluentConsumer.group_metadata
        race = self

        def group_metadata(consumer: Any) -> Any:
            metadata = original(consumer)
            race.calls += 1
            if race.calls == RACE_AT:
                race.in_window.set()
                assert race.rebalanced.wait(WAIT_S), "the test never completed the rebalance"
            return metadata

        # in this process only: instance b is a process of its own, unwrapped
        monkeypatch.setattr(confluent.ConfluentConsumer, "group_metadata", group_metadata)


@pytest.mark.parametrize(
    "partitions",
    [
        # b gets nothing: the refused batch's partition stays with a, and only a's re-run
        # (restore the partition's history, poll the batch again) publishes its events
        pytest.param(1, id="partition-kept"),
        # b takes partitions a was revoking: their records go to b from the committed offsets
        pytest.param(3, id="partitions-moved"),
    ],
)
def test_a_second_instance_joining_mid_transaction_is_recovered_without_a_restart(  # noqa: PLR0917 - fixtures
    partitions: int,
    env: Env,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Instance a alone, then b joins while a's third transaction is open; librdkafka
    completes the rebalance in a's background thread (a does not poll meanwhile), a's offsets
    are refused (ILLEGAL_GENERATION), a aborts and runs the batch again; b owns partitions
    afterwards only if there are more than one. Every event classified once, every alert once,
    offsets committed to the end, a never stopped."""
    create_topics(env.input, partitions=partitions)
    events = SyntheticGenerator(seed=4242, id_prefix="eos-race").events(EVENTS)
    expected = offline_alerts(events)
    produce_events(env.bootstrap, env.input, events)
    race = Race(monkeypatch)
    logs = contextlib.ExitStack()
    captured = logs.enter_context(structlog.testing.capture_logs())  # every thread's log events

    a = ServiceThread(env.settings(HER2_INSTANCE_ID=unique_name("a")[-40:])).start()
    b: ServiceProcess | None = None
    try:
        assert race.in_window.wait(WAIT_S), f"a never reached transaction {RACE_AT}"
        state_before = _group(env.bootstrap, env.group)
        assert state_before == ("Stable", 1), state_before
        b = ServiceProcess(env.environ(HER2_INSTANCE_ID=unique_name("b")[-40:]), tmp_path, "b")
        deadline = time.monotonic() + WAIT_S
        while _group(env.bootstrap, env.group) != ("Stable", 2):
            assert b.proc.poll() is None, b.logs()[-3000:]
            assert time.monotonic() < deadline, "b's join never completed"
            time.sleep(0.2)
        race.rebalanced.set()  # a's offsets now reach the coordinator with the ended generation

        with Probe(env.bootstrap) as probe:
            wait_committed(probe, env.group, env.input, 120, alive=lambda: a.alive)
        wait_for(lambda: bool(a.service.assigned_partitions()), WAIT_S, "a to own partitions")
        assert a.alive, f"a stopped (code {a.code})"
        assert b.proc.poll() is None, b.logs()[-3000:]
    finally:
        race.rebalanced.set()
        code_a = a.stop()
        code_b = stop_gracefully(b) if b is not None else 0
        logs.close()
    assert (code_a, code_b) == (0, 0)

    refusals = [e for e in captured if e["event"] == log_events.TRANSACTION_OFFSETS_REFUSED]
    assert refusals, "a's offsets were never refused: the race did not happen"
    assert {e["error_type"] for e in refusals} == {"IllegalGenerationError"}, refusals
    assert a.metric("her2_consumer_commit_failures_total") == len(refusals)

    assert b is not None
    b_owned = set()
    for event in b.log_events():
        if event.get("event") == "partitions assigned":
            b_owned |= set(event.get("partitions", []))
    assert bool(b_owned) == (partitions > 1), b_owned

    records, verdict, classified, _ = judge(env, expected, events)
    assert_delivery(EOS, verdict, classified, (e["event_id"] for e in events))
    assert records["dlq"] == []
