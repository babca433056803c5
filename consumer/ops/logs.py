"""structlog set-up: JSON lines, bound context, and an allow-list that keeps PHI out.

Only keys in ALLOWED_KEYS reach the output; anything else is dropped and counted in
`redacted_keys`. Exceptions are rendered as class name and stack frames (file, line, function):
never the exception message or local variables, which can carry patient data.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any, Final, TextIO

import structlog

ALLOWED_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "topic",
        "partition",
        "offset",
        "event_id",
        "outcome",
        "duration_ms",
        "category",
        "alerts",
        "reason",
        "stage",
        "count",
        "partitions",
        "seconds",
        "days",
        "records",
        "version",
        "ruleset_version",
        "group_id",
        "input_topic",
        "bootstrap_servers",
        "guarantee",
        "input_format",
        "output_format",
        "http_port",
        "signal",
        "attempt",
        "error_type",
        "exception",
        "redacted_keys",
        "lag",
        "patients",
        "accessions",
        "committed",
        "batch",
        "processed",
        "dead_lettered",
        "published",
        "state",
        "port",
        "variable",
        "instance_id",
        "slot",
        "transactional_id",
        # operator figures: numbers, a flag, the state directory's path and file system, a topic
        "first_offset",
        "last_offset",
        "offsets_left",
        "limit",
        "refused",
        "timeout_seconds",
        "offset_seconds",
        "uncertainty_seconds",
        "tolerance_seconds",
        "output_topic",
        "path",
        "file_system",
        "state_dir_set",
        "min_compaction_lag_ms",
        "recommended_ms",
        "workaround",
        "kafka_python",
        # schema names of a lab's writer schema (never record values): an enum and its symbols
        "writer",
        "enum",
        "symbols",
    }
)


# structlog's own bookkeeping, removed before rendering (exc_info is rendered by _safe_exception)
_INTERNAL_KEYS = frozenset({"exc_info", "_record", "_from_structlog"})


def _allow_list(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop every key that is not known to be free of patient data."""
    dropped = sorted(k for k in event_dict if k not in ALLOWED_KEYS and k not in _INTERNAL_KEYS)
    for key in dropped:
        del event_dict[key]
    if dropped:
        event_dict["redacted_keys"] = dropped
    return event_dict


def _safe_exception(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Render exc_info as class name + frames, without message or locals."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("exception", None)  # only this processor's own rendering may use the key
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    exc_type, _exc, tb = exc_info
    if exc_type is None:
        return event_dict
    frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(tb)]
    if len(frames) > 15:  # where it was caught (outermost) and where it was raised
        frames = [*frames[:5], "...", *frames[-10:]]
    event_dict["exception"] = {"type": exc_type.__name__, "frames": frames}
    return event_dict


# kafka-python repeats some lines many times a second: against a topic deleted under it, its
# metadata refresh logged "Topic ... not found in cluster metadata" ten times a second
# (measured: 572 error lines a minute, nothing else said). The same client line passes once
# per window; the service's own lines and the metrics keep the rate.
REPEAT_WINDOW_S: Final = 60.0
_REPEATS_KEPT: Final = 1024  # distinct lines remembered before the old ones are forgotten


class OncePerWindow(logging.Filter):
    """Drops a standard-library log record identical to one passed within the last `window`
    seconds: same logger, level, message template, arguments and exception type."""

    def __init__(
        self, window: float = REPEAT_WINDOW_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window = window
        self._monotonic = monotonic
        # the time each line last passed, oldest first: at most _REPEATS_KEPT lines remembered
        # (a line forgotten early only passes again; many distinct lines cost no more)
        self._passed: OrderedDict[tuple[str, int, str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()  # kafka-python logs from its IO threads too

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            exc = record.exc_info[0] if record.exc_info else None
            key = (
                record.name,
                record.levelno,
                str(record.msg),
                repr(record.args),
                exc.__name__ if exc is not None else "",
            )
        except Exception:  # a client's argument that cannot be shown: never hold a line back
            return True
        now = self._monotonic()
        with self._lock:
            last = self._passed.get(key)
            if last is not None and now - last < self._window:
                return False
            self._passed[key] = now
            self._passed.move_to_end(key)
            while len(self._passed) > _REPEATS_KEPT:
                self._passed.popitem(last=False)
        return True


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process: JSON to `stream` (default stderr).

    Standard-library loggers (kafka-python) go through the same allow-list and renderer, and
    never below WARNING: at DEBUG kafka-python logs raw protocol bytes, i.e. record values.
    An identical client line is written once per REPEAT_WINDOW_S (OncePerWindow).
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _safe_exception,
        _allow_list,
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(OncePerWindow())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "her2") -> Any:
    """A bound structlog logger."""
    return structlog.get_logger(name)
