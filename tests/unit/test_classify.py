"""Unit tests of consumer.clinical.classify against docs/her2-rules.md sections 1-4 and 5.5.

Every expected value below comes from the specification text, not from running the code. Each
table row names the spec row or sentence it checks.
"""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import re
from typing import Any

import pytest

from consumer.clinical.classify import (
    ISH_NEGATIVE,
    ISH_POSITIVE,
    ISH_UNRESOLVED,
    ZERO_NOT_DETERMINABLE,
    ZERO_NOT_STATED,
    ZERO_NULL,
    ZERO_ULTRALOW,
    assess_ish,
    classify_sample,
    dual_probe_group,
    guidance,
    hr_status,
    score_inconsistent,
    zero_subtype,
)
from consumer.clinical.model import HER2_NEGATIVE

Record = dict[str, Any]


def ihc(score: str | None, **detail: Any) -> Record:
    """An IHC record with a score (None = reported without a score) and optional detail."""
    return {"score": score, **detail}


def dual(
    ratio: float | None = None,
    her2: float | None = None,
    cep17: float | None = None,
    **extra: Any,
) -> Record:
    """A dual-probe ISH record (probe_type absent, which means DUAL, unless given)."""
    record: Record = {
        "her2_cep17_ratio": ratio,
        "her2_copies_per_cell": her2,
        "cep17_copies_per_cell": cep17,
    }
    record.update(extra)
    return record


def single(her2: float | None, **extra: Any) -> Record:
    """A single-probe ISH record."""
    return {"probe_type": "SINGLE", "her2_copies_per_cell": her2, **extra}


def reported(result: str | None) -> Record:
    """An ISH record with no counts, only the report's own conclusion."""
    return {"probe_type": "DUAL", "reported_result": result}


# Dual-probe records that land in each group (ratio, HER2 copies per cell), section 3.
G1 = dual(2.5, 5.0)
G2 = dual(2.2, 3.5)
G3 = dual(1.6, 6.4)
G4 = dual(1.5, 5.0)
G5 = dual(1.2, 2.5)


class TestDualProbeGroup:
    """Section 3 table: groups 1-5 from ratio and HER2 copies (boundaries included)."""

    @pytest.mark.parametrize(
        ("ratio", "copies", "group"),
        [
            pytest.param(2.5, 6.0, 1, id="g1-typical"),
            pytest.param(2.0, 4.0, 1, id="g1-ratio-exactly-2.0-copies-exactly-4.0"),
            pytest.param(2.0, 3.99, 2, id="g2-ratio-exactly-2.0-copies-below-4"),
            pytest.param(3.0, 2.0, 2, id="g2-high-ratio-low-copies"),
            pytest.param(1.99, 4.0, 4, id="g4-ratio-just-below-2-copies-exactly-4.0"),
            pytest.param(1.99, 6.0, 3, id="g3-copies-exactly-6.0"),
            pytest.param(1.6, 6.4, 3, id="g3-worked-example-5"),
            pytest.param(1.5, 5.99, 4, id="g4-copies-just-below-6"),
            pytest.param(1.5, 3.99, 5, id="g5-copies-just-below-4"),
            pytest.param(1.0, 2.0, 5, id="g5-typical"),
            pytest.param(0.0, 0.0, 5, id="g5-zeros"),
            pytest.param(50.0, 100.0, 1, id="g1-large-values"),
        ],
    )
    def test_group(self, ratio: float, copies: float, group: int) -> None:
        assert dual_probe_group(ratio, copies) == group


