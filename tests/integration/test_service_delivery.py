"""Delivery guarantees of `her2-consumer run` as a real process: a crash between the broker's
acknowledgement and the commit redelivers with identical alerts, SIGTERM finishes the batch
and commits, and a missing input topic is waited for (never auto-created)."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Env,
    ServiceProcess,
    ServiceThread,
    TopicReader,
    committed,
    make_event,
    output_reader,
    produce_events,
    running,
    wait_for,
)
from kafka import KafkaAdminClient  # imported first by conftest.py, under its warning filter

from consumer.avro.codec import Decoder
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.service import EXIT_CONFIG
from consumer.tools.synthetic import SyntheticGenerator


def _alerting_events(prefix: str, count: int) -> list[dict[str, object]]:
    """Events that each raise several alerts (metastatic HER2-low after chemotherapy)."""
    return [
        make_event(
            f"{prefix}-e{i:02d}",
            f"{prefix}-p{i % 3}",
            f"{prefix}-a{i:02d}",
            minutes=i,
            site="DISTANT_METASTASIS",
            planned=["trastuzumab"],
        )
        for i in range(count)
    ]


def test_kill_between_ack_and_commit_redelivers_with_identical_alert_ids(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    create_topics(env.input, partitions=1)
    events = _alerting_events("crash", 12)
    produce_events(env.bootstrap, env.input, events)

    crashing = ServiceProcess(
        env.environ(HER2_TEST_CRASH_BEFORE_COMMIT="2", HER2_MAX_POLL_RECORDS="4"), tmp_path, "crash"
    )
    with crashing:
        code = crashing.wait(60)
    assert code == -9, f"expected SIGKILL, got {code}:\n{crashing.logs()[-2000:]}"
    # batch 1 is normally committed; a commit refused during a rebalance leaves it uncommitted
    # too, which at-least-once allows (it is then redelivered like batch 2)
    done_before = committed(env.bootstrap, env.group, env.input)[0] or 0

    with output_reader(env) as reader:
        reader.settle(0.5)
        published_before = len(reader.records["classification"])
        assert done_before < published_before, (
            "the crash must leave acknowledged outputs whose offsets were not committed"
        )
        first_run = {_content(a.value) for a in reader.alerts()}

        with running(env.settings()):
            reader.wait(
                lambda r: len(r.classifications()) >= len(events) + published_before - done_before,
                what="every event after the restart",
            )
            reader.settle(0.5)

    per_event = collections.Counter(c["event_id"] for c in reader.classifications())
    redelivered = {e["event_id"] for e in events[done_before:published_before]}
    assert per_event == {e["event_id"]: 2 if e["event_id"] in redelivered else 1 for e in events}

    copies = collections.defaultdict(list)  # (alert_id, revision) is one publication
    for alert in reader.alerts():
        copies[(alert.value["alert_id"], alert.value["revision"])].append(alert)
    assert copies
    for outs in copies.values():
        event_id = outs[0].value["event_id"]
        assert len(outs) == (2 if event_id in redelivered else 1), event_id
        # processed again against the history as it was before the batch (the restore skips
        # changelog records ahead of the committed offset): built again, so equal to the first
        # copy but for created_at, the time it was built
        assert len({_content(o.value) for o in outs}) == 1, "a redelivered alert has one content"
    assert first_run <= {_content(a.value) for a in reader.alerts()}
    assert committed(env.bootstrap, env.group, env.input) == {0: len(events)}


def _content(alert: dict[str, Any]) -> str:
    """An alert record's content: every field but created_at, as canonical JSON."""
    fields = {k: v for k, v in alert.items() if k != "created_at"}
    return json.dumps(fields, sort_keys=True, default=str)


