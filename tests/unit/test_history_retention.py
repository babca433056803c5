"""History retention (HER2_HISTORY_RETENTION_DAYS, off by default) against section 8 of
docs/her2-rules.md: what it may drop, and what it must keep for good because findings rest on
it whatever its age (a clinical audit found each of the kept cases dropped and a wrong or
invisible alert published)."""
# ruff: noqa: E501 - scenario rows read best on one line

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.config import EvaluationSettings
from consumer.state.store import HistoryStore
from consumer.tools.evaluate import evaluate_lines

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
TEN_YEARS = dt.timedelta(days=3650)
DOCUMENTED = {"antibody_clone": "4B5", "assay_type": "FDA_APPROVED", "controls_documented": True}
LOW = {
    "score": "ONE_PLUS",
    "percent_cells_stained": 30.0,
    "staining_intensity": "FAINT",
    "staining_completeness": "INCOMPLETE",
    **DOCUMENTED,
}
NULL = {
    "score": "ZERO",
    "percent_cells_stained": 0.0,
    "staining_intensity": "NONE",
    "staining_completeness": "NONE",
    **DOCUMENTED,
}
POSITIVE = {
    "score": "THREE_PLUS",
    "percent_cells_stained": 90.0,
    "staining_intensity": "STRONG",
    "staining_completeness": "COMPLETE",
    **DOCUMENTED,
}
ER_POS = {"percent_positive": 90.0, "result": "POSITIVE"}


def specimen(site: str, collected: str) -> dict[str, Any]:
    return {
        "site": site,
        "collection_date": collected,
        "cold_ischemia_minutes": 30,
        "fixation_hours": 24,
    }


def report(
    event_id: str, accession: str, when: str, status: str = "FINAL", **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "patient_id": "P-RET",
        "accession_id": accession,
        "report_status": status,
        "event_time": when,
        **fields,
    }


def published(
    events: list[dict[str, Any]], retention: dt.timedelta | None, *, moving_clock: bool = False
) -> list[list[tuple[str, int, str]]]:
    """Per event, the (code, revision, status) records `evaluate --history` publishes (the
    service's store and lifecycle) with this retention, on a clock of NOW; or (`moving_clock`)
    on a clock that moves forward with the reports, as a service receiving each report when it
    is issued: each event is evaluated at the latest event_time so far (a late, stale report at
    the time of the one before it), so a sample can age out between two reports of the patient."""
    instants = [NOW] * len(events)
    if moving_clock:
        times = [dt.datetime.fromisoformat(e["event_time"]) for e in events]
        instants = [max(times[: n + 1]) for n in range(len(times))]
    clock = [instants[0] if instants else NOW]
    store = HistoryStore(retention, clock=lambda: clock[0])
    lines = [json.dumps(e) for e in events]
    results = evaluate_lines(
        lines, Pipeline(load_ruleset(), clock=lambda: clock[0]), store, clock=lambda: clock[0]
    )
    out = []
    # evaluate_lines is lazy: event n + 1 is read only once result n is taken, so the clock
    # moves on to its instant here
    for n, result in enumerate(results):
        assert not result["errors"], result["errors"]
        out.append(sorted((a["code"], a["revision"], a["status"]) for a in result["alerts"]))
        clock[0] = instants[min(n + 1, len(instants) - 1)]
    return out


