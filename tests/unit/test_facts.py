"""Unit tests of consumer.clinical.facts against docs/her2-rules.md sections 1, 5.1, 5.3, 5.5 and 6."""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from consumer.clinical.classify import classify_sample, hr_status
from consumer.clinical.facts import (
    CONTEXT_FACTS,
    FACTS,
    REPORT_DETAIL_FACTS,
    SAMPLE_FACTS,
    Sample,
    add_calendar_months,
    derive,
    discordant,
    discordant_pair,
    discordant_pairs,
    named_pair,
    prior_samples,
    recurred_within_months,
)
from consumer.clinical.model import CATEGORIES, PATIENT, REPORT
from consumer.clinical.rules import load_ruleset
from consumer.tools.synthetic import SyntheticGenerator

D = dt.date


def facts_for(event: dict[str, Any], history: tuple[Sample, ...] = ()) -> dict[str, Any]:
    """Classify the event's own sample and derive every fact."""
    sc = classify_sample(event.get("her2_ihc"), event.get("her2_ish"))
    return derive(event, sc, history)


def event(**fields: Any) -> dict[str, Any]:
    """A minimal FINAL event on a dated primary-breast specimen, IHC 1+, HR-positive, metastatic."""
    base: dict[str, Any] = {
        "event_id": "e-1",
        "patient_id": "p-1",
        "accession_id": "A-CURRENT",
        "report_status": "FINAL",
        "specimen": {"site": "PRIMARY_BREAST", "collection_date": D(2025, 3, 1)},
        "her2_ihc": {"score": "ONE_PLUS", "percent_cells_stained": 30.0},
        "her2_ish": None,
        "er": {"percent_positive": 90.0, "result": "POSITIVE"},
        "pr": {"percent_positive": 20.0, "result": "POSITIVE"},
        "clinical_context": {"disease_setting": "METASTATIC"},
        "prior_her2_results": [],
    }
    base.update(fields)
    return base


def prior(accession: str | None, site: str, score: str | None, **ihc: Any) -> dict[str, Any]:
    """A prior_her2_results entry with an IHC result (score None = no IHC at all)."""
    return {
        "accession_id": accession,
        "specimen": {"site": site, "collection_date": D(2023, 5, 10)},
        "her2_ihc": {"score": score, **ihc} if score is not None else None,
        "her2_ish": None,
    }


NULL_IHC = {"score": "ZERO", "percent_cells_stained": 0.0}
ULTRALOW_IHC = {"score": "ZERO", "percent_cells_stained": 5.0}
ZERO_IHC = {"score": "ZERO"}
POSITIVE_IHC = {"score": "THREE_PLUS"}
TRIPLE_NEGATIVE = {"er": {"percent_positive": 0.0}, "pr": {"result": "NEGATIVE"}}


class TestAddCalendarMonths:
    """Section 6: add 6 to the month and clamp the day to the month's end."""

    @pytest.mark.parametrize(
        ("start", "months", "expected"),
        [
            pytest.param(D(2022, 8, 31), 6, D(2023, 2, 28), id="31-aug-to-28-feb"),
            pytest.param(D(2023, 8, 31), 6, D(2024, 2, 29), id="31-aug-to-29-feb-leap-year"),
            pytest.param(D(2099, 8, 31), 6, D(2100, 2, 28), id="2100-is-not-a-leap-year"),
            pytest.param(D(1999, 8, 31), 6, D(2000, 2, 29), id="2000-is-a-leap-year"),
            pytest.param(D(2024, 3, 31), 6, D(2024, 9, 30), id="31-mar-to-30-sep"),
            pytest.param(D(2024, 12, 31), 6, D(2025, 6, 30), id="31-dec-to-30-jun-next-year"),
            pytest.param(D(2024, 7, 31), 6, D(2025, 1, 31), id="31-jul-to-31-jan-no-clamp"),
            pytest.param(D(2024, 1, 15), 6, D(2024, 7, 15), id="mid-month"),
            pytest.param(D(2024, 9, 30), 6, D(2025, 3, 30), id="30-sep-to-30-mar"),
            pytest.param(D(2024, 6, 30), 6, D(2024, 12, 30), id="stays-in-year"),
            pytest.param(D(2024, 7, 1), 6, D(2025, 1, 1), id="first-of-month-wraps-year"),
            pytest.param(D(2024, 2, 29), 12, D(2025, 2, 28), id="29-feb-plus-12-clamps"),
            pytest.param(D(2024, 5, 17), 0, D(2024, 5, 17), id="zero-months"),
        ],
    )
    def test_add(self, start: dt.date, months: int, expected: dt.date) -> None:
        assert add_calendar_months(start, months) == expected


