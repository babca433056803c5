"""Every alert code of docs/her2-rules.md section 5, end to end through Pipeline.process.

Events are built by `event()`: a complete, well-documented FINAL report (every Avro field
present, validated against schemas/pathology_result.avsc) that raises no alert at all, so each
case changes only what its code is about and documentation-gap noise stays under control.
Expected codes and severities come from the specification tables, not from running the code.
"""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import datetime as dt
from typing import Any

import fastavro
import pytest
import yaml

from consumer.clinical.facts import Sample
from consumer.clinical.model import scope_of
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import RuleSet, load_ruleset
from consumer.resources import PATHOLOGY_RESULT, data_dir, parsed_schema

Record = dict[str, Any]

NOW = dt.datetime(2025, 6, 2, 8, 30, tzinfo=dt.UTC)
EVENT_TIME = dt.datetime(2025, 6, 1, 14, 0, tzinfo=dt.UTC)
COLLECTED = dt.date(2025, 5, 20)

# ---------------------------------------------------------------------------------------------
# Builders: each returns a complete, documented record; keyword arguments replace fields.
# ---------------------------------------------------------------------------------------------

_IHC_DETAIL: dict[str | None, Record] = {
    # staining detail that fits the ASCO/CAP definition of each score (section 2)
    "THREE_PLUS": {"percent_cells_stained": 90.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"},
    "TWO_PLUS": {"percent_cells_stained": 60.0, "staining_intensity": "WEAK_MODERATE", "staining_completeness": "COMPLETE"},
    "ONE_PLUS": {"percent_cells_stained": 40.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"},
    "ZERO": {"percent_cells_stained": 0.0, "staining_intensity": "NONE", "staining_completeness": "NONE"},
}


def ihc(score: str | None = "ONE_PLUS", **fields: Any) -> Record:
    """A documented HER2 IHC record (4B5, FDA-approved assay, controls documented)."""
    record: Record = {
        "score": score,
        "percent_cells_stained": None,
        "staining_intensity": None,
        "staining_completeness": None,
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
        "reported_text": None,
    }
    record.update(_IHC_DETAIL.get(score, {}))
    record.update(fields)
    return record


def ultralow(**fields: Any) -> Record:
    """IHC 0 with faint incomplete staining in 5 % of cells (section 2: ultralow)."""
    detail: Record = {"percent_cells_stained": 5.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"}
    return ihc("ZERO", **{**detail, **fields})


def zero_unstated(**fields: Any) -> Record:
    """IHC 0 without percentage or staining description (sub-type not stated)."""
    detail: Record = {"percent_cells_stained": None, "staining_intensity": None, "staining_completeness": None}
    return ihc("ZERO", **{**detail, **fields})


def zero_not_determinable(**fields: Any) -> Record:
    """IHC 0 with strong complete staining in 5 % of cells (section 2 step 1, worked example 10)."""
    detail: Record = {"percent_cells_stained": 5.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"}
    return ihc("ZERO", **{**detail, **fields})


def ish(**fields: Any) -> Record:
    """A dual-probe ISH record with 40 cells counted and no counts yet."""
    record: Record = {
        "probe_type": "DUAL",
        "her2_copies_per_cell": None,
        "cep17_copies_per_cell": None,
        "her2_cep17_ratio": None,
        "cells_counted": 40,
        "recount_group": None,
        "reported_result": None,
    }
    record.update(fields)
    return record


def dual(ratio: float, copies: float, **fields: Any) -> Record:
    """A complete dual-probe ISH result (CEP17 consistent with the ratio)."""
    return ish(her2_copies_per_cell=copies, cep17_copies_per_cell=round(copies / ratio, 3), her2_cep17_ratio=ratio, **fields)


def specimen(site: str = "PRIMARY_BREAST", **fields: Any) -> Record:
    """A documented specimen: dated, cold ischaemia 30 min, fixation 24 h, not decalcified."""
    record: Record = {
        "site": site,
        "body_site": "liver" if site == "DISTANT_METASTASIS" else None,
        "collection_date": COLLECTED,
        "cold_ischemia_minutes": 30,
        "fixation_hours": 24.0,
        "fixative": "10% neutral buffered formalin",
        "decalcified": False,
    }
    record.update(fields)
    return record


def receptor(percent: float | None, result: str | None) -> Record:
    """An ER or PR result."""
    return {"percent_positive": percent, "result": result}


ER_POS = receptor(90.0, "POSITIVE")
PR_POS = receptor(50.0, "POSITIVE")
ER_NEG = receptor(0.0, "NEGATIVE")
PR_NEG = receptor(0.0, "NEGATIVE")


def context(setting: str = "EARLY", **fields: Any) -> Record:
    """Clinical context; treatment history unknown unless given."""
    record: Record = {
        "disease_setting": setting,
        "menopausal_status": "POST",
        "metastatic_chemotherapy_lines": None,
        "metastatic_endocrine_therapy_lines": None,
        "metastatic_anti_her2_lines": None,
        "adjuvant_chemotherapy_end_date": None,
        "perioperative_anti_her2_end_date": None,
        "recurrence_date": None,
        "planned_therapies": [],
        "interstitial_lung_disease_history": False,
        "clinical_flags": [],
    }
    record.update(fields)
    return record


def metastatic(**fields: Any) -> Record:
    """Metastatic clinical context."""
    return context("METASTATIC", **fields)


def prior(
    accession: str | None,
    site: str = "PRIMARY_BREAST",
    her2_ihc: Record | None = None,
    her2_ish: Record | None = None,
    collected: dt.date = dt.date(2022, 3, 14),
) -> Record:
    """A prior_her2_results entry."""
    return {
        "accession_id": accession,
        "specimen": specimen(site, collection_date=collected),
        "her2_ihc": her2_ihc,
        "her2_ish": her2_ish,
    }


def event(**fields: Any) -> Record:
    """A FINAL, well-documented early HR-positive IHC 1+ report that raises no alert."""
    record: Record = {
        "event_id": "evt-0001",
        "event_time": EVENT_TIME,
        "source_system": "LIS-TEST",
        "patient_id": "pat-0001",
        "accession_id": "S25-1001",
        "report_status": "FINAL",
        "specimen": specimen(),
        "her2_ihc": ihc("ONE_PLUS"),
        "her2_ish": None,
        "er": ER_POS,
        "pr": PR_POS,
        "clinical_context": context(),
        "prior_her2_results": [],
    }
    unknown = set(fields) - set(record)
    assert not unknown, f"unknown event fields {unknown}"
    record.update(fields)
    return record


def met_event(**fields: Any) -> Record:
    """A metastatic report on a liver biopsy (distant metastasis)."""
    fields.setdefault("specimen", specimen("DISTANT_METASTASIS"))
    fields.setdefault("clinical_context", metastatic())
    return event(**fields)


# ---------------------------------------------------------------------------------------------
# Spec tables (section 5): alert type and base severity of every code.
# ---------------------------------------------------------------------------------------------

ALERT_TYPE = {
    **dict.fromkeys(
        ["TDXD-LOW-DB04", "TDXD-HR-DB06", "TDXD-POSITIVE-DB03", "TDXD-POSITIVE-DB09", "TDXD-POSITIVE-EARLY", "TDXD-CANDIDATE"],
        "TDXD_ELIGIBILITY",
    ),
    **dict.fromkeys(
        [
            "TC-HER2-TARGETED-NOT-POSITIVE",
            "TC-HER2-STATUS-NOT-FINAL",
            "TC-TDXD-CRITERIA-NOT-MET",
            "TC-TDXD-EARLY-STAGE",
            "TC-TDXD-ILD",
        ],
        "THERAPY_CAUTION",
    ),
    **dict.fromkeys(
        [
            "RT-METASTATIC-SITE",
            "RT-ALL-ZERO",
            "RT-DISCORDANT",
            "RT-CONVERSION",
            "RT-PREANALYTIC",
            "RT-IHC-ISH-DISCORDANT",
            "RT-CLINICAL-SUSPICION",
        ],
        "RETEST",
    ),
    **dict.fromkeys(
        [
            "DG-UNSCORED",
            "DG-ISH-ONLY",
            "DG-ZERO-SUBTYPE",
            "DG-NO-REFLEX-ISH",
            "DG-ISH-COUNTS",
            "DG-ISH-WORKUP",
            "DG-PREANALYTIC",
            "DG-ASSAY",
            "DG-SPECIMEN",
            "DG-STAINING-DETAIL",
            "DG-CONTROLS",
            "DG-SCORE-INCONSISTENT",
        ],
        "DOCUMENTATION_GAP",
    ),
}

_SCHEMA = parsed_schema(PATHOLOGY_RESULT)


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset()


@pytest.fixture(scope="module")
def pipeline(ruleset: RuleSet) -> Pipeline:
    return Pipeline(ruleset, clock=lambda: NOW)


def run(pipeline: Pipeline, ev: Record, history: tuple[Sample, ...] = ()) -> list[Record]:
    """Process one schema-valid event and return its alerts."""
    fastavro.validation.validate(ev, _SCHEMA, raise_errors=True)
    return pipeline.process(ev, history).alerts


def check(
    pipeline: Pipeline,
    code: str,
    ev: Record,
    severity: str | None,
    history: tuple[Sample, ...] = (),
) -> Record | None:
    """severity None: `code` must stay quiet; else it fires once with that severity."""
    alerts = run(pipeline, ev, history)
    matching = [a for a in alerts if a["code"] == code]
    if severity is None:
        assert not matching, f"{code} fired: {matching[0]['detail'] if matching else ''}"
        return None
    assert len(matching) == 1, f"{code} did not fire once; fired: {sorted(a['code'] for a in alerts)}"
    alert = matching[0]
    assert alert["severity"] == severity
    assert alert["alert_type"] == ALERT_TYPE[code]
    assert alert["status"] == "ACTIVE"
    return alert


def codes(pipeline: Pipeline, ev: Record, history: tuple[Sample, ...] = ()) -> set[str]:
    """The codes raised for one event."""
    return {a["code"] for a in run(pipeline, ev, history)}


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


class TestBaseline:
    """The builder's documented events raise nothing, so each case below isolates one code."""

    def test_documented_early_report_is_quiet(self, pipeline: Pipeline) -> None:
        assert codes(pipeline, event()) == set()

    def test_documented_metastatic_positive_first_line_only_db09(self, pipeline: Pipeline) -> None:
        ev = met_event(
            her2_ihc=ihc("THREE_PLUS"),
            clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0, metastatic_endocrine_therapy_lines=0),
        )
        assert codes(pipeline, ev) == {"TDXD-POSITIVE-DB09"}

    def test_spec_lists_30_codes(self, ruleset: RuleSet) -> None:
        assert len(ALERT_TYPE) == 30
        assert sorted(r.code for r in ruleset.rules) == sorted(ALERT_TYPE)


# ---------------------------------------------------------------------------------------------
# 5.1 T-DXd eligibility
# ---------------------------------------------------------------------------------------------

LINES_1_CHEMO = {"metastatic_chemotherapy_lines": 1}
ADJ_END = dt.date(2024, 8, 31)  # + 6 calendar months = 28 Feb 2025


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(clinical_context=metastatic(**LINES_1_CHEMO)), "WARNING", id="fires-1plus-after-one-chemo-line"),
        pytest.param(met_event(clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED", metastatic_chemotherapy_lines=2)), "WARNING", id="fires-unresectable-locally-advanced"),
        pytest.param(met_event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.3, 2.6), clinical_context=metastatic(**LINES_1_CHEMO)), "WARNING", id="fires-2plus-ish-negative"),
        pytest.param(met_event(clinical_context=metastatic(adjuvant_chemotherapy_end_date=ADJ_END, recurrence_date=dt.date(2025, 2, 28))), "WARNING", id="fires-recurrence-on-6-month-boundary"),
        pytest.param(met_event(clinical_context=metastatic(adjuvant_chemotherapy_end_date=ADJ_END, recurrence_date=dt.date(2024, 7, 1))), "WARNING", id="fires-recurrence-during-adjuvant-chemo"),
        pytest.param(met_event(clinical_context=metastatic(adjuvant_chemotherapy_end_date=ADJ_END, recurrence_date=dt.date(2025, 3, 1))), None, id="quiet-recurrence-one-day-after-window"),
        pytest.param(met_event(clinical_context=metastatic(metastatic_chemotherapy_lines=0)), None, id="quiet-chemo-naive"),
        pytest.param(met_event(), None, id="quiet-unknown-treatment-history"),
        pytest.param(met_event(clinical_context=metastatic(recurrence_date=dt.date(2025, 1, 1))), None, id="quiet-adjuvant-end-unknown"),
        pytest.param(event(clinical_context=context("EARLY", metastatic_chemotherapy_lines=1)), None, id="quiet-early"),
        pytest.param(met_event(clinical_context=context("UNKNOWN", **LINES_1_CHEMO)), None, id="quiet-setting-unknown"),
        pytest.param(met_event(her2_ihc=ultralow(), clinical_context=metastatic(**LINES_1_CHEMO)), None, id="quiet-ultralow-is-not-db04"),
        pytest.param(met_event(clinical_context=metastatic(**LINES_1_CHEMO), prior_her2_results=[prior("S21-0007", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-a-sample-was-ever-positive"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), clinical_context=metastatic(**LINES_1_CHEMO), prior_her2_results=[prior("S22-0100", her2_ihc=ihc("ONE_PLUS"))]), "WARNING", id="fires-on-prior-low-sample"),
    ],
)
def test_tdxd_low_db04(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-LOW-DB04", ev, severity)


def test_tdxd_low_db04_names_primary_sample(pipeline: Pipeline) -> None:
    """5.1: names the qualifying sample and, for a primary-tumour sample, notes DB06 tissue."""
    ev = met_event(
        her2_ihc=ihc("ZERO"),
        clinical_context=metastatic(**LINES_1_CHEMO),
        prior_her2_results=[prior("S22-0100", her2_ihc=ihc("ONE_PLUS"))],
    )
    alert = check(pipeline, "TDXD-LOW-DB04", ev, "WARNING")
    assert alert is not None
    assert "S22-0100" in alert["detail"]
    assert "DESTINY-Breast06" in alert["detail"]
    assert "metastatic" in alert["detail"]


@pytest.mark.parametrize(
    ("site", "noted"),
    [pytest.param("PRIMARY_BREAST", True, id="primary-noted"), pytest.param("DISTANT_METASTASIS", False, id="metastasis-not-noted")],
)
def test_tdxd_hr_db06_notes_a_primary_sample(pipeline: Pipeline, site: str, noted: bool) -> None:
    """5.1: the HER2-low routes name the qualifying sample and, when it is a primary-tumour
    sample, note that DESTINY-Breast06 confirmed HER2 on metastatic-setting tissue."""
    ev = met_event(her2_ihc=ultralow(), specimen=specimen(site), clinical_context=metastatic(**ENDO_1))
    alert = check(pipeline, "TDXD-HR-DB06", ev, "WARNING")
    assert alert is not None
    assert "S25-1001" in alert["detail"]
    assert ("DESTINY-Breast06 confirmed HER2 on" in alert["detail"]) is noted


def test_tdxd_low_db04_from_history(pipeline: Pipeline) -> None:
    history = (Sample("S20-0001", "PRIMARY_BREAST", dt.date(2020, 1, 1), "LOW", "history"),)
    ev = met_event(her2_ihc=ihc("ZERO"), clinical_context=metastatic(**LINES_1_CHEMO))
    check(pipeline, "TDXD-LOW-DB04", ev, "WARNING", history)


ENDO_1 = {"metastatic_endocrine_therapy_lines": 1}


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-hr-positive-low-after-endocrine"),
        pytest.param(met_event(her2_ihc=ultralow(), clinical_context=metastatic(metastatic_endocrine_therapy_lines=2)), "WARNING", id="fires-hr-positive-ultralow"),
        pytest.param(met_event(her2_ihc=ultralow(), er=receptor(5.0, "LOW_POSITIVE"), pr=PR_NEG, clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-er-low-counts-as-hr-positive"),
        pytest.param(met_event(er=ER_NEG, pr=receptor(3.0, None), clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-pr-3-percent-only"),
        pytest.param(met_event(her2_ihc=ultralow(), er=ER_NEG, pr=PR_NEG, clinical_context=metastatic(**ENDO_1)), None, id="quiet-triple-negative-ultralow"),
        pytest.param(met_event(her2_ihc=ultralow(), er=ER_NEG, pr=None, clinical_context=metastatic(**ENDO_1)), None, id="quiet-hr-unknown"),
        pytest.param(met_event(clinical_context=metastatic(metastatic_endocrine_therapy_lines=0)), None, id="quiet-no-endocrine-line"),
        pytest.param(met_event(), None, id="quiet-unknown-endocrine-history"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), clinical_context=metastatic(**ENDO_1)), None, id="quiet-null"),
        pytest.param(met_event(her2_ihc=zero_unstated(), clinical_context=metastatic(**ENDO_1)), None, id="quiet-zero-unspecified"),
        pytest.param(met_event(her2_ihc=zero_not_determinable(), clinical_context=metastatic(**ENDO_1)), None, id="quiet-not-determinable-worked-example-10"),
        pytest.param(met_event(her2_ihc=ultralow(percent_cells_stained=40.0), clinical_context=metastatic(**ENDO_1)), None, id="quiet-0-with-40-percent-is-not-ultralow"),
        pytest.param(met_event(her2_ihc=ultralow(percent_cells_stained=10.0), clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-ultralow-exactly-10-percent"),
        pytest.param(event(clinical_context=context("EARLY", **ENDO_1)), None, id="quiet-early"),
        pytest.param(met_event(her2_ihc=ultralow(), clinical_context=metastatic(**ENDO_1), prior_her2_results=[prior("S21-9", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-a-sample-was-ever-positive"),
    ],
)
def test_tdxd_hr_db06(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-HR-DB06", ev, severity)


def test_tdxd_hr_db06_says_so_when_chemo_lines_and_er_low(pipeline: Pipeline) -> None:
    """5.1: 'say so when metastatic chemotherapy lines >= 1'; section 1: alerts relying on ER-low say so."""
    ev = met_event(
        er=receptor(4.0, None),
        pr=PR_NEG,
        clinical_context=metastatic(metastatic_endocrine_therapy_lines=1, metastatic_chemotherapy_lines=1),
    )
    alert = check(pipeline, "TDXD-HR-DB06", ev, "WARNING")
    assert alert is not None
    assert "chemotherapy" in alert["detail"]
    assert "ER-low" in alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_anti_her2_lines=1)), "INFO", id="fires-after-anti-her2-line"),
        pytest.param(met_event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(2.4, 5.5), clinical_context=metastatic(metastatic_anti_her2_lines=2)), "INFO", id="fires-ish-positive"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(perioperative_anti_her2_end_date=dt.date(2024, 3, 31), recurrence_date=dt.date(2024, 9, 30))), "INFO", id="fires-recurrence-on-boundary"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(perioperative_anti_her2_end_date=dt.date(2024, 3, 31), recurrence_date=dt.date(2024, 10, 1))), None, id="quiet-recurrence-day-after"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_anti_her2_lines=0)), None, id="quiet-first-line"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS")), None, id="quiet-unknown-history"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context("EARLY", metastatic_anti_her2_lines=1)), None, id="quiet-early"),
        pytest.param(met_event(clinical_context=metastatic(metastatic_anti_her2_lines=1), prior_her2_results=[prior("S21-1", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-current-low-prior-positive"),
    ],
)
def test_tdxd_positive_db03(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-POSITIVE-DB03", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), "INFO", id="fires-first-line"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0, perioperative_anti_her2_end_date=dt.date(2023, 1, 31), recurrence_date=dt.date(2024, 6, 1))), "INFO", id="fires-late-recurrence"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0)), None, id="quiet-anti-her2-count-unknown"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_anti_her2_lines=0)), None, id="quiet-chemo-count-unknown"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS")), None, id="quiet-both-counts-unknown"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=1, metastatic_anti_her2_lines=0)), None, id="quiet-one-chemo-line"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=1)), None, id="quiet-one-anti-her2-line"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0, perioperative_anti_her2_end_date=dt.date(2024, 3, 31), recurrence_date=dt.date(2024, 9, 30))), None, id="quiet-db03-recurrence-route"),
        pytest.param(met_event(clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), None, id="quiet-low"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context("EARLY", metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), None, id="quiet-early"),
    ],
)
def test_tdxd_positive_db09(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-POSITIVE-DB09", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context("EARLY", planned_therapies=["Enhertu"])), "INFO", id="fires-worked-example-7-tdxd-planned"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS")), "INFO", id="fires-tdxd-not-planned-policy"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(2.4, 5.5)), "INFO", id="fires-ish-positive"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), er=ER_NEG, pr=PR_NEG, clinical_context=context("EARLY", planned_therapies=["trastuzumab + pertuzumab"])), "INFO", id="fires-hr-negative-thp-planned"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), specimen=specimen("REGIONAL_LYMPH_NODE")), "INFO", id="fires-node-specimen"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), None, id="quiet-metastatic"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED")), None, id="quiet-unresectable"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context("UNKNOWN")), None, id="quiet-setting-unknown"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=None), None, id="quiet-no-context"),
        pytest.param(event(clinical_context=context("EARLY", planned_therapies=["Enhertu"])), None, id="quiet-early-low"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=context("EARLY", planned_therapies=["Enhertu"])), None, id="quiet-early-equivocal"),
        pytest.param(event(clinical_context=context("EARLY", planned_therapies=["Enhertu"]), prior_her2_results=[prior("S21-0007", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-current-low-prior-positive"),
    ],
)
def test_tdxd_positive_early(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-POSITIVE-EARLY", ev, severity)


@pytest.mark.parametrize(
    ("code", "ev"),
    [
        pytest.param("TDXD-POSITIVE-DB03", met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_anti_her2_lines=1)), id="db03"),
        pytest.param("TDXD-POSITIVE-DB09", met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), id="db09"),
    ],
)
def test_tdxd_positive_advanced_prior_tdxd_note(pipeline: Pipeline, code: str, ev: Record) -> None:
    """5.1: DB03 and DB09 always carry the note on T-DXd re-treatment [S75]."""
    alert = check(pipeline, code, ev, "INFO")
    assert alert is not None
    assert "If the perioperative anti-HER2 therapy included T-DXd" in alert["detail"]
    assert "DESTINY-Breast03 excluded prior anti-HER2 ADC in the metastatic setting" in alert["detail"]
    assert any(e.startswith("[S75]") for e in alert["evidence"])