OLD_POSITIVE_THEN_LOW_WITH_TRASTUZUMAB = [
    report(
        "p1",
        "A-2015",
        "2015-03-02T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=POSITIVE,
        er=ER_POS,
        clinical_context={"disease_setting": "UNKNOWN"},
    ),
    report(
        "p2",
        "A-2026",
        "2026-11-20T10:00:00Z",
        specimen=specimen("DISTANT_METASTASIS", "2026-11-10"),
        her2_ihc=LOW,
        er=ER_POS,
        clinical_context={"disease_setting": "METASTATIC", "planned_therapies": ["Herceptin"]},
    ),
]
CANCELLED_THEN_CARRIED_AGAIN = [
    report(
        "c1",
        "A-2015",
        "2015-03-02T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW,
    ),
    report("c2", "A-2015", "2015-03-05T10:00:00Z", status="CANCELLED"),
    report(
        "c3",
        "A-2026",
        "2026-11-20T10:00:00Z",
        specimen=specimen("DISTANT_METASTASIS", "2026-11-10"),
        her2_ihc=NULL,
        clinical_context={"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1},
        prior_her2_results=[
            {
                "accession_id": "A-2015",
                "specimen": {"site": "PRIMARY_BREAST", "collection_date": "2015-02-20"},
                "her2_ihc": LOW,
            }
        ],
    ),
]
REPORT_FINDING_THEN_CORRECTED = [
    report(
        "r1",
        "A-2015",
        "2015-03-02T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW | {"controls_documented": False},
    ),
    report(
        "r2",
        "A-2015",
        "2015-03-09T10:00:00Z",
        status="AMENDED",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW,
    ),
    report(
        "r3",
        "A-2015",
        "2026-11-20T10:00:00Z",
        status="CORRECTED",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW | {"controls_documented": False},
    ),
]
OLD_LOW_THEN_NULL_AFTER_CHEMOTHERAPY = [
    report(
        "l1",
        "A-2015",
        "2015-03-02T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW,
        clinical_context={"disease_setting": "EARLY"},
    ),
    report(
        "l2",
        "A-2026",
        "2026-11-20T10:00:00Z",
        specimen=specimen("DISTANT_METASTASIS", "2026-11-10"),
        her2_ihc=NULL,
        clinical_context={"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1},
    ),
]


@pytest.mark.parametrize(
    ("events", "expected", "forbidden"),
    [
        # 5.2: "no sample of the patient was ever POSITIVE (then RT-CONVERSION asks for review instead)"
        pytest.param(
            OLD_POSITIVE_THEN_LOW_WITH_TRASTUZUMAB,
            ("RT-CONVERSION", 1, "ACTIVE"),
            "TC-HER2-TARGETED-NOT-POSITIVE",
            id="positive-sample-kept",
        ),
        # section 8: a cancelled accession's sample is gone "now or carried later"
        pytest.param(
            CANCELLED_THEN_CARRIED_AGAIN,
            ("RT-ALL-ZERO", 1, "ACTIVE"),
            "TDXD-LOW-DB04",
            id="cancellation-kept",
        ),
        # design.md: (alert_id, revision) is unique; readers keep the highest revision
        pytest.param(
            REPORT_FINDING_THEN_CORRECTED,
            ("DG-CONTROLS", 3, "ACTIVE"),
            "none",
            id="report-finding-revisions-kept",
        ),
    ],
)
def test_retention_keeps_what_findings_rest_on_whatever_its_age(
    events: list[dict[str, Any]], expected: tuple[str, int, str], forbidden: str
) -> None:
    """Ten years' retention and none publish the same records: each of these old accessions is
    kept for good, and the last report gets the finding the specification asks for."""
    with_retention = published(events, TEN_YEARS)
    assert with_retention == published(events, None)
    assert expected in with_retention[-1]
    assert forbidden not in {code for code, _, _ in with_retention[-1]}


OLD_LOW_WITH_A_CLOSED_FINDING = [
    report(
        "d1",
        "A-2015",
        "2015-03-02T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW | {"controls_documented": False},
        clinical_context={"disease_setting": "EARLY"},
    ),
    report(
        "d2",
        "A-2015",
        "2015-03-09T10:00:00Z",
        status="AMENDED",
        specimen=specimen("PRIMARY_BREAST", "2015-02-20"),
        her2_ihc=LOW,
        clinical_context={"disease_setting": "EARLY"},
    ),
    OLD_LOW_THEN_NULL_AFTER_CHEMOTHERAPY[1],
]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(OLD_LOW_THEN_NULL_AFTER_CHEMOTHERAPY, id="well-documented"),
        # its closed DG-CONTROLS keeps only its revisions: the sample leaves all the same
        pytest.param(OLD_LOW_WITH_A_CLOSED_FINDING, id="after-a-closed-documentation-finding"),
    ],
)
def test_retention_still_drops_an_old_sample_nothing_rests_on(
    events: list[dict[str, Any]],
) -> None:
    """What retention is for: an old LOW sample with nothing open on it leaves the history, so
    it no longer qualifies the T-DXd 'any sample' route (README: a dropped sample can change
    findings; hence off by default), whether or not a documentation finding once fired on its
    report (a review found the sample kept whole for that: eligibility hung on paperwork)."""
    kept, dropped = published(events, None), published(events, TEN_YEARS)
    assert kept[:-1] == dropped[:-1]
    assert ("TDXD-LOW-DB04", 1, "ACTIVE") in kept[-1]
    assert "TDXD-LOW-DB04" not in {code for code, _, _ in dropped[-1]}