class TestAssessIshDualProbe:
    """Section 3 and 5.5: ratio computed when not reported, reported ratio wins, group 2-4 work-up."""

    @pytest.mark.parametrize(
        ("ish", "score", "result", "group"),
        [
            pytest.param(dual(None, 8.0, 2.0), None, ISH_POSITIVE, 1, id="ratio-computed-4.0-group1"),
            pytest.param(dual(None, 4.0, 2.0), None, ISH_POSITIVE, 1, id="computed-ratio-exactly-2.0-copies-4.0"),
            pytest.param(dual(None, 3.0, 1.5), "ONE_PLUS", ISH_NEGATIVE, 2, id="computed-ratio-exactly-2.0-copies-3.0-group2"),
            pytest.param(dual(None, 5.0, 2.5), None, ISH_POSITIVE, 1, id="computed-ratio-exactly-2.0-copies-5.0-group1"),
            pytest.param(dual(None, 5.0, 2.6), "ONE_PLUS", ISH_NEGATIVE, 4, id="computed-ratio-1.92-group4"),
            pytest.param(dual(None, 2.0, 2.0), None, ISH_NEGATIVE, 5, id="computed-ratio-1.0-group5"),
            # a reported ratio wins over one computed from the copy numbers (5.5)
            pytest.param(dual(1.5, 6.0, 2.0), "ONE_PLUS", ISH_NEGATIVE, 3, id="reported-ratio-1.5-wins-over-computed-3.0"),
            pytest.param(dual(2.2, 3.0, 3.0), "ONE_PLUS", ISH_NEGATIVE, 2, id="reported-ratio-2.2-wins-over-computed-1.0"),
            pytest.param(dual(2.0, 4.0, 4.0), None, ISH_POSITIVE, 1, id="reported-ratio-exactly-2.0-wins"),
            # a computable group wins over a disagreeing reported_result (5.5)
            pytest.param(dual(1.2, 2.5, reported_result="AMPLIFIED"), None, ISH_NEGATIVE, 5, id="group5-beats-reported-amplified"),
            pytest.param(dual(2.5, 5.0, reported_result="NOT_AMPLIFIED"), None, ISH_POSITIVE, 1, id="group1-beats-reported-not-amplified"),
            pytest.param(dual(1.5, 5.0, reported_result="AMPLIFIED"), "ONE_PLUS", ISH_NEGATIVE, 4, id="group4-ihc1-beats-reported-amplified"),
            # missing probe_type means DUAL (5.5); explicit DUAL behaves the same
            pytest.param({"her2_cep17_ratio": 2.5, "her2_copies_per_cell": 5.0}, None, ISH_POSITIVE, 1, id="probe-type-absent-is-dual"),
            pytest.param({"probe_type": None, "her2_cep17_ratio": 2.5, "her2_copies_per_cell": 5.0}, None, ISH_POSITIVE, 1, id="probe-type-null-is-dual"),
            pytest.param(dual(2.5, 5.0, probe_type="DUAL"), None, ISH_POSITIVE, 1, id="probe-type-dual"),
        ],
    )
    def test_result_and_group(self, ish: Record, score: str | None, result: str, group: int) -> None:
        assessment = assess_ish(ish, score)
        assert (assessment.result, assessment.group) == (result, group)
        assert assessment.counts_missing is False

    @pytest.mark.parametrize(
        ("ish", "score", "result", "workup_incomplete"),
        [
            # Groups 2-4 need concurrent IHC: 3+ positive, 0/1+ negative (section 3)
            *[
                pytest.param(rec, "THREE_PLUS", ISH_POSITIVE, False, id=f"group{g}-ihc3-positive")
                for g, rec in ((2, G2), (3, G3), (4, G4))
            ],
            *[
                pytest.param(rec, s, ISH_NEGATIVE, False, id=f"group{g}-ihc{label}-negative")
                for g, rec in ((2, G2), (3, G3), (4, G4))
                for s, label in (("ZERO", "0"), ("ONE_PLUS", "1"))
            ],
            # IHC 2+: group 3 confirmed -> positive, group 2/4 confirmed -> negative
            pytest.param({**G3, "recount_group": 3}, "TWO_PLUS", ISH_POSITIVE, False, id="group3-ihc2-recount-confirmed-positive"),
            pytest.param({**G2, "recount_group": 2}, "TWO_PLUS", ISH_NEGATIVE, False, id="group2-ihc2-recount-confirmed-negative"),
            pytest.param({**G4, "recount_group": 4}, "TWO_PLUS", ISH_NEGATIVE, False, id="group4-ihc2-recount-confirmed-negative"),
            # IHC 2+ with no recount: unresolved, a missing work-up step
            *[
                pytest.param(rec, "TWO_PLUS", ISH_UNRESOLVED, True, id=f"group{g}-ihc2-recount-missing")
                for g, rec in ((2, G2), (3, G3), (4, G4))
            ],
            # no usable concurrent IHC score: unresolved, work-up incomplete
            *[
                pytest.param(rec, s, ISH_UNRESOLVED, True, id=f"group{g}-ihc-{label}")
                for g, rec in ((2, G2), (3, G3), (4, G4))
                for s, label in ((None, "none"), ("INDETERMINATE", "indeterminate"))
            ],
            # groups 1 and 5 need no IHC
            pytest.param(G1, None, ISH_POSITIVE, False, id="group1-no-ihc-positive"),
            pytest.param(G5, None, ISH_NEGATIVE, False, id="group5-no-ihc-negative"),
            pytest.param(G5, "TWO_PLUS", ISH_NEGATIVE, False, id="group5-ihc2-negative"),
        ],
    )
    def test_groups_2_to_4_workup(
        self, ish: Record, score: str | None, result: str, workup_incomplete: bool
    ) -> None:
        assessment = assess_ish(ish, score)
        assert assessment.result == result
        assert assessment.workup_incomplete is workup_incomplete

    @pytest.mark.parametrize(
        ("ish", "group"),
        [
            pytest.param({**G3, "recount_group": 4}, 3, id="group3-recount-4"),
            pytest.param({**G3, "recount_group": 2}, 3, id="group3-recount-2"),
            pytest.param({**G2, "recount_group": 3}, 2, id="group2-recount-3"),
            pytest.param({**G4, "recount_group": 5}, 4, id="group4-recount-5"),
            pytest.param({**G4, "recount_group": 1}, 4, id="group4-recount-1"),
        ],
    )
    def test_recount_with_a_different_group_is_unresolved(self, ish: Record, group: int) -> None:
        """Section 3: 'a different group -> unresolved (adjudication)'."""
        assessment = assess_ish(ish, "TWO_PLUS")
        assert (assessment.result, assessment.group) == (ISH_UNRESOLVED, group)


class TestAssessIshReportedResult:
    """Section 3 / 5.5: without copy numbers, reported_result stands in and DG-ISH-COUNTS is due."""

    @pytest.mark.parametrize(
        ("ish", "result"),
        [
            pytest.param(reported("AMPLIFIED"), ISH_POSITIVE, id="amplified-positive"),
            pytest.param(reported("NOT_AMPLIFIED"), ISH_NEGATIVE, id="not-amplified-negative"),
            pytest.param(reported("EQUIVOCAL"), ISH_UNRESOLVED, id="equivocal-unresolved"),
            pytest.param(reported(None), ISH_UNRESOLVED, id="neither-counts-nor-result-unresolved"),
            pytest.param({}, ISH_UNRESOLVED, id="empty-ish-record-unresolved"),
            pytest.param(dual(2.5, None, None, reported_result="AMPLIFIED"), ISH_POSITIVE, id="ratio-without-copies-reported-stands-in"),
            pytest.param(dual(None, 5.0, None, reported_result="NOT_AMPLIFIED"), ISH_NEGATIVE, id="copies-without-cep17-or-ratio"),
            # cep17 = 0: no ratio can be computed, so the counts are not usable
            pytest.param(dual(None, 5.0, 0.0, reported_result="AMPLIFIED"), ISH_POSITIVE, id="cep17-zero-reported-amplified"),
            pytest.param(dual(None, 5.0, 0.0), ISH_UNRESOLVED, id="cep17-zero-nothing-reported"),
            pytest.param(single(None, reported_result="AMPLIFIED"), ISH_POSITIVE, id="single-probe-without-copies-amplified"),
            pytest.param(single(None, reported_result="NOT_AMPLIFIED"), ISH_NEGATIVE, id="single-probe-without-copies-not-amplified"),
        ],
    )
    def test_stands_in(self, ish: Record, result: str) -> None:
        assessment = assess_ish(ish, "ONE_PLUS")
        assert assessment.result == result
        assert assessment.group is None  # 5.5: ish_group null when reported_result stands in
        assert assessment.counts_missing is True

    @pytest.mark.parametrize(
        ("cells", "few"),
        [
            pytest.param(19, True, id="19-cells-too-few"),
            pytest.param(0, True, id="0-cells-too-few"),
            pytest.param(20, False, id="20-cells-enough"),
            pytest.param(40, False, id="40-cells"),
            pytest.param(None, False, id="cells-not-stated"),
        ],
    )
    def test_fewer_than_20_cells(self, cells: int | None, few: bool) -> None:
        """Section 3 ('average of >= 20 cells') and DG-ISH-COUNTS ('fewer than 20 cells counted')."""
        assessment = assess_ish(dual(2.5, 5.0, 2.0, cells_counted=cells), None)
        assert assessment.group == 1
        assert assessment.counts_missing is few


