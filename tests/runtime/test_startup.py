"""Start-up against the fake broker: output topics created like the input, the changelog
co-partitioned and compacted, a failed creation, the wait for a missing input topic."""

from __future__ import annotations

from conftest import Harness

from consumer.service import EXIT_CONFIG, EXIT_OK


def test_missing_outputs_are_created_like_the_input_and_the_changelog_compacted(
    harness: Harness,
) -> None:
    harness.broker.create_topic(harness.settings.topics.input, 3)
    assert harness.run() == EXIT_OK
    topics = harness.settings.topics
    for topic in topics.outputs():
        assert len(harness.broker.topics[topic]) == 3, topic
    assert harness.broker.configs[topics.history] == {"cleanup.policy": "compact"}
    assert all(admin.closed for admin in harness.broker.admins)


def test_a_changelog_with_another_partition_count_is_a_configuration_error(
    harness: Harness, capsys: object
) -> None:
    topics = harness.settings.topics
    harness.broker.create_topic(topics.input, 2)
    harness.broker.create_topic(topics.history, 1)
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"HER2_HISTORY_TOPIC {topics.history} has 1 partitions" in err
    assert "co-partitioned" in err
    assert harness.broker.consumers == [], "never joins the group"


def test_a_topic_that_cannot_be_created_is_a_configuration_error(
    harness: Harness, capsys: object
) -> None:
    dlq = harness.settings.topics.dlq
    harness.broker.create_errors[dlq] = 29  # TOPIC_AUTHORIZATION_FAILED
    assert harness.run() == EXIT_CONFIG
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"cannot create output topic {dlq} (Kafka error code 29)" in err
    assert harness.broker.consumers == []
    assert all(admin.closed for admin in harness.broker.admins)


def test_an_existing_topic_reported_by_creation_is_not_an_error(harness: Harness) -> None:
    harness.broker.create_errors[harness.settings.topics.dlq] = 36  # TOPIC_ALREADY_EXISTS
    harness.broker.create_topic(harness.settings.topics.dlq, 1)  # created by someone else
    assert harness.run() == EXIT_OK


def test_a_missing_input_topic_is_waited_for_not_created(harness: Harness) -> None:
    topics = harness.settings.topics
    del harness.broker.topics[topics.input]
    harness.broker.script("describe", lambda: None, lambda: harness.broker.create_topic(topics.input, 1))
    assert harness.run() == EXIT_OK
    [waiting] = harness.logged(
        "input topic missing; waiting for it to be created (it is never auto-created)"
    )
    assert waiting["input_topic"] == topics.input
    assert (False, "input topic missing") in harness.health.states
    assert ("create", topics.input) not in harness.broker.events


def test_a_stop_while_waiting_for_the_input_ends_the_run_cleanly(harness: Harness) -> None:
    del harness.broker.topics[harness.settings.topics.input]
    service = harness.new_service()
    harness.broker.script("describe", service.stop)
    assert service.run() == EXIT_OK
    assert harness.broker.producers == [] and harness.broker.consumers == []
