"""Offline evaluation: NDJSON PathologyResults in, one JSON line out per input line."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Final

from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.clinical.validate import DEFAULT_MAX_EVENT_TIME_SKEW, JsonConverter, check_event
from consumer.errors import RecordError
from consumer.state.store import HistoryStore
from consumer.tools.jsonout import dumps

NOT_UTF8: Final = "line is not valid UTF-8 (NDJSON is UTF-8 text)"


def open_ndjson(path: str) -> BinaryIO:
    """An NDJSON source as bytes (`-`: standard input): each line is decoded on its own, so one
    line that is not UTF-8 is that line's error, never the end of the run."""
    return open(path, "rb") if path != "-" else sys.stdin.buffer


def line_text(line: str | bytes) -> str | None:
    """A line as text; None when its bytes are not UTF-8."""
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def evaluate_lines(
    lines: Iterable[str | bytes],
    pipeline: Pipeline,
    history: HistoryStore | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    max_event_time_skew: dt.timedelta = DEFAULT_MAX_EVENT_TIME_SKEW,
) -> Iterator[dict[str, Any]]:
    """One result per non-blank line; invalid lines (not UTF-8, not JSON, not a valid event)
    give an `errors` entry, never an exception.

    As in the service, an event_time more than `max_event_time_skew` ahead of `clock()` is an
    error (`event-time-in-future`) and never reaches the history."""
    converter = JsonConverter()
    for number, raw in enumerate(lines, start=1):
        line = line_text(raw)
        if line is None:
            yield _error(number, None, "decode", "json-decode", NOT_UTF8)
            continue
        if not line.strip():
            continue
        event_id = None
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            yield _error(number, None, "decode", "json-decode", "line is not valid JSON")
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
            event_id = obj["event_id"]
        try:
            event = check_event(converter.convert(obj), clock(), max_event_time_skew)
        except RecordError as exc:
            yield _error(number, event_id, exc.stage, exc.reason, exc.message)
            continue
        # Without history each event is a patient of its own: every finding is new.
        outcome = history.apply(event, pipeline) if history is not None else pipeline.process(event)
        yield {
            "line": number,
            "event_id": event["event_id"],
            "classification": outcome.classification,
            "alerts": outcome.alerts,
            "errors": [],
        }


def _error(
    line: int, event_id: str | None, stage: str, reason: str, message: str
) -> dict[str, Any]:
    return {
        "line": line,
        "event_id": event_id,
        "classification": None,
        "alerts": [],
        "errors": [{"stage": stage, "reason": reason, "message": message}],
    }


def render(results: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The results as JSON lines."""
    for result in results:
        yield dumps(result) + "\n"
