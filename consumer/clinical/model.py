"""Names shared by every stage: categories, statuses, alert types and the records that flow.

Events are plain dicts shaped like the Avro `PathologyResult` reader schema, as fastavro
decodes them: enums are strings, dates are `datetime.date`, timestamps aware `datetime`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]
Record = dict[str, Any]

POSITIVE = "POSITIVE"
EQUIVOCAL = "EQUIVOCAL"
LOW = "LOW"
ULTRALOW = "ULTRALOW"
NULL = "NULL"
ZERO_UNSPECIFIED = "ZERO_UNSPECIFIED"
NEGATIVE_EXPRESSION_UNKNOWN = "NEGATIVE_EXPRESSION_UNKNOWN"
UNSCORED = "UNSCORED"
MISSING = "MISSING"
INDETERMINATE = "INDETERMINATE"

CATEGORIES = (
    POSITIVE,
    EQUIVOCAL,
    LOW,
    ULTRALOW,
    NULL,
    ZERO_UNSPECIFIED,
    NEGATIVE_EXPRESSION_UNKNOWN,
    UNSCORED,
    MISSING,
    INDETERMINATE,
)
HER2_NEGATIVE = frozenset({LOW, ULTRALOW, NULL, ZERO_UNSPECIFIED, NEGATIVE_EXPRESSION_UNKNOWN})
NOT_FINAL_STATUS = frozenset({EQUIVOCAL, UNSCORED, INDETERMINATE, MISSING})

REPORT_STATUSES = ("PRELIMINARY", "FINAL", "AMENDED", "CORRECTED", "CANCELLED")
FINAL_REPORTS = frozenset({"FINAL", "AMENDED", "CORRECTED"})

ALERT_TYPES = ("RETEST", "DOCUMENTATION_GAP", "TDXD_ELIGIBILITY", "THERAPY_CAUTION")
SEVERITIES = ("INFO", "WARNING", "CRITICAL")
ACTIVE = "ACTIVE"
RESOLVED = "RESOLVED"
RETRACTED = "RETRACTED"
CANCELLED = "CANCELLED"

# Alert scope (her2-rules.md section 8): REPORT codes are about one accession's latest report,
# every other code about the patient.
REPORT = "REPORT"
PATIENT = "PATIENT"
REPORT_SCOPED = frozenset({"RT-PREANALYTIC", "RT-IHC-ISH-DISCORDANT"})


def scope_of(code: str) -> str:
    """REPORT for every DG-* code, RT-PREANALYTIC and RT-IHC-ISH-DISCORDANT; else PATIENT."""
    return REPORT if code.startswith("DG-") or code in REPORT_SCOPED else PATIENT


ADVANCED_SETTINGS = frozenset({"METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED"})
METASTATIC_SITES = frozenset({"DISTANT_METASTASIS", "LOCOREGIONAL_RECURRENCE"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one valid event produced: its classification and its alerts."""

    classification: Record
    alerts: list[Record]
    transitions: tuple[str, ...] = ()  # per alert: opened, updated, resolved or retracted
