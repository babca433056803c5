"""The classification and alert records of one evaluated input record, encoded."""

from __future__ import annotations

from typing import Any

from consumer.avro.outputs import Codecs
from consumer.clinical.model import Outcome
from consumer.config import Topics
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.records import Output, input_timestamp


def encoded_outputs(  # noqa: PLR0917 - one call site, the processor's
    codecs: Codecs,
    topics: Topics,
    outcome: Outcome,
    tp: TopicPartition,
    record: Any,
    copartitioned: frozenset[str],
) -> list[Output]:
    """Keyed by the input record's key (the routing check made sure it is the patient id),
    stamped with its timestamp (never the host clock, records.Output), on its partition where
    the topic has the input's partition count (`copartitioned`: the partition murmur2(key)
    would give; elsewhere the producer's partitioner decides)."""
    key = record.key
    stamp, origin = input_timestamp(record), (tp, record.offset)

    def output(topic: str, value: bytes) -> Output:
        part = tp.partition if topic in copartitioned else None
        return Output(topic, key, value, partition=part, timestamp_ms=stamp, origin=origin)

    outputs = [output(topics.classification, codecs.classification.encode(outcome.classification))]
    for alert in outcome.alerts:
        topic = topics.alert_topic(alert["alert_type"])
        outputs.append(output(topic, codecs.alerts[topic].encode(alert)))
    return outputs