class TestRecurredWithinMonths:
    """Section 5.1 and 6: recurrence <= end + 6 calendar months, inclusive; during therapy counts."""

    @pytest.mark.parametrize(
        ("recurrence", "end", "expected"),
        [
            pytest.param(D(2025, 2, 28), D(2024, 8, 31), True, id="exactly-on-clamped-boundary"),
            pytest.param(D(2025, 3, 1), D(2024, 8, 31), False, id="one-day-after-clamped-boundary"),
            pytest.param(D(2024, 2, 29), D(2023, 8, 31), True, id="leap-boundary-inclusive"),
            pytest.param(D(2024, 3, 1), D(2023, 8, 31), False, id="leap-boundary-plus-one-day"),
            pytest.param(D(2024, 9, 30), D(2024, 3, 31), True, id="31-mar-boundary-30-sep"),
            pytest.param(D(2024, 10, 1), D(2024, 3, 31), False, id="31-mar-boundary-plus-one-day"),
            pytest.param(D(2024, 7, 15), D(2024, 1, 15), True, id="exactly-six-months"),
            pytest.param(D(2024, 7, 16), D(2024, 1, 15), False, id="six-months-and-a-day"),
            pytest.param(D(2024, 1, 15), D(2024, 1, 15), True, id="on-the-end-date"),
            pytest.param(D(2023, 11, 2), D(2024, 1, 15), True, id="during-therapy-before-end-date"),
            pytest.param(D(2020, 1, 1), D(2024, 1, 15), True, id="long-before-end-date"),
            pytest.param(D(2026, 1, 15), D(2024, 1, 15), False, id="two-years-later"),
        ],
    )
    def test_window(self, recurrence: dt.date, end: dt.date, expected: bool) -> None:
        assert recurred_within_months(recurrence, end, 6) is expected

    @pytest.mark.parametrize(
        ("recurrence", "end"),
        [
            pytest.param(None, D(2024, 1, 15), id="recurrence-missing"),
            pytest.param(D(2024, 3, 1), None, id="end-date-missing"),
            pytest.param(None, None, id="both-missing"),
        ],
    )
    def test_missing_dates_are_unknown(self, recurrence: dt.date | None, end: dt.date | None) -> None:
        """Unknown treatment history never counts as met: the fact is None, not False or True."""
        assert recurred_within_months(recurrence, end, 6) is None

    @pytest.mark.parametrize(
        ("context", "adjuvant", "anti_her2"),
        [
            pytest.param(
                {"recurrence_date": D(2025, 2, 28), "adjuvant_chemotherapy_end_date": D(2024, 8, 31)},
                True, None, id="adjuvant-boundary-day",
            ),
            pytest.param(
                {"recurrence_date": D(2025, 3, 1), "adjuvant_chemotherapy_end_date": D(2024, 8, 31)},
                False, None, id="adjuvant-day-after",
            ),
            pytest.param(
                {"recurrence_date": D(2024, 9, 30), "perioperative_anti_her2_end_date": D(2024, 3, 31)},
                None, True, id="anti-her2-boundary-day",
            ),
            pytest.param(
                {"recurrence_date": D(2024, 10, 1), "perioperative_anti_her2_end_date": D(2024, 3, 31)},
                None, False, id="anti-her2-day-after",
            ),
            pytest.param(
                {"adjuvant_chemotherapy_end_date": D(2024, 8, 31), "perioperative_anti_her2_end_date": D(2024, 3, 31)},
                None, None, id="no-recurrence-date",
            ),
        ],
    )
    def test_derived_facts(self, context: dict[str, Any], adjuvant: bool | None, anti_her2: bool | None) -> None:
        facts = facts_for(event(clinical_context={"disease_setting": "METASTATIC", **context}))
        assert facts["recurrence_within_6m_of_adjuvant_chemotherapy"] is adjuvant
        assert facts["recurrence_within_6m_of_perioperative_anti_her2"] is anti_her2


