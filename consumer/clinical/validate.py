"""Validate a PathologyResult: JSON -> event conversion and the semantic checks Avro cannot make.

Both the Avro path (after decoding) and the JSON path (`evaluate`) end in `check_event`.
Messages name the field path and the rule broken, never the value (values may be PHI).
The one check that depends on time (an `event_time` too far in the future) reads no clock:
the caller passes its `now`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from typing import Any

from consumer.clinical.model import Event
from consumer.errors import InvalidEvent
from consumer.resources import PATHOLOGY_RESULT, raw_schema

_REQUIRED_TEXT = ("event_id", "patient_id", "accession_id")
_PERCENT_FIELDS = {
    ("her2_ihc", "percent_cells_stained"),
    ("er", "percent_positive"),
    ("pr", "percent_positive"),
}
# Size limits of every string and every array of an event, on both paths (JsonConverter for
# `evaluate`, check_event after Avro decoding): a hostile event must not amplify into outputs
# or history larger than a Kafka request (docs/fault-report.md, B1, B3 and B4).
MAX_TEXT = 10_000  # characters per string
MAX_ITEMS = 1_000  # items per array
_TEXT_PROBLEM = f"must be a string of at most {MAX_TEXT} characters"
_UNICODE_PROBLEM = "must be valid Unicode text (no lone surrogate escapes)"
# How far ahead of the service's clock an event_time may be (docs/design.md; issue 15, item 4):
# report order within an accession follows event_time, so one report dated in the future would
# make every later report of its accession "stale" and lock it (no cancel, no correction).
DEFAULT_MAX_EVENT_TIME_SKEW = dt.timedelta(hours=24)
REASON_FUTURE = "event-time-in-future"
_ITEMS_PROBLEM = f"must be a list of at most {MAX_ITEMS} items"


def _fail(path: str, problem: str) -> InvalidEvent:
    return InvalidEvent("schema-validation", f"{path or 'record'}: {problem}")


class _Bad(Exception):
    """A conversion failure; the field path is added while unwinding (only on the error path)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


Convert = Callable[[Any], Any]


class JsonConverter:
    """Turn a JSON object into an event shaped like the Avro reader schema, or refuse it.

    The schema is compiled once into nested converter closures, so converting an event walks
    the data, not the schema. Unknown fields are ignored; null or absent optional fields take
    the schema default.
    """

    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        self._names: dict[str, Convert] = {}
        self._convert = self._compile(schema or raw_schema(PATHOLOGY_RESULT))

    def convert(self, obj: Any) -> Event:
        """Convert one decoded JSON value; raise InvalidEvent naming the bad field."""
        try:
            value = self._convert(obj)
        except _Bad as bad:
            raise _fail("".join(reversed(bad.path)).lstrip("."), bad.problem) from None
        assert isinstance(value, dict)
        return value

    def _compile(self, schema: Any) -> Convert:
        if isinstance(schema, str):
            return self._names.get(schema) or _primitive(schema)
        if isinstance(schema, list):
            return _union(self._compile(next(b for b in schema if b != "null")), "null" in schema)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            converter = _enum(schema["symbols"])
            self._names[schema["name"]] = converter
            return converter
        if kind == "array":
            return _array(self._compile(schema["items"]))
        logical = schema.get("logicalType")
        if logical == "date":
            return _date
        if logical == "timestamp-millis":
            return _timestamp
        return self._compile(kind)

    def _record(self, schema: Mapping[str, Any]) -> Convert:
        fields: list[tuple[str, Convert, bool, Any]] = []

        def record(obj: Any) -> dict[str, Any]:
            if not isinstance(obj, dict):
                raise _Bad("must be an object")
            out = {}
            for name, convert, has_default, default in fields:
                raw = obj.get(name)
                try:
                    if raw is not None:
                        out[name] = convert(raw)
                    elif has_default:
                        out[name] = list(default) if isinstance(default, list) else default
                    else:
                        raise _Bad("is required")
                except _Bad as bad:
                    bad.path.append(f".{name}")
                    raise
            return out

        self._names[schema["name"]] = record  # before the fields: named types may be reused
        for field in schema["fields"]:
            fields.append(
                (
                    field["name"],
                    self._compile(field["type"]),
                    "default" in field,
                    field.get("default"),
                )
            )
        return record