def test_tdxd_positive_early_text(pipeline: Pipeline) -> None:
    """5.1: the label indications, 'verify which indication, if any, applies' and the trial notes."""
    alert = check(pipeline, "TDXD-POSITIVE-EARLY", event(her2_ihc=ihc("THREE_PLUS")), "INFO")
    assert alert is not None
    text = " ".join((alert["title"], alert["detail"], alert["recommendation"]))
    for expected in (
        "15 May 2026", "DESTINY-Breast11", "DESTINY-Breast05", "stage II or III", "THP",
        "residual invasive disease", "verify which indication, if any, applies", "ypN1-3", "cN1-3",
        "T-DXd-alone arm", "closed early", "after neoadjuvant T-DXd was not studied",
    ):
        assert expected in text, expected
    assert {e[1 : e.index("]")] for e in alert["evidence"]} >= {"S62", "S64", "S65"}


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(), "INFO", id="fires-low-unknown-history"),
        pytest.param(met_event(clinical_context=metastatic(metastatic_chemotherapy_lines=0, metastatic_endocrine_therapy_lines=0)), "INFO", id="fires-low-treatment-naive"),
        pytest.param(met_event(her2_ihc=ultralow()), "INFO", id="fires-hr-positive-ultralow-unknown-history"),
        pytest.param(met_event(her2_ihc=ultralow(), clinical_context=metastatic(metastatic_chemotherapy_lines=3)), "INFO", id="fires-ultralow-chemo-but-endocrine-unknown"),
        pytest.param(met_event(clinical_context=metastatic(**LINES_1_CHEMO)), None, id="quiet-db04-met"),
        pytest.param(met_event(her2_ihc=ultralow(), clinical_context=metastatic(**ENDO_1)), None, id="quiet-db06-met"),
        pytest.param(met_event(her2_ihc=ultralow(), er=ER_NEG, pr=PR_NEG), None, id="quiet-triple-negative-ultralow"),
        pytest.param(met_event(her2_ihc=ihc("ZERO")), None, id="quiet-null"),
        pytest.param(met_event(her2_ihc=zero_not_determinable()), None, id="quiet-not-determinable"),
        pytest.param(event(), None, id="quiet-early-low"),
        pytest.param(met_event(prior_her2_results=[prior("S21-1", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-a-sample-was-ever-positive"),
    ],
)
def test_tdxd_candidate(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TDXD-CANDIDATE", ev, severity)


def test_tdxd_candidate_names_a_sample_that_qualifies(pipeline: Pipeline) -> None:
    """Section 8 (Content): the HER2-low routes name the qualifying sample. Triple-negative, a LOW
    primary and a newer ULTRALOW metastasis: only the LOW sample qualifies (DB04; ultralow needs
    HR-positive, 5.5), and it is a primary-tumour sample (5.1: the DESTINY-Breast06 note)."""
    ev = met_event(her2_ihc=ultralow(), er=ER_NEG, pr=PR_NEG, prior_her2_results=[prior("S21-1", her2_ihc=ihc("ONE_PLUS"))])
    alert = check(pipeline, "TDXD-CANDIDATE", ev, "INFO")
    assert alert is not None
    assert "Qualifying sample (HER2-low): PRIMARY_BREAST sample (accession S21-1" in alert["detail"]
    assert "ULTRALOW" not in alert["detail"]
    assert "primary tumour" in alert["detail"]
    assert "ER-low" not in alert["detail"]


def test_tdxd_candidate_hr_positive_names_the_newest_low_or_ultralow_sample(pipeline: Pipeline) -> None:
    ev = met_event(her2_ihc=ultralow(), prior_her2_results=[prior("S21-1", her2_ihc=ihc("ONE_PLUS"))])
    alert = check(pipeline, "TDXD-CANDIDATE", ev, "INFO")
    assert alert is not None
    assert "(HR-positive, HER2-low or HER2-ultralow): DISTANT_METASTASIS sample (accession S25-1001" in alert["detail"]
    assert "primary tumour" not in alert["detail"]
    assert "ER-low" not in alert["detail"]


def test_tdxd_candidate_says_when_hr_positive_rests_on_er_low(pipeline: Pipeline) -> None:
    """Section 1: ER-low (1-10 %) counts as HR-positive (POLICY); alerts that rely on it say so."""
    ev = met_event(her2_ihc=ultralow(), er=receptor(5.0, "LOW_POSITIVE"), pr=PR_NEG)
    alert = check(pipeline, "TDXD-CANDIDATE", ev, "INFO")
    assert alert is not None
    assert "ER-low (1-10 %), counted as HR-positive by policy" in alert["detail"]


# ---------------------------------------------------------------------------------------------
# 5.2 Therapy caution
# ---------------------------------------------------------------------------------------------


def planned(*names: str, setting: str = "EARLY", **fields: Any) -> Record:
    """Clinical context with planned therapies."""
    return context(setting, planned_therapies=list(names), **fields)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(clinical_context=planned("trastuzumab + pertuzumab")), "CRITICAL", id="fires-worked-example-1"),
        pytest.param(event(clinical_context=planned("Herceptin")), "CRITICAL", id="fires-herceptin"),
        pytest.param(event(clinical_context=planned("Kadcyla")), "CRITICAL", id="fires-tdm1"),
        pytest.param(event(clinical_context=planned("trastuzumab emtansine")), "CRITICAL", id="fires-trastuzumab-emtansine"),
        pytest.param(event(clinical_context=planned("Tukysa")), "CRITICAL", id="fires-kinase-inhibitor"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), clinical_context=planned("margetuximab", setting="METASTATIC")), "CRITICAL", id="fires-null-metastatic"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.4), clinical_context=planned("Ogivri")), "CRITICAL", id="fires-negative-expression-unknown"),
        pytest.param(event(clinical_context=planned("Enhertu")), None, id="quiet-tdxd-is-not-traditional"),
        pytest.param(event(clinical_context=planned("trastuzumab deruxtecan")), None, id="quiet-trastuzumab-deruxtecan"),
        pytest.param(event(clinical_context=planned("trastuzumab rezetecan")), None, id="quiet-other-trastuzumab-conjugate"),
        pytest.param(event(clinical_context=planned("trastuzumab rezetecan + pertuzumab")), "CRITICAL", id="fires-pertuzumab-beside-a-conjugate"),
        pytest.param(event(clinical_context=planned("trastuzumab-dkst")), "CRITICAL", id="fires-biosimilar"),
        pytest.param(event(clinical_context=planned("trastuzumab biosimilar")), "CRITICAL", id="fires-trastuzumab-biosimilar-words"),
        pytest.param(event(clinical_context=planned("paclitaxel-trastuzumab")), "CRITICAL", id="fires-regimen-written-with-hyphens"),
        pytest.param(event(clinical_context=planned("docetaxel-carboplatin-trastuzumab")), "CRITICAL", id="fires-tch-with-hyphens"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("trastuzumab")), None, id="quiet-positive"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("trastuzumab")), None, id="quiet-equivocal-not-final-instead"),
        pytest.param(event(clinical_context=planned("trastuzumab"), prior_her2_results=[prior("S21-3", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-ever-positive-conversion-instead"),
        pytest.param(event(clinical_context=planned("letrozole", "abemaciclib")), None, id="quiet-no-her2-drug"),
    ],
)
def test_tc_her2_targeted_not_positive(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TC-HER2-TARGETED-NOT-POSITIVE", ev, severity)


def test_tc_her2_targeted_not_positive_cites_b47_for_trastuzumab_only(pipeline: Pipeline) -> None:
    """S37: NSABP B-47 studied adjuvant trastuzumab; the text must not extend its result to
    T-DM1, margetuximab or the kinase inhibitors."""
    alert = check(pipeline, "TC-HER2-TARGETED-NOT-POSITIVE", event(clinical_context=planned("Tukysa")), "CRITICAL")
    assert alert is not None
    assert "adjuvant trastuzumab showed no benefit in IHC 1+/2+ ISH-negative disease (NSABP B-47)" in alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("trastuzumab")), "WARNING", id="fires-equivocal-trastuzumab"),
        pytest.param(event(her2_ihc=ihc(None), clinical_context=planned("Phesgo")), "WARNING", id="fires-unscored"),
        pytest.param(event(her2_ihc=ihc("INDETERMINATE"), clinical_context=planned("lapatinib")), "WARNING", id="fires-indeterminate"),
        pytest.param(event(her2_ihc=None, clinical_context=planned("Enhertu")), "WARNING", id="fires-missing-tdxd"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("T-DXd")), "WARNING", id="fires-equivocal-tdxd"),
        pytest.param(event(clinical_context=planned("trastuzumab")), None, id="quiet-low-is-final"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("trastuzumab")), None, id="quiet-positive"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("paclitaxel")), None, id="quiet-no-her2-drug"),
    ],
)
def test_tc_her2_status_not_final(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TC-HER2-STATUS-NOT-FINAL", ev, severity)


@pytest.mark.parametrize(
    ("code", "ev", "severity", "text"),
    [
        pytest.param("TC-HER2-TARGETED-NOT-POSITIVE", event(clinical_context=planned("Tukysa")), "CRITICAL", "Planned: tucatinib. HER2 category LOW is HER2-negative", id="targeted-brand-name-normalised"),
        pytest.param("TC-HER2-TARGETED-NOT-POSITIVE", event(clinical_context=planned("trastuzumab + pertuzumab")), "CRITICAL", "Planned: pertuzumab, trastuzumab.", id="targeted-worked-example-1-both-drugs"),
        pytest.param("TC-HER2-TARGETED-NOT-POSITIVE", event(clinical_context=planned("Kadcyla", "letrozole")), "CRITICAL", "Planned: ado-trastuzumab emtansine.", id="targeted-other-drugs-left-out"),
        pytest.param("TC-HER2-STATUS-NOT-FINAL", event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("trastuzumab")), "WARNING", "Planned trastuzumab; HER2 category is EQUIVOCAL.", id="not-final-trastuzumab"),
        pytest.param("TC-HER2-STATUS-NOT-FINAL", event(her2_ihc=ihc(None), clinical_context=planned("Phesgo")), "WARNING", "Planned pertuzumab, trastuzumab; HER2 category is UNSCORED.", id="not-final-phesgo-both-drugs"),
        pytest.param("TC-HER2-STATUS-NOT-FINAL", event(her2_ihc=None, clinical_context=planned("Enhertu")), "WARNING", "Planned fam-trastuzumab deruxtecan-nxki; HER2 category is MISSING.", id="not-final-tdxd"),
    ],
)
def test_therapy_cautions_name_the_planned_drugs(pipeline: Pipeline, code: str, ev: Record, severity: str, text: str) -> None:
    """Section 5: the detail names the facts it used; for a therapy caution, the planned HER2
    drugs it warns about (normalised names, 5.2), never 'not documented' when a drug is planned."""
    alert = check(pipeline, code, ev, severity)
    assert alert is not None
    assert text in alert["detail"], alert["detail"]
    assert "not documented" not in alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=ultralow(), er=ER_NEG, pr=PR_NEG, clinical_context=planned("Enhertu", setting="METASTATIC", **LINES_1_CHEMO)), "WARNING", id="fires-worked-example-3"),
        pytest.param(met_event(clinical_context=planned("Enhertu", setting="METASTATIC")), "WARNING", id="fires-candidate-only-does-not-count"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), clinical_context=planned("T-DXd", setting="METASTATIC", **LINES_1_CHEMO)), "WARNING", id="fires-null"),
        pytest.param(met_event(clinical_context=planned("Enhertu", setting="METASTATIC", **LINES_1_CHEMO)), None, id="quiet-db04-met"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("Enhertu", "pertuzumab", setting="METASTATIC", metastatic_chemotherapy_lines=0, metastatic_anti_her2_lines=0)), None, id="quiet-db09-met"),
        pytest.param(met_event(clinical_context=planned("trastuzumab emtansine", setting="METASTATIC")), None, id="quiet-tdm1-is-not-tdxd"),
        pytest.param(event(clinical_context=planned("Enhertu")), None, id="quiet-early-has-own-caution"),
    ],
)
def test_tc_tdxd_criteria_not_met(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TC-TDXD-CRITERIA-NOT-MET", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(clinical_context=planned("Enhertu")), "WARNING", id="fires-early-low-worked-example-8"),
        pytest.param(event(her2_ihc=ultralow(), clinical_context=planned("T-DXd")), "WARNING", id="fires-early-ultralow"),
        pytest.param(event(her2_ihc=ihc("ZERO"), clinical_context=planned("trastuzumab deruxtecan")), "WARNING", id="fires-early-null"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), clinical_context=planned("Enhertu")), "WARNING", id="fires-early-equivocal-never-positive"),
        pytest.param(event(her2_ihc=None, clinical_context=planned("Enhertu")), "WARNING", id="fires-early-no-her2-test"),
        pytest.param(event(clinical_context=planned("capecitabine-Enhertu")), "WARNING", id="fires-early-regimen-written-with-hyphens"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("fam-trastuzumab deruxtecan-nxki")), None, id="quiet-early-positive-worked-example-7"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(2.4, 5.5), clinical_context=planned("Enhertu")), None, id="quiet-early-ish-positive"),
        pytest.param(event(clinical_context=planned("Enhertu"), prior_her2_results=[prior("S21-0007", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-current-low-prior-positive-conversion-instead"),
        pytest.param(event(clinical_context=planned("datopotamab deruxtecan")), None, id="quiet-datopotamab-deruxtecan-is-not-tdxd"),
        pytest.param(event(clinical_context=planned("Dato-DXd")), None, id="quiet-dato-dxd-is-not-tdxd"),
        pytest.param(event(clinical_context=planned("DXd")), None, id="quiet-dxd-alone-is-not-tdxd"),
        pytest.param(met_event(clinical_context=planned("Enhertu", setting="METASTATIC")), None, id="quiet-metastatic"),
        pytest.param(event(clinical_context=planned("Enhertu", setting="UNRESECTABLE_LOCALLY_ADVANCED")), None, id="quiet-unresectable"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("trastuzumab emtansine")), None, id="quiet-tdm1"),
    ],
)
def test_tc_tdxd_early_stage(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TC-TDXD-EARLY-STAGE", ev, severity)


def test_tc_tdxd_early_stage_quiet_with_a_remembered_positive(pipeline: Pipeline) -> None:
    """5.2: 'no sample of the patient was ever POSITIVE' includes the samples history remembers."""
    history = (Sample("S21-0007", "PRIMARY_BREAST", dt.date(2021, 6, 1), "POSITIVE", "history"),)
    check(pipeline, "TC-TDXD-EARLY-STAGE", event(clinical_context=planned("Enhertu")), None, history)
    check(pipeline, "TC-TDXD-EARLY-STAGE", event(clinical_context=planned("Enhertu")), "WARNING")


def test_tc_tdxd_early_stage_text(pipeline: Pipeline) -> None:
    """5.2: the early indications are HER2-positive only; none for HER2-low/ultralow/negative."""
    alert = check(pipeline, "TC-TDXD-EARLY-STAGE", event(clinical_context=planned("Enhertu")), "WARNING")
    assert alert is not None
    assert "HER2-positive (IHC 3+ or ISH-positive) disease only" in alert["detail"]
    assert "15 May 2026" in alert["detail"]
    assert "unresectable or metastatic disease only" not in alert["detail"]
    assert any(e.startswith("[S62]") for e in alert["evidence"])


LOW_DISCLAIMER = "'HER2-low' (IHC 1+, or 2+ with negative ISH) is a trial-eligibility term, not a biological subtype, and not an ASCO/CAP reporting category"
ULTRALOW_DISCLAIMER = "'HER2-ultralow' (IHC 0 with faint, incomplete membrane staining in > 0 % to <= 10 % of tumour cells) is an FDA-label and trial-eligibility term, not an ASCO/CAP reporting category"
DISCLAIMER_CITES = {LOW_DISCLAIMER: {"S10", "S11"}, ULTRALOW_DISCLAIMER: {"S10", "S11", "S25", "S67"}}


@pytest.mark.parametrize(
    ("code", "ev", "severity", "disclaimers"),
    [
        pytest.param("TDXD-LOW-DB04", met_event(clinical_context=metastatic(**LINES_1_CHEMO)), "WARNING", (LOW_DISCLAIMER,), id="db04"),
        pytest.param("TDXD-HR-DB06", met_event(her2_ihc=ultralow(), clinical_context=metastatic(**ENDO_1)), "WARNING", (LOW_DISCLAIMER, ULTRALOW_DISCLAIMER), id="db06"),
        pytest.param("TDXD-CANDIDATE", met_event(er=ER_NEG, pr=PR_NEG), "INFO", (LOW_DISCLAIMER, ULTRALOW_DISCLAIMER), id="candidate-triple-negative-low"),
        pytest.param("TDXD-CANDIDATE", met_event(her2_ihc=ultralow()), "INFO", (LOW_DISCLAIMER, ULTRALOW_DISCLAIMER), id="candidate-hr-positive-ultralow"),
        pytest.param("TC-HER2-TARGETED-NOT-POSITIVE", event(clinical_context=planned("trastuzumab")), "CRITICAL", (LOW_DISCLAIMER,), id="targeted-not-positive"),
        pytest.param("TC-TDXD-EARLY-STAGE", event(clinical_context=planned("Enhertu")), "WARNING", (LOW_DISCLAIMER, ULTRALOW_DISCLAIMER), id="tdxd-early-stage"),
        pytest.param("TC-TDXD-CRITERIA-NOT-MET", met_event(her2_ihc=ultralow(), er=ER_NEG, pr=PR_NEG, clinical_context=planned("Enhertu", setting="METASTATIC", **LINES_1_CHEMO)), "WARNING", (ULTRALOW_DISCLAIMER,), id="tdxd-criteria-not-met"),
        pytest.param("RT-ALL-ZERO", met_event(her2_ihc=ihc("ZERO")), "INFO", (LOW_DISCLAIMER,), id="all-zero"),
        pytest.param("DG-ISH-ONLY", met_event(her2_ihc=None, her2_ish=dual(1.2, 2.0)), "WARNING", (LOW_DISCLAIMER, ULTRALOW_DISCLAIMER), id="ish-only"),
        pytest.param("DG-ZERO-SUBTYPE", met_event(her2_ihc=zero_unstated()), "WARNING", (ULTRALOW_DISCLAIMER,), id="zero-subtype"),
    ],
)
def test_alerts_naming_her2_low_or_ultralow_say_what_the_terms_are(pipeline: Pipeline, code: str, ev: Record, severity: str, disclaimers: tuple[str, ...]) -> None:
    """Section 4: 'HER2-low' is a trial-eligibility term, not a biological subtype, and not an
    ASCO/CAP category [S10][S11]: say so in texts; section 2: ultralow is an FDA/trial category,
    not ASCO/CAP [S25][S67]. Once per alert, whichever notes apply (tests/rules/test_rule_examples.py
    TestTrialTerms checks every rule file)."""
    alert = check(pipeline, code, ev, severity)
    assert alert is not None
    for disclaimer in disclaimers:
        assert alert["detail"].count(disclaimer) == 1, alert["detail"]
        assert {e[1 : e.index("]")] for e in alert["evidence"]} >= DISCLAIMER_CITES[disclaimer]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(clinical_context=planned("Enhertu", interstitial_lung_disease_history=True)), "WARNING", id="fires-planned"),
        pytest.param(met_event(clinical_context=metastatic(interstitial_lung_disease_history=True, **LINES_1_CHEMO)), "WARNING", id="fires-db04-eligible"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), clinical_context=metastatic(interstitial_lung_disease_history=True, metastatic_anti_her2_lines=1)), "WARNING", id="fires-db03-eligible"),
        pytest.param(met_event(clinical_context=metastatic(interstitial_lung_disease_history=True)), "WARNING", id="fires-candidate"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context(interstitial_lung_disease_history=True)), "WARNING", id="fires-early-positive-eligibility-not-planned"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("Enhertu", interstitial_lung_disease_history=True)), "WARNING", id="fires-early-positive-planned"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context(interstitial_lung_disease_history=False)), None, id="quiet-early-positive-no-ild"),
        pytest.param(event(clinical_context=context(interstitial_lung_disease_history=True)), None, id="quiet-nothing-planned-not-eligible"),
        pytest.param(met_event(clinical_context=planned("Enhertu", setting="METASTATIC", **LINES_1_CHEMO)), None, id="quiet-no-ild"),
        pytest.param(met_event(clinical_context=planned("Enhertu", setting="METASTATIC", interstitial_lung_disease_history=None)), None, id="quiet-ild-unknown"),
    ],
)
def test_tc_tdxd_ild(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "TC-TDXD-ILD", ev, severity)