class TestDiscordant:
    """Section 5.3: tiers POSITIVE, LOW, ULTRALOW, NULL; ZERO_UNSPECIFIED compatible with ULTRALOW/NULL."""

    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [
            pytest.param("ZERO_UNSPECIFIED", "ULTRALOW", False, id="zero-unspecified-vs-ultralow-compatible"),
            pytest.param("ZERO_UNSPECIFIED", "NULL", False, id="zero-unspecified-vs-null-compatible"),
            pytest.param("ZERO_UNSPECIFIED", "LOW", True, id="zero-unspecified-vs-low"),
            pytest.param("ZERO_UNSPECIFIED", "POSITIVE", True, id="zero-unspecified-vs-positive"),
            pytest.param("POSITIVE", "LOW", True, id="positive-vs-low-conversion"),
            pytest.param("POSITIVE", "NULL", True, id="positive-vs-null"),
            pytest.param("LOW", "ULTRALOW", True, id="low-vs-ultralow"),
            pytest.param("LOW", "NULL", True, id="low-vs-null"),
            pytest.param("ULTRALOW", "NULL", True, id="ultralow-vs-null"),
            pytest.param("LOW", "LOW", False, id="same-low"),
            pytest.param("NULL", "NULL", False, id="same-null"),
            pytest.param("ZERO_UNSPECIFIED", "ZERO_UNSPECIFIED", False, id="same-zero-unspecified"),
            pytest.param("EQUIVOCAL", "LOW", False, id="equivocal-ignored"),
            pytest.param("MISSING", "POSITIVE", False, id="missing-ignored"),
            pytest.param("UNSCORED", "NULL", False, id="unscored-ignored"),
            pytest.param("INDETERMINATE", "LOW", False, id="indeterminate-ignored"),
            pytest.param("NEGATIVE_EXPRESSION_UNKNOWN", "LOW", False, id="negative-expression-unknown-ignored"),
            pytest.param("NEGATIVE_EXPRESSION_UNKNOWN", "POSITIVE", False, id="neu-vs-positive-ignored"),
        ],
    )
    def test_pair(self, a: str, b: str, expected: bool) -> None:
        assert discordant(a, b) is expected
        assert discordant(b, a) is expected

    @pytest.mark.parametrize(
        ("current_ihc", "prior_score", "prior_detail", "disc", "conversion"),
        [
            pytest.param(NULL_IHC, "ONE_PLUS", {}, True, False, id="null-vs-low"),
            pytest.param({"score": "ONE_PLUS"}, "THREE_PLUS", {}, True, True, id="low-vs-positive-conversion"),
            pytest.param(POSITIVE_IHC, "ZERO", {"percent_cells_stained": 0.0}, True, True, id="positive-vs-null-conversion"),
            pytest.param(ZERO_IHC, "ZERO", {"percent_cells_stained": 4.0}, False, False, id="zero-unspecified-vs-ultralow"),
            pytest.param(ZERO_IHC, "ONE_PLUS", {}, True, False, id="zero-unspecified-vs-low"),
            pytest.param({"score": "TWO_PLUS"}, "ONE_PLUS", {}, False, False, id="equivocal-vs-low-ignored"),
            pytest.param({"score": "ONE_PLUS"}, "ONE_PLUS", {}, False, False, id="low-vs-low"),
        ],
    )
    def test_derived(
        self, current_ihc: dict[str, Any], prior_score: str, prior_detail: dict[str, Any], disc: bool, conversion: bool
    ) -> None:
        facts = facts_for(
            event(her2_ihc=current_ihc, prior_her2_results=[prior("A-OLD", "PRIMARY_BREAST", prior_score, **prior_detail)])
        )
        assert facts["samples_discordant"] is disc
        assert facts["her2_conversion"] is conversion
        if disc:
            detail = facts["discordance_detail"]
            assert "A-OLD" in detail
            assert "PRIMARY_BREAST" in detail
            assert "2023-05-10" in detail
            assert "2025-03-01" in detail


