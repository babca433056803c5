"""JSON rendering of outputs for the offline `evaluate` command."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(obj: Any) -> str:
    """One compact JSON line; datetimes and dates as ISO-8601."""
    return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False)
