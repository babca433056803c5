"""Validate a PathologyResult: JSON -> event conversion and the semantic checks Avro cannot make.

Both the Avro path (after decoding) and the JSON path (`evaluate`) end in `check_event`.
Messages name the field path and the rule broken, never the value (values may be PHI).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from consumer.errors import InvalidEvent
from consumer.model import Event
from consumer.resources import PATHOLOGY_RESULT, raw_schema

_REQUIRED_TEXT = ("event_id", "patient_id", "accession_id")
_PERCENT_FIELDS = {
    ("her2_ihc", "percent_cells_stained"),
    ("er", "percent_positive"),
    ("pr", "percent_positive"),
}
_MAX_TEXT = 10_000
_MAX_ITEMS = 1_000


def _fail(path: str, problem: str) -> InvalidEvent:
    return InvalidEvent("schema-validation", f"{path or 'record'}: {problem}")


def _named_types(schema: Any, names: dict[str, Any]) -> None:
    """Collect named types (records, enums) by short name."""
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum"):
            names[schema["name"]] = schema
        if kind == "record":
            for field in schema["fields"]:
                _named_types(field["type"], names)
        elif kind == "array":
            _named_types(schema["items"], names)
        elif isinstance(kind, dict | list):
            _named_types(kind, names)


class JsonConverter:
    """Turn a JSON object into an event shaped like the Avro reader schema, or refuse it."""

    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        self._schema = schema or raw_schema(PATHOLOGY_RESULT)
        self._names: dict[str, Any] = {}
        _named_types(self._schema, self._names)

    def convert(self, obj: Any) -> Event:
        """Convert one decoded JSON value; raise InvalidEvent naming the bad field."""
        value = self._value(self._schema, obj, "")
        assert isinstance(value, dict)
        return value

    def _value(self, schema: Any, obj: Any, path: str) -> Any:
        if isinstance(schema, str):
            schema = self._names.get(schema, schema)
        if isinstance(schema, list):
            if obj is None:
                if "null" in schema:
                    return None
                raise _fail(path, "must not be null")
            branches = [b for b in schema if b != "null"]
            return self._value(branches[0], obj, path)
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind == "record":
                return self._record(schema, obj, path)
            if kind == "enum":
                if obj not in schema["symbols"]:
                    raise _fail(path, f"must be one of {', '.join(schema['symbols'])}")
                return obj
            if kind == "array":
                if obj is None:
                    return []
                if not isinstance(obj, list) or len(obj) > _MAX_ITEMS:
                    raise _fail(path, f"must be a list of at most {_MAX_ITEMS} items")
                return [self._value(schema["items"], x, f"{path}[{i}]") for i, x in enumerate(obj)]
            logical = schema.get("logicalType")
            if logical == "date":
                return _date(obj, path)
            if logical == "timestamp-millis":
                return _timestamp(obj, path)
            return self._value(kind, obj, path)
        return _primitive(schema, obj, path)

    def _record(self, schema: Mapping[str, Any], obj: Any, path: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise _fail(path, "must be an object")
        out = {}
        for field in schema["fields"]:
            name = field["name"]
            sub = f"{path}.{name}" if path else name
            raw = obj.get(name)
            if raw is None:
                if "default" in field:
                    default = field["default"]
                    out[name] = list(default) if isinstance(default, list) else default
                    continue
                raise _fail(sub, "is required")
            out[name] = self._value(field["type"], raw, sub)
        return out


def _primitive(kind: str, obj: Any, path: str) -> Any:
    if kind == "string":
        if not isinstance(obj, str) or len(obj) > _MAX_TEXT:
            raise _fail(path, f"must be a string of at most {_MAX_TEXT} characters")
        return obj
    if kind == "boolean":
        if not isinstance(obj, bool):
            raise _fail(path, "must be true or false")
        return obj
    if kind in ("int", "long"):
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise _fail(path, "must be an integer")
        return obj
    if kind in ("double", "float"):
        if isinstance(obj, bool) or not isinstance(obj, int | float):
            raise _fail(path, "must be a number")
        return float(obj)
    raise _fail(path, f"unsupported type {kind}")


def _date(obj: Any, path: str) -> dt.date:
    if not isinstance(obj, str):
        raise _fail(path, "must be an ISO-8601 date (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(obj[:10]) if len(obj) >= 10 else dt.date.fromisoformat(obj)
    except ValueError:
        raise _fail(path, "must be an ISO-8601 date (YYYY-MM-DD)") from None


def _timestamp(obj: Any, path: str) -> dt.datetime:
    if isinstance(obj, int) and not isinstance(obj, bool):
        try:
            return dt.datetime.fromtimestamp(obj / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise _fail(path, "is out of range") from None
    if isinstance(obj, str):
        try:
            parsed = dt.datetime.fromisoformat(obj.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(path, "must be an ISO-8601 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise _fail(path, "must be an ISO-8601 timestamp or epoch milliseconds")


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
        _check_number(ihc.get("percent_cells_stained"), f"{prefix}her2_ihc.percent_cells_stained", 100)
    if ish is not None:
        for name in ("her2_copies_per_cell", "cep17_copies_per_cell", "her2_cep17_ratio", "cells_counted"):
            _check_number(ish.get(name), f"{prefix}her2_ish.{name}")
        group = ish.get("recount_group")
        if group is not None and not 1 <= group <= 5:  # noqa: PLR2004 - ISH groups are 1-5
            raise _fail(f"{prefix}her2_ish.recount_group", "must be 1-5")


def _check_specimen(prefix: str, specimen: Mapping[str, Any] | None) -> None:
    if specimen is not None:
        _check_number(specimen.get("cold_ischemia_minutes"), f"{prefix}specimen.cold_ischemia_minutes")
        _check_number(specimen.get("fixation_hours"), f"{prefix}specimen.fixation_hours")


def check_event(event: Event) -> Event:
    """Semantic checks on a schema-shaped event; return it, or raise InvalidEvent."""
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
    return event
