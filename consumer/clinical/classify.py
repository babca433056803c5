"""ASCO/CAP HER2 classification as code (docs/her2-rules.md sections 2-4).

Total over any input: missing or partial data yields a category (MISSING, UNSCORED,
EQUIVOCAL, ...), never an exception. The engine never re-scores a pathologist's IHC score.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from consumer.clinical.model import (
    EQUIVOCAL,
    HER2_NEGATIVE,
    INDETERMINATE,
    LOW,
    MISSING,
    NEGATIVE_EXPRESSION_UNKNOWN,
    NULL,
    POSITIVE,
    ULTRALOW,
    UNSCORED,
    ZERO_UNSPECIFIED,
)

ISH_POSITIVE = "POSITIVE"
ISH_NEGATIVE = "NEGATIVE"
ISH_UNRESOLVED = "UNRESOLVED"

ZERO_NULL = "NULL"
ZERO_ULTRALOW = "ULTRALOW"
ZERO_NOT_STATED = "NOT_STATED"
ZERO_NOT_DETERMINABLE = "NOT_DETERMINABLE"

MIN_CELLS_COUNTED = 20
RATIO_CUTOFF = 2.0
COPIES_LOW = 4.0
COPIES_HIGH = 6.0
PERCENT_CUTOFF = 10.0

_REPORTED_ISH = {
    "AMPLIFIED": ISH_POSITIVE,
    "NOT_AMPLIFIED": ISH_NEGATIVE,
    "EQUIVOCAL": ISH_UNRESOLVED,
}


class IshAssessment(NamedTuple):
    """The conclusion drawn from one ISH record and the concurrent IHC score."""

    result: str
    group: int | None
    counts_missing: bool
    workup_incomplete: bool


class SampleClass(NamedTuple):
    """The classification of one sample (IHC and ISH of one specimen)."""

    category: str
    row: str
    ihc_score: str | None
    ish: IshAssessment | None
    zero_subtype: str | None


def dual_probe_group(ratio: float, her2_copies: float) -> int:
    """ASCO/CAP dual-probe group 1-5 from the HER2/CEP17 ratio and HER2 copies per cell."""
    if ratio >= RATIO_CUTOFF:
        return 1 if her2_copies >= COPIES_LOW else 2
    if her2_copies >= COPIES_HIGH:
        return 3
    if her2_copies >= COPIES_LOW:
        return 4
    return 5


def _resolve_by_ihc(score: str | None) -> str | None:
    """Concurrent IHC resolution for ISH groups 2-4: 3+ positive, 0/1+ negative, else None."""
    if score == "THREE_PLUS":
        return ISH_POSITIVE
    if score in ("ZERO", "ONE_PLUS"):
        return ISH_NEGATIVE
    return None


def _dual_probe_resolution(group: int, ihc_score: str | None, recount: Any) -> tuple[str, bool]:
    """Result and whether the work-up is incomplete for a computed dual-probe group."""
    if group == 1:
        return ISH_POSITIVE, False
    if group == 5:  # ISH group number, not a threshold
        return ISH_NEGATIVE, False
    resolved = _resolve_by_ihc(ihc_score)
    if resolved is not None:
        return resolved, False
    if ihc_score != "TWO_PLUS":
        return ISH_UNRESOLVED, True  # no usable concurrent IHC score
    if recount is None:
        return ISH_UNRESOLVED, True  # IHC 2+ needs a blinded recount
    if recount != group:
        return ISH_UNRESOLVED, True  # no confirming recount: adjudication still to do
    return (ISH_POSITIVE if group == 3 else ISH_NEGATIVE), False


def assess_ish(ish: dict[str, Any], ihc_score: str | None) -> IshAssessment:
    """Assess one ISH record with the concurrent IHC score (section 3 and 5.5)."""
    her2 = ish.get("her2_copies_per_cell")
    cells = ish.get("cells_counted")
    few_cells = cells is not None and cells < MIN_CELLS_COUNTED
    if ish.get("probe_type") == "SINGLE":
        if her2 is not None:
            if her2 >= COPIES_HIGH:
                return IshAssessment(ISH_POSITIVE, None, few_cells, False)
            if her2 < COPIES_LOW:
                return IshAssessment(ISH_NEGATIVE, None, few_cells, False)
            resolved = _resolve_by_ihc(ihc_score)
            if resolved is not None:
                return IshAssessment(resolved, None, few_cells, False)
            return IshAssessment(ISH_UNRESOLVED, None, few_cells, True)
    else:
        ratio = ish.get("her2_cep17_ratio")
        if ratio is None:
            cep17 = ish.get("cep17_copies_per_cell")
            if her2 is not None and cep17:
                ratio = her2 / cep17
        if ratio is not None and her2 is not None:
            group = dual_probe_group(ratio, her2)
            result, incomplete = _dual_probe_resolution(group, ihc_score, ish.get("recount_group"))
            return IshAssessment(result, group, few_cells, incomplete)
    reported = _REPORTED_ISH.get(ish.get("reported_result") or "", ISH_UNRESOLVED)
    return IshAssessment(reported, None, True, False)


def zero_detail_contradicts(ihc: dict[str, Any]) -> bool:
    """True when the staining detail of an IHC 0 does not fit IHC 0 (section 2, step 1).

    A valid ASCO/CAP IHC 0 allows no staining or faint incomplete staining in <= 10 % of cells;
    weak-to-moderate or strong intensity, complete staining, or > 10 % of cells contradict it
    (unusual patterns that ASCO/CAP scores 2+ with reflex ISH).
    """
    percent = ihc.get("percent_cells_stained")
    return (
        ihc.get("staining_intensity") in ("WEAK_MODERATE", "STRONG")
        or ihc.get("staining_completeness") == "COMPLETE"
        or (percent is not None and percent > PERCENT_CUTOFF)
    )


def zero_subtype(ihc: dict[str, Any]) -> str:
    """IHC 0 sub-type by the four steps of section 2, in this order.

    1. NOT_DETERMINABLE when the detail does not fit IHC 0 (never ultralow, whatever the
       percentage: a wrong ultralow could route a 2+ pattern to an ultralow T-DXd alert);
    2. NULL when 0 % of cells or intensity / completeness NONE;
    3. ULTRALOW when > 0 % of cells, or intensity FAINT, or completeness INCOMPLETE;
    4. NOT_STATED otherwise.
    """
    if zero_detail_contradicts(ihc):
        return ZERO_NOT_DETERMINABLE
    percent = ihc.get("percent_cells_stained")
    intensity = ihc.get("staining_intensity")
    completeness = ihc.get("staining_completeness")
    if percent == 0 or intensity == "NONE" or completeness == "NONE":
        return ZERO_NULL
    stained = percent is not None and percent > 0
    if stained or intensity == "FAINT" or completeness == "INCOMPLETE":
        return ZERO_ULTRALOW
    return ZERO_NOT_STATED


_ZERO_ROWS = {
    ZERO_ULTRALOW: (ULTRALOW, "C8"),
    ZERO_NULL: (NULL, "C9"),
    ZERO_NOT_STATED: (ZERO_UNSPECIFIED, "C10"),
    ZERO_NOT_DETERMINABLE: (ZERO_UNSPECIFIED, "C10"),
}


def classify_sample(ihc: dict[str, Any] | None, ish: dict[str, Any] | None) -> SampleClass:
    """Classify one sample by the first matching row of section 4 (C1-C13)."""
    score = ihc.get("score") if ihc is not None else None
    assessment = assess_ish(ish, score) if ish is not None else None
    ish_result = assessment.result if assessment is not None else None
    subtype = None
    if score == "INDETERMINATE" and ish_result != ISH_POSITIVE:
        category, row = INDETERMINATE, "C1"
    elif score == "THREE_PLUS":
        category, row = POSITIVE, "C2"
    elif ish_result == ISH_POSITIVE:
        category, row = POSITIVE, "C3"
    elif score == "TWO_PLUS" and ish_result is None:
        category, row = EQUIVOCAL, "C4"
    elif ish_result == ISH_UNRESOLVED and (score == "TWO_PLUS" or ihc is None):
        category, row = EQUIVOCAL, "C5"
    elif score == "TWO_PLUS":
        category, row = LOW, "C6"
    elif score == "ONE_PLUS":
        category, row = LOW, "C7"
    elif score == "ZERO":
        subtype = zero_subtype(ihc or {})
        category, row = _ZERO_ROWS[subtype]
    elif ihc is None:
        category, row = (NEGATIVE_EXPRESSION_UNKNOWN, "C11") if ish_result else (MISSING, "C13")
    else:
        category, row = UNSCORED, "C12"
    return SampleClass(category, row, score, assessment, subtype)


def score_inconsistent(ihc: dict[str, Any]) -> bool:
    """True when staining detail contradicts the reported score (section 2; 2+ never is)."""
    score = ihc.get("score")
    percent = ihc.get("percent_cells_stained")
    intensity = ihc.get("staining_intensity")
    completeness = ihc.get("staining_completeness")
    if score in ("ONE_PLUS", "THREE_PLUS") and percent is not None and percent <= PERCENT_CUTOFF:
        return True
    if score == "ZERO":
        # the same test that makes the sub-type not determinable (C10, never ultralow)
        return zero_detail_contradicts(ihc)
    if score == "THREE_PLUS":
        return intensity in ("FAINT", "WEAK_MODERATE") or completeness == "INCOMPLETE"
    if score == "ONE_PLUS":
        return completeness == "COMPLETE" or intensity == "STRONG"
    return False


HR_POSITIVE = "POSITIVE"
HR_NEGATIVE = "NEGATIVE"
HR_UNKNOWN = "UNKNOWN"
_POSITIVE_RESULTS = frozenset({"POSITIVE", "LOW_POSITIVE"})


def _receptor(rec: dict[str, Any] | None) -> tuple[bool, bool, bool]:
    """(positive, known negative, low positive) for one ER or PR record."""
    if rec is None:
        return False, False, False
    percent = rec.get("percent_positive")
    result = rec.get("result")
    positive = result in _POSITIVE_RESULTS or (percent is not None and percent >= 1)
    negative = not positive and (result == "NEGATIVE" or (percent is not None and percent < 1))
    low = positive and (
        result == "LOW_POSITIVE" or (percent is not None and percent <= PERCENT_CUTOFF)
    )
    return positive, negative, low


def hr_status(er: dict[str, Any] | None, pr: dict[str, Any] | None) -> tuple[str, bool]:
    """HR status (POSITIVE / NEGATIVE / UNKNOWN) and whether it rests on ER-low alone (POLICY)."""
    er_pos, er_neg, er_low = _receptor(er)
    pr_pos, pr_neg, _ = _receptor(pr)
    if er_pos or pr_pos:
        return HR_POSITIVE, er_low and not pr_pos
    if er_neg and pr_neg:
        return HR_NEGATIVE, False
    return HR_UNKNOWN, False


_NO_HER2_TARGETED = (
    "Do not use traditional HER2-targeted therapy (trastuzumab, pertuzumab, T-DM1): "
    "the result is HER2-negative."
)
_LOW_TERM = (
    " 'HER2-low' is a trial-eligibility term, not a biological subtype or an ASCO/CAP category."
)


def guidance(category: str, setting: str | None, hr: str, menopausal: str | None) -> str:
    """The seed's treatment approach for the setting (shown with the classification, not an
    alert)."""
    if category == POSITIVE:
        return "HER2-positive: follow HER2-positive treatment guidelines."
    if category not in HER2_NEGATIVE:
        return "HER2 status is not final: complete HER2 testing before choosing a HER2 pathway."
    low_note = _LOW_TERM if category == LOW else ""
    if setting == "EARLY":
        if hr == HR_POSITIVE:
            text = (
                "Early HR-positive, HER2-negative: standard chemotherapy for HR-positive disease "
                "followed by endocrine therapy; consider a genomic assay (Oncotype DX, MammaPrint) "
                "to guide adjuvant chemotherapy."
            )
            if menopausal == "POST":
                text += " Postmenopausal: aromatase inhibitor as first-line endocrine therapy."
            return f"{text} {_NO_HER2_TARGETED}{low_note}"
        if hr == HR_NEGATIVE:
            return (
                "Early triple-negative: follow triple-negative breast cancer guidelines without "
                f"HER2-directed therapy. {_NO_HER2_TARGETED}{low_note}"
            )
        return f"Early HER2-negative, HR status unknown. {_NO_HER2_TARGETED}{low_note}"
    if setting in ("METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED"):
        # the seed's first line names ER/PR-positive and triple-negative disease only: with the
        # HR status unknown it says that the choice rests on it, not one of the two
        if hr == HR_POSITIVE:
            first_line = (
                "HR-positive: first line standard chemotherapy or endocrine therapy by disease "
                "burden"
            )
        elif hr == HR_NEGATIVE:
            first_line = (
                "triple-negative: first line standard chemotherapy regimens for triple-negative "
                "breast cancer"
            )
        else:
            first_line = "HR status unknown: the first-line choice rests on hormone receptor status"
        return (
            f"Advanced HER2-negative, {first_line}; T-DXd is an option for HER2-low "
            f"(and HR-positive ultralow) disease after prior therapy. {_NO_HER2_TARGETED}{low_note}"
        )
    return f"HER2-negative; disease setting unknown. {_NO_HER2_TARGETED}{low_note}"
