"""The patient aggregate (docs/her2-rules.md section 8), table-driven: patient stories, each a
list of reports and, per report, the records it must publish for the codes a story watches
(code -> (status, revision)); a watched code not listed must publish nothing.

Covers every transition of the table, both scopes, cancellation across accessions, stale and
PRELIMINARY reports, prior entries that persist and leave, current sample and HR status by
collection date, context carried forward, re-opening and redelivery.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.clinical import patient, rules
from consumer.clinical.alerts import alert_id
from consumer.clinical.model import Outcome
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import RuleSet, load_ruleset
from consumer.clinical.therapies import normalise_therapies
from consumer.errors import InvalidEvent
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

Record = dict[str, Any]
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
LOW = {"score": "ONE_PLUS", "percent_cells_stained": 30.0, "staining_intensity": "FAINT",
       "staining_completeness": "INCOMPLETE", "antibody_clone": "4B5",
       "assay_type": "FDA_APPROVED", "controls_documented": True}
NULL = {**LOW, "score": "ZERO", "percent_cells_stained": 0.0, "staining_intensity": "NONE",
        "staining_completeness": "NONE"}
POS = {**LOW, "score": "THREE_PLUS", "percent_cells_stained": 90.0, "staining_intensity": "STRONG",
       "staining_completeness": "COMPLETE"}
LOW_NO_DETAIL = {**LOW, "percent_cells_stained": None}  # DG-STAINING-DETAIL
MET_AFTER_CHEMO = {"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1,
                   "metastatic_endocrine_therapy_lines": 0, "metastatic_anti_her2_lines": 0}
ER_POS = {"percent_positive": 90.0, "result": "POSITIVE"}
ER_NEG = {"percent_positive": 0.0, "result": "NEGATIVE"}
MET_AFTER_ENDO = {**MET_AFTER_CHEMO, "metastatic_chemotherapy_lines": 0,
                  "metastatic_endocrine_therapy_lines": 1}
MET_ILD = {**MET_AFTER_CHEMO, "interstitial_lung_disease_history": True}
MET_ILD_TDXD = {**MET_ILD, "planned_therapies": ["Enhertu"]}


def report(
    event_id: str,
    accession: str,
    *,
    status: str = "FINAL",
    minutes: int | None = None,
    collected: str | None = "2025-06-01",
    site: str = "DISTANT_METASTASIS",
    ihc: Record | None = None,
    er: Record | None = None,
    pr: Record | None = None,
    ctx: Record | None = None,
    priors: list[Record] | None = None,
) -> Record:
    """One PathologyResult of patient P (well documented: no DG noise unless asked)."""
    return {
        "event_id": event_id,
        "event_time": T0 + dt.timedelta(minutes=int(event_id.rsplit("-", maxsplit=1)[-1]) if minutes is None else minutes),
        "patient_id": "P",
        "accession_id": accession,
        "report_status": status,
        "specimen": {"site": site, "collection_date": dt.date.fromisoformat(collected) if collected else None,
                     "cold_ischemia_minutes": 20, "fixation_hours": 24.0},
        "her2_ihc": ihc,
        "her2_ish": None,
        "er": er,
        "pr": pr if pr is not None else ({**ER_NEG} if er is not None else None),
        "clinical_context": ctx,
        "prior_her2_results": priors or [],
    }


def prior(accession: str, ihc: Record, collected: str = "2024-01-01", site: str = "PRIMARY_BREAST") -> Record:
    return {"accession_id": accession, "specimen": {"site": site, "collection_date": dt.date.fromisoformat(collected)},
            "her2_ihc": ihc, "her2_ish": None}


def resent(event: Record, event_id: str, **changes: Any) -> Record:
    """`event` again under a new event id, published later (event_time from the id's number)."""
    minutes = int(event_id.rsplit("-", maxsplit=1)[-1])
    return {**event, "event_id": event_id, "event_time": T0 + dt.timedelta(minutes=minutes), **changes}


POS_MET_SAME_DAY = report("e-1", "A1", ihc=POS, er=ER_POS, collected="2025-06-01",
                          ctx=MET_AFTER_ENDO | {"metastatic_endocrine_therapy_lines": 1})
LOW_REC_SAME_DAY = report("e-2", "A2", ihc=LOW, er=ER_POS, collected="2025-06-01", site="LOCOREGIONAL_RECURRENCE")
MET_CHEMO_LOW = report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, priors=[prior("A0", LOW)])
EARLY_PLANNED = report("e-2", "A2", ihc=LOW, collected="2025-06-02", site="REGIONAL_LYMPH_NODE",
                       ctx={"disease_setting": "EARLY", "planned_therapies": ["trastuzumab"]})

