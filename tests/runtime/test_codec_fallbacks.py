"""her2_consumer_codec_fallbacks_total against the fake broker: the composition root hands the
output encoders (runtime/service.py) and the history stores' PartCodec (runtime/restore.py)
their hooks, so every value a fast path leaves to fastavro is counted under its codec, and a
service's own records, written and restored, count none."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from conftest import Harness

from consumer.avro import codec as avro_codec
from consumer.avro.fastwrite import NotFast
from consumer.ops.metrics import CODEC_FALLBACKS
from consumer.service import EXIT_OK
from consumer.state import binary

FALLBACKS = "her2_consumer_codec_fallbacks_total"


def _fallbacks(harness: Harness) -> dict[str, float | None]:
    """Each codec's series as exported (None: no series)."""
    sample = harness.metrics.registry.get_sample_value
    return {codec: sample(FALLBACKS, {"codec": codec}) for codec in CODEC_FALLBACKS}


def test_the_services_own_records_count_no_fallback(harness: Harness) -> None:
    harness.publish(30)
    assert harness.run() == EXIT_OK
    assert _fallbacks(harness) == dict.fromkeys(CODEC_FALLBACKS, 0.0)
    harness.publish(5, seed=2)
    assert harness.run() == EXIT_OK  # restores the first run's changelog, then processes
    [restored] = harness.logged("history restored")
    assert restored["records"] > 0
    assert _fallbacks(harness) == dict.fromkeys(CODEC_FALLBACKS, 0.0)


def test_outputs_left_to_fastavro_are_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(datum: Any) -> NoReturn:
        raise NotFast

    # every encoder built from here on has a compiled writer that takes nothing
    monkeypatch.setattr(avro_codec, "compile_writer", lambda schema: never)
    harness.publish(9)
    assert harness.run() == EXIT_OK
    topics = harness.settings.topics
    published = sum(
        len(harness.broker.records(topic))
        for topic in (topics.classification, *topics.alert_topics())
    )
    assert published > 9  # the classifications and some alerts
    assert harness.value(FALLBACKS, codec="output") == published
    assert harness.value(FALLBACKS, codec="history_encode") == 0


def test_history_parts_left_to_fastavro_are_counted_both_ways(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> NoReturn:
        raise binary.NotFast

    with monkeypatch.context() as patched:
        patched.setattr(binary, "encode_patient", refuse)
        patched.setattr(binary, "encode_accession", refuse)
        harness.publish(30)
        assert harness.run() == EXIT_OK
    written = len(harness.broker.records(harness.settings.topics.history))
    assert written > 0
    assert harness.value(FALLBACKS, codec="history_encode") == written
    assert harness.value(FALLBACKS, codec="history_decode") == 0
    assert harness.value(FALLBACKS, codec="output") == 0

    monkeypatch.setattr(binary, "decode", refuse)
    assert harness.run() == EXIT_OK  # restores what the first run wrote, through fastavro
    [restored] = harness.logged("history restored")
    assert restored["records"] == written
    assert harness.value(FALLBACKS, codec="history_decode") == written
    assert harness.value(FALLBACKS, codec="history_encode") == 0
