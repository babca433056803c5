"""Patient history through Kafka (issue 4): alerts that need earlier events of the patient,
history restored from the compacted changelog after a crash, the report lifecycle end to end,
and partitions (with their history) moving between two instances of one group."""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import (
    Env,
    ServiceProcess,
    ServiceThread,
    committed,
    make_event,
    offline_alerts,
    output_reader,
    pipeline,
    produce_events,
    running,
    wait_for,
)

from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator


def _ihc_zero_primary(event_id: str, patient: str, accession: str) -> dict[str, Any]:
    """An early-stage primary tumour, IHC 0 with no staining (HER2 NULL), no prior results."""
    return make_event(
        event_id,
        patient,
        accession,
        score="ZERO",
        percent=0.0,
        intensity="NONE",
        completeness="NONE",
        setting="EARLY",
        chemo_lines=None,
        collected=dt.date(2022, 3, 1),
    )


def _one_plus_metastasis(
    event_id: str, patient: str, accession: str, minutes: int
) -> dict[str, Any]:
    """A later liver metastasis, IHC 1+ (HER2-low), one metastatic chemotherapy line."""
    return make_event(
        event_id,
        patient,
        accession,
        minutes=minutes,
        site="DISTANT_METASTASIS",
        collected=dt.date(2024, 6, 1),
    )


def _null_metastasis_after_low_primary(prefix: str) -> list[dict[str, Any]]:
    """Worked example 6 split over two events: a 1+ primary, then an IHC 0 (null) metastasis."""
    primary = make_event(
        f"{prefix}-e1",
        f"{prefix}-p",
        f"{prefix}-a1",
        setting="EARLY",
        chemo_lines=None,
        collected=dt.date(2021, 1, 4),
    )
    metastasis = make_event(
        f"{prefix}-e2",
        f"{prefix}-p",
        f"{prefix}-a2",
        minutes=30,
        site="DISTANT_METASTASIS",
        score="ZERO",
        percent=0.0,
        intensity="NONE",
        completeness="NONE",
        collected=dt.date(2024, 2, 2),
    )
    return [primary, metastasis]


def _codes(reader: Any, event_id: str) -> dict[str, str]:
    return {
        a.value["code"]: a.value["status"]
        for a in reader.alerts()
        if a.value["event_id"] == event_id
    }


def test_alerts_use_the_patients_earlier_events_not_only_prior_results(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=2)
    zero_then_low = [
        _ihc_zero_primary("hist-e1", "hist-p", "hist-a1"),
        _one_plus_metastasis("hist-e2", "hist-p", "hist-a2", minutes=30),
    ]
    low_then_null = _null_metastasis_after_low_primary("hist6")
    assert all(not e["prior_her2_results"] for e in zero_then_low + low_then_null)

    with running(env.settings()), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, zero_then_low[:1] + low_then_null[:1])
        reader.wait(lambda r: len(r.classified_ids()) == 2, what="the first events")
        produce_events(env.bootstrap, env.input, zero_then_low[1:] + low_then_null[1:])
        reader.wait(lambda r: len(r.classified_ids()) == 4, what="the later events")
        reader.settle(0.5)

    later = _codes(reader, "hist-e2")
    assert later.get("RT-DISCORDANT") == "ACTIVE", later
    assert later.get("TDXD-LOW-DB04") == "ACTIVE", later
    detail = next(
        a.value["detail"]
        for a in reader.alerts()
        if a.value["event_id"] == "hist-e2" and a.value["code"] == "RT-DISCORDANT"
    )
    assert "hist-a1" in detail, "the discordance names the remembered sample"
    assert "NULL" in detail
    # without the remembered primary, the metastasis alone is not discordant
    assert "RT-DISCORDANT" not in {a["code"] for a in pipeline().process(zero_then_low[1]).alerts}

    # worked example 6: the T-DXd route exists only through the remembered 1+ primary
    null_codes = _codes(reader, "hist6-e2")
    assert {"RT-DISCORDANT", "TDXD-LOW-DB04"} <= set(null_codes), null_codes
    assert "TDXD-LOW-DB04" not in {a["code"] for a in pipeline().process(low_then_null[1]).alerts}