Expect = dict[str, tuple[str, int]]
Story = list[tuple[Record, Expect]]

STORIES: dict[str, tuple[set[str], Story]] = {
    # holds / not open -> ACTIVE r1; holds / open, same content -> nothing (the duplicate)
    "duplicate findings are not raised again": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2025-06-01"), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2024-01-01"), {}),
    ]),
    # holds / open, content changed -> ACTIVE next revision (a more recent qualifying sample)
    "a newer qualifying sample updates the finding": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2024-01-01"), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2025-06-01"), {"TDXD-LOW-DB04": ("ACTIVE", 2)}),
    ]),
    # the second case: A1's LOW sample made A2's metastatic report eligible; A1 cancelled
    "a cancelled report retracts the findings of other accessions resting on it": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, site="PRIMARY_BREAST", ctx={"disease_setting": "EARLY"}), {}),
        (report("e-2", "A2", ihc=None, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        # the cancelled report still carries its (withdrawn) content: it counts for nothing
        (report("e-3", "A1", status="CANCELLED", ihc=LOW, site="PRIMARY_BREAST"), {"TDXD-LOW-DB04": ("RETRACTED", 2)}),
        (report("e-4", "A2", status="AMENDED", ihc=None, ctx=MET_AFTER_CHEMO), {}),
    ]),
    # does not hold / open -> RESOLVED when new information ended it (AMENDED)
    "an amendment that ends a finding resolves it": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="AMENDED", ihc=NULL, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("RESOLVED", 2)}),
    ]),
    # a CORRECTED report of an accession the finding rested on -> RETRACTED
    "a correction of the data a finding rested on retracts it": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="CORRECTED", ihc=NULL, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("RETRACTED", 2)}),
    ]),
    # a CORRECTED report of an accession the finding did not rest on -> RESOLVED; re-opening
    "new information from another accession resolves; the finding re-opens with its id": ({"TDXD-LOW-DB04", "RT-CONVERSION"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO, collected="2025-06-01"), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", status="CORRECTED", ihc=POS, site="PRIMARY_BREAST", collected="2023-01-01"),
         {"TDXD-LOW-DB04": ("RESOLVED", 2), "RT-CONVERSION": ("ACTIVE", 1)}),
        (report("e-3", "A2", status="CANCELLED"), {"TDXD-LOW-DB04": ("ACTIVE", 3), "RT-CONVERSION": ("RETRACTED", 2)}),
    ]),
    # REPORT scope: only the accession's own reports open, change or close its findings
    "report-scoped findings follow their accession only": ({"DG-STAINING-DETAIL"}, [
        (report("e-1", "A1", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("ACTIVE", 1)}),
        (report("e-3", "A1", status="AMENDED", ihc=LOW, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("RESOLVED", 2)}),
        (report("e-4", "A2", status="CORRECTED", ihc=LOW, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("RETRACTED", 2)}),
        (report("e-5", "A1", status="CANCELLED"), {}),
    ]),
    "a cancelled report retracts its own report-scoped findings": ({"DG-STAINING-DETAIL"}, [
        (report("e-1", "A1", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="CANCELLED"), {"DG-STAINING-DETAIL": ("RETRACTED", 2)}),
        (report("e-3", "A1", ihc=LOW_NO_DETAIL, ctx=MET_AFTER_CHEMO), {"DG-STAINING-DETAIL": ("ACTIVE", 3)}),
    ]),
    # stale: an older event_time than the accession's latest changes nothing
    "a stale report changes nothing": ({"TDXD-LOW-DB04"}, [
        (report("e-5", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="CANCELLED"), {}),
        (report("e-6", "A2", ihc=None, ctx=MET_AFTER_CHEMO), {}),
    ]),
    # PRELIMINARY reports are classified only: no state, no alert
    "a preliminary report changes nothing": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", status="PRELIMINARY", ihc=LOW, ctx=MET_AFTER_CHEMO), {}),
        (report("e-2", "A2", ihc=None, ctx=MET_AFTER_CHEMO), {}),
        (report("e-3", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-4", "A1", status="PRELIMINARY", ihc=NULL, ctx=MET_AFTER_CHEMO), {}),
    ]),
    # prior entries persist after the carrier's later report omits them; leave with the carrier
    "prior entries persist and leave with the report that carried them": ({"TDXD-LOW-DB04"}, [
        (report("e-0", "A9", ihc=None, ctx=MET_AFTER_CHEMO), {}),
        (report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, priors=[prior("A0", LOW)]), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="AMENDED", ihc=NULL, ctx=MET_AFTER_CHEMO), {}),
        (report("e-3", "A1", status="CANCELLED"), {"TDXD-LOW-DB04": ("RETRACTED", 2)}),
    ]),
    # a cancelled accession is gone in every form: a prior entry for it carried later is ignored
    "a cancelled accession's prior entries are ignored until it is reported again": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A0", ihc=LOW, site="PRIMARY_BREAST", ctx={"disease_setting": "EARLY"}), {}),
        (report("e-2", "A0", status="CANCELLED"), {}),
        (report("e-3", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, priors=[prior("A0", LOW)]), {}),
        (report("e-4", "A0", ihc=LOW, site="PRIMARY_BREAST"), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
    ]),
    # the patient's own report of an accession replaces a prior entry for it
    "an own report replaces the prior entry of its accession": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, priors=[prior("A0", LOW)]), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A0", ihc=NULL, site="PRIMARY_BREAST", collected="2024-01-01"), {"TDXD-LOW-DB04": ("RESOLVED", 2)}),
    ]),
    # current sample by collection date: a late archival retest does not become current
    "a late archival retest does not become the current sample": ({"TDXD-POSITIVE-DB09", "RT-CONVERSION"}, [
        (report("e-1", "A1", ihc=POS, ctx=MET_AFTER_CHEMO | {"metastatic_chemotherapy_lines": 0}, collected="2025-06-01"),
         {"TDXD-POSITIVE-DB09": ("ACTIVE", 1)}),
        (report("e-2", "A0", ihc=LOW, site="PRIMARY_BREAST", collected="2019-03-01"), {"RT-CONVERSION": ("ACTIVE", 1)}),
    ]),
    "a newer specimen becomes the current sample": ({"TDXD-POSITIVE-DB09"}, [
        (report("e-1", "A1", ihc=POS, ctx=MET_AFTER_CHEMO | {"metastatic_chemotherapy_lines": 0}, collected="2024-06-01"),
         {"TDXD-POSITIVE-DB09": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, collected="2025-06-01"), {"TDXD-POSITIVE-DB09": ("RESOLVED", 2)}),
    ]),
    # ordering: undated samples rank below dated ones; ties: the latest processed
    "an undated sample ranks below a dated one for the current sample": ({"TDXD-POSITIVE-DB09"}, [
        (report("e-1", "A1", ihc=POS, ctx=MET_AFTER_CHEMO | {"metastatic_chemotherapy_lines": 0}, collected="2025-06-01"),
         {"TDXD-POSITIVE-DB09": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, collected=None), {}),
        (report("e-3", "A3", ihc=LOW, collected="2025-09-01"), {"TDXD-POSITIVE-DB09": ("RESOLVED", 2)}),
    ]),
    "on the same collection date the latest processed sample is current": ({"TDXD-POSITIVE-DB09"}, [
        (report("e-1", "A1", ihc=POS, ctx=MET_AFTER_CHEMO | {"metastatic_chemotherapy_lines": 0}, collected="2025-06-01"),
         {"TDXD-POSITIVE-DB09": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, collected="2025-06-01"), {"TDXD-POSITIVE-DB09": ("RESOLVED", 2)}),
    ]),
    "an undated report does not supply the HR status over a dated one": ({"TDXD-HR-DB06"}, [
        (report("e-1", "A1", ihc=LOW, er=ER_POS, ctx=MET_AFTER_ENDO, collected="2025-06-01"), {"TDXD-HR-DB06": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=None, er=ER_NEG, collected=None), {}),
    ]),
    # HR status from the report with the most recently collected specimen carrying ER or PR
    "HR status follows the most recently collected specimen": ({"TDXD-HR-DB06"}, [
        (report("e-1", "A1", ihc=LOW, er=ER_POS, ctx=MET_AFTER_ENDO, collected="2025-06-01"), {"TDXD-HR-DB06": ("ACTIVE", 1)}),
        (report("e-2", "A0", ihc=LOW, er=ER_NEG, site="PRIMARY_BREAST", collected="2019-01-01"), {}),
        (report("e-3", "A2", ihc=None, er=ER_NEG, collected="2025-09-01"), {"TDXD-HR-DB06": ("RESOLVED", 2)}),
    ]),
    # clinical context: the latest final report that carries one; a report without it keeps it
    "clinical context is carried forward and falls back when its accession is cancelled": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, ctx=None, collected="2024-01-01"), {}),
        (report("e-3", "A3", ihc=None, ctx={"disease_setting": "EARLY"}), {"TDXD-LOW-DB04": ("RESOLVED", 2)}),
        (report("e-4", "A3", status="CANCELLED"), {"TDXD-LOW-DB04": ("ACTIVE", 3)}),
    ]),
    # a cancellation can open a finding (RT-ALL-ZERO when the only HER2-low sample is withdrawn)
    "a cancellation can open a finding": ({"RT-ALL-ZERO", "TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, collected="2025-06-01"), {"RT-ALL-ZERO": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=LOW, collected="2024-01-01"), {"RT-ALL-ZERO": ("RESOLVED", 2), "TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-3", "A2", status="CANCELLED"), {"RT-ALL-ZERO": ("ACTIVE", 3), "TDXD-LOW-DB04": ("RETRACTED", 2)}),
    ]),
    # content is severity, rule version and the facts the rule file lists: TC-TDXD-ILD reads the
    # eligibility codes in its `when` only, so DB04 giving way to CANDIDATE changes nothing of it
    # (it was re-published with a byte-identical detail: audit f1)
    "a caution is not re-published when only the codes that trigger it change": ({"TC-TDXD-ILD", "TDXD-LOW-DB04", "TDXD-CANDIDATE"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_ILD_TDXD), {"TC-TDXD-ILD": ("ACTIVE", 1), "TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=None, collected="2025-06-02", ctx=MET_ILD_TDXD | {"metastatic_chemotherapy_lines": 0}),
         {"TDXD-LOW-DB04": ("RESOLVED", 2), "TDXD-CANDIDATE": ("ACTIVE", 1)}),
    ]),
    "an ILD caution resting on eligibility alone is not re-published when the route changes": ({"TC-TDXD-ILD", "TDXD-LOW-DB04", "TDXD-CANDIDATE"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_ILD), {"TC-TDXD-ILD": ("ACTIVE", 1), "TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (report("e-2", "A2", ihc=None, collected="2025-06-02", ctx=MET_ILD | {"metastatic_chemotherapy_lines": 0}),
         {"TDXD-LOW-DB04": ("RESOLVED", 2), "TDXD-CANDIDATE": ("ACTIVE", 1)}),
        (report("e-3", "A3", ihc=None, collected="2025-06-03", ctx=MET_ILD | {"metastatic_chemotherapy_lines": 0, "interstitial_lung_disease_history": False}),
         {"TC-TDXD-ILD": ("RESOLVED", 2)}),
    ]),
    # an identical re-send (new event_id and event_time, same content) is the same report: it keeps
    # its processing order, so the current sample of two same-day samples and the pair named do
    # not move to it (audit f5: DB09 re-opened and closed, the pair re-published swapped)
    "an identical re-send keeps the current sample and the pair named": ({"TDXD-POSITIVE-DB09", "RT-DISCORDANT", "RT-CONVERSION"}, [
        (POS_MET_SAME_DAY, {"TDXD-POSITIVE-DB09": ("ACTIVE", 1)}),
        (LOW_REC_SAME_DAY, {"TDXD-POSITIVE-DB09": ("RESOLVED", 2), "RT-DISCORDANT": ("ACTIVE", 1), "RT-CONVERSION": ("ACTIVE", 1)}),
        (resent(POS_MET_SAME_DAY, "e-3", source_system="another-interface-engine"), {}),
        (resent(LOW_REC_SAME_DAY, "e-4"), {}),
        (resent(POS_MET_SAME_DAY, "e-5"), {}),
        # a report of the accession with other content is a new report, the latest processed:
        # current again, and the pair (same samples) named in the other order (section 8's ties)
        (resent(POS_MET_SAME_DAY, "e-6", report_status="AMENDED"),
         {"TDXD-POSITIVE-DB09": ("ACTIVE", 3), "RT-DISCORDANT": ("ACTIVE", 2), "RT-CONVERSION": ("ACTIVE", 2)}),
    ]),
    # ... and keeps its context position: the clinical context does not rewind to the re-sent
    # report's (audit r_resend_search: RT-METASTATIC-SITE and a CRITICAL caution flipped)
    "an identical re-send keeps the clinical context": ({"TDXD-LOW-DB04", "RT-METASTATIC-SITE", "TC-HER2-TARGETED-NOT-POSITIVE"}, [
        (MET_CHEMO_LOW, {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (EARLY_PLANNED, {"TDXD-LOW-DB04": ("RESOLVED", 2), "TC-HER2-TARGETED-NOT-POSITIVE": ("ACTIVE", 1)}),
        (resent(MET_CHEMO_LOW, "e-3"), {}),
        (resent(EARLY_PLANNED, "e-4"), {}),
        (resent(MET_CHEMO_LOW, "e-5", her2_ihc={**NULL, "reported_text": "reviewed"}),
         {"TDXD-LOW-DB04": ("ACTIVE", 3), "TC-HER2-TARGETED-NOT-POSITIVE": ("RESOLVED", 2)}),
    ]),
    # the re-send is the accession's latest accepted report: an older event_time is stale after it
    "a report older than an identical re-send is stale": ({"TDXD-LOW-DB04"}, [
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (resent(report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), "e-5"), {}),
        (report("e-3", "A1", status="CANCELLED"), {}),
        (report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {}),  # the original again: seen
        (report("e-6", "A1", status="CANCELLED"), {"TDXD-LOW-DB04": ("RETRACTED", 2)}),
        (report("e-7", "A1", status="CANCELLED"), {}),  # a cancellation re-sent
    ]),
    # a re-send without event_time keeps the report's, so a delayed older report stays stale
    # (review: it took None, and the delayed CANCELLED retracted DB04)
    "a re-send without event_time keeps the report's": ({"TDXD-LOW-DB04"}, [
        (report("e-10", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), {"TDXD-LOW-DB04": ("ACTIVE", 1)}),
        (resent(report("e-10", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO), "e-11", event_time=None), {}),
        (report("e-5", "A1", status="CANCELLED"), {}),
    ]),
    # nothing holds once the patient has no final sample and no context left
    "nothing holds when everything is cancelled": ({"TDXD-LOW-DB04", "RT-METASTATIC-SITE"}, [
        (report("e-1", "A1", ihc=LOW, site="PRIMARY_BREAST", ctx=MET_AFTER_CHEMO),
         {"TDXD-LOW-DB04": ("ACTIVE", 1), "RT-METASTATIC-SITE": ("ACTIVE", 1)}),
        (report("e-2", "A1", status="CANCELLED"), {"TDXD-LOW-DB04": ("RETRACTED", 2), "RT-METASTATIC-SITE": ("RETRACTED", 2)}),
    ]),
}


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset()