def test_tc_tdxd_ild_figures(pipeline: Pipeline) -> None:
    """5.2 / Sources: 12 %, fatal 1.0 % [S69]; adjuvant DESTINY-Breast05 ILD 9.6 %, mostly grade 1-2 [S64]."""
    alert = check(pipeline, "TC-TDXD-ILD", event(clinical_context=planned("Enhertu", interstitial_lung_disease_history=True)), "WARNING")
    assert alert is not None
    for expected in ("12 %", "fatal in 1.0 %", "9.6 %", "grade 1-2", "not a contraindication"):
        assert expected in alert["detail"], expected
    assert "984" not in alert["detail"]
    assert {e[1 : e.index("]")] for e in alert["evidence"]} >= {"S69", "S64"}


# ---------------------------------------------------------------------------------------------
# 5.3 Retesting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(clinical_context=metastatic()), "WARNING", id="fires-primary-only"),
        pytest.param(event(specimen=specimen("REGIONAL_LYMPH_NODE"), clinical_context=metastatic()), "WARNING", id="fires-lymph-node-is-not-metastatic-setting"),
        pytest.param(event(clinical_context=metastatic(), prior_her2_results=[prior("S22-1", her2_ihc=ihc("ONE_PLUS"))]), "WARNING", id="fires-prior-also-primary"),
        pytest.param(met_event(), None, id="quiet-distant-metastasis"),
        pytest.param(event(specimen=specimen("LOCOREGIONAL_RECURRENCE"), clinical_context=metastatic()), None, id="quiet-locoregional-recurrence"),
        pytest.param(event(clinical_context=metastatic(), prior_her2_results=[prior("S24-2", "DISTANT_METASTASIS", her2_ihc=ihc("ONE_PLUS"))]), None, id="quiet-prior-metastatic-sample"),
        pytest.param(event(clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED")), None, id="quiet-locally-advanced-is-not-metastatic"),
        pytest.param(event(), None, id="quiet-early"),
    ],
)
def test_rt_metastatic_site(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-METASTATIC-SITE", ev, severity)


def test_rt_metastatic_site_history(pipeline: Pipeline) -> None:
    history = (Sample("S24-9", "DISTANT_METASTASIS", dt.date(2024, 2, 2), "LOW", "history"),)
    check(pipeline, "RT-METASTATIC-SITE", event(clinical_context=metastatic()), None, history)


@pytest.mark.parametrize(
    "ev",
    [
        pytest.param(
            met_event(her2_ihc=None, er=ER_POS),
            id="metastatic-specimen-without-her2-test",
        ),
        pytest.param(
            event(
                clinical_context=metastatic(),
                prior_her2_results=[prior("S24-7", "DISTANT_METASTASIS", her2_ihc=None, her2_ish=None)],
            ),
            id="prior-metastatic-entry-without-her2-test",
        ),
    ],
)
def test_rt_metastatic_site_specimen_without_her2_test_is_not_a_sample(
    pipeline: Pipeline, ev: Record
) -> None:
    check(pipeline, "RT-METASTATIC-SITE", ev, "WARNING")


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=ihc("ZERO")), "INFO", id="fires-single-null"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-5", her2_ihc=zero_unstated())]), "INFO", id="fires-null-and-zero-unspecified"),
        pytest.param(met_event(her2_ihc=zero_unstated(), clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED")), "INFO", id="fires-unresectable"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-6", her2_ihc=ihc("TWO_PLUS"))]), "INFO", id="fires-non-decisive-prior-ignored"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-5", her2_ihc=ultralow())]), None, id="quiet-one-ultralow"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-5", her2_ihc=ihc("ONE_PLUS"))]), None, id="quiet-one-low"),
        pytest.param(met_event(her2_ihc=ultralow()), None, id="quiet-ultralow"),
        pytest.param(event(her2_ihc=ihc("ZERO"), specimen=specimen("DISTANT_METASTASIS")), None, id="quiet-early"),
        pytest.param(met_event(her2_ihc=ihc("TWO_PLUS")), None, id="quiet-no-decisive-sample"),
        pytest.param(met_event(her2_ihc=None), None, id="quiet-missing"),
    ],
)
def test_rt_all_zero(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-ALL-ZERO", ev, severity)


def test_rt_all_zero_trop2_note(pipeline: Pipeline) -> None:
    """5.3: the Trop-2 ADC note [S72-S74]; an IHC 0 that is not determinable counts as IHC 0."""
    alert = check(pipeline, "RT-ALL-ZERO", met_event(her2_ihc=zero_not_determinable()), "INFO")
    assert alert is not None
    assert "datopotamab deruxtecan and sacituzumab govitecan are labelled for HER2-negative disease" in alert["detail"]
    assert "whatever the 0 vs 1+ distinction" in alert["detail"]
    assert {e[1 : e.index("]")] for e in alert["evidence"]} >= {"S72", "S73", "S74"}


def test_rt_all_zero_names_the_most_recent_decisive_sample(pipeline: Pipeline) -> None:
    """Section 8 Content: RT-ALL-ZERO names the most recently collected decisive sample."""
    ev = met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-5", her2_ihc=zero_unstated())])
    alert = check(pipeline, "RT-ALL-ZERO", ev, "INFO")
    assert alert is not None
    assert "DISTANT_METASTASIS sample (accession S25-1001, 2025-05-20): NULL" in alert["detail"]
    assert "S22-5" not in alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=ihc("ZERO"), er=ER_POS, prior_her2_results=[prior("S22-0100", her2_ihc=ihc("ONE_PLUS"))]), "INFO", id="fires-worked-example-6"),
        pytest.param(event(her2_ihc=zero_unstated(), prior_her2_results=[prior("S22-1", her2_ihc=ihc("ONE_PLUS"))]), "INFO", id="fires-zero-unspecified-vs-low"),
        pytest.param(event(prior_her2_results=[prior("S22-1", her2_ihc=ihc("THREE_PLUS"))]), "INFO", id="fires-low-vs-positive"),
        pytest.param(event(her2_ihc=ultralow(), prior_her2_results=[prior("S22-1", her2_ihc=ihc("ZERO"))]), "INFO", id="fires-ultralow-vs-null"),
        pytest.param(event(her2_ihc=None, prior_her2_results=[prior("S22-1", her2_ihc=ihc("ZERO")), prior("S23-1", "DISTANT_METASTASIS", her2_ihc=ihc("ONE_PLUS"))]), "INFO", id="fires-between-two-priors"),
        pytest.param(event(her2_ihc=zero_unstated(), prior_her2_results=[prior("S22-1", her2_ihc=ultralow())]), None, id="quiet-zero-unspecified-vs-ultralow"),
        pytest.param(event(her2_ihc=zero_unstated(), prior_her2_results=[prior("S22-1", her2_ihc=ihc("ZERO"))]), None, id="quiet-zero-unspecified-vs-null"),
        pytest.param(event(prior_her2_results=[prior("S22-1", her2_ihc=ihc("ONE_PLUS"))]), None, id="quiet-low-vs-low"),
        pytest.param(event(prior_her2_results=[prior("S22-1", her2_ihc=ihc("TWO_PLUS"))]), None, id="quiet-equivocal-ignored"),
        pytest.param(event(prior_her2_results=[prior("S22-1", her2_ihc=ihc(None))]), None, id="quiet-unscored-ignored"),
        pytest.param(event(prior_her2_results=[prior("S25-1001", her2_ihc=ihc("ZERO"))]), None, id="quiet-prior-with-current-accession-superseded"),
    ],
)
def test_rt_discordant(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-DISCORDANT", ev, severity)


def test_rt_discordant_detail_lists_site_date_category(pipeline: Pipeline) -> None:
    ev = met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-0100", her2_ihc=ihc("ONE_PLUS"))])
    alert = check(pipeline, "RT-DISCORDANT", ev, "INFO")
    assert alert is not None
    for text in ("DISTANT_METASTASIS", "2025-05-20", "NULL", "PRIMARY_BREAST", "2022-03-14", "LOW"):
        assert text in alert["detail"]


REMEMBERED_S21_LOW = Sample("S21-1", "PRIMARY_BREAST", dt.date(2021, 3, 1), "LOW", "history")
REMEMBERED_S20_EQUIVOCAL = Sample("S20-9", "PRIMARY_BREAST", dt.date(2020, 3, 1), "EQUIVOCAL", "history")  # not decisive: compared with nothing


@pytest.mark.parametrize(
    ("ev", "history", "severity"),
    [
        pytest.param(event(prior_her2_results=[prior("S21-1", her2_ihc=ihc("ZERO"))]), (REMEMBERED_S21_LOW,), None, id="quiet-stale-prior-entry-of-a-remembered-accession"),
        pytest.param(event(), (Sample("S25-1001", "PRIMARY_BREAST", COLLECTED, "NULL", "history"),), None, id="quiet-remembered-sample-of-the-current-accession"),
        pytest.param(event(prior_her2_results=[prior("S21-2", her2_ihc=ihc("ZERO"))]), (REMEMBERED_S21_LOW,), "INFO", id="fires-prior-entry-of-another-accession"),
        pytest.param(event(her2_ihc=None, prior_her2_results=[prior(None, her2_ihc=ihc("ZERO")), prior(None, her2_ihc=ihc("ONE_PLUS"))]), (REMEMBERED_S20_EQUIVOCAL,), "INFO", id="fires-two-prior-entries-without-accession"),
    ],
)
def test_rt_discordant_one_sample_per_accession(pipeline: Pipeline, ev: Record, history: tuple[Sample, ...], severity: str | None) -> None:
    """A sample is one HER2 test (section 1): an accession the patient's history remembers is
    that sample, and a prior entry for the same accession is not a second one (nor is a
    remembered sample of the current accession, which the current report supersedes), so no
    discordance of an accession with itself. Entries without an accession cannot be matched and
    each stays a sample of its own. (Every row passes a history: without one, process() takes
    the patient aggregate's path, which keys samples by accession itself.)"""
    assert history
    check(pipeline, "RT-DISCORDANT", ev, severity, history)


@pytest.mark.parametrize(
    ("code", "ev", "severity"),
    [
        pytest.param("RT-DISCORDANT", met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S22-0100", her2_ihc=ihc("ONE_PLUS"))]), "INFO", id="discordant"),
        pytest.param("RT-CONVERSION", met_event(prior_her2_results=[prior("S20-1", her2_ihc=ihc("THREE_PLUS"))]), "WARNING", id="conversion"),
    ],
)
def test_discordance_texts_say_a_second_primary_shows_as_discordance(pipeline: Pipeline, code: str, ev: Record, severity: str) -> None:
    """Section 8: one breast cancer per patient is assumed (no tumour identifier), so a second
    primary shows as discordance, 'and RT-DISCORDANT / RT-CONVERSION texts say so'. Nothing
    beyond the spec: no claim of which sample guides therapy (5.1's POLICY is 'any sample')."""
    alert = check(pipeline, code, ev, severity)
    assert alert is not None
    assert "second primary (e.g. bilateral disease)" in alert["detail"]
    assert "same tumour" in alert["recommendation"]
    assert "guides therapy" not in " ".join((alert["detail"], alert["recommendation"]))


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(prior_her2_results=[prior("S20-1", her2_ihc=ihc("THREE_PLUS"))]), "WARNING", id="fires-positive-primary-low-metastasis"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), prior_her2_results=[prior("S20-1", her2_ihc=ihc("ZERO"))]), "WARNING", id="fires-null-primary-positive-metastasis"),
        pytest.param(met_event(her2_ihc=zero_unstated(), prior_her2_results=[prior("S20-1", her2_ish=dual(3.0, 7.0), her2_ihc=ihc("TWO_PLUS"))]), "WARNING", id="fires-zero-unspecified-vs-ish-positive"),
        pytest.param(met_event(her2_ihc=ihc("ZERO"), prior_her2_results=[prior("S20-1", her2_ihc=ihc("ONE_PLUS"))]), None, id="quiet-low-vs-null-not-conversion"),
        pytest.param(met_event(her2_ihc=ihc("THREE_PLUS"), prior_her2_results=[prior("S20-1", her2_ihc=ihc("THREE_PLUS"))]), None, id="quiet-both-positive"),
        pytest.param(met_event(prior_her2_results=[prior("S20-1", her2_ihc=ihc("TWO_PLUS"))]), None, id="quiet-equivocal-prior-ignored"),
    ],
)
def test_rt_conversion(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-CONVERSION", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(specimen=specimen(decalcified=True)), "WARNING", id="fires-low-decalcified"),
        pytest.param(event(her2_ihc=ihc("ZERO"), specimen=specimen(fixation_hours=80.0)), "WARNING", id="fires-null-fixed-80h"),
        pytest.param(event(specimen=specimen(fixation_hours=5.9)), "WARNING", id="fires-fixed-5.9h"),
        pytest.param(event(specimen=specimen(fixation_hours=72.5)), "WARNING", id="fires-fixed-72.5h"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=61)), "WARNING", id="fires-cold-ischaemia-61"),
        pytest.param(event(her2_ihc=ihc(None), specimen=specimen(decalcified=True)), "WARNING", id="fires-unscored"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.1, 2.2), specimen=specimen(decalcified=True)), "WARNING", id="fires-negative-expression-unknown"),
        pytest.param(event(specimen=specimen(fixation_hours=6.0)), None, id="quiet-fixed-exactly-6h"),
        pytest.param(event(specimen=specimen(fixation_hours=72.0)), None, id="quiet-fixed-exactly-72h"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=60)), None, id="quiet-cold-ischaemia-60"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=None, fixation_hours=None)), None, id="quiet-missing-times-are-dg-only"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), specimen=specimen(decalcified=True)), None, id="quiet-positive"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), specimen=specimen(decalcified=True)), None, id="quiet-equivocal"),
    ],
)
def test_rt_preanalytic(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-PREANALYTIC", ev, severity)


@pytest.mark.parametrize(
    ("ev", "text"),
    [
        pytest.param(event(specimen=specimen(decalcified=True)), "HER2 category LOW on a specimen with: specimen decalcified.", id="decalcified"),
        pytest.param(event(her2_ihc=ihc("ZERO"), specimen=specimen(fixation_hours=80.0)), "HER2 category NULL on a specimen with: fixation 80 h (outside 6-72 h).", id="fixed-80h"),
        pytest.param(event(specimen=specimen(fixation_hours=5.9)), "on a specimen with: fixation 5.9 h (outside 6-72 h).", id="fixed-5.9h"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=61)), "on a specimen with: cold ischaemia 61 min (> 60 min).", id="cold-ischaemia-61"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=90, fixation_hours=72.5, decalcified=True)), "on a specimen with: cold ischaemia 90 min (> 60 min); fixation 72.5 h (outside 6-72 h); specimen decalcified.", id="all-three"),
    ],
)
def test_rt_preanalytic_detail_names_the_problem(pipeline: Pipeline, ev: Record, text: str) -> None:
    """The detail names what was wrong with the specimen's handling (section 5: a detail naming
    the facts it used), with the measured value."""
    alert = check(pipeline, "RT-PREANALYTIC", ev, "WARNING")
    assert alert is not None
    assert text in alert["detail"], alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ish=dual(2.5, 5.0)), "INFO", id="fires-1plus-group1"),
        pytest.param(event(her2_ihc=ihc("ZERO"), her2_ish=dual(2.0, 4.0)), "INFO", id="fires-0-group1-boundary"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(2.5, 5.0)), None, id="quiet-2plus-group1"),
        pytest.param(event(her2_ish=dual(1.5, 3.0)), None, id="quiet-1plus-group5"),
        pytest.param(event(her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=7.0)), None, id="quiet-single-probe"),
        pytest.param(event(her2_ish=ish(reported_result="AMPLIFIED")), None, id="quiet-reported-only-no-group"),
        pytest.param(event(her2_ihc=ihc("ZERO"), her2_ish=dual(2.5, 3.5)), None, id="quiet-group2"),
    ],
)
def test_rt_ihc_ish_discordant(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-IHC-ISH-DISCORDANT", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(clinical_context=context(clinical_flags=["HER2_POSITIVE_LIKE_BEHAVIOR"])), "WARNING", id="fires-her2-positive-like-low"),
        pytest.param(event(her2_ihc=ihc("ZERO"), clinical_context=context(clinical_flags=["TRIPLE_NEGATIVE_LIKE_BEHAVIOR"])), "WARNING", id="fires-triple-negative-like-null"),
        pytest.param(event(her2_ihc=ultralow(), clinical_context=context(clinical_flags=["SUSPECTED_RECEPTOR_CONVERSION"])), "WARNING", id="fires-suspected-conversion-ultralow"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0), clinical_context=context(clinical_flags=["HER2_POSITIVE_LIKE_BEHAVIOR"])), "WARNING", id="fires-negative-expression-unknown"),
        pytest.param(event(clinical_context=context(clinical_flags=[])), None, id="quiet-no-flags"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), clinical_context=context(clinical_flags=["TRIPLE_NEGATIVE_LIKE_BEHAVIOR"])), None, id="quiet-positive"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.5, 5.0), clinical_context=context(clinical_flags=["HER2_POSITIVE_LIKE_BEHAVIOR"])), None, id="quiet-equivocal"),
        pytest.param(event(her2_ihc=ihc(None), clinical_context=context(clinical_flags=["HER2_POSITIVE_LIKE_BEHAVIOR"])), None, id="quiet-unscored"),
    ],
)
def test_rt_clinical_suspicion(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "RT-CLINICAL-SUSPICION", ev, severity)