def _union(inner: Convert, nullable: bool) -> Convert:
    def union(obj: Any) -> Any:
        if obj is None:
            if nullable:
                return None
            raise _Bad("must not be null")
        return inner(obj)

    return union


def _enum(symbols: list[str]) -> Convert:
    allowed = frozenset(symbols)
    problem = f"must be one of {', '.join(symbols)}"

    def enum(obj: Any) -> Any:
        if obj not in allowed:
            raise _Bad(problem)
        return obj

    return enum


def _array(items: Convert) -> Convert:
    def array(obj: Any) -> list[Any]:
        if not isinstance(obj, list) or len(obj) > MAX_ITEMS:
            raise _Bad(_ITEMS_PROBLEM)
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(items(x))
            except _Bad as bad:
                bad.path.append(f"[{i}]")
                raise
        return out

    return array


def utf8_text(text: str) -> bool:
    """Whether `text` can be written as UTF-8. JSON may escape a lone surrogate ("\\ud800"),
    which no UTF-8 output (Avro, JSON lines, a Kafka key) can carry; the Avro path never sees
    one (a string that is not UTF-8 fails to decode). isascii() is O(1) in CPython, so ASCII
    text, nearly all of it, is not encoded."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(obj: Any) -> str:
    if not isinstance(obj, str) or len(obj) > MAX_TEXT:
        raise _Bad(_TEXT_PROBLEM)
    if not utf8_text(obj):
        raise _Bad(_UNICODE_PROBLEM)
    return obj


def _boolean(obj: Any) -> bool:
    if not isinstance(obj, bool):
        raise _Bad("must be true or false")
    return obj


def _integer(obj: Any) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise _Bad("must be an integer")
    return obj


def _number(obj: Any) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise _Bad("must be a number")
    return float(obj)


_PRIMITIVES: dict[str, Convert] = {
    "string": _string,
    "boolean": _boolean,
    "int": _integer,
    "long": _integer,
    "double": _number,
    "float": _number,
}


def _primitive(kind: str) -> Convert:
    try:
        return _PRIMITIVES[kind]
    except KeyError:
        raise ValueError(f"unsupported Avro type {kind!r} in the reader schema") from None


def _date(obj: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(obj[:10])
    except (TypeError, ValueError):
        raise _Bad("must be an ISO-8601 date (YYYY-MM-DD)") from None


def _timestamp(obj: Any) -> dt.datetime:
    if isinstance(obj, int) and not isinstance(obj, bool):
        try:
            return dt.datetime.fromtimestamp(obj / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise _Bad("is out of range") from None
    if isinstance(obj, str):
        try:
            parsed = dt.datetime.fromisoformat(obj.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad("must be an ISO-8601 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise _Bad("must be an ISO-8601 timestamp or epoch milliseconds")


def _check_number(value: Any, path: str, upper: float | None = None) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, "must be a finite number")
    if value < 0:
        raise _fail(path, "must not be negative")
    if upper is not None and value > upper:
        raise _fail(path, f"must be at most {upper:g}")


def _check_her2(prefix: str, ihc: Mapping[str, Any] | None, ish: Mapping[str, Any] | None) -> None:
    if ihc is not None:
        _check_number(
            ihc.get("percent_cells_stained"), f"{prefix}her2_ihc.percent_cells_stained", 100
        )
    if ish is not None:
        for name in (
            "her2_copies_per_cell",
            "cep17_copies_per_cell",
            "her2_cep17_ratio",
            "cells_counted",
        ):
            _check_number(ish.get(name), f"{prefix}her2_ish.{name}")
        group = ish.get("recount_group")
        if group is not None and not 1 <= group <= 5:  # ISH groups are 1-5
            raise _fail(f"{prefix}her2_ish.recount_group", "must be 1-5")


def _check_specimen(prefix: str, specimen: Mapping[str, Any] | None) -> None:
    if specimen is not None:
        _check_number(
            specimen.get("cold_ischemia_minutes"), f"{prefix}specimen.cold_ischemia_minutes"
        )
        _check_number(specimen.get("fixation_hours"), f"{prefix}specimen.fixation_hours")


def _oversized(value: dict[str, Any] | list[Any]) -> _Bad | None:
    """The first string longer than MAX_TEXT or array longer than MAX_ITEMS inside a decoded
    record or array, with its path (the same message as JsonConverter's), or None."""
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return _Bad(_ITEMS_PROBLEM)
        pairs: Any = enumerate(value)
    else:
        pairs = value.items()
    for key, item in pairs:
        kind = type(item)
        if kind is str:
            if len(item) <= MAX_TEXT:
                continue
            bad = _Bad(_TEXT_PROBLEM)
        elif kind is dict or kind is list:
            found = _oversized(item)
            if found is None:
                continue
            bad = found
        else:
            continue
        bad.path.append(f"[{key}]" if type(key) is int else f".{key}")
        return bad
    return None


def check_event(
    event: Event,
    now: dt.datetime | None = None,
    max_skew: dt.timedelta = DEFAULT_MAX_EVENT_TIME_SKEW,
) -> Event:
    """Semantic checks on a schema-shaped event; return it, or raise InvalidEvent.

    With `now` (the caller's clock, timezone-aware), an `event_time` later than `now +
    max_skew` is refused with reason `event-time-in-future`. Without it that check is not
    made: the service and `evaluate` always pass their clock.
    """
    bad = _oversized(event)
    if bad is not None:
        raise _fail("".join(reversed(bad.path)).lstrip("."), bad.problem)
    for name in _REQUIRED_TEXT:
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _fail(name, "must be a non-empty string")
    _check_specimen("", event.get("specimen"))
    _check_her2("", event.get("her2_ihc"), event.get("her2_ish"))
    for receptor in ("er", "pr"):
        rec = event.get(receptor)
        if rec is not None:
            _check_number(rec.get("percent_positive"), f"{receptor}.percent_positive", 100)
    ctx = event.get("clinical_context")
    if ctx is not None:
        for name in (
            "metastatic_chemotherapy_lines",
            "metastatic_endocrine_therapy_lines",
            "metastatic_anti_her2_lines",
        ):
            _check_number(ctx.get(name), f"clinical_context.{name}")
    for i, prior in enumerate(event.get("prior_her2_results") or ()):
        prefix = f"prior_her2_results[{i}]."
        _check_specimen(prefix, prior.get("specimen"))
        _check_her2(prefix, prior.get("her2_ihc"), prior.get("her2_ish"))
    if now is not None:
        check_event_time(event.get("event_time"), now, max_skew)
    return event


def check_event_time(
    event_time: Any, now: dt.datetime, max_skew: dt.timedelta = DEFAULT_MAX_EVENT_TIME_SKEW
) -> None:
    """Raise InvalidEvent (`event-time-in-future`) if `event_time` is more than `max_skew`
    ahead of `now`; exactly `max_skew` ahead is accepted, a missing event_time too.

    Naive datetimes (either side) are taken as UTC. Compared as a difference from `now` (a
    timedelta holds any two datetimes' difference), never as `now + max_skew`, which can
    overflow at the end of the datetime range (tests/property/test_event_time.py).
    """
    if not isinstance(event_time, dt.datetime):
        return  # absent (the field is optional); the Avro and JSON paths give datetimes only
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    if event_time - now > max_skew:
        raise InvalidEvent(
            REASON_FUTURE,
            f"event_time: must not be more than {max_skew.total_seconds():g} seconds ahead of "
            "the service's clock",
        )
