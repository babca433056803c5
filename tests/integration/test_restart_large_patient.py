"""Issue 15, item 2: a patient of 250 accessions survives an ordinary restart (real broker).

Before the changelog was split per accession (her2.patient-history.v2: one record for the
patient-wide part and one per accession, consumer/history.py), a patient's whole state was one
changelog record; past 1 MiB (about 190 accessions) it was logged and not written, so a
restarted service knew the patient as the changelog last had it. Reported case: a 3+ result
was forgotten, and the next HER2-low report raised TDXD-LOW-DB04 ("no sample ever POSITIVE")
instead of RT-CONVERSION.

The story: one metastatic patient, ids of ID_LENGTH characters (valid: at most 10,000), 249
accessions with a 1+ result (TDXD-LOW-DB04 holds), then accession 250 with a 3+ result
(RT-CONVERSION opens, TDXD-LOW-DB04 resolves). The 3+ comes last on purpose: a history cut off
at 1 MiB lacks the latest accessions, not the first. A service runs over these 250 events in
batches of BATCH, is stopped once every offset is committed, and a new service process with an
empty HER2_STATE_DIR restores the patient from the changelog. Then a new 1+ report with T-DXd
planned, its amendment and a correction of an old accession: forgetting the 3+ would open
TDXD-LOW-DB04 again and lose RT-CONVERSION. Every published record must equal what
`her2-consumer evaluate --history` prints for all the events, and no changelog record may come
near 1 MiB.

Checked against eb67745 (the last commit before the split), with this test adapted to its
per-event alerts: its changelog's last record for the patient was written at 150 accessions
(932,201 bytes; the next four were logged as too large), and after the restart it published
TDXD-LOW-DB04 and TC-HER2-TARGETED-NOT-POSITIVE ACTIVE and no RT-CONVERSION.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults import (
    ALO,
    EOS,
    LogTail,
    Probe,
    alerts_of,
    outputs,
    record_result,
    stop_gracefully,
    wait_committed,
    wait_log,
)
from helpers import (
    ALERT_TOPIC_KEYS,
    Env,
    ServiceProcess,
    end_offsets,
    evaluate_history,
    make_event,
    produce_events,
)

Record = dict[str, Any]

ACCESSIONS = 250  # before the restart; the last one is the 3+
ID_LENGTH = 800  # characters of every id; the old single record passed 1 MiB before 175 accessions
ONE_MIB = 1024 * 1024
LARGEST_RECORD_LIMIT = 64 * 1024  # "far below 1 MiB": one accession's part, however many
BATCH = 25  # records per poll
T_DXD = "Enhertu"
MET = "DISTANT_METASTASIS"
FIRST_COLLECTED = dt.date(2015, 1, 1)


def _long(prefix: str) -> str:
    return prefix + "-" + "x" * (ID_LENGTH - len(prefix) - 1)


PATIENT = _long("large-patient")


def _accession(n: int) -> str:
    return _long(f"accession-{n:04d}")


def _event(n: int) -> str:
    return _long(f"event-{n:04d}")


def _collected(week: int) -> dt.date:
    return FIRST_COLLECTED + dt.timedelta(weeks=week)


def before_restart() -> list[Record]:
    """249 HER2-low metastatic results (1 chemotherapy line, HR-negative), then a 3+."""
    events = [
        make_event(_event(n), PATIENT, _accession(n), minutes=n, collected=_collected(n), site=MET)
        for n in range(ACCESSIONS - 1)
    ]
    last = ACCESSIONS - 1
    events.append(
        make_event(
            _event(last),
            PATIENT,
            _accession(last),
            minutes=last,
            collected=_collected(last),
            planned=["trastuzumab"],
            site=MET,
            score="THREE_PLUS",
            percent=90.0,
            intensity="STRONG",
            completeness="COMPLETE",
        )
    )
    return events


def after_restart() -> list[Record]:
    """A new 1+ report with T-DXd planned, its amendment, a correction of an old accession."""
    new, old = ACCESSIONS, 10
    return [
        make_event(
            _event(new),
            PATIENT,
            _accession(new),
            minutes=new,
            collected=_collected(new + 4),
            planned=[T_DXD],
            site=MET,
        ),
        make_event(
            _event(new + 1),
            PATIENT,
            _accession(new),
            status="AMENDED",
            minutes=new + 1,
            collected=_collected(new + 4),
            planned=[T_DXD, "trastuzumab"],
            site=MET,
        ),
        make_event(
            _event(new + 2),
            PATIENT,
            _accession(old),
            status="CORRECTED",
            minutes=new + 2,
            collected=_collected(old),
            site=MET,
        ),
    ]


def latest(alerts: list[Record]) -> dict[str, tuple[str, str, int]]:
    """Per alert_id, (code, status, revision) of its highest revision."""
    found: dict[str, tuple[str, str, int]] = {}
    for a in alerts:
        if a["alert_id"] not in found or a["revision"] > found[a["alert_id"]][2]:
            found[a["alert_id"]] = (a["code"], a["status"], a["revision"])
    return found


def keys(alerts: list[Record]) -> collections.Counter[tuple[str, int, str]]:
    return collections.Counter((a["alert_id"], a["revision"], a["status"]) for a in alerts)


def by_code(alerts: list[Record]) -> dict[str, tuple[str, int]]:
    """Per code, (status, revision) of its latest record (one patient: one finding per code)."""
    return {code: (status, rev) for code, status, rev in latest(alerts).values()}


def run_then_restart(
    env: Env, environ: dict[str, str], first: list[Record], then: list[Record], tmp_path: Path
) -> tuple[dict[str, dict[int, int]], list[Record], float]:
    """Run 1 over `first` until every offset is committed, stop it; run 2, a new process with
    an empty HER2_STATE_DIR, restores from the changelog and processes `then`. Returns the end
    offsets of the alert topics and the changelog between the runs, run 2's "history
    restored" log events, and the seconds of run 1."""
    started = time.monotonic()
    with Probe(env.bootstrap) as probe:
        produce_events(env.bootstrap, env.input, first)
        run_1 = ServiceProcess(
            {**environ, "HER2_STATE_DIR": str(tmp_path / "state-1")}, tmp_path, "run-1"
        )
        with run_1:
            wait_committed(
                probe, env.group, env.input, 180, alive=lambda: run_1.proc.poll() is None
            )
            assert stop_gracefully(run_1) == 0, run_1.logs()[-3000:]
        first_seconds = time.monotonic() - started
        topics = [env.topics[k] for k in (*ALERT_TOPIC_KEYS, "history")]
        mark = end_offsets(env.bootstrap, topics)

        state_2 = tmp_path / "state-2"  # a new process with nothing local: only the changelog
        state_2.mkdir()
        run_2 = ServiceProcess({**environ, "HER2_STATE_DIR": str(state_2)}, tmp_path, "run-2")
        with run_2:
            tail = LogTail(run_2.stderr_path)
            wait_log(tail, lambda t: t.count("history restored") >= 1, 120, "the restore", run_2)
            produce_events(env.bootstrap, env.input, then)
            wait_committed(
                probe, env.group, env.input, 120, alive=lambda: run_2.proc.poll() is None
            )
            assert stop_gracefully(run_2) == 0, run_2.logs()[-3000:]
            tail.read()
    restored = [e for e in tail.events if e.get("event") == "history restored"]
    return mark, restored, first_seconds


