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
    topic = topics.classification
    outputs = [
        Output(
            topic,
            key,
            codecs.classification.encode(outcome.classification),
            [],
            own if topic in copartitioned else None,
            stamp,
            origin,
        )
    ]
    alert_topic, encoders = topics.alert_topic, codecs.alerts
    for alert in outcome.alerts:  # per alert: positional arguments, no helper call
        topic = alert_topic(alert["alert_type"])
        value = encoders[topic].encode(alert)
        part = own if topic in copartitioned else None
        outputs.append(Output(topic, key, value, [], part, stamp, origin))
    return outputs
