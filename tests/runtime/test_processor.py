"""Processor: one record -> Processed | DeadLettered | Retry. Outputs that can never fit a Kafka
request dead-letter the record (output-too-large) and leave no trace in the patient's history;
no valid event can produce such an output; a failing disk store propagates. (Ported from
tests/unit/test_service_outputs.py and tests/unit/test_statestore.py.)"""

from __future__ import annotations

import datetime as dt
import sqlite3
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import pipeline

from consumer.avro.codec import Encoder
from consumer.avro.outputs import Codecs
from consumer.clinical.model import Outcome
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.validate import MAX_ITEMS, MAX_TEXT
from consumer.config import Settings
from consumer.errors import BrokerError, RegistryError, StateStoreError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.dlq import output_fits
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.processor import Processor
from consumer.runtime.records import Output
from consumer.runtime.results import DeadLettered, Processed, Retry
from consumer.state.backends import DISK, StateDir, open_states
from consumer.state.store import Checkpoint, HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _processor(**kwargs: Any) -> Processor:
    settings = Settings()
    # one input partition: every key routes to 0
    return Processor(
        settings, pipeline(), Codecs.build(settings, None), lambda topic: 1, lambda: NOW, **kwargs
    )


def _record(event: dict[str, Any], offset: int = 3) -> Any:
    value = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT)).encode(event)
    return types.SimpleNamespace(
        key=event["patient_id"].encode(), value=value, offset=offset, headers=[], timestamp=0
    )


def _final_event() -> dict[str, Any]:
    return next(e for e in SyntheticGenerator(seed=2).events(50) if e["report_status"] == "FINAL")


