"""The metric container: what a scrape of the service's registry shows."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from consumer.clinical.validate import REASON_FUTURE
from consumer.errors import DLQ_STAGES, DecodeError, InvalidEvent
from consumer.ops.metrics import CODEC_FALLBACKS, Metrics
from consumer.runtime.processor import (
    REASON_OUTPUT_REFUSED,
    REASON_OUTPUT_TOO_LARGE,
    REASON_PROCESSING_ERROR,
)
from consumer.runtime.routing import REASON_MISROUTED

YEAR = 365 * 86400
DECODE_REASONS = (
    "empty-value",
    "unknown-magic-byte",
    "unsupported-framing",
    "unknown-schema-id",
    "unknown-fingerprint",
    "avro-decode",
    "schema-resolution",
)


def scrape() -> tuple[Metrics, str]:
    """A fresh container with one observation of each kind, and its exposition text."""
    metrics = Metrics(CollectorRegistry(), "test")
    metrics.events.labels(outcome="processed").inc()
    metrics.event_age_seconds.observe(3 * YEAR)  # a re-published historical result
    metrics.processing_seconds.observe(0.01)
    return metrics, generate_latest(metrics.registry).decode()


class TestMetrics:
    def test_process_and_python_collectors_are_on_the_services_registry(self) -> None:
        _, text = scrape()
        names = set(re.findall(r"^(process_\w+|python_\w+)", text, re.MULTILINE))
        assert {
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "python_info",
            "python_gc_collections_total",
        } <= names

    def test_no_created_series(self) -> None:
        _, text = scrape()
        assert "_created" not in text

    def test_event_age_buckets_reach_ten_years(self) -> None:
        metrics, _ = scrape()
        bucket = metrics.registry.get_sample_value
        name = "her2_consumer_event_age_seconds_bucket"
        assert bucket(name, {"le": floatToGoString(10 * YEAR)}) == 1
        # the three-year-old event is told apart from a day-old one (not lumped into +Inf)
        assert bucket(name, {"le": floatToGoString(2 * YEAR)}) == 0
        assert bucket(name, {"le": floatToGoString(5 * YEAR)}) == 1

    def test_two_containers_in_one_process(self) -> None:
        scrape()
        scrape()  # a collector per registry: no duplicate-registration error

    def test_codec_fallbacks_are_exported_as_zero_from_the_start(self) -> None:
        """A series per fast path before any fallback, so increase() sees the very first."""
        _, text = scrape()
        for codec in CODEC_FALLBACKS:
            assert f'her2_consumer_codec_fallbacks_total{{codec="{codec}"}} 0.0' in text

    @pytest.mark.parametrize(("reason", "stage"), sorted(DLQ_STAGES.items()))
    def test_every_dead_letter_series_is_exported_as_zero_from_the_start(
        self, reason: str, stage: str
    ) -> None:
        """Her2ConsumerProcessingErrors and Her2ConsumerOutputsRefused use increase(): a series
        born at 1 (the first such record after a start) would show no increase, no alert."""
        metrics, _ = scrape()
        labels = {"stage": stage, "reason": reason}
        assert metrics.registry.get_sample_value("her2_consumer_dlq_records_total", labels) == 0

    @pytest.mark.parametrize("reason", sorted(DLQ_STAGES))
    def test_a_record_error_carries_only_reasons_of_its_own_stage(self, reason: str) -> None:
        """DecodeError and InvalidEvent dead-letter with their class's stage: a reason of
        another stage would count in a series never pre-created (its first record unseen)."""
        for cls in (DecodeError, InvalidEvent):
            if DLQ_STAGES[reason] == cls.stage:
                assert cls(reason, "m").stage == DLQ_STAGES[reason]
            else:
                with pytest.raises(ValueError, match="not of stage"):
                    cls(reason, "m")

    @pytest.mark.parametrize(
        ("reason", "stage"),
        [
            (REASON_FUTURE, "validate"),
            (REASON_MISROUTED, "validate"),
            (REASON_PROCESSING_ERROR, "process"),
            (REASON_OUTPUT_TOO_LARGE, "process"),
            (REASON_OUTPUT_REFUSED, "process"),
        ],
    )
    def test_the_stage_of_each_reason_is_the_one_that_dead_letters_it(
        self, reason: str, stage: str
    ) -> None:
        assert DLQ_STAGES[reason] == stage

    @pytest.mark.parametrize("codec", CODEC_FALLBACKS)
    def test_a_fallback_hook_counts_its_own_codec(self, codec: str) -> None:
        metrics, _ = scrape()
        hook = metrics.fallback_hook(codec)
        hook()
        hook()
        value = metrics.registry.get_sample_value
        for other in CODEC_FALLBACKS:
            expected = 2 if other == codec else 0
            assert value("her2_consumer_codec_fallbacks_total", {"codec": other}) == expected

    def test_a_fallback_hook_only_for_a_known_codec(self) -> None:
        """The label is a closed set: no hook, and no series, for another name."""
        metrics, _ = scrape()
        with pytest.raises(KeyError):
            metrics.fallback_hook("history")
