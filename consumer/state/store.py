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
held decoded ("live"), so a batch decodes each patient once. The committed states of the
patients used last (`cache_patients` of them, least recently used out first) are also held
with their parts, decoded as they are read: a patient back in a later batch decodes nothing
(or only what it must), and `take_dirty()` repacks its row without reading it back. A part
written by `take_dirty()` is kept as the object it was encoded from, and used as decoded only if
decoding would give exactly that object back (`_round_trips`: same values, types and order);
otherwise it is decoded from its bytes. So a patient reads the same whether it comes from the
cache or from the backend, and the bytes published are those of a store without a cache.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from json.encoder import encode_basestring
from typing import Any, Final, NamedTuple

from fastavro import parse_schema

from consumer.avro.codec import Decoder, Encoder
from consumer.avro.fastwrite import NotFast
from consumer.avro.wire import frame_single_object, schema_fingerprint
from consumer.clinical.model import POSITIVE, Event, Outcome, Record
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
from consumer.resources import PATIENT_HISTORY, parsed_schema, previous_schemas, raw_schema
from consumer.state import binary
from consumer.state.backends import CommittedStates, MemoryStates

PATIENT_PART = "P"
ACCESSION_PART = "A"
_LEN = struct.Struct(">I")
# Committed patients held decoded, per store. A batch (500 records) touches at most 500
# patients; this keeps the patients of the last few batches. Each costs its encoded parts plus
# their decoded objects (measured: about 9 KB per synthetic patient), so ~9 MB per store, flat;
# the stores of a process together hold at most their CacheBudget (HER2_HISTORY_CACHE_PATIENTS).
CACHE_PATIENTS: Final = 1024


