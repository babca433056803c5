"""The changelog's parts as Avro binary by hand: the bytes fastavro writes, at half the cost.

schemas/patient_history.avsc is small and fixed, so a part (`PatientStateRecord` in single-object
framing) can be written and read field by field in Python faster than fastavro's generic,
schema-walking writer and reader can, and without the dicts fastavro builds on either side.

Both directions are a fast path, never a second definition of the format: they take only what
they can be sure of and raise NotFast (the output writer's, consumer/avro/fastwrite.py: one
signal for both fast paths) for anything else, and the caller (store.PartCodec) then uses
fastavro, whose bytes, values and errors stay the reference.

- encode_*: the exact types the store's dataclasses declare (str, int in the long range, bool,
  tuple, dict, datetime.date, datetime in UTC); a subclass, a list for a tuple, a naive or
  non-UTC time, or an out-of-range number is left to fastavro.
- decode: a value framed with this schema's fingerprint, varints of at most 64 bits, counts
  no larger than the bytes left, strict UTF-8, booleans 0 or 1, union branches 0 or 1, arrays
  in single blocks, nothing left over; a malformed or unusual value is left to fastavro (which
  reports it).
tests/unit/test_store_binary.py compares both paths value by value and byte by byte.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from consumer.avro.fastwrite import SMALL_MAX, SMALL_VARINTS, NotFast, zigzag
from consumer.clinical.patient import (
    AcceptedReport,
    Accession,
    AlertState,
    PatientState,
    PriorEntry,
    Published,
)

_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_NULL: Final = b"\x00"  # union branch 0, or the end of an array
_BRANCH1: Final = b"\x02"  # union branch 1 (the non-null branch of every union here)
_ACCESSION_BRANCH: Final = b"\x02"  # part: branch 1 of [PatientPart, AccessionPart]
_BOOLS: Final = {True: b"\x01", False: b"\x00"}
_WORDS: Final[dict[str, bytes]] = {}
_WORDS_MAX: Final = 4096
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


def _varint(n: int) -> bytes:
    """The zigzag varint of a long (NotFast outside the long range)."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise NotFast
    return zigzag(n)


def _long(n: int) -> bytes:
    if type(n) is not int:
        raise NotFast
    return SMALL_VARINTS[n] if 0 <= n < SMALL_MAX else _varint(n)


def _text(s: str) -> bytes:
    if type(s) is not str:
        raise NotFast
    try:
        b = s.encode()
    except UnicodeEncodeError:  # a lone surrogate: fastavro reports it
        raise NotFast from None
    n = len(b)
    return (SMALL_VARINTS[n] if n < SMALL_MAX else _varint(n)) + b


def _word(s: str) -> bytes:
    """_text of a value from a small vocabulary (codes, statuses, severities, categories),
    remembered (the first _WORDS_MAX distinct ones)."""
    if type(s) is not str:
        raise NotFast
    b = _WORDS.get(s)
    if b is not None:
        return b
    b = _text(s)
    if len(_WORDS) < _WORDS_MAX:
        _WORDS[s] = b
    return b


def _bool(b: bool) -> bytes:
    if type(b) is not bool:
        raise NotFast
    return _BOOLS[b]


def _opt_text(s: str | None) -> bytes:
    return _NULL if s is None else _BRANCH1 + _text(s)


