"""The patient aggregate (docs/her2-rules.md section 8): (patient state, report) -> (new state,
classification, alert records to publish).

Pure: no Kafka, no store, no clock reads (the caller passes `now`). The state is immutable;
`step` returns a new one and the names of the parts it changed (the patient-wide part, None,
and accession ids), so a store rewrites only those.

Alerts are findings about a patient. A REPORT-scoped code (every DG-* code, RT-PREANALYTIC,
RT-IHC-ISH-DISCORDANT) is about one accession's latest report; every other code is PATIENT
scoped and is evaluated over the patient's samples, current category, HR status and clinical
context. A finding is published when it opens, when its content (severity, rule version, the
values of the facts its rule reads) changes, and when it stops holding: RETRACTED when a
CANCELLED or CORRECTED report of an accession it rested on ended it, otherwise RESOLVED.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring_ascii,
)
from typing import Any, Final

from consumer.clinical.alerts import alert_record, closing_detail
from consumer.clinical.classify import HR_UNKNOWN, SampleClass, classify_sample, hr_status
from consumer.clinical.facts import (
    CONTEXT_FACTS,
    LOW_ONLY,
    LOW_OR_ULTRALOW,
    Sample,
    context_facts,
    derive,
    discordant_pair,
    latest_decisive,
    latest_of,
    recency,
    specimen_site,
)
from consumer.clinical.model import (
    ACTIVE,
    CANCELLED,
    FINAL_REPORTS,
    MISSING,
    PATIENT,
    REPORT,
    RESOLVED,
    RETRACTED,
    Event,
    Record,
)
from consumer.clinical.rules import Rule, RuleSet
from consumer.clinical.therapies import normalise_therapies
from consumer.errors import InvalidEvent
from consumer.resources import PATHOLOGY_RESULT, raw_schema

MAX_SEEN_EVENT_IDS = 20

OPENED, UPDATED, RESOLVED_T, RETRACTED_T = "opened", "updated", "resolved", "retracted"

# Which facts rest on which part of the patient state (for a finding's basis, section 8):
# the current sample, the HR status, the clinical context, or named samples.
_CURRENT_FACTS = frozenset(
    {
        "category",
        "her2_negative",
        "ihc_score",
        "ish_group",
        "unscored_or_negative",
        "triple_negative",
    }
)
_HR_FACTS = frozenset(
    {"hr_status", "hr_positive", "er_low_only", "triple_negative", "tdxd_db06_her2_condition"}
)
# the facts read from the clinical context: derive's context group and the disease setting
_CONTEXT_FACTS = CONTEXT_FACTS | {"disease_setting", "advanced"}
_LOW_FACTS = frozenset({"low_sample", "low_sample_is_primary", "tdxd_db04_her2_condition"})
_LOW_ULTRALOW_FACTS = frozenset(
    {"low_or_ultralow_sample", "low_or_ultralow_sample_is_primary", "tdxd_db06_her2_condition"}
)
_PAIR_FACTS = frozenset({"discordance_detail", "samples_discordant"})
_CONVERSION_FACTS = frozenset({"conversion_detail", "her2_conversion"})
_DECISIVE_FACTS = frozenset({"latest_decisive_sample", "all_decisive_zero"})
_CONTEXT_DATES = (
    "adjuvant_chemotherapy_end_date",
    "perioperative_anti_her2_end_date",
    "recurrence_date",
)


# A finding that holds: (severity, its content's fact values, and, when they differ from the
# content's, the fired codes that releases before 2026.12-3 put in its digest: see _fired)
_Fired = tuple[str, dict[str, Any], list[str] | None]


@dataclass(frozen=True, slots=True)
class AlertState:
    """A finding's publication state: last revision, open or closed, content digest, basis."""

    code: str
    revision: int
    open: bool
    severity: str
    digest: str
    basis: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Published:
    """One alert record an event published, compact: re-rendered on redelivery."""

    code: str
    accession_id: str
    revision: int
    status: str
    transition: str
    severity: str
    rule_version: int
    her2_category: str
    facts: str | None  # canonical JSON of the content's fact values (ACTIVE records)
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AcceptedReport:
    """The latest accepted (final or cancelled) report of an accession, as classified facts."""

    event_id: str
    event_time: dt.datetime | None
    report_status: str
    seq: int
    seen_event_ids: tuple[str, ...]
    site: str
    collection_date: dt.date | None
    category: str
    has_her2_test: bool
    hr_status: str | None  # None: the report carries neither ER nor PR
    er_low_only: bool
    context: str | None  # JSON of the clinical_context last carried by a final report
    context_seq: int
    # digest of the report's content (_content_digest); None: stored before 2026.12-3
    content: str | None = None

    @property
    def final(self) -> bool:
        """FINAL, AMENDED or CORRECTED (not CANCELLED)."""
        return self.report_status in FINAL_REPORTS


