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
    own = tp.partition
    encoded = [(topics.classification, codecs.classification.encode(outcome.classification))]
    alert_topic, encoders = topics.alert_topic, codecs.alerts
    for alert in outcome.alerts:
        topic = alert_topic(alert["alert_type"])
        encoded.append((topic, encoders[topic].encode(alert)))
    return [  # positional arguments, one construction site (per output record)
        Output(topic, key, value, [], own if topic in copartitioned else None, stamp, origin)
        for topic, value in encoded
    ]
