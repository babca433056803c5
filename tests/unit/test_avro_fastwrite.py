"""consumer/avro/fastwrite.py: a writer compiled from an output schema writes exactly fastavro's
bytes, and whatever it is not sure of is left to fastavro (NotFast), so Encoder's bytes and
errors are those of fastavro alone; the service's own outputs always take the fast path."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Decoder, Encoder
from consumer.avro.fastwrite import NotFast, compile_writer
from consumer.avro.outputs import Codecs
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import check_event
from consumer.config import Settings
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    PATIENT_HISTORY,
    parsed_schema,
)
from consumer.state.backends import MEMORY
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

OUTPUTS = {"classification": HER2_CLASSIFICATION, "alert": HER2_ALERT}
FORMATS = ("raw", "single-object")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 1000, dt.UTC)


class Text(str):
    """A str subclass: fastavro writes what its encode() returns."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"!" + str.encode(self, encoding, errors)


class Record(dict[str, Any]):
    """A dict subclass."""


def reference(schema: Any, datum: Any) -> bytes:
    """fastavro's body for `datum`."""
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, schema, datum)
    return fo.getvalue()


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("error", (class, message)): what a caller can tell apart."""
    try:
        return "ok", call(*args)
    except Exception as exc:
        return "error", (type(exc).__name__, str(exc))


def assert_like_fastavro(schema: Any, datum: Any) -> None:
    """Encoder.encode gives the same bytes or the same error with and without the fast path."""
    for fmt in FORMATS:
        fast, plain = Encoder(fmt, schema), Encoder(fmt, schema, fast=False)
        assert fast._fast is not None
        assert plain._fast is None
        assert outcome(fast.encode, datum) == outcome(plain.encode, datum)


# -- hypothesis strategies derived from a parsed schema ------------------------------------------

_TEXT = st.one_of(
    st.text(max_size=8),  # any unicode but lone surrogates, "" included
    st.just(""),
    st.text(min_size=60, max_size=70),  # one- and two-byte lengths
    st.text(min_size=1, max_size=2).map(lambda s: s * 700),  # past the precomputed lengths
)
_INTS = st.integers(INT_MIN, INT_MAX) | st.sampled_from([INT_MIN, INT_MAX, 0, -1, 63, 64, -65])
_LONGS = st.integers(LONG_MIN, LONG_MAX) | st.sampled_from(
    [LONG_MIN, LONG_MAX, 2**31, -(2**31) - 1]
)
_TIMES = st.datetimes(timezones=st.just(dt.UTC))  # year 1 to 9999, any microsecond
# hostile values by kind: what the outputs never hold (the fast path leaves them to fastavro)
_ODD: dict[str, list[Any]] = {
    "string": [Text("x"), b"x", 1, None, "\ud800", ["x"]],
    "int": [True, False, 1.0, INT_MAX + 1, INT_MIN - 1, "1", None, LONG_MAX + 1],
    "long": [True, 1.0, LONG_MAX + 1, LONG_MIN - 1, "1", None],
    "boolean": [0, 1, "", "x", None],
    "enum": [Text("X"), "no-such-symbol", 0, None, ["X"]],
    "array": [(), ("x",), "x", None, {"x": 1}],
    "map": [[("k", 1)], {1: 1}, None],
    "timestamp": [
        dt.datetime(2026, 3, 1, 12),  # naive: fastavro reads the local time zone
        T0.astimezone(dt.timezone(dt.timedelta(hours=2))),
        dt.date(2026, 3, 1),
        1_700_000_000_000,
        1.5,
        "2026-03-01",
    ],
    "record": [None, [], Record(), ("x", {})],
}


_PRIMITIVE: dict[str, st.SearchStrategy[Any]] = {
    "string": _TEXT,
    "int": _INTS,
    "long": _LONGS,
    "boolean": st.booleans(),
    "null": st.none(),
    "timestamp": _TIMES,
}


def _kind(node: Any, named: dict[str, Any]) -> tuple[str, Any]:
    """(kind, node) of a schema node, named references resolved."""
    while isinstance(node, str) and node in named:
        node = named[node]
    if isinstance(node, list):
        return "union", node
    if isinstance(node, str):
        return node, node
    if node.get("logicalType") == "timestamp-millis":
        return "timestamp", node
    return node["type"], node


def datums(node: Any, named: dict[str, Any], wild: bool = False) -> st.SearchStrategy[Any]:
    """Values of a schema node; `wild` mixes in values of other types, out of range, unknown
    symbols and records with a key missing or added, at any depth."""
    kind, node = _kind(node, named)
    valid: st.SearchStrategy[Any]
    if kind == "union":
        other = next(branch for branch in node if branch != "null")
        valid = st.none() | datums(other, named, wild)
    elif kind == "record":
        fields = {f["name"]: datums(f["type"], named, wild) for f in node["fields"]}
        valid = st.fixed_dictionaries(fields)
        if wild:
            valid = valid | st.fixed_dictionaries(fields).flatmap(_damaged)
    elif kind == "array":
        valid = st.lists(datums(node["items"], named, wild), max_size=4)
    elif kind == "map":
        valid = st.dictionaries(_TEXT, datums(node["values"], named, wild), max_size=3)
    elif kind == "enum":
        valid = st.sampled_from(node["symbols"])
    else:
        valid = _PRIMITIVE[kind]
    if not wild or kind == "union":
        return valid
    return valid | st.sampled_from(_ODD.get(kind, [object()]))


def _damaged(record: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The record with one key removed, or one added."""
    names = sorted(record)
    removed = st.sampled_from(names).map(lambda n: {k: v for k, v in record.items() if k != n})
    added = st.sampled_from(["extra", "-type", names[0].upper()]).map(lambda k: {**record, k: 1})
    return removed | added if names else added


