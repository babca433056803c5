"""Framings of Avro records on Kafka: pure functions on bytes, no Avro decoding here.

Confluent        0x00 | schema id (4 bytes, big-endian) | Avro binary
single-object    0xC3 0x01 | CRC-64-AVRO fingerprint (8 bytes, little-endian) | Avro binary
raw              Avro binary, written with a writer schema configured out of band

`auto` tells the framing from the first bytes. Confluent's newer GUID framing (magic 0x01)
is recognised and refused with its own reason, so that it is not mistaken for garbage.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, NoReturn

from fastavro.schema import fingerprint, to_parsing_canonical_form

from consumer.errors import DecodeError

INPUT_FORMATS: Final = ("auto", "confluent", "single-object", "raw")
OUTPUT_FORMATS: Final = ("confluent", "single-object", "raw")

CONFLUENT_MAGIC: Final = 0x00
CONFLUENT_GUID_MAGIC: Final = 0x01
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"

CONFLUENT_HEADER_SIZE: Final = 5
SINGLE_OBJECT_HEADER_SIZE: Final = 10
MAX_SCHEMA_ID: Final = 2**31 - 1  # Java serializers write the id as a signed int
FINGERPRINT_SIZE: Final = 8


class Frame(NamedTuple):
    """One record split into its framing and its Avro body."""

    framing: str
    schema_id: int | None
    fingerprint: bytes | None
    body: bytes


def schema_fingerprint(schema: Any) -> bytes:
    """Return the 8 header bytes of single-object encoding: CRC-64-AVRO of the canonical form.

    fastavro returns the fingerprint as hex of the little-endian bytes (as Java does), which
    is already the order the single-object header carries.
    """
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def frame_confluent(schema_id: int, body: bytes) -> bytes:
    """Prefix `body` with the Confluent header for `schema_id`."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} does not fit the Confluent header")
    return bytes((CONFLUENT_MAGIC,)) + schema_id.to_bytes(4, "big") + body


def frame_single_object(schema_fp: bytes, body: bytes) -> bytes:
    """Prefix `body` with the single-object header for the fingerprint `schema_fp`."""
    if len(schema_fp) != FINGERPRINT_SIZE:
        raise ValueError("a single-object fingerprint is 8 bytes")
    return SINGLE_OBJECT_MAGIC + schema_fp + body


def unframe(value: bytes | None, input_format: str) -> Frame:
    """Split `value` according to `input_format`; raise DecodeError if it is not so framed."""
    if not value:
        raise DecodeError("empty-value", "the record has no value")
    if input_format == "raw":
        return Frame("raw", None, None, value)
    if input_format == "auto":
        first = value[0]
        if first == CONFLUENT_MAGIC:
            return _unframe_confluent(value)
        if first == SINGLE_OBJECT_MAGIC[0]:
            return _unframe_single_object(value)
        _refuse_magic(first)
    if input_format == "confluent":
        if value[0] != CONFLUENT_MAGIC:
            _refuse_magic(value[0])
        return _unframe_confluent(value)
    if input_format == "single-object":
        return _unframe_single_object(value)
    raise ValueError(f"unknown input format {input_format!r}")


def _unframe_confluent(value: bytes) -> Frame:
    """Split a value that starts with the Confluent magic byte."""
    if len(value) < CONFLUENT_HEADER_SIZE:
        raise DecodeError("avro-decode", "the Confluent header is truncated")
    schema_id = int.from_bytes(value[1:CONFLUENT_HEADER_SIZE], "big")
    return Frame("confluent", schema_id, None, value[CONFLUENT_HEADER_SIZE:])


def _unframe_single_object(value: bytes) -> Frame:
    """Split a value that should start with the single-object marker."""
    if not SINGLE_OBJECT_MAGIC.startswith(value[:2]):
        raise DecodeError(
            "unknown-magic-byte", "the value does not start with the single-object marker C3 01"
        )
    if len(value) < SINGLE_OBJECT_HEADER_SIZE:
        raise DecodeError("avro-decode", "the single-object header is truncated")
    return Frame(
        "single-object", None, value[2:SINGLE_OBJECT_HEADER_SIZE], value[SINGLE_OBJECT_HEADER_SIZE:]
    )


def _refuse_magic(first: int) -> NoReturn:
    """Raise the DecodeError for a first byte that starts no supported framing."""
    if first == CONFLUENT_GUID_MAGIC:
        raise DecodeError(
            "unsupported-framing",
            "Confluent framing with a schema GUID (magic byte 0x01) is not supported",
        )
    if first in _JSON_START:
        hint = "the value looks like JSON: the input must be Avro (README, wire formats)"
    else:
        hint = (
            "neither Confluent framing (0x00) nor single-object framing (0xc3 0x01); Avro "
            "without framing needs HER2_INPUT_FORMAT=raw and HER2_RAW_WRITER_SCHEMA"
        )
    raise DecodeError("unknown-magic-byte", f"unknown magic byte 0x{first:02x} ({hint})")


# how a JSON object or array begins: bytes no Avro record of the service's schemas starts
# with (its first field is a string, and a length of -62 or -46 is invalid); a JSON string's
# quote is left out, as it is also the length byte of a 17-character event_id
_JSON_START: Final = frozenset(b"{[")


def framing_hint(value: bytes) -> str | None:
    """What a value that failed to decode as unframed Avro (HER2_INPUT_FORMAT=raw) starts
    like, for the dead letter's message; None when it starts like nothing known."""
    if value[:1] == bytes([CONFLUENT_MAGIC]) and len(value) >= CONFLUENT_HEADER_SIZE:
        like = "Confluent framing (0x00 and a schema id)"
    elif value[:2] == SINGLE_OBJECT_MAGIC:
        like = "single-object framing (0xc3 0x01)"
    elif value[:1] and value[0] in _JSON_START:
        return "the value starts like JSON: the input must be Avro (README, wire formats)"
    else:
        return None
    return f"the value starts like {like}: HER2_INPUT_FORMAT=auto reads it"