# A clock that moves forward with the reports (published(..., moving_clock=True)) and a year's
# retention: the accession A-2026 (January and February 2026) is past the retention at the
# patient's report of March 2027, and leaves the history then unless something open rests on it
# (its effect, if it leaves, shows at the next report).
YEAR = dt.timedelta(days=365)
AGEING = "A-2026"
EARLY = {"disease_setting": "EARLY"}
METASTATIC_AFTER_CHEMOTHERAPY = {
    "disease_setting": "METASTATIC",
    "metastatic_chemotherapy_lines": 1,
}
JANUARY_LOW = report(
    "y1",
    AGEING,
    "2026-01-12T10:00:00Z",
    specimen=specimen("PRIMARY_BREAST", "2026-01-05"),
    her2_ihc=LOW,
    clinical_context=EARLY,
)
# another accession's report, a year on, that rests nothing on A-2026 (ER only, no HER2 test)
MARCH_2027_ER_ONLY = report(
    "y2",
    "A-2027-03",
    "2027-03-15T10:00:00Z",
    specimen=specimen("PRIMARY_BREAST", "2027-03-05"),
    er=ER_POS,
)
# then a metastatic relapse, IHC 0 (null), after one chemotherapy line
JUNE_2027_RELAPSE_NULL = report(
    "y3",
    "A-2027-06",
    "2027-06-15T10:00:00Z",
    specimen=specimen("DISTANT_METASTASIS", "2027-06-05"),
    her2_ihc=NULL,
    clinical_context=METASTATIC_AFTER_CHEMOTHERAPY,
)
# November 2026: a metastatic IHC 0 (null) after chemotherapy opens TDXD-LOW-DB04 and
# RT-DISCORDANT, both on the January LOW (the only HER2-low sample)
LOW_BEHIND_OPEN_PATIENT_FINDINGS = [
    JANUARY_LOW,
    report(
        "n1",
        "A-2026-11",
        "2026-11-20T10:00:00Z",
        specimen=specimen("DISTANT_METASTASIS", "2026-11-10"),
        her2_ihc=NULL,
        clinical_context=METASTATIC_AFTER_CHEMOTHERAPY,
    ),
    MARCH_2027_ER_ONLY,
    JUNE_2027_RELAPSE_NULL,
]
# A-2026 is a resection report without a HER2 test of its own that lists the 2025 biopsy's
# HER2-low result as a prior entry, corrected in February; a cancellation of A-2026 dated
# before that correction arrives late, after March 2027: stale, it changes nothing (section 8),
# so the biopsy's LOW stays one of the patient's samples
BIOPSY_LOW = {
    "accession_id": "A-2025",
    "specimen": {"site": "PRIMARY_BREAST", "collection_date": "2025-11-20"},
    "her2_ihc": LOW,
}
CARRIER_THEN_A_LATE_STALE_CANCELLATION = [
    report(
        "k1",
        AGEING,
        "2026-01-12T10:00:00Z",
        specimen=specimen("PRIMARY_BREAST", "2026-01-05"),
        er=ER_POS,
        clinical_context=EARLY,
        prior_her2_results=[BIOPSY_LOW],
    ),
    report(
        "k2",
        AGEING,
        "2026-02-10T10:00:00Z",
        status="CORRECTED",
        specimen=specimen("PRIMARY_BREAST", "2026-01-05"),
        er=ER_POS | {"percent_positive": 80.0},
        clinical_context=EARLY,
        prior_her2_results=[BIOPSY_LOW],
    ),
    MARCH_2027_ER_ONLY,
    report("k3", AGEING, "2026-01-20T10:00:00Z", status="CANCELLED"),
    JUNE_2027_RELAPSE_NULL,
]
# the January LOW's report states no controls: DG-CONTROLS opens on it and stays open
LOW_WITH_AN_OPEN_REPORT_FINDING = [
    JANUARY_LOW | {"her2_ihc": LOW | {"controls_documented": False}},
    MARCH_2027_ER_ONLY,
    JUNE_2027_RELAPSE_NULL,
]
LOW_WITH_NOTHING_OPEN_ON_IT = [JANUARY_LOW, MARCH_2027_ER_ONLY, JUNE_2027_RELAPSE_NULL]