class TestAssessIshSingleProbe:
    """Section 3: >= 6.0 positive; < 4.0 negative; 4.0 to < 6.0 resolved by concurrent IHC."""

    @pytest.mark.parametrize(
        ("copies", "score", "result", "workup_incomplete"),
        [
            pytest.param(6.0, None, ISH_POSITIVE, False, id="exactly-6.0-positive"),
            pytest.param(9.0, "ONE_PLUS", ISH_POSITIVE, False, id="9.0-positive-whatever-ihc"),
            pytest.param(3.99, None, ISH_NEGATIVE, False, id="3.99-negative"),
            pytest.param(0.0, None, ISH_NEGATIVE, False, id="0-negative"),
            pytest.param(4.0, "THREE_PLUS", ISH_POSITIVE, False, id="exactly-4.0-ihc3-positive"),
            pytest.param(5.99, "THREE_PLUS", ISH_POSITIVE, False, id="5.99-ihc3-positive"),
            pytest.param(4.0, "ONE_PLUS", ISH_NEGATIVE, False, id="exactly-4.0-ihc1-negative"),
            pytest.param(5.0, "ZERO", ISH_NEGATIVE, False, id="5.0-ihc0-negative"),
            pytest.param(4.0, "TWO_PLUS", ISH_UNRESOLVED, True, id="exactly-4.0-ihc2-unresolved"),
            pytest.param(5.99, "TWO_PLUS", ISH_UNRESOLVED, True, id="5.99-ihc2-unresolved"),
            pytest.param(5.0, None, ISH_UNRESOLVED, True, id="5.0-no-ihc-unresolved"),
        ],
    )
    def test_single_probe(
        self, copies: float, score: str | None, result: str, workup_incomplete: bool
    ) -> None:
        assessment = assess_ish(single(copies), score)
        assert assessment.result == result
        assert assessment.group is None  # 5.5: ish_group null for single-probe tests
        assert assessment.workup_incomplete is workup_incomplete

    def test_single_probe_ignores_ratio(self) -> None:
        """A single-probe test is judged on copies only (a ratio >= 2 must not make it group 1)."""
        assessment = assess_ish(single(5.0, her2_cep17_ratio=3.0, cep17_copies_per_cell=1.0), "ONE_PLUS")
        assert (assessment.result, assessment.group) == (ISH_NEGATIVE, None)


