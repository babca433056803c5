"""Outputs that can never fit a Kafka request (consumer/service.py, OutputTooLarge): the record is
dead-lettered as output-too-large and leaves no trace in the patient's history; and no valid
event can produce such an output any more (alerts name one sample pair, not every pair)."""

from __future__ import annotations

import types

import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

import consumer.service as service_module
from consumer.codec import Encoder
from consumer.config import Settings
from consumer.history import HistoryStore
from consumer.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.rules import load_ruleset
from consumer.service import Output, Service, _Batch, _fits
from consumer.synthetic import SyntheticGenerator
from consumer.validate import MAX_ITEMS, MAX_TEXT


def _service() -> Service:
    svc = Service(Settings(), Pipeline(load_ruleset()), Metrics(CollectorRegistry(), "t"))
    svc._build_codecs()
    # the consumer's metadata for the routing check: one input partition (every key routes to 0)
    svc._consumer = types.SimpleNamespace(partitions_for_topic=lambda topic: {0})
    return svc


def test_an_output_that_cannot_fit_dead_letters_the_record_and_rolls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = _service()
    store = HistoryStore()
    event = next(e for e in SyntheticGenerator(seed=2).events(50) if e["report_status"] == "FINAL")
    value = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT)).encode(event)
    record = types.SimpleNamespace(
        key=event["patient_id"].encode(), value=value, offset=3, headers=[], timestamp=0
    )
    monkeypatch.setattr(service_module, "MAX_REQUEST_BYTES", 200)  # every output is too large
    batch = _Batch()
    svc._process_record(TopicPartition("in", 0), record, store, batch)
    assert batch.dlq == {("process", "output-too-large"): 1}
    assert [o.topic for o in batch.outputs] == [svc.settings.topics.dlq]
    assert store.take_dirty() == [], "a dead-lettered event leaves no trace in the history"


def test_the_largest_valid_event_has_outputs_that_fit() -> None:
    """Ids at the validator's longest, 1,000 prior entries of alternating categories (every
    pair discordant), metastatic, HER2-low: every output and changelog record fits a request."""
    ids = "x" * MAX_TEXT
    zero = {"score": "ZERO", "percent_cells_stained": 0.0}
    low = {"score": "ONE_PLUS", "percent_cells_stained": 30.0}
    event = {
        "event_id": "e-" + ids[:-2], "patient_id": "p" * MAX_TEXT, "accession_id": "a" * MAX_TEXT,
        "report_status": "FINAL", "event_time": None,
        "specimen": {"site": "DISTANT_METASTASIS", "collection_date": None},
        "her2_ihc": {"score": "THREE_PLUS"}, "her2_ish": None, "er": None, "pr": None,
        "clinical_context": {"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1,
                             "planned_therapies": ["trastuzumab " + "y" * (MAX_TEXT - 20)] * MAX_ITEMS,
                             "clinical_flags": ["HER2_POSITIVE_LIKE_BEHAVIOR"] * MAX_ITEMS},
        "prior_her2_results": [
            {"accession_id": f"{i:05d}" + "z" * (MAX_TEXT - 5), "specimen": None,
             "her2_ihc": zero if i % 2 else low, "her2_ish": None}
            for i in range(MAX_ITEMS)
        ],
    }
    svc = _service()
    store = HistoryStore()
    outcome = store.apply(event, svc.pipeline)
    assert outcome.alerts
    outputs = [Output("c", None, svc._classification_encoder.encode(outcome.classification))]
    for alert in outcome.alerts:
        topic = svc.settings.topics.alert_topic(alert["alert_type"])
        outputs.append(Output(topic, event["patient_id"].encode(), svc._alert_encoders[topic].encode(alert)))
    outputs += [Output("h", k, v) for k, v in store.take_dirty()]
    assert all(map(_fits, outputs)), max(len(o.value or b"") for o in outputs)
