"""Avro records in and out of Kafka: the only module that catches fastavro's errors.

`Decoder` turns a framed value (`consumer.avro.wire`) into a dict resolved to the service's reader
schema; `Encoder` turns an output dict into bytes in the configured output framing.

fastavro's messages embed data (an enum symbol, a date's day count, a byte of a string), so
every failure is re-raised as a DecodeError whose message is a fixed description plus the
exception class name, raised outside the handler so that no chained exception carries it.

Writer schemas are vetted before use. fastavro's compiled reader recurses on the C stack, so a
deeply nested record of a recursive writer schema crashes the process (segmentation fault, not
an exception): recursive writer schemas are refused. An array whose items encode to zero bytes
lets a ten-byte count make the reader loop and allocate without end: refused as well. Other
hostile lengths fail fast on their own: a string, bytes or array count larger than the payload
ends in EOFError after reading what is there, without allocating the announced size.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, cast

import fastavro
from fastavro.read import SchemaResolutionError

from consumer.avro.fastwrite import NotFast, compile_writer
from consumer.avro.registry import SchemaRegistryClient
from consumer.avro.resolution import enum_symbols, first_mismatch
from consumer.avro.wire import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    frame_confluent,
    frame_single_object,
    framing_hint,
    schema_fingerprint,
    unframe,
)
from consumer.errors import ConfigError, DecodeError, SchemaError

_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_FASTAVRO_KEYS: Final = frozenset({"__fastavro_parsed", "__named_schemas"})

# Checked in order: the first class the exception is an instance of gives the description.
_FAILURES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (EOFError, "the payload ended before the record was complete"),
    (UnicodeDecodeError, "a string is not valid UTF-8"),
    (IndexError, "an enum symbol or union branch index is out of range"),
    (OverflowError, "a number, date or length is out of range"),
    (RecursionError, "the record is nested too deeply"),
    (MemoryError, "a length in the record is too large"),
    (ValueError, "a value is out of range for its type"),
)


# (the writer schema, e.g. "writer schema id 13"; an enum's name; its symbols the reader lacks)
UnknownSymbols = Callable[[str, str, tuple[str, ...]], None]


class _Plan(NamedTuple):
    """How to read one writer schema: the reader is None when it equals the writer."""

    writer: Any
    reader: Any
    mismatch: str | None = None  # where the schemas may not resolve (resolution.first_mismatch)


class Decoder:
    """Decode framed Avro values into dicts resolved to the reader schema."""

    def __init__(
        self,
        input_format: str,
        reader_schema: Any,
        *,
        registry: SchemaRegistryClient | None = None,
        raw_writer_schema: Any = None,
        known_writer_schemas: Iterable[Any] = (),
        on_unknown_symbols: UnknownSymbols | None = None,
    ) -> None:
        """Build a decoder.

        `input_format` is one of `consumer.avro.wire.INPUT_FORMATS`. `registry` resolves Confluent
        schema ids (required for "confluent"; without it, `auto` dead-letters Confluent-framed
        values). `raw_writer_schema` is the writer of raw values (default: the reader schema).
        Single-object values are looked up by fingerprint among the reader schema and
        `known_writer_schemas`. `on_unknown_symbols` hears, once per writer schema, of an enum
        whose writer has symbols the reader lacks: Avro reads them as the enum's `default`
        without an error (README, Schema compatibility), and a registry's compatibility check
        passes a renamed symbol too.
        """
        if input_format not in INPUT_FORMATS:
            raise ConfigError(f"HER2_INPUT_FORMAT must be one of {', '.join(INPUT_FORMATS)}")
        if input_format == "confluent" and registry is None:
            raise SchemaError("the Confluent input format needs a schema registry")
        self._format = input_format
        self._reader: Any = fastavro.parse_schema(reader_schema)
        if not isinstance(self._reader, dict) or self._reader.get("type") != "record":
            raise SchemaError("the reader schema must be a record schema")
        self._on_unknown_symbols = on_unknown_symbols
        self._reader_enums = enum_symbols(self._reader)
        self._registry = registry
        self._raw_plan = self._trusted_plan(
            self._reader if raw_writer_schema is None else raw_writer_schema
        )
        self._by_fingerprint: dict[bytes, _Plan] = {}
        for schema in (self._reader, *known_writer_schemas):
            plan = self._trusted_plan(schema)
            self._by_fingerprint[schema_fingerprint(plan.writer)] = plan
        self._by_id: dict[int, _Plan] = {}
        self._refused_ids: dict[int, tuple[str, str]] = {}

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """Return the record in `value`, resolved to the reader schema, or raise DecodeError.

        RegistryError (the registry is unreachable) propagates: it is not the record's fault.
        """
        frame = unframe(value, self._format)
        if frame.framing == "confluent":
            plan = self._plan_for_id(cast(int, frame.schema_id))
        elif frame.framing == "single-object":
            schema_fp = cast(bytes, frame.fingerprint)
            found = self._by_fingerprint.get(schema_fp)
            if found is None:
                raise DecodeError(
                    "unknown-fingerprint",
                    f"no known writer schema has fingerprint {schema_fp.hex()} (single-object "
                    "framing needs a schema this service shipped: README, Schema compatibility)",
                )
            plan = found
        else:
            try:
                return _read(frame.body, self._raw_plan)
            except DecodeError as exc:
                failure = exc
            # raised outside the handler: no chained exception (the module's rule)
            hint = framing_hint(frame.body)
            if hint is None:
                raise failure
            raise DecodeError(failure.reason, f"{failure.message}; {hint}")
        return _read(frame.body, plan)

    def _plan_for_id(self, schema_id: int) -> _Plan:
        """Return the cached plan of a Confluent schema id, fetching the schema once."""
        plan = self._by_id.get(schema_id)
        if plan is not None:
            return plan
        refused = self._refused_ids.get(schema_id)
        if refused is not None:
            raise DecodeError(*refused)
        if self._registry is None:
            raise DecodeError(
                "unsupported-framing", "Confluent-framed value but no schema registry is configured"
            )
        try:
            writer = self._registry.get_schema(schema_id)
            plan = self._plan(writer, f"writer schema id {schema_id}")
        except DecodeError as exc:
            # an id's schema never changes: remember refusals, but not "unknown id" (it may
            # become known when the registry catches up)
            if exc.reason != "unknown-schema-id":
                self._refused_ids[schema_id] = (exc.reason, exc.message)
            raise
        self._by_id[schema_id] = plan
        return plan

    def _trusted_plan(self, schema: Any) -> _Plan:
        """Plan a configured writer schema; an unsafe one is a fatal SchemaError."""
        try:
            return self._plan(fastavro.parse_schema(schema), "a configured writer schema")
        except DecodeError as exc:
            raise SchemaError(exc.message) from None

    def _plan(self, writer: Any, label: str) -> _Plan:
        """Vet `writer` and pair it with the reader (None when they are equal)."""
        hazard = _hazard(writer)
        if hazard is not None:
            raise DecodeError("schema-resolution", f"{label} is refused: {hazard}")
        if writer == self._reader:
            return _Plan(writer, None)
        if self._on_unknown_symbols is not None:
            for name, symbols in enum_symbols(writer).items():
                known = self._reader_enums.get(name)
                unknown = tuple(sorted(symbols - known)) if known is not None else ()
                if unknown:
                    self._on_unknown_symbols(label, name, unknown)
        return _Plan(writer, self._reader, first_mismatch(writer, self._reader))


class Encoder:
    """Encode output dicts as Avro in the configured output framing.

    The body is written by a writer compiled from the schema (`consumer.avro.fastwrite`) when it
    takes the datum, and by fastavro otherwise (the reference: same bytes, same errors).
    """

    def __init__(
        self,
        output_format: str,
        schema: Any,
        *,
        registry: SchemaRegistryClient | None = None,
        subject: str | None = None,
        fast: bool = True,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        """Build an encoder; "confluent" needs `registry` and `subject` (registered lazily).

        `fast=False` leaves every datum to fastavro (tests and benchmarks compare the two).
        `on_fallback()` hears of each datum the compiled writer leaves to fastavro (which writes
        it, slower, or refuses it): the service counts them (her2_consumer_codec_fallbacks_total).
        """
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"HER2_OUTPUT_FORMAT must be one of {', '.join(OUTPUT_FORMATS)}")
        self._schema: Any = fastavro.parse_schema(schema)
        self._name = self._schema["name"] if isinstance(self._schema, dict) else str(self._schema)
        self._fast = compile_writer(self._schema) if fast else None
        self._on_fallback = on_fallback
        self._registry = registry
        self._subject = subject
        self._header: bytes | None = None
        if output_format == "confluent":
            if registry is None or not subject:
                raise SchemaError("the Confluent output format needs a schema registry and subject")
        elif output_format == "single-object":
            self._header = frame_single_object(schema_fingerprint(self._schema), b"")
        else:
            self._header = b""

    def encode(self, datum: dict[str, Any]) -> bytes:
        """Return `datum` as Avro binary behind the output framing's header."""
        header = self._header if self._header is not None else self._register()
        if self._fast is not None:
            try:
                return header + self._fast(datum)
            except NotFast:
                self._on_fallback()  # fastavro writes it, or reports what is wrong with it
        fo = io.BytesIO()
        fo.write(header)
        try:
            fastavro.schemaless_writer(fo, self._schema, datum)
        except Exception as exc:  # fastavro's messages name field values
            failure = type(exc).__name__
        else:
            return fo.getvalue()
        raise SchemaError(f"the datum does not match schema {self._name} ({failure})")

    def _register(self) -> bytes:
        """Register the schema once and cache the Confluent header (RegistryError propagates)."""
        registry = cast(SchemaRegistryClient, self._registry)
        schema_id = registry.register(cast(str, self._subject), schema_json(self._schema))
        self._header = frame_confluent(schema_id, b"")
        return self._header