# -- the real output schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OUTPUTS), ids=list(OUTPUTS))
class TestOutputSchemas:
    def test_they_compile(self, name: str) -> None:
        assert compile_writer(parsed_schema(OUTPUTS[name])) is not None

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_valid_datums_give_fastavros_bytes(self, name: str, data: st.DataObject) -> None:
        schema = parsed_schema(OUTPUTS[name])
        writer = compile_writer(schema)
        assert writer is not None
        datum = data.draw(datums(schema, schema["__named_schemas"]))
        body = reference(schema, datum)
        assert writer(datum) == body
        assert writer(datum) == body  # again: the remembered strings and times
        for fmt in FORMATS:
            fast, plain = Encoder(fmt, schema), Encoder(fmt, schema, fast=False)
            assert fast.encode(datum) == plain.encode(datum)

    @settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_any_datum_encodes_as_fastavro_alone(self, name: str, data: st.DataObject) -> None:
        """Hostile values at any depth: the same bytes, or the same SchemaError."""
        schema = parsed_schema(OUTPUTS[name])
        assert_like_fastavro(schema, data.draw(datums(schema, schema["__named_schemas"], True)))

    def test_every_enum_symbol(self, name: str) -> None:
        schema = parsed_schema(OUTPUTS[name])
        writer = compile_writer(schema)
        assert writer is not None
        base = service_outputs()[name][0]
        enums = [f for f in schema["fields"] if _kind(f["type"], {})[0] == "enum"]
        assert enums
        for field in enums:
            for symbol in field["type"]["symbols"]:
                datum = {**base, field["name"]: symbol}
                assert writer(datum) == reference(schema, datum), (field["name"], symbol)


def test_other_schemas_stay_with_fastavro() -> None:
    """The input and changelog schemas use constructs outside the subset (dates, unions of
    records): their encoders, references in other tests, are fastavro alone."""
    assert compile_writer(parsed_schema(PATHOLOGY_RESULT)) is None
    assert compile_writer(parsed_schema(PATIENT_HISTORY)) is None
    assert Encoder("single-object", parsed_schema(PATIENT_HISTORY))._fast is None


