"""The runtime under test against tests/runtime/fakes.py: a whole `Service.run()` in
milliseconds, no broker (the fake broker is the service's `clients`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fakes import FakeBroker
from prometheus_client import CollectorRegistry

from consumer.avro.codec import Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.config import Settings, Tuning
from consumer.ops.metrics import Metrics
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime import routing
from consumer.service import Service
from consumer.state.backends import MEMORY
from consumer.tools.synthetic import SyntheticGenerator

_PIPELINE: list[Pipeline] = []


def pipeline() -> Pipeline:
    """One rule set for the whole session (loading it checks every embedded example)."""
    if not _PIPELINE:
        _PIPELINE.append(Pipeline(load_ruleset()))
    return _PIPELINE[0]


class RecordingHealth:
    """consumer.ops.http.Health's interface, remembering every call."""

    def __init__(self) -> None:
        self.beats = 0
        self.states: list[tuple[bool, str]] = []

    def beat(self) -> None:
        self.beats += 1

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.states.append((ready, reason))


@dataclasses.dataclass
class Harness:
    """A fake broker, the settings, and what one run of the service left behind."""

    broker: FakeBroker
    settings: Settings
    metrics: Metrics = dataclasses.field(default_factory=lambda: Metrics(CollectorRegistry(), "t"))
    health: RecordingHealth = dataclasses.field(default_factory=RecordingHealth)
    logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    service: Service | None = None

    def configure(self, **changes: Any) -> None:
        """Replace settings fields; `tuning={...}` replaces tuning fields."""
        tuning = changes.pop("tuning", None)
        if tuning:
            changes["tuning"] = dataclasses.replace(self.settings.tuning, **tuning)
        self.settings = dataclasses.replace(self.settings, **changes)

    def publish(self, count: int, seed: int = 1) -> list[dict[str, Any]]:
        """`count` synthetic events on the input topic, keyed and partitioned correctly."""
        events = SyntheticGenerator(seed=seed).events(count)
        encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
        topic = self.settings.topics.input
        partitions = len(self.broker.topics[topic])
        for event in events:
            key = routing.patient_key(event["patient_id"])
            self.broker.append(
                topic, key, encoder.encode(event), routing.partition_for(key, partitions)
            )
        return events

    def new_service(self) -> Service:
        """A service on the fake broker (stopped by the first poll that finds nothing)."""
        self.metrics = Metrics(CollectorRegistry(), "t")
        self.health = RecordingHealth()
        service = Service(
            self.settings, pipeline(), self.metrics, health=self.health, clients=self.broker
        )
        self.broker.on_idle = service.stop
        self.service = service
        return service

    def run(self) -> int:
        """Run a new service to its end; capture its log lines; return the exit code."""
        service = self.new_service()
        with structlog.testing.capture_logs() as captured:
            code = service.run()
        self.logs = captured
        return code

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The captured log lines with this event name."""
        return [line for line in self.logs if line["event"] == event]

    def value(self, name: str, **labels: str) -> float:
        """A sample of the service's metrics registry (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """One input partition, outputs not yet created, memory history stores; HER2_STATE_DIR
    is the test's temp dir (exactly-once claims its instance slot there)."""
    broker = FakeBroker()
    settings = Settings(
        state_dir=tmp_path,
        history_store=MEMORY,
        publish_retries=0,
        tuning=Tuning(poll_timeout_ms=0, request_timeout_ms=1000, delivery_timeout_ms=1000),
    )
    broker.create_topic(settings.topics.input, 1)
    return Harness(broker, settings)
