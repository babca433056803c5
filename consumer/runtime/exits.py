"""Our exceptions -> the exit codes of `her2-consumer run`: each fatal error is logged once and,
where an operator must act, printed to stderr in plain words (messages carry no PHI)."""

from __future__ import annotations

import sys
from typing import Final

from consumer.errors import (
    BrokerError,
    ConfigError,
    DeadLetterLimitError,
    FencedError,
    HistoryRestoreError,
    KafkaConnectError,
    PublishError,
    SchemaError,
    StateStoreError,
    StopRequested,
)
from consumer.ops import events
from consumer.ops.logs import get_logger

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FENCED: Final = 3

log = get_logger("her2.service")

# stop without committing, the message printed
_STOPPING = (
    PublishError,
    HistoryRestoreError,
    SchemaError,
    KafkaConnectError,
    DeadLetterLimitError,
)


def exit_code(exc: Exception) -> int:
    """Log (and print) the error that stopped the service; the exit code it maps to."""
    if isinstance(exc, ConfigError):
        log.error(events.CONFIG_ERROR, error_type=type(exc).__name__)
        print_error(str(exc))
        return EXIT_CONFIG
    if isinstance(exc, StopRequested):  # asked to stop: not a failure, but nothing committed
        log.warning(events.STOPPED_WAITING_ON_BROKER, stage=exc.stage)
        return EXIT_OK
    if isinstance(exc, FencedError):
        log.error(events.PRODUCER_FENCED)
        return EXIT_FENCED
    if isinstance(exc, _STOPPING):
        log.error(events.STOPPING_WITHOUT_COMMITTING, error_type=type(exc).__name__)
        print_error(str(exc))
    elif isinstance(exc, StateStoreError):  # the disk history store (full disk, I/O error)
        log.error(events.HISTORY_STORE_FAILED, exc_info=exc)
        print_error(f"history store failed ({exc.kind}); check HER2_STATE_DIR")
    elif isinstance(exc, BrokerError):  # mapped at the adapter boundary (runtime/kafka)
        log.error(events.STOPPING_ON_KAFKA_ERROR, error_type=exc.kind, exc_info=exc)
    else:
        log.error(events.STOPPING_ON_UNEXPECTED_ERROR, error_type=type(exc).__name__, exc_info=exc)
    return EXIT_FAILURE


def print_error(message: str) -> None:
    """Start-up and fatal errors also go to stderr in plain words (messages carry no PHI)."""
    print(f"her2-consumer: {message}", file=sys.stderr)
