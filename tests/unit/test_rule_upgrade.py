"""A rule set upgrade (or a rollback) over a patient's stored history, as README ("To change a
rule") and docs/operations.md ("Upgrading and rolling back") describe it, from section 8: the
rule version is part of a finding's content, so an open alert of a rule with another version
is published again once, as its next revision, when it is next evaluated: a PATIENT code at
its patient's next report, a REPORT code only at the next report of its own accession; a
rollback publishes the older version again the same way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_patient import LOW, LOW_NO_DETAIL, MET_AFTER_CHEMO, report, ticking

from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import RuleSet, load_ruleset
from consumer.state.store import HistoryStore

PATIENT_CODE, REPORT_CODE = "TDXD-LOW-DB04", "DG-STAINING-DETAIL"
CODES = {PATIENT_CODE, REPORT_CODE}
# A1: a HER2-low metastatic sample without its staining detail after chemotherapy (both codes
# open); A2 and A3: older, well-documented samples of the patient (A1 stays the qualifying one)
FIRST = report("e-1", "A1", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO)
OTHER_ACCESSION = report("e-2", "A2", ihc=LOW, collected="2024-01-01", ctx=MET_AFTER_CHEMO)
OWN_ACCESSION = report("e-3", "A1", status="AMENDED", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO)
AGAIN = report("e-4", "A2", status="AMENDED", ihc=LOW, collected="2024-01-01", ctx=MET_AFTER_CHEMO)
ROLLED_BACK = report("e-5", "A3", ihc=LOW, collected="2024-02-01", ctx=MET_AFTER_CHEMO)


@pytest.fixture(scope="module")
def released() -> RuleSet:
    return load_ruleset()


@pytest.fixture(scope="module")
def upgraded(released: RuleSet) -> RuleSet:
    """The next release: the two rules with a new version, nothing else changed."""
    bumped = [replace(r, version=r.version + 1) if r.code in CODES else r for r in released.rules]
    return RuleSet(f"{released.version}-next", released.citations, bumped)


def published(
    store: HistoryStore, event: dict[str, Any], ruleset: RuleSet
) -> list[tuple[Any, ...]]:
    """(code, accession, status, revision, rule_version) of the watched codes' records."""
    outcome = store.apply(event, Pipeline(ruleset, clock=ticking()))
    return [
        (a["code"], a["accession_id"], a["status"], a["revision"], a["rule_version"])
        for a in outcome.alerts
        if a["code"] in CODES
    ]


def test_an_upgrade_republishes_each_open_alert_once_at_its_next_evaluation(
    released: RuleSet, upgraded: RuleSet
) -> None:
    v = {r.code: r.version for r in released.rules if r.code in CODES}
    store = HistoryStore()
    assert published(store, FIRST, released) == [
        (REPORT_CODE, "A1", "ACTIVE", 1, v[REPORT_CODE]),
        (PATIENT_CODE, "A1", "ACTIVE", 1, v[PATIENT_CODE]),
    ]
    # another accession's report: the PATIENT code is evaluated, the REPORT code of A1 is not
    assert published(store, OTHER_ACCESSION, upgraded) == [
        (PATIENT_CODE, "A1", "ACTIVE", 2, v[PATIENT_CODE] + 1)
    ]
    # A1's own next report: its REPORT code takes the new version
    assert published(store, OWN_ACCESSION, upgraded) == [
        (REPORT_CODE, "A1", "ACTIVE", 2, v[REPORT_CODE] + 1)
    ]
    # once only
    assert published(store, AGAIN, upgraded) == []
    # a rollback: the older version is content too (section 8), published again the same way
    assert published(store, ROLLED_BACK, released) == [
        (PATIENT_CODE, "A1", "ACTIVE", 3, v[PATIENT_CODE])
    ]


def test_without_the_upgrade_the_same_reports_publish_nothing_more(released: RuleSet) -> None:
    """The control: the revisions above come from the rule versions alone."""
    store = HistoryStore()
    assert len(published(store, FIRST, released)) == 2
    for event in (OTHER_ACCESSION, OWN_ACCESSION, AGAIN, ROLLED_BACK):
        assert published(store, event, released) == [], event["event_id"]
