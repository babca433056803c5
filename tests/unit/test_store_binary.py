"""consumer/state/binary.py: the changelog's parts written and read by hand give exactly
fastavro's bytes and values, and whatever the hand-written path is not sure of is left to
fastavro (NotFast), so PartCodec's bytes, parts and errors are those of fastavro alone."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import replace
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Encoder
from consumer.avro.wire import frame_single_object, schema_fingerprint
from consumer.clinical.patient import (
    AcceptedReport,
    Accession,
    AlertState,
    PatientState,
    PriorEntry,
    Published,
)
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.resources import PATIENT_HISTORY, data_dir, parsed_schema
from consumer.state import binary
from consumer.state.store import (
    HistoryRecordError,
    HistoryStore,
    PartCodec,
    _alert_out,
    _prior_out,
    _published_out,
    _report_out,
    part_codec,
    patient_key,
)
from consumer.tools.synthetic import SyntheticGenerator

SCHEMA = parsed_schema(PATIENT_HISTORY)
HEADER = frame_single_object(schema_fingerprint(SCHEMA), b"")
PLAIN = Encoder("single-object", SCHEMA)  # fastavro alone: the reference
# the schema of the releases before 2026.12-3 (no AcceptedReport.content), as shipped
_BEFORE_CONTENT_FILE = data_dir("schemas") / "previous" / "patient_history.89c1149.avsc"
BEFORE_CONTENT = fastavro.parse_schema(json.loads(_BEFORE_CONTENT_FILE.read_text("utf-8")))
BEFORE_CONTENT_HEADER = frame_single_object(schema_fingerprint(BEFORE_CONTENT), b"")
_REPORT = "health.her2.state.AcceptedReport"
_PRIOR = "health.her2.state.PriorEntry"


def fastavro_accession(patient_id: Any, acc: Any) -> bytes:
    """The value fastavro writes for an accession part (as the merge base did: the record
    branches of the unions named, which fastavro then does not validate)."""
    part = {
        "accession_id": acc.accession_id,
        "report": (_REPORT, _report_out(acc.report)) if acc.report else None,
        "prior": (_PRIOR, _prior_out(acc.prior)) if acc.prior else None,
        "alerts": [_alert_out(a) for a in acc.alerts.values()],
        "emitted": [_published_out(p) for p in acc.emitted],
    }
    return PLAIN.encode(
        {"patient_id": patient_id, "part": ("health.her2.state.AccessionPart", part)}
    )


def before_content_accession(patient_id: Any, acc: Any) -> bytes:
    """The value a release before 2026.12-3 wrote for an accession part (fastavro, its schema:
    the report without `content`)."""
    report = None
    if acc.report:
        report = {k: v for k, v in _report_out(acc.report).items() if k != "content"}
    part = {
        "accession_id": acc.accession_id,
        "report": (_REPORT, report) if report else None,
        "prior": (_PRIOR, _prior_out(acc.prior)) if acc.prior else None,
        "alerts": [_alert_out(a) for a in acc.alerts.values()],
        "emitted": [_published_out(p) for p in acc.emitted],
    }
    datum = {"patient_id": patient_id, "part": ("health.her2.state.AccessionPart", part)}
    return Encoder("single-object", BEFORE_CONTENT).encode(datum)


def fastavro_patient(state: Any) -> bytes:
    """The value fastavro writes for a patient-wide part."""
    part = {"seq": state.seq, "alerts": [_alert_out(a) for a in state.alerts.values()]}
    datum = {"patient_id": state.patient_id, "part": ("health.her2.state.PatientPart", part)}
    return PLAIN.encode(datum)


def several_blocks() -> bytes:
    """A patient-wide part of patient "p" whose alerts come in two blocks of one (as another
    Avro writer may write them; fastavro writes one block): the hand reader leaves it to
    fastavro, which reads it."""

    def alert(code: bytes) -> bytes:
        return b"\x02" + code + b"\x02\x01\x02s\x02d\x00"

    return HEADER + b"\x02p\x00\x00" + b"\x02" + alert(b"c") + b"\x02" + alert(b"e") + b"\x00"


def counting_codec() -> tuple[PartCodec, list[str]]:
    """A PartCodec and what its fallback hooks heard ("encode", "decode"), in order."""
    heard: list[str] = []
    codec = PartCodec(
        on_encode_fallback=lambda: heard.append("encode"),
        on_decode_fallback=lambda: heard.append("decode"),
    )
    return codec, heard


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("error", (class, reason, message)): what a caller can tell apart."""
    try:
        return "ok", repr(call(*args))
    except Exception as exc:
        return "error", (type(exc).__name__, getattr(exc, "reason", None), str(exc))


