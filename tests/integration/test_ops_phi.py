"""No patient data in the logs of the running consumer, even at DEBUG and on every failure path.

Events carry recognisable markers in the patient id (also the record key), the accession id,
the free-text IHC report, the body site and the planned therapies. They go through the real
Service and broker: valid events, garbage bytes, an event that decodes but fails validation,
and an event that raises inside processing (a pipeline that throws an exception whose message
holds patient data, standing in for a bug). structlog is configured at DEBUG into a buffer,
and the stdlib loggers (kafka-python's) are captured at WARNING, which is what reaches stderr
in production. No marker may appear anywhere; the dead-letter headers must not carry them
either.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from helpers import (
    Env,
    ServiceThread,
    delete_outputs,
    encoder,
    make_env,
    make_event,
    output_reader,
    pipeline,
    produce,
    wait_for,
)

from consumer.clinical.model import Event
from consumer.clinical.patient import PatientState, Step
from consumer.clinical.pipeline import Pipeline
from consumer.ops.logs import configure_logging

MARK = "PHIMARK"
CRASH_EVENT = "phi-crash-event"


def marked_event(index: int, **overrides: Any) -> Event:
    """A valid event whose identifying and free-text fields all carry MARK."""
    event = make_event(
        f"phi-e{index:02d}",
        f"{MARK}-PATIENT-{index % 3}",
        f"{MARK}-ACCESSION-{index:02d}",
        minutes=index,
        site="DISTANT_METASTASIS",
        planned=[f"{MARK}-therapy"],
    )
    event["her2_ihc"]["reported_text"] = f"{MARK}-REPORT weak incomplete staining in 30%"
    event["specimen"]["body_site"] = f"{MARK}-liver segment 7"
    event.update(overrides)
    return event


class ExplodingPipeline(Pipeline):
    """The real pipeline, except that one event raises with patient data in the message."""

    def step(self, state: PatientState | None, event: Event) -> Step:
        if event["event_id"] == CRASH_EVENT:
            raise RuntimeError(f"failed for {event['patient_id']}: {event['her2_ihc']}")
        return super().step(state, event)


@pytest.fixture
def env(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Env]:
    test_env = make_env(kafka_bootstrap, unique_name, HER2_LOG_LEVEL="DEBUG")
    yield test_env
    delete_outputs(kafka_bootstrap, test_env)


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """structlog at DEBUG into a buffer for the test; reset afterwards."""
    buffer = io.StringIO()
    configure_logging("DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


def test_no_patient_data_in_logs_on_any_path(
    env: Env,
    create_topics: Callable[..., list[str]],
    log_buffer: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_topics(env.input, partitions=2)
    enc = encoder()
    valid = [marked_event(i) for i in range(6)]
    invalid = marked_event(90, event_id="phi-invalid")
    invalid["her2_ihc"]["percent_cells_stained"] = 150.0  # decodes, fails validation
    crash = marked_event(91, event_id=CRASH_EVENT)
    records = [(e["patient_id"].encode(), enc.encode(e)) for e in [*valid, invalid, crash]]
    records.append((f"{MARK}-PATIENT-garbage".encode(), f"{{{MARK}-PATIENT-in-garbage}}".encode()))
    produce(env.bootstrap, env.input, records)

    caplog.set_level(logging.WARNING)
    svc = ServiceThread(env.settings())
    svc.service.pipeline = ExplodingPipeline(pipeline().ruleset)
    svc.start()
    try:
        wait_for(
            lambda: (
                svc.metric("her2_consumer_events_total", {"outcome": "processed"}) == len(valid)
                and svc.metric("her2_consumer_events_total", {"outcome": "dead_lettered"}) == 3
            ),
            what="6 processed and 3 dead-lettered records",
        )
    finally:
        code = svc.stop()
    assert code == 0

    logs = log_buffer.getvalue()
    stdlib = "\n".join(record.getMessage() for record in caplog.records)
    assert '"record processed"' in logs, "DEBUG per-record lines were expected"
    assert logs.count('"record dead-lettered"') == 3
    assert '"processing-error"' in logs
    assert '"schema-validation"' in logs
    assert '"RuntimeError"' in logs  # the crash was logged, as a type and frames
    for text, where in ((logs, "structlog output"), (stdlib, "stdlib logging")):
        assert MARK not in text, (
            f"patient data in {where}: "
            + next(line for line in text.splitlines() if MARK in line)[:300]
        )

    with output_reader(env) as reader:
        reader.wait(lambda r: len(r.records["dlq"]) == 3, what="3 dead letters")
        for record in reader.records["dlq"]:
            for name, value in record.headers.items():
                if name.startswith("her2.errors."):
                    assert MARK.encode() not in value, f"patient data in DLQ header {name}"
            assert record.key is not None
            assert record.key.startswith(MARK.encode())