def test_sigterm_mid_stream_finishes_the_batch_commits_and_loses_nothing(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    create_topics(env.input, partitions=2)
    events = SyntheticGenerator(seed=5, id_prefix="sigterm").events(240)
    chunks = [events[i : i + 20] for i in range(0, len(events), 20)]
    produce_events(env.bootstrap, env.input, chunks[0])

    stop_producing = threading.Event()

    def keep_producing() -> None:
        for chunk in chunks[1:]:
            if stop_producing.wait(0.15):
                return
            produce_events(env.bootstrap, env.input, chunk)

    producer = threading.Thread(target=keep_producing)
    proc = ServiceProcess(env.environ(HER2_MAX_POLL_RECORDS="15"), tmp_path, "sigterm")
    with proc, output_reader(env) as reader:
        producer.start()
        try:
            reader.wait(lambda r: len(r.records["classification"]) >= 40, what="some progress")
            proc.terminate()
            code = proc.wait(30)
        finally:
            stop_producing.set()
            producer.join()
        assert code == 0, proc.logs()[-3000:]
        assert any(e.get("event") == "shutdown" for e in proc.log_events())
        reader.settle(0.5)
        offsets = committed(env.bootstrap, env.group, env.input)
        processed = sum(o or 0 for o in offsets.values())
        assert processed == len(reader.records["classification"]), "committed = published"
        assert 0 < processed < len(events), "the stop happened mid-stream"

        # whatever reached the input topic before the producer stopped is processed by the
        # next instance, from the committed offsets: nothing lost, nothing twice
        produced = _input_event_ids(env)
        with running(env.settings()):
            reader.wait(
                lambda r: r.classified_ids() >= set(produced), what="the rest of the stream"
            )
            reader.settle(0.5)

    out = [c["event_id"] for c in reader.classifications()]
    assert sorted(out) == sorted(produced), "count in = count out, each event exactly once"
    assert len(produced) > processed


def _input_event_ids(env: Env) -> list[str]:
    """Event ids of every record in the input topic."""
    decoder = Decoder("auto", parsed_schema(PATHOLOGY_RESULT))
    with TopicReader(env.bootstrap, {"input": env.input}) as reader:
        reader.settle(0.5)
        return [decoder.decode(r.raw)["event_id"] for r in reader.records["input"]]


def test_the_service_runs_on_the_kafka_client_under_test(env: Env, kafka_client: str) -> None:
    """conftest.py runs this module once per Kafka client: the client reaches the settings
    of the services the tests start, in-process and as subprocesses (both via Env)."""
    assert kafka_client in ("kafka-python", "confluent")
    assert env.settings().kafka_client == kafka_client
    assert env.environ()["HER2_KAFKA_CLIENT"] == kafka_client


def test_a_transaction_timeout_above_the_brokers_limit_is_a_configuration_error(
    env: Env, create_topics: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker's transaction.max.timeout.ms (15 minutes by default) refuses InitProducerId
    with INVALID_TRANSACTION_TIMEOUT: exit 2 naming the variable, not a Kafka error."""
    create_topics(env.input, partitions=1)
    settings = env.settings(
        HER2_PROCESSING_GUARANTEE="exactly_once",
        HER2_INSTANCE_ID=f"{env.input}-0",
        HER2_TRANSACTION_TIMEOUT_MS="1200000",
        HER2_MAX_POLL_INTERVAL_MS="1200000",
    )
    svc = ServiceThread(settings).start()
    assert svc.join(60) == EXIT_CONFIG
    assert "the broker refused HER2_TRANSACTION_TIMEOUT_MS=1200000" in capsys.readouterr().err


def test_a_missing_input_topic_is_waited_for_and_never_created(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    svc = ServiceThread(env.settings()).start()
    try:
        reason = f"waiting for input topic {env.input} (input topic missing)"
        wait_for(lambda: reason in svc.health.reasons, what="the wait to begin")
        # liveness keeps beating while the service waits (issue 14 item 4: it used to stop, and
        # /healthz turned 503 after the stall threshold, restarting the pod in a loop)
        beats = svc.health.beats
        wait_for(lambda: svc.health.beats >= beats + 2, what="health beats during the wait")
        assert svc.alive
        assert not svc.service.started.is_set()
        assert not svc.health.ready
        with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
            assert env.input not in admin.list_topics()
        create_topics(env.input, partitions=1)
        svc.wait_assigned()
        events = _alerting_events("late", 3)
        produce_events(env.bootstrap, env.input, events)
        with output_reader(env) as reader:
            reader.wait(lambda r: len(r.classified_ids()) == 3, what="classifications")
    finally:
        assert svc.stop() == 0


def test_unacknowledged_outputs_are_retried_then_the_service_stops_without_committing(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=1)
    fast_failure = {
        "HER2_REQUEST_TIMEOUT_MS": "2000",
        "HER2_DELIVERY_TIMEOUT_MS": "3000",
        "HER2_PUBLISH_RETRIES": "1",
    }
    first, second = _alerting_events("pubfail", 2)
    svc = ServiceThread(env.settings(**fast_failure)).start()
    try:
        svc.wait_assigned()
        produce_events(env.bootstrap, env.input, [first])
        wait_for(lambda: committed(env.bootstrap, env.group, env.input) == {0: 1}, what="1 commit")
        # the T-DXd alert topic disappears: the next event's T-DXd alert cannot be delivered
        with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
            admin.delete_topics([env.topics["tdxd"]])
            wait_for(lambda: env.topics["tdxd"] not in admin.list_topics(), what="deletion")
        produce_events(env.bootstrap, env.input, [second])
        code = svc.join(60)
    finally:
        if svc.alive:
            svc.stop()
    assert code == 1, "a publish failure stops the service with a non-zero code"
    assert svc.metric("her2_consumer_publish_retries_total") == 1
    assert committed(env.bootstrap, env.group, env.input) == {0: 1}, "nothing committed past it"

    # with the topic back, the next instance processes the event again: nothing was lost
    create_topics(env.topics["tdxd"], partitions=1)
    with running(env.settings()), output_reader(env) as reader:
        reader.wait(
            lambda r: any(a.value["event_id"] == second["event_id"] for a in r.records["tdxd"]),
            what="the retried event's T-DXd alert",
        )
    assert committed(env.bootstrap, env.group, env.input) == {0: 2}