@dataclass(frozen=True, slots=True)
class PriorEntry:
    """A `prior_her2_results` entry for an accession, carried by another accession's report."""

    carrier: str
    seq: int
    site: str
    collection_date: dt.date | None
    category: str


@dataclass(frozen=True, slots=True)
class Accession:
    """One accession of a patient: its report, a prior entry for it, its REPORT findings and
    what its latest event published."""

    accession_id: str
    report: AcceptedReport | None = None
    prior: PriorEntry | None = None
    alerts: Mapping[str, AlertState] = field(default_factory=dict)
    emitted: tuple[Published, ...] = ()


@dataclass(frozen=True, slots=True)
class PatientState:
    """A patient's state: the patient-wide part (seq, PATIENT findings) and the accessions."""

    patient_id: str
    seq: int = 0
    alerts: Mapping[str, AlertState] = field(default_factory=dict)
    accessions: Mapping[str, Accession] = field(default_factory=dict)

    def open_alerts(self) -> int:
        """Findings whose latest publication is ACTIVE."""
        own = sum(1 for a in self.alerts.values() if a.open)
        return own + sum(
            1 for acc in self.accessions.values() for a in acc.alerts.values() if a.open
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What one report did: the new state, the parts it changed (None = the patient-wide part),
    the classification, the alert records to publish and their transitions."""

    state: PatientState
    changed: frozenset[str | None]
    classification: Record
    alerts: list[Record]
    transitions: list[str]


@dataclass(frozen=True, slots=True)
class _View:
    """The patient as section 8 sees it after a report: samples, current sample, HR, context."""

    samples: list[Sample]
    current: Sample | None
    hr: tuple[str, bool]
    hr_accession: str | None
    context: dict[str, Any]
    context_accession: str | None
    context_text: str | None  # the stored JSON `context` was read from (None: no context)


def step(  # noqa: PLR0917 - the inputs of one transition, in order
    state: PatientState | None,
    event: Event,
    ruleset: RuleSet,
    classification: Record,
    sc: SampleClass,
    now: dt.datetime,
) -> Step:
    """Apply one validated report to the patient's state (section 8)."""
    pid, acc, event_id = event["patient_id"], event["accession_id"], event["event_id"]
    state = state or PatientState(pid)
    status = event["report_status"]
    if status not in FINAL_REPORTS and status != CANCELLED:  # PRELIMINARY: classified only
        return Step(state, frozenset(), classification, [], [])
    entry = state.accessions.get(acc)
    report = entry.report if entry is not None else None
    if report is not None:
        if event_id == report.event_id and entry is not None:  # redelivery: the same records
            if _reused_id(report.content, _content_digest(event)):
                raise InvalidEvent(REASON_EVENT_ID_REUSED, EVENT_ID_REUSED)
            rendered = [_rerender(p, ruleset, event) for p in entry.emitted]
            kept = [(r, p.transition) for r, p in zip(rendered, entry.emitted, strict=True) if r]
            return Step(
                state, frozenset(), classification, [r for r, _ in kept], [t for _, t in kept]
            )
        if event_id in report.seen_event_ids or _older(event, report):
            return Step(state, frozenset(), classification, [], [])  # stale: changes nothing
    content = _content_digest(event)
    if report is not None and entry is not None and _same_content(report.content, content):
        return _resent(state, entry, report, event, classification)
    seq = state.seq + 1
    accessions = dict(state.accessions)
    changed: set[str | None] = {None, acc}
    # The state's dataclasses are built field by field below rather than with
    # dataclasses.replace: this runs several times per event and replace costs ~3x as much.
    new_report = _accepted(event, sc, seq, report, content)
    accessions[acc] = (
        Accession(acc, report=new_report)
        if entry is None
        else Accession(entry.accession_id, new_report, entry.prior, entry.alerts)
    )
    if status == CANCELLED:
        for other, a in state.accessions.items():  # entries it carried leave with it
            if a.prior is not None and a.prior.carrier == acc:
                accessions[other] = replace(accessions[other], prior=None)
                changed.add(other)
    else:
        for other, prior in _priors(event, acc, seq):
            old = accessions.get(other)
            accessions[other] = (
                Accession(other, prior=prior)
                if old is None
                else Accession(old.accession_id, old.report, prior, old.alerts, old.emitted)
            )
            changed.add(other)
    view = _view(accessions)
    emit = _Emitter(ruleset, event, now)

    # REPORT codes of this accession: with the patient's HR status and context at this moment.
    report_fired = (
        {}
        if status == CANCELLED
        else _fired(
            ruleset,
            derive(
                {**event, "clinical_context": view.context},
                sc,
                (),
                view.hr,
                wanted=ruleset.reads(REPORT),
            ),
            REPORT,
        )
    )
    own = accessions[acc]
    own_alerts = emit.transitions(
        own.alerts, report_fired, REPORT, acc, sc.category, lambda _rule: (acc,)
    )
    # PATIENT codes: over samples, current category, HR status and context.
    patient_fired: dict[str, _Fired] = {}
    if view.samples or view.context:
        patient_fired = _fired(ruleset, _patient_facts(event, view, ruleset), PATIENT)
    current_acc = _current_report(view) or acc
    current_cat = view.current.category if view.current else MISSING
    patient_alerts = emit.transitions(
        state.alerts,
        patient_fired,
        PATIENT,
        current_acc,
        current_cat,
        _Basis(view),
    )
    published = emit.published
    accessions[acc] = Accession(
        own.accession_id, own.report, own.prior, own_alerts, tuple(published)
    )
    state = PatientState(state.patient_id, seq, patient_alerts, accessions)
    return Step(
        state, frozenset(changed), classification, emit.records, [p.transition for p in published]
    )


class _Emitter:
    """Compares fired findings with the open ones and collects what to publish."""

    def __init__(self, ruleset: RuleSet, event: Event, now: dt.datetime) -> None:
        self._ruleset = ruleset
        self._event = event
        self._now = now
        self.published: list[Published] = []
        self.records: list[Record] = []

    def transitions(  # noqa: PLR0917 - one call site per scope
        self,
        before: Mapping[str, AlertState],
        fired: Mapping[str, _Fired],
        scope: str,
        accession: str,
        category: str,
        basis_of: Callable[[Rule], set[str] | tuple[str, ...]],
    ) -> dict[str, AlertState]:
        """The section 8 transition table for every code of `scope`; returns the new states."""
        after = dict(before)
        event = self._event
        for rule in _candidates(self._ruleset, scope, before, fired):
            code = rule.code
            old = before.get(code)
            values = None
            if code in fired:
                severity, values, legacy_codes = fired[code]
                facts_json = _canonical(values)
                digest = _digest(severity, rule.version, facts_json)
                if old is not None and old.open and old.digest != digest and legacy_codes:
                    legacy = _canonical({**values, "fired_codes": legacy_codes})
                    if old.digest == _digest(severity, rule.version, legacy):
                        # the same content, digested as an earlier release did: nothing to
                        # publish; the state takes this release's digest
                        after[code] = AlertState(
                            code, old.revision, True, old.severity, digest, old.basis
                        )
                        continue
                if old is not None and old.open and old.digest == digest:
                    continue
                transition = UPDATED if old is not None and old.open else OPENED
                revision = (old.revision if old else 0) + 1
                basis = tuple(sorted(basis_of(rule)))
                after[code] = AlertState(code, revision, True, severity, digest, basis)
                pub = Published(
                    code,
                    accession,
                    revision,
                    ACTIVE,
                    transition,
                    severity,
                    rule.version,
                    category,
                    facts_json,
                    self._now,
                )
            elif old is not None and old.open:
                ended_by_withdrawal = (
                    event["report_status"] in (CANCELLED, "CORRECTED")
                    and event["accession_id"] in old.basis
                )
                status = RETRACTED if ended_by_withdrawal else RESOLVED
                revision = old.revision + 1
                after[code] = AlertState(
                    old.code, revision, False, old.severity, old.digest, old.basis
                )
                pub = Published(
                    code,
                    accession,
                    revision,
                    status,
                    RETRACTED_T if ended_by_withdrawal else RESOLVED_T,
                    old.severity,
                    rule.version,
                    category,
                    None,
                    self._now,
                )
            else:
                continue
            self.published.append(pub)
            self.records.append(_record(pub, rule, self._ruleset, event, values))
        return after


def _candidates(
    ruleset: RuleSet,
    scope: str,
    before: Mapping[str, AlertState],
    fired: Mapping[str, _Fired],
) -> Sequence[Rule]:
    """The rules of `scope` that can publish, in the scope's order: those whose code fired or
    is open (for every other code the transition table does nothing)."""
    rules = ruleset.scoped(scope)
    positions = ruleset.positions(scope)
    if positions is None:
        return rules
    # fired: codes of this scope, in its order (_fired); open codes that did not fire go between
    extra = [
        positions[code]
        for code, old in before.items()
        if old.open and code not in fired and code in positions
    ]
    if not extra:
        return [rules[positions[code]] for code in fired]
    return [rules[i] for i in sorted([*(positions[code] for code in fired), *extra])]


def _fired(ruleset: RuleSet, facts: dict[str, Any], scope: str) -> dict[str, _Fired]:
    """The rules of `scope` that fire: code -> (severity, content values, legacy codes).

    The content values are the facts the rule reads, plus `fired_codes` when its notes read
    some (the codes that fired among those: its rendered text depends on them). Codes its
    `when` or severity overrides read are not content: whether it holds and its severity
    are, so another code opening or closing does not re-publish it with the same text
    (section 8: content is severity, rule version and the values of the facts it reads).
    Legacy codes: every code it read that fired, when that differs from the content's: what
    releases before 2026.12-3 digested (an open finding stored then is not re-published for
    the change of digest alone)."""
    # RuleSet.evaluate(facts, ruleset.scoped(scope), details=False), inlined: no Fired objects
    out: dict[str, _Fired] = {}
    fired_codes: set[str] = set()
    for rule in ruleset.scoped(scope):
        depends_on = rule.depends_on
        frozen = frozenset(fired_codes) if depends_on else _NONE_FIRED
        if rule.when(facts, frozen):
            fired_codes.add(rule.code)
            severity = rule.severity_for(facts, frozen)
            values = {name: facts.get(name) for name in _sorted_reads(rule.reads)}
            legacy = None
            if frozen:
                shown = frozen & rule.text_depends_on
                if shown:
                    values["fired_codes"] = sorted(shown)
                used = frozen & depends_on
                if used != shown:
                    legacy = sorted(used)
            out[rule.code] = (severity, values, legacy)  # one rule per code (the loader checks)
    return out


_NONE_FIRED: frozenset[str] = frozenset()
# a rule's reads, sorted: the order of its content values (few distinct sets: one per rule)
_SORTED_READS: dict[frozenset[str], tuple[str, ...]] = {}


def _sorted_reads(reads: frozenset[str]) -> tuple[str, ...]:
    """sorted(reads), kept per set of names."""
    names = _SORTED_READS.get(reads)
    if names is None:
        names = _SORTED_READS[reads] = tuple(sorted(reads))
    return names


def _rerender(pub: Published, ruleset: RuleSet, event: Event) -> Record | None:
    """A stored publication again (redelivery), from its stored fact values (None if its rule
    left the rule set)."""
    rule = ruleset.rule_for(pub.code)
    if rule is None:
        return None
    values = json.loads(pub.facts) if pub.facts is not None else None
    return _record(pub, rule, ruleset, event, values)


def _record(
    pub: Published,
    rule: Rule,
    ruleset: RuleSet,
    event: Event,
    values: dict[str, Any] | None,
) -> Record:
    """The Her2Alert v2 record of a publication; `values`: its content's fact values (ACTIVE)."""
    if values is not None:
        fired = frozenset(values.get("fired_codes", ()))
        detail = rule.render_detail(values, fired)
    else:
        detail = closing_detail(pub.status, event)
    return alert_record(
        rule,
        ruleset,
        event,
        revision=pub.revision,
        status=pub.status,
        severity=pub.severity,
        rule_version=pub.rule_version,
        accession_id=pub.accession_id,
        category=pub.her2_category,
        detail=detail,
        created_at=pub.created_at,
    )


def _canonical(values: Mapping[str, Any]) -> str:
    return _CANONICAL_JSON(values)


def _digest(severity: str, rule_version: int, facts_json: str) -> str:
    raw = f"{severity}\x1f{rule_version}\x1f{facts_json}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def _older(event: Event, report: AcceptedReport) -> bool:
    """Stale: both carry event_time and the event's is earlier (section 8)."""
    new, old = event.get("event_time"), report.event_time
    return new is not None and old is not None and new < old


def _resent(
    state: PatientState,
    entry: Accession,
    report: AcceptedReport,
    event: Event,
    classification: Record,
) -> Step:
    """The accession's latest accepted report again under a new event id, its content unchanged:
    the same report re-sent. It becomes the accession's latest accepted report (its event id and
    event_time; the one it repeats is seen) and changes nothing else: the accession keeps its
    processing order and context position (section 8's ties go to the latest processed, and
    the clinical context to the latest processed final report that carries one: a re-send moved
    both), nothing is evaluated and nothing is published (design.md: never again while
    unchanged). A redelivery of it re-publishes what it published: nothing."""
    resent = replace(
        report,
        event_id=event["event_id"],
        # a re-send without event_time keeps the report's: else no later report of the
        # accession could be stale (_older needs both times), and a delayed older one would
        # change findings that the re-send ("nothing else") left as they were
        event_time=event.get("event_time") or report.event_time,
        seen_event_ids=(*report.seen_event_ids, report.event_id)[-MAX_SEEN_EVENT_IDS:],
    )
    accessions = dict(state.accessions)
    accessions[entry.accession_id] = Accession(
        entry.accession_id, resent, entry.prior, entry.alerts
    )
    after = PatientState(state.patient_id, state.seq, state.alerts, accessions)
    return Step(after, frozenset({entry.accession_id}), classification, [], [])


# design.md: event_id is "unique per published event". A record with the event_id of its
# accession's latest report is taken for a redelivery (its records published again), so one
# with other content is a second event under a reused id: before, the new report (an amended
# IHC 3+ in place of a 1+) was dropped without a word while its classification went out
# (measured by an integration audit). It is refused; the lab sends it again with a new id.
# (An older id of the accession, already replaced, cannot be told from a stale redelivery.)
# Only a digest taken under this release's input schema can tell: the event's shape follows the
# reader schema (an added optional field, another enum default change every digest), so a true
# redelivery across an upgrade would differ by shape alone; then the id keeps its old reading.
REASON_EVENT_ID_REUSED: Final = "event-id-reused"
EVENT_ID_REUSED: Final = (
    "event_id is the id of this accession's latest report, whose content differs: an event_id "
    "must be unique per published event; send the report again with a new event_id"
)

# Not content: the event's identity, its publication time and the system that published it
# (transport metadata, design.md); every other field is the report.
_NOT_CONTENT: Final = frozenset({"event_id", "event_time", "source_system"})


# The input schema the digests are taken under: 8 hex of its canonical JSON's SHA-256, the
# prefix of every digest stored since it was added ("<tag>:<digest>"; 2026.12-3 stored the
# digest alone).
_SCHEMA_TAG: Final = hashlib.sha256(
    json.dumps(raw_schema(PATHOLOGY_RESULT), sort_keys=True, separators=(",", ":")).encode()
).hexdigest()[:8]


def _content_digest(event: Event) -> str:
    """Digest of a report's content: every field of the validated event (schema-shaped: an
    absent optional field reads as null on both input paths) but _NOT_CONTENT, prefixed with
    the input schema's tag."""
    body = {name: value for name, value in event.items() if name not in _NOT_CONTENT}
    return f"{_SCHEMA_TAG}:{hashlib.sha256(_CANONICAL_JSON(body).encode()).hexdigest()[:24]}"


def _same_content(stored: str | None, digest: str) -> bool:
    """Whether a stored report's content digest is this event's (a 2026.12-3 digest, untagged,
    compares without the tag: an identical re-send is still recognised across the upgrade)."""
    if stored is None:
        return False
    return stored == (digest if ":" in stored else digest.partition(":")[2])


def _reused_id(stored: str | None, digest: str) -> bool:
    """Whether a record under the id of the stored report carries other content: told only by
    a digest taken under this input schema (else: a redelivery, as before)."""
    return stored is not None and stored.startswith(f"{_SCHEMA_TAG}:") and stored != digest


def _accepted(
    event: Event,
    sc: SampleClass,
    seq: int,
    before: AcceptedReport | None,
    content: str,
) -> AcceptedReport:
    """The accession's new latest report. Its context: the event's clinical_context if it
    carries one (final reports), else the one an earlier final report of the accession carried
    (POLICY); a cancelled accession carries none."""
    specimen = event.get("specimen")
    status = event["report_status"]
    er, pr = event.get("er"), event.get("pr")
    hr, er_low = hr_status(er, pr) if (er is not None or pr is not None) else (None, False)
    ctx = event.get("clinical_context")
    if status == CANCELLED:
        context, context_seq = None, 0
    elif ctx is not None:
        context, context_seq = _context_json(ctx), seq
    elif before is not None and before.final:
        context, context_seq = before.context, before.context_seq
    else:
        context, context_seq = None, 0
    seen: tuple[str, ...] = ()
    if before is not None:
        seen = (*before.seen_event_ids, before.event_id)[-MAX_SEEN_EVENT_IDS:]
    return AcceptedReport(
        event_id=event["event_id"],
        event_time=event.get("event_time"),
        report_status=status,
        seq=seq,
        seen_event_ids=seen,
        site=specimen_site(specimen),
        collection_date=specimen.get("collection_date") if specimen else None,
        category=sc.category,
        has_her2_test=event.get("her2_ihc") is not None or event.get("her2_ish") is not None,
        hr_status=hr,
        er_low_only=er_low,
        context=context,
        context_seq=context_seq,
        content=content,
    )


def _priors(event: Event, acc: str, seq: int) -> list[tuple[str, PriorEntry]]:
    """The prior entries a final report carries, keyed by their accession (entries without an
    accession are keyed by carrier and position; the current accession's own entry is
    superseded by the report itself)."""
    out = []
    for i, prior in enumerate(event.get("prior_her2_results") or ()):
        key = prior.get("accession_id") or f"{acc}{_UNNAMED_PRIOR}{i}"
        if key == acc:
            continue
        specimen = prior.get("specimen")
        sc = classify_sample(prior.get("her2_ihc"), prior.get("her2_ish"))
        out.append(
            (
                key,
                PriorEntry(
                    acc,
                    seq,
                    specimen_site(specimen),
                    specimen.get("collection_date") if specimen else None,
                    sc.category,
                ),
            )
        )
    return out


# A prior entry without an accession is keyed by its carrier, this and its position: an
# internal key, never shown (the sample is described by the report that listed it).
_UNNAMED_PRIOR: Final = "#prior-"


def _prior_accession(key: str, carrier: str) -> str | None:
    """The accession a prior entry was reported with: its key, or None for an entry reported
    without one (keyed `<carrier>#prior-<position>` by _priors)."""
    head, sep, position = key.partition(_UNNAMED_PRIOR)
    return None if sep and head == carrier and position.isdigit() else key


def _view(accessions: Mapping[str, Accession]) -> _View:
    """Samples, current sample, HR status and clinical context of the patient (section 8),
    from its accessions after the report."""
    own: list[Sample] = []
    tested: list[Sample] = []
    priors: list[Sample] = []
    hr_from: tuple[Sample, AcceptedReport] | None = None
    context_from: AcceptedReport | None = None
    context_acc: str | None = None
    for acc, a in accessions.items():
        r = a.report
        if r is not None:
            if not r.final:
                continue  # cancelled: gone in every form, prior entries for it included
            s = Sample(acc, r.site, r.collection_date, r.category, "history", r.seq)
            own.append(s)
            if r.has_her2_test:
                tested.append(s)
            if r.hr_status is not None and (hr_from is None or recency(s) > recency(hr_from[0])):
                hr_from = (s, r)
            if r.context is not None and (
                context_from is None or r.context_seq > context_from.context_seq
            ):
                context_from, context_acc = r, acc
        elif a.prior is not None:
            p = a.prior
            priors.append(
                Sample(
                    _prior_accession(acc, p.carrier),
                    p.site,
                    p.collection_date,
                    p.category,
                    "prior",
                    p.seq,
                    p.carrier,
                )
            )
    current = max(tested, key=recency) if tested else None
    hr = (
        (hr_from[1].hr_status or HR_UNKNOWN, hr_from[1].er_low_only)
        if hr_from
        else (HR_UNKNOWN, False)
    )
    context_text = context_from.context if context_from and context_from.context else None
    context = _context_load(context_text) if context_text else {}
    return _View(
        samples=[*own, *priors],
        current=current,
        hr=hr,
        hr_accession=hr_from[0].accession_id if hr_from else None,
        context=context,
        context_accession=context_acc,
        context_text=context_text,
    )


def _current_report(view: _View) -> str | None:
    """The accession PATIENT-scoped records carry (design.md: the patient's current report):
    the current sample's; when none of the patient's own final reports has a HER2 test (current
    category MISSING), the own final report with the most recently collected specimen (section
    8's ordering, as for HR status), never a cancelled one. None when the patient has no final
    report left (then only closing records are published, and they carry the accession of the
    report that ended them, which their detail names)."""
    if view.current is not None:
        return view.current.accession_id
    own = [s for s in view.samples if s.source == "history"]
    return max(own, key=recency).accession_id if own else None


def _patient_facts(event: Event, view: _View, ruleset: RuleSet) -> dict[str, Any]:
    """Facts for the PATIENT codes: the current sample stands for the event's own."""
    current = view.current or Sample(None, "UNKNOWN", None, MISSING, "history")
    others = [s for s in view.samples if s is not current]
    patient_event = {
        "event_id": event["event_id"],
        "patient_id": event["patient_id"],
        "accession_id": current.accession_id,
        "report_status": "FINAL",
        "specimen": {"site": current.site, "collection_date": current.collection_date},
        "clinical_context": view.context,
    }
    sc = SampleClass(current.category, "", None, None, None)
    return derive(
        patient_event,
        sc,
        others,
        view.hr,
        current=current,
        wanted=ruleset.reads(PATIENT),
        known_context_facts=_context_facts_of(view.context_text) if view.context_text else None,
    )


class _Basis:
    """The accessions whose reports supplied what a PATIENT finding rests on (section 8); what
    each group of facts rests on is worked out once per event, for every finding."""

    def __init__(self, view: _View) -> None:
        self._view = view
        self._groups: dict[int, set[str]] = {}

    def __call__(self, rule: Rule) -> set[str]:
        """The basis of one finding: the accessions of every group of facts its rule reads."""
        basis: set[str] = set()
        for i in _basis_groups(rule.reads):
            accessions = self._groups.get(i)
            if accessions is None:
                accessions = self._groups[i] = _BASIS_GROUPS[i][1](self._view)
            basis |= accessions
        return basis


# which of _BASIS_GROUPS a set of facts reads (few distinct sets: one per rule)
_GROUPS_READ: dict[frozenset[str], tuple[int, ...]] = {}


def _basis_groups(reads: frozenset[str]) -> tuple[int, ...]:
    """The positions in _BASIS_GROUPS of the groups that share a fact with `reads`, in order;
    kept per set of names (the groups are fixed)."""
    groups = _GROUPS_READ.get(reads)
    if groups is None:
        groups = _GROUPS_READ[reads] = tuple(
            i for i, (facts, _) in enumerate(_BASIS_GROUPS) if not reads.isdisjoint(facts)
        )
    return groups


def _named(*samples: Sample | None) -> set[str]:
    """The accessions of samples, and the carriers of those that are prior entries."""
    out: set[str] = set()
    for sample in samples:
        if sample is None:
            continue
        if sample.accession_id:
            out.add(sample.accession_id)
        if sample.carrier:
            out.add(sample.carrier)
    return out


# Each group of facts and the accessions it rests on: the current sample, the HR status, the
# clinical context, or the samples the facts name.
_BASIS_GROUPS: tuple[tuple[frozenset[str], Callable[[_View], set[str]]], ...] = (
    (_CURRENT_FACTS, lambda v: _named(v.current)),
    (_HR_FACTS, lambda v: {v.hr_accession} if v.hr_accession else set()),
    (_CONTEXT_FACTS, lambda v: {v.context_accession} if v.context_accession else set()),
    (_LOW_FACTS, lambda v: _named(latest_of(v.samples, LOW_ONLY))),
    (_LOW_ULTRALOW_FACTS, lambda v: _named(latest_of(v.samples, LOW_OR_ULTRALOW))),
    (_PAIR_FACTS, lambda v: _named(*(discordant_pair(v.samples) or ()))),
    (
        _CONVERSION_FACTS,
        lambda v: _named(*(discordant_pair(v.samples, crossing_positive=True) or ())),
    ),
    (_DECISIVE_FACTS, lambda v: _named(latest_decisive(v.samples))),
)


def _context_json(ctx: Mapping[str, Any]) -> str:
    """The context as stored: planned therapies as the HER2 drugs they name (all the rules read
    of them) and clinical flags once each, so a record stays small whatever the report's text."""
    compact = dict(ctx)
    compact["planned_therapies"] = sorted(normalise_therapies(ctx.get("planned_therapies") or ()))
    compact["clinical_flags"] = sorted(set(ctx.get("clinical_flags") or ()))
    return _CONTEXT_JSON(compact)


def _iso(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


# A value touching every setting the canonical JSON depends on (key order, separators, escapes,
# floats, nesting, the `default` hook): the C encoder built below must give json.dumps's text.
_JSON_PROBE: Final = {
    "b": [1, -2.5, 1e300, None, True, False, '\u00e9\u2028"\\\n', []],
    "a": {"z": {}, "y": "x"},
    "\u00e9": dt.datetime(2026, 12, 6, 1, 2, 3, tzinfo=dt.UTC),
}


def _json_encoder(
    default: Callable[[Any], Any], make: Callable[..., Any] | None = c_make_encoder
) -> Callable[[Any], str]:
    """json.dumps(value, sort_keys=True, separators=(",", ":"), default=default) of a value
    without cycles. JSONEncoder.encode builds the C encoder anew on every call (with a dict to
    detect cycles: the values encoded here come from decoded records and never hold one); the
    same C encoder, with the same settings, is built here once.

    `c_make_encoder` is CPython's private constructor (9 arguments; run here on 3.11): the alert
    ids and digests are hashes of this text, so a Python whose constructor takes other arguments
    or writes other text gets JSONEncoder.encode itself (slower, the same text), never
    different ids. Without the C accelerator: JSONEncoder.encode too."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=default)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    try:
        c_encode = make(
            None,  # no cycle check (JSONEncoder's check_circular=True only turns them into errors)
            encoder.default,
            encode_basestring_ascii,  # ensure_ascii=True
            None,  # indent
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )

        def encode(value: Any) -> str:
            return "".join(c_encode(value, 0))

        if encode(_JSON_PROBE) == encoder.encode(_JSON_PROBE):
            return encode
    except Exception:  # noqa: S110 - another signature: the public encoder below
        pass
    return encoder.encode


# What json.dumps(..., sort_keys=True, separators=(",", ":"), default=...) builds on every
# call, built once.
_CANONICAL_JSON = _json_encoder(str)
_CONTEXT_JSON = _json_encoder(_iso)


# Parsed contexts by their stored JSON: a patient's context is read back on each of its events,
# mostly unchanged. Bounded: the oldest entry leaves first.
_CONTEXTS: dict[str, dict[str, Any]] = {}
_CONTEXTS_MAX = 1024


def _context_load(text: str) -> dict[str, Any]:
    """The stored context as the rules read it (a fresh dict each call: callers own it)."""
    ctx = _CONTEXTS.get(text)
    if ctx is None:
        ctx = _context_parse(text)
        if len(_CONTEXTS) >= _CONTEXTS_MAX:
            _CONTEXTS.pop(next(iter(_CONTEXTS)), None)
        _CONTEXTS[text] = ctx
    return dict(ctx)


# context_facts() of the parsed contexts, by their stored JSON (bounded the same way)
_CONTEXT_FACTS_BY_TEXT: dict[str, dict[str, Any]] = {}


def _context_facts_of(text: str) -> Mapping[str, Any]:
    """context_facts(_context_load(text)), kept by the stored JSON (read only: not a copy)."""
    found = _CONTEXT_FACTS_BY_TEXT.get(text)
    if found is None:
        found = context_facts(_context_load(text))
        if len(_CONTEXT_FACTS_BY_TEXT) >= _CONTEXTS_MAX:
            _CONTEXT_FACTS_BY_TEXT.pop(next(iter(_CONTEXT_FACTS_BY_TEXT)), None)
        _CONTEXT_FACTS_BY_TEXT[text] = found
    return found


def _context_parse(text: str) -> dict[str, Any]:
    ctx: dict[str, Any] = json.loads(text)
    for name in _CONTEXT_DATES:
        if isinstance(ctx.get(name), str):
            ctx[name] = dt.date.fromisoformat(ctx[name])
    return ctx