class TestPriorSamples:
    """Section 5.5: a prior entry with the current accession is superseded and ignored."""

    def test_current_accession_is_ignored(self) -> None:
        ev = event(
            prior_her2_results=[
                prior("A-CURRENT", "PRIMARY_BREAST", "THREE_PLUS"),
                prior("A-OLD", "DISTANT_METASTASIS", "ONE_PLUS"),
            ]
        )
        samples = prior_samples(ev)
        assert [s.accession_id for s in samples] == ["A-OLD"]
        assert samples[0].category == "LOW"

    def test_superseded_positive_does_not_block_the_low_routes(self) -> None:
        facts = facts_for(event(her2_ihc=NULL_IHC, prior_her2_results=[prior("A-CURRENT", "PRIMARY_BREAST", "THREE_PLUS")]))
        assert facts["any_sample_positive"] is False
        assert facts["samples_discordant"] is False
        assert facts["her2_conversion"] is False

    def test_superseded_low_does_not_qualify(self) -> None:
        facts = facts_for(event(her2_ihc=NULL_IHC, prior_her2_results=[prior("A-CURRENT", "PRIMARY_BREAST", "ONE_PLUS")]))
        assert facts["tdxd_db04_her2_condition"] is False
        assert facts["low_sample"] is None

    def test_every_prior_is_classified_with_the_same_algorithm(self) -> None:
        ev = event(
            prior_her2_results=[
                prior("A1", "PRIMARY_BREAST", "ZERO", percent_cells_stained=0.0),
                prior("A2", "PRIMARY_BREAST", "ZERO", staining_intensity="FAINT"),
                prior("A3", "PRIMARY_BREAST", "TWO_PLUS"),
                prior("A4", "PRIMARY_BREAST", None),
            ]
        )
        assert [s.category for s in prior_samples(ev)] == ["NULL", "ULTRALOW", "EQUIVOCAL", "MISSING"]