def ticking() -> Callable[[], dt.datetime]:
    ticks = iter(range(10**9))
    return lambda: T0 + dt.timedelta(seconds=next(ticks))


def run(story: list[Record], ruleset: RuleSet, store: HistoryStore | None = None) -> list[Outcome]:
    pipeline = Pipeline(ruleset, clock=ticking())
    store = store or HistoryStore()
    return [store.apply(event, pipeline) for event in story]


@pytest.mark.parametrize(("watched", "story"), [pytest.param(*v, id=k) for k, v in STORIES.items()])
def test_story(watched: set[str], story: Story, ruleset: RuleSet) -> None:
    outcomes = run([event for event, _ in story], ruleset)
    for i, ((event, expected), outcome) in enumerate(zip(story, outcomes, strict=True)):
        got = {
            a["code"]: (a["status"], a["revision"]) for a in outcome.alerts if a["code"] in watched
        }
        assert got == expected, f"report {i + 1} ({event['event_id']})"
        for alert in outcome.alerts:  # identity: patient, code and (REPORT) accession
            acc = alert["accession_id"] if alert["scope"] == "REPORT" else None
            assert alert["alert_id"] == alert_id("P", alert["code"], acc)


@pytest.mark.parametrize(("watched", "story"), [pytest.param(*v, id=k) for k, v in STORIES.items()])
def test_story_survives_a_restore_and_redelivery(watched: set[str], story: Story, ruleset: RuleSet) -> None:
    """After every report: the changelog restored into a new store gives the same state, and a
    redelivered report re-publishes exactly the (alert_id, revision, status) it published."""
    pipeline = Pipeline(ruleset, clock=ticking())
    store = HistoryStore()
    changelog: dict[bytes, bytes | None] = {}
    for event, _ in story:
        first = store.apply(event, pipeline)
        changelog.update(store.take_dirty())
        restored = HistoryStore()
        for key, value in changelog.items():
            restored.restore(key, value)
        assert restored.get("P") == store.get("P")
        again = restored.apply(event, pipeline)
        ids = [(a["alert_id"], a["revision"], a["status"]) for a in first.alerts]
        accepted = event["report_status"] != "PRELIMINARY" and first.alerts
        if accepted:
            assert [(a["alert_id"], a["revision"], a["status"]) for a in again.alerts] == ids
            assert again.alerts == first.alerts  # texts re-rendered from the stored facts
        assert restored.take_dirty() == []  # a redelivery changes no state
        store = restored


