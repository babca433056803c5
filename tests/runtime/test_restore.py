"""Changelog restore against the fake broker: history read back at assignment, the restore
deadline, an unreadable changelog record, and readiness around it."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any

import pytest
from conftest import Harness
from fakes import FakeBroker
from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumer.avro.codec import Decoder, Encoder
from consumer.ops import events
from consumer.resources import HER2_ALERT, PATHOLOGY_RESULT, parsed_schema
from consumer.runtime import restore, routing
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.records import INPUT_OFFSET_HEADER, INPUT_TOPIC_ID_HEADER
from consumer.service import EXIT_FAILURE, EXIT_OK
from consumer.tools.synthetic import SyntheticGenerator


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
    harness.configure(max_unreadable_changelog_share=1 / (written + 1))
    history = harness.settings.topics.history
    harness.broker.append(history, b"\x00not a history key", b"garbage")
    assert harness.run() == EXIT_OK
    assert harness.value("her2_consumer_history_unreadable_records_total") == 1
    [skipped] = harness.logged("history record unreadable; skipped")
    assert (skipped["offset"], skipped["reason"]) == (written, "history-key")
    [restored] = harness.logged("history restored")
    assert restored["records"] == written
    assert harness.health.states[-2:] == [(True, ""), (False, "stopping")]


def _stop_after_polls(
    harness: Harness, polls: int = 5, seen: dict[str, float] | None = None
) -> None:
    """A held-back partition stays paused: the idle stop never comes, so stop after `polls`
    (`seen`: the partition gauges then, before the stop revokes the partitions)."""
    tp0 = {"topic": harness.settings.topics.input, "partition": "0"}

    def stop() -> None:
        assert harness.service is not None
        if seen is not None:
            for name in ("assigned_partitions", "held_back_partitions"):
                seen[name] = harness.value(f"her2_consumer_{name}")
            seen["lag"] = harness.value("her2_consumer_lag_records", **tp0)
        harness.service.stop()

    harness.broker.script("poll", *([lambda: None] * polls), stop)


def test_more_unreadable_changelog_records_than_the_share_hold_the_partition_back(
    harness: Harness,
) -> None:
    """Issue 14 item 3: a changelog that cannot be read is not an empty history."""
    written = _first_run(harness)
    history = harness.settings.topics.history
    for _ in range(2):
        harness.broker.append(history, b"\x00not a history key", b"garbage")
    harness.configure(max_unreadable_changelog_share=1 / (written + 2))  # 2 > share * total
    new = harness.publish(3, seed=2)
    seen: dict[str, float] = {}
    _stop_after_polls(harness, seen=seen)
    assert harness.run() == EXIT_OK
    reason = (
        f"history changelog unreadable: 2 of {written + 2} records (partition 0, "
        f"HER2_MAX_UNREADABLE_CHANGELOG_SHARE={1 / (written + 2):g})"
    )
    assert (False, reason) in harness.health.states
    assert not any(ready for ready, _ in harness.health.states)
    [line] = harness.logged(
        "history changelog unreadable beyond HER2_MAX_UNREADABLE_CHANGELOG_SHARE; "
        "partition held back"
    )
    assert (line["count"], line["records"], line["partition"]) == (2, written + 2, 0)
    assert harness.value("her2_consumer_history_unreadable_records_total") == 2
    # the new events are not evaluated against the holed history, nor committed past
    assert not harness.logged("batch committed")
    assert list(harness.broker.committed.values()) == [9]
    assert len(new) == 3
    assert harness.service is not None
    assert harness.service.assigned_partitions() == []
    # visible to the alerts while it runs: assigned, held back, its lag told (the new events)
    assert seen == {"assigned_partitions": 1, "held_back_partitions": 1, "lag": 3}


def test_the_default_share_holds_back_a_partition_with_one_unreadable_record(
    harness: Harness,
) -> None:
    assert harness.settings.max_unreadable_changelog_share == 0.0
    _first_run(harness)
    harness.broker.append(harness.settings.topics.history, b"\x00not a history key", b"x")
    _stop_after_polls(harness)
    assert harness.run() == EXIT_OK
    assert any(
        reason.startswith("history changelog unreadable: 1 of ")
        for _, reason in harness.health.states
    )
    assert not any(ready for ready, _ in harness.health.states)


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
    assert harness.service is not None
    assert harness.service.assigned_partitions() == []


def _latest_alerts(harness: Harness) -> dict[str, tuple[int, str]]:
    """alert_id -> (revision, status) of the newest record, over every alert topic."""
    decoder = Decoder("single-object", parsed_schema(HER2_ALERT))
    latest: dict[str, tuple[int, str]] = {}
    for topic in harness.settings.topics.alert_topics():
        for record in harness.broker.records(topic):
            alert = decoder.decode(record.value)
            latest[alert["alert_id"]] = (alert["revision"], alert["status"])
    return latest


def test_changelog_records_ahead_of_the_committed_offset_are_skipped(harness: Harness) -> None:
    """The offset guard (issue 15, after quix-streams' recovery): at-least-once publishes the
    changelog after every other output, then commits; a stop in between leaves changelog records
    that cover uncommitted input. The restore skips them, so the input records processed again
    meet the history as it was before them, and the outcome is the one of an uninterrupted run."""
    reference = Harness(FakeBroker(), harness.settings)
    reference.broker.create_topic(harness.settings.topics.input, 1)
    reference.configure(max_poll_records=4)
    reference.publish(12)
    assert reference.run() == EXIT_OK

    harness.configure(max_poll_records=4)
    harness.publish(12)
    # the second batch's changelog is acknowledged, then the process stops before the commit
    harness.broker.script("commit", lambda: None, RuntimeError("stopped before the commit"))
    assert harness.run() == EXIT_FAILURE
    input_tp = TopicPartition(harness.settings.topics.input, 0)
    assert harness.broker.committed[input_tp] == 4
    changelog = harness.broker.records(harness.settings.topics.history)
    covers = [int(dict(r.headers)[INPUT_OFFSET_HEADER]) for r in changelog]
    ahead = [offset for offset in covers if offset >= 4]
    assert ahead == [7] * len(ahead), covers
    assert 0 < len(ahead) < len(changelog), covers

    assert harness.run() == EXIT_OK
    assert _latest_alerts(harness) == _latest_alerts(reference)
    assert harness.value("her2_consumer_history_ahead_records_total") == len(ahead)
    # one warning for the partition, not one per record, with the count and the offset range
    [warning] = harness.logged(
        "history records ahead of the committed input offset; skipped "
        "(their input records are processed again)"
    )
    first_ahead = next(r.offset for r, c in zip(changelog, covers, strict=True) if c >= 4)
    assert warning["count"] == len(ahead)
    assert (warning["first_offset"], warning["last_offset"]) == (first_ahead, changelog[-1].offset)
    [restored] = harness.logged("history restored")
    assert restored["records"] == len(changelog) - len(ahead)
    assert harness.broker.committed[input_tp] == 12
    assert _latest_alerts(harness) == _latest_alerts(reference)


@pytest.mark.parametrize("topic_ids", [False, True], ids=["without-topic-ids", "topic-ids"])
def test_changelog_records_past_the_input_end_are_restored_not_skipped(
    harness: Harness, topic_ids: bool
) -> None:
    """The input topic re-created (purged) after 12 events: the new one holds 3 and the group
    has committed 2 of them. The changelog still holds the patients' history, its records
    covering the old input's offsets 0-11. Those at or past the input's end (3) cannot be
    processed again (no such input records): skipped as "ahead", that history was lost and
    later reports got wrong alerts (measured live). Without topic ids (records written before
    the header, or a broker that does not tell them) they are restored by the input-end rule,
    with one warning, and the records in the re-run window [2, 3) stay skipped; with them, the
    re-created topic's new id says every record is of another topic: all are restored."""
    harness.broker.topic_ids_unsupported = not topic_ids
    harness.publish(12)
    assert harness.run() == EXIT_OK
    topic = harness.settings.topics.input
    input_tp = TopicPartition(topic, 0)
    changelog = harness.broker.records(harness.settings.topics.history)
    covers = [int(dict(r.headers)[INPUT_OFFSET_HEADER]) for r in changelog]
    assert max(covers) == 11
    # re-created: 3 new events, 2 of them committed by the group
    harness.broker.create_topic(topic, 1)
    harness.publish(3, seed=7)
    harness.broker.committed[input_tp] = 2
    harness.broker.group_committed[harness.settings.group_id] = {input_tp: 2}

    assert harness.run() == EXIT_OK
    [restored] = harness.logged("history restored")
    if topic_ids:
        [elsewhere] = harness.logged(events.HISTORY_FROM_OTHER_INPUT)
        assert elsewhere["count"] == len(changelog)
        assert harness.value("her2_consumer_history_ahead_records_total") == 0
        assert restored["records"] == len(changelog)
        return
    beyond = [c for c in covers if c >= 3]
    window = [c for c in covers if 2 <= c < 3]
    [warning] = harness.logged(events.HISTORY_BEYOND_INPUT_END)
    assert (warning["partition"], warning["count"]) == (0, len(beyond))
    assert harness.value("her2_consumer_history_ahead_records_total") == len(window)
    assert restored["records"] == len(changelog) - len(window)


def _append(harness: Harness, events: list[dict[str, Any]], *, gaps: bool = False) -> None:
    """`events` on the one-partition input topic; with `gaps`, each after a record the service
    dead-letters, which takes an offset as a transaction marker does at a source cluster
    (MirrorMaker copies records, not markers: a DR copy's offsets are lower)."""
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    topic = harness.settings.topics.input
    for event in events:
        key = routing.patient_key(event["patient_id"])
        if gaps:
            harness.broker.append(topic, key, b"\x00not-avro")
        harness.broker.append(topic, key, encoder.encode(event))


def _corrected(event: dict[str, Any]) -> dict[str, Any]:
    """The same accession's report corrected a day later: IHC 0, no ISH."""
    when = event.get("event_time")
    return {
        **event,
        "event_id": f"{event['event_id']}-corrected",
        "report_status": "CORRECTED",
        "event_time": None if when is None else when + dt.timedelta(days=1),
        "her2_ihc": {"score": "ZERO", "percent": 0.0, "intensity": "NONE", "completeness": "NONE"},
        "her2_ish": None,
    }


def test_history_written_reading_another_input_topic_is_restored_without_the_offset_guard(
    harness: Harness,
) -> None:
    """A failover to a DR cluster fed by MirrorMaker, which keeps records, not offsets: the
    changelog's headers name source offsets, higher than the DR copy's (markers), and the
    group's translated commit is a DR offset. With reports waiting at the failover, the offset
    guard took source offsets in [committed, end) for records "ahead" and skipped them, while
    their input records lay below the commit and were never read again: history lost, wrong
    alerts (DR audit, live: a T-DXd alert left open for 20 of 40 patients then reported IHC
    0). Records name the input topic (its id) their offset is of; another topic's are restored.
    The fake's DR copy is the input topic created again: a new topic id, as a mirror has (and
    as a failback's rebuilt topic, or a purge by re-creation, has)."""
    history = SyntheticGenerator(seed=3).events(12)
    corrections = [_corrected(e) for e in history]
    reference = Harness(FakeBroker(), harness.settings)  # one cluster, no failover
    reference.broker.create_topic(harness.settings.topics.input, 1)
    _append(reference, history + corrections)
    assert reference.run() == EXIT_OK

    harness.configure(max_poll_records=2)  # a changelog record per report, its own offset
    _append(harness, history, gaps=True)  # the source cluster: offsets 0-23
    assert harness.run() == EXIT_OK
    changelog = harness.broker.records(harness.settings.topics.history)
    topic = harness.settings.topics.input
    source_id = harness.broker.topic_ids[topic].encode()
    assert {dict(r.headers).get(INPUT_TOPIC_ID_HEADER) for r in changelog} == {source_id}
    # the failover: the DR copy holds the 12 reports at offsets 0-11, the group's commit
    # translated to 12, and the corrections arrived meanwhile (offsets 12-23)
    harness.broker.create_topic(topic, 1)
    _append(harness, history)
    input_tp = TopicPartition(topic, 0)
    harness.broker.committed[input_tp] = 12
    harness.broker.group_committed[harness.settings.group_id] = {input_tp: 12}
    _append(harness, corrections)

    assert harness.run() == EXIT_OK
    assert harness.value("her2_consumer_history_ahead_records_total") == 0
    [elsewhere] = harness.logged(events.HISTORY_FROM_OTHER_INPUT)
    assert elsewhere["count"] == len(changelog)
    assert _latest_alerts(harness) == _latest_alerts(reference)
    # what the service writes on the DR copy names the DR copy
    written = harness.broker.records(harness.settings.topics.history)[len(changelog) :]
    assert written
    dr_id = harness.broker.topic_ids[topic].encode()
    assert dr_id != source_id
    assert {dict(r.headers).get(INPUT_TOPIC_ID_HEADER) for r in written} == {dr_id}


def test_records_skipped_before_a_restore_ends_early_are_still_logged(
    harness: Harness, capsys: object
) -> None:
    """A restore past its deadline (one changelog partition stuck) still says what the offset
    guard skipped on the partitions it did read: the metric alone does not name them."""
    input_topic, history = harness.settings.topics.input, harness.settings.topics.history
    harness.broker.create_topic(input_topic, 2)
    harness.configure(max_poll_records=4)
    harness.publish(12)
    assert harness.run() == EXIT_OK  # both changelog partitions hold records
    harness.publish(12, seed=2)
    harness.broker.script("commit", lambda: None, RuntimeError("stopped before the commit"))
    assert harness.run() == EXIT_FAILURE
    skipped = {}  # changelog partition -> offsets the guard skips
    for p in range(2):
        committed = harness.broker.committed[TopicPartition(input_topic, p)]
        covers = [
            (r.offset, int(dict(r.headers)[INPUT_OFFSET_HEADER]))
            for r in harness.broker.topics[history][p]
        ]
        skipped[p] = [offset for offset, cover in covers if cover >= committed]
    [(read, offsets)] = [(p, offsets) for p, offsets in skipped.items() if offsets]
    harness.broker.stalled.add(TopicPartition(history, 1 - read))
    harness.configure(tuning={"restore_timeout_s": 0.5})

    assert harness.run() == EXIT_FAILURE
    [stop] = harness.logged("stopping without committing")
    assert stop["error_type"] == "HistoryRestoreError"
    assert "did not reach the end offsets" in capsys.readouterr().err  # type: ignore[attr-defined]
    assert harness.value("her2_consumer_history_ahead_records_total") == len(offsets)
    [warning] = harness.logged(
        "history records ahead of the committed input offset; skipped "
        "(their input records are processed again)"
    )
    assert (warning["partition"], warning["count"]) == (read, len(offsets))
    assert (warning["first_offset"], warning["last_offset"]) == (offsets[0], offsets[-1])


def test_without_a_committed_offset_nothing_is_skipped(harness: Harness) -> None:
    """No committed offset (none yet, or the group's offsets expired): processing restarts from
    the reset policy, and skipping would drop the history, so every record is applied."""
    written = _first_run(harness)
    harness.broker.committed.clear()
    assert harness.run() == EXIT_OK
    [restored] = harness.logged("history restored")
    assert restored["records"] == written
    assert harness.value("her2_consumer_history_ahead_records_total") == 0


def test_exactly_once_restores_without_fetching_committed_offsets(harness: Harness) -> None:
    """Under exactly-once the changelog and the offsets commit in one transaction: no guard, and
    no committed-offset fetch (read_committed would wait out any open transaction)."""
    harness.configure(processing_guarantee="exactly_once")
    written = _first_run(harness)
    harness.broker.script("committed", RuntimeError("fetched"), RuntimeError("fetched"))
    # a mirror of the input after a failover: no guard to lift either, so nothing is said of it
    # (review: the line "restored without the offset guard" named a guard this mode lacks)
    topic = harness.settings.topics.input
    harness.broker.topic_ids[topic] = "another-topic-id"
    assert harness.run() == EXIT_OK
    assert (
        harness.logged("committed offset unknown; changelog offset guard off for the partition")
        == []
    )
    assert harness.logged(events.HISTORY_FROM_OTHER_INPUT) == []
    [restored] = harness.logged("history restored")
    assert restored["records"] == written


def test_the_partitions_stores_share_one_cache_budget(harness: Harness) -> None:
    """HER2_HISTORY_CACHE_PATIENTS bounds the decoded patients of every owned partition's store
    together (a process owning many partitions does not hold 1,024 per partition)."""
    harness.broker.create_topic(harness.settings.topics.input, 3)
    harness.configure(history_cache_patients=6, max_poll_records=10)
    harness.publish(120)
    held: list[list[int]] = []

    def look() -> None:
        assert harness.service is not None
        caches = [len(store._cache) for store in harness.service.table.stores.values()]
        if caches:
            held.append(caches)

    harness.broker.script("poll", *([look] * 40))
    assert harness.run() == EXIT_OK
    assert held, "never looked at the stores"
    assert all(len(caches) == 3 and sum(caches) <= 6 for caches in held), held
    assert max(sum(caches) for caches in held) == 6, held  # the budget is used, not just kept


def test_a_long_restore_logs_its_progress(harness: Harness, monkeypatch: object) -> None:
    """Every PROGRESS_EVERY_S (here: every poll) a restore still running says how far it got,
    in offsets and records only (no patient identifiers), and counts what it has read."""
    monkeypatch.setattr(restore, "PROGRESS_EVERY_S", 0.0)  # type: ignore[attr-defined]
    written = _first_run(harness, count=500)
    assert written > 500, "the fake broker hands out 500 records per poll: two polls at least"
    harness.publish(1, seed=2)
    assert harness.run() == EXIT_OK
    progress = harness.logged("history restore in progress")
    assert len(progress) >= 2
    assert (progress[0]["records"], progress[0]["offsets_left"]) == (0, written)
    records = [line["records"] for line in progress]
    left = [line["offsets_left"] for line in progress]
    assert records == sorted(records)
    assert 0 < records[-1] < written
    assert left == sorted(left, reverse=True)
    assert left[-1] > 0
    assert {key for line in progress for key in line} == {
        "event",
        "log_level",
        "topic",
        "partitions",
        "records",
        "offsets_left",
        "seconds",
        "timeout_seconds",
    }
    assert progress[0]["partitions"] == [0]
    [restored] = harness.logged("history restored")
    assert restored["records"] == written
    assert harness.value("her2_consumer_history_restored_records_total") == written


def test_a_restore_past_its_deadline_says_how_far_it_got(harness: Harness, capsys: object) -> None:
    """One changelog partition stuck: the other's records are counted as they are read, and
    the error says how many were restored and how many offsets were left (to size
    HER2_RESTORE_TIMEOUT_SECONDS)."""
    input_topic, history = harness.settings.topics.input, harness.settings.topics.history
    harness.broker.create_topic(input_topic, 2)
    harness.publish(12)
    assert harness.run() == EXIT_OK
    sizes = [len(harness.broker.topics[history][p]) for p in range(2)]
    assert all(sizes)
    harness.broker.stalled.add(TopicPartition(history, 1))
    harness.configure(tuning={"restore_timeout_s": 0.3})
    assert harness.run() == EXIT_FAILURE
    assert harness.value("her2_consumer_history_restored_records_total") == sizes[0]
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"({sizes[0]} records restored, {sizes[1]} offsets left)" in err


def _patients_alerts(harness: Harness, key: bytes) -> list[tuple[str, int, str]]:
    """(alert_id, revision, status) of every alert record published for one patient key."""
    decoder = Decoder("single-object", parsed_schema(HER2_ALERT))
    found = []
    for topic in harness.settings.topics.alert_topics():
        for record in harness.broker.records(topic):
            if record.key == key:
                alert = decoder.decode(record.value)
                found.append((alert["alert_id"], alert["revision"], alert["status"]))
    return sorted(found)


def _rerun_scenario(harness: Harness, *, commit_fails: bool) -> bytes:
    """One record per batch: R, P's report, Q (its classification refused for good: the batch
    runs again from Q after a restore), P's report again under a new event id. With
    `commit_fails`, the commit after P's first batch fails without stopping the service (a
    retriable broker error), so the committed offset stays below a batch whose outputs and
    changelog were delivered. Returns P's key."""
    harness.configure(max_poll_records=1)
    events = SyntheticGenerator(seed=1).events(40)
    first = next(e for e in events if e["event_id"] == "s1-E00014-0-0")
    r_event, q_event = [e for e in events if e["patient_id"] != first["patient_id"]][:2]
    again = copy.deepcopy(first)
    again["event_id"] += "-again"
    again["event_time"] += dt.timedelta(hours=1)
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    topic = harness.settings.topics.input
    for event in (r_event, first, q_event, again):
        key = routing.patient_key(event["patient_id"])
        harness.broker.append(topic, key, encoder.encode(event), routing.partition_for(key, 1))
    q_key = routing.patient_key(q_event["patient_id"])
    harness.broker.refuse(
        harness.settings.topics.classification,
        MessageSizeTooLargeError(),
        lambda r: r.key == q_key,
    )
    if commit_fails:
        harness.broker.script("commit", lambda: None, KafkaConnectionError("coordinator away"))
    assert harness.run() == EXIT_OK
    return routing.patient_key(first["patient_id"])


def test_a_rerun_restores_the_history_of_batches_delivered_but_not_committed(
    harness: Harness,
) -> None:
    """A batch re-run after a refused output (PartitionTable.redrive) restores the history up
    to where it runs again, not up to the committed offset: after a commit that failed without
    stopping the service, the committed offset is below a batch whose outputs and changelog
    were delivered and whose records are not polled again. Guarding with the committed offset
    dropped that batch's history, and P's later report raised P's alerts again as new."""
    reference = Harness(FakeBroker(), harness.settings)
    reference.broker.create_topic(harness.settings.topics.input, 1)
    p_key = _rerun_scenario(reference, commit_fails=False)
    expected = _patients_alerts(reference, p_key)
    assert expected
    assert len({alert_id for alert_id, _, _ in expected}) == len(expected), "no re-raise"

    _rerun_scenario(harness, commit_fails=True)
    input_tp = TopicPartition(harness.settings.topics.input, 0)
    commits = [what for kind, what in harness.broker.events if kind == "commit"]
    assert {0: 2} not in commits, commits  # P's first batch never committed
    assert harness.broker.committed[input_tp] == 4
    assert _patients_alerts(harness, p_key) == expected
    assert harness.value("her2_consumer_history_ahead_records_total") == 0


def test_a_restore_tells_the_liveness_probe_it_is_turning(harness: Harness) -> None:
    """A restore may take up to HER2_RESTORE_TIMEOUT_SECONDS, longer than /healthz's stall
    limit: reading the changelog beats the health hook, so a long restore (the README's advice
    for big partitions is to raise that timeout) is not killed by its liveness probe half-way
    and started again from the beginning."""
    _first_run(harness)
    harness.configure(tuning={"restore_timeout_s": 0.2})
    harness.broker.stalled.add(harness.settings.topics.history)
    restore_polls: list[int] = []

    def restore_poll() -> None:  # the loop's beats so far, at each poll of the restore
        restore_polls.append(harness.health.beats)

    harness.broker.script("restore.poll", *([restore_poll] * 100_000))
    assert harness.run() == EXIT_FAILURE  # the stalled changelog is never read to its end
    assert len(restore_polls) > 2
    assert restore_polls[-1] > restore_polls[0], "the restore beats while it reads"


def test_each_committed_offset_fetch_of_a_restore_follows_a_beat(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once, a restore fetches the group's committed offset of each partition it
    restores (the offset guard), each fetch a wait of up to HER2_REQUEST_TIMEOUT_MS:
    docs/operations.md promises /healthz a beat before each bounded wait, so that its stall
    limit covers one such wait, not the sum over the partitions of a large assignment (the
    first fetch included: the beats at the restore's start are counted too)."""
    harness.broker.create_topic(harness.settings.topics.input, 3)
    harness.publish(6)
    at_fetch: list[int] = []  # the beats so far when the restore starts, then at each fetch
    restore_pending = restore.Restorer.restore_pending

    def counted(self: restore.Restorer, table: Any) -> bool:
        at_fetch.append(harness.health.beats)
        return restore_pending(self, table)

    def fetch() -> None:
        at_fetch.append(harness.health.beats)

    monkeypatch.setattr(restore.Restorer, "restore_pending", counted)
    harness.broker.script("committed", *([fetch] * 10))
    assert harness.run() == EXIT_OK
    assert len(at_fetch) == 1 + 3, "one restore, one fetch per restored partition"
    assert all(b > a for a, b in itertools.pairwise(at_fetch)), f"a beat before each: {at_fetch}"