class TestSamplePolicy:
    """Section 5.1 POLICY 'any sample': any LOW (resp. LOW/ULTRALOW) sample, none ever POSITIVE."""

    def test_prior_low_qualifies_when_current_is_null(self) -> None:
        """Worked example 6: TDXD routes evaluated on the prior LOW sample."""
        facts = facts_for(
            event(
                specimen={"site": "DISTANT_METASTASIS", "collection_date": D(2025, 3, 1)},
                her2_ihc=NULL_IHC,
                prior_her2_results=[prior("A-PRIMARY", "PRIMARY_BREAST", "ONE_PLUS")],
            )
        )
        assert facts["category"] == "NULL"
        assert facts["tdxd_db04_her2_condition"] is True
        assert facts["tdxd_db06_her2_condition"] is True
        assert "A-PRIMARY" in facts["low_sample"]
        assert facts["low_sample_is_primary"] is True

    def test_history_low_qualifies(self) -> None:
        history = (Sample("A-HIST", "DISTANT_METASTASIS", D(2024, 1, 1), "LOW", "history"),)
        facts = facts_for(event(her2_ihc=NULL_IHC), history)
        assert facts["tdxd_db04_her2_condition"] is True
        assert "A-HIST" in facts["low_sample"]
        assert facts["low_sample_is_primary"] is False

    @pytest.mark.parametrize(
        "positive_source",
        [
            pytest.param("prior", id="prior-positive"),
            pytest.param("history", id="history-positive"),
        ],
    )
    def test_any_positive_sample_blocks_the_low_routes(self, positive_source: str) -> None:
        priors = [prior("A-POS", "PRIMARY_BREAST", "THREE_PLUS")] if positive_source == "prior" else []
        history = (
            (Sample("A-POS", "PRIMARY_BREAST", D(2022, 1, 1), "POSITIVE", "history"),)
            if positive_source == "history"
            else ()
        )
        facts = facts_for(event(prior_her2_results=priors), history)
        assert facts["category"] == "LOW"
        assert facts["any_sample_positive"] is True
        assert facts["tdxd_db04_her2_condition"] is False
        assert facts["tdxd_db06_her2_condition"] is False

    def test_ultralow_qualifies_db06_not_db04(self) -> None:
        facts = facts_for(event(her2_ihc=ULTRALOW_IHC))
        assert facts["tdxd_db04_her2_condition"] is False
        assert facts["tdxd_db06_her2_condition"] is True

    def test_db06_needs_hr_positive(self) -> None:
        """5.5: a triple-negative ultralow result is not a DB06 candidate."""
        facts = facts_for(event(her2_ihc=ULTRALOW_IHC, **TRIPLE_NEGATIVE))
        assert facts["triple_negative"] is True
        assert facts["tdxd_db06_her2_condition"] is False

    def test_db06_not_with_unknown_hr(self) -> None:
        facts = facts_for(event(her2_ihc=ULTRALOW_IHC, er={"result": "NEGATIVE"}, pr=None))
        assert facts["hr_status"] == "UNKNOWN"
        assert facts["tdxd_db06_her2_condition"] is False

    @pytest.mark.parametrize(
        "her2_ihc",
        [
            pytest.param(NULL_IHC, id="null"),
            pytest.param(ZERO_IHC, id="zero-unspecified"),
            pytest.param({"score": "INDETERMINATE"}, id="indeterminate"),
            pytest.param({"score": "TWO_PLUS"}, id="equivocal"),
        ],
    )
    def test_no_qualifying_sample(self, her2_ihc: dict[str, Any]) -> None:
        facts = facts_for(event(her2_ihc=her2_ihc))
        assert facts["tdxd_db04_her2_condition"] is False
        assert facts["tdxd_db06_her2_condition"] is False