def test_without_history_every_finding_is_new(ruleset: RuleSet) -> None:
    story = [event for event, _ in STORIES["duplicate findings are not raised again"][1]]
    pipeline = Pipeline(ruleset)
    for event in story:
        outcome = pipeline.process(event)
        assert outcome.alerts
        assert {(a["status"], a["revision"]) for a in outcome.alerts} == {("ACTIVE", 1)}


def test_a_record_never_grows_with_the_patients_accessions(ruleset: RuleSet) -> None:
    """One record per accession plus one patient-wide: 200 accessions, the largest record of the
    last event is no bigger than the largest of the tenth."""
    pipeline = Pipeline(ruleset, clock=ticking())
    store = HistoryStore()
    sizes = []
    for i in range(200):
        event = report(f"e-{i}", f"A{i}", ihc=LOW if i % 3 else NULL, ctx=MET_AFTER_CHEMO,
                       collected=(dt.date(2020, 1, 1) + dt.timedelta(days=i)).isoformat())
        store.apply(event, pipeline)
        sizes.append(max(len(v or b"") for _, v in store.take_dirty()))
    assert len(store.get("P").accessions) == 200  # type: ignore[union-attr]
    assert max(sizes[100:]) <= max(sizes[:20]) + 64


def test_closing_records_say_which_report_ended_them(ruleset: RuleSet) -> None:
    story = [e for e, _ in STORIES["a cancelled report retracts the findings of other accessions resting on it"][1]]
    outcomes = run(story, ruleset)
    retracted = next(a for a in outcomes[2].alerts if a["code"] == "TDXD-LOW-DB04")
    assert "CANCELLED" in retracted["detail"]
    assert "A1" in retracted["detail"]
    assert retracted["event_id"] == "e-3"
    assert retracted["scope"] == "PATIENT"