class TestClassifySample:
    """Section 4: first matching row wins; every row with positive cases and near-misses."""

    @pytest.mark.parametrize(
        ("her2_ihc", "her2_ish", "category", "row"),
        [
            # C1 INDETERMINATE: score INDETERMINATE and ISH not positive
            pytest.param(ihc("INDETERMINATE"), None, "INDETERMINATE", "C1", id="C1-no-ish"),
            pytest.param(ihc("INDETERMINATE"), G5, "INDETERMINATE", "C1", id="C1-ish-group5"),
            pytest.param(ihc("INDETERMINATE"), reported("EQUIVOCAL"), "INDETERMINATE", "C1", id="C1-ish-equivocal"),
            pytest.param(ihc("INDETERMINATE"), G4, "INDETERMINATE", "C1", id="C1-ish-group4-unresolved"),
            pytest.param(ihc("INDETERMINATE"), G1, "POSITIVE", "C3", id="C1-near-miss-ish-group1-is-C3"),
            pytest.param(ihc("INDETERMINATE"), reported("AMPLIFIED"), "POSITIVE", "C3", id="C1-near-miss-amplified-is-C3"),
            # C2 3+ any ISH
            pytest.param(ihc("THREE_PLUS"), None, "POSITIVE", "C2", id="C2-no-ish"),
            pytest.param(ihc("THREE_PLUS"), G5, "POSITIVE", "C2", id="C2-ish-group5"),
            pytest.param(ihc("THREE_PLUS"), reported("NOT_AMPLIFIED"), "POSITIVE", "C2", id="C2-ish-not-amplified"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=5.0, staining_intensity="FAINT"), None, "POSITIVE", "C2", id="C2-inconsistent-detail-never-rescored"),
            pytest.param(ihc("THREE_PLUS"), G4, "POSITIVE", "C2", id="C2-group4"),
            # C3 ISH positive
            pytest.param(ihc("ZERO", percent_cells_stained=0.0), G1, "POSITIVE", "C3", id="C3-ihc0-group1"),
            pytest.param(ihc("ONE_PLUS"), G1, "POSITIVE", "C3", id="C3-ihc1-group1"),
            pytest.param(ihc("TWO_PLUS"), G1, "POSITIVE", "C3", id="C3-ihc2-group1"),
            pytest.param(None, G1, "POSITIVE", "C3", id="C3-no-ihc-group1"),
            pytest.param(ihc(None), G1, "POSITIVE", "C3", id="C3-unscored-group1"),
            pytest.param(ihc("ONE_PLUS"), single(6.0), "POSITIVE", "C3", id="C3-single-exactly-6.0"),
            pytest.param(None, single(7.5), "POSITIVE", "C3", id="C3-no-ihc-single-7.5"),
            pytest.param(ihc("TWO_PLUS"), {**G3, "recount_group": 3}, "POSITIVE", "C3", id="C3-worked-example-5-group3-confirmed"),
            pytest.param(ihc("TWO_PLUS"), reported("AMPLIFIED"), "POSITIVE", "C3", id="C3-ihc2-reported-amplified"),
            pytest.param(None, dual(None, 8.0, 2.0), "POSITIVE", "C3", id="C3-computed-ratio"),
            pytest.param(ihc("TWO_PLUS"), dual(2.0, 4.0), "POSITIVE", "C3", id="C3-ratio-2.0-copies-4.0-boundary"),
            pytest.param(ihc("TWO_PLUS"), dual(1.99, 4.0, recount_group=4), "LOW", "C6", id="C3-near-miss-ratio-1.99-group4-confirmed"),
            # C4 2+ without ISH
            pytest.param(ihc("TWO_PLUS"), None, "EQUIVOCAL", "C4", id="C4-ihc2-no-ish"),
            # C5 2+ or not done, ISH unresolved
            pytest.param(ihc("TWO_PLUS"), G4, "EQUIVOCAL", "C5", id="C5-group4-recount-missing"),
            pytest.param(ihc("TWO_PLUS"), G2, "EQUIVOCAL", "C5", id="C5-group2-recount-missing"),
            pytest.param(ihc("TWO_PLUS"), G3, "EQUIVOCAL", "C5", id="C5-group3-recount-missing"),
            pytest.param(ihc("TWO_PLUS"), {**G3, "recount_group": 4}, "EQUIVOCAL", "C5", id="C5-group3-recount-different"),
            pytest.param(ihc("TWO_PLUS"), reported("EQUIVOCAL"), "EQUIVOCAL", "C5", id="C5-ihc2-reported-equivocal"),
            pytest.param(ihc("TWO_PLUS"), reported(None), "EQUIVOCAL", "C5", id="C5-ihc2-ish-without-counts-or-result"),
            pytest.param(ihc("TWO_PLUS"), single(5.0), "EQUIVOCAL", "C5", id="C5-ihc2-single-4-6"),
            pytest.param(ihc("TWO_PLUS"), dual(None, 5.0, 0.0), "EQUIVOCAL", "C5", id="C5-ihc2-cep17-zero"),
            pytest.param(None, G2, "EQUIVOCAL", "C5", id="C5-no-ihc-group2"),
            pytest.param(None, G3, "EQUIVOCAL", "C5", id="C5-no-ihc-group3"),
            pytest.param(None, G4, "EQUIVOCAL", "C5", id="C5-no-ihc-group4"),
            pytest.param(None, single(4.0), "EQUIVOCAL", "C5", id="C5-no-ihc-single-exactly-4.0"),
            pytest.param(None, reported("EQUIVOCAL"), "EQUIVOCAL", "C5", id="C5-no-ihc-reported-equivocal"),
            pytest.param(None, reported(None), "EQUIVOCAL", "C5", id="C5-no-ihc-empty-ish"),
            pytest.param(ihc("ONE_PLUS"), G4, "LOW", "C7", id="C5-near-miss-ihc1-resolves-group4"),
            pytest.param(ihc(None), reported("EQUIVOCAL"), "UNSCORED", "C12", id="C5-near-miss-unscored-equivocal-is-C12"),
            # C6 2+ with negative ISH
            pytest.param(ihc("TWO_PLUS"), G5, "LOW", "C6", id="C6-group5"),
            pytest.param(ihc("TWO_PLUS"), {**G2, "recount_group": 2}, "LOW", "C6", id="C6-group2-confirmed"),
            pytest.param(ihc("TWO_PLUS"), {**G4, "recount_group": 4}, "LOW", "C6", id="C6-group4-confirmed"),
            pytest.param(ihc("TWO_PLUS"), single(3.99), "LOW", "C6", id="C6-single-3.99"),
            pytest.param(ihc("TWO_PLUS"), reported("NOT_AMPLIFIED"), "LOW", "C6", id="C6-reported-not-amplified"),
            pytest.param(ihc("TWO_PLUS"), dual(None, 3.0, 2.0), "LOW", "C6", id="C6-computed-ratio-1.5-group5"),
            # C7 1+ with none or not positive ISH
            pytest.param(ihc("ONE_PLUS"), None, "LOW", "C7", id="C7-no-ish"),
            pytest.param(ihc("ONE_PLUS"), G5, "LOW", "C7", id="C7-group5"),
            pytest.param(ihc("ONE_PLUS"), reported("EQUIVOCAL"), "LOW", "C7", id="C7-reported-equivocal"),
            pytest.param(ihc("ONE_PLUS"), single(5.0), "LOW", "C7", id="C7-single-4-6-resolved-negative"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=5.0), None, "LOW", "C7", id="C7-inconsistent-detail-never-rescored"),
            # C8 0 ultralow
            pytest.param(ihc("ZERO", percent_cells_stained=5.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), None, "ULTRALOW", "C8", id="C8-worked-example-3"),
            pytest.param(ihc("ZERO", percent_cells_stained=10.0), None, "ULTRALOW", "C8", id="C8-exactly-10-percent"),
            pytest.param(ihc("ZERO", staining_intensity="FAINT"), None, "ULTRALOW", "C8", id="C8-faint-no-percentage"),
            pytest.param(ihc("ZERO", staining_completeness="INCOMPLETE"), None, "ULTRALOW", "C8", id="C8-incomplete-no-percentage"),
            pytest.param(ihc("ZERO", percent_cells_stained=2.0), G5, "ULTRALOW", "C8", id="C8-with-negative-ish"),
            pytest.param(ihc("ZERO", percent_cells_stained=2.0), reported("EQUIVOCAL"), "ULTRALOW", "C8", id="C8-with-unresolved-ish"),
            pytest.param(ihc("ZERO", percent_cells_stained=11.0), None, "ZERO_UNSPECIFIED", "C10", id="C8-near-miss-11-percent-is-not-determinable"),
            pytest.param(ihc("ZERO", percent_cells_stained=5.0, staining_intensity="STRONG", staining_completeness="COMPLETE"), None, "ZERO_UNSPECIFIED", "C10", id="C8-near-miss-worked-example-10"),
            # C9 0 null
            pytest.param(ihc("ZERO", percent_cells_stained=0.0), None, "NULL", "C9", id="C9-zero-percent"),
            pytest.param(ihc("ZERO", staining_intensity="NONE"), None, "NULL", "C9", id="C9-intensity-none"),
            pytest.param(ihc("ZERO", staining_completeness="NONE"), None, "NULL", "C9", id="C9-completeness-none"),
            pytest.param(ihc("ZERO", percent_cells_stained=0.0), G5, "NULL", "C9", id="C9-with-negative-ish"),
            # C10 0 sub-type not stated or not determinable
            pytest.param(ihc("ZERO"), None, "ZERO_UNSPECIFIED", "C10", id="C10-no-detail"),
            pytest.param(ihc("ZERO", staining_intensity="WEAK_MODERATE"), None, "ZERO_UNSPECIFIED", "C10", id="C10-weak-moderate-not-determinable"),
            pytest.param(ihc("ZERO", percent_cells_stained=40.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), None, "ZERO_UNSPECIFIED", "C10", id="C10-40-percent-faint-not-determinable"),
            pytest.param(ihc("ZERO"), G5, "ZERO_UNSPECIFIED", "C10", id="C10-with-negative-ish"),
            pytest.param(ihc("ZERO", staining_completeness="COMPLETE"), G5, "ZERO_UNSPECIFIED", "C10", id="C10-complete-with-negative-ish"),
            pytest.param(ihc("ZERO", staining_intensity="STRONG", staining_completeness="COMPLETE"), G1, "POSITIVE", "C3", id="C10-near-miss-ish-group1-is-C3"),
            # C11 IHC not done, ISH negative
            pytest.param(None, G5, "NEGATIVE_EXPRESSION_UNKNOWN", "C11", id="C11-group5"),
            pytest.param(None, reported("NOT_AMPLIFIED"), "NEGATIVE_EXPRESSION_UNKNOWN", "C11", id="C11-reported-not-amplified"),
            pytest.param(None, single(3.0), "NEGATIVE_EXPRESSION_UNKNOWN", "C11", id="C11-single-below-4"),
            # C12 IHC reported without a score
            pytest.param(ihc(None), None, "UNSCORED", "C12", id="C12-no-ish"),
            pytest.param({}, None, "UNSCORED", "C12", id="C12-empty-ihc-record"),
            pytest.param(ihc(None, reported_text="negative"), G5, "UNSCORED", "C12", id="C12-negative-ish"),
            pytest.param(ihc(None), G4, "UNSCORED", "C12", id="C12-unresolved-ish"),
            # C13 nothing done
            pytest.param(None, None, "MISSING", "C13", id="C13-nothing"),
        ],
    )
    def test_row(
        self, her2_ihc: Record | None, her2_ish: Record | None, category: str, row: str
    ) -> None:
        result = classify_sample(her2_ihc, her2_ish)
        assert (result.category, result.row) == (category, row)

    @pytest.mark.parametrize(
        ("her2_ihc", "score"),
        [
            pytest.param(ihc("ONE_PLUS"), "ONE_PLUS", id="scored"),
            pytest.param(ihc(None), None, id="unscored-is-null"),
            pytest.param(None, None, id="not-done-is-null"),
        ],
    )
    def test_ihc_score_output(self, her2_ihc: Record | None, score: str | None) -> None:
        """5.5: ihc_score is the enum string or null."""
        assert classify_sample(her2_ihc, None).ihc_score == score


