"""The metric container: what a scrape of the service's registry shows."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from consumer.ops.metrics import Metrics

YEAR = 365 * 86400


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
