"""A patient-state changelog record larger than a Kafka request (issue 15, item 2): valid input
can no longer produce one (tests/unit/test_history_size.py), but if one appears the service
stops without committing, counts it and says why, instead of keeping a state that a restore
elsewhere would not see (it used to log and skip the record)."""

from __future__ import annotations

import pytest
from conftest import Harness

from consumer.runtime import dlq
from consumer.service import EXIT_FAILURE


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_an_unwritable_state_record_stops_without_committing(
    harness: Harness,
    guarantee: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness.configure(processing_guarantee=guarantee, instance_id="t-1")
    harness.publish(4)
    topics = harness.settings.topics
    fits = dlq.output_fits
    monkeypatch.setattr(  # only the changelog's records are "too large"
        "consumer.runtime.loop.output_fits", lambda out: out.topic != topics.history and fits(out)
    )
    assert harness.run() == EXIT_FAILURE
    assert harness.broker.committed == {}
    assert harness.broker.records(topics.history) == []
    assert harness.value("her2_consumer_history_unwritable_records_total") >= 1
    assert "more than a Kafka request" in capsys.readouterr().err
