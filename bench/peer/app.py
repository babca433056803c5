"""The peer of the performance comparison (issue 17): the same job as a Quix Streams application.

Written the way a Quix Streams user would write it: one StreamingDataFrame over the input topic,
a stateful `apply` that keeps each patient's state as one value per patient key in Quix State
(RocksDB with its changelog topic), `expand=True` to emit the classification and the alert
changes, and `to_topic` with a topic chosen per record. The clinical core is the project's own:
decode and validation (consumer/avro/codec.py, validate.py), the patient aggregate
(`Pipeline.step`, consumer/clinical/patient.py) and the output encoders. Records are Avro in
single-object framing, as the service writes by default.

Configuration by the service's environment variables (KAFKA_BOOTSTRAP_SERVERS, HER2_GROUP_ID,
HER2_INPUT_TOPIC, HER2_CLASSIFICATION_TOPIC, the four alert topics, HER2_PROCESSING_GUARANTEE);
PEER_STATE_DIR is Quix's state directory. PEER_GC_GEN0_THRESHOLD (unset: Python's default, as a
Quix user runs it) gives the peer the service's garbage-collector tuning (HER2_GC_GEN0_THRESHOLD),
to measure what that tuning is worth on both sides. Needs the `bench` extra (quixstreams,
confluent-kafka).

Usage: python bench/peer/app.py   (runs until SIGTERM / SIGINT)
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers import (
    Deserializer,
    SerializationContext,
    Serializer,
)
from quixstreams.state.rocksdb import RocksDBOptions
from quixstreams.utils.json import dumps as json_dumps

from consumer.app import tune_gc
from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import check_event
from consumer.config import Settings
from consumer.errors import RecordError
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, PATHOLOGY_RESULT, parsed_schema
from consumer.state.store import decode_state, encode_state

STATE_KEY = "patient"


class EventDeserializer(Deserializer):
    """Avro (auto-detected framing) -> a validated PathologyResult dict, or None if invalid."""

    def __init__(self) -> None:
        super().__init__()
        self._decoder = Decoder("auto", parsed_schema(PATHOLOGY_RESULT))

    def __call__(self, value: bytes, ctx: SerializationContext) -> Any:
        try:
            return check_event(self._decoder.decode(value))
        except RecordError:
            return None  # the bench's events are valid; a real peer would dead-letter here


class Chosen(Serializer):
    """Records are (topic name, encoded bytes) pairs: write the bytes."""

    def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
        return bytes(value[1])


def _identity(value: Any) -> Any:
    return value


def _bytes_or_json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json_dumps(value)


def build(settings: Settings, state_dir: str) -> Application:
    """The Quix Streams application for `settings`."""
    guarantee = "exactly-once" if settings.exactly_once else "at-least-once"
    app = Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=settings.group_id,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        state_dir=state_dir,
        commit_interval=1.0,
        auto_create_topics=True,
        # the patient's state is Avro bytes: stored as they are, not as JSON (state keys are
        # still JSON-encoded, as Quix does by default)
        rocksdb_options=RocksDBOptions(dumps=_bytes_or_json, loads=_identity),
    )
    topics = settings.topics
    source = app.topic(
        topics.input, value_deserializer=EventDeserializer(), key_deserializer="bytes"
    )
    outputs = {
        name: app.topic(name, value_serializer=Chosen(), key_serializer="bytes")
        for name in (topics.classification, *topics.alert_topics())
    }
    pipeline = Pipeline(load_ruleset())
    classification = Encoder("single-object", parsed_schema(HER2_CLASSIFICATION))
    alert = Encoder("single-object", parsed_schema(HER2_ALERT))

    def evaluate(event: dict[str, Any] | None, state: State) -> list[tuple[str, bytes]]:
        if event is None:
            return []
        stored = state.get(STATE_KEY)
        patient = decode_state(event["patient_id"], stored) if stored is not None else None
        step = pipeline.step(patient, event)
        if step.changed:
            state.set(STATE_KEY, encode_state(step.state))
        out = [(topics.classification, classification.encode(step.classification))]
        out += [(topics.alert_topic(a["alert_type"]), alert.encode(a)) for a in step.alerts]
        return out

    sdf = app.dataframe(source)
    sdf = sdf.apply(evaluate, stateful=True, expand=True)
    sdf.to_topic(lambda value, key, timestamp, headers: outputs[value[0]])
    return app


def main() -> int:
    threshold = os.environ.get("PEER_GC_GEN0_THRESHOLD")
    if threshold:
        tune_gc(int(threshold))
    settings = Settings.from_env(os.environ)
    state_dir = os.environ.get("PEER_STATE_DIR") or tempfile.mkdtemp(prefix="her2-peer-")
    build(settings, state_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
