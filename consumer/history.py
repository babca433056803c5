"""Per-patient HER2 memory and the report lifecycle (docs/design.md, her2-rules.md 1 and 5.5).

The store keeps each patient's committed state as an encoded `PatientHistory` record (the
Avro shape of schemas/patient_history.avsc; in the service, the changelog record's value), one
store per owned partition, in a backend of consumer/statestore.py: a dict of bytes ("memory",
offline runs and tests) or a sqlite file that is a disposable cache of the compacted changelog
("disk", the service's default: memory then stays flat however many patients a partition
holds). The changelog stays the source of truth; see the README's state model.

Lifecycle per accession:
- a redelivered event (same event_id as the accession's last) re-emits exactly what it emitted;
  an older event id of the accession, or an event older than the stored one, changes nothing;
- FINAL / AMENDED / CORRECTED: the sample is replaced; alerts that fire are published; earlier
  ACTIVE alerts of the accession whose rule no longer fires are re-published RETRACTED;
- CANCELLED: the sample leaves the patient's samples and every ACTIVE alert is RETRACTED;
- PRELIMINARY: classified and remembered (not used as a sample for rules), no alerts.

Size (B3 of docs/fault-report.md): an accession entry stores each alert once (`emitted`: what
its last event published; `active`: only alerts of its earlier events still ACTIVE) and cuts a
stored detail at MAX_STORED_DETAIL characters, so a patient's record grows linearly with its
accessions. The one visible effect: an alert whose detail is longer than that is re-emitted
(redelivery) and retracted with the cut detail; its id and every other field are unchanged.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol, cast

import fastavro

from consumer.alerts import retraction
from consumer.facts import Sample, specimen_site
from consumer.model import ACTIVE, FINAL_REPORTS, Event, Outcome, Record
from consumer.pipeline import Pipeline, utc_now
from consumer.resources import PATIENT_HISTORY, parsed_schema
from consumer.statestore import CommittedStates, MemoryStates

MAX_SEEN_EVENT_IDS = 20
# Characters of an alert's `detail` the history keeps (B3 of docs/fault-report.md). Details
# that list a patient's discordant sample pairs grow with the square of the patient's samples,
# and every accession keeps copies of its alerts (to re-emit them and to retract them), so
# without a cap a patient's history grew with the cube of its accessions. Real alerts stay far
# below this (the longest seen in synthetic runs: under 900 characters).
MAX_STORED_DETAIL = 2_000
_CUT = " [...]"


class HistoryCodec(Protocol):
    """How a store keeps its patients' states: as bytes (the changelog's value in the service)."""

    def encode(self, state: Record) -> bytes:
        """The bytes of a PatientHistory state."""

    def decode(self, value: bytes) -> Record:
        """The PatientHistory state of `value`."""


class SchemalessCodec:
    """Plain Avro binary of schemas/patient_history.avsc (offline runs and tests)."""

    def __init__(self) -> None:
        self._schema = parsed_schema(PATIENT_HISTORY)

    def encode(self, state: Record) -> bytes:
        fo = io.BytesIO()
        fastavro.schemaless_writer(fo, self._schema, state)
        return fo.getvalue()

    def decode(self, value: bytes) -> Record:
        return cast(Record, fastavro.schemaless_reader(io.BytesIO(value), self._schema, None))


class Checkpoint(NamedTuple):
    """A patient's state before one event (HistoryStore.checkpoint / roll_back)."""

    patient_id: str
    live: Record | None  # the uncommitted state then (None: the committed bytes were current)