class Text(str):
    """A str subclass: fastavro writes what its encode() returns."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"!" + str.encode(self, encoding, errors)


_TEXT = st.text(max_size=4) | st.text(min_size=60, max_size=70)  # one- and two-byte lengths
_UTC_MS = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
_LONG = st.integers(-(2**63), 2**63 - 1)
# what the store's own values never are, and the fast path leaves to fastavro
_ODD_TEXT = st.one_of(
    st.builds(Text, st.text(max_size=3)),
    st.integers(0, 3),
    st.none(),
    st.just("a\ud800"),  # a lone surrogate: no UTF-8 for it
    st.just(["x"]),  # unhashable (a remembered word is looked up by value)
)
_ODD_INT = st.one_of(
    st.booleans(), st.just(2**63), st.just(-(2**63) - 1), st.floats(0, 3), st.text(max_size=1)
)
_ODD_TIME = st.one_of(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    _UTC_MS.filter(lambda t: t.year > 1).map(
        lambda t: t.astimezone(dt.timezone(dt.timedelta(hours=-2)))
    ),
    st.integers(0, 99),
    st.dates(),
)


def _text(wild: bool) -> st.SearchStrategy[Any]:
    return _TEXT | _ODD_TEXT if wild else _TEXT


def _int(wild: bool, values: st.SearchStrategy[int] = _LONG) -> st.SearchStrategy[Any]:
    return values | _ODD_INT if wild else values


def _time(wild: bool) -> st.SearchStrategy[Any]:
    micro = _UTC_MS.map(lambda t: t.replace(microsecond=t.microsecond + 7))  # still encodes
    return _UTC_MS | micro | _ODD_TIME if wild else _UTC_MS


def _bool(wild: bool) -> st.SearchStrategy[Any]:
    return st.booleans() | st.sampled_from([0, 1, 2, "", "x", None]) if wild else st.booleans()


def _date(wild: bool) -> st.SearchStrategy[Any]:
    dates = st.dates()
    return dates | st.integers(-5, 5) | _UTC_MS if wild else dates


def _strings(draw: st.DrawFn, wild: bool) -> Any:
    values = tuple(draw(st.lists(_text(wild), max_size=3)))
    return draw(st.sampled_from([values, list(values)])) if wild else values


def _alerts(draw: st.DrawFn, wild: bool) -> Any:
    codes = draw(st.lists(st.text(max_size=3), max_size=3, unique=True))
    alerts = {
        c: AlertState(
            c,
            draw(_int(wild, st.integers(-(2**40), 2**40))),
            draw(_bool(wild)),
            draw(_text(wild)),
            draw(_text(wild)),
            _strings(draw, wild),
        )
        for c in codes
    }
    if wild and alerts and draw(st.booleans()):
        return list(alerts.values())  # not a dict: no .values()
    return alerts


@st.composite
def accessions(draw: st.DrawFn, wild: bool = False) -> Accession:
    """Accession parts: `wild` adds values of other types than the dataclasses declare."""
    report = AcceptedReport(
        draw(_text(wild)),
        draw(st.none() | _time(wild)),
        draw(_text(wild)),
        draw(_int(wild)),
        _strings(draw, wild),
        draw(_text(wild)),
        draw(st.none() | _date(wild)),
        draw(_text(wild)),
        draw(_bool(wild)),
        draw(st.none() | _text(wild)),
        draw(_bool(wild)),
        draw(st.none() | _text(wild)),
        draw(_int(wild)),
        draw(st.none() | _text(wild)),
    )
    prior = PriorEntry(
        draw(_text(wild)),
        draw(_int(wild)),
        draw(_text(wild)),
        draw(st.none() | _date(wild)),
        draw(_text(wild)),
    )
    now = draw(_time(wild))
    emitted = tuple(
        Published(
            draw(_text(wild)),
            draw(_text(wild)),
            draw(_int(wild, st.integers(-(2**31), 2**31 - 1))),
            draw(_text(wild)),
            draw(_text(wild)),
            draw(_text(wild)),
            draw(_int(wild, st.integers(0, 99))),
            draw(_text(wild)),
            draw(st.none() | _text(wild)),
            now if draw(st.booleans()) else draw(_time(wild)),  # an event's records share it
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    return Accession(
        draw(_text(wild)),
        report=draw(st.none() | st.just(report)),
        prior=draw(st.none() | st.just(prior)),
        alerts=_alerts(draw, wild),
        emitted=list(emitted) if wild and draw(st.booleans()) else emitted,  # type: ignore[arg-type]
    )


@st.composite
def patients(draw: st.DrawFn, wild: bool = False) -> PatientState:
    """Patient-wide parts (the accessions are other parts)."""
    return PatientState(draw(_text(wild)), draw(_int(wild)), _alerts(draw, wild))


class TestEncode:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_the_fast_path_writes_fastavros_bytes_or_nothing(self, data: st.DataObject) -> None:
        """Whatever it is given, the hand-written path either writes fastavro's bytes or
        leaves the part to fastavro; PartCodec's bytes and errors are fastavro's."""
        wild = data.draw(st.booleans())
        pid = data.draw(_text(wild))
        acc, state = data.draw(accessions(wild)), data.draw(patients(wild))
        for fast, reference, codec in (
            (
                lambda: binary.encode_accession(HEADER, pid, acc),
                lambda: fastavro_accession(pid, acc),
                lambda: part_codec().encode_accession(pid, acc),
            ),
            (
                lambda: binary.encode_patient(HEADER, state),
                lambda: fastavro_patient(state),
                lambda: part_codec().encode_patient(state),
            ),
        ):
            expected = outcome(reference)
            assert outcome(codec) == expected
            try:
                written = fast()
            except binary.NotFast:
                assert wild  # the store's own types always take the fast path
                continue
            assert ("ok", repr(written)) == expected

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(2**63, id="past-long-max"),
            pytest.param(-(2**63) - 1, id="past-long-min"),
            pytest.param(True, id="bool"),
            pytest.param(1.0, id="float"),
        ],
    )
    def test_an_int_it_does_not_take_goes_to_fastavro(self, value: Any) -> None:
        state = PatientState("p", value, {})
        with pytest.raises(binary.NotFast):
            binary.encode_patient(HEADER, state)
        assert outcome(part_codec().encode_patient, state) == outcome(fastavro_patient, state)

    @pytest.mark.parametrize("seq", [0, 63, 64, -1, -64, -65, 2**63 - 1, -(2**63), 300])
    def test_varints_at_their_edges(self, seq: int) -> None:
        state = PatientState("p", seq, {})
        assert binary.encode_patient(HEADER, state) == fastavro_patient(state)


class TestDecode:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(accessions(), patients())
    def test_the_fast_path_reads_what_fastavro_reads(
        self, acc: Accession, state: PatientState
    ) -> None:
        """The same parts: equal values of the same types in the same order (repr)."""
        for value in (fastavro_accession("p", acc), fastavro_patient(state)):
            assert repr(binary.decode(HEADER, value)) == repr(part_codec()._decode(value))

    @settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
    @given(accessions(), st.data())
    def test_a_damaged_value_reads_as_fastavro_reads_it(
        self, acc: Accession, data: st.DataObject
    ) -> None:
        """A byte changed, cut or added anywhere: the same part or the same error."""
        value = bytearray(fastavro_accession("p", acc))
        at = data.draw(st.integers(0, len(value) - 1))
        how = data.draw(st.sampled_from(["set", "cut", "add"]))
        if how == "set":
            value[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del value[at:]
        else:
            value[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        damaged = bytes(value)
        assert outcome(part_codec().decode, damaged) == outcome(part_codec()._decode, damaged)

    @given(st.binary(max_size=40))
    def test_any_bytes_read_as_fastavro_reads_them(self, value: bytes) -> None:
        for candidate in (value, HEADER + value):
            expected = outcome(part_codec()._decode, candidate)
            assert outcome(part_codec().decode, candidate) == expected

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"\x02p\x00\x00\x02\x02c\x00\x02\x02s\x02d\x00\x00", id="bool-byte-2"),
            pytest.param(b"\x02p\x00" + b"\xff" * 9 + b"\x02\x00", id="past-64-bits"),
            pytest.param(b"\x02p\x00" + b"\xff" * 10 + b"\x01\x00", id="eleven-byte-varint"),
            pytest.param(
                b"\x02p\x00\x00\x01\x14\x02c\x00\x01\x02s\x02d\x00\x00", id="negative-count"
            ),
            pytest.param(b"\x02p\x00\x00\x00\x00", id="left-over"),
            pytest.param(b"\x02p\x04", id="union-branch-2"),
            pytest.param(b"\x02\xff\x00\x00\x00", id="invalid-utf8"),
            pytest.param(b"\x03p\x00\x00\x00", id="negative-length"),
        ],
    )
    def test_what_it_does_not_take_goes_to_fastavro(self, body: bytes) -> None:
        value = HEADER + body
        with pytest.raises(Exception):  # noqa: B017, PT011 - NotFast or a read that failed
            binary.decode(HEADER, value)
        assert outcome(part_codec().decode, value) == outcome(part_codec()._decode, value)

    def test_arrays_in_several_blocks_read_as_fastavro_reads_them(self) -> None:
        value = several_blocks()
        with pytest.raises(binary.NotFast):  # single blocks only: the rest is fastavro's
            binary.decode(HEADER, value)
        assert repr(part_codec().decode(value)) == repr(part_codec()._decode(value))
        assert len(part_codec().decode(value)[1][1]) == 2  # type: ignore[arg-type]


class TestRecordsOfEarlierReleases:
    """Records written before 2026.12-3 (schemas/previous/patient_history.89c1149.avsc, without
    AcceptedReport.content) stay readable: by hand, as fastavro resolves them to this schema
    (content None), and no fallback is counted for them."""

    def test_the_shipped_earlier_schema_is_this_one_without_content(self) -> None:
        assert part_codec()._before_content == BEFORE_CONTENT_HEADER != HEADER

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(accessions())
    def test_an_earlier_accession_part_reads_with_content_none(self, acc: Accession) -> None:
        codec, heard = counting_codec()
        value = before_content_accession("p", acc)
        expected = replace(acc, report=replace(acc.report, content=None)) if acc.report else acc
        assert codec.decode(value) == ("p", expected)
        assert repr(codec.decode(value)) == repr(codec._decode(value))  # fastavro resolves so
        assert heard == []

    @settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
    @given(patients())
    def test_an_earlier_patient_part_reads_as_it_was_written(self, state: PatientState) -> None:
        codec, heard = counting_codec()
        part = {"seq": state.seq, "alerts": [_alert_out(a) for a in state.alerts.values()]}
        datum = {"patient_id": "p", "part": ("health.her2.state.PatientPart", part)}
        value = Encoder("single-object", BEFORE_CONTENT).encode(datum)
        assert repr(codec.decode(value)) == repr(codec._decode(value))
        assert codec.decode(value) == ("p", (state.seq, dict(state.alerts)))
        assert heard == []

    def test_a_store_restored_from_earlier_records_goes_on(self) -> None:
        """A patient restored from records of the earlier release: its next reports apply as
        before (a re-send of the report stored then is not yet known as one: nothing to compare
        it with), and the parts it changes are written with this schema."""
        pipeline = Pipeline(load_ruleset(), clock=lambda: dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
        events = SyntheticGenerator(seed=5).events(60)
        store = HistoryStore()
        for event in events:
            store.apply(copy.deepcopy(event), pipeline)
        records = store.take_dirty()
        old = HistoryStore()
        for key, value in records:
            part = part_codec().decode(value)[1] if value else None
            if isinstance(part, Accession):  # as the earlier release wrote it
                old.restore(key, before_content_accession(part_codec().decode(value)[0], part))
            else:
                old.restore(key, value)
        again = HistoryStore()
        for key, value in records:
            again.restore(key, value)
        pid = events[0]["patient_id"]
        before, now = old.get(pid), again.get(pid)
        assert before is not None
        assert now is not None
        assert replace(before, accessions={}) == replace(now, accessions={})
        for acc, part in now.accessions.items():
            report = replace(part.report, content=None) if part.report else None
            assert before.accessions[acc] == replace(part, report=report)
        at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        old.apply(copy.deepcopy({**events[0], "event_id": "later", "event_time": at}), pipeline)
        written = [value for _, value in old.take_dirty() if value]
        assert written
        assert all(value.startswith(HEADER) for value in written)


class TestFallbackHooks:
    """PartCodec's hooks (her2_consumer_codec_fallbacks_total, history_encode / history_decode)
    hear once of each part fastavro writes or reads in the hand-written path's place."""

    def test_a_part_left_to_fastavro_to_write_is_heard_once(self) -> None:
        codec, heard = counting_codec()
        state = PatientState(Text("p"), 1, {})  # a str subclass: NotFast
        assert codec.encode_patient(state) == fastavro_patient(state)
        assert heard == ["encode"]
        acc = Accession(Text("A1"))
        assert codec.encode_accession("p", acc) == fastavro_accession("p", acc)
        assert heard == ["encode", "encode"]

    def test_a_value_left_to_fastavro_to_read_is_heard_once(self) -> None:
        codec, heard = counting_codec()
        value = several_blocks()
        assert repr(codec.decode(value)) == repr(codec._decode(value))
        assert heard == ["decode"]

    def test_a_value_neither_reads_is_unreadable_not_a_fallback(self) -> None:
        codec, heard = counting_codec()
        with pytest.raises(HistoryRecordError):
            codec.decode(HEADER + b"\x02p\x04")  # union branch 2 of a two-branch union
        assert heard == []

    @settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
    @given(accessions(), patients())
    def test_the_stores_own_parts_are_never_heard(
        self, acc: Accession, state: PatientState
    ) -> None:
        codec, heard = counting_codec()
        for value in (codec.encode_accession("p", acc), codec.encode_patient(state)):
            codec.decode(value)
        assert heard == []

    def test_a_store_reads_with_its_own_codec(self) -> None:
        """Restore, and a read from the backend (nothing cached), decode with the store's
        codec, not the process's part_codec()."""
        codec, heard = counting_codec()
        store = HistoryStore(cache_patients=0, codec=codec)
        store.restore(patient_key("p"), several_blocks())
        assert heard == ["decode"]
        state = store.get("p")
        assert state is not None
        assert sorted(state.alerts) == ["c", "e"]
        assert heard == ["decode", "decode"]


def test_a_synthetic_run_takes_the_fast_path_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pipeline builds (and every changelog record it leads to) never falls back to
    fastavro, so the store's cost is the fast path's (and no fallback is counted)."""
    slow: list[str] = []
    codec, heard = counting_codec()
    for name in ("_encode_accession", "_encode_patient", "_decode"):
        original = getattr(codec, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            slow.append(_name)
            return _original(*args)

        monkeypatch.setattr(codec, name, counted)
    pipeline = Pipeline(
        load_ruleset(), clock=lambda: dt.datetime(2026, 3, 1, 12, 0, 0, 1000, dt.UTC)
    )
    store = HistoryStore(cache_patients=0, codec=codec)  # every patient read back is decoded
    changes = []
    for at, event in enumerate(SyntheticGenerator(seed=3).events(1200), 1):
        store.apply(copy.deepcopy(event), pipeline)
        if at % 100 == 0:
            changes += store.take_dirty()
    again = HistoryStore(codec=codec)
    for key, value in changes:
        again.restore(key, value)
    assert len(changes) > 1000
    assert slow == []
    assert heard == []