# -- hostile datums, one at a time ----------------------------------------------------------------

_CLS, _ALERT = "classification", "alert"


def _set(field: str, value: Any) -> Any:
    return lambda d: {**d, field: value}


def _drop(field: str) -> Any:
    return lambda d: {k: v for k, v in d.items() if k != field}


HOSTILE = [
    pytest.param(_CLS, _set("event_id", Text("e")), id="str-subclass"),
    pytest.param(_CLS, _set("event_id", b"e"), id="bytes-for-string"),
    pytest.param(_CLS, _set("event_id", 7), id="int-for-string"),
    pytest.param(_CLS, _set("event_id", None), id="none-for-string"),
    pytest.param(_CLS, _set("event_id", "a\ud800b"), id="lone-surrogate"),
    pytest.param(_CLS, _set("ihc_score", Text("THREE_PLUS")), id="str-subclass-in-union"),
    pytest.param(_CLS, _set("ihc_score", 3), id="int-in-string-union"),
    pytest.param(_CLS, _set("ihc_score", ("string", "x")), id="union-tuple-notation"),
    pytest.param(_CLS, _set("er_low", 0), id="int-for-boolean"),
    pytest.param(_CLS, _set("er_low", 1), id="one-for-boolean"),
    pytest.param(_CLS, _set("er_low", None), id="none-for-boolean"),
    pytest.param(_CLS, _set("er_low", "yes"), id="str-for-boolean"),
    pytest.param(_CLS, _set("ish_group", True), id="bool-for-int-in-union"),
    pytest.param(_CLS, _set("ish_group", 2.0), id="float-for-int-in-union"),
    pytest.param(_CLS, _set("ish_group", INT_MAX + 1), id="past-int-max-in-union"),
    pytest.param(_CLS, _set("ish_group", INT_MIN - 1), id="past-int-min-in-union"),
    pytest.param(_ALERT, _set("revision", True), id="bool-for-int"),
    pytest.param(_ALERT, _set("revision", 1.0), id="float-for-int"),
    pytest.param(_ALERT, _set("revision", INT_MAX + 1), id="past-int-max"),
    pytest.param(_ALERT, _set("revision", INT_MIN - 1), id="past-int-min"),
    pytest.param(_ALERT, _set("revision", LONG_MAX + 1), id="past-long-max-for-int"),
    pytest.param(_ALERT, _set("revision", "1"), id="str-for-int"),
    pytest.param(_CLS, _set("category", "POSITIVE!"), id="unknown-enum-symbol"),
    pytest.param(_CLS, _set("category", "positive"), id="enum-symbol-lower-case"),
    pytest.param(_CLS, _set("category", Text("POSITIVE")), id="enum-str-subclass"),
    pytest.param(_CLS, _set("category", 0), id="enum-index"),
    pytest.param(_CLS, _set("category", None), id="none-for-enum"),
    pytest.param(_CLS, _set("category", ["POSITIVE"]), id="unhashable-for-enum"),
    pytest.param(_ALERT, _set("evidence", ("a", "b")), id="tuple-for-array"),
    pytest.param(_ALERT, _set("evidence", ()), id="empty-tuple-for-array"),
    pytest.param(_ALERT, _set("evidence", "ab"), id="str-for-array"),
    pytest.param(_ALERT, _set("evidence", None), id="none-for-array"),
    pytest.param(_ALERT, _set("evidence", ["a", 1]), id="int-in-array"),
    pytest.param(_ALERT, _set("evidence", ["a", Text("b")]), id="str-subclass-in-array"),
    pytest.param(_ALERT, _set("created_at", dt.datetime(2026, 3, 1, 12)), id="naive-datetime"),
    pytest.param(
        _ALERT,
        _set("created_at", T0.astimezone(dt.timezone(dt.timedelta(hours=2)))),
        id="non-utc-datetime",
    ),
    pytest.param(_ALERT, _set("created_at", 1_700_000_000_000), id="int-for-timestamp"),
    pytest.param(_ALERT, _set("created_at", dt.date(2026, 3, 1)), id="date-for-timestamp"),
    pytest.param(_ALERT, _set("created_at", None), id="none-for-timestamp"),
    pytest.param(_CLS, _set("event_time", dt.datetime(2026, 3, 1)), id="naive-datetime-in-union"),
    pytest.param(_CLS, _set("event_time", 5), id="int-for-timestamp-in-union"),
    pytest.param(_CLS, _drop("event_id"), id="missing-key"),
    pytest.param(_CLS, _drop("ihc_score"), id="missing-key-with-default"),
    pytest.param(_CLS, _drop("er_low"), id="missing-boolean-with-default"),
    pytest.param(_CLS, _set("extra", 1), id="extra-key"),
    pytest.param(_CLS, _set("-type", "health.her2.out.Her2Classification"), id="type-hint-key"),
    pytest.param(_CLS, lambda d: {**_drop("guidance")(d), "Guidance": "x"}, id="renamed-key"),
    pytest.param(_CLS, Record, id="dict-subclass"),
    pytest.param(_CLS, lambda d: list(d.items()), id="pairs-for-record"),
    pytest.param(_CLS, lambda d: None, id="none-for-record"),
]


