"""A writer compiled from a record schema: fastavro's bytes for the values it is sure of.

The output records (schemas/her2_classification.avsc, schemas/her2_alert.avsc) are dicts of a
few plain types, and fastavro's generic writer walks the schema for every one of them.
`compile_writer` walks it once instead, into one small function per field, and refuses (None)
any schema using a construct outside its subset: records, null, boolean, int, long, string,
enum, array, map, unions of "null" with one other type, and the timestamp-millis logical type.
Each string field remembers the bytes of the first 256 values it writes (codes, statuses, titles
repeat) and timestamps are remembered across records (an event's records share their times).

This is a fast path, never a second definition of the format: a compiled writer takes only
exact values (`type(x) is str`, an int that is not a bool and fits its Avro type, a known enum
symbol, a dict with exactly the record's field names, a list for an array, None only where a
union has "null", a datetime in UTC for a timestamp) and raises NotFast for anything else; the
caller (codec.Encoder) then uses fastavro, whose bytes and errors stay the reference.
tests/unit/test_avro_fastwrite.py compares both writers byte by byte and error by error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from operator import call
from typing import Any, Final

Writer = Callable[[Any], bytes]


class NotFast(Exception):
    """A value the compiled writer leaves to fastavro."""


class _Unsupported(Exception):
    """A schema construct the compiler does not take (internal to `compile_writer`)."""


_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
SMALL_MAX: Final = 1024
_EMPTY: Final = b"\x00"  # the end of an array or map, or union branch 0
_BRANCH1: Final = b"\x02"  # union branch 1
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_KNOWN_MAX: Final = 256  # values remembered per string field, and timestamps in all
# an event's records share their event time and its alerts their creation time: encoded once
_TIMES: Final[dict[dt.datetime, bytes]] = {}


def zigzag(n: int) -> bytes:
    """The zigzag varint of a long (the caller checks the range; also consumer/state/binary)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# the varints of 0 .. SMALL_MAX - 1: every count and nearly every string length
SMALL_VARINTS: Final = tuple(zigzag(n) for n in range(SMALL_MAX))


def _null(x: Any) -> bytes:
    if x is not None:
        raise NotFast
    return b""


def _boolean(x: Any) -> bytes:
    if type(x) is not bool:
        raise NotFast
    return b"\x01" if x else b"\x00"


def _int(x: Any) -> bytes:
    if type(x) is not int or not _INT_MIN <= x <= _INT_MAX:
        raise NotFast
    return SMALL_VARINTS[x] if 0 <= x < SMALL_MAX else zigzag(x)


def _long(x: Any) -> bytes:
    if type(x) is not int or not _LONG_MIN <= x <= _LONG_MAX:
        raise NotFast
    return SMALL_VARINTS[x] if 0 <= x < SMALL_MAX else zigzag(x)


