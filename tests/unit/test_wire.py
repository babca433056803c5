"""Unit tests of consumer.avro.wire: the three framings and the single-object fingerprint."""

from __future__ import annotations

from typing import Any

import pytest
from fastavro.schema import to_parsing_canonical_form

from consumer.avro.wire import (
    Frame,
    frame_confluent,
    frame_single_object,
    schema_fingerprint,
    unframe,
)
from consumer.errors import DecodeError
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    parsed_schema,
)

FP = bytes(range(1, 9))


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification's reference code computes it (not fastavro's)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


class TestSchemaFingerprint:
    """The 8 header bytes of single-object encoding."""

    def test_reference_rabin_matches_the_published_vector(self) -> None:
        # "int" -> 0x7275d51a3f395c8f, written little-endian as 8f 5c 39 3f 1a d5 75 72 by the
        # Java, Rust and Python Avro implementations.
        assert rabin64(b'"int"') == 0x7275D51A3F395C8F

    def test_header_bytes_of_int_are_little_endian(self) -> None:
        assert schema_fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")

    @pytest.mark.parametrize(
        ("schema", "canonical"),
        [
            pytest.param("null", b'"null"', id="null"),
            pytest.param({"type": "long"}, b'"long"', id="long-as-object"),
            pytest.param(
                {
                    "type": "record",
                    "name": "trade",
                    "namespace": "ex",
                    "doc": "ignored",
                    "fields": [{"name": "qty", "type": "long", "doc": "ignored too"}],
                },
                b'{"name":"ex.trade","type":"record","fields":[{"name":"qty","type":"long"}]}',
                id="record-canonicalised",
            ),
        ],
    )
    def test_matches_reference_rabin_of_canonical_form(self, schema: Any, canonical: bytes) -> None:
        assert schema_fingerprint(schema) == rabin64(canonical).to_bytes(8, "little")

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param(PATHOLOGY_RESULT, id="pathology-result"),
            pytest.param(HER2_CLASSIFICATION, id="her2-classification"),
            pytest.param(HER2_ALERT, id="her2-alert"),
        ],
    )
    def test_project_schemas(self, name: str) -> None:
        canonical = to_parsing_canonical_form(parsed_schema(name)).encode()
        assert schema_fingerprint(parsed_schema(name)) == rabin64(canonical).to_bytes(8, "little")


class TestFraming:
    """Building framed values."""

    @pytest.mark.parametrize(
        ("schema_id", "expected"),
        [
            pytest.param(0, b"\x00\x00\x00\x00\x00body", id="zero"),
            pytest.param(0x01020304, b"\x00\x01\x02\x03\x04body", id="big-endian"),
            pytest.param(2**31 - 1, b"\x00\x7f\xff\xff\xffbody", id="max"),
        ],
    )
    def test_confluent(self, schema_id: int, expected: bytes) -> None:
        assert frame_confluent(schema_id, b"body") == expected

    @pytest.mark.parametrize(
        "schema_id",
        [pytest.param(-1, id="negative"), pytest.param(2**31, id="too-large")],
    )
    def test_confluent_rejects_ids_outside_the_header(self, schema_id: int) -> None:
        with pytest.raises(ValueError, match="schema id"):
            frame_confluent(schema_id, b"")

    def test_single_object(self) -> None:
        assert frame_single_object(FP, b"body") == b"\xc3\x01" + FP + b"body"

    def test_single_object_needs_eight_fingerprint_bytes(self) -> None:
        with pytest.raises(ValueError, match="8 bytes"):
            frame_single_object(b"\x01\x02", b"body")


class TestUnframe:
    """Splitting values by input format."""

    @pytest.mark.parametrize(
        ("value", "input_format", "expected"),
        [
            pytest.param(
                b"\x00\x00\x00\x00\x07body",
                "auto",
                Frame("confluent", 7, None, b"body"),
                id="auto-confluent",
            ),
            pytest.param(
                b"\x00\x01\x02\x03\x04body",
                "confluent",
                Frame("confluent", 0x01020304, None, b"body"),
                id="confluent-id-big-endian",
            ),
            pytest.param(
                b"\x00\x00\x00\x00\x07",
                "auto",
                Frame("confluent", 7, None, b""),
                id="confluent-empty-body",
            ),
            pytest.param(
                b"\xc3\x01" + FP + b"body",
                "auto",
                Frame("single-object", None, FP, b"body"),
                id="auto-single-object",
            ),
            pytest.param(
                b"\xc3\x01" + FP + b"body",
                "single-object",
                Frame("single-object", None, FP, b"body"),
                id="single-object",
            ),
            pytest.param(
                b"\x00\x01anything",
                "raw",
                Frame("raw", None, None, b"\x00\x01anything"),
                id="raw-takes-any-bytes",
            ),
        ],
    )
    def test_frames(self, value: bytes, input_format: str, expected: Frame) -> None:
        assert unframe(value, input_format) == expected

    @pytest.mark.parametrize(
        ("value", "input_format", "reason"),
        [
            pytest.param(None, "auto", "empty-value", id="none-auto"),
            pytest.param(b"", "auto", "empty-value", id="empty-auto"),
            pytest.param(b"", "raw", "empty-value", id="empty-raw"),
            pytest.param(None, "confluent", "empty-value", id="none-confluent"),
            pytest.param(b"", "single-object", "empty-value", id="empty-single-object"),
            pytest.param(b"\x01" + bytes(16) + b"x", "auto", "unsupported-framing", id="guid-auto"),
            pytest.param(
                b"\x01" + bytes(16) + b"x",
                "confluent",
                "unsupported-framing",
                id="guid-confluent",
            ),
            pytest.param(b"\x02abc", "auto", "unknown-magic-byte", id="magic-02-auto"),
            pytest.param(b"\xffabc", "confluent", "unknown-magic-byte", id="magic-ff-confluent"),
            pytest.param(
                b"\xc3\x01" + FP,
                "confluent",
                "unknown-magic-byte",
                id="single-object-in-confluent-mode",
            ),
            pytest.param(b"\xc3\x02" + FP, "auto", "unknown-magic-byte", id="c3-not-01"),
            pytest.param(
                b"\x00\x00\x00\x00\x01",
                "single-object",
                "unknown-magic-byte",
                id="confluent-in-single-object-mode",
            ),
            pytest.param(b"\x01", "single-object", "unknown-magic-byte", id="guid-single-object"),
            pytest.param(b"\x00\x00\x01", "auto", "avro-decode", id="confluent-header-truncated"),
            pytest.param(b"\xc3", "auto", "avro-decode", id="single-object-marker-truncated"),
            pytest.param(
                b"\xc3\x01\x01\x02",
                "single-object",
                "avro-decode",
                id="single-object-fingerprint-truncated",
            ),
        ],
    )
    def test_refusals(self, value: bytes | None, input_format: str, reason: str) -> None:
        with pytest.raises(DecodeError) as caught:
            unframe(value, input_format)
        assert caught.value.reason == reason
        assert caught.value.stage == "decode"

    def test_round_trips_confluent(self) -> None:
        assert unframe(frame_confluent(42, b"xyz"), "auto") == Frame("confluent", 42, None, b"xyz")

    def test_round_trips_single_object(self) -> None:
        framed = frame_single_object(FP, b"xyz")
        assert unframe(framed, "auto") == Frame("single-object", None, FP, b"xyz")

    def test_unknown_input_format(self) -> None:
        with pytest.raises(ValueError, match="input format"):
            unframe(b"\x00", "json")
