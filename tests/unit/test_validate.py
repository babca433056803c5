"""Size limits of `check_event` (docs/fault-report.md, B4): the Avro path refuses what the JSON
path refuses. Every string is at most MAX_TEXT characters and every array at most MAX_ITEMS
items, anywhere in the event; an oversized event is an InvalidEvent (a RecordError: stage
`validate`, reason `schema-validation`), which the service dead-letters.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.validate import (
    DEFAULT_MAX_EVENT_TIME_SKEW,
    MAX_ITEMS,
    MAX_TEXT,
    JsonConverter,
    check_event,
    check_event_time,
)
from consumer.errors import DLQ_REASONS, InvalidEvent, RecordError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema

Event = dict[str, Any]

_JSON: Event = {
    "event_id": "e1",
    "patient_id": "P1",
    "accession_id": "A1",
    "report_status": "FINAL",
    "specimen": {"site": "DISTANT_METASTASIS", "body_site": "liver"},
    "her2_ihc": {"score": "ONE_PLUS", "percent_cells_stained": 30},
    "clinical_context": {
        "disease_setting": "METASTATIC",
        "planned_therapies": ["trastuzumab deruxtecan"],
        "clinical_flags": [],
    },
    "prior_her2_results": [
        {"accession_id": "A0", "specimen": {"site": "PRIMARY_BREAST"}, "her2_ihc": None}
    ],
}


def avro_event(json_event: Event | None = None) -> Event:
    """A valid event as the service sees it: JSON -> schema shape -> Avro -> decoded."""
    event = JsonConverter().convert(copy.deepcopy(json_event or _JSON))
    schema = parsed_schema(PATHOLOGY_RESULT)
    return Decoder("auto", schema).decode(Encoder("single-object", schema).encode(event))


def _long(n: int) -> str:
    return "S" * n


HOSTILE: dict[str, tuple[Callable[[Event, int], None], str]] = {
    # name: (mutation given the amount over the limit, the field path named in the message)
    "top-level id": (
        lambda e, extra: e.update(accession_id=_long(MAX_TEXT + extra)),
        "accession_id",
    ),
    "nested string": (
        lambda e, extra: e["specimen"].update(body_site=_long(MAX_TEXT + extra)),
        "specimen.body_site",
    ),
    "array of strings": (
        lambda e, extra: e["clinical_context"].update(
            planned_therapies=["trastuzumab"] * (MAX_ITEMS + extra)
        ),
        "clinical_context.planned_therapies",
    ),
    "array of enums": (
        lambda e, extra: e["clinical_context"].update(
            clinical_flags=["SUSPECTED_RECEPTOR_CONVERSION"] * (MAX_ITEMS + extra)
        ),
        "clinical_context.clinical_flags",
    ),
    "string in an array": (
        lambda e, extra: e["clinical_context"].update(
            planned_therapies=["trastuzumab", _long(MAX_TEXT + extra)]
        ),
        "clinical_context.planned_therapies[1]",
    ),
    "array of records": (
        lambda e, extra: e.update(
            prior_her2_results=[
                {**e["prior_her2_results"][0], "accession_id": f"A{i}"}
                for i in range(MAX_ITEMS + extra)
            ]
        ),
        "prior_her2_results",
    ),
    "string in a record in an array": (
        lambda e, extra: e["prior_her2_results"][0].update(accession_id=_long(MAX_TEXT + extra)),
        "prior_her2_results[0].accession_id",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_over_the_limit_is_refused_naming_the_field_not_the_value(case: str) -> None:
    mutate, path = HOSTILE[case]
    event = avro_event()
    mutate(event, 1)
    with pytest.raises(InvalidEvent) as caught:
        check_event(event)
    exc = caught.value
    assert isinstance(exc, RecordError), "a record error: dead-lettered, the partition moves on"
    assert (exc.stage, exc.reason) == ("validate", "schema-validation")
    assert str(exc).startswith(f"{path}: must be "), str(exc)[:200]
    assert "SSSS" not in str(exc), "no field values"
    assert "trastuzumab" not in str(exc), "no field values"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_at_the_limit_is_accepted(case: str) -> None:
    mutate, _ = HOSTILE[case]
    event = avro_event()
    mutate(event, 0)
    assert check_event(event) is event


@pytest.mark.parametrize(
    "case", ["top-level id", "nested string", "array of strings", "string in an array"]
)
def test_both_paths_refuse_the_same_event_with_the_same_message(case: str) -> None:
    """The JSON path (`evaluate`) and the Avro path share the limits and the message."""
    mutate, _ = HOSTILE[case]
    json_event = copy.deepcopy(_JSON)
    mutate(json_event, 1)
    with pytest.raises(InvalidEvent) as from_json:
        JsonConverter().convert(json_event)
    event = avro_event()
    mutate(event, 1)
    with pytest.raises(InvalidEvent) as from_avro:
        check_event(event)
    assert str(from_avro.value) == str(from_json.value)


def test_hostile_sizes_far_over_the_limit() -> None:
    """The sizes the fuzz run and docs/fault-report.md B4 used: a 100,000-character body
    site, 5,000 planned therapies, 6,000 prior results (each refused on its own)."""
    for mutate in (
        lambda e: e["specimen"].update(body_site=_long(100_000)),
        lambda e: e["clinical_context"].update(planned_therapies=["x"] * 5_000),
        lambda e: e.update(prior_her2_results=e["prior_her2_results"] * 6_000),
    ):
        event = avro_event()
        mutate(event)
        with pytest.raises(InvalidEvent):
            check_event(event)


def test_a_valid_event_passes_unchanged() -> None:
    event = avro_event()
    before = copy.deepcopy(event)
    assert check_event(event) == before


# -- text that UTF-8 cannot carry (the JSON path only) -----------------------------------------


class TestUnicodeText:
    """JSON may escape a lone surrogate ("\\ud800"); it passed the JSON path and then broke
    `evaluate` (UnicodeEncodeError writing the alert or the output line), and no UTF-8 output can
    carry it. The converter refuses it naming the field, never the value. The Avro path cannot
    receive one: a string that is not UTF-8 does not decode."""

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            pytest.param(lambda e: e.update(patient_id="P\ud800"), "patient_id", id="patient-id"),
            pytest.param(lambda e: e.update(event_id="\udfff"), "event_id", id="low-surrogate"),
            pytest.param(
                lambda e: e["specimen"].update(body_site="liver \ud83d"),
                "specimen.body_site",
                id="nested",
            ),
            pytest.param(
                lambda e: e["clinical_context"].update(planned_therapies=["ok", "\ud800x"]),
                "clinical_context.planned_therapies[1]",
                id="in-an-array",
            ),
        ],
    )
    def test_a_lone_surrogate_is_refused_naming_the_field(
        self, mutate: Callable[[Event], None], path: str
    ) -> None:
        event = copy.deepcopy(_JSON)
        mutate(event)
        with pytest.raises(InvalidEvent) as caught:
            JsonConverter().convert(event)
        assert (caught.value.stage, caught.value.reason) == ("validate", "schema-validation")
        assert (
            str(caught.value) == f"{path}: must be valid Unicode text (no lone surrogate escapes)"
        )

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("Müller-Łukasz", id="latin"),
            pytest.param("乳腺", id="cjk"),
            pytest.param("\U0001f600", id="astral"),
            pytest.param(json.loads('"\\ud83d\\ude00"'), id="escaped-surrogate-pair"),
        ],
    )
    def test_valid_non_ascii_text_is_kept(self, text: str) -> None:
        event = JsonConverter().convert({**copy.deepcopy(_JSON), "patient_id": text})
        assert event["patient_id"] == text
        assert check_event(avro_event({**_JSON, "patient_id": text}))["patient_id"] == text


# -- event_time in the future (issue 15, item 4) ------------------------------------------------

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(hours=24)
MS = dt.timedelta(milliseconds=1)


class TestEventTimeInFuture:
    """An event_time more than the tolerance (default 24 h) ahead of the caller's clock is an
    InvalidEvent with its own reason; report order within an accession follows event_time, so
    such a report would make every later report of its accession stale."""

    @pytest.mark.parametrize(
        ("event_time", "skew", "refused"),
        [
            pytest.param(NOW + DAY, DAY, False, id="exactly-at-the-tolerance"),
            pytest.param(NOW + DAY + MS, DAY, True, id="one-ms-over"),
            pytest.param(None, DAY, False, id="missing-event-time"),
            pytest.param(
                dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
                DAY,
                True,
                id="far-future-9999-12-31",
            ),
            pytest.param(NOW, DAY, False, id="now"),
            pytest.param(NOW + dt.timedelta(hours=23), DAY, False, id="lab-clock-ahead-23h"),
            pytest.param(dt.datetime(1, 1, 1, tzinfo=dt.UTC), DAY, False, id="year-1"),
            pytest.param(NOW - dt.timedelta(days=3650), DAY, False, id="ten-years-ago"),
            pytest.param(
                NOW + dt.timedelta(hours=2), dt.timedelta(hours=1), True, id="configured-1h"
            ),
            pytest.param(
                (NOW + DAY + MS).astimezone(dt.timezone(dt.timedelta(hours=-5))),
                DAY,
                True,
                id="other-zone-one-ms-over",
            ),
            pytest.param((NOW + DAY).replace(tzinfo=None), DAY, False, id="naive-taken-as-utc"),
        ],
    )
    def test_avro_path(
        self, event_time: dt.datetime | None, skew: dt.timedelta, refused: bool
    ) -> None:
        event = avro_event()
        event["event_time"] = event_time
        if not refused:
            assert check_event(event, NOW, skew) is event
            return
        with pytest.raises(InvalidEvent) as caught:
            check_event(event, NOW, skew)
        error = caught.value
        assert (error.stage, error.reason) == ("validate", "event-time-in-future")
        assert error.reason in DLQ_REASONS
        assert error.message.startswith("event_time: ")
        assert str(event_time.year) not in error.message  # no field value in the message
        assert "P1" not in error.message

    @pytest.mark.parametrize(
        ("text", "refused"),
        [
            pytest.param("2026-12-07T12:00:00Z", False, id="exactly-at-the-tolerance"),
            pytest.param("2026-12-07T12:00:00.001Z", True, id="one-ms-over"),
            pytest.param("9999-12-31T23:59:59Z", True, id="far-future"),
            pytest.param(253402300799999, True, id="far-future-epoch-ms"),
        ],
    )
    def test_json_path(self, text: str | int, refused: bool) -> None:
        event = JsonConverter().convert({**copy.deepcopy(_JSON), "event_time": text})
        if refused:
            with pytest.raises(InvalidEvent, match="ahead of the service's clock"):
                check_event(event, NOW)
        else:
            assert check_event(event, NOW) is event

    def test_missing_event_time_on_the_json_path(self) -> None:
        event = JsonConverter().convert(copy.deepcopy(_JSON))
        assert event["event_time"] is None
        assert check_event(event, NOW) is event

    def test_without_a_clock_the_check_is_not_made(self) -> None:
        # callers without a clock (publish, offline fuzz prediction); the service passes its own
        event = avro_event()
        event["event_time"] = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
        assert check_event(event) is event

    def test_the_default_tolerance_is_24_hours(self) -> None:
        assert DEFAULT_MAX_EVENT_TIME_SKEW == DAY
        event = avro_event()
        event["event_time"] = NOW + DAY + MS
        with pytest.raises(InvalidEvent):
            check_event(event, NOW)

    def test_size_and_schema_problems_keep_their_own_reason(self) -> None:
        event = avro_event()
        event["event_time"] = NOW + 2 * DAY
        event["her2_ihc"]["percent_cells_stained"] = 150.0
        with pytest.raises(InvalidEvent) as caught:
            check_event(event, NOW)
        assert caught.value.reason == "schema-validation"

    @pytest.mark.parametrize(
        "now",
        [
            pytest.param(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), id="clock-in-2000"),
            pytest.param(dt.datetime(2090, 1, 1, tzinfo=dt.UTC), id="clock-in-2090"),
        ],
    )
    def test_only_the_injected_clock_counts(self, now: dt.datetime) -> None:
        # far from the wall clock either way: a check reading the wall clock would get one wrong
        check_event_time(now + DAY, now)
        with pytest.raises(InvalidEvent):
            check_event_time(now + DAY + MS, now)


# -- range checks of prior_her2_results entries and the ISH recount group ------------------------


def _prior(**fields: Any) -> Callable[[Event], None]:
    """Replace fields of the first prior_her2_results entry."""
    return lambda e: e["prior_her2_results"][0].update(fields)


def _ish(**fields: Any) -> Callable[[Event], None]:
    """Give the event an ISH record with these fields."""
    return lambda e: e.update(her2_ish=fields)


class TestRangeChecks:
    """`check_event` applies the same range checks to every prior_her2_results entry as to the
    event's own specimen and HER2 tests (the samples are classified alike, her2-rules.md section
    1), naming the entry by its index; an ISH recount group is 1-5 (section 3: the dual-probe
    groups), both ends included."""

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            pytest.param(
                _prior(specimen={"site": "PRIMARY_BREAST", "cold_ischemia_minutes": -1}),
                "prior_her2_results[0].specimen.cold_ischemia_minutes: must not be negative",
                id="prior-cold-ischaemia-negative",
            ),
            pytest.param(
                _prior(specimen={"site": "PRIMARY_BREAST", "fixation_hours": -0.5}),
                "prior_her2_results[0].specimen.fixation_hours: must not be negative",
                id="prior-fixation-negative",
            ),
            pytest.param(
                _prior(her2_ihc={"score": "ONE_PLUS", "percent_cells_stained": 100.5}),
                "prior_her2_results[0].her2_ihc.percent_cells_stained: must be at most 100",
                id="prior-ihc-percent-over-100",
            ),
            pytest.param(
                _prior(her2_ish={"her2_cep17_ratio": -1.2}),
                "prior_her2_results[0].her2_ish.her2_cep17_ratio: must not be negative",
                id="prior-ish-ratio-negative",
            ),
            pytest.param(
                _prior(her2_ish={"recount_group": 0}),
                "prior_her2_results[0].her2_ish.recount_group: must be 1-5",
                id="prior-recount-group-0",
            ),
            pytest.param(
                _prior(her2_ish={"recount_group": 6}),
                "prior_her2_results[0].her2_ish.recount_group: must be 1-5",
                id="prior-recount-group-6",
            ),
            pytest.param(
                lambda e: e["prior_her2_results"].append(
                    {"accession_id": "A00", "specimen": {"cold_ischemia_minutes": -30}}
                ),
                "prior_her2_results[1].specimen.cold_ischemia_minutes: must not be negative",
                id="second-prior-entry-named-by-index",
            ),
            pytest.param(
                _ish(recount_group=0), "her2_ish.recount_group: must be 1-5", id="recount-group-0"
            ),
            pytest.param(
                _ish(recount_group=6), "her2_ish.recount_group: must be 1-5", id="recount-group-6"
            ),
        ],
    )
    def test_out_of_range_is_refused_naming_the_field(
        self, mutate: Callable[[Event], None], message: str
    ) -> None:
        json_event = copy.deepcopy(_JSON)
        mutate(json_event)
        event = avro_event(json_event)  # the service's path: a schema-valid event, decoded
        with pytest.raises(InvalidEvent) as caught:
            check_event(event)
        assert (caught.value.stage, caught.value.reason) == ("validate", "schema-validation")
        assert str(caught.value) == message

    @pytest.mark.parametrize(
        "mutate",
        [
            pytest.param(
                _prior(specimen={"site": "PRIMARY_BREAST", "cold_ischemia_minutes": 0}),
                id="prior-cold-ischaemia-0",
            ),
            pytest.param(
                _prior(her2_ihc={"score": "ZERO", "percent_cells_stained": 0}),
                id="prior-ihc-percent-0",
            ),
            pytest.param(
                _prior(her2_ihc={"score": "THREE_PLUS", "percent_cells_stained": 100}),
                id="prior-ihc-percent-100",
            ),
            pytest.param(_prior(her2_ish={"recount_group": 1}), id="prior-recount-group-1"),
            pytest.param(_prior(her2_ish={"recount_group": 5}), id="prior-recount-group-5"),
            pytest.param(_ish(recount_group=1), id="recount-group-1"),
            pytest.param(_ish(recount_group=5), id="recount-group-5"),
        ],
    )
    def test_at_the_boundary_is_accepted(self, mutate: Callable[[Event], None]) -> None:
        json_event = copy.deepcopy(_JSON)
        mutate(json_event)
        event = avro_event(json_event)
        assert check_event(event) is event


# -- JSON types of integer and number fields (the JSON path) ------------------------------------


class TestJsonNumbers:
    """JSON has one number type and booleans; the converter gives Avro int/long fields Python
    ints and double fields floats, and refuses anything else naming the field (an InvalidEvent,
    never a TypeError later in the range checks or classification)."""

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            pytest.param(
                {"her2_ish": {"cells_counted": "forty"}},
                "her2_ish.cells_counted: must be an integer",
                id="int-field-string",
            ),
            pytest.param(
                {"her2_ish": {"cells_counted": True}},
                "her2_ish.cells_counted: must be an integer",
                id="int-field-bool",
            ),
            pytest.param(
                {"her2_ish": {"cells_counted": 40.0}},
                "her2_ish.cells_counted: must be an integer",
                id="int-field-float",
            ),
            pytest.param(
                {"her2_ish": {"recount_group": "3"}},
                "her2_ish.recount_group: must be an integer",
                id="recount-group-string",
            ),
            pytest.param(
                {"specimen": {"site": "PRIMARY_BREAST", "cold_ischemia_minutes": 30.5}},
                "specimen.cold_ischemia_minutes: must be an integer",
                id="cold-ischaemia-float",
            ),
            pytest.param(
                {"clinical_context": {"metastatic_chemotherapy_lines": False}},
                "clinical_context.metastatic_chemotherapy_lines: must be an integer",
                id="treatment-lines-bool",
            ),
            pytest.param(
                {"specimen": {"site": "PRIMARY_BREAST", "fixation_hours": "24"}},
                "specimen.fixation_hours: must be a number",
                id="number-field-string",
            ),
            pytest.param(
                {"her2_ihc": {"score": "ONE_PLUS", "percent_cells_stained": True}},
                "her2_ihc.percent_cells_stained: must be a number",
                id="number-field-bool",
            ),
            pytest.param(
                {"prior_her2_results": [{"her2_ish": {"her2_cep17_ratio": "2.5"}}]},
                "prior_her2_results[0].her2_ish.her2_cep17_ratio: must be a number",
                id="number-field-string-in-a-prior-entry",
            ),
        ],
    )
    def test_wrong_json_type_is_refused_naming_the_field(self, fields: Event, message: str) -> None:
        with pytest.raises(InvalidEvent) as caught:
            JsonConverter().convert({**copy.deepcopy(_JSON), **fields})
        assert (caught.value.stage, caught.value.reason) == ("validate", "schema-validation")
        assert str(caught.value) == message

    @pytest.mark.parametrize(
        ("fields", "path", "expected"),
        [
            pytest.param(
                {"her2_ish": {"cells_counted": 40}}, ("her2_ish", "cells_counted"), 40, id="int"
            ),
            pytest.param(
                {"specimen": {"fixation_hours": 24}},
                ("specimen", "fixation_hours"),
                24.0,
                id="int-for-a-number",
            ),
            pytest.param(
                {"her2_ihc": {"percent_cells_stained": 30.5}},
                ("her2_ihc", "percent_cells_stained"),
                30.5,
                id="float",
            ),
        ],
    )
    def test_json_numbers_take_the_avro_type(
        self, fields: Event, path: tuple[str, str], expected: float
    ) -> None:
        event = check_event(JsonConverter().convert({**copy.deepcopy(_JSON), **fields}))
        value = event[path[0]][path[1]]
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_at_the_limit_is_accepted_on_the_json_path(case: str) -> None:
    """MAX_TEXT characters and MAX_ITEMS items are allowed on the JSON path too (one more is
    refused, test_over_the_limit_is_refused_on_the_json_path)."""
    mutate, _ = HOSTILE[case]
    json_event = copy.deepcopy(_JSON)
    mutate(json_event, 0)
    event = JsonConverter().convert(json_event)
    assert check_event(event) is event


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_over_the_limit_is_refused_on_the_json_path(case: str) -> None:
    mutate, path = HOSTILE[case]
    json_event = copy.deepcopy(_JSON)
    mutate(json_event, 1)
    with pytest.raises(InvalidEvent) as caught:
        JsonConverter().convert(json_event)
    assert str(caught.value).startswith(f"{path}: must be "), str(caught.value)[:200]
