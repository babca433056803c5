"""A history rebuilt from the input, reconciled with what the alert topics already say
(`her2-consumer rebuild-history`, README "If the changelog topic is lost").

Rebuilding a lost changelog by replaying the input numbers every finding's revisions from 1
again. Readers keep the highest revision per alert_id (design.md), so when the first run's
records were published under another rule set, the replay's later records fall under revisions
the readers already hold and are dropped: a retraction among them leaves a T-DXd eligibility
alert open downstream (an audit measured it). A rebuild publishes nothing while it replays;
then, per alert_id, it compares the replay's last record with the highest revision on the
alert topics ("held") and publishes only what differs, numbered above what is held (at the
replay's own revision when that is already above: as an uninterrupted run numbered it), and
the rebuilt state continues above what was published, so every later record is one the
readers keep and (alert_id, revision) stays unique.

Pure: the records in, the records to publish and the revisions the state must carry out.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from consumer.clinical.model import ACTIVE, PATIENT, RESOLVED, Record
from consumer.clinical.patient import Accession, AlertState, PatientState

# What a reader acts on: an ACTIVE record with other values of these is a change, published as
# a new revision (as the service publishes a finding whose content changed). Left out: the
# identity and numbering, the report and times of the evaluation that published it, the rule
# set's version (a release without a change to this rule leaves the finding as it was) and
# the accession and category of the patient's current report (not part of a finding's content
# in the service either: patient.py's digest).
CONTENT: Final = (
    "alert_type",
    "code",
    "scope",
    "rule_id",
    "rule_version",
    "severity",
    "title",
    "detail",
    "recommendation",
    "evidence",
)

# The detail of the RESOLVED record published for a finding held ACTIVE that the rebuilt
# history does not raise (a rule the rule set no longer has, or whose criteria changed).
NOT_RAISED: Final = (
    "Resolved: the patient's history, rebuilt from the input topic under rule set {ruleset}, "
    "no longer raises this finding."
)

SAME, CHANGED, NEW, CLOSED_NOT_RAISED, UNCHANGED_CLOSED, NOT_PUBLISHED = (
    "same",
    "changed",
    "new",
    "closed-not-raised",
    "held-closed-not-raised",
    "rebuilt-closed-never-held",
)


@dataclass(frozen=True, slots=True)
class Floor:
    """The revision a finding's state must carry after the rebuild, and where it lives."""

    patient_id: str
    code: str
    scope: str
    accession_id: str
    severity: str
    revision: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What a rebuild publishes and the revisions its state carries, with a count per outcome
    (SAME, CHANGED, ...)."""

    publish: list[Record]
    floors: list[Floor]
    outcomes: Mapping[str, int]


def same(held: Mapping[str, object], rebuilt: Mapping[str, object]) -> bool:
    """Whether a reader holding `held` already shows what `rebuilt` says: both closed
    (RESOLVED or RETRACTED: nothing for a care team to act on either way), or both ACTIVE with
    the same content."""
    if held["status"] != ACTIVE and rebuilt["status"] != ACTIVE:
        return True
    if held["status"] != rebuilt["status"]:
        return False
    return all(held.get(name) == rebuilt.get(name) for name in CONTENT)


def plan(
    held: Mapping[str, Record],
    rebuilt: Mapping[str, Record],
    *,
    ruleset_version: str,
    now: dt.datetime,
) -> Plan:
    """Per alert_id: `held`, the highest revision on the alert topics; `rebuilt`, the last
    record the replay of the whole input would have published.

    - both, `same`: nothing published; the state continues at the higher of the two revisions;
    - both, differing: the rebuilt record at its own revision if that is above the held one
      (nobody holds it: the revision an uninterrupted run gave it), else just above the held;
    - rebuilt only: published if ACTIVE (nobody holds it), else nothing;
    - held only, ACTIVE: RESOLVED above it (NOT_RAISED); held only, closed: nothing. The state
      keeps the finding closed at that revision, so a later opening is numbered above it."""
    publish: list[Record] = []
    floors: list[Floor] = []
    outcomes: collections.Counter[str] = collections.Counter()
    for aid in sorted(held.keys() | rebuilt.keys()):
        h, r = held.get(aid), rebuilt.get(aid)
        if r is not None and h is not None:
            top = max(h["revision"], r["revision"])
            if same(h, r):
                outcome, revision = SAME, top
            else:
                outcome, revision = CHANGED, max(h["revision"] + 1, r["revision"])
                publish.append({**r, "revision": revision, "created_at": now})
            floors.append(_floor(r, revision))
        elif r is not None:
            outcome = NEW if r["status"] == ACTIVE else NOT_PUBLISHED
            if outcome == NEW:
                publish.append({**r, "created_at": now})
            floors.append(_floor(r, r["revision"]))
        elif h is not None:
            if h["status"] == ACTIVE:
                outcome, revision = CLOSED_NOT_RAISED, h["revision"] + 1
                publish.append(
                    {
                        **h,
                        "revision": revision,
                        "status": RESOLVED,
                        "detail": NOT_RAISED.format(ruleset=ruleset_version),
                        "ruleset_version": ruleset_version,
                        "created_at": now,
                    }
                )
            else:
                outcome, revision = UNCHANGED_CLOSED, h["revision"]
            floors.append(_floor(h, revision))
        outcomes[outcome] += 1
    return Plan(publish, floors, dict(outcomes))


def _floor(record: Mapping[str, object], revision: int) -> Floor:
    return Floor(
        str(record["patient_id"]),
        str(record["code"]),
        str(record["scope"]),
        str(record["accession_id"]),
        str(record["severity"]),
        revision,
    )


def with_floors(
    state: PatientState | None, patient_id: str, floors: Iterable[Floor]
) -> tuple[PatientState, frozenset[str | None]]:
    """The patient's state with every finding at least at its floor's revision (open or closed
    as the rebuild left it), a finding it does not hold added closed at its floor; and the parts
    changed (None: the patient-wide part, else accession ids)."""
    state = state or PatientState(patient_id)
    own = dict(state.alerts)
    accessions = dict(state.accessions)
    changed: set[str | None] = set()
    for floor in floors:
        if floor.scope == PATIENT:
            if _raise(own, floor):
                changed.add(None)
            continue
        acc = accessions.get(floor.accession_id) or Accession(floor.accession_id)
        alerts = dict(acc.alerts)
        if _raise(alerts, floor):
            accessions[floor.accession_id] = dataclasses.replace(acc, alerts=alerts)
            changed.add(floor.accession_id)
    if not changed:
        return state, frozenset()
    return (
        PatientState(state.patient_id, state.seq, own, accessions),
        frozenset(changed),
    )


def without_emitted(state: PatientState) -> tuple[PatientState, frozenset[str | None]]:
    """The state without what its accessions' latest reports published (`emitted`, published
    again if such a report is delivered again): the replay's records, whose revisions, times,
    event ids and categories are not those readers hold, so a re-sent report would repeat
    (alert_id, revision) pairs with other content. After a rebuild nothing of it is left
    unpublished. And the accessions changed."""
    accessions = dict(state.accessions)
    changed = frozenset(acc_id for acc_id, acc in accessions.items() if acc.emitted)
    if not changed:
        return state, frozenset()
    for acc_id in changed:
        accessions[acc_id] = dataclasses.replace(accessions[acc_id], emitted=())
    return PatientState(state.patient_id, state.seq, state.alerts, accessions), changed


def _raise(alerts: dict[str, AlertState], floor: Floor) -> bool:
    """Put `floor` into `alerts` (code -> state); whether anything changed. A finding the state
    lacks (held only) is added closed at the floor's revision, so a later opening is numbered
    above what readers hold."""
    known = alerts.get(floor.code)
    if known is None:
        alerts[floor.code] = AlertState(floor.code, floor.revision, False, floor.severity, "", ())
        return True
    if known.revision >= floor.revision:
        return False
    alerts[floor.code] = dataclasses.replace(known, revision=floor.revision)
    return True
