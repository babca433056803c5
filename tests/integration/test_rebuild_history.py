"""`her2-consumer rebuild-history` on the real broker, against the replay it replaces.

After a rule-set upgrade re-published an alert as r2, a changelog replay numbers it from r1
again, and its later retraction (r2) falls under a revision readers already hold: they keep the
alert open (test_open_alerts_replay.py; downstream audit H1). A rebuild evaluates the input
without publishing, publishes only what differs from what the alert topics hold, and leaves the
state numbered above it: the retraction is r3 and every reader closes the alert."""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import pytest
from helpers import (
    Env,
    ServiceThread,
    _CurrentStderr,
    make_event,
    output_reader,
    printed_objects,
    produce_events,
    running,
)

from consumer import cli
from consumer.avro.outputs import Codecs
from consumer.errors import ConfigError, InvalidEvent
from consumer.ops.logs import configure_logging
from consumer.runtime import processor as processor_module
from consumer.runtime.kafka.quirks import disable_topic_auto_creation
from consumer.runtime.startup import CHANGELOG_CONFIGS
from consumer.tools import rebuild

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaTimeoutError
    from kafka.structs import OffsetAndMetadata

MET = {"site": "DISTANT_METASTASIS"}


@pytest.fixture(autouse=True)
def _logs_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool configures logging on stderr (stdout carries its summary alone); in this process
    that must be whatever stderr is at write time, not this test's captured stream, which a
    later test's service thread would otherwise write to after it closed."""
    monkeypatch.setattr(
        rebuild,
        "configure_logging",
        lambda level: configure_logging(level, stream=_CurrentStderr()),  # type: ignore[arg-type]
    )


TDXD = "TDXD-LOW-DB04"


def _records(reader: Any, code: str, patient: str = "b1") -> list[tuple[int, str]]:
    """(revision, status) of `code`'s records of `patient`, in topic order."""
    return [
        (a.value["revision"], a.value["status"])
        for a in reader.alerts()
        if a.value["code"] == code and a.value["patient_id"] == patient
    ]


def _send(env: Env, topic: str, records: list[tuple[Any, dict[str, Any]]]) -> None:
    """Publish alert records as another writer did (an earlier release's upgrade)."""
    settings = env.settings()
    producer = disable_topic_auto_creation(KafkaProducer(bootstrap_servers=env.bootstrap))
    encoder = Codecs.build(settings, None).alerts[topic]
    for like, value in records:
        producer.send(topic, encoder.encode(value), key=like.key, partition=like.partition)
    producer.flush(30)
    producer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("upgraded_text", [False, True], ids=["same-content", "other-content"])