class HistoryStore:
    """The HER2 history of the patients of one partition (or of one offline run).

    Committed states are kept encoded (`codec`; in the service, the changelog record's value),
    not as Python objects, in `states` (consumer/statestore.py; default: in memory): a million
    patients' dicts would cost several GB and garbage-collector passes of hundreds of
    milliseconds (measured: 374 ms at 50,000 patients). Patients changed since the last
    `take_dirty()` are held decoded in memory ("live") so a batch decodes each patient once.
    """

    def __init__(
        self,
        retention: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        codec: HistoryCodec | None = None,
        states: CommittedStates | None = None,
    ) -> None:
        self._codec: HistoryCodec = codec or SchemalessCodec()
        self._states: CommittedStates = MemoryStates() if states is None else states
        self._live: dict[str, Record] = {}  # changed since the last take_dirty()
        self._retention = retention
        self._clock = clock

    def __len__(self) -> int:
        """Patients held: the committed ones (a running total) plus the live ones new since
        (a scan of the live states only: the service reads it between batches, when there
        are none)."""
        new = sum(1 for pid in self._live if self._states.accessions_of(pid) is None)
        return self._states.patients + new

    def accession_count(self) -> int:
        """Accessions held, across patients (the store's size), counted as __len__ is."""
        live = self._live.items()
        changed = sum(len(s["accessions"]) - (self._states.accessions_of(p) or 0) for p, s in live)
        return self._states.accessions + changed

    def encoded_bytes(self) -> int:
        """Bytes of the committed encoded states (in memory or on disk, by the backend)."""
        return self._states.size

    def close(self) -> None:
        """Release the committed states (a disk store deletes its file); idempotent."""
        self._live.clear()
        self._states.close()

    def restore(self, patient_id: str, state: Record | None, encoded: bytes | None = None) -> None:
        """Load one changelog record (None = tombstone); `encoded`: its value, if at hand."""
        self._live.pop(patient_id, None)
        if state is None:
            self._states.delete(patient_id)
        else:
            value = self._codec.encode(state) if encoded is None else encoded
            self._states.put(patient_id, value, len(state["accessions"]))

    def get(self, patient_id: str) -> Record | None:
        """The history of a patient (a decoded copy unless changed since take_dirty), or None."""
        live = self._live.get(patient_id)
        if live is not None:
            return live
        encoded = self._states.get(patient_id)
        return None if encoded is None else self._codec.decode(encoded)

    def take_dirty(self) -> list[tuple[str, bytes]]:
        """The patients changed since the last call, with their encoded state (to publish)."""
        changed = [(pid, self._codec.encode(self._live[pid])) for pid in sorted(self._live)]
        self._states.put_many(
            (pid, encoded, len(self._live[pid]["accessions"])) for pid, encoded in changed
        )
        self._live.clear()
        return changed

    def checkpoint(self, patient_id: str) -> Checkpoint:
        """The patient's state now, to put back with roll_back() if an event fails (apply()
        never mutates a state it was given, so a reference is enough)."""
        return Checkpoint(patient_id, self._live.get(patient_id))

    def roll_back(self, checkpoint: Checkpoint) -> None:
        """Put the patient's state back as it was at `checkpoint`."""
        if checkpoint.live is None:
            self._live.pop(checkpoint.patient_id, None)
        else:
            self._live[checkpoint.patient_id] = checkpoint.live

    def samples(self, patient_id: str, exclude_accession: str) -> list[Sample]:
        """The patient's remembered final samples other than `exclude_accession`."""
        return _samples(self.get(patient_id), exclude_accession)

    def apply(self, event: Event, pipeline: Pipeline) -> Outcome:
        """Process one validated event with the patient's history and remember the result."""
        pid, accession, event_id = event["patient_id"], event["accession_id"], event["event_id"]
        state = self.get(pid)
        entry = _find(state, accession)
        if entry is not None and _is_stale(entry, event):
            emitted = entry["emitted"] if entry["event_id"] == event_id else []
            return Outcome(pipeline.classify(event), list(emitted))
        status = event["report_status"]
        now = self._clock()
        previous = [] if entry is None else active_alerts(entry)
        if status == "CANCELLED":
            outcome = pipeline.process(event)
            emitted = [retraction(a, event, now) for a in previous]
            kept: list[Record] = []
        elif status == "PRELIMINARY" and entry is not None and entry["report_status"] in FINAL_REPORTS:
            return Outcome(pipeline.classify(event), [])  # never replaces a final report
        else:
            outcome = pipeline.process(event, _samples(state, accession))
            firing = {a["rule_id"] for a in outcome.alerts}
            kept = [a for a in previous if a["rule_id"] in firing]
            retracted = [retraction(a, event, now) for a in previous if a["rule_id"] not in firing]
            emitted = [*outcome.alerts, *retracted]
        self._remember(pid, state, entry, event, outcome, emitted, kept, now)
        return Outcome(outcome.classification, emitted)

    def _remember(
        self,
        pid: str,
        state: Record | None,
        entry: Record | None,
        event: Event,
        outcome: Outcome,
        emitted: list[Record],
        kept: list[Record],
        now: dt.datetime,
    ) -> None:
        """Store the event's sample and alerts. `emitted` (what the event published) is kept
        to re-emit on redelivery; `active` holds only the alerts of earlier events of the
        accession that stay ACTIVE (`kept`): the event's own ACTIVE alerts are in `emitted`
        and not stored twice (see `active_alerts`). Details are cut (`_stored`).

        Copy on write: the patient's record, its accession list and the changed entry are new
        objects, so the state before the event stays intact for `checkpoint()` at no cost."""
        accessions = [] if state is None else list(state["accessions"])
        state = {"patient_id": pid, "accessions": accessions} if state is None else dict(state)
        state["accessions"] = accessions
        if entry is None:
            entry = {"accession_id": event["accession_id"], "seen_event_ids": []}
            accessions.append(entry)
        else:
            at = next(i for i, a in enumerate(accessions) if a is entry)
            entry = accessions[at] = dict(entry)
            if entry.get("event_id"):
                seen = [*entry["seen_event_ids"], entry["event_id"]]
                entry["seen_event_ids"] = seen[-MAX_SEEN_EVENT_IDS:]
        specimen = event.get("specimen")
        entry.update(
            event_id=event["event_id"],
            event_time=event.get("event_time"),
            report_status=event["report_status"],
            site=specimen_site(specimen),
            collection_date=specimen.get("collection_date") if specimen else None,
            category=outcome.classification["category"],
            emitted=[_stored(a) for a in emitted],
            active=[_stored(a) for a in kept],
        )
        state["updated_at"] = now
        self._expire(state, now)
        self._live[pid] = state

    def _expire(self, state: Record, now: dt.datetime) -> None:
        """Drop accessions older than the retention (by event time) with no ACTIVE alerts."""
        if self._retention is None:
            return
        cutoff = now - self._retention
        state["accessions"] = [
            a
            for a in state["accessions"]
            if active_alerts(a) or a["event_time"] is None or a["event_time"] >= cutoff
        ]

    def patients(self) -> Iterator[tuple[str, Record]]:
        """Every (patient_id, state) held, decoded."""
        for pid in sorted(set(self._states.ids()) | self._live.keys()):
            state = self.get(pid)
            if state is not None:
                yield pid, state


