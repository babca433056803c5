"""Offline evaluation: NDJSON PathologyResults in, one JSON line out per input line."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Final, NamedTuple

from consumer.clinical.model import Event
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.clinical.validate import (
    DEFAULT_MAX_EVENT_TIME_SKEW,
    JsonConverter,
    check_event,
    utf8_text,
)
from consumer.errors import RecordError
from consumer.state.store import HistoryStore
from consumer.tools.jsonout import dumps

NOT_UTF8: Final = "line is not valid UTF-8 (NDJSON is UTF-8 text)"
NOT_JSON: Final = "line is not valid JSON"
# json.loads raises a plain ValueError (not JSONDecodeError) for an integer longer than
# sys.get_int_max_str_digits() (4,300 by default): valid JSON, but no field takes such a number
NUMBER_TOO_LONG: Final = "line holds a number with too many digits to read"


@contextlib.contextmanager
def ndjson_source(path: str) -> Iterator[BinaryIO]:
    """An NDJSON source as bytes (`-`: standard input, left open): each line is decoded on its
    own, so one line that is not UTF-8 is that line's error, never the end of the run."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as source:
        yield source


class Refused(NamedTuple):
    """Why a line has no event (never a field value)."""

    stage: str
    reason: str
    message: str


class Line(NamedTuple):
    """One non-blank NDJSON line: its event, or why it has none; `event_id` is the line's own
    when it names one (errors echo it)."""

    number: int
    event_id: str | None
    event: Event | Refused


def checked_lines(
    lines: Iterable[str | bytes],
    *,
    now: Callable[[], dt.datetime] = utc_now,
    max_event_time_skew: dt.timedelta = DEFAULT_MAX_EVENT_TIME_SKEW,
) -> Iterator[Line]:
    """Each non-blank line decoded (UTF-8), parsed (JSON), converted and checked as the service
    checks a record (check_event at `now()`, so an event_time more than `max_event_time_skew`
    ahead is refused); blank lines are skipped and numbers kept. The reading of `evaluate` and
    `publish`."""
    converter = JsonConverter()
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield Line(number, None, Refused("decode", "json-decode", NOT_UTF8))
                continue
        else:
            line = raw
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            yield Line(number, None, Refused("decode", "json-decode", NOT_JSON))
            continue
        except ValueError:  # after JSONDecodeError, its subclass: the integer digit limit
            yield Line(number, None, Refused("decode", "json-decode", NUMBER_TOO_LONG))
            continue
        event_id = obj.get("event_id") if isinstance(obj, dict) else None
        # echoed in the line's result: only what a UTF-8 output can carry
        event_id = event_id if isinstance(event_id, str) and utf8_text(event_id) else None
        try:
            event = check_event(converter.convert(obj), now(), max_event_time_skew)
        except RecordError as exc:
            yield Line(number, event_id, Refused(exc.stage, exc.reason, exc.message))
            continue
        yield Line(number, event_id, event)


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
    for line in checked_lines(lines, now=clock, max_event_time_skew=max_event_time_skew):
        if isinstance(line.event, Refused):
            yield _error(line.number, line.event_id, *line.event)
            continue
        event = line.event
        # Without history each event is a patient of its own: every finding is new.
        try:
            outcome = (
                history.apply(event, pipeline) if history is not None else pipeline.process(event)
            )
        except RecordError as exc:  # refused against the history (a reused event_id)
            yield _error(line.number, event["event_id"], exc.stage, exc.reason, exc.message)
            continue
        yield {
            "line": line.number,
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