class TestOtherFacts:
    """Pre-analytic boundaries (5.3/5.4/5.5), treatment counts, the HER2-test gate."""

    @pytest.mark.parametrize(
        ("specimen", "risk", "gap"),
        [
            pytest.param({"cold_ischemia_minutes": 60, "fixation_hours": 6.0, "decalcified": False}, False, False, id="cold-60-fixation-exactly-6"),
            pytest.param({"cold_ischemia_minutes": 30, "fixation_hours": 72.0}, False, False, id="fixation-exactly-72"),
            pytest.param({"cold_ischemia_minutes": 61, "fixation_hours": 24.0}, True, True, id="cold-61"),
            pytest.param({"cold_ischemia_minutes": 30, "fixation_hours": 5.9}, True, True, id="fixation-5.9"),
            pytest.param({"cold_ischemia_minutes": 30, "fixation_hours": 72.1}, True, True, id="fixation-72.1"),
            pytest.param({"cold_ischemia_minutes": 30, "fixation_hours": 24.0, "decalcified": True}, True, True, id="decalcified"),
            pytest.param({"fixation_hours": 24.0}, False, True, id="cold-missing"),
            pytest.param({"cold_ischemia_minutes": 30}, False, True, id="fixation-missing"),
        ],
    )
    def test_preanalytic(self, specimen: dict[str, Any], risk: bool, gap: bool) -> None:
        spec = {"site": "PRIMARY_BREAST", "collection_date": D(2025, 1, 1), **specimen}
        facts = facts_for(event(specimen=spec))
        assert facts["preanalytic_risk"] is risk
        assert facts["preanalytic_documentation_gap"] is gap

    def test_unknown_lines_stay_unknown(self) -> None:
        facts = facts_for(event(clinical_context={"disease_setting": "METASTATIC"}))
        assert facts["metastatic_chemotherapy_lines"] is None
        assert facts["metastatic_endocrine_therapy_lines"] is None
        assert facts["metastatic_anti_her2_lines"] is None

    @pytest.mark.parametrize(
        ("her2_ihc", "her2_ish", "has_test"),
        [
            pytest.param(None, None, False, id="no-test"),
            pytest.param({"score": None}, None, True, id="unscored-ihc"),
            pytest.param(None, {"reported_result": "NOT_AMPLIFIED"}, True, id="ish-only"),
        ],
    )
    def test_has_her2_test(self, her2_ihc: Any, her2_ish: Any, has_test: bool) -> None:
        assert facts_for(event(her2_ihc=her2_ihc, her2_ish=her2_ish))["has_her2_test"] is has_test

    @pytest.mark.parametrize("setting", ["METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED"])
    def test_advanced(self, setting: str) -> None:
        assert facts_for(event(clinical_context={"disease_setting": setting}))["advanced"] is True

    @pytest.mark.parametrize("context", [{"disease_setting": "EARLY"}, {"disease_setting": "UNKNOWN"}, {}, None])
    def test_not_advanced(self, context: dict[str, Any] | None) -> None:
        assert facts_for(event(clinical_context=context))["advanced"] is False

    @pytest.mark.parametrize(
        ("her2_ihc", "unstated", "not_determinable"),
        [
            pytest.param(ZERO_IHC, True, False, id="zero-not-stated"),
            pytest.param({"score": "ZERO", "percent_cells_stained": 5.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"}, False, True, id="zero-strong-complete-not-determinable"),
            pytest.param({"score": "ZERO", "percent_cells_stained": 11.0}, False, True, id="zero-11-percent-not-determinable"),
            pytest.param({"score": "ZERO", "staining_intensity": "WEAK_MODERATE"}, False, True, id="zero-weak-moderate-not-determinable"),
            pytest.param(ULTRALOW_IHC, False, False, id="ultralow"),
            pytest.param(NULL_IHC, False, False, id="null"),
            pytest.param({"score": "ONE_PLUS", "staining_intensity": "STRONG"}, False, False, id="not-ihc-0"),
        ],
    )
    def test_zero_subtype_facts(self, her2_ihc: dict[str, Any], unstated: bool, not_determinable: bool) -> None:
        """Section 2 / DG-ZERO-SUBTYPE: 'not stated' and 'not determinable' are separate facts."""
        facts = facts_for(event(her2_ihc=her2_ihc))
        assert facts["zero_subtype_unstated"] is unstated
        assert facts["zero_subtype_not_determinable"] is not_determinable
        assert facts["score_inconsistent"] is not_determinable or her2_ihc["score"] != "ZERO"
        if unstated or not_determinable:
            assert facts["category"] == "ZERO_UNSPECIFIED"

    def test_catalogue_matches_derived_facts(self) -> None:
        """Every fact a rule may name is derived, and every derived fact is catalogued."""
        assert set(facts_for(event())) == set(FACTS)

    @pytest.mark.parametrize("category", CATEGORIES)
    def test_triple_negative_needs_her2_not_positive(self, category: str) -> None:
        sc = classify_sample(None, None)._replace(category=category)
        facts = derive(event(**TRIPLE_NEGATIVE), sc)
        assert facts["triple_negative"] is (category != "POSITIVE")


def test_the_linear_pair_choice_equals_the_pairwise_one() -> None:
    """discordant_pair() names the pair named_pair(discordant_pairs()) names, on random patients."""
    rng = random.Random(5)  # noqa: S311 - reproducible test data
    categories = ["POSITIVE", "LOW", "ULTRALOW", "NULL", "ZERO_UNSPECIFIED", "MISSING", "EQUIVOCAL"]
    for _ in range(500):
        samples = [
            Sample(f"A{i}", "PRIMARY_BREAST",
                   None if rng.random() < 0.2 else dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(2000)),
                   rng.choice(categories), "history", order=i)
            for i in range(rng.randrange(0, 9))
        ]
        pairs = discordant_pairs(samples)
        assert discordant_pair(samples) == named_pair(pairs)
        crossing = [p for p in pairs if "POSITIVE" in (p[0].category, p[1].category)]
        assert discordant_pair(samples, crossing_positive=True) == named_pair(crossing)


def test_default_only_symbols_conclude_nothing() -> None:
    """ReceptorStatus UNKNOWN and ClinicalFlag OTHER (what a later lab symbol is read as): no HR
    status from the result, no retest trigger."""
    assert hr_status({"result": "UNKNOWN"}, {"result": "UNKNOWN"}) == ("UNKNOWN", False)
    assert hr_status({"result": "UNKNOWN", "percent_positive": 50.0}, None)[0] == "POSITIVE"
    event = {"event_id": "e", "patient_id": "p", "accession_id": "a", "report_status": "FINAL",
             "her2_ihc": {"score": "ONE_PLUS"}, "clinical_context": {"clinical_flags": ["OTHER"]}}
    facts = derive(event, classify_sample(event["her2_ihc"], None))
    assert facts["clinical_suspicion"] is False
    assert facts["clinical_flags"] is None


class TestWantedFacts:
    """derive(wanted=...) leaves out only groups no wanted fact is in; what it derives is what
    the full derivation derives (the patient aggregate relies on it, one scope at a time)."""

    def test_groups_are_disjoint_parts_of_the_catalogue(self) -> None:
        groups = (SAMPLE_FACTS, CONTEXT_FACTS, REPORT_DETAIL_FACTS)
        assert sum(map(len, groups)) == len(SAMPLE_FACTS | CONTEXT_FACTS | REPORT_DETAIL_FACTS)
        assert set(FACTS) > SAMPLE_FACTS | CONTEXT_FACTS | REPORT_DETAIL_FACTS

    @pytest.mark.parametrize(
        "wanted",
        [
            pytest.param(load_ruleset().reads(REPORT), id="report-rules"),
            pytest.param(load_ruleset().reads(PATIENT), id="patient-rules"),
            pytest.param(SAMPLE_FACTS, id="samples"),
            pytest.param(CONTEXT_FACTS, id="context"),
            pytest.param(REPORT_DETAIL_FACTS, id="report-detail"),
            pytest.param(frozenset({"low_sample"}), id="one-sample-fact"),
            pytest.param(frozenset(), id="none"),
            pytest.param(frozenset(FACTS), id="all"),
        ],
    )
    def test_wanted_facts_are_the_full_derivation(self, wanted: frozenset[str]) -> None:
        history: dict[str, list[Sample]] = {}
        for e in SyntheticGenerator(seed=11).events(600):
            sc = classify_sample(e.get("her2_ihc"), e.get("her2_ish"))
            earlier = history.setdefault(e["patient_id"], [])
            full = derive(e, sc, earlier)
            part = derive(e, sc, earlier, wanted=wanted)
            assert wanted <= set(part)
            assert part == {name: full[name] for name in part}
            spec = e.get("specimen") or {}
            earlier.append(
                Sample(e["accession_id"], spec.get("site") or "UNKNOWN",
                       spec.get("collection_date"), sc.category, "history", len(earlier))
            )

    def test_a_scope_reads_what_its_rules_read(self) -> None:
        ruleset = load_ruleset()
        for scope in (REPORT, PATIENT):
            assert ruleset.reads(scope) == {n for r in ruleset.scoped(scope) for n in r.reads}
