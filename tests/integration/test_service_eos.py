"""Exactly-once mode (HER2_PROCESSING_GUARANTEE=exactly_once): outputs, changelog and offsets
commit in one Kafka transaction, so a crash before the commit leaves nothing visible to
read_committed readers, and a fenced producer stops the service cleanly."""

from __future__ import annotations

import collections
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    Env,
    ServiceProcess,
    ServiceThread,
    committed,
    delete_outputs,
    make_env,
    make_event,
    output_reader,
    produce_events,
    wait_for,
)
from kafka import KafkaProducer  # imported first by conftest.py, under its warning filter

from consumer.service import EXIT_FENCED


@pytest.fixture
def env(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Env]:
    test_env = make_env(
        kafka_bootstrap,
        unique_name,
        HER2_PROCESSING_GUARANTEE="exactly_once",
        HER2_INSTANCE_ID=unique_name("instance")[-40:],
    )
    yield test_env
    delete_outputs(kafka_bootstrap, test_env)


def test_a_crash_inside_a_transaction_leaves_every_output_exactly_once(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    create_topics(env.input, partitions=1)
    events = [
        make_event(
            f"eos-e{i:02d}",
            f"eos-p{i % 3}",
            f"eos-a{i:02d}",
            minutes=i,
            site="DISTANT_METASTASIS",
            planned=["trastuzumab"],
        )
        for i in range(12)
    ]
    produce_events(env.bootstrap, env.input, events)

    crashing = ServiceProcess(
        env.environ(HER2_TEST_CRASH_BEFORE_COMMIT="2", HER2_MAX_POLL_RECORDS="4"), tmp_path, "eos"
    )
    with crashing:
        assert crashing.wait(60) == -9, crashing.logs()[-2000:]
    assert committed(env.bootstrap, env.group, env.input) == {0: 4}, (
        "batch 1 committed, batch 2 not"
    )

    # the same instance id: the new producer fences the dead one and aborts its transaction
    svc = ServiceThread(env.settings()).start()
    try:
        with output_reader(env) as reader:
            reader.wait(
                lambda r: len(r.classified_ids()) == len(events), what="every classification"
            )
            reader.settle(0.5)
    finally:
        assert svc.stop() == 0

    per_event = collections.Counter(c["event_id"] for c in reader.classifications())
    assert set(per_event.values()) == {1}, "read_committed sees each classification once"
    alert_ids = collections.Counter(
        (a.value["alert_id"], a.value["revision"]) for a in reader.alerts()
    )
    assert alert_ids
    assert set(alert_ids.values()) == {1}, "and each alert once"
    assert committed(env.bootstrap, env.group, env.input) == {0: len(events)}


def test_a_fenced_producer_stops_the_service_without_committing(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=1)
    settings = env.settings()
    svc = ServiceThread(settings).start()
    try:
        svc.wait_assigned()
        produce_events(env.bootstrap, env.input, [make_event("fence-e1", "fence-p", "fence-a1")])
        wait_for(
            lambda: committed(env.bootstrap, env.group, env.input) == {0: 1},
            what="the first transaction",
        )

        zombie_killer = KafkaProducer(
            bootstrap_servers=env.bootstrap,
            transactional_id=settings.transactional_id(socket.gethostname()),
        )
        try:
            zombie_killer.init_transactions()  # bumps the epoch: the service's producer is fenced
        finally:
            zombie_killer.close()

        produce_events(
            env.bootstrap, env.input, [make_event("fence-e2", "fence-p", "fence-a2", minutes=5)]
        )
        assert svc.join(30) == EXIT_FENCED
    finally:
        if svc.alive:
            svc.stop()
    assert committed(env.bootstrap, env.group, env.input) == {0: 1}
