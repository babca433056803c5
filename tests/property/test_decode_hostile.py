"""Property tests: the Decoder survives any bytes, and valid records round-trip exactly."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Decoder, Encoder
from consumer.avro.registry import SchemaRegistryClient
from consumer.avro.wire import (
    INPUT_FORMATS,
    frame_confluent,
    frame_single_object,
    schema_fingerprint,
)
from consumer.errors import DecodeError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema, raw_schema

MARKER = "PHI-MARKER-123"
KNOWN_ID = 1
READER = parsed_schema(PATHOLOGY_RESULT)
FINGERPRINT = schema_fingerprint(READER)


class StaticRegistry(SchemaRegistryClient):
    """A registry that knows one id (the reader schema) and never goes on the network."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")

    def get_schema(self, schema_id: int) -> Any:
        """Return the reader schema for KNOWN_ID; every other id is unknown."""
        if schema_id == KNOWN_ID:
            return READER
        raise DecodeError("unknown-schema-id", f"schema id {schema_id} is not registered")


REGISTRY = StaticRegistry()
DECODERS = {fmt: Decoder(fmt, READER, registry=REGISTRY) for fmt in INPUT_FORMATS}
ENCODERS = {
    fmt: Encoder(fmt, READER, registry=REGISTRY, subject="unused")
    for fmt in ("single-object", "raw")
}
SLOW_BUDGET_SECONDS = 2.0


def encode(output_format: str, datum: dict[str, Any]) -> bytes:
    """Frame `datum` in `output_format` (Confluent with the static registry's known id)."""
    if output_format == "confluent":
        return frame_confluent(KNOWN_ID, ENCODERS["raw"].encode(datum))
    return ENCODERS[output_format].encode(datum)


def input_format_for(output_format: str) -> str:
    """The decoder that reads `output_format` (raw cannot be auto-detected)."""
    return "raw" if output_format == "raw" else "auto"


# -- a strategy derived from the reader schema, so it follows the schema as it evolves ---------

STRINGS = st.one_of(st.just(MARKER), st.text(max_size=12))
TIMESTAMPS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda dt: dt.replace(microsecond=dt.microsecond // 1000 * 1000))
PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "string": STRINGS,
    "bytes": st.binary(max_size=12),
}


def strategy_for(
    schema: Any, named: dict[str, st.SearchStrategy[Any]], namespace: str = ""
) -> st.SearchStrategy[Any]:
    """Return a strategy of values valid for the Avro JSON `schema` (non-recursive schemas)."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return PRIMITIVES[schema]
        fullname = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
        return named[fullname]
    if isinstance(schema, list):
        return st.one_of([strategy_for(branch, named, namespace) for branch in schema])
    logical = schema.get("logicalType")
    if logical == "date":
        return st.dates()
    if logical == "timestamp-millis":
        return TIMESTAMPS
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        space = schema.get("namespace", namespace)
        name = schema["name"]
        fullname = name if "." in name else f"{space}.{name}".lstrip(".")
        if kind == "record":
            strategy: st.SearchStrategy[Any] = st.fixed_dictionaries(
                {f["name"]: strategy_for(f["type"], named, space) for f in schema["fields"]}
            )
        elif kind == "enum":
            strategy = st.sampled_from(schema["symbols"])
        else:
            strategy = st.binary(min_size=schema["size"], max_size=schema["size"])
        named[fullname] = strategy
        return strategy
    if kind == "array":
        return st.lists(strategy_for(schema["items"], named, namespace), max_size=3)
    if kind == "map":
        return st.dictionaries(
            STRINGS, strategy_for(schema["values"], named, namespace), max_size=3
        )
    return strategy_for(kind, named, namespace)


RESULTS = strategy_for(raw_schema(PATHOLOGY_RESULT), {}).map(
    lambda result: {**result, "patient_id": MARKER}
)
FORMATS = st.sampled_from(["single-object", "raw", "confluent"])


def decode_or_refuse(input_format: str, value: bytes) -> None:
    """Decode `value`: it may succeed or raise DecodeError, whose message holds no field data."""
    try:
        DECODERS[input_format].decode(value)
    except DecodeError as error:
        refusal = error
    else:
        return
    assert MARKER not in str(refusal)
    assert refusal.__context__ is None
    assert refusal.__cause__ is None


def zigzag(n: int) -> bytes:
    """Avro's zig-zag varint encoding of the long `n`."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class TestRoundTrip:
    """Valid records come back exactly."""

    @given(result=RESULTS, output_format=FORMATS)
    @settings(suppress_health_check=[HealthCheck.too_slow])
    def test_round_trip(self, result: dict[str, Any], output_format: str) -> None:
        value = encode(output_format, result)
        assert DECODERS[input_format_for(output_format)].decode(value) == result