def _timestamp_millis(x: Any) -> bytes:
    """timestamp-millis as fastavro computes it for an aware datetime (here: UTC only)."""
    if type(x) is not dt.datetime or x.tzinfo is not dt.UTC:
        raise NotFast
    b = _TIMES.get(x)
    if b is None:
        d = x - _EPOCH
        b = _long((d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000)
        if len(_TIMES) >= _KNOWN_MAX:
            _TIMES.clear()
        _TIMES[x] = b
    return b


def _string() -> Writer:
    """A string writer remembering the first _KNOWN_MAX values it writes (most fields of the
    outputs take a few values: codes, statuses, titles; an id field soon stops growing)."""
    known: dict[str, bytes] = {}

    def string(x: Any) -> bytes:
        if type(x) is not str:
            raise NotFast
        b = known.get(x)
        if b is not None:
            return b
        try:
            text = x.encode()
        except UnicodeEncodeError:  # a lone surrogate: fastavro's error to report
            raise NotFast from None
        n = len(text)
        b = (SMALL_VARINTS[n] if n < SMALL_MAX else zigzag(n)) + text
        if len(known) < _KNOWN_MAX:
            known[x] = b
        return b

    return string


# each a writer factory: a string writer has its own memory
_PRIMITIVES: Final[dict[str, Callable[[], Writer]]] = {
    "null": lambda: _null,
    "boolean": lambda: _boolean,
    "int": lambda: _int,
    "long": lambda: _long,
    "string": _string,
}
_LOGICAL: Final[dict[tuple[str, str], Writer]] = {("long", "timestamp-millis"): _timestamp_millis}


def compile_writer(schema: Any) -> Writer | None:
    """The writer of a fastavro-parsed record schema, or None if it is outside the subset."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    named: dict[str, Any] = schema.get("__named_schemas", {})
    try:
        return _compile(schema, named, frozenset())
    except (_Unsupported, KeyError, TypeError):
        return None


def _compile(node: Any, named: dict[str, Any], visiting: frozenset[str]) -> Writer:
    """The writer of one schema node (_Unsupported for what is outside the subset)."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]()
        if node in visiting:
            raise _Unsupported  # a recursive record
        return _compile(named[node], named, visiting)
    if isinstance(node, list):
        return _union(node, named, visiting)
    if not isinstance(node, dict):
        raise _Unsupported
    kind = node["type"]
    logical = node.get("logicalType")
    if logical is not None:
        if (kind, logical) not in _LOGICAL:
            raise _Unsupported
        return _LOGICAL[kind, logical]
    if kind == "record":
        return _record(node, named, visiting | {node["name"]})
    if kind == "enum":
        return _enum(node["symbols"])
    if kind == "array":
        return _array(_compile(node["items"], named, visiting))
    if kind == "map":
        return _map(_compile(node["values"], named, visiting))
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]()
    raise _Unsupported


def _record(node: dict[str, Any], named: dict[str, Any], visiting: frozenset[str]) -> Writer:
    names = tuple(field["name"] for field in node["fields"])
    writers = tuple(_compile(field["type"], named, visiting) for field in node["fields"])
    count = len(names)

    def record(x: Any) -> bytes:
        # exactly the field names: fastavro would take a default for a missing one and ignore
        # an extra one, which is its to decide
        if type(x) is not dict or len(x) != count:
            raise NotFast
        try:
            values = list(map(x.__getitem__, names))
        except KeyError:
            raise NotFast from None
        return b"".join(map(call, writers, values))

    return record


def _enum(symbols: list[str]) -> Writer:
    indexes = {
        symbol: SMALL_VARINTS[i] if i < SMALL_MAX else zigzag(i) for i, symbol in enumerate(symbols)
    }

    def enum(x: Any) -> bytes:
        if type(x) is not str:
            raise NotFast
        index = indexes.get(x)
        if index is None:
            raise NotFast
        return index

    return enum


def _union(branches: list[Any], named: dict[str, Any], visiting: frozenset[str]) -> Writer:
    if len(branches) != 2 or branches.count("null") != 1:
        raise _Unsupported
    null_first = branches[0] == "null"
    inner = _compile(branches[1] if null_first else branches[0], named, visiting)
    null, other = (_EMPTY, _BRANCH1) if null_first else (_BRANCH1, _EMPTY)

    def union(x: Any) -> bytes:
        return null if x is None else other + inner(x)

    return union


def _array(items: Writer) -> Writer:
    def array(x: Any) -> bytes:
        if type(x) is not list:
            raise NotFast
        if not x:
            return _EMPTY
        return b"".join([_long(len(x)), *map(items, x), _EMPTY])

    return array


def _map(values: Writer) -> Writer:
    key = _string()

    def map_(x: Any) -> bytes:
        if type(x) is not dict:
            raise NotFast
        if not x:
            return _EMPTY
        parts = [_long(len(x))]
        for name, value in x.items():
            parts += (key(name), values(value))
        parts.append(_EMPTY)
        return b"".join(parts)

    return map_
