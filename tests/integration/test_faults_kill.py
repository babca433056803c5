"""Fault injection (issue 5, faults 1 and 3): `kill -9` of the consumer process at random
points, restarted each time, and one of two instances of a group killed for good.

Every test produces patient-keyed synthetic events on a 3-partition input topic, computes the
expected alerts offline (HistoryStore + Pipeline over the same events in per-patient order,
`helpers.offline_alerts`) and reads every output topic back with a read_committed consumer.
exactly_once: every expected alert exactly once (by alert_id and status), each event
classified once. at_least_once: every expected alert at least once, copies identical apart
from created_at.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults import (
    ALO,
    EOS,
    LogTail,
    Probe,
    assert_delivery,
    judge,
    kill9,
    record_result,
    stop_gracefully,
    transactions_decided,
    wait_committed,
    wait_log,
)
from helpers import (
    Env,
    ServiceProcess,
    offline_alerts,
    produce_events,
)

from consumer.tools.synthetic import SyntheticGenerator

pytestmark = pytest.mark.fault

PARTITIONS = 3


def _committed_total(probe: Probe, env: Env) -> int:
    return sum(probe.committed(env.group, env.input).values())


@pytest.mark.parametrize("mode", [ALO, EOS])
def test_kill_9_at_random_points_and_restart(
    mode: str,
    env: Env,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Four `kill -9` at seeded random points of the stream (each in its own fifth of the
    3,000 events, plus 0-50 ms) while the events are processed; a restart
    (same HER2_INSTANCE_ID, as a StatefulSet pod) after each; then the last run finishes."""
    started = time.monotonic()
    seed = 1001 if mode == ALO else 1002
    rng = random.Random(seed)  # noqa: S311 - seeded test data
    kills = 4
    create_topics(env.input, partitions=PARTITIONS)
    events = SyntheticGenerator(seed=seed, id_prefix=f"kill-{mode}").events(3000)
    expected = offline_alerts(events)
    produce_events(env.bootstrap, env.input, events)
    environ = env.environ(
        HER2_PROCESSING_GUARANTEE=mode,
        HER2_INSTANCE_ID=unique_name("i")[-40:],
        HER2_MAX_POLL_RECORDS="40",
    )

    progress_at_kill: list[int] = []
    delays: list[float] = []
    with Probe(env.bootstrap) as probe:
        for n in range(kills):
            proc = ServiceProcess(environ, tmp_path, f"run-{n}")
            with proc:
                tail = LogTail(proc.stderr_path)
                wait_log(
                    tail,
                    lambda t: t.count("batch committed") >= 1,
                    45,
                    f"run {n} to commit a batch",
                    proc,
                )
                # a random point of the stream (not of time: the service's speed varies by
                # machine and by version), then a random moment within a batch or two
                share = rng.uniform((n + 0.25) / (kills + 1), (n + 0.75) / (kills + 1))
                target = int(len(events) * share)
                deadline = time.monotonic() + 120
                while _committed_total(probe, env) < target:
                    assert proc.proc.poll() is None, proc.logs()[-3000:]
                    assert time.monotonic() < deadline, f"run {n} never reached {target}"
                    time.sleep(0.02)
                delay = rng.uniform(0.0, 0.05)
                time.sleep(delay)
                assert proc.proc.poll() is None, proc.logs()[-3000:]
                assert kill9(proc) == -9
            delays.append(round(delay, 3))
            progress_at_kill.append(_committed_total(probe, env))
        for n, done in enumerate(progress_at_kill):
            assert 0 < done < len(events), f"kill {n} was not mid-stream ({done} committed)"

        last = ServiceProcess(environ, tmp_path, "final")
        with last:
            wait_committed(probe, env.group, env.input, 120, alive=lambda: last.proc.poll() is None)
            assert stop_gracefully(last) == 0, last.logs()[-3000:]

    records, verdict, classified, counts = judge(env, expected, events)
    record_result(
        "kill -9 at random points, restart",
        mode=mode,
        seed=seed,
        kills=kills,
        kill_delays_s=delays,
        committed_at_kills=progress_at_kill,
        **counts,
        alerts=verdict.as_dict(),
        seconds=round(time.monotonic() - started, 1),
    )
    assert_delivery(mode, verdict, classified, (e["event_id"] for e in events))
    assert records["dlq"] == []


