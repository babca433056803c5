"""The patients of one partition: their section 8 state, kept as bytes (docs/her2-rules.md 8).

The report lifecycle lives in the patient aggregate (consumer/patient.py); this store keeps
bytes. A patient's state is split into changelog records (schemas/patient_history.avsc, the
compacted topic her2.patient-history.v2): one for the patient-wide part, key
`["P", patient_id]`, and one per accession, key `["A", patient_id, accession_id]` (JSON, UTF-8),
so an event rewrites only the parts it changed and no record grows with the number of a
patient's accessions. Values are Avro in single-object framing (self-contained: no registry
can make the history unreadable).

Committed states live in a backend of consumer/statestore.py (memory, or a sqlite file that is
a disposable cache of the changelog), one row per patient whose value is the patient's
changelog records back to back (`_pack`). Patients changed since the last `take_dirty()` are
held decoded ("live"), so a batch decodes each patient once.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import NamedTuple

from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.model import Event, Outcome, Record
from consumer.clinical.patient import (
    AcceptedReport,
    Accession,
    AlertState,
    PatientState,
    PriorEntry,
    Published,
)
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.errors import DecodeError, Her2Error
from consumer.resources import PATIENT_HISTORY, parsed_schema
from consumer.state.backends import CommittedStates, MemoryStates

PATIENT_PART = "P"
ACCESSION_PART = "A"
_LEN = struct.Struct(">I")


class HistoryRecordError(Her2Error):
    """A changelog record that cannot be read (bad key or undecodable value): `reason` is a
    closed vocabulary (history-key, or the decoder's reason), the message carries no data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def patient_key(patient_id: str) -> bytes:
    """Changelog key of a patient's patient-wide part."""
    return json.dumps(
        [PATIENT_PART, patient_id], ensure_ascii=False, separators=(",", ":")
    ).encode()


def accession_key(patient_id: str, accession_id: str) -> bytes:
    """Changelog key of one accession of a patient."""
    return json.dumps(
        [ACCESSION_PART, patient_id, accession_id], ensure_ascii=False, separators=(",", ":")
    ).encode()


def parse_key(key: bytes) -> tuple[str, str | None]:
    """(patient_id, accession_id or None for the patient-wide part); HistoryRecordError else."""
    try:
        parts = json.loads(key.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        parts = None
    if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
        if len(parts) == 2 and parts[0] == PATIENT_PART:  # key shape
            return parts[1], None
        if len(parts) == 3 and parts[0] == ACCESSION_PART:
            return parts[1], parts[2]
    raise HistoryRecordError("history-key", "changelog key is not a patient or accession key")


class PartCodec:
    """Patient parts <-> single-object Avro of schemas/patient_history.avsc."""

    def __init__(self) -> None:
        schema = parsed_schema(PATIENT_HISTORY)
        self._encoder = Encoder("single-object", schema)
        self._decoder = Decoder("single-object", schema)

    def encode_patient(self, state: PatientState) -> bytes:
        part = {"seq": state.seq, "alerts": [_alert_out(a) for a in state.alerts.values()]}
        return self._encoder.encode(
            {"patient_id": state.patient_id, "part": ("health.her2.state.PatientPart", part)}
        )

    def encode_accession(self, patient_id: str, acc: Accession) -> bytes:
        part = {
            "accession_id": acc.accession_id,
            "report": _report_out(acc.report) if acc.report else None,
            "prior": _prior_out(acc.prior) if acc.prior else None,
            "alerts": [_alert_out(a) for a in acc.alerts.values()],
            "emitted": [_published_out(p) for p in acc.emitted],
        }
        return self._encoder.encode(
            {"patient_id": patient_id, "part": ("health.her2.state.AccessionPart", part)}
        )

    def decode(self, value: bytes) -> tuple[str, Accession | tuple[int, dict[str, AlertState]]]:
        """(patient_id, an Accession or the patient-wide (seq, alerts)); HistoryRecordError."""
        try:
            record = self._decoder.decode(value)
        except DecodeError as exc:
            raise HistoryRecordError(exc.reason, exc.message) from exc
        part = record["part"]
        alerts = {a["code"]: _alert_in(a) for a in part["alerts"]}
        if "seq" in part:
            return record["patient_id"], (part["seq"], alerts)
        return record["patient_id"], Accession(
            accession_id=part["accession_id"],
            report=_report_in(part["report"]) if part["report"] else None,
            prior=PriorEntry(**part["prior"]) if part["prior"] else None,
            alerts=alerts,
            emitted=tuple(_published_in(p) for p in part["emitted"]),
        )


@cache
def part_codec() -> PartCodec:
    """The one PartCodec of the process (building one fingerprints the schema: ~1 ms)."""
    return PartCodec()


class Checkpoint(NamedTuple):
    """A patient's live entry before one event (HistoryStore.checkpoint / roll_back)."""

    patient_id: str
    live: _Live | None


@dataclass(frozen=True, slots=True)
class _Live:
    """A patient changed since the last take_dirty(): its state and what changed."""

    state: PatientState
    dirty: frozenset[str | None]  # parts to write (None = the patient-wide part)
    removed: frozenset[str]  # accessions to delete (retention)
    base_open: int  # open findings of the committed state (for the running total)


class HistoryStore:
    """The section 8 state of the patients of one partition (or of one offline run)."""

    def __init__(
        self,
        retention: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        states: CommittedStates | None = None,
    ) -> None:
        self._codec = part_codec()
        self._states: CommittedStates = MemoryStates() if states is None else states
        self._live: dict[str, _Live] = {}
        self._retention = retention
        self._clock = clock
        self._open = 0  # open findings of the committed states (running total)

    # -- sizes -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Patients held (committed plus those new since the last take_dirty)."""
        new = sum(1 for pid in self._live if self._states.accessions_of(pid) is None)
        return self._states.patients + new

    def accession_count(self) -> int:
        """Accessions held, across patients."""
        changed = sum(
            len(live.state.accessions) - (self._states.accessions_of(pid) or 0)
            for pid, live in self._live.items()
        )
        return self._states.accessions + changed

    def encoded_bytes(self) -> int:
        """Bytes of the committed encoded states (in memory or on disk, by the backend)."""
        return self._states.size

    def open_alerts(self) -> int:
        """Findings whose latest publication is ACTIVE, across the store's patients."""
        delta = sum(live.state.open_alerts() - live.base_open for live in self._live.values())
        return self._open + delta

    def close(self) -> None:
        """Release the committed states (a disk store deletes its file); idempotent."""
        self._live.clear()
        self._open = 0
        self._states.close()

    # -- restore ---------------------------------------------------------------------------

    def restore(self, key: bytes | None, value: bytes | None) -> None:
        """Load one changelog record (value None = tombstone); HistoryRecordError if unreadable."""
        if key is None:
            raise HistoryRecordError("history-key", "changelog record without a key")
        patient_id, _ = parse_key(key)
        opened = 0
        if value is not None:
            owner, part = self._codec.decode(value)  # decoded once: checked and counted
            if owner != patient_id:
                raise HistoryRecordError(
                    "history-key", "changelog key and value name other patients"
                )
            opened = _open_in(part)
        self._live.pop(patient_id, None)
        parts = _unpack(self._states.get(patient_id) or b"")
        old = parts.get(key)
        if old is not None:
            self._open -= _open_in(self._codec.decode(old)[1])
        if value is None:
            parts.pop(key, None)
        else:
            parts[key] = value
            self._open += opened
        if parts:
            self._states.put(patient_id, _pack(parts), _accessions(parts))
        else:
            self._states.delete(patient_id)

    # -- reads ----------------------------------------------------------------------------

    def get(self, patient_id: str) -> PatientState | None:
        """The state of a patient, or None."""
        live = self._live.get(patient_id)
        if live is not None:
            return live.state
        blob = self._states.get(patient_id)
        return None if blob is None else self._decode(patient_id, blob)

    def patients(self) -> Iterator[tuple[str, PatientState]]:
        """Every (patient_id, state) held, decoded."""
        for pid in sorted(set(self._states.ids()) | self._live.keys()):
            state = self.get(pid)
            if state is not None:
                yield pid, state

    def _decode(self, patient_id: str, blob: bytes) -> PatientState:
        return decode_state(patient_id, blob)

    # -- the lifecycle ---------------------------------------------------------------------

    def apply(self, event: Event, pipeline: Pipeline) -> Outcome:
        """Process one validated event with the patient's state and remember the result."""
        pid = event["patient_id"]
        live = self._live.get(pid)
        before = live.state if live else self.get(pid)
        done = pipeline.step(before, event)
        if done.changed:
            state, removed = self._expire(done.state)
            base = live.base_open if live else (before.open_alerts() if before else 0)
            dirty = (live.dirty if live else frozenset()) | done.changed
            gone = (live.removed if live else frozenset()) | removed
            self._live[pid] = _Live(state, dirty - removed, gone, base)
        return Outcome(done.classification, done.alerts, tuple(done.transitions))

    def checkpoint(self, patient_id: str) -> Checkpoint:
        """The patient's live entry now, to put back with roll_back() if an event fails."""
        return Checkpoint(patient_id, self._live.get(patient_id))

    def roll_back(self, checkpoint: Checkpoint) -> None:
        """Put the patient's live entry back as it was at `checkpoint`."""
        if checkpoint.live is None:
            self._live.pop(checkpoint.patient_id, None)
        else:
            self._live[checkpoint.patient_id] = checkpoint.live

    def take_dirty(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records of the parts changed since the last call (value None: a
        tombstone), in key order per patient; the committed states are updated to match."""
        out: list[tuple[bytes, bytes | None]] = []
        rows = []
        for pid in sorted(self._live):
            live = self._live[pid]
            parts = _unpack(self._states.get(pid) or b"")
            for part in sorted(live.dirty, key=lambda p: "" if p is None else "\x01" + p):
                if part is None:
                    key, value = patient_key(pid), self._codec.encode_patient(live.state)
                else:
                    key = accession_key(pid, part)
                    value = self._codec.encode_accession(pid, live.state.accessions[part])
                parts[key] = value
                out.append((key, value))
            for acc in sorted(live.removed):
                key = accession_key(pid, acc)
                parts.pop(key, None)
                out.append((key, None))
            self._open += live.state.open_alerts() - live.base_open
            rows.append((pid, _pack(parts), _accessions(parts)))
        self._states.put_many(rows)
        self._live.clear()
        return out

    def _expire(self, state: PatientState) -> tuple[PatientState, frozenset[str]]:
        """Drop accessions reported before the retention (by event time) that nothing open
        rests on: no open REPORT finding, not in the basis of an open PATIENT finding, not the
        carrier of a prior entry."""
        if self._retention is None:
            return state, frozenset()
        cutoff = self._clock() - self._retention
        needed = {b for a in state.alerts.values() if a.open for b in a.basis}
        needed |= {a.prior.carrier for a in state.accessions.values() if a.prior}
        old = {
            acc
            for acc, a in state.accessions.items()
            if a.report is not None
            and a.report.event_time is not None
            and a.report.event_time < cutoff
            and acc not in needed
            and not any(x.open for x in a.alerts.values())
        }
        if not old:
            return state, frozenset()
        kept = {acc: a for acc, a in state.accessions.items() if acc not in old}
        return replace(state, accessions=kept), frozenset(old)


def encode_state(state: PatientState) -> bytes:
    """A whole patient as one value (its changelog records back to back): for stores that keep
    one value per patient key, such as the Quix Streams peer of bench/peer/."""
    codec = part_codec()
    parts = {patient_key(state.patient_id): codec.encode_patient(state)}
    for acc in state.accessions.values():
        parts[accession_key(state.patient_id, acc.accession_id)] = codec.encode_accession(
            state.patient_id, acc
        )
    return _pack(parts)


def decode_state(patient_id: str, value: bytes) -> PatientState:
    """The patient of an encode_state() value."""
    seq = 0
    alerts: dict[str, AlertState] = {}
    accessions: dict[str, Accession] = {}
    for part_value in _unpack(value).values():
        _, part = part_codec().decode(part_value)
        if isinstance(part, Accession):
            accessions[part.accession_id] = part
        else:
            seq, alerts = part
    return PatientState(patient_id, seq, alerts, accessions)


def _pack(parts: dict[bytes, bytes]) -> bytes:
    """The parts of a patient back to back: key length, key, value length, value."""
    out = bytearray()
    for key in sorted(parts):
        value = parts[key]
        out += _LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value
    return bytes(out)


def _unpack(blob: bytes) -> dict[bytes, bytes]:
    parts: dict[bytes, bytes] = {}
    at = 0
    while at < len(blob):
        (n,) = _LEN.unpack_from(blob, at)
        key = blob[at + 4 : at + 4 + n]
        at += 4 + n
        (m,) = _LEN.unpack_from(blob, at)
        parts[key] = blob[at + 4 : at + 4 + m]
        at += 4 + m
    return parts


def _accessions(parts: dict[bytes, bytes]) -> int:
    return sum(1 for key in parts if key.startswith(b'["A"'))


def _open_in(part: Accession | tuple[int, dict[str, AlertState]]) -> int:
    """Open findings in one decoded part."""
    alerts = part.alerts if isinstance(part, Accession) else part[1]
    return sum(1 for a in alerts.values() if a.open)


def _alert_out(a: AlertState) -> Record:
    return {
        "code": a.code,
        "revision": a.revision,
        "open": a.open,
        "severity": a.severity,
        "digest": a.digest,
        "basis": list(a.basis),
    }


def _alert_in(r: Record) -> AlertState:
    return AlertState(
        r["code"], r["revision"], r["open"], r["severity"], r["digest"], tuple(r["basis"])
    )


def _report_out(r: AcceptedReport) -> Record:
    return {
        "event_id": r.event_id,
        "event_time": r.event_time,
        "report_status": r.report_status,
        "seq": r.seq,
        "seen_event_ids": list(r.seen_event_ids),
        "site": r.site,
        "collection_date": r.collection_date,
        "category": r.category,
        "has_her2_test": r.has_her2_test,
        "hr_status": r.hr_status,
        "er_low_only": r.er_low_only,
        "context": r.context,
        "context_seq": r.context_seq,
    }


def _report_in(r: Record) -> AcceptedReport:
    return AcceptedReport(**{**r, "seen_event_ids": tuple(r["seen_event_ids"])})


def _prior_out(p: PriorEntry) -> Record:
    return {
        "carrier": p.carrier,
        "seq": p.seq,
        "site": p.site,
        "collection_date": p.collection_date,
        "category": p.category,
    }


def _published_out(p: Published) -> Record:
    return {
        "code": p.code,
        "accession_id": p.accession_id,
        "revision": p.revision,
        "status": p.status,
        "transition": p.transition,
        "severity": p.severity,
        "rule_version": p.rule_version,
        "her2_category": p.her2_category,
        "facts": p.facts,
        "created_at": p.created_at,
    }


def _published_in(r: Record) -> Published:
    return Published(**r)