class _RecordingStore(HistoryStore):
    """A store that records every call that reads or changes a patient's state."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: list[str] = []

    def checkpoint(self, patient_id: str) -> Checkpoint:
        self.touched.append("checkpoint")
        return super().checkpoint(patient_id)

    def apply(self, event: dict[str, Any], pipeline: Pipeline) -> Outcome:
        self.touched.append("apply")
        return super().apply(event, pipeline)


def test_a_valid_record_is_processed_into_a_classification_and_its_alerts() -> None:
    processor = _processor()
    result = processor.process(TopicPartition("in", 0), _record(_final_event()), HistoryStore())
    assert isinstance(result, Processed)
    assert result.outputs[0].topic == processor.settings.topics.classification
    assert len(result.outputs) == 1 + len(result.alerts)


def test_an_output_that_cannot_fit_dead_letters_the_record_and_rolls_back() -> None:
    processor = _processor(max_request_bytes=200)  # every output is too large
    store = HistoryStore()
    result = processor.process(TopicPartition("in", 0), _record(_final_event()), store)
    assert isinstance(result, DeadLettered)
    assert (result.stage, result.reason) == ("process", "output-too-large")
    assert result.output.topic == processor.settings.topics.dlq
    headers = dict(result.output.headers)
    assert headers["her2.errors.exception.class.name"] == b"OutputTooLarge", "a DLQ contract"
    assert store.take_dirty() == [], "a dead-lettered event leaves no trace in the history"


def test_a_bug_after_the_history_changed_dead_letters_the_record_and_rolls_back() -> None:
    """A bug raised once the patient's state has changed (here the real apply runs, then the
    call raises) dead-letters the record as a processing error, and nothing of the record stays
    in the store: no changelog record, and the patient's next record is evaluated as if the
    failed one had never come. (The patient's FINAL report fires TDXD-POSITIVE-EARLY; its
    AMENDED report resolves that finding only if the FINAL one is in the history.)"""
    final, amended = SyntheticGenerator(seed=1).patient(2)
    patient = final["patient_id"]
    assert (final["report_status"], amended["report_status"]) == ("FINAL", "AMENDED")
    processor = _processor()
    tp = TopicPartition("in", 0)

    reference = HistoryStore()  # both records processed: the AMENDED one resolves the finding
    processor.process(tp, _record(final, offset=3), reference)
    resolved = processor.process(tp, _record(amended, offset=4), reference)
    assert isinstance(resolved, Processed)
    assert ("TDXD_ELIGIBILITY", "TDXD-POSITIVE-EARLY", "RESOLVED") in resolved.alerts

    store = HistoryStore()
    apply = store.apply
    changed: list[bool] = []

    def mutates_then_raises(event: dict[str, Any], pipeline: Pipeline) -> Outcome:
        apply(event, pipeline)
        changed.append(store.get(patient) is not None)
        raise RuntimeError("a bug after the history changed")

    store.apply = mutates_then_raises  # type: ignore[method-assign]
    result = processor.process(tp, _record(final, offset=3), store)
    del store.apply  # the real apply again
    assert changed == [True], "the state had changed when the bug struck"
    assert isinstance(result, DeadLettered)
    assert (result.stage, result.reason) == ("process", "processing-error")
    assert dict(result.output.headers)["her2.errors.exception.class.name"] == b"RuntimeError"
    assert store.get(patient) is None, "the failed record left no state behind"
    assert store.take_dirty() == [], "nor any changelog record"

    later = processor.process(tp, _record(amended, offset=4), store)
    assert isinstance(later, Processed)
    assert later.alerts == [], "evaluated without the failed FINAL report: nothing to resolve"


def test_an_undecodable_record_is_dead_lettered_with_its_reason() -> None:
    record = types.SimpleNamespace(key=b"k", value=b"", offset=1, headers=[], timestamp=0)
    result = _processor().process(TopicPartition("in", 0), record, HistoryStore())
    assert isinstance(result, DeadLettered)
    assert (result.stage, result.reason) == ("decode", "empty-value")


def test_an_unreachable_registry_is_a_retry_not_a_dead_letter() -> None:
    processor = _processor()

    def unreachable(value: bytes) -> Any:
        raise RegistryError("registry down")

    processor.codecs.decoder.decode = unreachable  # type: ignore[method-assign]
    result = processor.process(TopicPartition("in", 0), _record(_final_event()), HistoryStore())
    assert isinstance(result, Retry)


def test_a_broker_error_reading_the_partition_count_is_a_retry_not_a_dead_letter() -> None:
    def unanswered(topic: str) -> int:
        raise BrokerError("metadata request timed out", kind="KafkaTimeoutError", retriable=True)

    settings = Settings()
    processor = Processor(
        settings, pipeline(), Codecs.build(settings, None), unanswered, lambda: NOW
    )
    store = _RecordingStore()
    result = processor.process(TopicPartition("in", 0), _record(_final_event()), store)
    assert isinstance(result, Retry)
    assert store.touched == [], "the partition count is read before the history is touched"


def test_a_broker_refusing_the_partition_count_for_good_is_raised() -> None:
    # not the record's fault either, and not worth retrying for ever: the service stops on a
    # Kafka error, as it does for any refusal for good
    def refused(topic: str) -> int:
        raise BrokerError("denied", kind="TopicAuthorizationFailedError", retriable=False)

    settings = Settings()
    processor = Processor(settings, pipeline(), Codecs.build(settings, None), refused, lambda: NOW)
    store = _RecordingStore()
    with pytest.raises(BrokerError):
        processor.process(TopicPartition("in", 0), _record(_final_event()), store)
    assert store.touched == [], "the partition count is read before the history is touched"


def test_the_largest_valid_event_has_outputs_that_fit() -> None:
    """Ids at the validator's longest, 1,000 prior entries of alternating categories (every
    pair discordant), metastatic, HER2-low: every output and changelog record fits a request."""
    ids = "x" * MAX_TEXT
    zero = {"score": "ZERO", "percent_cells_stained": 0.0}
    low = {"score": "ONE_PLUS", "percent_cells_stained": 30.0}
    event = {
        "event_id": "e-" + ids[:-2],
        "patient_id": "p" * MAX_TEXT,
        "accession_id": "a" * MAX_TEXT,
        "report_status": "FINAL",
        "event_time": None,
        "specimen": {"site": "DISTANT_METASTASIS", "collection_date": None},
        "her2_ihc": {"score": "THREE_PLUS"},
        "her2_ish": None,
        "er": None,
        "pr": None,
        "clinical_context": {
            "disease_setting": "METASTATIC",
            "metastatic_chemotherapy_lines": 1,
            "planned_therapies": ["trastuzumab " + "y" * (MAX_TEXT - 20)] * MAX_ITEMS,
            "clinical_flags": ["HER2_POSITIVE_LIKE_BEHAVIOR"] * MAX_ITEMS,
        },
        "prior_her2_results": [
            {
                "accession_id": f"{i:05d}" + "z" * (MAX_TEXT - 5),
                "specimen": None,
                "her2_ihc": zero if i % 2 else low,
                "her2_ish": None,
            }
            for i in range(MAX_ITEMS)
        ],
    }
    processor = _processor()
    store = HistoryStore()
    outcome = store.apply(event, processor.pipeline)
    assert outcome.alerts
    codecs = processor.codecs
    outputs = [Output("c", None, codecs.classification.encode(outcome.classification))]
    for alert in outcome.alerts:
        topic = processor.settings.topics.alert_topic(alert["alert_type"])
        value = codecs.alerts[topic].encode(alert)
        outputs.append(Output(topic, event["patient_id"].encode(), value))
    outputs += [Output("h", k, v) for k, v in store.take_dirty()]
    assert all(map(output_fits, outputs)), max(len(o.value or b"") for o in outputs)


def test_a_failing_disk_store_stops_the_service_instead_of_dead_lettering_the_record(
    tmp_path: Path,
) -> None:
    """A failing disk store while processing (full disk, I/O error: here a closed store; the
    backend maps the sqlite3.Error to StateStoreError) is not the record's fault: it propagates
    (the service stops without committing) and the record is neither dead-lettered nor counted."""
    directory = StateDir(tmp_path)
    store = HistoryStore(states=open_states(DISK, directory, "p0"))
    store.close()  # every read now fails, as a broken disk would
    event = SyntheticGenerator(seed=1).events(1)[0]
    with pytest.raises(StateStoreError) as raised:
        _processor().process(TopicPartition("in", 0), _record(event, offset=7), store)
    assert isinstance(raised.value.__cause__, sqlite3.Error)  # mapped at the state boundary
    directory.close()