# ---------------------------------------------------------------------------------------------
# 5.4 Documentation gaps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc(None, reported_text="HER2 negative")), "WARNING", id="fires-reported-negative-without-score"),
        pytest.param(event(her2_ihc=ihc(None), her2_ish=dual(1.2, 2.0)), "WARNING", id="fires-unscored-with-ish"),
        pytest.param(event(), None, id="quiet-scored"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0)), None, id="quiet-no-ihc"),
    ],
)
def test_dg_unscored(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-UNSCORED", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=None, her2_ish=dual(1.2, 2.0)), "WARNING", id="fires-metastatic-warning"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0), clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED")), "WARNING", id="fires-unresectable-warning"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0)), "INFO", id="fires-early-info"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0), clinical_context=None), "INFO", id="fires-setting-unknown-info"),
        pytest.param(event(her2_ihc=None, her2_ish=ish(reported_result="NOT_AMPLIFIED")), "INFO", id="fires-reported-not-amplified"),
        pytest.param(event(her2_ish=dual(1.2, 2.0)), None, id="quiet-ihc-present"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(2.5, 5.0)), None, id="quiet-ish-positive"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.5, 5.0)), None, id="quiet-ish-unresolved"),
    ],
)
def test_dg_ish_only(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-ISH-ONLY", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(met_event(her2_ihc=zero_unstated()), "WARNING", id="fires-hr-positive-advanced-warning"),
        pytest.param(event(her2_ihc=zero_unstated(), clinical_context=context("UNRESECTABLE_LOCALLY_ADVANCED")), "WARNING", id="fires-hr-positive-unresectable-warning"),
        pytest.param(event(her2_ihc=zero_unstated()), "INFO", id="fires-hr-positive-early-info"),
        pytest.param(met_event(her2_ihc=zero_unstated(), er=ER_NEG, pr=PR_NEG), "INFO", id="fires-triple-negative-advanced-info"),
        pytest.param(met_event(her2_ihc=zero_unstated(), er=None, pr=None), "INFO", id="fires-hr-unknown-advanced-info"),
        pytest.param(met_event(her2_ihc=zero_unstated(staining_intensity="WEAK_MODERATE")), "WARNING", id="fires-weak-moderate-not-determinable"),
        pytest.param(met_event(her2_ihc=zero_not_determinable(), clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-worked-example-10"),
        pytest.param(met_event(her2_ihc=ultralow(percent_cells_stained=11.0)), "WARNING", id="fires-faint-incomplete-11-percent-not-determinable"),
        pytest.param(met_event(her2_ihc=ultralow(staining_completeness="COMPLETE")), "WARNING", id="fires-faint-complete-not-determinable"),
        pytest.param(event(her2_ihc=zero_not_determinable()), "INFO", id="fires-not-determinable-early-info"),
        pytest.param(met_event(her2_ihc=zero_not_determinable(), er=ER_NEG, pr=PR_NEG), "INFO", id="fires-not-determinable-triple-negative-info"),
        pytest.param(met_event(her2_ihc=ultralow(percent_cells_stained=10.0)), None, id="quiet-ultralow-exactly-10-percent"),
        pytest.param(met_event(her2_ihc=ihc("ZERO")), None, id="quiet-null"),
        pytest.param(met_event(her2_ihc=ultralow()), None, id="quiet-ultralow"),
        pytest.param(met_event(her2_ihc=zero_unstated(staining_intensity="FAINT")), None, id="quiet-faint-described"),
        pytest.param(met_event(), None, id="quiet-1plus"),
    ],
)
def test_dg_zero_subtype(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-ZERO-SUBTYPE", ev, severity)


@pytest.mark.parametrize(
    ("er", "says_er_low"),
    [
        pytest.param(receptor(5.0, "LOW_POSITIVE"), True, id="er-low"),
        pytest.param(ER_POS, False, id="er-positive"),
    ],
)
def test_dg_zero_subtype_warning_says_when_it_rests_on_er_low(pipeline: Pipeline, er: Record, says_er_low: bool) -> None:
    """Section 1: ER-low counts as HR-positive (POLICY) and alerts that rely on it say so; the
    WARNING of DG-ZERO-SUBTYPE rests on HR-positive."""
    alert = check(pipeline, "DG-ZERO-SUBTYPE", met_event(her2_ihc=zero_unstated(), er=er, pr=PR_NEG), "WARNING")
    assert alert is not None
    assert ("rests on ER-low (1-10 %)" in alert["detail"]) is says_er_low


@pytest.mark.parametrize(
    ("her2_ihc", "says"),
    [
        pytest.param(zero_unstated(), "neither the percentage", id="not-stated"),
        pytest.param(zero_not_determinable(), "does not fit IHC 0", id="not-determinable"),
    ],
)
def test_dg_zero_subtype_says_why(pipeline: Pipeline, her2_ihc: Record, says: str) -> None:
    """Section 2: 'not stated' and 'not determinable' both raise it; the detail says which."""
    alert = check(pipeline, "DG-ZERO-SUBTYPE", met_event(her2_ihc=her2_ihc), "WARNING")
    assert alert is not None
    assert says in alert["detail"]
    other = "does not fit IHC 0" if says == "neither the percentage" else "neither the percentage"
    assert other not in alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("TWO_PLUS")), "WARNING", id="fires-worked-example-4"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), report_status="AMENDED"), "WARNING", id="fires-amended"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), report_status="CORRECTED"), "WARNING", id="fires-corrected"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.3, 2.5)), None, id="quiet-with-ish"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), report_status="PRELIMINARY"), None, id="quiet-preliminary"),
        pytest.param(event(), None, id="quiet-1plus"),
    ],
)
def test_dg_no_reflex_ish(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-NO-REFLEX-ISH", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ish=ish(reported_result="NOT_AMPLIFIED")), "WARNING", id="fires-reported-result-only"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=ish()), "WARNING", id="fires-neither-counts-nor-result"),
        pytest.param(event(her2_ish=dual(1.2, 2.0, cells_counted=19)), "WARNING", id="fires-19-cells"),
        pytest.param(event(her2_ish=ish(her2_cep17_ratio=1.2, reported_result="NOT_AMPLIFIED")), "WARNING", id="fires-ratio-without-copies"),
        pytest.param(event(her2_ish=ish(her2_copies_per_cell=3.0, cep17_copies_per_cell=0.0, reported_result="NOT_AMPLIFIED")), "WARNING", id="fires-cep17-zero"),
        pytest.param(event(her2_ish=ish(probe_type="SINGLE", reported_result="NOT_AMPLIFIED")), "WARNING", id="fires-single-probe-without-copies"),
        pytest.param(event(her2_ish=dual(1.2, 2.0, cells_counted=20)), None, id="quiet-20-cells"),
        pytest.param(event(her2_ish=ish(her2_copies_per_cell=3.0, cep17_copies_per_cell=2.0)), None, id="quiet-ratio-computable"),
        pytest.param(event(her2_ish=dual(1.2, 2.0, cells_counted=None)), None, id="quiet-cells-not-stated"),
        pytest.param(event(her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=3.0)), None, id="quiet-single-probe-counts"),
        pytest.param(event(), None, id="quiet-no-ish"),
    ],
)
def test_dg_ish_counts(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-ISH-COUNTS", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.5, 5.0)), "WARNING", id="fires-group4-2plus-no-recount"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.6, 6.4)), "WARNING", id="fires-group3-no-ihc"),
        pytest.param(event(her2_ihc=ihc("INDETERMINATE"), her2_ish=dual(2.2, 3.5)), "WARNING", id="fires-group2-indeterminate-ihc"),
        pytest.param(event(her2_ihc=ihc(None), her2_ish=dual(2.2, 3.5)), "WARNING", id="fires-group2-unscored-ihc"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=5.0)), "WARNING", id="fires-single-4-6-ihc2"),
        pytest.param(event(her2_ihc=None, her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=4.0)), "WARNING", id="fires-single-exactly-4-no-ihc"),
        pytest.param(event(her2_ish=dual(1.5, 5.0)), None, id="quiet-group4-ihc1-resolved"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.5, 5.0, recount_group=4)), None, id="quiet-group4-recount-confirmed"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.6, 6.4, recount_group=3)), None, id="quiet-worked-example-5"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), her2_ish=dual(1.6, 6.4)), None, id="quiet-group3-ihc3"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.2, 2.0)), None, id="quiet-group5"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=6.0)), None, id="quiet-single-exactly-6"),
    ],
)
def test_dg_ish_workup(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-ISH-WORKUP", ev, severity)


def test_dg_ish_workup_recount_disagrees(pipeline: Pipeline) -> None:
    ev = event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.6, 6.4, recount_group=4))
    check(pipeline, "DG-ISH-WORKUP", ev, "WARNING")