@pytest.mark.parametrize(("name", "damage"), HOSTILE)
def test_a_hostile_datum_is_left_to_fastavro(name: str, damage: Any) -> None:
    schema = parsed_schema(OUTPUTS[name])
    writer = compile_writer(schema)
    assert writer is not None
    datum = damage(service_outputs()[name][0])
    with pytest.raises(NotFast):
        writer(datum)
    assert_like_fastavro(schema, datum)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        pytest.param(_ALERT, "revision", INT_MAX, id="int-max"),
        pytest.param(_ALERT, "revision", INT_MIN, id="int-min"),
        pytest.param(_ALERT, "revision", 0, id="zero"),
        pytest.param(_ALERT, "revision", -1, id="minus-one"),
        pytest.param(_ALERT, "rule_version", 1023, id="last-precomputed"),
        pytest.param(_ALERT, "rule_version", 1024, id="first-computed"),
        pytest.param(_CLS, "ish_group", INT_MAX, id="int-max-in-union"),
        pytest.param(_CLS, "ish_group", INT_MIN, id="int-min-in-union"),
        pytest.param(_ALERT, "created_at", dt.datetime.min.replace(tzinfo=dt.UTC), id="time-min"),
        pytest.param(_ALERT, "created_at", dt.datetime.max.replace(tzinfo=dt.UTC), id="time-max"),
        pytest.param(_ALERT, "created_at", dt.datetime(1969, 12, 31, 23, 59, 59, 999, dt.UTC)),
        pytest.param(_ALERT, "evidence", [], id="empty-array"),
        pytest.param(_ALERT, "evidence", [""] * 64, id="array-of-64"),
        pytest.param(_ALERT, "detail", "é" * 600, id="long-unicode-string"),
        pytest.param(_ALERT, "detail", "", id="empty-string"),
        pytest.param(_CLS, "ihc_score", "", id="empty-string-in-union"),
    ],
)
def test_values_at_the_edges(name: str, field: str, value: Any) -> None:
    schema = parsed_schema(OUTPUTS[name])
    writer = compile_writer(schema)
    assert writer is not None
    datum = {**service_outputs()[name][0], field: value}
    assert writer(datum) == reference(schema, datum)
    assert_like_fastavro(schema, datum)


def test_remembered_values_never_pass_for_others() -> None:
    """A string or a time written once is remembered; an equal value of another type or time
    zone still goes to fastavro, and a field past its memory's size still writes right."""
    schema = parsed_schema(HER2_ALERT)
    writer = compile_writer(schema)
    assert writer is not None
    base = service_outputs()[_ALERT][0]
    writer({**base, "title": "t", "created_at": T0})
    for datum in (
        {**base, "title": Text("t")},
        {**base, "created_at": T0.astimezone(dt.timezone(dt.timedelta(hours=-3)))},
    ):
        with pytest.raises(NotFast):
            writer(datum)
        assert_like_fastavro(schema, datum)
    for i in range(600):  # past _KNOWN_MAX distinct values and times
        datum = {**base, "alert_id": f"id-{i}", "created_at": T0 + dt.timedelta(milliseconds=i)}
        assert writer(datum) == reference(schema, datum)