class TestZeroSubtype:
    """Section 2: the four steps in order (not determinable -> null -> ultralow -> not stated)."""

    @pytest.mark.parametrize(
        ("detail", "subtype"),
        [
            # step 1, not determinable: the detail does not fit IHC 0 (each trigger alone)
            pytest.param({"staining_intensity": "WEAK_MODERATE"}, ZERO_NOT_DETERMINABLE, id="1-weak-moderate"),
            pytest.param({"staining_intensity": "STRONG"}, ZERO_NOT_DETERMINABLE, id="1-strong"),
            pytest.param({"staining_completeness": "COMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-complete"),
            pytest.param({"percent_cells_stained": 11.0}, ZERO_NOT_DETERMINABLE, id="1-11-percent"),
            pytest.param({"percent_cells_stained": 10.5}, ZERO_NOT_DETERMINABLE, id="1-10.5-percent-strictly-above-10"),
            pytest.param({"percent_cells_stained": 100.0}, ZERO_NOT_DETERMINABLE, id="1-100-percent"),
            # step 1 wins over ultralow, whatever the percentage (the unsafe case)
            pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-beats-3-worked-example-10"),
            pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "WEAK_MODERATE", "staining_completeness": "INCOMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-beats-3-moderate-incomplete-5-percent"),
            pytest.param({"percent_cells_stained": 8.0, "staining_intensity": "FAINT", "staining_completeness": "COMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-beats-3-faint-complete"),
            pytest.param({"percent_cells_stained": 40.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-beats-3-faint-incomplete-40-percent"),
            pytest.param({"percent_cells_stained": 10.0, "staining_intensity": "WEAK_MODERATE"}, ZERO_NOT_DETERMINABLE, id="1-beats-3-10-percent-weak-moderate"),
            # step 1 wins over null
            pytest.param({"percent_cells_stained": 0.0, "staining_intensity": "STRONG"}, ZERO_NOT_DETERMINABLE, id="1-beats-2-zero-percent-strong"),
            pytest.param({"percent_cells_stained": 50.0, "staining_intensity": "NONE"}, ZERO_NOT_DETERMINABLE, id="1-beats-2-intensity-none-50-percent"),
            pytest.param({"staining_intensity": "STRONG", "staining_completeness": "NONE"}, ZERO_NOT_DETERMINABLE, id="1-beats-2-completeness-none-strong"),
            pytest.param({"staining_intensity": "NONE", "staining_completeness": "COMPLETE"}, ZERO_NOT_DETERMINABLE, id="1-beats-2-intensity-none-complete"),
            # step 2, null: 0 % or intensity / completeness NONE
            pytest.param({"percent_cells_stained": 0.0}, ZERO_NULL, id="2-zero-percent"),
            pytest.param({"staining_intensity": "NONE"}, ZERO_NULL, id="2-intensity-none"),
            pytest.param({"staining_completeness": "NONE"}, ZERO_NULL, id="2-completeness-none"),
            pytest.param({"percent_cells_stained": 0.0, "staining_intensity": "NONE", "staining_completeness": "NONE"}, ZERO_NULL, id="2-fully-described"),
            # step 2 wins over ultralow
            pytest.param({"percent_cells_stained": 0.0, "staining_intensity": "FAINT"}, ZERO_NULL, id="2-beats-3-zero-percent-faint"),
            pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "NONE"}, ZERO_NULL, id="2-beats-3-intensity-none-5-percent"),
            pytest.param({"percent_cells_stained": 5.0, "staining_completeness": "NONE"}, ZERO_NULL, id="2-beats-3-completeness-none-5-percent"),
            pytest.param({"staining_intensity": "FAINT", "staining_completeness": "NONE"}, ZERO_NULL, id="2-beats-3-completeness-none-faint"),
            pytest.param({"percent_cells_stained": 10.0, "staining_intensity": "NONE"}, ZERO_NULL, id="2-beats-3-intensity-none-exactly-10-percent"),
            # step 3, ultralow: > 0 %, FAINT or INCOMPLETE (and nothing that fails step 1)
            pytest.param({"percent_cells_stained": 5.0}, ZERO_ULTRALOW, id="3-5-percent"),
            pytest.param({"percent_cells_stained": 0.5}, ZERO_ULTRALOW, id="3-just-above-zero"),
            pytest.param({"percent_cells_stained": 10.0}, ZERO_ULTRALOW, id="3-exactly-10-percent"),
            pytest.param({"staining_intensity": "FAINT"}, ZERO_ULTRALOW, id="3-faint"),
            pytest.param({"staining_completeness": "INCOMPLETE"}, ZERO_ULTRALOW, id="3-incomplete"),
            pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"}, ZERO_ULTRALOW, id="3-fully-described-worked-example-9"),
            pytest.param({"percent_cells_stained": 10.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"}, ZERO_ULTRALOW, id="3-fully-described-10-percent"),
            # step 4, not stated
            pytest.param({}, ZERO_NOT_STATED, id="4-nothing"),
            pytest.param({"percent_cells_stained": None, "staining_intensity": None, "staining_completeness": None}, ZERO_NOT_STATED, id="4-explicit-nulls"),
        ],
    )
    def test_subtype(self, detail: Record, subtype: str) -> None:
        assert zero_subtype({"score": "ZERO", **detail}) == subtype

    @pytest.mark.parametrize(
        ("detail", "row"),
        [
            pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"}, "C10", id="not-determinable-is-C10"),
            pytest.param({}, "C10", id="not-stated-is-C10"),
            pytest.param({"percent_cells_stained": 0.0}, "C9", id="null-is-C9"),
            pytest.param({"percent_cells_stained": 5.0}, "C8", id="ultralow-is-C8"),
        ],
    )
    def test_row_and_score_kept(self, detail: Record, row: str) -> None:
        """Section 2: 'not determinable' and 'not stated' are C10; the reported score is never changed."""
        result = classify_sample({"score": "ZERO", **detail}, None)
        assert result.row == row
        assert result.ihc_score == "ZERO"

    @pytest.mark.parametrize("percent", [None, 0.0, 0.5, 5.0, 10.0, 10.5, 11.0, 60.0])
    @pytest.mark.parametrize("intensity", [None, "NONE", "FAINT", "WEAK_MODERATE", "STRONG"])
    @pytest.mark.parametrize("completeness", [None, "NONE", "INCOMPLETE", "COMPLETE"])
    def test_not_determinable_exactly_when_inconsistent(
        self, percent: float | None, intensity: str | None, completeness: str | None
    ) -> None:
        """Section 2 step 1: a not-determinable sub-type always raises DG-SCORE-INCONSISTENT, and
        an IHC 0 is inconsistent only then; an ultralow IHC 0 is never inconsistent."""
        record = ihc("ZERO", percent_cells_stained=percent, staining_intensity=intensity, staining_completeness=completeness)
        subtype = zero_subtype(record)
        assert (subtype == ZERO_NOT_DETERMINABLE) is score_inconsistent(record)


class TestScoreInconsistent:
    """Section 2: the inconsistency table (1.4: '> 10 %' means 11 qualifies and 10 does not)."""

    @pytest.mark.parametrize(
        ("detail", "inconsistent"),
        [
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=10.0), True, id="1plus-exactly-10-percent"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=11.0), False, id="1plus-11-percent"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=0.0), True, id="1plus-0-percent"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=10.0), True, id="3plus-exactly-10-percent"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=11.0), False, id="3plus-11-percent"),
            pytest.param(ihc("ZERO", percent_cells_stained=10.0), False, id="0-exactly-10-percent"),
            pytest.param(ihc("ZERO", percent_cells_stained=11.0), True, id="0-11-percent"),
            pytest.param(ihc("ZERO", percent_cells_stained=0.0), False, id="0-0-percent"),
            pytest.param(ihc("ZERO", staining_intensity="WEAK_MODERATE"), True, id="0-weak-moderate"),
            pytest.param(ihc("ZERO", staining_intensity="STRONG"), True, id="0-strong"),
            pytest.param(ihc("ZERO", staining_completeness="COMPLETE"), True, id="0-complete"),
            pytest.param(ihc("ZERO", percent_cells_stained=5.0, staining_intensity="STRONG", staining_completeness="COMPLETE"), True, id="0-strong-complete-5-percent-worked-example-10"),
            pytest.param(ihc("ZERO", percent_cells_stained=5.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), False, id="0-ultralow-pattern"),
            pytest.param(ihc("ZERO", staining_intensity="NONE", staining_completeness="NONE"), False, id="0-null-pattern"),
            pytest.param(ihc("ZERO"), False, id="0-no-detail"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_intensity="FAINT"), True, id="3plus-faint"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_completeness="INCOMPLETE"), True, id="3plus-incomplete"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_intensity="STRONG", staining_completeness="COMPLETE"), False, id="3plus-textbook"),
            pytest.param(ihc("THREE_PLUS", staining_intensity="WEAK_MODERATE"), True, id="3plus-weak-moderate"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_intensity="WEAK_MODERATE", staining_completeness="COMPLETE"), True, id="3plus-weak-moderate-complete-is-a-2plus-pattern"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_intensity="STRONG"), False, id="3plus-strong"),
            pytest.param(ihc("THREE_PLUS", percent_cells_stained=80.0, staining_completeness="COMPLETE"), False, id="3plus-complete"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=40.0, staining_completeness="COMPLETE"), True, id="1plus-complete"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=40.0, staining_intensity="STRONG"), True, id="1plus-strong"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=40.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), False, id="1plus-textbook"),
            pytest.param(ihc("ONE_PLUS", staining_intensity="WEAK_MODERATE", staining_completeness="INCOMPLETE"), False, id="1plus-weak-moderate-not-listed"),
            pytest.param(ihc("ONE_PLUS", percent_cells_stained=5.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), True, id="1plus-5-percent-faint-incomplete"),
            pytest.param(ihc("TWO_PLUS", percent_cells_stained=5.0, staining_intensity="WEAK_MODERATE", staining_completeness="INCOMPLETE"), False, id="2plus-moderate-incomplete-never-inconsistent"),
            pytest.param(ihc("TWO_PLUS", staining_intensity="NONE"), False, id="2plus-none-never-inconsistent"),
            pytest.param(ihc("ONE_PLUS"), False, id="1plus-no-detail"),
            pytest.param(ihc("THREE_PLUS"), False, id="3plus-no-detail"),
            pytest.param(ihc("TWO_PLUS", percent_cells_stained=5.0, staining_intensity="STRONG", staining_completeness="COMPLETE"), False, id="2plus-unusual-pattern-never-inconsistent"),
            pytest.param(ihc("TWO_PLUS", percent_cells_stained=80.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"), False, id="2plus-faint-never-inconsistent"),
            pytest.param(ihc("INDETERMINATE", percent_cells_stained=5.0), False, id="indeterminate"),
            pytest.param(ihc(None, percent_cells_stained=50.0), False, id="unscored"),
        ],
    )
    def test_inconsistent(self, detail: Record, inconsistent: bool) -> None:
        assert score_inconsistent(detail) is inconsistent


