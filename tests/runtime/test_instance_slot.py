"""The service's instance id (issue 15, item 5) against the fake broker: exactly-once without
HER2_INSTANCE_ID claims a host slot for its run and names its transactional id after it;
HER2_INSTANCE_ID wins; at-least-once claims nothing; a slot that cannot be claimed stops the
start-up as a configuration error, before any Kafka client exists."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from conftest import Harness

from consumer.runtime.instance import SLOTS_DIR, claim_slot
from consumer.service import EXIT_CONFIG, EXIT_OK


def _slot_id(slot: int) -> re.Pattern[str]:
    host = re.escape(re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-"))
    return re.compile(rf"{host}-[0-9a-f]{{8}}-{slot}")


def test_exactly_once_without_an_instance_id_uses_a_host_slot(harness: Harness) -> None:
    harness.configure(processing_guarantee="exactly_once")
    harness.publish(6)
    assert harness.run() == EXIT_OK
    service = harness.service
    assert service is not None
    instance_id = service.instance_id
    assert instance_id is not None
    assert _slot_id(0).fullmatch(instance_id)
    [producer] = harness.broker.producers
    assert producer.config["transactional_id"] == f"{harness.settings.group_id}-{instance_id}"
    assert producer.config["client_id"] == f"her2-producer-{instance_id}"
    member = next(c for c in harness.broker.consumers if c.config.get("group_id"))
    assert "group_instance_id" not in member.config, "static membership only when set"
    [claimed] = harness.logged("instance slot claimed")
    assert claimed["slot"] == 0
    assert claimed["instance_id"] == instance_id
    assert claimed["transactional_id"] == producer.config["transactional_id"]
    [started] = harness.logged("started")
    assert started["instance_id"] == instance_id


def test_a_slot_held_elsewhere_is_skipped_and_the_run_releases_its_own(
    harness: Harness,
) -> None:
    harness.configure(processing_guarantee="exactly_once")
    assert harness.settings.state_dir is not None
    slots = harness.settings.state_dir / SLOTS_DIR
    other = claim_slot(slots, harness.settings.group_id, socket.gethostname())  # another process
    try:
        assert harness.run() == EXIT_OK
        assert harness.service is not None
        instance_id = harness.service.instance_id
        assert instance_id is not None
        assert _slot_id(1).fullmatch(instance_id)
        [producer] = harness.broker.producers
        assert producer.config["transactional_id"] == f"{harness.settings.group_id}-{instance_id}"
        again = claim_slot(slots, harness.settings.group_id, socket.gethostname())
        again.release()
        assert again.number == 1, "the stopped service released its slot"
    finally:
        other.release()


def test_the_instance_id_wins_and_no_slot_is_claimed(harness: Harness) -> None:
    harness.configure(processing_guarantee="exactly_once", instance_id="pod-1")
    assert harness.run() == EXIT_OK
    [producer] = harness.broker.producers
    assert producer.config["transactional_id"] == f"{harness.settings.group_id}-pod-1"
    member = next(c for c in harness.broker.consumers if c.config.get("group_id"))
    assert member.config["group_instance_id"] == "pod-1"
    assert harness.logged("instance slot claimed") == []
    assert harness.settings.state_dir is not None
    assert not (harness.settings.state_dir / SLOTS_DIR).exists()


def test_at_least_once_claims_no_slot(harness: Harness) -> None:
    assert harness.run() == EXIT_OK
    [producer] = harness.broker.producers
    assert "transactional_id" not in producer.config
    assert harness.logged("instance slot claimed") == []
    assert harness.service is not None
    assert harness.service.instance_id is None


def test_a_slot_that_cannot_be_claimed_is_a_configuration_error(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("x")
    harness.configure(processing_guarantee="exactly_once", state_dir=not_a_dir)
    assert harness.run() == EXIT_CONFIG
    assert "HER2_STATE_DIR: cannot claim an instance slot" in capsys.readouterr().err
    assert harness.broker.admins == harness.broker.producers == harness.broker.consumers == []