# -- synthetic schemas: each supported construct, and what is refused -----------------------------


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "test.R",
        "fields": [{"name": name, "type": kind} for name, kind in fields],
    }


_ENUM = {"type": "enum", "name": "test.E", "symbols": ["A", "B", "C"]}
_INNER = {"type": "record", "name": "test.Inner", "fields": [{"name": "s", "type": "string"}]}
_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}

SUPPORTED = [
    pytest.param(_record(), {}, id="empty-record"),
    pytest.param(_record(("n", "null")), {"n": None}, id="null"),
    pytest.param(_record(("b", "boolean")), {"b": True}, id="boolean"),
    pytest.param(_record(("i", "int")), {"i": -(2**31)}, id="int"),
    pytest.param(_record(("l", "long")), {"l": 2**63 - 1}, id="long"),
    pytest.param(_record(("s", "string")), {"s": "héllo"}, id="string"),
    pytest.param(_record(("s", {"type": "string"})), {"s": "x"}, id="string-as-dict"),
    pytest.param(_record(("e", _ENUM)), {"e": "C"}, id="enum"),
    pytest.param(_record(("e", _ENUM), ("f", "test.E")), {"e": "A", "f": "B"}, id="named-ref"),
    pytest.param(_record(("u", ["null", "long"])), {"u": None}, id="union-null-first-none"),
    pytest.param(_record(("u", ["null", "long"])), {"u": -5}, id="union-null-first-value"),
    pytest.param(_record(("u", ["string", "null"])), {"u": None}, id="union-null-last-none"),
    pytest.param(_record(("u", ["string", "null"])), {"u": "x"}, id="union-null-last-value"),
    pytest.param(_record(("u", ["null", _INNER])), {"u": {"s": "x"}}, id="union-with-record"),
    pytest.param(_record(("a", {"type": "array", "items": "int"})), {"a": [1, -1]}, id="array"),
    pytest.param(
        _record(("a", {"type": "array", "items": _INNER})),
        {"a": [{"s": "x"}, {"s": ""}]},
        id="array-of-records",
    ),
    pytest.param(
        _record(("m", {"type": "map", "values": "long"})), {"m": {"k": 1, "é": -2}}, id="map"
    ),
    pytest.param(_record(("m", {"type": "map", "values": "long"})), {"m": {}}, id="empty-map"),
    pytest.param(_record(("r", _INNER)), {"r": {"s": "x"}}, id="nested-record"),
    pytest.param(_record(("t", _MILLIS)), {"t": T0}, id="timestamp-millis"),
    pytest.param(_record(("t", ["null", _MILLIS])), {"t": T0}, id="timestamp-in-union"),
]


@pytest.mark.parametrize(("schema", "datum"), SUPPORTED)
def test_each_supported_construct(schema: dict[str, Any], datum: dict[str, Any]) -> None:
    parsed = fastavro.parse_schema(schema)
    writer = compile_writer(parsed)
    assert writer is not None
    assert writer(datum) == reference(parsed, datum)
    assert_like_fastavro(parsed, datum)


_LONG = _record(("l", "long"))
_MAP = _record(("m", {"type": "map", "values": "long"}))