@pytest.mark.parametrize("mode", [ALO, EOS])
def test_one_of_two_instances_killed_the_survivor_takes_over(
    mode: str,
    env: Env,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Two instances (static members a and b) share 3 partitions while events stream in;
    b is killed with `kill -9` and never comes back: after the session timeout a takes
    b's partitions, restores their history and processes the rest; nothing is lost."""
    started = time.monotonic()
    seed = 3001 if mode == ALO else 3002
    create_topics(env.input, partitions=PARTITIONS)
    events = SyntheticGenerator(seed=seed, id_prefix=f"takeover-{mode}").events(2400)
    expected = offline_alerts(events)
    session_ms = int(env.environ()["HER2_SESSION_TIMEOUT_MS"])
    extra = {"HER2_PROCESSING_GUARANTEE": mode, "HER2_MAX_POLL_RECORDS": "40"}
    if mode == EOS:
        # b's transaction stays open once it is killed; the broker aborts it after the
        # transaction timeout (production default 60 s), and until then read_committed
        # readers of b's output partitions (and a's restore of b's changelog partitions)
        # stop at b's transaction. Shortened here so the test stays quick.
        extra["HER2_TRANSACTION_TIMEOUT_MS"] = "8000"
    env_a = env.environ(HER2_INSTANCE_ID=unique_name("a")[-40:], **extra)
    env_b = env.environ(HER2_INSTANCE_ID=unique_name("b")[-40:], **extra)

    produce_events(env.bootstrap, env.input, events[:600])
    stop_streaming = threading.Event()

    def stream() -> None:  # the rest arrives while the instances work and while b dies
        for i in range(600, len(events), 60):
            if stop_streaming.wait(0.1):
                return
            produce_events(env.bootstrap, env.input, events[i : i + 60])

    streamer = threading.Thread(target=stream, name="streamer")
    a = ServiceProcess(env_a, tmp_path, "a")
    b = ServiceProcess(env_b, tmp_path, "b")
    with a, b, Probe(env.bootstrap) as probe:
        tail_a, tail_b = LogTail(a.stderr_path), LogTail(b.stderr_path)
        streamer.start()
        try:
            for tail, proc, name in ((tail_a, a, "a"), (tail_b, b, "b")):
                wait_log(
                    tail, lambda t: t.count("batch committed") >= 1, 45, f"{name} to work", proc
                )
            b_partitions = _owned(tail_b)
            assert b_partitions, "b owns partitions before it is killed"
            assert _owned(tail_a).isdisjoint(b_partitions)
            assert kill9(b) == -9
            killed_at = time.monotonic()
            done_at_kill = _committed_total(probe, env)
            wait_log(
                tail_a,
                lambda t: b_partitions <= _owned(t) and _restored(t, b_partitions),
                session_ms / 1000 + 30,
                "a to take b's partitions over",
                a,
            )
            takeover_s = time.monotonic() - killed_at
        finally:
            stop_streaming.set()
            streamer.join()
        wait_committed(probe, env.group, env.input, 120, alive=lambda: a.proc.poll() is None)
        assert stop_gracefully(a) == 0, a.logs()[-3000:]
    # exactly_once: b's last transaction stays open until the broker aborts it; read_committed
    # readers of its partitions wait until then (measured from the kill)
    outputs_topics = [name for key, name in env.topics.items() if key != "input"]
    transactions_decided(env.bootstrap, outputs_topics, timeout=60)
    settled_s = time.monotonic() - killed_at
    assert 0 < done_at_kill < len(events), "b died mid-stream"
    assert takeover_s >= session_ms / 1000 * 0.8, "taken over only once b's session expired"

    records, verdict, classified, counts = judge(env, expected, events)
    record_result(
        "two instances, one killed (kill -9), survivor takes over",
        mode=mode,
        seed=seed,
        b_partitions=sorted(b_partitions),
        committed_at_kill=done_at_kill,
        takeover_s=round(takeover_s, 1),
        outputs_readable_after_kill_s=round(settled_s, 1),
        **counts,
        alerts=verdict.as_dict(),
        seconds=round(time.monotonic() - started, 1),
    )
    assert_delivery(mode, verdict, classified, (e["event_id"] for e in events))
    assert records["dlq"] == []


def _owned(tail: LogTail) -> set[int]:
    """Input partitions a service owns now, from its "partitions assigned/revoked/lost" log."""
    tail.read()
    owned: set[int] = set()
    for event in tail.events:
        name = event.get("event")
        if name == "partitions assigned":
            owned |= set(event.get("partitions", []))
        elif name in ("partitions revoked", "partitions lost"):
            owned -= set(event.get("partitions", []))
    return owned


def _restored(tail: LogTail, partitions: set[int]) -> bool:
    """Whether the history of `partitions` was restored after they were last assigned."""
    pending = set(partitions)
    for event in tail.events:
        name = event.get("event")
        if name == "partitions assigned":
            pending |= set(event.get("partitions", [])) & partitions
        elif name == "history restored":
            pending -= set(event.get("partitions", []))
    return not pending