class TestHrStatus:
    """Section 1 and 5.5: any positive indicator -> HR-positive; negative needs both known."""

    @pytest.mark.parametrize(
        ("er", "pr", "status"),
        [
            pytest.param({"result": "POSITIVE"}, None, "POSITIVE", id="er-positive-pr-missing"),
            pytest.param({"result": "LOW_POSITIVE"}, {"result": "NEGATIVE"}, "POSITIVE", id="er-low-positive-result"),
            pytest.param({"percent_positive": 1.0}, {"result": "NEGATIVE"}, "POSITIVE", id="er-exactly-1-percent"),
            pytest.param({"percent_positive": 90.0}, None, "POSITIVE", id="er-90-percent"),
            pytest.param({"result": "NEGATIVE"}, {"result": "POSITIVE"}, "POSITIVE", id="pr-positive-only"),
            pytest.param({"result": "NEGATIVE"}, {"percent_positive": 1.0}, "POSITIVE", id="pr-exactly-1-percent"),
            pytest.param(None, {"result": "LOW_POSITIVE"}, "POSITIVE", id="er-missing-pr-low-positive"),
            pytest.param({"result": "NEGATIVE", "percent_positive": 5.0}, {"result": "NEGATIVE"}, "POSITIVE", id="any-positive-indicator-percent-wins"),
            pytest.param({"result": "POSITIVE", "percent_positive": 0.5}, {"result": "NEGATIVE"}, "POSITIVE", id="any-positive-indicator-result-wins"),
            pytest.param({"percent_positive": 0.5}, {"percent_positive": 0.0}, "NEGATIVE", id="er-0.5-pr-0-negative"),
            pytest.param({"result": "NEGATIVE"}, {"result": "NEGATIVE"}, "NEGATIVE", id="both-negative-results"),
            pytest.param({"result": "NEGATIVE", "percent_positive": 0.0}, {"percent_positive": 0.9}, "NEGATIVE", id="both-below-1-percent"),
            pytest.param({"percent_positive": 0.5}, None, "UNKNOWN", id="er-0.5-pr-missing-unknown"),
            pytest.param({"result": "NEGATIVE"}, None, "UNKNOWN", id="er-negative-pr-missing-unknown"),
            pytest.param(None, {"result": "NEGATIVE"}, "UNKNOWN", id="er-missing-pr-negative-unknown"),
            pytest.param({}, {"result": "NEGATIVE"}, "UNKNOWN", id="er-record-empty-unknown"),
            pytest.param(None, None, "UNKNOWN", id="both-missing-unknown"),
        ],
    )
    def test_status(self, er: Record | None, pr: Record | None, status: str) -> None:
        assert hr_status(er, pr)[0] == status

    @pytest.mark.parametrize(
        ("er", "pr", "er_low"),
        [
            pytest.param({"percent_positive": 5.0}, {"result": "NEGATIVE"}, True, id="er-5-percent"),
            pytest.param({"percent_positive": 1.0}, None, True, id="er-exactly-1-percent"),
            pytest.param({"percent_positive": 10.0}, {"percent_positive": 0.0}, True, id="er-exactly-10-percent"),
            pytest.param({"result": "LOW_POSITIVE"}, {"result": "NEGATIVE"}, True, id="er-low-positive-result"),
            pytest.param({"percent_positive": 11.0}, {"result": "NEGATIVE"}, False, id="er-11-percent-not-low"),
            pytest.param({"percent_positive": 90.0}, None, False, id="er-90-percent-not-low"),
            pytest.param({"result": "NEGATIVE"}, {"result": "NEGATIVE"}, False, id="hr-negative"),
            pytest.param({"percent_positive": 0.5}, {"result": "NEGATIVE"}, False, id="er-0.5-percent-negative"),
        ],
    )
    def test_er_low_flag(self, er: Record | None, pr: Record | None, er_low: bool) -> None:
        """Section 1: ER-low (1-10 %) counts as HR-positive (POLICY) and is flagged."""
        assert hr_status(er, pr)[1] is er_low


