"""consumer/clinical/reconcile.py: a rebuilt history against what the alert topics hold."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from test_patient import LOW, MET_AFTER_CHEMO, NULL, report, ticking

from consumer.clinical.patient import Accession, AlertState, PatientState, Published
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.reconcile import (
    AHEAD,
    CHANGED,
    CLOSED_NOT_RAISED,
    NEW,
    NOT_PUBLISHED,
    NOT_RAISED,
    SAME,
    UNCHANGED_CLOSED,
    Floor,
    plan,
    same,
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
    # held records of a report past the group's committed offset (not evaluated): `run`
    # evaluates it again after the rebuild; publishing the replay's view first re-opened a
    # retracted T-DXd alert until then (second review)
    ("held ahead, rebuilt open", alert(2, "RETRACTED", event_id="e3"), alert(1), AHEAD, None, 2),
    ("held ahead only", alert(1, event_id="e3"), None, AHEAD, None, 1),
    ("held ahead, rebuilt above", alert(1, event_id="e3"), alert(3), AHEAD, None, 3),
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
        ahead={("p1", "e3"), ("p2", "e2")},  # p1's e3: a report past the committed offset
    )
    assert done.outcomes == {outcome: 1}
    assert [(r["revision"], r["status"]) for r in done.publish] == (
        [published] if published else []
    )
    where = rebuilt or held  # the state's finding: the rebuilt one, else the one held
    assert where is not None
    # a finding left to `run` is open or closed as readers hold it (fourth review)
    as_held = held["status"] == "ACTIVE" if outcome == AHEAD and held else None
    # ... and, held open with other content than the rebuilt state's, its digest dropped
    unknown = bool(as_held) and not (
        rebuilt is not None and held is not None and same(held, rebuilt)
    )
    assert done.floors == [
        Floor(
            "p1",
            "TDXD-LOW-DB04",
            "PATIENT",
            where["accession_id"],
            where["severity"],
            revision,
            as_held,
            unknown,
        )
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


def test_a_floor_as_held_opens_or_closes_the_state() -> None:
    """A finding left to `run` (a report past the committed offset) takes the status readers
    hold, so what `run` then evaluates, or refuses, is published against it."""
    before = state()  # TDXD-LOW-DB04 open at r1, DG-ASSAY closed at r2
    floors = [
        Floor("p1", "TDXD-LOW-DB04", "PATIENT", "a2", "INFO", 1, False),
        Floor("p1", "DG-ASSAY", "REPORT", "a1", "INFO", 2, True),
        Floor("p1", "TDXD-HR-DB06", "PATIENT", "a2", "WARNING", 3, True),
    ]
    new, changed = with_floors(before, "p1", floors)
    assert changed == {None, "a1"}
    assert new.alerts["TDXD-LOW-DB04"] == replace(before.alerts["TDXD-LOW-DB04"], open=False)
    assert new.accessions["a1"].alerts["DG-ASSAY"].open is True
    assert new.alerts["TDXD-HR-DB06"] == AlertState("TDXD-HR-DB06", 3, True, "WARNING", "", ())


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


def test_a_finding_left_to_run_held_with_other_content_is_published_again() -> None:
    """Readers hold a later report's content (r2, past the committed offset) while the rebuilt
    state holds the replay's (r1's). With the replay's digest kept, an evaluation giving r1's
    content published nothing and readers kept r2's, a sample `run` then refused (fifth
    review, reproduced). Dropped, the next evaluation publishes the finding again (r3)."""
    e1 = report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2024-01-01")
    e2 = report("e-2", "A2", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2025-06-01")
    e3 = report("e-3", "A3", ihc=NULL, collected="2023-01-01")
    first = Pipeline(load_ruleset(), clock=ticking())
    s1 = first.step(None, e1)
    s2 = first.step(s1.state, e2)  # published, its commit lost
    held = {a["alert_id"]: a for a in s1.alerts}
    held.update({a["alert_id"]: a for a in s2.alerts})
    replay = Pipeline(load_ruleset(), clock=ticking())
    r1 = replay.step(None, e1)  # the replay stops at the committed offset
    done = plan(
        held,
        {a["alert_id"]: a for a in r1.alerts},
        ruleset_version="x",
        now=NOW,
        ahead={(e2["patient_id"], "e-2")},
    )
    state, _ = with_floors(r1.state, e1["patient_id"], done.floors)
    # `run` refuses e-2 now; the patient's next report
    after = Pipeline(load_ruleset(), clock=ticking()).step(state, e3)
    tdxd = [(a["revision"], a["status"]) for a in after.alerts if a["code"] == "TDXD-LOW-DB04"]
    assert tdxd == [(3, "ACTIVE")]