@pytest.mark.parametrize(
    ("ev", "present", "absent"),
    [
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=5.0)), ("single-probe 4.0-<6.0 copies needs dual-probe ISH",), ("group", "not documented"), id="single-probe-5-ihc2-names-no-group"),
        pytest.param(event(her2_ihc=None, her2_ish=ish(probe_type="SINGLE", her2_copies_per_cell=4.0)), ("single-probe 4.0-<6.0 copies needs dual-probe ISH",), ("group", "not documented"), id="single-probe-exactly-4-no-ihc-names-no-group"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.5, 5.0)), ("Dual-probe ISH group: 4.",), ("not documented",), id="dual-group4-ihc2-names-the-group"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.6, 6.4)), ("Dual-probe ISH group: 3.",), ("not documented",), id="dual-group3-no-ihc-names-the-group"),
    ],
)
def test_dg_ish_workup_names_the_group_only_when_there_is_one(pipeline: Pipeline, ev: Record, present: tuple[str, ...], absent: tuple[str, ...]) -> None:
    """5.5: `ish_group` is null by design for single-probe ISH, so its alert names no group (it
    read "(group not documented)", as if the laboratory had left it out); a dual-probe alert
    names its group."""
    alert = check(pipeline, "DG-ISH-WORKUP", ev, "WARNING")
    assert alert is not None
    for text in present:
        assert text in alert["detail"], alert["detail"]
    for text in absent:
        assert text not in alert["detail"].lower(), alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=None)), "WARNING", id="fires-cold-missing-low-warning"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), specimen=specimen(cold_ischemia_minutes=None)), "INFO", id="fires-cold-missing-positive-info"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), her2_ish=dual(1.2, 2.0), specimen=specimen(fixation_hours=None)), "WARNING", id="fires-fixation-missing-2plus-ish-negative-warning"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), specimen=specimen(fixation_hours=None)), "INFO", id="fires-fixation-missing-equivocal-info"),
        pytest.param(event(her2_ihc=ihc(None), specimen=specimen(decalcified=True)), "INFO", id="fires-decalcified-unscored-info"),
        pytest.param(event(her2_ihc=ihc("ZERO"), specimen=specimen(cold_ischemia_minutes=61)), "WARNING", id="fires-cold-61-null"),
        pytest.param(event(her2_ihc=ultralow(), specimen=specimen(fixation_hours=5.9)), "WARNING", id="fires-fixation-5.9-ultralow"),
        pytest.param(event(her2_ihc=zero_unstated(), specimen=specimen(fixation_hours=72.1)), "WARNING", id="fires-fixation-72.1-zero-unspecified"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(1.2, 2.0), specimen=specimen(decalcified=True)), "WARNING", id="fires-ish-only-negative"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), specimen=None), "INFO", id="fires-no-specimen"),
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=60, fixation_hours=6.0)), None, id="quiet-cold-60-fixation-6"),
        pytest.param(event(specimen=specimen(fixation_hours=72.0)), None, id="quiet-fixation-72"),
        pytest.param(event(specimen=specimen(decalcified=None)), None, id="quiet-decalcification-not-stated"),
    ],
)
def test_dg_preanalytic(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-PREANALYTIC", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity", "text"),
    [
        pytest.param(event(specimen=specimen(cold_ischemia_minutes=None)), "WARNING", "Specimen handling: cold ischaemia time not documented.", id="cold-missing"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS"), specimen=specimen(fixation_hours=None)), "INFO", "Specimen handling: fixation time not documented.", id="fixation-missing"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS"), specimen=None), "INFO", "Specimen handling: cold ischaemia time not documented; fixation time not documented.", id="no-specimen"),
        pytest.param(event(her2_ihc=ihc(None), specimen=specimen(decalcified=True)), "INFO", "Specimen handling: specimen decalcified.", id="decalcified"),
        pytest.param(event(her2_ihc=ihc("ZERO"), specimen=specimen(cold_ischemia_minutes=61, fixation_hours=None)), "WARNING", "Specimen handling: cold ischaemia 61 min (> 60 min); fixation time not documented.", id="out-of-range-and-missing"),
    ],
)
def test_dg_preanalytic_detail_names_the_gap(pipeline: Pipeline, ev: Record, severity: str, text: str) -> None:
    """The detail names which handling time is missing or out of range (section 5: a detail
    naming the facts it used)."""
    alert = check(pipeline, "DG-PREANALYTIC", ev, severity)
    assert alert is not None
    assert text in alert["detail"], alert["detail"]


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", antibody_clone=None)), "INFO", id="fires-no-clone"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", assay_type=None)), "INFO", id="fires-no-assay-type"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", antibody_clone=None, assay_type=None)), "INFO", id="fires-neither"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", assay_type="LABORATORY_DEVELOPED")), None, id="quiet-ldt-documented"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(2.5, 5.0)), None, id="quiet-no-ihc"),
    ],
)
def test_dg_assay(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-ASSAY", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(specimen=specimen("UNKNOWN")), "INFO", id="fires-site-unknown"),
        pytest.param(event(specimen=specimen(collection_date=None)), "INFO", id="fires-date-missing"),
        pytest.param(event(specimen=None), "INFO", id="fires-specimen-missing"),
        pytest.param(event(specimen=specimen("REGIONAL_LYMPH_NODE")), None, id="quiet-documented-node"),
        pytest.param(event(her2_ihc=None, specimen=specimen("UNKNOWN")), None, id="quiet-no-her2-test"),
    ],
)
def test_dg_specimen(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-SPECIMEN", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", percent_cells_stained=None)), "INFO", id="fires-no-percentage"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", percent_cells_stained=None, staining_intensity=None, staining_completeness=None)), "INFO", id="fires-no-detail"),
        pytest.param(event(), None, id="quiet-documented"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS", percent_cells_stained=None, staining_intensity=None, staining_completeness=None), her2_ish=dual(1.1, 2.0)), None, id="quiet-2plus"),
        pytest.param(event(her2_ihc=zero_unstated()), None, id="quiet-0-has-its-own-gap"),
    ],
)
def test_dg_staining_detail(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-STAINING-DETAIL", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", controls_documented=None)), "INFO", id="fires-missing"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", controls_documented=False)), "INFO", id="fires-false"),
        pytest.param(event(), None, id="quiet-true"),
        pytest.param(event(her2_ihc=None, her2_ish=dual(2.5, 5.0)), None, id="quiet-no-ihc"),
    ],
)
def test_dg_controls(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-CONTROLS", ev, severity)


@pytest.mark.parametrize(
    ("ev", "severity"),
    [
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", percent_cells_stained=10.0)), "WARNING", id="fires-1plus-10-percent"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", staining_intensity="FAINT")), "WARNING", id="fires-3plus-faint"),
        pytest.param(event(her2_ihc=ihc("ZERO", percent_cells_stained=11.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE")), "WARNING", id="fires-0-11-percent"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", staining_completeness="COMPLETE")), "WARNING", id="fires-1plus-complete"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", staining_intensity="STRONG")), "WARNING", id="fires-1plus-strong"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", staining_intensity="WEAK_MODERATE")), "WARNING", id="fires-3plus-weak-moderate"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", staining_completeness="INCOMPLETE")), "WARNING", id="fires-3plus-incomplete"),
        pytest.param(event(her2_ihc=ihc("THREE_PLUS", percent_cells_stained=10.0)), "WARNING", id="fires-3plus-10-percent"),
        pytest.param(met_event(her2_ihc=zero_not_determinable(), clinical_context=metastatic(**ENDO_1)), "WARNING", id="fires-0-strong-complete-worked-example-10"),
        pytest.param(event(her2_ihc=ihc("ZERO", percent_cells_stained=None, staining_intensity="WEAK_MODERATE", staining_completeness=None)), "WARNING", id="fires-0-weak-moderate"),
        pytest.param(event(her2_ihc=ihc("ZERO", percent_cells_stained=None, staining_intensity=None, staining_completeness="COMPLETE")), "WARNING", id="fires-0-complete"),
        pytest.param(event(her2_ihc=ultralow()), None, id="quiet-0-ultralow"),
        pytest.param(event(her2_ihc=ihc("ZERO")), None, id="quiet-0-null"),
        pytest.param(event(her2_ihc=zero_unstated()), None, id="quiet-0-not-stated"),
        pytest.param(event(her2_ihc=ihc("ONE_PLUS", percent_cells_stained=11.0)), None, id="quiet-1plus-11-percent"),
        pytest.param(event(her2_ihc=ihc("ZERO", percent_cells_stained=10.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE")), None, id="quiet-0-10-percent"),
        pytest.param(event(her2_ihc=ihc("TWO_PLUS", percent_cells_stained=5.0, staining_intensity="STRONG"), her2_ish=dual(1.1, 2.0)), None, id="quiet-2plus-never"),
    ],
)
def test_dg_score_inconsistent(pipeline: Pipeline, ev: Record, severity: str | None) -> None:
    check(pipeline, "DG-SCORE-INCONSISTENT", ev, severity)


def test_dg_score_inconsistent_zero_says_it_may_be_2plus(pipeline: Pipeline) -> None:
    """Section 2: an IHC 0 whose detail does not fit IHC 0 is an unusual pattern (2+, reflex ISH)."""
    alert = check(pipeline, "DG-SCORE-INCONSISTENT", met_event(her2_ihc=zero_not_determinable()), "WARNING")
    assert alert is not None
    assert "2+ with reflex ISH" in alert["detail"]
    assert "not treated as ultralow" in alert["detail"]
    quiet_note = check(pipeline, "DG-SCORE-INCONSISTENT", event(her2_ihc=ihc("ONE_PLUS", staining_intensity="STRONG")), "WARNING")
    assert quiet_note is not None
    assert "reflex ISH" not in quiet_note["detail"]


def test_score_inconsistent_keeps_reported_score(pipeline: Pipeline) -> None:
    """Section 1 POLICY: the engine never re-scores; it raises the gap and keeps the score."""
    ev = event(her2_ihc=ihc("THREE_PLUS", percent_cells_stained=5.0), clinical_context=planned("trastuzumab"))
    outcome = pipeline.process(ev)
    assert outcome.classification["category"] == "POSITIVE"
    assert outcome.classification["ihc_score"] == "THREE_PLUS"
    assert "DG-SCORE-INCONSISTENT" in {a["code"] for a in outcome.alerts}


# ---------------------------------------------------------------------------------------------
# Cross-cutting behaviour
# ---------------------------------------------------------------------------------------------

NOISY = met_event(
    her2_ihc=ihc(None, antibody_clone=None, controls_documented=None),
    specimen=specimen("UNKNOWN", collection_date=None, cold_ischemia_minutes=None, decalcified=True),
    clinical_context=planned("trastuzumab", "Enhertu", setting="METASTATIC", interstitial_lung_disease_history=True),
)


class TestReportStatus:
    """Section 1: only FINAL, AMENDED and CORRECTED raise alerts."""

    @pytest.mark.parametrize("status", ["PRELIMINARY", "CANCELLED"])
    def test_no_alerts(self, pipeline: Pipeline, status: str) -> None:
        outcome = pipeline.process({**NOISY, "report_status": status})
        assert outcome.alerts == []
        assert outcome.classification["category"] == "UNSCORED"  # classified only

    @pytest.mark.parametrize("status", ["FINAL", "AMENDED", "CORRECTED"])
    def test_alerts(self, pipeline: Pipeline, status: str) -> None:
        assert pipeline.process({**NOISY, "report_status": status}).alerts


class TestDocumentationGapsNeedAHer2Test:
    """5.5: documentation gaps are evaluated only when the event carries a HER2 test."""

    def test_no_her2_test_no_documentation_gap(self, pipeline: Pipeline) -> None:
        ev = {**NOISY, "her2_ihc": None, "her2_ish": None}
        alerts = pipeline.process(ev).alerts
        assert alerts  # e.g. TC-HER2-STATUS-NOT-FINAL (MISSING) still fires
        assert not [a for a in alerts if a["alert_type"] == "DOCUMENTATION_GAP"]

    def test_same_event_with_test_has_gaps(self, pipeline: Pipeline) -> None:
        alerts = pipeline.process(NOISY).alerts
        assert {"DG-UNSCORED", "DG-ASSAY", "DG-CONTROLS", "DG-SPECIMEN", "DG-PREANALYTIC"} <= {
            a["code"] for a in alerts
        }


class TestAlertRecords:
    """design.md Outputs: deterministic ids, evidence and rule-set version on every alert."""

    def test_same_event_twice_same_ids(self, ruleset: RuleSet) -> None:
        first = Pipeline(ruleset, clock=lambda: NOW).process(NOISY).alerts
        later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        second = Pipeline(ruleset, clock=lambda: later).process(NOISY).alerts
        assert [a["alert_id"] for a in first] == [a["alert_id"] for a in second]

    def test_a_finding_keeps_its_id_across_reports(self, pipeline: Pipeline) -> None:
        """alert_id is the finding's identity (patient, code, REPORT accession), not the event's."""
        first = {a["alert_id"] for a in pipeline.process(NOISY).alerts}
        second = {a["alert_id"] for a in pipeline.process({**NOISY, "event_id": "evt-0002"}).alerts}
        assert first
        assert first == second

    def test_another_patient_other_ids(self, pipeline: Pipeline) -> None:
        first = {a["alert_id"] for a in pipeline.process(NOISY).alerts}
        other = {a["alert_id"] for a in pipeline.process({**NOISY, "patient_id": "pat-other"}).alerts}
        assert first.isdisjoint(other)

    def test_report_codes_are_per_accession(self, pipeline: Pipeline) -> None:
        first = {a["code"]: a["alert_id"] for a in pipeline.process(NOISY).alerts}
        other = {a["code"]: a["alert_id"] for a in pipeline.process({**NOISY, "accession_id": "acc-other"}).alerts}
        for code, aid in first.items():
            assert (aid == other[code]) == (scope_of(code) == "PATIENT"), code

    def test_ids_unique_within_event(self, pipeline: Pipeline) -> None:
        alerts = pipeline.process(NOISY).alerts
        assert len({a["alert_id"] for a in alerts}) == len(alerts)

    def test_every_alert_carries_evidence_and_versions(self, pipeline: Pipeline, ruleset: RuleSet) -> None:
        shipped = yaml.safe_load((data_dir("rules") / "ruleset.yaml").read_text(encoding="utf-8"))
        alerts = pipeline.process(NOISY).alerts
        assert len(alerts) >= 8
        by_id = {r.rule_id: r for r in ruleset.rules}
        for alert in alerts:
            assert alert["ruleset_version"] == str(shipped["version"])
            assert alert["rule_version"] == by_id[alert["rule_id"]].version
            assert alert["evidence"]
            for citation in alert["evidence"]:
                ref = citation[1 : citation.index("]")]
                assert citation.startswith("[")
                assert ref in shipped["citations"]
                assert len(citation) > len(ref) + 3  # the full citation text, not only the key
            assert alert["title"]
            assert alert["detail"]
            assert alert["recommendation"]
            assert "not documented" in alert["detail"] or "{" not in alert["detail"]
            assert alert["patient_id"] == "pat-0001"
            assert alert["accession_id"] == "S25-1001"
            assert alert["event_id"] == "evt-0001"
            assert alert["her2_category"] == "UNSCORED"
            assert alert["created_at"] == NOW
            assert alert["event_time"] == EVENT_TIME


def test_every_code_has_an_end_to_end_test() -> None:
    """Each of the 30 codes has its own table-driven test function in this module."""
    names = {f"test_{code.lower().replace('-', '_')}" for code in ALERT_TYPE}
    missing = sorted(n for n in names if not callable(globals().get(n)))
    assert not missing
