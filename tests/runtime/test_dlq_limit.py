"""The DLQ limit (issue 15, after arroyo's DlqLimit): a partition that dead-letters
HER2_MAX_CONSECUTIVE_PROCESSING_ERRORS `processing-error` records in a row stops the service
without committing that batch, so a bad deployment does not drain the input into the DLQ."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Harness

from consumer.errors import InvalidEvent
from consumer.runtime.kafka import TopicPartition
from consumer.service import EXIT_FAILURE, EXIT_OK
from consumer.state.store import HistoryStore

EVENTS = 30


def _dead_letters(harness: Harness) -> list[str]:
    return [
        dict(r.headers)["her2.errors.reason"].decode()
        for r in harness.broker.records(harness.settings.topics.dlq)
    ]


def _committed(harness: Harness) -> int | None:
    return harness.broker.committed.get(TopicPartition(harness.settings.topics.input, 0))


@pytest.fixture
def bugs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """{"at": set of publication indexes that raise, "order": event_id -> index}."""
    state: dict[str, Any] = {"at": set(), "bad": set(), "order": {}}
    apply = HistoryStore.apply

    def buggy(self: HistoryStore, event: dict[str, Any], pipeline: Any) -> Any:
        index = state["order"].get(event["event_id"])
        if index in state["at"]:
            raise RuntimeError("a bug in this deployment")
        if index in state["bad"]:
            raise InvalidEvent("schema-validation", "bad input")
        return apply(self, event, pipeline)

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