class CacheBudget:
    """The decoded patients the history stores of one process hold in all (HER2_HISTORY_CACHE_
    PATIENTS): each open store keeps at most `per_store`, and fewer once more stores are open
    than `patients // per_store`, so a process that owns many partitions holds about `patients`
    in all rather than `per_store` each. A store over a smaller share is trimmed at its next use."""

    def __init__(self, patients: int, per_store: int = CACHE_PATIENTS) -> None:
        self.patients = max(0, patients)
        self.per_store = max(0, per_store)
        # the open stores, by id (set.add / discard are atomic: stores close on the IO thread)
        self._open: set[int] = set()

    def join(self, store: object) -> None:
        """A store opened."""
        self._open.add(id(store))

    def leave(self, store: object) -> None:
        """A store closed (idempotent)."""
        self._open.discard(id(store))

    def share(self) -> int:
        """The most patients one open store may hold decoded now."""
        return min(self.per_store, self.patients // max(1, len(self._open)))


class HistoryRecordError(Her2Error):
    """A changelog record that cannot be read (bad key or undecodable value): `reason` is a
    closed vocabulary (history-key, or the decoder's reason), the message carries no data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def patient_key(patient_id: str) -> bytes:
    """Changelog key of a patient's patient-wide part: the bytes of
    `json.dumps(["P", patient_id], ensure_ascii=False, separators=(",", ":"))` in UTF-8, built
    with json's own string encoder (a third of the cost)."""
    return f'["{PATIENT_PART}",{encode_basestring(patient_id)}]'.encode()


def accession_key(patient_id: str, accession_id: str) -> bytes:
    """Changelog key of one accession of a patient (as patient_key: the bytes of the JSON list
    `["A", patient_id, accession_id]`)."""
    pid, acc = encode_basestring(patient_id), encode_basestring(accession_id)
    return f'["{ACCESSION_PART}",{pid},{acc}]'.encode()


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


_REPORT: Final = "health.her2.state.AcceptedReport"
_PRIOR: Final = "health.her2.state.PriorEntry"
Part = Accession | tuple[int, Mapping[str, AlertState]]  # a decoded part: accession or patient-wide


class PartCodec:
    """Patient parts <-> single-object Avro of schemas/patient_history.avsc: written and read
    by hand (consumer/state/binary.py) where that is sure to match fastavro, by fastavro else."""

    def __init__(
        self,
        *,
        on_encode_fallback: Callable[[], None] = lambda: None,
        on_decode_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_encode_fallback()` hears of each part the hand-written path leaves to fastavro
        to write, `on_decode_fallback()` of each value fastavro reads in its place: slower, not
        wrong (the service counts them, her2_consumer_codec_fallbacks_total)."""
        self._on_encode_fallback = on_encode_fallback
        self._on_decode_fallback = on_decode_fallback
        schema = parsed_schema(PATIENT_HISTORY)
        self._encoder = Encoder("single-object", schema)
        # records written by earlier releases stay readable (their fields resolved to this
        # schema's by fastavro, or read by hand for the layout binary.decode knows)
        earlier = previous_schemas(PATIENT_HISTORY)
        self._decoder = Decoder("single-object", schema, known_writer_schemas=earlier)
        self._header = frame_single_object(schema_fingerprint(schema), b"")
        self._before_content = _before_content_header(earlier)

    def encode_patient(self, state: PatientState) -> bytes:
        """The value of the patient-wide part (by hand, or by fastavro: the same bytes)."""
        try:
            return binary.encode_patient(self._header, state)
        except NotFast:
            self._on_encode_fallback()
            return self._encode_patient(state)

    def encode_accession(self, patient_id: str, acc: Accession) -> bytes:
        """The value of an accession part (by hand, or by fastavro: the same bytes)."""
        try:
            return binary.encode_accession(self._header, patient_id, acc)
        except NotFast:
            self._on_encode_fallback()
            return self._encode_accession(patient_id, acc)

    def _encode_patient(self, state: PatientState) -> bytes:
        part = {"seq": state.seq, "alerts": [_alert_out(a) for a in state.alerts.values()]}
        return self._encoder.encode(
            {"patient_id": state.patient_id, "part": ("health.her2.state.PatientPart", part)}
        )

    def _encode_accession(self, patient_id: str, acc: Accession) -> bytes:
        # The record branches of the unions are named (fastavro's tuple notation): the same
        # bytes, without fastavro trying each branch against the datum (a quarter of the cost).
        part = {
            "accession_id": acc.accession_id,
            "report": (_REPORT, _report_out(acc.report)) if acc.report else None,
            "prior": (_PRIOR, _prior_out(acc.prior)) if acc.prior else None,
            "alerts": [_alert_out(a) for a in acc.alerts.values()],
            "emitted": [_published_out(p) for p in acc.emitted],
        }
        return self._encoder.encode(
            {"patient_id": patient_id, "part": ("health.her2.state.AccessionPart", part)}
        )

    def decode(self, value: bytes) -> tuple[str, Part]:
        """(patient_id, an Accession or the patient-wide (seq, alerts)); HistoryRecordError.
        By hand, or by fastavro (anything unusual, and every error): the same parts."""
        try:
            return binary.decode(self._header, value, self._before_content)
        except Exception:  # any bytes: what the hand reader does not take, malformed values
            # included, is read (and its error reported) by fastavro
            decoded = self._decode(value)
            # counted once fastavro has read it: a value neither reads is an unreadable record
            # (HistoryRecordError, counted as such by the restore), not a slower one
            self._on_decode_fallback()
            return decoded

    def _decode(self, value: bytes) -> tuple[str, Part]:
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


def _before_content_header(earlier: tuple[dict[str, Any], ...]) -> bytes:
    """The framing of the earlier schema whose layout binary.decode reads by hand (this one
    without AcceptedReport.content, releases before 2026.12-3), or b"" if none is shipped."""
    current = raw_schema(PATIENT_HISTORY)
    for schema in earlier:
        if schema == _without_content(current):
            return frame_single_object(schema_fingerprint(parse_schema(schema)), b"")
    return b""


def _without_content(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without AcceptedReport's `content` field (its last)."""
    out = copy.deepcopy(schema)
    accession = out["fields"][1]["type"][1]
    report = next(f for f in accession["fields"] if f["name"] == "report")["type"][1]
    report["fields"] = [f for f in report["fields"] if f["name"] != "content"]
    return out


@cache
def part_codec() -> PartCodec:
    """The PartCodec of the stores given none (building one fingerprints the schema: ~1 ms);
    its fallbacks are heard by no one (the runtime's stores share one that counts them)."""
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


@dataclass(slots=True)
class _Cached:
    """A committed patient held in the cache: its changelog records as in its backend row, and
    the parts decoded from them so far (a part leaves `decoded` when its value changes). Every
    key of `decoded` and `encoded_from` is a key of `parts`; none is in both."""

    parts: dict[bytes, bytes]  # key -> value
    decoded: dict[bytes, Part]  # key -> the part decoded from parts[key]
    # key -> the live part that parts[key] was encoded from: used instead of decoding the value
    # if `_round_trips` finds it is exactly what decoding would give (checked when read)
    encoded_from: dict[bytes, Part] = field(default_factory=dict)
    state: PatientState | None = None  # assembled from `decoded` once every part is in it


class HistoryStore:
    """The section 8 state of the patients of one partition (or of one offline run)."""

    def __init__(
        self,
        retention: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        states: CommittedStates | None = None,
        cache_patients: int = CACHE_PATIENTS,
        budget: CacheBudget | None = None,
        *,
        codec: PartCodec | None = None,
    ) -> None:
        """`budget` (the runtime's, shared by a process's stores) bounds the cache; without one
        the store has its own budget of `cache_patients`. `codec` (the runtime's, whose hooks
        count the fallbacks to fastavro) writes and reads the parts; without one, part_codec()."""
        self._codec = part_codec() if codec is None else codec
        self._states: CommittedStates = MemoryStates() if states is None else states
        self._live: dict[str, _Live] = {}
        self._retention = retention
        self._clock = clock
        self._open = 0  # open findings of the committed states (running total)
        # committed patients used last, least recent first (at most cache_patients of them)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._budget = CacheBudget(cache_patients, cache_patients) if budget is None else budget
        self._budget.join(self)
        # restore(): the patient whose records are being loaded, written to the backend once
        # its records are done (a changelog holds a patient's records together), not per record
        self._restoring: tuple[str, _Cached] | None = None

    # -- sizes -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Patients held (committed plus those new since the last take_dirty)."""
        self._flush()
        new = sum(1 for pid in self._live if self._states.accessions_of(pid) is None)
        return self._states.patients + new

    def accession_count(self) -> int:
        """Accessions held, across patients."""
        self._flush()
        changed = sum(
            len(live.state.accessions) - (self._states.accessions_of(pid) or 0)
            for pid, live in self._live.items()
        )
        return self._states.accessions + changed

    def encoded_bytes(self) -> int:
        """Bytes of the committed encoded states (in memory or on disk, by the backend)."""
        self._flush()
        return self._states.size

    def open_alerts(self) -> int:
        """Findings whose latest publication is ACTIVE, across the store's patients."""
        delta = sum(live.state.open_alerts() - live.base_open for live in self._live.values())
        return self._open + delta

    def close(self) -> None:
        """Release the committed states (a disk store deletes its file); idempotent."""
        self._live.clear()
        self._cache.clear()
        self._restoring = None
        self._open = 0
        self._budget.leave(self)
        self._states.close()

    # -- restore ---------------------------------------------------------------------------

    def restore(self, key: bytes | None, value: bytes | None) -> None:
        """Load one changelog record (value None = tombstone); HistoryRecordError if unreadable."""
        if key is None:
            raise HistoryRecordError("history-key", "changelog record without a key")
        patient_id, _ = parse_key(key)
        part: Part | None = None
        if value is not None:
            owner, part = self._codec.decode(value)  # decoded once: checked, counted, kept
            if owner != patient_id:
                raise HistoryRecordError(
                    "history-key", "changelog key and value name other patients"
                )
        self._live.pop(patient_id, None)
        entry = self._restore_entry(patient_id)
        old = entry.parts.get(key)
        if old is not None:
            known = entry.decoded.get(key)
            if known is None:
                known = self._codec.decode(old)[1]
            self._open -= _open_in(known)
        entry.state = None
        entry.encoded_from.pop(key, None)
        if value is None or part is None:
            entry.parts.pop(key, None)
            entry.decoded.pop(key, None)
        else:
            entry.parts[key] = value
            entry.decoded[key] = part
            self._open += _open_in(part)

    def _restore_entry(self, patient_id: str) -> _Cached:
        """The committed parts of the patient being restored (its row written when done)."""
        if self._restoring is not None and self._restoring[0] == patient_id:
            return self._restoring[1]
        self._flush()
        entry = self._cache.pop(patient_id, None)
        if entry is None:
            blob = self._states.get(patient_id)
            entry = _Cached(_unpack(blob) if blob else {}, {})
        self._restoring = (patient_id, entry)
        return entry

    def _flush(self) -> None:
        """Write the row of the patient restore() was loading (if any) to the backend."""
        if self._restoring is None:
            return
        (patient_id, entry), self._restoring = self._restoring, None
        if entry.parts:
            self._states.put(patient_id, _pack(entry.parts), _accessions(entry.parts))
        else:
            self._states.delete(patient_id)

    # -- reads ----------------------------------------------------------------------------

    def get(self, patient_id: str) -> PatientState | None:
        """The state of a patient, or None."""
        live = self._live.get(patient_id)
        if live is not None:
            return live.state
        entry = self._cached(patient_id)
        return None if entry is None else _assemble(patient_id, entry, self._codec)

    def patients(self) -> Iterator[tuple[str, PatientState]]:
        """Every (patient_id, state) held, decoded (the cache is read, not filled)."""
        self._flush()
        for pid in sorted(set(self._states.ids()) | self._live.keys()):
            live = self._live.get(pid)
            entry = self._cache.get(pid)
            if live is not None:
                yield pid, live.state
            elif entry is not None:
                yield pid, _assemble(pid, entry, self._codec)
            else:
                blob = self._states.get(pid)
                if blob is not None:
                    yield pid, decode_state(pid, blob, self._codec)

    def _cached(self, patient_id: str) -> _Cached | None:
        """The patient's committed entry (now the most recent), read into the cache if need
        be; None if the patient has no committed state."""
        entry = self._cache.get(patient_id)
        if entry is not None:
            self._cache.move_to_end(patient_id)
            return entry
        self._flush()
        blob = self._states.get(patient_id)
        if blob is None:
            return None
        entry = _Cached(_unpack(blob), {})
        self._cache[patient_id] = entry
        self._evict()
        return entry

    def _evict(self) -> None:
        bound = self._budget.share()
        while len(self._cache) > bound:
            self._cache.popitem(last=False)

    # -- the lifecycle ---------------------------------------------------------------------

    def apply(self, event: Event, pipeline: Pipeline) -> Outcome:
        """Process one validated event with the patient's state and remember the result."""
        pid = event["patient_id"]
        live = self._live.get(pid)
        before = live.state if live else self.get(pid)
        done = pipeline.step(before, event)
        if done.changed:
            state, removed, cut = self._expire(done.state)
            base = live.base_open if live else (before.open_alerts() if before else 0)
            dirty = (live.dirty if live else frozenset()) | done.changed | cut
            gone = (live.removed if live else frozenset()) | removed
            self._live[pid] = _Live(state, dirty - removed, gone, base)
        return Outcome(done.classification, done.alerts, tuple(done.transitions))

    def checkpoint(self, patient_id: str) -> Checkpoint:
        """The patient's live entry now, to put back with roll_back() if an event fails."""
        return Checkpoint(patient_id, self._live.get(patient_id))

    def roll_back(self, checkpoint: Checkpoint) -> None:
        """Put the patient's live entry back as it was at `checkpoint` (the committed state,
        cached or not, never changes outside take_dirty and restore)."""
        if checkpoint.live is None:
            self._live.pop(checkpoint.patient_id, None)
        else:
            self._live[checkpoint.patient_id] = checkpoint.live

    def replace(self, patient_id: str, state: PatientState, changed: frozenset[str | None]) -> None:
        """Hold `state` as the patient's, its `changed` parts written by the next take_dirty
        (a rebuild's revision floors: consumer/clinical/reconcile.py)."""
        if not changed:
            return
        live = self._live.get(patient_id)
        if live is None:
            before = self.get(patient_id)
            base = before.open_alerts() if before else 0
            dirty, removed = changed, frozenset[str]()
        else:
            base, dirty, removed = live.base_open, live.dirty | changed, live.removed
        self._live[patient_id] = _Live(state, dirty, removed, base)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """Every committed part as its changelog record (key, value), by patient, in key
        order: a whole changelog, written by a rebuild (take_dirty first)."""
        self._flush()
        for pid in sorted(self._states.ids()):
            blob = self._states.get(pid)
            if blob:
                yield from sorted(_unpack(blob).items())

    def take_dirty(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records of the parts changed since the last call (value None: a
        tombstone), in key order per patient; the committed states are updated to match.
        Only the changed parts are encoded; the others are repacked as they are."""
        self._flush()
        out: list[tuple[bytes, bytes | None]] = []
        rows = []
        committed: list[tuple[str, _Cached]] = []
        opened = 0
        for pid in sorted(self._live):
            live = self._live[pid]
            entry = self._cache.get(pid)
            if entry is None:
                blob = self._states.get(pid)
                parts, decoded, encoded_from = (_unpack(blob) if blob else {}), {}, {}
            else:  # copies: the cached entry stays the committed state until the rows are in
                parts, decoded = dict(entry.parts), dict(entry.decoded)
                encoded_from = dict(entry.encoded_from)
            state = live.state
            for part in sorted(live.dirty, key=lambda p: "" if p is None else "\x01" + p):
                known: Part
                if part is None:
                    key, value = patient_key(pid), self._codec.encode_patient(state)
                    known = (state.seq, state.alerts)
                else:
                    key, known = accession_key(pid, part), state.accessions[part]
                    value = self._codec.encode_accession(pid, known)
                parts[key] = value
                decoded.pop(key, None)
                encoded_from[key] = known
                out.append((key, value))
            for acc in sorted(live.removed):
                key = accession_key(pid, acc)
                parts.pop(key, None)
                decoded.pop(key, None)
                encoded_from.pop(key, None)
                out.append((key, None))
            opened += live.state.open_alerts() - live.base_open
            rows.append((pid, _pack(parts), _accessions(parts)))
            committed.append((pid, _Cached(parts, decoded, encoded_from)))
        self._states.put_many(rows)
        self._open += opened
        for pid, entry in committed:
            self._cache[pid] = entry
            self._cache.move_to_end(pid)
        self._evict()
        self._live.clear()
        return out

    def _expire(self, state: PatientState) -> tuple[PatientState, frozenset[str], frozenset[str]]:
        """(state, accessions dropped, accessions cut to their findings) after the retention.

        An accession reported before the retention (by event time) leaves when nothing open
        rests on it: no open REPORT finding, not in the basis of an open PATIENT finding, not
        the carrier of a prior entry. Never, whatever its age (`_kept_for_good`): a cancelled
        accession or a POSITIVE sample. One that published REPORT findings keeps only them
        (their revision counters: dropped, a later report of the accession published its
        findings from revision 1 again, which a reader keeping the highest revision per
        alert_id ignores); its report and sample leave as any other's."""
        if self._retention is None:
            return state, frozenset(), frozenset()
        cutoff = self._clock() - self._retention
        reported_before = [
            acc
            for acc, a in state.accessions.items()
            if a.report is not None
            and a.report.event_time is not None
            and a.report.event_time < cutoff
        ]
        if not reported_before:  # the usual case: what is needed is not worth working out
            return state, frozenset(), frozenset()
        needed = {b for a in state.alerts.values() if a.open for b in a.basis}
        needed |= {a.prior.carrier for a in state.accessions.values() if a.prior}
        accessions = state.accessions
        old = {
            acc
            for acc in reported_before
            if acc not in needed
            and not any(x.open for x in accessions[acc].alerts.values())
            and not _kept_for_good(accessions[acc])
        }
        if not old:
            return state, frozenset(), frozenset()
        cut = {acc for acc in old if accessions[acc].alerts}
        kept = {acc: a for acc, a in accessions.items() if acc not in old}
        # no report, no prior: no sample (section 8 reads neither)
        kept.update({acc: Accession(acc, alerts=accessions[acc].alerts) for acc in cut})
        return replace(state, accessions=kept), frozenset(old - cut), frozenset(cut)


def _kept_for_good(acc: Accession) -> bool:
    """An accession with a report that retention never drops (section 8 of
    docs/her2-rules.md):
    - cancelled: its sample is gone "now or carried later", until a new final report of the
      accession; dropped, a later prior entry for it would bring the withdrawn sample back;
    - a POSITIVE sample: "no sample of the patient was ever POSITIVE" decides
      TC-HER2-TARGETED-NOT-POSITIVE (CRITICAL), TC-TDXD-EARLY-STAGE, RT-CONVERSION and the
      T-DXd HER2-low routes; forgotten, a patient once HER2-positive got the CRITICAL caution
      for trastuzumab. (A prior entry beside its accession's own report is read by nothing:
      the report is the sample, or the accession is cancelled.)"""
    report = acc.report
    return report is not None and (not report.final or report.category == POSITIVE)


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


def decode_state(patient_id: str, value: bytes, codec: PartCodec | None = None) -> PatientState:
    """The patient of an encode_state() value (read with `codec`, else part_codec())."""
    return _assemble(patient_id, _Cached(_unpack(value), {}), codec or part_codec())


def _assemble(patient_id: str, entry: _Cached, codec: PartCodec) -> PatientState:
    """The patient of a cache entry, decoding the parts not decoded yet with `codec` (in key
    order, as they are packed: the accessions, then the patient-wide part)."""
    if entry.state is not None:
        return entry.state
    seq = 0
    alerts: Mapping[str, AlertState] = {}
    accessions: dict[str, Accession] = {}
    for key in sorted(entry.parts):
        part = entry.decoded.get(key)
        if part is None:
            live = entry.encoded_from.pop(key, None)
            part = live if live is not None and _round_trips(live) else None
            if part is None:
                _, part = codec.decode(entry.parts[key])
            entry.decoded[key] = part
        if isinstance(part, Accession):
            accessions[part.accession_id] = part
        else:
            seq, alerts = part
    entry.state = PatientState(patient_id, seq, alerts, accessions)
    return entry.state


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


def _round_trips(part: Part) -> bool:
    """Whether decoding the encoding of `part` gives `part` back exactly: equal values of the
    same types in the same order (what the decoder builds: str, int, bool, tuple, dict, date,
    datetime in UTC to the millisecond). Then the part can be used as decoded: nothing that
    reads it can tell the two apart. Anything else (a naive or non-UTC time, microseconds, a bool
    for an int, a list for a tuple, a subclass) is decoded instead."""
    if isinstance(part, Accession):
        return (
            type(part) is Accession
            and type(part.accession_id) is str
            and (part.report is None or _report_round_trips(part.report))
            and (part.prior is None or _prior_round_trips(part.prior))
            and _alerts_round_trip(part.alerts)
            and type(part.emitted) is tuple
            and all(_published_round_trips(p) for p in part.emitted)
        )
    seq, alerts = part
    return type(seq) is int and _alerts_round_trip(alerts)


def _alerts_round_trip(alerts: Mapping[str, AlertState]) -> bool:
    # decoded as {a.code: a} in list order: the key must be the code
    return type(alerts) is dict and all(
        type(a) is AlertState
        and code == a.code
        and type(a.code) is str
        and type(a.revision) is int
        and type(a.open) is bool
        and type(a.severity) is str
        and type(a.digest) is str
        and _strings(a.basis)
        for code, a in alerts.items()
    )


def _report_round_trips(r: AcceptedReport) -> bool:
    return (
        type(r) is AcceptedReport
        and type(r.event_id) is str
        and (r.event_time is None or _utc_millis(r.event_time))
        and type(r.report_status) is str
        and type(r.seq) is int
        and _strings(r.seen_event_ids)
        and type(r.site) is str
        and (r.collection_date is None or type(r.collection_date) is dt.date)
        and type(r.category) is str
        and type(r.has_her2_test) is bool
        and (r.hr_status is None or type(r.hr_status) is str)
        and type(r.er_low_only) is bool
        and (r.context is None or type(r.context) is str)
        and type(r.context_seq) is int
    )


def _prior_round_trips(p: PriorEntry) -> bool:
    return (
        type(p) is PriorEntry
        and type(p.carrier) is str
        and type(p.seq) is int
        and type(p.site) is str
        and (p.collection_date is None or type(p.collection_date) is dt.date)
        and type(p.category) is str
    )


def _published_round_trips(p: Published) -> bool:
    return (
        type(p) is Published
        and type(p.code) is str
        and type(p.accession_id) is str
        and type(p.revision) is int
        and type(p.status) is str
        and type(p.transition) is str
        and type(p.severity) is str
        and type(p.rule_version) is int
        and type(p.her2_category) is str
        and (p.facts is None or type(p.facts) is str)
        and _utc_millis(p.created_at)
    )


def _strings(values: tuple[str, ...]) -> bool:
    return type(values) is tuple and all(type(v) is str for v in values)


def _utc_millis(t: dt.datetime) -> bool:
    """A timestamp-millis as the decoder returns it: UTC (the very tzinfo), whole ms, fold 0."""
    return (
        type(t) is dt.datetime and t.tzinfo is dt.UTC and t.microsecond % 1000 == 0 and not t.fold
    )


def _open_in(part: Part) -> int:
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
        "content": r.content,
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