class FramedCodec:
    """An Encoder and a Decoder of one schema as a pair (a history store's `codec`: each
    patient is kept as the value of its changelog record, framing included)."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        self.encode = encoder.encode
        self.decode = decoder.decode


def schema_json(parsed: Any) -> Any:
    """Return a fastavro-parsed schema as plain Avro JSON (fastavro's own keys removed)."""
    if isinstance(parsed, dict):
        return {key: value for key, value in parsed.items() if key not in _FASTAVRO_KEYS}
    return parsed


def _read(body: bytes, plan: _Plan) -> dict[str, Any]:
    """Read exactly one record from `body`; any failure becomes a DecodeError without data."""
    fo = io.BytesIO(body)
    try:
        datum = fastavro.schemaless_reader(fo, plan.writer, plan.reader)
    except SchemaResolutionError:
        reason = "schema-resolution"
        message = "the writer schema cannot be resolved to the reader schema for this record"
        if plan.mismatch is not None:
            message += f" (the schemas differ at {plan.mismatch})"
    except Exception as exc:
        reason = "avro-decode"
        message = f"Avro binary could not be decoded: {_describe(exc)} ({type(exc).__name__})"
    else:
        left_over = len(body) - fo.tell()
        if left_over == 0:
            return cast(dict[str, Any], datum)
        reason = "avro-decode"
        message = f"{left_over} bytes left over after the record"
    raise DecodeError(reason, message)


def _describe(exc: Exception) -> str:
    """Return a fixed description of a fastavro failure (never the exception's own text)."""
    for kind, description in _FAILURES:
        if isinstance(exc, kind):
            return description
    return "the binary does not match the writer schema"


def _hazard(schema: Any) -> str | None:
    """Return why `schema` is unsafe to read untrusted data with, or None if it is safe."""
    named: dict[str, Any] = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    widths: dict[str, bool] = {}

    def zero_width(node: Any, visiting: frozenset[str]) -> bool:
        """Return whether `node` can encode to zero bytes; raise _Unsafe on a hazard."""
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node == "null"
            if node in visiting:
                raise _Unsafe("it is recursive")
            if node in widths:
                return widths[node]
            return zero_width(named[node], visiting)
        if isinstance(node, list):
            for branch in node:
                zero_width(branch, visiting)
            return False  # the branch index takes at least one byte
        kind = node["type"]
        if kind in ("record", "error"):
            inner = visiting | {node["name"]}
            fields = [zero_width(field["type"], inner) for field in node["fields"]]
            widths[node["name"]] = all(fields)
            return widths[node["name"]]
        if kind == "enum":
            widths[node["name"]] = False
            return False
        if kind == "fixed":
            widths[node["name"]] = node["size"] == 0
            return widths[node["name"]]
        if kind == "array":
            if zero_width(node["items"], visiting):
                raise _Unsafe("it has an array of items that encode to zero bytes")
            return False
        if kind == "map":
            zero_width(node["values"], visiting)
            return False  # each entry has a key of at least one byte
        return zero_width(kind, visiting)

    try:
        zero_width(schema, frozenset())
    except _Unsafe as exc:
        return str(exc)
    except (KeyError, TypeError, RecursionError):
        return "it cannot be analysed"
    return None


class _Unsafe(Exception):
    """A writer schema is unsafe for untrusted data (internal to `_hazard`)."""