def _millis(t: dt.datetime) -> bytes:
    """timestamp-millis as fastavro computes it for an aware datetime (here: UTC only)."""
    if type(t) is not dt.datetime or t.tzinfo is not dt.UTC:
        raise NotFast
    d = t - _EPOCH
    return _varint((d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000)


def _opt_date(d: dt.date | None) -> bytes:
    if d is None:
        return _NULL
    if type(d) is not dt.date:
        raise NotFast
    return _BRANCH1 + _varint(d.toordinal() - _EPOCH_ORDINAL)


def _strings(values: tuple[str, ...]) -> bytes:
    if type(values) is not tuple:
        raise NotFast
    if not values:
        return _NULL
    return b"".join([_long(len(values)), *map(_text, values), _NULL])


def _alerts(alerts: object) -> bytes:
    if type(alerts) is not dict:
        raise NotFast
    if not alerts:
        return _NULL
    out = [_long(len(alerts))]
    for a in alerts.values():
        if type(a) is not AlertState:
            raise NotFast
        out += (
            _word(a.code),
            _long(a.revision),
            _bool(a.open),
            _word(a.severity),
            _text(a.digest),
            _strings(a.basis),
        )
    out.append(_NULL)
    return b"".join(out)


def _report(r: AcceptedReport | None) -> bytes:
    if r is None:
        return _NULL
    if type(r) is not AcceptedReport:
        raise NotFast
    return b"".join(
        (
            _BRANCH1,
            _text(r.event_id),
            _NULL if r.event_time is None else _BRANCH1 + _millis(r.event_time),
            _word(r.report_status),
            _long(r.seq),
            _strings(r.seen_event_ids),
            _word(r.site),
            _opt_date(r.collection_date),
            _word(r.category),
            _bool(r.has_her2_test),
            _opt_text(r.hr_status),
            _bool(r.er_low_only),
            _opt_text(r.context),
            _long(r.context_seq),
            _opt_text(r.content),
        )
    )


def _prior(p: PriorEntry | None) -> bytes:
    if p is None:
        return _NULL
    if type(p) is not PriorEntry:
        raise NotFast
    return b"".join(
        (
            _BRANCH1,
            _text(p.carrier),
            _long(p.seq),
            _text(p.site),
            _opt_date(p.collection_date),
            _text(p.category),
        )
    )


def _emitted(emitted: tuple[Published, ...]) -> bytes:
    if type(emitted) is not tuple:
        raise NotFast
    if not emitted:
        return _NULL
    out = [_long(len(emitted))]
    created: dt.datetime | None = None  # an event's records share their time: encoded once
    millis = b""
    for p in emitted:
        if type(p) is not Published:
            raise NotFast
        if p.created_at is not created:
            created, millis = p.created_at, _millis(p.created_at)
        out += (
            _word(p.code),
            _text(p.accession_id),
            _long(p.revision),
            _word(p.status),
            _word(p.transition),
            _word(p.severity),
            _long(p.rule_version),
            _word(p.her2_category),
            _opt_text(p.facts),
            millis,
        )
    out.append(_NULL)
    return b"".join(out)


def encode_accession(header: bytes, patient_id: str, acc: Accession) -> bytes:
    """The single-object value of an accession part (`header`: the schema's framing)."""
    if type(acc) is not Accession:
        raise NotFast
    return b"".join(
        (
            header,
            _text(patient_id),
            _ACCESSION_BRANCH,
            _text(acc.accession_id),
            _report(acc.report),
            _prior(acc.prior),
            _alerts(acc.alerts),
            _emitted(acc.emitted),
        )
    )


def encode_patient(header: bytes, state: PatientState) -> bytes:
    """The single-object value of a patient's patient-wide part."""
    if type(state) is not PatientState:
        raise NotFast
    return b"".join(
        (header, _text(state.patient_id), _NULL, _long(state.seq), _alerts(state.alerts))
    )


class _Reader:
    """A cursor over one value's body: each read raises NotFast for what it does not take."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def long(self) -> int:
        """A zigzag varint of at most 64 bits (ten bytes, the last 0 or 1): past that fastavro
        wraps around, and the value is left to it."""
        buf, pos = self.buf, self.pos
        b = buf[pos]
        pos += 1
        if b < 0x80:
            self.pos = pos
            return (b >> 1) ^ -(b & 1)
        n = b & 0x7F
        shift = 7
        while True:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift == 63:  # the tenth byte: one bit left
                b = buf[pos]
                pos += 1
                if b > 1:
                    raise NotFast
                n |= b << 63
                break
        self.pos = pos
        return (n >> 1) ^ -(n & 1)

    def count(self) -> int:
        """An array's item count (its only block), at most the bytes left."""
        n = self.long()
        if not 0 <= n <= len(self.buf) - self.pos:
            raise NotFast
        return n

    def end(self) -> None:
        """The end of an array of one block."""
        if self.long() != 0:
            raise NotFast

    def text(self) -> str:
        """A string (strict UTF-8). A length past the end is caught by decode's final check
        (the cursor only moves forward) or by the next read."""
        buf, pos = self.buf, self.pos
        n = buf[pos]
        if n < 0x80:
            if n & 1:
                raise NotFast
            pos += 1
            end = pos + (n >> 1)
        else:
            n = self.long()
            if n < 0:
                raise NotFast
            pos = self.pos
            end = pos + n
        self.pos = end
        return buf[pos:end].decode()

    def branch(self) -> bool:
        """Whether a [null, X] union holds X."""
        b = self.long()
        if b == 0:
            return False
        if b == 1:
            return True
        raise NotFast

    def bool(self) -> bool:
        """A boolean written as 0 or 1."""
        b = self.buf[self.pos]
        if b > 1:
            raise NotFast
        self.pos += 1
        return b == 1

    def millis(self) -> dt.datetime:
        """A timestamp-millis, as fastavro reads it (UTC)."""
        return _EPOCH + dt.timedelta(microseconds=self.long() * 1000)

    def date(self) -> dt.date:
        """A date (days since the epoch), as fastavro reads it."""
        return dt.date.fromordinal(self.long() + _EPOCH_ORDINAL)

    def strings(self) -> tuple[str, ...]:
        """An array of strings, as a tuple."""
        n = self.count()
        if n == 0:
            return ()
        text = self.text
        values = tuple([text() for _ in range(n)])
        self.end()
        return values

    def alerts(self) -> dict[str, AlertState]:
        """An array of AlertState records, by code (a later one of the same code wins)."""
        n = self.count()
        out: dict[str, AlertState] = {}
        if n == 0:
            return out
        for _ in range(n):
            a = AlertState(
                self.text(), self.long(), self.bool(), self.text(), self.text(), self.strings()
            )
            out[a.code] = a
        self.end()
        return out


def decode(
    header: bytes, value: bytes, before_content: bytes = b""
) -> tuple[str, Accession | tuple[int, dict[str, AlertState]]]:
    """(patient_id, an Accession or the patient-wide (seq, alerts)) of a part's value, as
    store.PartCodec's fastavro path builds them. `before_content`: the framing of the schema
    of the releases before 2026.12-3 (schemas/previous/patient_history.89c1149.avsc: the same
    layout without AcceptedReport.content), whose values read with content None, as fastavro
    resolves them to this schema."""
    if type(value) is not bytes:
        raise NotFast
    if value.startswith(header):
        with_content = True
    elif before_content and value.startswith(before_content):
        with_content = False
    else:
        raise NotFast
    r = _Reader(value, len(header))
    patient_id = r.text()
    part: Accession | tuple[int, dict[str, AlertState]]
    part = _accession(r, with_content) if r.branch() else (r.long(), r.alerts())
    if r.pos != len(value):
        raise NotFast
    return patient_id, part


def _accession(r: _Reader, with_content: bool) -> Accession:
    accession_id = r.text()
    report = None
    if r.branch():
        report = AcceptedReport(
            r.text(),
            r.millis() if r.branch() else None,
            r.text(),
            r.long(),
            r.strings(),
            r.text(),
            r.date() if r.branch() else None,
            r.text(),
            r.bool(),
            r.text() if r.branch() else None,
            r.bool(),
            r.text() if r.branch() else None,
            r.long(),
            (r.text() if r.branch() else None) if with_content else None,
        )
    prior = None
    if r.branch():
        prior = PriorEntry(r.text(), r.long(), r.text(), r.date() if r.branch() else None, r.text())
    alerts = r.alerts()
    n = r.count()
    emitted: tuple[Published, ...] = ()
    if n:
        emitted = tuple(
            [
                Published(
                    r.text(),
                    r.text(),
                    r.long(),
                    r.text(),
                    r.text(),
                    r.text(),
                    r.long(),
                    r.text(),
                    r.text() if r.branch() else None,
                    r.millis(),
                )
                for _ in range(n)
            ]
        )
        r.end()
    return Accession(accession_id, report, prior, alerts, emitted)