class TestHostileBytes:
    """Whatever the bytes, decode returns a record or raises DecodeError, nothing else."""

    @given(value=st.binary(max_size=2048), input_format=st.sampled_from(INPUT_FORMATS))
    def test_arbitrary_bytes(self, value: bytes, input_format: str) -> None:
        decode_or_refuse(input_format, value)

    @given(
        prefix=st.sampled_from(
            [
                frame_confluent(KNOWN_ID, b""),
                frame_single_object(FINGERPRINT, b""),
                b"\x01",
                b"\xc3",
                b"\xc3\x01",
                b"\x00",
                b"",
            ]
        )
        | st.binary(min_size=4, max_size=4).map(lambda schema_id: b"\x00" + schema_id)
        | st.binary(min_size=8, max_size=8).map(lambda fp: frame_single_object(fp, b"")),
        tail=st.binary(max_size=512),
        input_format=st.sampled_from(INPUT_FORMATS),
    )
    def test_framing_prefix_and_random_tail(
        self, prefix: bytes, tail: bytes, input_format: str
    ) -> None:
        decode_or_refuse(input_format, prefix + tail)

    @given(result=RESULTS, output_format=FORMATS, data=st.data())
    @settings(suppress_health_check=[HealthCheck.too_slow])
    def test_mutated_valid_payloads(
        self, result: dict[str, Any], output_format: str, data: st.DataObject
    ) -> None:
        value = bytearray(encode(output_format, result))
        for _ in range(data.draw(st.integers(1, 4), label="mutations")):
            kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
            at = data.draw(st.integers(0, max(len(value) - 1, 0)), label="at")
            if kind == "flip" and value:
                value[at] ^= data.draw(st.integers(1, 255), label="xor")
            elif kind == "truncate":
                del value[at:]
            elif kind == "insert":
                value[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
            elif value:
                del value[at : at + data.draw(st.integers(1, 8), label="deleted")]
        decode_or_refuse(input_format_for(output_format), bytes(value))


MINIMAL: dict[str, Any] = {
    **{f["name"]: f.get("default") for f in raw_schema(PATHOLOGY_RESULT)["fields"]},
    "event_id": "evt-1",
    "event_time": datetime(2024, 1, 1, tzinfo=UTC),
    "patient_id": MARKER,
    "accession_id": "S1",
    "report_status": "FINAL",
}


def with_event_id_length(length: int) -> bytes:
    """A single-object record whose event_id claims `length` bytes (few follow)."""
    placeholder = "QQQQQQQQ"
    body = ENCODERS["raw"].encode({**MINIMAL, "event_id": placeholder})
    return frame_single_object(
        FINGERPRINT, body.replace(b"\x10" + placeholder.encode(), zigzag(length), 1)
    )


def with_prior_results_count(count: int) -> bytes:
    """A single-object record whose last array (prior_her2_results) claims `count` items."""
    body = ENCODERS["raw"].encode({**MINIMAL, "prior_her2_results": []})
    assert body.endswith(b"\x00")  # prior_her2_results is last: an empty array is one 0 byte
    return frame_single_object(FINGERPRINT, body[:-1] + zigzag(count) + b"\x02" * 16)


class TestHostileLengths:
    """A huge length or count on a small payload fails fast, without allocating its size."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(with_event_id_length(2**40), id="string-2**40"),
            pytest.param(with_event_id_length(2**62), id="string-2**62"),
            pytest.param(with_event_id_length(-(2**40)), id="string-negative"),
            pytest.param(with_prior_results_count(2**40), id="array-2**40"),
            pytest.param(with_prior_results_count(2**62), id="array-2**62"),
            pytest.param(with_prior_results_count(-(2**40)), id="array-negative-block"),
        ],
    )
    def test_fails_fast_and_small(self, value: bytes) -> None:
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(DecodeError) as caught:
                DECODERS["auto"].decode(value)
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert caught.value.reason == "avro-decode"
        assert elapsed < SLOW_BUDGET_SECONDS
        assert peak < 5 * 1024 * 1024

    @given(length=st.integers(2**20, 2**63 - 1) | st.integers(-(2**63), -1))
    def test_any_huge_length(self, length: int) -> None:
        for value in (with_event_id_length(length), with_prior_results_count(length)):
            started = time.perf_counter()
            decode_or_refuse("auto", value)
            assert time.perf_counter() - started < SLOW_BUDGET_SECONDS