def test_stored_context_keeps_what_the_rules_read(ruleset: RuleSet) -> None:
    """The stored context keeps planned therapies as the drugs they name: the facts derived from
    it after a restore equal those of the report itself."""
    names = ["Trastuzumab + pertuzumab (THP)", "Enhertu 5.4 mg/kg", "Kadcyla", "Tukysa", "unknown drug"]
    drugs = normalise_therapies(names)
    assert normalise_therapies(sorted(drugs)) == drugs
    ctx = {**MET_AFTER_CHEMO, "planned_therapies": names, "interstitial_lung_disease_history": True}
    store = HistoryStore()
    first = store.apply(report("e-1", "A1", ihc=LOW, ctx=ctx), Pipeline(ruleset))
    assert {"TC-TDXD-ILD", "TDXD-LOW-DB04"} <= {a["code"] for a in first.alerts}
    restored = HistoryStore()
    for key, value in store.take_dirty():
        restored.restore(key, value)
    # a report without context or HER2 test: the stored context gives the same content
    later = restored.apply(report("e-2", "A2", ihc=None, ctx=None), Pipeline(ruleset))
    assert later.alerts == []


def test_a_replay_publishes_the_same_records(ruleset: RuleSet) -> None:
    """Upgrading is a replay of the input topic: the same events through a fresh store, at
    another time, publish the same (alert_id, revision, status) records (deterministic)."""
    events = SyntheticGenerator(seed=41, id_prefix="replay").events(400)

    def published(start: dt.datetime) -> list[tuple[str, int, str]]:
        ticks = iter(range(10**9))
        pipeline = Pipeline(ruleset, clock=lambda: start + dt.timedelta(seconds=next(ticks)))
        store = HistoryStore()
        return [
            (a["alert_id"], a["revision"], a["status"])
            for event in events
            for a in store.apply(event, pipeline).alerts
        ]

    first = published(T0)
    assert len(first) > 400
    assert published(T0 + dt.timedelta(days=400)) == first


