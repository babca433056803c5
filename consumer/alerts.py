"""Build Her2Alert records with deterministic ids (a redelivered event yields the same id)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

from consumer.model import ACTIVE, RETRACTED, Event, Record
from consumer.rules import Fired, RuleSet

# Fixed namespace: alert ids must stay stable across releases and instances.
ALERT_NAMESPACE = uuid.UUID("6f1c2a53-3f0e-5b7c-9d8e-2b4a1c0f9e11")


_NAMESPACE_BYTES = ALERT_NAMESPACE.bytes


def alert_id(event_id: str, rule_id: str, rule_version: int) -> str:
    """Deterministic id from the triggering event, the rule and the rule version.

    Exactly `uuid.uuid5(ALERT_NAMESPACE, name)`, formatted without building a UUID object
    (this runs for every alert on the hot path).
    """
    name = f"{event_id}\x1f{rule_id}\x1f{rule_version}".encode()
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])  # noqa: S324 - uuid5
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_alert(
    fired: Fired, ruleset: RuleSet, event: Event, category: str, created_at: dt.datetime
) -> Record:
    """One ACTIVE alert for a rule that fired on `event`."""
    rule = fired.rule
    return {
        "alert_id": alert_id(event["event_id"], rule.rule_id, rule.version),
        "alert_type": rule.alert_type,
        "code": rule.code,
        "status": ACTIVE,
        "rule_id": rule.rule_id,
        "rule_version": rule.version,
        "severity": fired.severity,
        "patient_id": event["patient_id"],
        "accession_id": event["accession_id"],
        "event_id": event["event_id"],
        "her2_category": category,
        "title": rule.title,
        "detail": fired.detail,
        "recommendation": rule.recommendation,
        "evidence": list(ruleset.evidence_text(rule)),
        "ruleset_version": ruleset.version,
        "created_at": created_at,
        "event_time": event.get("event_time"),
    }


def retraction(alert: dict[str, Any], event: Event, created_at: dt.datetime) -> Record:
    """The same alert (same id) re-published as RETRACTED because `event` no longer supports it."""
    return {
        **alert,
        "status": RETRACTED,
        "detail": f"Retracted: report {event['report_status']} (event {event['event_id']}) no "
        f"longer supports this alert. Original detail: {alert['detail']}",
        "created_at": created_at,
    }