def test_a_rebuild_numbers_above_what_readers_hold(
    env: Env,
    capsys: Any,
    monkeypatch: Any,
    upgraded_text: bool,
    guarantee: str,
) -> None:
    env.extra["HER2_PROCESSING_GUARANTEE"] = guarantee  # exactly-once: restored read_committed
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    settings = env.settings()
    first = [  # A1's HER2-low sample makes A2's metastatic setting eligible (README timeline)
        make_event("b-e1", "b1", "b1-a1", setting="EARLY", chemo_lines=None, minutes=0),
        {**make_event("b-e2", "b1", "b1-a2", minutes=1, **MET), "her2_ihc": None},
    ]
    with running(settings), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, first)
        reader.wait(lambda r: _records(r, TDXD) == [(1, "ACTIVE")], what=f"{TDXD} r1")
        opened = next(a for a in reader.alerts() if a.value["code"] == TDXD)

    # what an upgrade of the rule set published for it (r2: this release's text, or another),
    # and an alert of a rule this release does not raise for the patient, held open
    upgraded = {**opened.value, "revision": 2}
    if upgraded_text:
        upgraded = {**upgraded, "rule_version": 9, "detail": "an earlier release's text"}
    stray = {
        **opened.value,
        "alert_id": "00000000-0000-5000-8000-000000000001",
        "code": "TDXD-HR-DB06",
        "revision": 4,
    }
    _send(env, settings.topics.tdxd, [(opened, upgraded), (opened, stray)])

    # the changelog lost while the lab sends another report: the rebuild evaluates it with the
    # rest and publishes its alerts and its classification, and commits past it (the first
    # review found a report's outputs lost when a first version committed past it without)
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([settings.topics.history])
    produce_events(env.bootstrap, env.input, [make_event("b-e9", "b9", "b9-a1", minutes=2)])
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    [line] = capsys.readouterr().out.splitlines()  # the summary alone (log lines on stderr)
    summary = json.loads(line)
    assert summary["input_records"] == 3
    assert (summary["committed_before"], summary["replayed_to"]) == ({"0": 2}, {"0": 3})
    assert summary["outputs_published"] == 1  # b-e9's classification
    assert summary["reconciled"]["closed-not-raised"] == 1
    # TDXD-LOW-DB04 changed only where the held text was not this release's; b9's findings
    # new; the rest the same
    assert summary["reconciled"].get("changed", 0) == (1 if upgraded_text else 0), summary
    new = summary["reconciled"]["new"]
    assert new >= 1
    assert summary["reconciled"]["same"] == summary["alerts_rebuilt"] - upgraded_text - new
    assert cli.main(["rebuild-history"]) == 2  # the changelog holds the history now

    with running(settings), output_reader(env) as reader:
        # published by the rebuild: the stray alert resolved above r4; the T-DXd alert again
        # (r3) only where the held text was not this release's; b9's alerts
        reader.wait(lambda r: _records(r, "TDXD-HR-DB06")[-1:] == [(5, "RESOLVED")], what="r5")
        reader.wait(lambda r: "b-e9" in r.classified_ids(), what="the report sent meanwhile")
        reader.settle()
        assert [c["event_id"] for c in reader.classifications()].count("b-e9") == 1
        b9 = [
            (a.value["code"], a.value["revision"])
            for a in reader.alerts()
            if a.value["patient_id"] == "b9"
        ]
        assert len(b9) == new  # each once, by the rebuild
        assert {revision for _code, revision in b9} == {1}
        expected = [(1, "ACTIVE"), (2, "ACTIVE")] + ([(3, "ACTIVE")] if upgraded_text else [])
        assert _records(reader, TDXD) == expected
        # the lab re-sends b-e2: a redelivery, no alert again (the replay's records it would
        # have re-published repeated (alert_id, revision) pairs with other times: reviews)
        alerts_of_b1 = [a for a in reader.alerts() if a.value["patient_id"] == "b1"]
        produce_events(env.bootstrap, env.input, [first[1]])
        reader.wait(
            lambda r: [c["event_id"] for c in r.classifications()].count("b-e2") == 2,
            what="the re-sent report's classification",
        )
        reader.settle()
        assert [a for a in reader.alerts() if a.value["patient_id"] == "b1"] == alerts_of_b1
        produce_events(
            env.bootstrap, env.input, [make_event("b-e3", "b1", "b1-a1", status="CANCELLED")]
        )
        top = expected[-1][0] + 1
        reader.wait(lambda r: _records(r, TDXD)[-1] == (top, "RETRACTED"), what="the retraction")

    # a reader of the topics from the beginning closes the alert (with a replay it stayed open)
    assert cli.main(["open-alerts", "--patient", "b1"]) == 0
    assert [a["code"] for a in printed_objects(capsys)] == ["RT-METASTATIC-SITE"]


def test_a_rebuild_refuses_while_the_group_runs(env: Env, capsys: Any, monkeypatch: Any) -> None:
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    with running(env.settings()), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, [make_event("g-e1", "g1", "g1-a1", minutes=0)])
        reader.wait(lambda r: bool(r.alerts()), what="the service's alerts")
        capsys.readouterr()
        assert cli.main(["rebuild-history"]) == 2
        refusal = [line for line in capsys.readouterr().err.splitlines() if "rebuild" in line]
    assert refusal == [
        f"rebuild-history: refused, nothing written: consumer group {env.group} has running "
        "members (state Stable): stop every instance first (a static member, HER2_INSTANCE_ID, "
        "stays until its session timeout has passed)"
    ]