def _ild_rule_with_a_note_on(ruleset: RuleSet, codes: list[str]) -> RuleSet:
    """The shipped rule set with TC-TDXD-ILD given a note that reads fired_codes (its text)."""
    path = Path(rules.__file__).resolve().parents[2] / "rules" / "alerts" / "tc-tdxd-ild.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["notes"] = [{"when": {"fact": "fired_codes", "op": "contains_any", "value": codes},
                     "text": "Eligibility rests on the candidate route only."}]
    ild = rules.parse_rule(doc, "rules/alerts/tc-tdxd-ild.yaml", ruleset.citations)
    assert ild.text_depends_on == frozenset(codes)
    return RuleSet(ruleset.version, ruleset.citations,
                   [ild if r.code == "TC-TDXD-ILD" else r for r in ruleset.rules])


def test_fired_codes_are_content_only_when_the_text_reads_them(ruleset: RuleSet) -> None:
    """A rule whose note reads fired_codes renders other text when those codes change: then the
    codes are content (ACTIVE, next revision, the note in the detail); codes its `when` alone
    reads are not (the shipped TC-TDXD-ILD, stories above)."""
    story = [event for event, _ in STORIES["an ILD caution resting on eligibility alone is not re-published when the route changes"][1]]
    outcomes = run(story[:2], _ild_rule_with_a_note_on(ruleset, ["TDXD-CANDIDATE"]))
    first, second = ([a for a in o.alerts if a["code"] == "TC-TDXD-ILD"] for o in outcomes)
    assert [(a["status"], a["revision"]) for a in first + second] == [("ACTIVE", 1), ("ACTIVE", 2)]
    assert "candidate route" not in first[0]["detail"]
    assert second[0]["detail"].endswith("Eligibility rests on the candidate route only.")