@pytest.mark.parametrize(
    ("events", "last", "dropped"),
    [
        # TDXD-LOW-DB04 stays open at revision 1 (same sample, same context: nothing published); RT-DISCORDANT names the new pair; no RT-ALL-ZERO
        pytest.param(
            LOW_BEHIND_OPEN_PATIENT_FINDINGS,
            [("RT-DISCORDANT", 2, "ACTIVE")],
            False,
            id="basis-of-an-open-patient-finding",
        ),
        # the biopsy LOW carried by A-2026 is still a sample: TDXD-LOW-DB04 and RT-DISCORDANT on it, no RT-ALL-ZERO
        pytest.param(
            CARRIER_THEN_A_LATE_STALE_CANCELLATION,
            [("RT-DISCORDANT", 1, "ACTIVE"), ("TDXD-LOW-DB04", 1, "ACTIVE")],
            False,
            id="carrier-of-a-prior-entry",
        ),
        # DG-CONTROLS stays open (nothing published for it); the January LOW still qualifies
        pytest.param(
            LOW_WITH_AN_OPEN_REPORT_FINDING,
            [("RT-DISCORDANT", 1, "ACTIVE"), ("TDXD-LOW-DB04", 1, "ACTIVE")],
            False,
            id="open-report-finding",
        ),
        # control: nothing open on the January LOW as it ages out: it leaves, and the relapse gets RT-ALL-ZERO (without retention, TDXD-LOW-DB04 and RT-DISCORDANT on the LOW)
        pytest.param(
            LOW_WITH_NOTHING_OPEN_ON_IT,
            [("RT-ALL-ZERO", 1, "ACTIVE")],
            True,
            id="control-nothing-open-dropped",
        ),
    ],
)
def test_retention_keeps_an_old_accession_while_something_open_rests_on_it(
    events: list[dict[str, Any]], last: list[tuple[str, int, str]], dropped: bool
) -> None:
    """On a clock that moves forward, A-2026 ages out of a year's retention while it is still
    needed: in the basis of an open PATIENT finding, the carrier of a prior entry, or with an
    open REPORT finding. Kept, the store publishes what it publishes without retention (section
    8 has no notion of forgetting): the findings keep their state and no false alert appears.
    The control, with nothing open on it, shows that it would otherwise have left."""
    times = [dt.datetime.fromisoformat(e["event_time"]) for e in events]
    ageing = [t for e, t in zip(events, times, strict=True) if e["accession_id"] == AGEING]
    assert max(ageing) < max(times[:-1]) - YEAR  # past the retention before the last report
    with_retention = published(events, YEAR, moving_clock=True)
    without = published(events, None, moving_clock=True)
    assert with_retention[:-1] == without[:-1]
    assert with_retention[-1] == last
    assert (with_retention[-1] != without[-1]) is dropped


def test_retention_is_off_by_default() -> None:
    """Forgetting a sample can change findings that rest on the whole history (section 8 has
    no notion of forgetting): nothing is dropped unless a site asks for it."""
    assert EvaluationSettings.from_env({}).history_retention is None


# a later report of another accession that rests nothing on the old one (no HER2 test)
LATER_ER_ONLY = report(
    "e1",
    "A-2026",
    "2026-11-20T10:00:00Z",
    specimen=specimen("PRIMARY_BREAST", "2026-11-10"),
    er=ER_POS,
)


@pytest.mark.parametrize(
    ("events", "cut"),
    [
        pytest.param([*REPORT_FINDING_THEN_CORRECTED[:2], LATER_ER_ONLY], True, id="cut"),
        pytest.param([OLD_LOW_THEN_NULL_AFTER_CHEMOTHERAPY[0], LATER_ER_ONLY], False, id="dropped"),
    ],
)
def test_what_retention_cuts_or_drops_reaches_the_changelog(
    events: list[dict[str, Any]], cut: bool
) -> None:
    """A store restored from the changelog holds the patient as the store that wrote it: an
    old accession cut to its findings at another accession's report (the clock moved on since
    its own) is written as such, not left with its report for a restore to bring back; a
    dropped one is a tombstone."""
    clock = [dt.datetime(2015, 3, 10, tzinfo=dt.UTC)]
    store = HistoryStore(TEN_YEARS, clock=lambda: clock[0])
    pipeline = Pipeline(load_ruleset(), clock=lambda: clock[0])
    records: list[tuple[bytes, bytes | None]] = []
    lines = [json.dumps(e) for e in events]
    for n, result in enumerate(evaluate_lines(lines, pipeline, store, clock=lambda: clock[0])):
        assert not result["errors"], result["errors"]
        records.extend(store.take_dirty())
        if n == len(lines) - 2:
            clock[0] = NOW  # the last report arrives years later
    restored = HistoryStore(TEN_YEARS, clock=lambda: NOW)
    for key, value in records:
        restored.restore(key, value)
    written, read = store.get("P-RET"), restored.get("P-RET")
    assert read == written
    assert read is not None
    old = read.accessions.get("A-2015")
    if cut:
        assert old is not None
        assert (old.report, old.prior) == (None, None)
        assert old.alerts
    else:
        assert old is None
