"""Changelog restore against the fake broker: history read back at assignment, the restore
deadline, an unreadable changelog record, and readiness around it."""

from __future__ import annotations

from conftest import Harness

from consumer.service import EXIT_FAILURE, EXIT_OK


def _first_run(harness: Harness, count: int = 9) -> int:
    """Process `count` events so the changelog holds their patients; the changelog length."""
    harness.publish(count)
    assert harness.run() == EXIT_OK
    return len(harness.broker.records(harness.settings.topics.history))


def test_a_new_assignment_restores_the_changelog_before_processing(harness: Harness) -> None:
    written = _first_run(harness)
    harness.publish(3, seed=2)
    assert harness.run() == EXIT_OK
    [restored] = harness.logged("history restored")
    assert restored["records"] == written
    assert harness.value("her2_consumer_history_restored_records_total") == written
    events = [line["event"] for line in harness.logs]
    assert events.index("history restored") < events.index("batch committed")
    assert (True, "") in harness.health.states


def test_an_unreadable_changelog_record_is_counted_and_skipped(harness: Harness) -> None:
    written = _first_run(harness)
    history = harness.settings.topics.history
    harness.broker.append(history, b"\x00not a history key", b"garbage")
    assert harness.run() == EXIT_OK
    assert harness.value("her2_consumer_history_unreadable_records_total") == 1
    [skipped] = harness.logged("history record unreadable; skipped")
    assert (skipped["offset"], skipped["reason"]) == (written, "history-key")
    [restored] = harness.logged("history restored")
    assert restored["records"] == written


def test_a_restore_that_cannot_reach_the_end_in_time_stops_the_service(
    harness: Harness, capsys: object
) -> None:
    _first_run(harness)
    harness.configure(tuning={"restore_timeout_s": 0.05})
    harness.broker.stalled.add(harness.settings.topics.history)
    polls = harness.broker.script  # a restore without a deadline would poll for ever: stop it
    polls("restore.poll", *([lambda: None] * 100_000), AssertionError("no restore deadline"))
    assert harness.run() == EXIT_FAILURE
    [stop] = harness.logged("stopping without committing")
    assert stop["error_type"] == "HistoryRestoreError"
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "did not reach the end offsets within HER2_RESTORE_TIMEOUT_SECONDS=0.05" in err
    assert not any(ready for ready, _ in harness.health.states)
    assert harness.service is not None and harness.service.assigned_partitions() == []