def test_history_is_restored_from_the_changelog_after_a_crash(
    env: Env, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    create_topics(env.input, partitions=2)
    first = [
        _ihc_zero_primary("crash-e1", "crash-p", "crash-a1"),
        *_null_metastasis_after_low_primary("crash6")[:1],
        *SyntheticGenerator(seed=9, id_prefix="crashmix").events(30),
    ]
    produce_events(env.bootstrap, env.input, first)

    with output_reader(env) as reader:
        with ServiceProcess(env.environ(), tmp_path, "first") as proc:
            reader.wait(
                lambda r: r.classified_ids() >= {e["event_id"] for e in first},
                what="the first instance's classifications",
            )
            # the changelog is written after the alerts are acknowledged and before the commit:
            # once everything is committed, the history is in the changelog
            wait_for(
                lambda: (
                    sum(o or 0 for o in committed(env.bootstrap, env.group, env.input).values())
                    >= len(first)
                ),
                what="the first instance's commits",
            )
            proc.kill()  # kill -9: no goodbye to the group, nothing flushed on the way out
        restored_patients = {e["patient_id"] for e in first}

        svc = ServiceThread(env.settings()).start()
        try:
            svc.wait_assigned()
            assert svc.metric("her2_consumer_history_restored_records_total") >= len(
                restored_patients
            )
            assert svc.metric("her2_consumer_history_restore_seconds_count") >= 1
            later = [
                _one_plus_metastasis("crash-e2", "crash-p", "crash-a2", minutes=90),
                _null_metastasis_after_low_primary("crash6")[1],
            ]
            produce_events(env.bootstrap, env.input, later)
            reader.wait(
                lambda r: {"crash-e2", "crash6-e2"} <= r.classified_ids(), what="the later events"
            )
            reader.settle(0.5)
        finally:
            assert svc.stop() == 0

    assert {"RT-DISCORDANT", "TDXD-LOW-DB04"} <= set(_codes(reader, "crash-e2"))
    assert {"RT-DISCORDANT", "TDXD-LOW-DB04"} <= set(_codes(reader, "crash6-e2"))


def test_amended_corrected_and_cancelled_reports_retract_alerts_end_to_end(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=1)
    meta = {"site": "DISTANT_METASTASIS", "planned": ["trastuzumab"]}
    positive = {
        "score": "THREE_PLUS",
        "percent": 90.0,
        "intensity": "STRONG",
        "completeness": "COMPLETE",
    }
    events = [
        # amended: the 1+ becomes 3+, so the HER2-low alerts no longer hold
        make_event("lc-e1", "lc-p1", "lc-a1", minutes=0, **meta),
        make_event("lc-e2", "lc-p1", "lc-a1", status="AMENDED", minutes=10, **meta, **positive),
        # cancelled: every active alert of the accession is retracted
        make_event("lc-e3", "lc-p2", "lc-a2", minutes=0, **meta),
        make_event("lc-e4", "lc-p2", "lc-a2", status="CANCELLED", minutes=10, **meta),
        # corrected: trastuzumab is no longer planned, the therapy caution goes
        make_event("lc-e5", "lc-p3", "lc-a3", minutes=0, **meta),
        make_event(
            "lc-e6", "lc-p3", "lc-a3", status="CORRECTED", minutes=10, site="DISTANT_METASTASIS"
        ),
    ]
    produce_events(env.bootstrap, env.input, events)
    with running(env.settings()), output_reader(env) as reader:
        reader.wait(lambda r: len(r.classified_ids()) == len(events), what="every classification")
        reader.settle(0.5)

    published = [
        (
            a.value["alert_id"],
            a.value["revision"],
            a.value["code"],
            a.value["status"],
            a.value["patient_id"],
        )
        for a in reader.alerts()
    ]
    store, p = HistoryStore(), pipeline()
    expected = []
    for event in events:
        expected += [
            (a["alert_id"], a["revision"], a["code"], a["status"], a["patient_id"])
            for a in store.apply(event, p).alerts
        ]
    assert sorted(published) == sorted(expected)

    by_patient = collections.defaultdict(list)
    for alert_id, _revision, code, status, patient in published:
        by_patient[patient].append((alert_id, code, status))
    # section 8: AMENDED ends findings with new information (RESOLVED); CANCELLED and
    # CORRECTED withdraw the data the findings rested on (RETRACTED)
    for patient, closing, closed_codes in (
        ("lc-p1", "RESOLVED", {"TDXD-LOW-DB04", "TC-HER2-TARGETED-NOT-POSITIVE"}),
        ("lc-p2", "RETRACTED", None),
        ("lc-p3", "RETRACTED", {"TC-HER2-TARGETED-NOT-POSITIVE"}),
    ):
        alerts = by_patient[patient]
        active = {alert_id: code for alert_id, code, status in alerts if status == "ACTIVE"}
        closed = {alert_id: code for alert_id, code, status in alerts if status == closing}
        assert closed, patient
        assert set(closed) <= set(active), "a closing record re-publishes an earlier alert id"
        if closed_codes is None:
            assert closed == active, "CANCELLED retracts every finding resting on it"
        else:
            assert set(closed.values()) == closed_codes, (patient, closed)


def test_two_instances_split_the_partitions_and_scaling_loses_nothing(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=4)
    events = SyntheticGenerator(seed=21, id_prefix="scale").events(240)
    phases = [events[:80], events[80:160], events[160:]]
    settings = env.settings(HER2_MAX_POLL_RECORDS="20")

    with output_reader(env) as reader, running(settings) as a:
        produce_events(env.bootstrap, env.input, phases[0])
        reader.wait(lambda r: len(r.classified_ids()) == 80, what="phase 1 on one instance")

        b = ServiceThread(settings).start()
        try:
            wait_for(
                lambda: (
                    b.service.assigned_partitions() and len(a.service.assigned_partitions()) < 4
                ),
                what="the second instance to take partitions",
            )
            wait_for(
                lambda: (
                    len(a.service.assigned_partitions()) + len(b.service.assigned_partitions()) == 4
                ),
                what="all four partitions owned",
            )
            assert set(a.service.assigned_partitions()).isdisjoint(b.service.assigned_partitions())
            produce_events(env.bootstrap, env.input, phases[1])
            reader.wait(lambda r: len(r.classified_ids()) == 160, what="phase 2 on two instances")
            assert b.metric("her2_consumer_events_total", {"outcome": "processed"}) > 0

            # remove the second instance while the last phase streams in
            streaming = threading.Thread(
                target=lambda: [
                    produce_events(env.bootstrap, env.input, phases[2][i : i + 10])
                    for i in range(0, len(phases[2]), 10)
                ]
            )
            streaming.start()
            try:
                reader.wait(lambda r: len(r.classified_ids()) >= 170, what="phase 3 to start")
            finally:
                assert b.stop() == 0
                streaming.join()
        finally:
            if b.alive:
                b.stop()
        wait_for(
            lambda: len(a.service.assigned_partitions()) == 4,
            what="partitions back on one instance",
        )
        reader.wait(lambda r: len(r.classified_ids()) == len(events), what="every event")
        reader.settle(0.5)
        assert a.metric("her2_consumer_rebalances_total", {"kind": "assigned"}) >= 2

    assert reader.classified_ids() == {e["event_id"] for e in events}
    assert reader.alert_triples() == offline_alerts(events)
    assert reader.records["dlq"] == []