SYNTHETIC_HOSTILE = [
    pytest.param(_LONG, {"l": True}, id="bool-for-long"),
    pytest.param(_LONG, {"l": 1.0}, id="float-for-long"),
    pytest.param(_LONG, {"l": "1"}, id="str-for-long"),
    pytest.param(_LONG, {"l": LONG_MAX + 1}, id="past-long-max"),
    pytest.param(_LONG, {"l": LONG_MIN - 1}, id="past-long-min"),
    pytest.param(_record(("u", ["null", "long"])), {"u": False}, id="bool-for-long-in-union"),
    pytest.param(_record(("u", ["null", "long"])), {"u": 2**63}, id="past-long-max-in-union"),
    pytest.param(_record(("n", "null")), {"n": 0}, id="zero-for-null"),
    pytest.param(_record(("n", "null")), {"n": ""}, id="empty-string-for-null"),
    pytest.param(_MAP, {"m": [("k", 1)]}, id="pairs-for-map"),
    pytest.param(_MAP, {"m": Record(k=1)}, id="dict-subclass-for-map"),
    pytest.param(_MAP, {"m": {1: 1}}, id="int-key"),
    pytest.param(_MAP, {"m": {Text("k"): 1}}, id="str-subclass-key"),
    pytest.param(_MAP, {"m": {"k": True}}, id="bool-value"),
    pytest.param(_MAP, {"m": None}, id="none-for-map"),
    pytest.param(_record(("r", _INNER)), {"r": {"s": 1}}, id="nested-wrong-type"),
    pytest.param(_record(("r", _INNER)), {"r": {}}, id="nested-missing-key"),
    pytest.param(
        _record(("a", {"type": "array", "items": _INNER})),
        {"a": [{"s": "x"}, {"s": "y", "t": 1}]},
        id="extra-key-in-array-item",
    ),
]


@pytest.mark.parametrize(("schema", "datum"), SYNTHETIC_HOSTILE)
def test_a_hostile_datum_of_a_synthetic_schema(schema: dict[str, Any], datum: Any) -> None:
    parsed = fastavro.parse_schema(schema)
    writer = compile_writer(parsed)
    assert writer is not None
    with pytest.raises(NotFast):
        writer(datum)
    assert_like_fastavro(parsed, datum)


UNSUPPORTED = [
    pytest.param(_record(("f", "float")), id="float"),
    pytest.param(_record(("d", "double")), id="double"),
    pytest.param(_record(("b", "bytes")), id="bytes"),
    pytest.param(_record(("f", {"type": "fixed", "name": "test.F", "size": 2})), id="fixed"),
    pytest.param(_record(("u", ["null", "string", "int"])), id="union-of-three"),
    pytest.param(_record(("u", ["string", "int"])), id="union-without-null"),
    pytest.param(_record(("u", ["null", "float"])), id="union-of-unsupported"),
    pytest.param(_record(("d", {"type": "int", "logicalType": "date"})), id="date"),
    pytest.param(_record(("t", {"type": "long", "logicalType": "timestamp-micros"})), id="micros"),
    pytest.param(_record(("u", {"type": "string", "logicalType": "uuid"})), id="uuid"),
    pytest.param(_record(("x", {"type": "long", "logicalType": "no-such-type"})), id="unknown"),
    pytest.param(_record(("a", {"type": "array", "items": "double"})), id="array-of-double"),
    pytest.param(_record(("m", {"type": "map", "values": "bytes"})), id="map-of-bytes"),
    pytest.param(
        {
            "type": "record",
            "name": "test.Node",
            "fields": [{"name": "next", "type": ["null", "test.Node"]}],
        },
        id="recursive-record",
    ),
    pytest.param("string", id="not-a-record"),
    pytest.param({"type": "enum", "name": "test.Top", "symbols": ["A"]}, id="enum-at-top"),
]


@pytest.mark.parametrize("schema", UNSUPPORTED)
def test_an_unsupported_construct_is_refused(schema: Any) -> None:
    parsed = fastavro.parse_schema(schema)
    assert compile_writer(parsed) is None
    assert Encoder("raw", parsed)._fast is None


# -- the service's own outputs --------------------------------------------------------------------

_OUTPUTS_CACHE: dict[str, list[dict[str, Any]]] = {}