def _after_a_run(env: Env, monkeypatch: Any, prefix: str, *, lose_changelog: bool = True) -> Any:
    """The service ran over one patient's HER2-low reports (TDXD-LOW-DB04 r1 opened) and
    stopped; the changelog is then lost. Returns the T-DXd alert's output record."""
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    settings = env.settings()
    first = [
        make_event(f"{prefix}-e1", prefix, f"{prefix}-a1", setting="EARLY", chemo_lines=None),
        {**make_event(f"{prefix}-e2", prefix, f"{prefix}-a2", minutes=1, **MET), "her2_ihc": None},
    ]
    with running(settings), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, first)
        reader.wait(lambda r: _records(r, TDXD, prefix) == [(1, "ACTIVE")], what=f"{TDXD} r1")
        opened = next(a for a in reader.alerts() if a.value["code"] == TDXD)
    if lose_changelog:
        with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
            admin.delete_topics([settings.topics.history])
    return opened


def _refusal(capsys: Any) -> str:
    capsys.readouterr()
    assert cli.main(["rebuild-history"]) == 2
    err = capsys.readouterr().err.splitlines()
    [line] = [x for x in err if x.startswith("rebuild-history: refused, nothing written: ")]
    return line


@pytest.mark.parametrize("trimmed", ["input", "alert topic"])
def test_a_rebuild_refuses_topics_that_lost_records(
    env: Env, capsys: Any, monkeypatch: Any, trimmed: str
) -> None:
    """Reports deleted from the input cannot be replayed: their findings would be resolved
    (first review, reproduced); alerts deleted from an alert topic are still held by readers
    and the rebuild could not see them (second review: nothing tested this refusal)."""
    opened = _after_a_run(env, monkeypatch, "t1")
    tp = (
        TopicPartition(env.input, 0)
        if trimmed == "input"
        else TopicPartition(opened.topic, opened.partition)
    )
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_records({tp: 1})
    what = "the input topic" if trimmed == "input" else "an alert topic"
    assert f"{what} no longer holds every record ({tp.topic} partition 0 from 1)" in _refusal(
        capsys
    )


