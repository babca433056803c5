"""Build Her2Alert v2 records (docs/design.md, her2-rules.md section 8).

`alert_id` is the identity of a finding about a patient: uuid5 of a fixed namespace and the
name `patient_id \\x1f code` (PATIENT scope) or `patient_id \\x1f code \\x1f accession_id`
(REPORT scope), UTF-8. It is stable across reports, rule versions, restarts and re-openings;
`revision` counts its publications.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from consumer.clinical.model import REPORT, RETRACTED, Event, Record, scope_of
from consumer.clinical.rules import Rule, RuleSet

# Fixed namespace: alert ids must stay stable across releases and instances.
ALERT_NAMESPACE_V2 = "0b0f3c1e-6a52-5d1b-9c47-4b8e2f61a7d3"
_NAMESPACE_BYTES = bytes.fromhex(ALERT_NAMESPACE_V2.replace("-", ""))


def alert_id(patient_id: str, code: str, accession_id: str | None = None) -> str:
    """The finding's id: exactly `uuid.uuid5(UUID(ALERT_NAMESPACE_V2), name)` with the name
    above, formatted without building a UUID object (this runs for every alert)."""
    name = (
        f"{patient_id}\x1f{code}"
        if accession_id is None
        else (f"{patient_id}\x1f{code}\x1f{accession_id}")
    )
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()  # noqa: S324
    # the first 16 bytes, version 5 (byte 6's high nibble: hex digit 12) and the RFC 4122
    # variant (byte 8's two high bits 10: hex digit 16), as hex digits
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# a hex digit whose two high bits become 10 (the variant): (d & 0x3) | 0x8
_VARIANT = {d: f"{(int(d, 16) & 0x3) | 0x8:x}" for d in "0123456789abcdef"}


def alert_record(
    rule: Rule,
    ruleset: RuleSet,
    event: Event,
    *,
    revision: int,
    status: str,
    severity: str,
    rule_version: int,
    accession_id: str,
    category: str,
    detail: str,
    created_at: dt.datetime,
) -> Record:
    """One Her2Alert v2 record published by the evaluation of `event`."""
    scope = scope_of(rule.code)
    return {
        "alert_id": alert_id(
            event["patient_id"], rule.code, accession_id if scope == REPORT else None
        ),
        "revision": revision,
        "alert_type": rule.alert_type,
        "code": rule.code,
        "scope": scope,
        "status": status,
        "rule_id": rule.rule_id,
        "rule_version": rule_version,
        "severity": severity,
        "patient_id": event["patient_id"],
        "accession_id": accession_id,
        "event_id": event["event_id"],
        "her2_category": category,
        "title": rule.title,
        "detail": detail,
        "recommendation": rule.recommendation,
        "evidence": list(ruleset.evidence_text(rule)),
        "ruleset_version": ruleset.version,
        "created_at": created_at,
        "event_time": event.get("event_time"),
    }


def closing_detail(status: str, event: Event) -> str:
    """The detail of a RESOLVED or RETRACTED record: which report ended the finding."""
    if status == RETRACTED:
        why = "withdrew or corrected the data this finding rested on"
        word = "Retracted"
    else:
        why = "brought new information under which the finding no longer holds"
        word = "Resolved"
    return (
        f"{word}: report {event['report_status']} of accession {event['accession_id']} "
        f"(event {event['event_id']}) {why}."
    )