def service_outputs() -> dict[str, list[dict[str, Any]]]:
    """The classifications and alerts of 1,500 synthetic events, each decoded from its Avro
    value, validated and applied to a history store as the service does (built once)."""
    if not _OUTPUTS_CACHE:
        schema = parsed_schema(PATHOLOGY_RESULT)
        encoder, decoder = Encoder("single-object", schema), Decoder("single-object", schema)
        pipeline = Pipeline(load_ruleset(), clock=lambda: T0)
        store = HistoryStore()
        classifications, alerts = [], []
        for event in SyntheticGenerator(seed=3).events(1500):
            outcome = store.apply(check_event(decoder.decode(encoder.encode(event))), pipeline)
            classifications.append(outcome.classification)
            alerts += outcome.alerts
        _OUTPUTS_CACHE.update(classification=classifications, alert=alerts)
    return _OUTPUTS_CACHE


def test_the_service_outputs_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every classification and alert of a synthetic run is written by the compiled writer
    (fastavro is never called) with fastavro's bytes: a change that sends the outputs back to
    fastavro, a guard too strict for a real value or a writer gone wrong fails here."""
    outputs = service_outputs()
    alerts = outputs[_ALERT]
    assert {a["status"] for a in alerts} == {"ACTIVE", "RESOLVED", "RETRACTED"}
    heard: list[None] = []  # the output fallbacks counted (her2_consumer_codec_fallbacks_total)
    codecs = Codecs.build(
        Settings(state_dir=tmp_path, history_store=MEMORY),
        None,
        on_fallback=lambda: heard.append(None),
    )
    encoders = {_CLS: codecs.classification, _ALERT: next(iter(codecs.alerts.values()))}
    expected = {
        name: [encoders[name]._header + reference(encoders[name]._schema, d) for d in records]
        for name, records in outputs.items()
    }
    slow: list[Any] = []
    monkeypatch.setattr(fastavro, "schemaless_writer", lambda *args: slow.append(args))
    for name, records in outputs.items():
        assert [encoders[name].encode(d) for d in records] == expected[name]
    assert slow == []
    assert heard == []
    assert len(outputs[_CLS]) == 1500
    assert len(alerts) > 1000


# -- the fallback hook (her2_consumer_codec_fallbacks_total{codec="output"}) ---------------------


@pytest.mark.parametrize(
    ("name", "damage", "written"),
    [
        pytest.param(_CLS, _set("event_id", Text("e")), True, id="str-subclass"),
        pytest.param(_ALERT, _set("evidence", ("a", "b")), True, id="tuple-for-array"),
        pytest.param(_CLS, _set("category", "POSITIVE!"), False, id="unknown-enum-symbol"),
    ],
)
def test_a_datum_left_to_fastavro_is_heard_once(name: str, damage: Any, written: bool) -> None:
    """Written by fastavro (its bytes, as without the fast path) or refused by it (its error):
    the encoder's `on_fallback` hears of it once either way."""
    schema = parsed_schema(OUTPUTS[name])
    datum = damage(service_outputs()[name][0])
    heard: list[None] = []
    encoder = Encoder("single-object", schema, on_fallback=lambda: heard.append(None))
    done = outcome(encoder.encode, datum)
    assert done == outcome(Encoder("single-object", schema, fast=False).encode, datum)
    assert (done[0] == "ok") is written
    assert heard == [None]


def test_codecs_hand_the_fallback_hook_to_every_output_encoder(tmp_path: Path) -> None:
    heard: list[None] = []
    codecs = Codecs.build(
        Settings(state_dir=tmp_path, history_store=MEMORY),
        None,
        on_fallback=lambda: heard.append(None),
    )
    outputs = service_outputs()
    codecs.classification.encode(_set("event_id", Text("e"))(outputs[_CLS][0]))
    for encoder in codecs.alerts.values():
        encoder.encode(_set("title", Text("t"))(outputs[_ALERT][0]))
    assert len(codecs.alerts) == 4
    assert len(heard) == 1 + len(codecs.alerts)
