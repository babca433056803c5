"""Unit tests of consumer.ops.logs: JSON lines, the PHI allow-list and message-free exceptions."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from consumer.ops.logs import ALLOWED_KEYS, OncePerWindow, configure_logging, get_logger

PATIENT = "PAT-7f3a91-MARKER"
ACCESSION = "ACC-55c2e0-MARKER"
REPORT_TEXT = "HER2 2+ equivocal, REPORT-TEXT-MARKER"

# Keys that carry patient data in records and must never reach a log line.
PHI_KEYS = (
    "patient_id",
    "accession_id",
    "reported_text",
    "body_site",
    "clinical_context",
    "prior_her2_results",
    "key",
    "value",
    "record",
    "event_data",
    "payload",
    "detail",
    "title",
    "recommendation",
    "text",
    "message",
    "error",
    "exc",
    "planned_therapies",
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured at DEBUG into a buffer; structlog reset afterwards."""
    buffer = io.StringIO()
    configure_logging("DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The JSON objects written so far (every line must be JSON)."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


class TestAllowList:
    """Only ALLOWED_KEYS reach the output; dropped keys are named, their values never."""

    @pytest.mark.parametrize("key", PHI_KEYS)
    def test_phi_key_is_dropped_and_named(self, stream: io.StringIO, key: str) -> None:
        assert key not in ALLOWED_KEYS
        get_logger().info("processed", **{key: PATIENT}, event_id="evt-1")
        [line] = lines(stream)
        assert key not in line
        assert line["redacted_keys"] == [key]
        assert line["event_id"] == "evt-1"
        assert PATIENT not in stream.getvalue()

    def test_several_keys_dropped_at_once(self, stream: io.StringIO) -> None:
        get_logger().warning(
            "invalid",
            patient_id=PATIENT,
            accession_id=ACCESSION,
            reported_text=REPORT_TEXT,
            partition=3,
            offset=42,
        )
        [line] = lines(stream)
        assert line["redacted_keys"] == ["accession_id", "patient_id", "reported_text"]
        assert (line["partition"], line["offset"]) == (3, 42)
        for marker in (PATIENT, ACCESSION, REPORT_TEXT):
            assert marker not in stream.getvalue()

    def test_bound_and_contextvar_keys_are_filtered_too(self, stream: io.StringIO) -> None:
        structlog.contextvars.bind_contextvars(topic="in", patient_id=PATIENT)
        get_logger().bind(accession_id=ACCESSION, offset=7).info("event")
        [line] = lines(stream)
        assert line["topic"] == "in"
        assert line["offset"] == 7
        assert line["redacted_keys"] == ["accession_id", "patient_id"]
        assert PATIENT not in stream.getvalue()
        assert ACCESSION not in stream.getvalue()

    def test_nested_values_under_an_unknown_key_are_dropped(self, stream: io.StringIO) -> None:
        nested = {"patient_id": PATIENT, "her2_ihc": {"reported_text": REPORT_TEXT}}
        get_logger().info("event", event_data=nested)
        assert PATIENT not in stream.getvalue()
        assert REPORT_TEXT not in stream.getvalue()

    def test_allowed_keys_pass_unchanged(self, stream: io.StringIO) -> None:
        fields = {
            "topic": "in",
            "partition": 1,
            "offset": 9,
            "event_id": "e",
            "outcome": "processed",
            "duration_ms": 1.5,
            "category": "LOW",
            "reason": "avro-decode",
            "stage": "decode",
        }
        get_logger().info("processed", **fields)
        [line] = lines(stream)
        assert {k: line[k] for k in fields} == fields
        assert "redacted_keys" not in line

    def test_clean_lines_carry_no_redacted_keys(self, stream: io.StringIO) -> None:
        get_logger().info("started", version="1")
        assert "redacted_keys" not in lines(stream)[0]


class TestExceptions:
    """Exceptions render as type and frames: never the message, the cause's message or locals."""

    @staticmethod
    def _fail() -> None:
        patient_id = PATIENT  # a local variable that must not be rendered
        raise ValueError(f"bad value for patient {patient_id}: {REPORT_TEXT}")

    def test_exception_has_type_and_frames_only(self, stream: io.StringIO) -> None:
        try:
            self._fail()
        except ValueError:
            get_logger().exception("processing failed", event_id="evt-9")
        [line] = lines(stream)
        assert line["exception"]["type"] == "ValueError"
        assert set(line["exception"]) == {"type", "frames"}
        assert any("in _fail" in frame for frame in line["exception"]["frames"])
        text = stream.getvalue()
        assert PATIENT not in text
        assert REPORT_TEXT not in text
        assert "bad value" not in text

    @pytest.mark.parametrize("form", ["true", "instance", "tuple"])
    def test_every_exc_info_form(self, stream: io.StringIO, form: str) -> None:
        try:
            self._fail()
        except ValueError as exc:
            exc_info: Any = {
                "true": True,
                "instance": exc,
                "tuple": (type(exc), exc, exc.__traceback__),
            }[form]
            get_logger().error("failed", exc_info=exc_info)
        [line] = lines(stream)
        assert line["exception"]["type"] == "ValueError"
        assert PATIENT not in stream.getvalue()

    def test_chained_cause_message_is_not_rendered(self, stream: io.StringIO) -> None:
        try:
            try:
                self._fail()
            except ValueError as inner:
                raise RuntimeError(f"wrapped: {inner}") from inner
        except RuntimeError:
            get_logger().exception("failed")
        [line] = lines(stream)
        assert line["exception"]["type"] == "RuntimeError"
        assert PATIENT not in stream.getvalue()
        assert "wrapped" not in stream.getvalue()

    def test_frames_are_bounded(self, stream: io.StringIO) -> None:
        def recurse(n: int) -> None:
            if n == 0:
                raise KeyError(PATIENT)
            recurse(n - 1)

        try:
            recurse(30)
        except KeyError:
            get_logger().exception("deep")
        [line] = lines(stream)
        frames = line["exception"]["frames"]
        assert len(frames) == 16  # the 5 outermost (where it was caught), "...", the 10 innermost
        assert "test_frames_are_bounded" in frames[0]
        assert frames[5] == "..."
        assert all("recurse" in f for f in frames[6:])
        assert PATIENT not in stream.getvalue()

    def test_exc_info_false_or_none_renders_nothing(self, stream: io.StringIO) -> None:
        get_logger().info("ok", exc_info=False)
        get_logger().info("ok", exc_info=None)
        assert all("exception" not in line for line in lines(stream))

    def test_caller_supplied_exception_text_is_dropped(self, stream: io.StringIO) -> None:
        get_logger().error("publish failed", exception=f"timeout for {PATIENT}")
        assert PATIENT not in stream.getvalue()


class TestConfiguration:
    """JSON lines, levels and timestamps."""

    def test_level_filtering(self) -> None:
        buffer = io.StringIO()
        configure_logging("WARNING", stream=buffer)
        try:
            log = get_logger()
            log.debug("d")
            log.info("i")
            log.warning("w")
            log.error("e")
            assert [line["event"] for line in lines(buffer)] == ["w", "e"]
        finally:
            structlog.reset_defaults()

    def test_unknown_level_falls_back_to_info(self) -> None:
        buffer = io.StringIO()
        configure_logging("chatty", stream=buffer)
        try:
            get_logger().debug("d")
            get_logger().info("i")
            assert [line["event"] for line in lines(buffer)] == ["i"]
        finally:
            structlog.reset_defaults()

    def test_each_line_has_level_and_utc_timestamp(self, stream: io.StringIO) -> None:
        get_logger().info("hello")
        [line] = lines(stream)
        assert line["level"] == "info"
        assert line["timestamp"].endswith("Z")


class TestClientLineRepeats:
    """kafka-python logged "Topic ... not found in cluster metadata" ten times a second
    against a deleted input topic: an identical client line passes once per window."""

    def test_a_repeated_client_line_is_written_once(self, stream: io.StringIO) -> None:
        client = logging.getLogger("kafka.cluster")
        for _ in range(100):
            client.error("Topic %s not found in cluster metadata", "in")
        client.error("Topic %s not found in cluster metadata", "other")
        assert [(line["logger"], line["event"]) for line in lines(stream)] == [
            ("kafka.cluster", "Topic in not found in cluster metadata"),
            ("kafka.cluster", "Topic other not found in cluster metadata"),
        ]

    def test_many_distinct_lines_are_remembered_within_a_bound(self) -> None:
        once = OncePerWindow(window=60.0, monotonic=lambda: 0.0)

        def passes(n: int) -> bool:
            return once.filter(logging.LogRecord("kafka.x", 40, __file__, 1, "T %s", (n,), None))

        assert all(passes(n) for n in range(5000))
        assert len(once._passed) == 1024  # the oldest forgotten first
        assert not passes(4999), "a recent line is still held back"
        assert passes(0), "a forgotten one passes again"

    def test_a_line_whose_arguments_cannot_be_shown_passes(self) -> None:
        class Unshowable:
            def __repr__(self) -> str:
                raise RuntimeError

        record = logging.LogRecord("kafka.x", 40, __file__, 1, "T %s", (Unshowable(),), None)
        assert OncePerWindow().filter(record)

    def test_the_line_passes_again_after_the_window(self) -> None:
        now = [0.0]
        once = OncePerWindow(window=60.0, monotonic=lambda: now[0])

        def passes(level: int = logging.ERROR, exc: BaseException | None = None) -> bool:
            exc_info = (type(exc), exc, None) if exc is not None else None
            record = logging.LogRecord("kafka.x", level, __file__, 1, "T %s", ("x",), exc_info)
            return once.filter(record)

        assert passes()
        now[0] = 59.9
        assert not passes()
        assert passes(logging.WARNING), "another level is another line"
        assert passes(exc=ValueError()), "another exception type is another line"
        now[0] = 60.0
        assert passes()
        assert not passes()