class TestGuidance:
    """Section 4, last paragraph: the seed's treatment approach per setting."""

    @pytest.mark.parametrize("category", sorted(HER2_NEGATIVE))
    def test_early_hr_positive_postmenopausal(self, category: str) -> None:
        text = guidance(category, "EARLY", "POSITIVE", "POST").lower()
        assert "endocrine therapy" in text
        assert "genomic assay" in text
        assert "oncotype" in text
        assert "mammaprint" in text
        assert "aromatase inhibitor" in text

    @pytest.mark.parametrize("menopausal", ["PRE", "UNKNOWN", None])
    def test_aromatase_inhibitor_only_when_postmenopausal(self, menopausal: str | None) -> None:
        text = guidance("LOW", "EARLY", "POSITIVE", menopausal).lower()
        assert "endocrine therapy" in text
        assert "genomic assay" in text
        assert "aromatase" not in text

    @pytest.mark.parametrize("category", sorted(HER2_NEGATIVE))
    def test_early_triple_negative(self, category: str) -> None:
        text = guidance(category, "EARLY", "NEGATIVE", "POST").lower()
        assert "triple-negative" in text
        assert "without her2-directed therapy" in text
        assert "endocrine" not in text
        assert "aromatase" not in text

    @pytest.mark.parametrize("category", sorted(HER2_NEGATIVE))
    @pytest.mark.parametrize("setting", ["EARLY", "METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED", "UNKNOWN", None])
    @pytest.mark.parametrize("hr", ["POSITIVE", "NEGATIVE", "UNKNOWN"])
    def test_never_traditional_her2_therapy_for_her2_negative(
        self, category: str, setting: str | None, hr: str
    ) -> None:
        """'never traditional HER2-targeted therapy for a HER2-negative result'."""
        text = guidance(category, setting, hr, "POST")
        for sentence in text.lower().split(". "):
            if "trastuzumab" in sentence or "her2-targeted" in sentence or "her2-directed" in sentence:
                assert any(word in sentence for word in ("not", "without", "no ")), sentence

    @pytest.mark.parametrize("setting", ["EARLY", "METASTATIC", None])
    def test_low_says_it_is_not_an_asco_cap_category(self, setting: str | None) -> None:
        """Section 4: 'HER2-low' is a trial-eligibility term ... say so in texts."""
        text = guidance("LOW", setting, "POSITIVE", "POST").lower()
        assert "trial-eligibility" in text

    # Advanced and unknown settings. Section 4 gives `guidance` as "the seed's treatment approach
    # for the setting"; for advanced disease the seed's sequencing is: first line "standard
    # chemotherapy or endocrine therapy based on disease burden and hormone receptor status"
    # (ER/PR-positive), "standard chemotherapy regimens for triple-negative breast cancer"
    # (triple-negative), nothing for an unknown HR status; T-DXd after prior
    # therapy (section 5.1: after >= 1 chemotherapy line, or endocrine line if HR-positive).
    # Section 4: "never traditional HER2-targeted therapy for a HER2-negative result" (any setting).

    @staticmethod
    def _negates_traditional_her2_therapy(text: str) -> bool:
        sentences = [s for s in text.split(". ") if "traditional her2-targeted therapy" in s]
        return bool(sentences) and all(any(w in s for w in ("not", "never", "without", "no ")) for s in sentences)

    @pytest.mark.parametrize("category", sorted(HER2_NEGATIVE))
    @pytest.mark.parametrize("setting", ["METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED"])
    @pytest.mark.parametrize(
        ("hr", "required", "forbidden"),
        [
            pytest.param("POSITIVE", ("first line", "chemotherapy or endocrine therapy", "disease burden"), (), id="hr-positive-chemo-or-endocrine-by-burden"),
            pytest.param("NEGATIVE", ("first line", "standard chemotherapy regimens for triple-negative"), ("endocrine",), id="hr-negative-triple-negative-chemotherapy-no-endocrine"),
            # the seed names no first line without the HR status: it says the choice rests on it
            pytest.param("UNKNOWN", ("hr status unknown", "first-line choice rests on hormone receptor status"), ("endocrine", "chemotherapy", "triple-negative"), id="hr-unknown-no-first-line"),
        ],
    )
    def test_advanced(self, category: str, setting: str, hr: str, required: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
        text = guidance(category, setting, hr, "POST").lower()
        for phrase in required:
            assert phrase in text, phrase
        for phrase in forbidden:
            assert phrase not in text, phrase
        # T-DXd is named as a later option (after prior therapy), for HER2-low disease
        (tdxd,) = [s for s in re.split(r"[.;] ", text) if "t-dxd" in s]
        assert "after" in tdxd
        assert "her2-low" in tdxd
        assert "first line" not in tdxd
        # the early-setting approach is not given for advanced disease
        for early in ("genomic assay", "oncotype", "adjuvant", "aromatase"):
            assert early not in text, early
        assert self._negates_traditional_her2_therapy(text)

    @pytest.mark.parametrize("category", sorted(HER2_NEGATIVE))
    @pytest.mark.parametrize("setting", ["UNKNOWN", None])
    @pytest.mark.parametrize("hr", ["POSITIVE", "NEGATIVE", "UNKNOWN"])
    def test_unknown_setting(self, category: str, setting: str | None, hr: str) -> None:
        """No setting, no setting's approach: the text says the setting is unknown, gives neither
        the early nor the advanced approach, and still rules out traditional HER2-targeted
        therapy."""
        text = guidance(category, setting, hr, "POST").lower()
        assert "setting unknown" in text
        for specific in ("first line", "t-dxd", "genomic assay", "aromatase", "endocrine therapy", "chemotherapy"):
            assert specific not in text, specific
        assert self._negates_traditional_her2_therapy(text)