def test_a_finding_stored_with_the_earlier_digest_is_not_re_published(ruleset: RuleSet) -> None:
    """Releases before 2026.12-3 put every fired code a rule read into its digest: an open
    TC-TDXD-ILD stored then, evaluated again with the same facts, publishes nothing and takes
    this release's digest."""
    story = [event for event, _ in STORIES["an ILD caution resting on eligibility alone is not re-published when the route changes"][1]]
    store = HistoryStore()
    pipeline = Pipeline(ruleset, clock=ticking())
    store.apply(story[0], pipeline)
    state = store.get("P")
    assert state is not None
    ild = state.alerts["TC-TDXD-ILD"]
    values = json.loads(state.accessions["A1"].emitted[-1].facts or "")
    assert "fired_codes" not in values
    rule = ruleset.rule_for("TC-TDXD-ILD")
    assert rule is not None
    earlier = patient._digest(ild.severity, rule.version, patient._canonical({**values, "fired_codes": ["TDXD-LOW-DB04"]}))
    assert earlier != ild.digest
    older = replace(state, alerts={**state.alerts, "TC-TDXD-ILD": replace(ild, digest=earlier)})
    # the same facts again: another accession's report that changes nothing
    outcome = Pipeline(ruleset, clock=ticking()).step(older, report("e-2", "A2", ihc=None, collected="2024-01-01"))
    assert [a for a in outcome.alerts if a["code"] == "TC-TDXD-ILD"] == []
    assert outcome.state.alerts["TC-TDXD-ILD"] == ild


def test_a_prior_result_without_an_accession_is_named_by_the_report_that_listed_it(ruleset: RuleSet) -> None:
    """A prior entry without accession_id is keyed internally by its carrier and position; the
    texts name the report that listed it and no accession it did not have (audit p_prior_noacc:
    "accession A1#prior-0" reached the care team)."""
    unnamed = {**prior("A0", LOW, collected="2020-01-01"), "accession_id": None}
    [outcome] = run([report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, collected="2025-06-01", priors=[unnamed])], ruleset)
    texts = {a["code"]: a["detail"] for a in outcome.alerts}
    described = ("PRIMARY_BREAST sample (prior result without an accession number, listed in the report "
                 "of accession A1, 2020-01-01): LOW")
    assert described in texts["TDXD-LOW-DB04"]
    assert described in texts["RT-DISCORDANT"]
    assert not [text for text in texts.values() if "#prior" in text]
    # an accession that merely looks like the internal key is an accession like any other
    odd = {**prior("A1#prior-x", LOW, collected="2020-01-01")}
    [outcome] = run([report("e-1", "A1", ihc=NULL, ctx=MET_AFTER_CHEMO, collected="2025-06-01", priors=[odd])], ruleset)
    assert "(accession A1#prior-x, 2020-01-01)" in next(a["detail"] for a in outcome.alerts if a["code"] == "TDXD-LOW-DB04")


