"""Compatibility shim (one release): the Kafka runtime now lives in `consumer/runtime/`
(docs: /work/shared/docs/architecture.md) and `main()` in `consumer/app.py`. This module
re-exports the names tests, bench, demo and publish import.

    runtime/service.py    Service facade: parts, run(), stop(), exit codes, ExitStack
    runtime/loop.py       poll -> restore pending -> process -> deliver -> progress -> gauges
    runtime/processor.py  record -> Processed | DeadLettered | Retry
    runtime/dlq.py        dead-letter record, headers, size fallbacks
    runtime/delivery.py   Delivery protocol; AtLeastOnce (B8 order); ExactlyOnce
    runtime/partitions.py assignment table, rebalance listener, registry back-off
    runtime/restore.py    changelog restore to captured end offsets, deadline
    runtime/startup.py    input wait, output creation, co-partitioning, state dir
    runtime/records.py    Output, Batch, Backoff
    runtime/kafka/        the only importer of kafka-python: Protocols, clients, producer,
                          preflight, quirks
"""

from __future__ import annotations

from consumer.app import main
from consumer.errors import HistoryRestoreError, KafkaConnectError
from consumer.runtime.dlq import DLQ_HEADER_PREFIX, dlq_headers
from consumer.runtime.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_FENCED, EXIT_OK
from consumer.runtime.kafka import MAX_REQUEST_BYTES
from consumer.runtime.kafka.quirks import disable_topic_auto_creation
from consumer.runtime.processor import PROCESS_ERROR_MESSAGE, REASON_OUTPUT_TOO_LARGE
from consumer.runtime.records import Batch, Output
from consumer.runtime.service import HealthHook, Service

_Batch = Batch  # the old private name

__all__ = [
    "DLQ_HEADER_PREFIX",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_FENCED",
    "EXIT_OK",
    "MAX_REQUEST_BYTES",
    "PROCESS_ERROR_MESSAGE",
    "REASON_OUTPUT_TOO_LARGE",
    "Batch",
    "HealthHook",
    "HistoryRestoreError",
    "KafkaConnectError",
    "Output",
    "Service",
    "_Batch",
    "disable_topic_auto_creation",
    "dlq_headers",
    "main",
]
