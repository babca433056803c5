"""Named facts derived from one event, its classification and the patient's other samples.

Rules in `rules/` only combine these facts; every computation lives here, tested by name.
A fact is None when the input does not say (unknown treatment history never counts as met).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from consumer.clinical.classify import (
    HR_NEGATIVE,
    HR_POSITIVE,
    ZERO_NOT_DETERMINABLE,
    ZERO_NOT_STATED,
    SampleClass,
    classify_sample,
    hr_status,
    score_inconsistent,
)
from consumer.clinical.model import (
    ADVANCED_SETTINGS,
    CATEGORIES,
    FINAL_REPORTS,
    HER2_NEGATIVE,
    LOW,
    METASTATIC_SITES,
    MISSING,
    NULL,
    POSITIVE,
    REPORT_STATUSES,
    ULTRALOW,
    UNSCORED,
    ZERO_UNSPECIFIED,
    Event,
)
from consumer.clinical.therapies import T_DXD, TRADITIONAL_HER2, normalise_therapies

COLD_ISCHEMIA_MAX_MINUTES = 60
FIXATION_MIN_HOURS = 6.0
FIXATION_MAX_HOURS = 72.0
RECURRENCE_WINDOW_MONTHS = 6

# The categories a qualifying LOW / LOW-or-ULTRALOW sample has (latest_of).
LOW_ONLY = frozenset({LOW})
LOW_OR_ULTRALOW = frozenset({LOW, ULTRALOW})

# Discordance tiers (section 5.3): ZERO_UNSPECIFIED is compatible with ULTRALOW and NULL.
_DECISIVE = frozenset({POSITIVE, LOW, ULTRALOW, NULL, ZERO_UNSPECIFIED})
_COMPATIBLE = frozenset(
    {frozenset({ZERO_UNSPECIFIED, ULTRALOW}), frozenset({ZERO_UNSPECIFIED, NULL})}
)


class Sample(NamedTuple):
    """One HER2 test of the patient, classified: current event, prior result or history."""

    accession_id: str | None
    site: str
    collection_date: dt.date | None
    category: str
    source: str  # "current", "prior" or "history"
    order: int = 0  # processing order (her2-rules.md section 8: ties go to the latest processed)
    carrier: str | None = None  # accession whose report supplied it (a prior entry's carrier)

    def describe(self) -> str:
        """Site, date and category, for alert details (no free text). A prior entry reported
        without an accession is named by the report that listed it (never by an internal key,
        never by an accession it did not have)."""
        date = self.collection_date.isoformat() if self.collection_date else "date unknown"
        if self.accession_id:
            acc = f"accession {self.accession_id}, "
        elif self.carrier:
            acc = (
                "prior result without an accession number, listed in the report of accession "
                f"{self.carrier}, "
            )
        else:
            acc = ""
        return f"{self.site} sample ({acc}{date}): {self.category}"


def add_calendar_months(day: dt.date, months: int) -> dt.date:
    """Add calendar months, clamping the day to the month's end (31 Aug + 6 -> 28/29 Feb).

    Past the last representable date the result is `date.max` (absurd input must not crash).
    """
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    if year > dt.MAXYEAR:
        return dt.date.max
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def recurred_within_months(
    recurrence: dt.date | None, therapy_end: dt.date | None, months: int
) -> bool | None:
    """True when recurrence is during or within `months` calendar months of therapy end."""
    if recurrence is None or therapy_end is None:
        return None
    return recurrence <= add_calendar_months(therapy_end, months)


def specimen_site(specimen: dict[str, Any] | None) -> str:
    """The specimen site, UNKNOWN when the specimen or its site is missing."""
    if specimen is None:
        return "UNKNOWN"
    return str(specimen.get("site") or "UNKNOWN")


def prior_samples(event: Event) -> list[Sample]:
    """Classify `prior_her2_results`, skipping any superseded by the current accession."""
    samples = []
    current = event.get("accession_id")
    for prior in event.get("prior_her2_results") or ():
        if prior.get("accession_id") == current:
            continue
        specimen = prior.get("specimen")
        sc = classify_sample(prior.get("her2_ihc"), prior.get("her2_ish"))
        samples.append(
            Sample(
                prior.get("accession_id"),
                specimen_site(specimen),
                specimen.get("collection_date") if specimen else None,
                sc.category,
                "prior",
            )
        )
    return samples


def merge_samples(current: Sample, others: Iterable[Sample]) -> list[Sample]:
    """All samples of the patient, the current one first, de-duplicated by accession."""
    merged = [current]
    seen = {current.accession_id}
    for sample in others:
        if sample.accession_id is not None and sample.accession_id in seen:
            continue
        seen.add(sample.accession_id)
        merged.append(sample)
    return merged


def discordant(a: str, b: str) -> bool:
    """True when two decisive categories disagree (section 5.3 tiers)."""
    if a == b or a not in _DECISIVE or b not in _DECISIVE:
        return False
    return frozenset({a, b}) not in _COMPATIBLE


def discordant_pairs(samples: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """Every pair of discordant decisive samples."""
    decisive = [s for s in samples if s.category in _DECISIVE]
    return [
        (a, b)
        for i, a in enumerate(decisive)
        for b in decisive[i + 1 :]
        if discordant(a.category, b.category)
    ]


def recency(sample: Sample) -> tuple[bool, dt.date, int, bool]:
    """Section 8 order: most recently collected first; undated below dated; ties: the latest
    processed (a patient's own report before a prior entry carried by the same report)."""
    return (
        sample.collection_date is not None,
        sample.collection_date or dt.date.min,
        sample.order,
        sample.source != "prior",
    )


def latest_of(samples: Sequence[Sample], categories: frozenset[str]) -> Sample | None:
    """The qualifying sample to name: the most recently collected one that qualifies."""
    matching = [s for s in samples if s.category in categories]
    return max(matching, key=recency) if matching else None


def named_pair(pairs: Sequence[tuple[Sample, Sample]]) -> tuple[Sample, Sample] | None:
    """The one discordant pair a finding names: the most recently collected sample that has a
    discordant partner, and its most recently collected partner (section 8, Content)."""
    if not pairs:
        return None
    members = [s for pair in pairs for s in pair]
    first = max(members, key=recency)
    partners = [b if a is first else a for a, b in pairs if first in (a, b)]
    return first, max(partners, key=recency)


def discordant_pair(
    samples: Sequence[Sample], *, crossing_positive: bool = False
) -> tuple[Sample, Sample] | None:
    """named_pair(discordant_pairs(samples)) without building every pair: discordance depends
    on the categories only, so the most recent sample per decisive category is enough (linear in
    the patient's samples; a patient with thousands of accessions stays cheap).
    `crossing_positive`: only pairs with one POSITIVE side (RT-CONVERSION)."""
    return _pair_among(_latest_by_category(samples), crossing_positive=crossing_positive)


def _latest_by_category(samples: Sequence[Sample]) -> dict[str, Sample]:
    """The most recent sample of each decisive category (the first of equals), in the order
    the categories first occur."""
    latest: dict[str, Sample] = {}
    for s in samples:
        if s.category in _DECISIVE:
            known = latest.get(s.category)
            if known is None or recency(s) > recency(known):
                latest[s.category] = s
    return latest


def _pair_among(
    latest: dict[str, Sample], *, crossing_positive: bool
) -> tuple[Sample, Sample] | None:
    """discordant_pair() over the most recent sample of each decisive category."""
    if len(latest) < 2:  # a pair needs two categories: one never disagrees with itself
        return None

    def partners(category: str) -> list[Sample]:
        return [
            latest[other]
            for other in latest
            if discordant(category, other)
            and (not crossing_positive or POSITIVE in (category, other))
        ]

    with_partner = [latest[c] for c in latest if partners(c)]
    if not with_partner:
        return None
    first = max(with_partner, key=recency)
    return first, max(partners(first.category), key=recency)


def latest_decisive(samples: Sequence[Sample]) -> Sample | None:
    """The most recently collected decisive sample (named by RT-ALL-ZERO)."""
    return latest_of(samples, _DECISIVE)


def preanalytic_problems(specimen: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(out-of-range handling, missing documentation) for a specimen (ASCO/CAP [S7])."""
    spec = specimen or {}
    problems: list[str] = []
    missing: list[str] = []
    cold = spec.get("cold_ischemia_minutes")
    fixation = spec.get("fixation_hours")
    if cold is None:
        missing.append("cold ischaemia time not documented")
    elif cold > COLD_ISCHEMIA_MAX_MINUTES:
        problems.append(f"cold ischaemia {cold} min (> {COLD_ISCHEMIA_MAX_MINUTES} min)")
    if fixation is None:
        missing.append("fixation time not documented")
    elif not FIXATION_MIN_HOURS <= fixation <= FIXATION_MAX_HOURS:
        problems.append(f"fixation {fixation:g} h (outside 6-72 h)")
    if spec.get("decalcified") is True:
        problems.append("specimen decalcified")
    return problems, missing


def _lines(ctx: dict[str, Any], name: str) -> int | None:
    value = ctx.get(name)
    return int(value) if value is not None else None


# The facts derive() computes only when a caller's rules read one of them (the patient
# aggregate evaluates REPORT codes on the report's own tests and PATIENT codes on the samples
# and context, section 8); every other fact is cheap and always there.
SAMPLE_FACTS = frozenset(
    {
        "any_sample_positive",
        "tdxd_db04_her2_condition",
        "tdxd_db06_her2_condition",
        "low_sample",
        "low_sample_is_primary",
        "low_or_ultralow_sample",
        "low_or_ultralow_sample_is_primary",
        "any_metastatic_site_sample",
        "decisive_sample_count",
        "all_decisive_zero",
        "latest_decisive_sample",
        "samples_discordant",
        "discordance_detail",
        "her2_conversion",
        "conversion_detail",
    }
)
CONTEXT_FACTS = frozenset(
    {
        "metastatic_chemotherapy_lines",
        "metastatic_endocrine_therapy_lines",
        "metastatic_anti_her2_lines",
        "recurrence_within_6m_of_adjuvant_chemotherapy",
        "recurrence_within_6m_of_perioperative_anti_her2",
        "planned_traditional_her2",
        "planned_tdxd",
        "planned_her2_drugs",
        "ild_history",
        "clinical_suspicion",
        "clinical_flags",
    }
)
REPORT_DETAIL_FACTS = frozenset(
    {
        "preanalytic_risk",
        "preanalytic_detail",
        "preanalytic_documentation_gap",
        "ihc_ish_discordant",
        "ihc_unscored",
        "ish_negative_without_ihc",
        "zero_subtype_unstated",
        "zero_subtype_not_determinable",
        "ihc_2plus_without_ish",
        "ish_counts_incomplete",
        "ish_workup_incomplete",
        "assay_undocumented",
        "specimen_undocumented",
        "staining_detail_missing",
        "controls_undocumented",
        "score_inconsistent",
    }
)


def derive(
    event: Event,
    sc: SampleClass,
    history: Iterable[Sample] = (),
    hr: tuple[str, bool] | None = None,
    current: Sample | None = None,
    *,
    wanted: frozenset[str] | None = None,
    known_context_facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every named fact the rules may read, for one event classified as `sc` (`hr`: its
    hr_status() if the caller already has it; `current`: the patient's current sample when it
    is not the event's own, section 8). `wanted`: the facts the caller's rules read (default:
    all); the groups above that hold none of them are left out, the rest are as without it.
    `known_context_facts`: context_facts() of the event's clinical_context, if the caller
    already has them."""
    ctx = event.get("clinical_context") or {}
    specimen = event.get("specimen")
    category = sc.category
    setting = ctx.get("disease_setting") or "UNKNOWN"
    hr_value, er_low_only = hr or hr_status(event.get("er"), event.get("pr"))
    her2_negative = category in HER2_NEGATIVE
    assessment = sc.ish
    score = sc.ihc_score
    ihc = event.get("her2_ihc")
    ish = event.get("her2_ish")

    if current is None:
        current = Sample(
            event.get("accession_id"),
            specimen_site(specimen),
            specimen.get("collection_date") if specimen else None,
            category,
            "current",
            order=1,  # the event itself is processed after the prior entries it carries
        )
    facts: dict[str, Any] = {
        "report_status": event.get("report_status"),
        "final_report": event.get("report_status") in FINAL_REPORTS,
        "disease_setting": setting,
        "advanced": setting in ADVANCED_SETTINGS,
        "category": category,
        "her2_negative": her2_negative,
        "ihc_score": score,
        "ish_group": assessment.group if assessment else None,
        "hr_status": hr_value,
        "hr_positive": hr_value == HR_POSITIVE,
        "er_low_only": er_low_only,
        "triple_negative": hr_value == HR_NEGATIVE and category != POSITIVE,
        "has_her2_test": ihc is not None or ish is not None,
        "unscored_or_negative": her2_negative or category == UNSCORED,
    }
    if wanted is None or not wanted.isdisjoint(SAMPLE_FACTS):
        samples = merge_samples(current, [*history, *prior_samples(event)])
        facts.update(_sample_facts(samples, hr_value))
    if wanted is None or not wanted.isdisjoint(CONTEXT_FACTS):
        facts.update(_context_facts(ctx) if known_context_facts is None else known_context_facts)
    if wanted is None or not wanted.isdisjoint(REPORT_DETAIL_FACTS):
        facts.update(_report_detail_facts(event, sc, current))
    return facts


def _sample_facts(samples: Sequence[Sample], hr_value: str) -> dict[str, Any]:
    """SAMPLE_FACTS over the patient's samples (the current one first)."""
    categories = [s.category for s in samples]
    any_positive = POSITIVE in categories
    low_sample = latest_of(samples, LOW_ONLY)
    low_or_ultralow_sample = latest_of(samples, LOW_OR_ULTRALOW)
    decisive = [c for c in categories if c in _DECISIVE]
    latest = _latest_by_category(samples)  # both pairs are chosen among these
    pair = _pair_among(latest, crossing_positive=False)
    conversion_pair = _pair_among(latest, crossing_positive=True)
    zero_sample = latest_decisive(samples)
    return {
        "any_sample_positive": any_positive,
        "tdxd_db04_her2_condition": low_sample is not None and not any_positive,
        "tdxd_db06_her2_condition": hr_value == HR_POSITIVE
        and low_or_ultralow_sample is not None
        and not any_positive,
        "low_sample": low_sample.describe() if low_sample else None,
        "low_sample_is_primary": bool(low_sample and low_sample.site == "PRIMARY_BREAST"),
        "low_or_ultralow_sample": (
            low_or_ultralow_sample.describe() if low_or_ultralow_sample else None
        ),
        "low_or_ultralow_sample_is_primary": bool(
            low_or_ultralow_sample and low_or_ultralow_sample.site == "PRIMARY_BREAST"
        ),
        "any_metastatic_site_sample": any(
            s.site in METASTATIC_SITES and s.category != MISSING for s in samples
        ),
        "decisive_sample_count": len(decisive),
        "all_decisive_zero": bool(decisive)
        and all(c in (NULL, ZERO_UNSPECIFIED) for c in decisive),
        "latest_decisive_sample": zero_sample.describe() if zero_sample else None,
        "samples_discordant": pair is not None,
        "discordance_detail": f"{pair[0].describe()} vs {pair[1].describe()}" if pair else None,
        "her2_conversion": conversion_pair is not None,
        "conversion_detail": (
            f"{conversion_pair[0].describe()} vs {conversion_pair[1].describe()}"
            if conversion_pair
            else None
        ),
    }


def context_facts(ctx: dict[str, Any]) -> dict[str, Any]:
    """CONTEXT_FACTS of a clinical context (what derive() adds for them)."""
    return _context_facts(ctx)


def _context_facts(ctx: dict[str, Any]) -> dict[str, Any]:
    """CONTEXT_FACTS: treatment history, planned therapies and clinical flags."""
    drugs = normalise_therapies(ctx.get("planned_therapies") or ())
    # once each, in a stable order; OTHER (the schema default a later flag is read as) is no trigger
    flags = sorted(set(ctx.get("clinical_flags") or ()) - {"OTHER"})
    return {
        "metastatic_chemotherapy_lines": _lines(ctx, "metastatic_chemotherapy_lines"),
        "metastatic_endocrine_therapy_lines": _lines(ctx, "metastatic_endocrine_therapy_lines"),
        "metastatic_anti_her2_lines": _lines(ctx, "metastatic_anti_her2_lines"),
        "recurrence_within_6m_of_adjuvant_chemotherapy": recurred_within_months(
            ctx.get("recurrence_date"),
            ctx.get("adjuvant_chemotherapy_end_date"),
            RECURRENCE_WINDOW_MONTHS,
        ),
        "recurrence_within_6m_of_perioperative_anti_her2": recurred_within_months(
            ctx.get("recurrence_date"),
            ctx.get("perioperative_anti_her2_end_date"),
            RECURRENCE_WINDOW_MONTHS,
        ),
        "planned_traditional_her2": bool(drugs & TRADITIONAL_HER2),
        "planned_tdxd": T_DXD in drugs,
        "planned_her2_drugs": ", ".join(sorted(drugs)) or None,
        "ild_history": ctx.get("interstitial_lung_disease_history") is True,
        "clinical_suspicion": bool(flags),
        "clinical_flags": ", ".join(flags) or None,
    }


def _report_detail_facts(event: Event, sc: SampleClass, current: Sample) -> dict[str, Any]:
    """REPORT_DETAIL_FACTS: the documentation of the report's own specimen and tests."""
    ihc = event.get("her2_ihc")
    ish = event.get("her2_ish")
    assessment = sc.ish
    score = sc.ihc_score
    problems, missing = preanalytic_problems(event.get("specimen"))
    return {
        "preanalytic_risk": bool(problems),
        "preanalytic_detail": "; ".join(problems + missing) or None,
        "preanalytic_documentation_gap": bool(problems or missing),
        "ihc_ish_discordant": score in ("ZERO", "ONE_PLUS")
        and assessment is not None
        and assessment.group == 1,
        "ihc_unscored": ihc is not None and score is None,
        "ish_negative_without_ihc": ihc is None
        and assessment is not None
        and assessment.result == "NEGATIVE",
        "zero_subtype_unstated": sc.zero_subtype == ZERO_NOT_STATED,
        "zero_subtype_not_determinable": sc.zero_subtype == ZERO_NOT_DETERMINABLE,
        "ihc_2plus_without_ish": score == "TWO_PLUS" and ish is None,
        "ish_counts_incomplete": bool(assessment and assessment.counts_missing),
        "ish_workup_incomplete": bool(assessment and assessment.workup_incomplete),
        "assay_undocumented": ihc is not None
        and (not ihc.get("antibody_clone") or ihc.get("assay_type") is None),
        "specimen_undocumented": current.site == "UNKNOWN" or current.collection_date is None,
        "staining_detail_missing": score == "ONE_PLUS"
        and ihc is not None  # always: a score comes from the event's IHC (classify_sample)
        and (
            ihc.get("percent_cells_stained") is None
            or ihc.get("staining_intensity") is None
            or ihc.get("staining_completeness") is None
        ),
        "controls_undocumented": ihc is not None and ihc.get("controls_documented") is not True,
        "score_inconsistent": ihc is not None and score_inconsistent(ihc),
    }


# The catalogue the rule loader checks against: fact name -> (kind, meaning). "text" facts are
# for alert texts only; conditions may read "bool", "int" and "enum" facts.
FACTS: dict[str, tuple[str, str]] = {
    "report_status": ("enum", "PRELIMINARY, FINAL, AMENDED, CORRECTED or CANCELLED"),
    "final_report": ("bool", "report is FINAL, AMENDED or CORRECTED"),
    "disease_setting": ("enum", "EARLY, UNRESECTABLE_LOCALLY_ADVANCED, METASTATIC or UNKNOWN"),
    "advanced": ("bool", "disease setting METASTATIC or UNRESECTABLE_LOCALLY_ADVANCED"),
    "category": ("enum", "HER2 category of the current sample"),
    "her2_negative": (
        "bool",
        "current category is LOW, ULTRALOW, NULL, ZERO_UNSPECIFIED or NEGATIVE_EXPRESSION_UNKNOWN",
    ),
    "ihc_score": ("enum", "current IHC score, null when not done or unscored"),
    "ish_group": ("int", "current dual-probe ISH group 1-5, null otherwise"),
    "hr_status": ("enum", "POSITIVE, NEGATIVE or UNKNOWN"),
    "hr_positive": ("bool", "ER or PR POSITIVE / LOW_POSITIVE or >= 1 %"),
    "er_low_only": ("bool", "HR-positive only through ER-low (1-10 %), counted by POLICY"),
    "triple_negative": ("bool", "ER and PR known negative and HER2 not POSITIVE"),
    "metastatic_chemotherapy_lines": ("int", "metastatic chemotherapy lines; null = unknown"),
    "metastatic_endocrine_therapy_lines": ("int", "metastatic endocrine lines; null = unknown"),
    "metastatic_anti_her2_lines": ("int", "metastatic anti-HER2 lines; null = unknown"),
    "recurrence_within_6m_of_adjuvant_chemotherapy": (
        "bool",
        "recurrence during or <= 6 calendar months after adjuvant chemotherapy; null = unknown",
    ),
    "recurrence_within_6m_of_perioperative_anti_her2": (
        "bool",
        "recurrence during or <= 6 calendar months after perioperative anti-HER2; null = unknown",
    ),
    "any_sample_positive": ("bool", "any sample of the patient was ever POSITIVE"),
    "tdxd_db04_her2_condition": ("bool", "a sample is LOW and no sample was ever POSITIVE"),
    "tdxd_db06_her2_condition": (
        "bool",
        "HR-positive, a sample is LOW or ULTRALOW and no sample was ever POSITIVE",
    ),
    "low_sample": ("text", "the LOW sample named as qualifying"),
    "low_sample_is_primary": ("bool", "the qualifying LOW sample is from the primary tumour"),
    "low_or_ultralow_sample": ("text", "the LOW or ULTRALOW sample named as qualifying"),
    "low_or_ultralow_sample_is_primary": (
        "bool",
        "the qualifying LOW/ULTRALOW sample is from the primary tumour",
    ),
    "planned_traditional_her2": (
        "bool",
        "trastuzumab, pertuzumab, T-DM1, margetuximab or a HER2 kinase inhibitor planned",
    ),
    "planned_tdxd": ("bool", "trastuzumab deruxtecan (T-DXd, Enhertu) planned"),
    "planned_her2_drugs": ("text", "the HER2 drugs recognised in planned_therapies"),
    "ild_history": ("bool", "history of interstitial lung disease is recorded as true"),
    "has_her2_test": ("bool", "the event carries HER2 IHC or ISH"),
    "any_metastatic_site_sample": (
        "bool",
        "a HER2-tested sample comes from a metastatic-setting specimen",
    ),
    "decisive_sample_count": (
        "int",
        "samples with POSITIVE, LOW, ULTRALOW, NULL or ZERO_UNSPECIFIED",
    ),
    "all_decisive_zero": ("bool", "every decisive sample is NULL or ZERO_UNSPECIFIED (and >= 1)"),
    "latest_decisive_sample": ("text", "the most recently collected decisive sample"),
    "samples_discordant": ("bool", "two decisive samples of the patient are discordant"),
    "discordance_detail": (
        "text",
        "one discordant pair: the most recent sample with a discordant partner and its "
        "most recent partner (site, date, category)",
    ),
    "her2_conversion": ("bool", "a discordance crosses POSITIVE vs not positive"),
    "conversion_detail": ("text", "one pair crossing POSITIVE vs not positive, chosen as above"),
    "preanalytic_risk": (
        "bool",
        "current specimen decalcified, fixed outside 6-72 h or cold ischaemia > 60 min",
    ),
    "preanalytic_detail": ("text", "pre-analytic problems and missing documentation"),
    "preanalytic_documentation_gap": (
        "bool",
        "cold ischaemia or fixation missing, out of range, or decalcified",
    ),
    "ihc_ish_discordant": ("bool", "current IHC 0 or 1+ with dual-probe ISH group 1"),
    "clinical_suspicion": ("bool", "clinical_flags holds a retesting trigger"),
    "clinical_flags": ("text", "the clinical flags"),
    "ihc_unscored": ("bool", "IHC reported without a score"),
    "ish_negative_without_ihc": ("bool", "ISH negative and no IHC"),
    "zero_subtype_unstated": ("bool", "IHC 0 without null vs ultralow description"),
    "zero_subtype_not_determinable": (
        "bool",
        "IHC 0 whose staining detail does not fit IHC 0 (sub-type not determinable)",
    ),
    "ihc_2plus_without_ish": ("bool", "IHC 2+ and no ISH"),
    "ish_counts_incomplete": ("bool", "ISH without usable counts, or fewer than 20 cells"),
    "ish_workup_incomplete": (
        "bool",
        "ISH group 2-4 / single-probe 4-<6 left unresolved for a missing work-up step",
    ),
    "assay_undocumented": ("bool", "IHC without antibody clone or assay type"),
    "specimen_undocumented": ("bool", "specimen site unknown/missing or collection date missing"),
    "staining_detail_missing": ("bool", "IHC 1+ missing percentage, intensity or completeness"),
    "controls_undocumented": ("bool", "IHC without a statement that controls were documented"),
    "score_inconsistent": ("bool", "staining detail contradicts the reported score"),
    "unscored_or_negative": ("bool", "current category HER2-negative or UNSCORED"),
}

# The values an "enum" fact can take (the rule loader refuses others in eq / ne / in / not_in).
ENUM_VALUES: dict[str, frozenset[str]] = {
    "report_status": frozenset(REPORT_STATUSES),
    "disease_setting": frozenset(
        {"EARLY", "UNRESECTABLE_LOCALLY_ADVANCED", "METASTATIC", "UNKNOWN"}
    ),
    "category": frozenset(CATEGORIES),
    "ihc_score": frozenset({"ZERO", "ONE_PLUS", "TWO_PLUS", "THREE_PLUS", "INDETERMINATE"}),
    "hr_status": frozenset({HR_POSITIVE, HR_NEGATIVE, "UNKNOWN"}),
}
