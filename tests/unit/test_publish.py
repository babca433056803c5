"""consumer.tools.publish without a broker: which lines are sent, how invalid ones are reported,
which framing the input side uses, and the exit code of a configuration error. (Sending to a real
broker: tests/integration/test_publish_cli.py.)"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.avro.codec import Decoder
from consumer.config import Settings
from consumer.resources import PATHOLOGY_RESULT, parsed_schema, schema_path
from consumer.tools.evaluate import NOT_UTF8
from consumer.tools.publish import Parsed, input_encoder, parse_lines

REPO = Path(__file__).resolve().parents[2]
VALID = json.dumps(
    {"event_id": "e1", "patient_id": "P1", "accession_id": "A1", "report_status": "FINAL"}
)


class TestParseLines:
    """One Parsed per non-blank line, numbered as in the file; problems name no values."""

    @pytest.mark.parametrize(
        ("line", "problem"),
        [
            pytest.param(VALID, "", id="valid"),
            pytest.param("{not json", "decode/json-decode: line is not valid JSON", id="not-json"),
            pytest.param("[" * 100_000, "decode/json-decode: line is not valid JSON", id="deep"),
            pytest.param(
                VALID.replace('"P1"', '" "'),
                "validate/schema-validation: patient_id: must be a non-empty string",
                id="blank-patient-id",
            ),
            pytest.param(
                VALID.replace('"FINAL"', '"SECRET-STATUS"'),
                "validate/schema-validation: report_status: must be one of",
                id="bad-enum",
            ),
            # json.loads raises a plain ValueError past 4,300 digits: it ended the whole run
            pytest.param(
                VALID.replace("{", '{"n": ' + "9" * 4_301 + ", ", 1),
                "decode/json-decode: line holds a number with too many digits to read",
                id="number-over-the-digit-limit",
            ),
            # a lone surrogate escape passed and broke the output later (UnicodeEncodeError)
            pytest.param(
                VALID.replace('"P1"', '"SECRET\\ud800"'),
                "validate/schema-validation: patient_id: must be valid Unicode text",
                id="lone-surrogate",
            ),
        ],
    )
    def test_one_line(self, line: str, problem: str) -> None:
        [parsed] = parse_lines([line])
        assert parsed.line == 1
        if not problem:
            assert parsed.event is not None
            assert parsed.event["patient_id"] == "P1"
            return
        assert parsed.event is None
        assert parsed.problem.startswith(problem)
        assert "SECRET" not in parsed.problem

    def test_a_line_that_is_not_utf8_is_refused_alone(self) -> None:
        found = list(parse_lines([VALID.encode(), b'{"event_id": "\xff"}\n', VALID.encode()]))
        assert [(p.line, p.event is not None) for p in found] == [(1, True), (2, False), (3, True)]
        assert found[1].problem == f"decode/json-decode: {NOT_UTF8}"
        assert "UTF-8" in NOT_UTF8

    def test_blank_lines_are_skipped_and_numbers_kept(self) -> None:
        found = list(parse_lines([VALID, "\n", "  ", "oops", VALID]))
        assert [(p.line, p.event is not None) for p in found] == [(1, True), (4, False), (5, True)]
        assert isinstance(found[0], Parsed)


def _ahead(hours: float) -> str:
    """VALID with an event_time `hours` ahead of now."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    return json.dumps({**json.loads(VALID), "event_time": when.isoformat()})


@pytest.mark.parametrize(
    ("hours_ahead", "skew", "sent"),
    [
        pytest.param(2, None, True, id="default-24h-takes-2h"),
        pytest.param(48, None, False, id="default-24h-refuses-2d"),
        pytest.param(2, dt.timedelta(hours=1), False, id="1h-refuses-2h"),
        pytest.param(48, dt.timedelta(days=7), True, id="7d-takes-2d"),
    ],
)
def test_event_time_is_checked_against_the_tolerance_given(
    hours_ahead: float, skew: dt.timedelta | None, sent: bool
) -> None:
    # publish passes the service's HER2_MAX_EVENT_TIME_SKEW_SECONDS here (Publisher.run), so it
    # sends what the service accepts and holds back what it would refuse
    lines = [_ahead(hours_ahead)]
    [parsed] = parse_lines(lines) if skew is None else parse_lines(lines, skew)
    assert (parsed.event is not None) is sent
    if not sent:
        assert parsed.problem.startswith("validate/event-time-in-future: ")


class TestInputEncoder:
    """The demo's encoder path: HER2_INPUT_FORMAT picks the framing a lab system must send."""

    @pytest.mark.parametrize(
        ("environ", "first_bytes"),
        [
            pytest.param({}, b"\xc3\x01", id="auto-is-single-object"),
            pytest.param({"HER2_INPUT_FORMAT": "single-object"}, b"\xc3\x01", id="single-object"),
        ],
    )
    def test_framing(self, environ: dict[str, str], first_bytes: bytes) -> None:
        [parsed] = parse_lines([VALID])
        assert parsed.event is not None
        value = input_encoder(Settings.from_env(environ), None).encode(parsed.event)
        assert value.startswith(first_bytes)
        decoded = Decoder("auto", parsed_schema(PATHOLOGY_RESULT)).decode(value)
        assert decoded["event_id"] == "e1"

    def test_raw_uses_the_configured_writer_schema(self) -> None:
        writer = str(schema_path(PATHOLOGY_RESULT))
        settings = Settings.from_env({"HER2_INPUT_FORMAT": "raw", "HER2_RAW_WRITER_SCHEMA": writer})
        [parsed] = parse_lines([VALID])
        assert parsed.event is not None
        value = input_encoder(settings, None).encode(parsed.event)
        decoded = Decoder("raw", parsed_schema(PATHOLOGY_RESULT)).decode(value)
        assert decoded["patient_id"] == "P1"


def test_a_configuration_error_exits_2_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text(VALID + "\n", encoding="utf-8")
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "consumer", "publish", str(path)],
        cwd=REPO,
        env={"HER2_INPUT_FORMAT": "bogus", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "HER2_INPUT_FORMAT" in done.stderr