def test_patient_records_never_name_a_cancelled_accession_as_the_current_report(ruleset: RuleSet) -> None:
    """design.md: a PATIENT-scoped record carries the accession of the patient's current report.
    When none of the patient's own final reports has a HER2 test, that is the own final report
    with the most recently collected specimen, never the cancelled accession whose report was
    just evaluated (audit f4: RT-METASTATIC-SITE ACTIVE r2 named cancelled A1)."""
    story = [
        report("e-1", "A1", ihc=LOW, site="PRIMARY_BREAST", collected="2025-01-10"),
        report("e-2", "A2", ihc=None, collected="2025-06-01", ctx=MET_AFTER_CHEMO),
        report("e-3", "A3", ihc=None, collected="2025-03-01"),  # an older specimen: not current
        report("e-4", "A1", status="CANCELLED"),
        report("e-5", "A2", status="CANCELLED"),
        report("e-6", "A3", status="CANCELLED"),
    ]
    outcomes = run(story, ruleset)
    published = [[(a["code"], a["status"], a["revision"], a["accession_id"]) for a in o.alerts if a["scope"] == "PATIENT"]
                 for o in outcomes]
    assert published[1] == [("RT-METASTATIC-SITE", "ACTIVE", 1, "A1"), ("TDXD-LOW-DB04", "ACTIVE", 1, "A1")]
    assert published[2] == []
    assert published[3] == [("RT-METASTATIC-SITE", "ACTIVE", 2, "A2"), ("TDXD-LOW-DB04", "RETRACTED", 2, "A2")]
    # A2's context withdrawn: nothing holds; the last final report left (A3) is the one named
    assert published[4] == [("RT-METASTATIC-SITE", "RETRACTED", 3, "A3")]
    assert published[5] == []


@pytest.mark.parametrize(("change", "refused"), [
    ({}, False),                                                       # a redelivery
    ({"event_time": T0 + dt.timedelta(days=3), "source_system": "LIS-2"}, False),  # transport only
    ({"report_status": "AMENDED", "her2_ihc": POS}, True),             # another report, same id
    ({"her2_ihc": {**LOW, "controls_documented": False}}, True),       # one staining detail
])
def test_an_event_id_reused_with_other_content_is_refused(change: Record, refused: bool, ruleset: RuleSet) -> None:
    """design.md: event_id is unique per published event. Its accession's latest report's id
    with other content was taken for a redelivery: the new report (an amended IHC 3+ over a 1+)
    was dropped without a word while its classification went out. Now it is refused (dead
    letter `event-id-reused`) and the state is left as it was."""
    def ids(outcome: Outcome) -> list[tuple[str, int, str]]:
        return [(a["alert_id"], a["revision"], a["status"]) for a in outcome.alerts]

    pipeline = Pipeline(ruleset, clock=ticking())
    store = HistoryStore()
    first = report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO)
    published = ids(store.apply(first, pipeline))
    assert published
    state = store.get("P")
    again = {**first, **change}
    if refused:
        with pytest.raises(InvalidEvent) as caught:
            store.apply(again, pipeline)
        assert (caught.value.stage, caught.value.reason) == ("validate", "event-id-reused")
    else:
        assert ids(store.apply(again, pipeline)) == published
    assert store.get("P") == state


@pytest.mark.parametrize("stored", ["none", "untagged", "other-schema"])
def test_a_digest_not_taken_under_this_input_schema_keeps_the_redelivery_reading(stored: str, ruleset: RuleSet) -> None:
    """The event's shape follows the reader schema (an added optional field, another enum
    default change every digest), so only a digest taken under this release's input schema can
    tell a reused id from a redelivery: a report stored before 2026.12-3 (no digest), by
    2026.12-3 (untagged) or under another input schema (another tag) keeps the old reading."""
    pipeline = Pipeline(ruleset, clock=ticking())
    store = HistoryStore()
    first = report("e-1", "A1", ihc=LOW, ctx=MET_AFTER_CHEMO)
    published = store.apply(first, pipeline).alerts
    state = store.get("P")
    assert state is not None
    tag, _, plain = state.accessions["A1"].report.content.partition(":")
    content = {"none": None, "untagged": plain, "other-schema": f"0000{tag[4:]}:{plain}"}[stored]
    assert content is None or content != state.accessions["A1"].report.content
    legacy = replace(state, accessions={
        acc: replace(a, report=replace(a.report, content=content)) if a.report else a
        for acc, a in state.accessions.items()
    })
    step = pipeline.step(legacy, {**first, "her2_ihc": POS})
    assert [(a["alert_id"], a["revision"]) for a in step.alerts] == [
        (a["alert_id"], a["revision"]) for a in published
    ]
    if stored == "untagged":  # and an identical re-send under a new id is still recognised
        resent = pipeline.step(legacy, {**first, "event_id": "e-2"})
        assert (resent.alerts, resent.changed) == ([], frozenset({"A1"}))