@pytest.mark.parametrize("mode", [ALO, EOS])
def test_a_250_accession_patient_survives_a_restart_with_the_alerts_of_evaluate_history(
    mode: str,
    env: Env,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    create_topics(env.input, partitions=1)
    first, then = before_restart(), after_restart()
    events = first + then
    expected_per_event = evaluate_history(events, tmp_path)
    expected = [a for alerts in expected_per_event for a in alerts]
    expected_after = [a for alerts in expected_per_event[len(first) :] for a in alerts]
    # the story is what it claims: the 3+ keeps TDXD-LOW-DB04 closed and RT-CONVERSION open
    assert by_code(expected)["RT-CONVERSION"][0] == "ACTIVE"
    assert by_code(expected)["TDXD-LOW-DB04"][0] == "RESOLVED"
    assert "RT-CONVERSION" in {a["code"] for a in expected_after}
    assert "TDXD-LOW-DB04" not in {a["code"] for a in expected_after}

    environ = env.environ(
        HER2_PROCESSING_GUARANTEE=mode,
        HER2_INSTANCE_ID=unique_name("i")[-40:],
        HER2_HISTORY_STORE="disk",
        HER2_MAX_POLL_RECORDS=str(BATCH),  # the changelog is written over several batches
    )
    mark, restored, first_seconds = run_then_restart(env, environ, first, then, tmp_path)

    records = outputs(env)
    published = [a.value for a in alerts_of(records) if a.value is not None]
    after = [
        a.value
        for a in alerts_of(records)
        if a.value is not None and a.offset >= mark.get(a.topic, {}).get(a.partition, 0)
    ]
    changelog = records["history"]
    sizes = [len(r.key or b"") + len(r.raw or b"") for r in changelog]
    state = {r.key: len(r.key or b"") + len(r.raw or b"") for r in changelog}  # latest per key
    figures = {
        "mode": mode,
        "events": len(events),
        "id_length": ID_LENGTH,
        "alert_records": len(published),
        "changelog_records": len(changelog),
        "changelog_records_before_restart": sum(
            r.offset < mark[r.topic].get(r.partition, 0) for r in changelog
        ),
        "largest_changelog_record_bytes": max(sizes, default=0),
        "changelog_bytes": sum(sizes),
        "patient_state_bytes": sum(state.values()),
        "restored_records": sum(e.get("records", 0) for e in restored),
        "restore_seconds": sum(e.get("seconds", 0.0) for e in restored),
        "first_run_seconds": round(first_seconds, 1),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"large patient restart: {figures}")
    record_result("a 250-accession patient survives a restart", **figures)

    assert len(restored) == 1, restored
    assert restored[0]["patients"] == 1, restored
    assert restored[0]["records"] >= ACCESSIONS + 1, "a patient part and one per accession"
    assert max(sizes) < LARGEST_RECORD_LIMIT, f"largest changelog record {max(sizes)} bytes"
    assert all(size < ONE_MIB for size in sizes)
    assert sum(state.values()) > ONE_MIB, "the patient's state as a whole is over the old limit"

    assert latest(published) == latest(expected), "latest (code, status, revision) per alert_id"
    assert set(keys(published)) == set(keys(expected)), "every (alert_id, revision, status)"
    if mode == EOS:
        assert keys(published) == keys(expected), "read_committed: each record once"
    assert set(keys(after)) == set(keys(expected_after)), "what the restarted service published"
    assert "RT-CONVERSION" in {a["code"] for a in after}, "the 3+ was remembered"
    assert all(a["code"] != "TDXD-LOW-DB04" for a in after), "no 'no sample ever POSITIVE'"
    final = by_code(published)
    assert final["RT-CONVERSION"][0] == "ACTIVE"
    assert final["TDXD-LOW-DB04"][0] != "ACTIVE"
