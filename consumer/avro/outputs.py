"""The codecs of one service: the input decoder and the output encoders (one per output topic,
each registering under the subject `<topic>-value` when a registry is configured)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.avro.codec import Decoder, Encoder, UnknownSymbols
from consumer.avro.registry import SchemaRegistryClient
from consumer.config import Settings, load_writer_schema
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    parsed_schema,
    previous_schemas,
)


@dataclass
class Codecs:
    """The input decoder and the output encoders (one per alert topic)."""

    decoder: Decoder
    classification: Encoder
    alerts: dict[str, Encoder] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        s: Settings,
        registry: SchemaRegistryClient | None,
        *,
        on_fallback: Callable[[], None] = lambda: None,
        on_unknown_symbols: UnknownSymbols | None = None,
    ) -> Codecs:
        """From the settings' formats and topics; `on_fallback` is every output encoder's hook
        (a datum its compiled writer left to fastavro), `on_unknown_symbols` the decoder's."""
        raw_writer = load_writer_schema(s.raw_writer_schema) if s.raw_writer_schema else None
        decoder = Decoder(
            s.input_format,
            parsed_schema(PATHOLOGY_RESULT),
            registry=registry,
            raw_writer_schema=raw_writer,
            known_writer_schemas=previous_schemas(PATHOLOGY_RESULT),
            on_unknown_symbols=on_unknown_symbols,
        )
        fmt = s.output_format
        classification = Encoder(
            fmt,
            parsed_schema(HER2_CLASSIFICATION),
            registry=registry,
            subject=f"{s.topics.classification}-value",
            on_fallback=on_fallback,
        )
        alerts = {
            topic: Encoder(
                fmt,
                parsed_schema(HER2_ALERT),
                registry=registry,
                subject=f"{topic}-value",
                on_fallback=on_fallback,
            )
            for topic in s.topics.alert_topics()
        }
        return cls(decoder, classification, alerts)