def _samples(state: Record | None, exclude_accession: str) -> list[Sample]:
    if state is None:
        return []
    return [
        Sample(a["accession_id"], a["site"], a["collection_date"], a["category"], "history")
        for a in state["accessions"]
        if a["accession_id"] != exclude_accession and a["report_status"] in FINAL_REPORTS
    ]


def active_alerts(entry: Record) -> list[Record]:
    """The accession's alerts still ACTIVE downstream, oldest first: those kept from earlier
    events (`active`) and the ACTIVE ones its last event published (`emitted`).

    Also right for records written before the two stopped overlapping (their `active` repeats
    the last event's alerts): an alert id is listed once.
    """
    own = [a for a in entry["emitted"] if a["status"] == ACTIVE]
    kept: list[Record] = entry["active"]
    if not own:
        return kept
    ids = {a["alert_id"] for a in own}
    return [*(a for a in kept if a["alert_id"] not in ids), *own]


def _stored(alert: Record) -> Record:
    """The copy of an alert the history keeps: the alert itself, or (detail longer than
    MAX_STORED_DETAIL) a copy whose detail is cut there and ends with " [...]"."""
    detail = alert["detail"]
    if len(detail) <= MAX_STORED_DETAIL:
        return alert
    return {**alert, "detail": detail[: MAX_STORED_DETAIL - len(_CUT)] + _CUT}


def _find(state: Record | None, accession: str) -> Record | None:
    if state is None:
        return None
    for entry in state["accessions"]:
        if entry["accession_id"] == accession:
            return entry
    return None


def _is_stale(entry: dict[str, Any], event: Event) -> bool:
    """A redelivery, an older event of the accession, or an event older than the stored one."""
    event_id = event["event_id"]
    if event_id == entry["event_id"] or event_id in entry["seen_event_ids"]:
        return True
    new, old = event.get("event_time"), entry.get("event_time")
    return new is not None and old is not None and new < old