def test_a_rebuild_refuses_a_group_without_offsets_where_alerts_are_held(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """A group deleted (or expired, mistyped, reset): a first version evaluated none of the
    patients' reports and resolved every alert readers held (second review, reproduced); one
    that went on had `run` read the whole input again, and with HER2_HISTORY_RETENTION_DAYS
    an expired accession's report was evaluated again and resolved an alert (sixth review,
    reproduced). The rebuild would also commit offsets for a group that may not be the
    service's. Refused, with what to do."""
    _after_a_run(env, monkeypatch, "g2")
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_groups([env.group])
    refusal = _refusal(capsys)
    assert f"consumer group {env.group} has no committed offset on input partition(s) 0" in refusal
    assert "--reset-offsets" in refusal


def test_reports_past_the_committed_offset_are_evaluated_once_by_the_rebuild(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """At-least-once, a crash between publishing and committing: the alert topics hold what
    `run` published for reports past the committed offset. The rebuild evaluates them with the
    rest, publishes their classifications again (at-least-once) and no alert, and commits past
    them. A first version left them to `run`, which evaluated them from the first against the
    state as readers held it after the last: a retracted T-DXd alert re-opened and closed again
    (fifth review). Here three such reports: retracted (r2), opened again (r3), retracted
    (r4)."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "c3", lose_changelog=False)
    later = [
        make_event("c3-e3", "c3", "c3-a1", status="CANCELLED", minutes=2),
        make_event("c3-e4", "c3", "c3-a3", minutes=3),
        make_event("c3-e5", "c3", "c3-a3", status="CANCELLED", minutes=4),
    ]
    with running(settings), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, later)
        reader.wait(lambda r: _records(r, TDXD, "c3")[-1:] == [(4, "RETRACTED")], what="r4")
        reader.settle()
        before = [a.value for a in reader.alerts() if a.value["patient_id"] == "c3"]
    assert _records(reader, TDXD, "c3") == [
        (1, "ACTIVE"),
        (2, "RETRACTED"),
        (3, "ACTIVE"),
        (4, "RETRACTED"),
    ]
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([settings.topics.history])
        admin.alter_group_offsets(  # as if the commit of the later reports' batches was lost
            env.group, {TopicPartition(env.input, 0): OffsetAndMetadata(2, "", -1)}
        )
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["committed_before"], summary["replayed_to"]) == ({"0": 2}, {"0": 5})
    assert (summary["alerts_published"], summary["outputs_published"]) == (0, 3), summary
    with running(settings), output_reader(env) as reader:
        reader.wait(
            lambda r: [c["event_id"] for c in r.classifications()].count("c3-e5") == 2,
            what="the later reports classified again",
        )
        reader.settle()
        assert [a.value for a in reader.alerts() if a.value["patient_id"] == "c3"] == before
    assert cli.main(["open-alerts", "--patient", "c3"]) == 0
    assert TDXD not in [a["code"] for a in printed_objects(capsys)]


def test_a_dry_run_writes_nothing(env: Env, capsys: Any, monkeypatch: Any) -> None:
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    settings = env.settings()
    with running(settings), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, [make_event("d-e1", "d1", "d1-a1", minutes=0)])
        reader.wait(lambda r: bool(_records(r, TDXD, "d1")), what=f"{TDXD}")
        opened = next(a for a in reader.alerts() if a.value["code"] == TDXD)
    stray = {**opened.value, "alert_id": "00000000-0000-5000-8000-000000000002", "revision": 3}
    _send(env, settings.topics.tdxd, [(opened, stray)])  # held open, not raised: to resolve
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([settings.topics.history])
    ends = _alert_ends(env)
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--dry-run", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dry_run"] is True
    assert summary["input_records"] == 1
    assert summary["alerts_to_publish"] == 1
    assert summary["reconciled"]["closed-not-raised"] == 1
    assert summary["changelog_records"] == 0
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        assert settings.topics.history not in admin.list_topics()
    assert _alert_ends(env) == ends


def _alert_ends(env: Env) -> dict[Any, int]:
    reader = KafkaConsumer(bootstrap_servers=env.bootstrap)
    try:
        parts = [
            TopicPartition(t, p)
            for t in env.settings().topics.alert_topics()
            for p in reader.partitions_for_topic(t) or ()
        ]
        return dict(reader.end_offsets(parts))
    finally:
        reader.close()


@pytest.mark.parametrize("failing", ["alert", "history", "create"])
def test_a_rebuild_that_fails_to_write_leaves_no_changelog(
    env: Env, capsys: Any, monkeypatch: Any, failing: str
) -> None:
    """Alerts are published before the changelog is created; a changelog write that fails is
    removed again: `run` refuses to start without one, never on a partial history (reviews:
    written first, a refused alert left floors saying "closed" while readers held it open; a
    partial changelog let `run` start and miss a retraction)."""
    settings = env.settings()
    opened = _after_a_run(env, monkeypatch, "f1")
    stray = {**opened.value, "alert_id": "00000000-0000-5000-8000-000000000003", "revision": 2}
    _send(env, settings.topics.tdxd, [(opened, stray)])  # held open, not raised: to publish
    doomed = settings.topics.tdxd if failing == "alert" else settings.topics.history

    class Refusing(KafkaProducer):  # type: ignore[misc]
        def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
            if topic == doomed:
                raise KafkaTimeoutError("refused by the test")
            return super().send(topic, *args, **kwargs)

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise ConfigError("cannot create output topic (refused by the test)")

    if failing == "create":  # the alerts are out: exit 1, not 2 ("nothing written")
        monkeypatch.setattr(rebuild, "create_topics", refused)
    else:
        monkeypatch.setattr(rebuild, "KafkaProducer", Refusing)
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 1
    assert "refused by the test" in capsys.readouterr().err
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        assert settings.topics.history not in admin.list_topics()
    monkeypatch.undo()  # and again, unrefused: it runs (what was published is now held)
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        rebuild,
        "configure_logging",
        lambda level: configure_logging(level, stream=_CurrentStderr()),  # type: ignore[arg-type]
    )
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    published_before = 0 if failing == "alert" else 1
    assert summary["alerts_published"] == 1 - published_before


class _Killed(BaseException):
    """Stands in for SIGKILL: no handler of the rebuild runs."""


def test_a_rebuild_killed_while_writing_leaves_a_changelog_run_does_not_start_on(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """A rebuild killed after writing part of the history cannot remove it. The changelog stays
    uncompacted until the whole history is written, and `run` refuses to start on it (exit 2,
    saying to delete it and rebuild); before, it started on the partial history (the last
    note's open item). Deleted, a second rebuild completes and `run` starts."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "k1")
    real = rebuild._configure

    def killed_before_compacting(admin: Any, topic: str, configs: Any) -> None:
        if configs == CHANGELOG_CONFIGS:
            raise _Killed
        real(admin, topic, configs)

    monkeypatch.setattr(rebuild, "_configure", killed_before_compacting)
    monkeypatch.setattr(rebuild.Rebuild, "_remove_partial_changelog", lambda *_a: None)
    with pytest.raises(_Killed):
        cli.main(["rebuild-history", "--timeout", "30"])
    capsys.readouterr()
    svc = ServiceThread(settings).start()
    code = svc.join(60)
    if code is None:  # started on the partial history
        svc.stop()
    assert code == 2
    assert "a rebuild stopped part way, and the history in it is partial" in (
        capsys.readouterr().err
    )
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        assert settings.topics.history in admin.list_topics()  # left as the kill left it
        admin.delete_topics([settings.topics.history])
    monkeypatch.setattr(rebuild, "_configure", real)
    _wait_deleted(env, settings.topics.history)
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["changelog_records"] >= 1
    with running(settings), output_reader(env) as reader:
        produce_events(
            env.bootstrap, env.input, [make_event("k1-e3", "k1", "k1-a1", status="CANCELLED")]
        )
        reader.wait(lambda r: _records(r, TDXD, "k1")[-1:] == [(2, "RETRACTED")], what="r2")


def _wait_deleted(env: Env, topic: str, timeout_s: float = 30.0) -> None:
    """The broker deletes a topic in the background."""
    deadline = time.monotonic() + timeout_s
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, f"{topic} not deleted"
            time.sleep(0.2)


def _rebuilt_and_held(env: Env, capsys: Any, patient: str) -> None:
    """The changelog deleted and rebuilt: the rebuild publishes the T-DXd alert readers lacked
    (a new finding to them), and a reader of the topics now holds it open."""
    history = env.settings().topics.history
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([history])
    _wait_deleted(env, history)
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reconciled"]["new"] >= 1, summary
    assert cli.main(["open-alerts", "--patient", patient]) == 0
    assert TDXD in [a["code"] for a in printed_objects(capsys)]


def test_an_alert_topic_deleted_is_filled_again_by_a_rebuild(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """docs/operations.md: an output topic deleted while the service runs loses its records
    for every reader while the history holds those alerts as published (runbook audit).
    Re-created empty (as the restart does), the changelog deleted, a rebuild publishes the
    alerts it no longer holds."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "z1", lose_changelog=False)
    topic = settings.topics.tdxd
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.delete_topics([topic])
    _wait_deleted(env, topic)
    with running(settings):  # start-up creates the missing output, empty
        pass
    assert cli.main(["open-alerts", "--patient", "z1"]) == 0
    assert TDXD not in [a["code"] for a in printed_objects(capsys)]
    _rebuilt_and_held(env, capsys, "z1")


def test_an_alert_refused_then_held_as_published_is_published_by_a_rebuild(
    env: Env, capsys: Any, monkeypatch: Any, create_topics: Any
) -> None:
    """At-least-once, the T-DXd topic refuses a report's alert for good; the report stays
    evaluated and the history holds the alert as published. The lab re-sends the report under
    a new id before the dead letter is replayed: read as the same report, it publishes nothing,
    and the copy then reads as stale (a read-only review: a T-DXd alert never published). A
    rebuild publishes it (docs/operations.md, Her2ConsumerOutputsRefused)."""
    for name, value in env.environ().items():
        monkeypatch.setenv(name, value)
    settings = env.settings()
    create_topics(env.input, partitions=1)
    create_topics(settings.topics.tdxd, partitions=1, config={"max.message.bytes": "1000"})
    first = make_event("r1-e1-" + "x" * 900, "r1", "r1-a1", minutes=0)
    again = {**first, "event_id": "r1-e2"}  # the same report under a new id
    with running(settings), output_reader(env) as reader:
        produce_events(env.bootstrap, env.input, [first])
        reader.wait(lambda r: bool(r.records["dlq"]), what="the refused report's copy")
        with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:  # the cause fixed
            admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC,
                        settings.topics.tdxd,
                        configs={"max.message.bytes": "1048576"},
                    )
                ]
            )
        produce_events(env.bootstrap, env.input, [again])
        reader.wait(lambda r: "r1-e2" in r.classified_ids(), what="the re-sent report")
        reader.settle()
        assert _records(reader, TDXD, "r1") == []
    _rebuilt_and_held(env, capsys, "r1")


def test_a_changelog_written_whole_but_not_compacted_is_kept(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """The compaction at the end refused (no AlterConfigs, say): the history is whole and the
    group's offsets are past it, so the changelog is kept, not deleted (a read-only review: it
    was deleted with "not all written"); start-up refuses it until it is compacted, then runs
    on it."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "h1")
    produce_events(env.bootstrap, env.input, [make_event("h2-e1", "h2", "h2-a1", minutes=3)])
    real = rebuild._configure

    def refused_at_the_end(admin: Any, topic: str, configs: Any) -> None:
        if configs == CHANGELOG_CONFIGS:
            raise rebuild.Her2Error("refused by the test")
        real(admin, topic, configs)

    monkeypatch.setattr(rebuild, "_configure", refused_at_the_end)
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 1
    assert "compact it yourself" in capsys.readouterr().err
    svc = ServiceThread(settings).start()
    code = svc.join(60)
    if code is None:
        svc.stop()
    assert code == 2
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        assert settings.topics.history in admin.list_topics()
        # the group's offsets are at the input's end: the report sent while stopped was
        # published by the rebuild
        tp = TopicPartition(env.input, 0)
        assert admin.list_group_offsets({env.group: [tp]})[env.group][tp].offset == 3
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:  # compacted by hand
        real(admin, settings.topics.history, CHANGELOG_CONFIGS)
    with running(settings), output_reader(env) as reader:
        produce_events(
            env.bootstrap, env.input, [make_event("h1-e4", "h1", "h1-a1", status="CANCELLED")]
        )
        reader.wait(lambda r: _records(r, TDXD, "h1")[-1:] == [(2, "RETRACTED")], what="r2")


def test_a_refused_output_of_a_record_past_the_commit_stops_the_rebuild_clearly(
    env: Env, capsys: Any, monkeypatch: Any, create_topics: Any
) -> None:
    """A record sent while stopped whose classification the topic refuses for good: the
    rebuild stops with exit 1 naming the topic and what to fix, and leaves no changelog (a
    read-only review: the message was "MessageSizeTooLargeError: None")."""
    settings = env.settings()
    create_topics(
        settings.topics.classification, partitions=1, config={"max.message.bytes": "1000"}
    )
    _after_a_run(env, monkeypatch, "m1")
    long_id = make_event("m1-e3-" + "x" * 900, "m1", "m1-a3", minutes=3)
    produce_events(env.bootstrap, env.input, [long_id])
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert "a classification or dead letter of a record past the committed offsets" in err
    assert settings.topics.classification in err
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        assert settings.topics.history not in admin.list_topics()


def _refused_from_now_on(monkeypatch: Any, event_id: str) -> None:
    """Validation refuses the report `event_id` from now on in this process (the rebuild's and
    the service's): a stricter release than the one that accepted it."""
    real = processor_module.check_event

    def stricter(*args: Any, **kwargs: Any) -> Any:
        event = real(*args, **kwargs)
        if event["event_id"] == event_id:
            raise InvalidEvent("schema-validation", "refused by a stricter release (test)")
        return event

    monkeypatch.setattr(processor_module, "check_event", stricter)


def test_a_report_this_release_dead_letters_is_reconciled(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """A report `run` accepted that this release dead-letters lies below the committed offset:
    `run` never evaluates it again, so its findings are reconciled (here resolved: a first
    version left them to `run`, and the alert stayed open, third review)."""
    _after_a_run(env, monkeypatch, "x1")
    _refused_from_now_on(monkeypatch, "x1-e2")
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dead_lettered"] == {"schema-validation": 1}
    assert summary["reconciled"]["closed-not-raised"] >= 1


def test_a_later_report_this_release_refuses_is_reconciled_at_once(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """A held alert of a report past the committed offset that this release refuses: the
    rebuild dead-letters the report and resolves the alert at once (a first version left it to
    `run`, and only the patient's next report closed it: fourth review)."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "y1")
    with KafkaAdminClient(bootstrap_servers=env.bootstrap) as admin:
        admin.alter_group_offsets(  # y1-e2 past the commit: its batch's commit lost
            env.group, {TopicPartition(env.input, 0): OffsetAndMetadata(1, "", -1)}
        )
    _refused_from_now_on(monkeypatch, "y1-e2")
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dead_lettered"] == {"schema-validation": 1}
    assert summary["reconciled"]["closed-not-raised"] >= 1
    with running(settings), output_reader(env) as reader:
        reader.wait(lambda r: _records(r, TDXD, "y1")[-1:] == [(2, "RESOLVED")], what="r2")
        reader.wait(lambda r: bool(r.records["dlq"]), what="y1-e2 dead-lettered")
        reader.settle()
        assert _records(reader, TDXD, "y1") == [(1, "ACTIVE"), (2, "RESOLVED")]
        [dead] = reader.records["dlq"]
        assert dead.headers["her2.errors.reason"] == b"schema-validation"


def test_a_re_used_event_id_past_the_committed_offset_is_dead_lettered(
    env: Env, capsys: Any, monkeypatch: Any
) -> None:
    """Sent while stopped: a record under the id of its accession's latest report with other
    content (refused: event-id-reused), then a later report of that accession. The rebuild
    dead-letters the first as `run` would have; when `run` read them again after a rebuild,
    the first was taken for a stale copy and its dead letter was lost (sixth review,
    reproduced)."""
    settings = env.settings()
    _after_a_run(env, monkeypatch, "u1")
    reused = {**make_event("u1-e1", "u1", "u1-a1", minutes=3), "her2_ihc": None}
    later = make_event("u1-e3", "u1", "u1-a1", minutes=4, status="AMENDED")
    produce_events(env.bootstrap, env.input, [reused, later])
    capsys.readouterr()
    assert cli.main(["rebuild-history", "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dead_lettered"] == {"event-id-reused": 1}, summary
    assert summary["outputs_published"] == 2  # the dead letter, the later report's classification
    with running(settings), output_reader(env) as reader:
        reader.wait(lambda r: bool(r.records["dlq"]), what="the re-used id dead-lettered")
        reader.settle()
        [dead] = reader.records["dlq"]
        assert dead.headers["her2.errors.reason"] == b"event-id-reused"
        assert [c["event_id"] for c in reader.classifications()].count("u1-e3") == 1
