"""The pure middle of the service: event (+ patient state) -> classification and alerts.

No Kafka, no metrics, no clock reads except the injected one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from consumer.clinical.alerts import alert_record
from consumer.clinical.classify import SampleClass, classify_sample, guidance, hr_status
from consumer.clinical.facts import Sample, derive
from consumer.clinical.model import ACTIVE, FINAL_REPORTS, Event, Outcome, Record
from consumer.clinical.patient import PatientState, Step
from consumer.clinical.patient import step as patient_step
from consumer.clinical.rules import RuleSet


def utc_now() -> dt.datetime:
    """The wall clock, in UTC (the default clock of a Pipeline)."""
    return dt.datetime.now(dt.UTC)


class Pipeline:
    """Classify one validated event and evaluate the alert rules (with or without a patient)."""

    def __init__(self, ruleset: RuleSet, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.ruleset = ruleset
        self._clock = clock

    def classify(self, event: Event) -> Record:
        """The classification record of one validated event (no rules, no history)."""
        sc = classify_sample(event.get("her2_ihc"), event.get("her2_ish"))
        return self._classification(event, sc, hr_status(event.get("er"), event.get("pr")))

    def step(self, state: PatientState | None, event: Event) -> Step:
        """Apply one event to a patient's state (her2-rules.md section 8; None: a new patient)."""
        sc = classify_sample(event.get("her2_ihc"), event.get("her2_ish"))
        classification = self._classification(
            event, sc, hr_status(event.get("er"), event.get("pr"))
        )
        now = self._clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # Avro timestamp-millis
        return patient_step(state, event, self.ruleset, classification, sc, now)

    def process(self, event: Event, history: Iterable[Sample] = ()) -> Outcome:
        """Classification and alerts for one event as a patient of its own: every finding is
        new (ACTIVE, revision 1). `history`: extra samples of the patient, for rule tests;
        without it this is exactly `step(None, event)`."""
        history = list(history)
        if not history:
            done = self.step(None, event)
            return Outcome(done.classification, done.alerts, tuple(done.transitions))
        sc = classify_sample(event.get("her2_ihc"), event.get("her2_ish"))
        hr = hr_status(event.get("er"), event.get("pr"))
        classification = self._classification(event, sc, hr)
        if event.get("report_status") not in FINAL_REPORTS:
            return Outcome(classification, [])
        facts = derive(event, sc, history, hr)
        now = self._clock()
        alerts = []
        for fired in self.ruleset.evaluate(facts):
            rule = fired.rule
            alerts.append(
                alert_record(
                    rule,
                    self.ruleset,
                    event,
                    revision=1,
                    status=ACTIVE,
                    severity=fired.severity,
                    rule_version=rule.version,
                    accession_id=event["accession_id"],
                    category=sc.category,
                    detail=fired.detail,
                    created_at=now,
                )
            )
        return Outcome(classification, alerts, tuple("opened" for _ in alerts))

    def _classification(self, event: Event, sc: SampleClass, hr_er_low: tuple[str, bool]) -> Record:
        ctx = event.get("clinical_context") or {}
        hr, er_low = hr_er_low
        assessment = sc.ish
        return {
            "event_id": event["event_id"],
            "patient_id": event["patient_id"],
            "accession_id": event["accession_id"],
            "report_status": event["report_status"],
            "category": sc.category,
            "ihc_score": sc.ihc_score,
            "ish_group": assessment.group if assessment else None,
            "ish_result": assessment.result if assessment else None,
            "decided_by": sc.row,
            "hr_status": hr,
            "er_low": er_low,
            "guidance": guidance(
                sc.category, ctx.get("disease_setting"), hr, ctx.get("menopausal_status")
            ),
            "ruleset_version": self.ruleset.version,
            "event_time": event.get("event_time"),
        }
