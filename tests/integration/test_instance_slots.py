"""Issue 15, item 5, against the real broker: exactly-once processes on one host without
HER2_INSTANCE_ID. Each claims its own slot on the host (consumer/instance.py), so three of them
in one group use three transactional ids and never fence each other (they used to share
`<group>-<hostname>`: each new producer fenced the others, exit 3, restart, repeat); and a
process killed inside a transaction takes its slot, hence its transactional id, back when it
restarts, so its init_transactions() aborts the dead transaction at once instead of leaving it
to the broker's transaction timeout.

Every process runs `python -m consumer run` in its own subprocess with its own metrics port
(HER2_HTTP_PORT=0: any free port) and the same HER2_STATE_DIR.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faults import (
    EOS,
    LogTail,
    Probe,
    assert_delivery,
    judge,
    record_result,
    stop_gracefully,
    wait_committed,
    wait_log,
)
from helpers import Env, ServiceProcess, offline_alerts, produce_events
from kafka import KafkaAdminClient  # imported first by conftest.py, under its warning filter

from consumer.tools.synthetic import SyntheticGenerator

PARTITIONS = 3
PROCESSES = 3


def _environ(env: Env, state_dir: Path, **extra: str) -> dict[str, str]:
    environ = env.environ(
        HER2_PROCESSING_GUARANTEE=EOS,
        HER2_STATE_DIR=str(state_dir),
        HER2_MAX_POLL_RECORDS="20",
        HER2_HTTP_PORT="0",  # each process its own free port
        **extra,
    )
    assert "HER2_INSTANCE_ID" not in environ
    return environ


def _claimed(tail: LogTail) -> dict[str, Any]:
    [claimed] = [e for e in tail.events if e.get("event") == "instance slot claimed"]
    return claimed


def _owned(tail: LogTail) -> set[int]:
    owned: set[int] = set()
    for event in tail.events:
        if event.get("event") == "partitions assigned":
            owned |= set(event.get("partitions", []))
        elif event.get("event") in ("partitions revoked", "partitions lost"):
            owned -= set(event.get("partitions", []))
    return owned


def _fenced(tail: LogTail) -> bool:
    tail.read()
    return any("fenced" in str(e.get("event", "")).lower() for e in tail.events)


def _report(procs: list[ServiceProcess], tails: list[LogTail]) -> str:
    """Exit code, fencing and transactional id of each process (for failure messages)."""
    parts = []
    for n, (proc, tail) in enumerate(zip(procs, tails, strict=True)):
        tail.read()
        claimed = [e for e in tail.events if e.get("event") == "instance slot claimed"]
        parts.append(
            f"p{n}: exit={proc.proc.poll()} fenced={_fenced(tail)} "
            f"transactional_id={claimed[0].get('transactional_id') if claimed else None}"
        )
    return "; ".join(parts)


def _broker_transactional_ids(bootstrap: str, group: str) -> set[str]:
    """The transactional ids the broker's coordinators know for this group's producers."""
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        listings = admin.list_transactions()
    return {
        t.transactional_id
        for per_broker in listings.values()
        for t in per_broker
        if t.transactional_id.startswith(f"{group}-")
    }


def test_three_exactly_once_processes_on_one_host_use_three_transactional_ids(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    started = time.monotonic()
    create_topics(env.input, partitions=PARTITIONS)
    events = SyntheticGenerator(seed=1505, id_prefix="slots").events(300)
    expected = offline_alerts(events)
    environ = _environ(env, tmp_path / "state")
    procs = [ServiceProcess(environ, tmp_path, f"p{n}") for n in range(PROCESSES)]
    tails = [LogTail(p.stderr_path) for p in procs]
    try:
        # every process up, in the group, owning a partition: the events below reach all
        # three producers, so a shared transactional id could not go unnoticed
        for n, (proc, tail) in enumerate(zip(procs, tails, strict=True)):
            wait_log(tail, lambda t: t.count("instance slot claimed") == 1, 60, f"p{n}", proc)
        deadline = time.monotonic() + 90
        while not all(len(_owned(t)) == 1 for t in tails):
            for tail in tails:
                tail.read()
            for n, proc in enumerate(procs):
                assert proc.proc.poll() is None, f"p{n} exited:\n{proc.logs()[-3000:]}"
            assert time.monotonic() < deadline, "no stable assignment of one partition each"
            time.sleep(0.1)
        assert set().union(*(_owned(t) for t in tails)) == set(range(PARTITIONS))

        for i in range(0, len(events), 50):  # streamed while all three work
            produce_events(env.bootstrap, env.input, events[i : i + 50])
            time.sleep(0.2)
        with Probe(env.bootstrap) as probe:
            try:
                wait_committed(
                    probe,
                    env.group,
                    env.input,
                    120,
                    alive=lambda: all(p.proc.poll() is None for p in procs),
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {_report(procs, tails)}") from None
        for n, (proc, tail) in enumerate(zip(procs, tails, strict=True)):
            assert proc.proc.poll() is None, f"p{n} exited: {_report(procs, tails)}"
            assert tail.count("batch committed") >= 1, f"p{n} committed no transaction"
            assert not _fenced(tail), f"p{n} was fenced: {_report(procs, tails)}"
        for n, proc in enumerate(procs):
            assert stop_gracefully(proc) == 0, f"p{n}:\n{proc.logs()[-3000:]}"
    finally:
        for proc in procs:
            proc.kill()

    claims = [_claimed(t) for t in tails]
    assert sorted(c["slot"] for c in claims) == list(range(PROCESSES))
    transactional_ids = {c["transactional_id"] for c in claims}
    assert len(transactional_ids) == PROCESSES
    host = re.escape(re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-"))
    for claim in claims:
        assert re.fullmatch(
            rf"{re.escape(env.group)}-{host}-[0-9a-f]{{8}}-{claim['slot']}",
            claim["transactional_id"],
        )
    # the broker's view, not only our log: three producers with three transactional ids
    assert _broker_transactional_ids(env.bootstrap, env.group) == transactional_ids
    for proc in procs:
        assert "ProducerFenced" not in proc.logs()

    records, verdict, classified, counts = judge(env, expected, events)
    record_result(
        "three exactly_once processes on one host without HER2_INSTANCE_ID",
        transactional_ids=len(transactional_ids),
        **counts,
        alerts=verdict.as_dict(),
        seconds=round(time.monotonic() - started, 1),
    )
    assert_delivery(EOS, verdict, classified, (e["event_id"] for e in events))
    assert records["dlq"] == []


def test_a_process_killed_in_a_transaction_takes_its_slot_back_and_aborts_it(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    # the transaction timeout is long (10 min): the outputs become readable within the test
    # only if the restarted process, under the same transactional id, aborts the transaction
    # its killed predecessor left open
    create_topics(env.input, partitions=1)
    events = SyntheticGenerator(seed=1506, id_prefix="slot-restart").events(60)
    expected = offline_alerts(events)
    produce_events(env.bootstrap, env.input, events)
    state_dir = tmp_path / "state"

    crashing = ServiceProcess(
        _environ(
            env, state_dir, HER2_TEST_CRASH_BEFORE_COMMIT="2", HER2_TRANSACTION_TIMEOUT_MS="600000"
        ),
        tmp_path,
        "crashing",
    )
    with crashing:
        assert crashing.wait(60) == -9, crashing.logs()[-3000:]
    restarted = ServiceProcess(
        _environ(env, state_dir, HER2_TRANSACTION_TIMEOUT_MS="600000"), tmp_path, "restarted"
    )
    with restarted, Probe(env.bootstrap) as probe:
        wait_committed(probe, env.group, env.input, 60, alive=lambda: restarted.proc.poll() is None)
        assert stop_gracefully(restarted) == 0, restarted.logs()[-3000:]

    before, after = (_claimed(_read(p.stderr_path)) for p in (crashing, restarted))
    assert before["slot"] == after["slot"] == 0
    assert before["transactional_id"] == after["transactional_id"]
    records, verdict, classified, _ = judge(env, expected, events)
    assert_delivery(EOS, verdict, classified, (e["event_id"] for e in events))
    assert records["dlq"] == []


def _read(path: Path) -> LogTail:
    tail = LogTail(path)
    tail.read()
    return tail
