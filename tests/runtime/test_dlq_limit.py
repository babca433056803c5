"""The DLQ limit (issue 15, after arroyo's DlqLimit): a partition that dead-letters
HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS `processing-error` records in a row stops the service
without committing that batch, so a bad deployment does not drain the input into the DLQ. And a
processing error that strikes after the patient's state changed leaves nothing of the record in
the history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import Harness, pipeline
from fakes import FakeBroker

from consumer.avro.codec import Decoder
from consumer.errors import InvalidEvent
from consumer.resources import HER2_ALERT, parsed_schema
from consumer.runtime import routing
from consumer.runtime.kafka import TopicPartition
from consumer.service import EXIT_FAILURE, EXIT_OK
from consumer.state.store import HistoryStore

EVENTS = 30
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _dead_letters(harness: Harness) -> list[str]:
    return [
        dict(r.headers)["her2.errors.reason"].decode()
        for r in harness.broker.records(harness.settings.topics.dlq)
    ]


def _committed(harness: Harness) -> int | None:
    return harness.broker.committed.get(TopicPartition(harness.settings.topics.input, 0))


@pytest.fixture
def bugs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """{"at": set of publication indexes that raise before the state changes, "after": those
    that raise after the real apply changed it, "bad": invalid ones, "order": event_id ->
    index}."""
    state: dict[str, Any] = {"at": set(), "after": set(), "bad": set(), "order": {}}
    apply = HistoryStore.apply

    def buggy(self: HistoryStore, event: dict[str, Any], pipeline: Any) -> Any:
        index = state["order"].get(event["event_id"])
        if index in state["at"]:
            raise RuntimeError("a bug in this deployment")
        if index in state["bad"]:
            raise InvalidEvent("schema-validation", "bad input")
        outcome = apply(self, event, pipeline)
        if index in state["after"]:
            assert self.get(event["patient_id"]) is not None, "the state has changed"
            raise RuntimeError("a bug after the state changed")
        return outcome

    monkeypatch.setattr(HistoryStore, "apply", buggy)
    return state


def _run(harness: Harness, bugs: dict[str, Any], at: range | set[int], **config: Any) -> int:
    harness.configure(**config)
    harness.broker.create_topic(harness.settings.topics.input, 1)
    events = harness.publish(EVENTS)
    bugs["order"].update((e["event_id"], i) for i, e in enumerate(events))
    bugs["at"].update(at)
    return harness.run()


def test_a_run_of_processing_errors_at_the_limit_stops_without_committing(
    harness: Harness, bugs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(harness, bugs, range(10, 15), max_consecutive_processing_errors=5)
    assert code == EXIT_FAILURE
    assert _committed(harness) is None, "the batch with the run is not committed"
    assert _dead_letters(harness) == [], "nothing of it reached the dead-letter topic"
    [line] = harness.logged("too many processing errors in a row; stopping without committing")
    assert (line["count"], line["limit"], line["partition"]) == (5, 5, 0)
    assert "HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS=5" in capsys.readouterr().err


def test_a_record_processed_normally_ends_the_run(harness: Harness, bugs: dict[str, Any]) -> None:
    code = _run(harness, bugs, {*range(3, 7), *range(8, 12)}, max_consecutive_processing_errors=5)
    assert code == EXIT_OK
    assert _committed(harness) == EVENTS
    assert _dead_letters(harness) == ["processing-error"] * 8


def test_bad_input_neither_counts_nor_ends_a_run(harness: Harness, bugs: dict[str, Any]) -> None:
    """Invalid input between bugs: 3 bugs, an invalid record, 2 bugs = a run of 5."""
    bugs["bad"].add(13)
    code = _run(harness, bugs, {10, 11, 12, 14, 15}, max_consecutive_processing_errors=5)
    assert code == EXIT_FAILURE
    assert _committed(harness) is None
    invalid = [
        line["offset"]
        for line in harness.logged("record dead-lettered")
        if line["reason"] == "schema-validation"
    ]
    assert invalid == [13]


def test_a_run_across_batches_stops_at_the_batch_that_reaches_the_limit(
    harness: Harness, bugs: dict[str, Any]
) -> None:
    """Batches of 4: the run 6..10 begins in the second batch (committed, 2 dead letters) and
    reaches 5 in the third, which is not committed."""
    code = _run(
        harness,
        bugs,
        range(6, 11),
        max_consecutive_processing_errors=5,
        max_poll_records=4,
    )
    assert code == EXIT_FAILURE
    assert _committed(harness) == 8
    assert _dead_letters(harness) == ["processing-error"] * 2


def test_no_limit_with_zero(harness: Harness, bugs: dict[str, Any]) -> None:
    code = _run(harness, bugs, range(EVENTS), max_consecutive_processing_errors=0)
    assert code == EXIT_OK
    assert _committed(harness) == EVENTS
    assert _dead_letters(harness) == ["processing-error"] * EVENTS


# one patient's two records in SyntheticGenerator(seed=1).events(EVENTS): the FINAL report
# fires TDXD-POSITIVE-EARLY, the AMENDED one resolves it, if the FINAL one is in the history
FINAL, AMENDED = 7, 9


def _run_with_bug(
    harness: Harness, bugs: dict[str, Any], where: str, at: set[int]
) -> list[dict[str, Any]]:
    """Run over the EVENTS with a bug `where` ("at": before the state changes, "after": after)
    at the indexes `at`; the events."""
    harness.broker.create_topic(harness.settings.topics.input, 1)
    events = harness.publish(EVENTS)
    bugs["order"] = {e["event_id"]: i for i, e in enumerate(events)}
    bugs["at"], bugs["after"] = (at, set()) if where == "at" else (set(), at)
    assert harness.run() == EXIT_OK
    return events


def _history(harness: Harness) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key, r.value) for r in harness.broker.records(harness.settings.topics.history)]


def _alerts_of(harness: Harness, key: bytes) -> list[tuple[str, str]]:
    decoder = Decoder("single-object", parsed_schema(HER2_ALERT))
    return [
        (alert["code"], alert["status"])
        for topic in harness.settings.topics.alert_topics()
        for alert in (
            decoder.decode(r.value) for r in harness.broker.records(topic) if r.key == key
        )
    ]


def test_a_bug_after_the_state_changed_leaves_nothing_of_the_record_in_the_history(
    harness: Harness, bugs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that strikes after the store changed the patient's state (the real apply ran):
    the record is dead-lettered, and the state is rolled back, so the changelog is exactly what
    it is when the bug strikes before the state changes, and the patient's next record is
    evaluated without the failed one (the AMENDED report has no finding to resolve)."""
    monkeypatch.setattr(pipeline(), "_clock", lambda: NOW)  # alerts' created_at: comparable runs
    events = _run_with_bug(harness, bugs, "after", {FINAL})
    final, amended = events[FINAL], events[AMENDED]
    assert final["patient_id"] == amended["patient_id"]
    assert (final["report_status"], amended["report_status"]) == ("FINAL", "AMENDED")
    [dead] = harness.broker.records(harness.settings.topics.dlq)
    headers = dict(dead.headers)
    assert headers["her2.errors.reason"] == b"processing-error"
    assert headers["her2.errors.exception.class.name"] == b"RuntimeError"
    assert dead.value == harness.broker.records(harness.settings.topics.input)[FINAL].value
    key = routing.patient_key(final["patient_id"])
    assert _alerts_of(harness, key) == [], "the AMENDED report alone fires nothing"

    before = Harness(FakeBroker(), harness.settings)  # the bug strikes before the state changes
    _run_with_bug(before, bugs, "at", {FINAL})
    assert _history(harness) == _history(before)
    assert _history(harness)

    clean = Harness(FakeBroker(), harness.settings)  # no bug: the test can tell them apart
    _run_with_bug(clean, bugs, "at", set())
    assert _history(clean) != _history(harness)
    assert ("TDXD-POSITIVE-EARLY", "RESOLVED") in _alerts_of(clean, key)
