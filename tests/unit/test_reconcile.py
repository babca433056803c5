"""consumer/clinical/reconcile.py: a rebuilt history against what the alert topics hold."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from test_patient import LOW, MET_AFTER_CHEMO, report, ticking

from consumer.clinical.patient import Accession, AlertState, PatientState, Published
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.reconcile import (
    CHANGED,
    CLOSED_NOT_RAISED,
    NEW,
    NOT_PUBLISHED,
    NOT_RAISED,
    SAME,
    UNCHANGED_CLOSED,
    Floor,
    plan,
    with_floors,
    without_emitted,
)
from consumer.clinical.rules import load_ruleset
from consumer.state.store import HistoryStore

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=1)  # the rebuild's time
AID = "5f0c2a34-0000-5000-8000-000000000001"


def alert(revision: int, status: str = "ACTIVE", **content: Any) -> dict[str, Any]:
    """A Her2Alert record of one finding (TDXD-LOW-DB04 of patient p1)."""
    return {
        "alert_id": AID,
        "revision": revision,
        "alert_type": "TDXD_ELIGIBILITY",
        "code": "TDXD-LOW-DB04",
        "scope": "PATIENT",
        "status": status,
        "rule_id": "tdxd-low-db04",
        "rule_version": 2,
        "severity": "INFO",
        "patient_id": "p1",
        "accession_id": "a2",
        "event_id": "e2",
        "her2_category": "LOW",
        "title": "title",
        "detail": "detail",
        "recommendation": "recommendation",
        "evidence": ["S1"],
        "ruleset_version": "2026.12-4",
        "created_at": NOW,
        "event_time": None,
        **content,
    }


# (held, rebuilt) -> outcome, the (revision, status) published or None, the state's revision
ROWS = [
    ("same content, held above", alert(2), alert(1), SAME, None, 2),
    ("same content, rebuilt above", alert(1), alert(3), SAME, None, 3),
    (
        "another release's text held",
        alert(2, detail="older text", rule_version=1),
        alert(1),
        CHANGED,
        (3, "ACTIVE"),
        3,
    ),
    ("held open, rebuilt retracted", alert(2), alert(2, "RETRACTED"), CHANGED, (3, "RETRACTED"), 3),
    ("held resolved, rebuilt open", alert(2, "RESOLVED"), alert(1), CHANGED, (3, "ACTIVE"), 3),
    ("both closed, other words", alert(3, "RESOLVED"), alert(2, "RETRACTED"), SAME, None, 3),
    (
        "only the detail differs",
        alert(2, detail="1 line"),
        alert(1, detail="2 lines"),
        CHANGED,
        (3, "ACTIVE"),
        3,
    ),
    ("severity changed", alert(1), alert(1, severity="WARNING"), CHANGED, (2, "ACTIVE"), 2),
    # the replay above what is held (a cancellation sent while stopped): its own revision, as
    # an uninterrupted run numbered it (above both gave r4: measured, 4,751 alerts one above)
    ("rebuilt above, closed", alert(1), alert(3, "RETRACTED"), CHANGED, (3, "RETRACTED"), 3),
    ("rebuilt above, other text", alert(1), alert(2, detail="x"), CHANGED, (2, "ACTIVE"), 2),
    (
        "only transport fields differ",
        alert(2, event_id="e9", created_at=NOW - dt.timedelta(days=9), ruleset_version="x"),
        alert(2, accession_id="a7", her2_category="ULTRALOW"),
        SAME,
        None,
        2,
    ),
    ("rebuilt only, open", None, alert(1), NEW, (1, "ACTIVE"), 1),
    ("rebuilt only, closed", None, alert(2, "RESOLVED"), NOT_PUBLISHED, None, 2),
    ("held only, open", alert(4), None, CLOSED_NOT_RAISED, (5, "RESOLVED"), 5),
    ("held only, closed", alert(3, "RETRACTED"), None, UNCHANGED_CLOSED, None, 3),
]


@pytest.mark.parametrize(
    ("held", "rebuilt", "outcome", "published", "revision"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_the_plan_for_one_finding(
    held: dict[str, Any] | None,
    rebuilt: dict[str, Any] | None,
    outcome: str,
    published: tuple[int, str] | None,
    revision: int,
) -> None:
    done = plan(
        {AID: held} if held else {},
        {AID: rebuilt} if rebuilt else {},
        ruleset_version="2026.12-4",
        now=LATER,
    )
    assert done.outcomes == {outcome: 1}
    assert [(r["revision"], r["status"]) for r in done.publish] == (
        [published] if published else []
    )
    where = rebuilt or held  # the state's finding: the rebuilt one, else the one held
    assert where is not None
    assert done.floors == [
        Floor("p1", "TDXD-LOW-DB04", "PATIENT", where["accession_id"], where["severity"], revision)
    ]
    if published and rebuilt is not None:  # what the rebuild evaluated, renumbered, sent now
        assert done.publish[0] == {**rebuilt, "revision": published[0], "created_at": LATER}


def test_a_finding_no_longer_raised_is_resolved_with_its_reason() -> None:
    held = alert(4, detail="the eligibility text")
    [record] = plan({AID: held}, {}, ruleset_version="2027.01-1", now=NOW).publish
    assert record == {
        **held,
        "revision": 5,
        "status": "RESOLVED",
        "detail": NOT_RAISED.format(ruleset="2027.01-1"),
        "ruleset_version": "2027.01-1",
        "created_at": NOW,
    }


def state() -> PatientState:
    own = {"TDXD-LOW-DB04": AlertState("TDXD-LOW-DB04", 1, True, "INFO", "d1", ("a2",))}
    acc = Accession("a1", alerts={"DG-ASSAY": AlertState("DG-ASSAY", 2, False, "INFO", "d2", ())})
    return PatientState("p1", 3, own, {"a1": acc})


def test_floors_raise_revisions_and_keep_the_rest() -> None:
    floors = [
        Floor("p1", "TDXD-LOW-DB04", "PATIENT", "a2", "INFO", 4),
        Floor("p1", "DG-ASSAY", "REPORT", "a1", "INFO", 5),
    ]
    new, changed = with_floors(state(), "p1", floors)
    assert changed == {None, "a1"}
    assert new.alerts["TDXD-LOW-DB04"] == AlertState(
        "TDXD-LOW-DB04", 4, True, "INFO", "d1", ("a2",)
    )
    assert new.accessions["a1"].alerts["DG-ASSAY"] == AlertState(
        "DG-ASSAY", 5, False, "INFO", "d2", ()
    )
    assert new.seq == 3


def test_a_rebuilt_state_keeps_nothing_a_re_sent_report_would_re_publish() -> None:
    """An accession's `emitted` holds the replay's records (its revision numbers, times, event
    ids): re-published on a re-send of its latest report, they would repeat (alert_id,
    revision) pairs with other content than readers hold (two reviews: below the floors, and
    at equal revisions with other times). A rebuild drops every one."""
    before = state()
    pub = Published("TDXD-LOW-DB04", "a1", 1, "ACTIVE", "opened", "INFO", 2, "LOW", "{}", NOW)
    before = replace(before, accessions={"a1": replace(before.accessions["a1"], emitted=(pub,))})
    new, changed = without_emitted(before)
    assert changed == {"a1"}
    assert new == replace(before, accessions={"a1": replace(before.accessions["a1"], emitted=())})
    assert without_emitted(new) == (new, frozenset())
    # the floors alone leave it to without_emitted
    floor = Floor("p1", "TDXD-LOW-DB04", "PATIENT", "a2", "INFO", 4)
    assert with_floors(before, "p1", [floor])[0].accessions["a1"].emitted == (pub,)


def test_a_floor_at_or_below_the_state_changes_nothing() -> None:
    before = state()
    floors = [
        Floor("p1", "TDXD-LOW-DB04", "PATIENT", "a2", "INFO", 1),
        Floor("p1", "DG-ASSAY", "REPORT", "a1", "INFO", 2),
    ]
    assert with_floors(before, "p1", floors) == (before, frozenset())


def test_a_finding_the_state_lacks_is_added_closed_at_its_floor() -> None:
    floors = [
        Floor("p9", "TDXD-HR-DB06", "PATIENT", "a1", "WARNING", 5),
        Floor("p9", "DG-ASSAY", "REPORT", "a3", "INFO", 2),
    ]
    new, changed = with_floors(None, "p9", floors)
    assert changed == {None, "a3"}
    assert new.alerts == {"TDXD-HR-DB06": AlertState("TDXD-HR-DB06", 5, False, "WARNING", "", ())}
    assert new.accessions["a3"].alerts == {
        "DG-ASSAY": AlertState("DG-ASSAY", 2, False, "INFO", "", ())
    }
    assert new.open_alerts() == 0


def test_a_replaced_state_is_written_and_every_part_is_a_changelog_record() -> None:
    store = HistoryStore()
    new, changed = with_floors(None, "p9", [Floor("p9", "DG-ASSAY", "REPORT", "a3", "INFO", 2)])
    store.replace("p9", new, changed)
    written = store.take_dirty()
    assert [key for key, _ in written] == [b'["A","p9","a3"]']
    assert list(store.records()) == written
    restored = HistoryStore()
    for key, value in store.records():
        restored.restore(key, value)
    assert restored.get("p9") == new


def test_reports_read_again_after_a_rebuild_publish_no_alert() -> None:
    """The records between the group's committed offset and the input's end are evaluated by
    the rebuild's replay, and `run` then reads them again from the committed offset. Against
    the rebuilt state they are redeliveries (an accession's latest report) or stale (an id it
    has seen): nothing is published. A first version left them to `run` against the state as
    readers held it after the last, and a retracted T-DXd alert re-opened and closed again
    (fifth review). Here: opened (e-1), retracted (e-2), opened (e-3), retracted (e-4)."""
    story = [
        report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO, minutes=0),
        report("e-2", "A1", status="CANCELLED", minutes=1),
        report("e-3", "A3", ihc=LOW, ctx=MET_AFTER_CHEMO, minutes=2),
        report("e-4", "A3", status="CANCELLED", minutes=3),
    ]
    pipeline = Pipeline(load_ruleset(), clock=ticking())
    state: PatientState | None = None
    held: dict[str, Any] = {}
    for event in story:  # what `run` published before its commit after e-1 was lost
        done = pipeline.step(state, event)
        state = done.state
        held.update({a["alert_id"]: a for a in done.alerts})
    assert [
        (a["revision"], a["status"]) for a in held.values() if a["code"] == "TDXD-LOW-DB04"
    ] == [(4, "RETRACTED")]
    replay = Pipeline(load_ruleset(), clock=ticking())  # the rebuild: the whole input
    rebuilt: PatientState | None = None
    last: dict[str, Any] = {}
    for event in story:
        done = replay.step(rebuilt, event)
        rebuilt = done.state
        last.update({a["alert_id"]: a for a in done.alerts})
    result = plan(held, last, ruleset_version="x", now=NOW)
    assert result.publish == []
    assert rebuilt is not None
    rebuilt, _ = with_floors(rebuilt, "p1", result.floors)
    rebuilt, _ = without_emitted(rebuilt)
    again = Pipeline(load_ruleset(), clock=ticking())
    for event in story[1:]:  # `run` from the committed offset
        done = again.step(rebuilt, event)
        assert done.alerts == [], event["event_id"]
        assert done.classification["event_id"] == event["event_id"]  # still classified
        rebuilt = done.state
