"""A configured or registered writer schema with enum symbols the service's input schema lacks is
told at start-up or when first seen (runtime/service.py wires the decoder's hook to a warning):
its records decode without an error, each unknown symbol as the enum's default."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from conftest import Harness

from consumer.ops import events
from consumer.resources import PATHOLOGY_RESULT, raw_schema
from consumer.service import EXIT_OK


def test_a_configured_writer_with_unknown_symbols_is_warned_of(
    harness: Harness, tmp_path: Path
) -> None:
    writer = copy.deepcopy(raw_schema(PATHOLOGY_RESULT))  # the cached one is shared
    status = next(f for f in writer["fields"] if f["name"] == "report_status")["type"]
    status["symbols"] = [*status["symbols"], "ADDENDUM"]
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps(writer), encoding="utf-8")
    harness.configure(input_format="raw", raw_writer_schema=path)
    assert harness.run() == EXIT_OK
    [line] = harness.logged(events.WRITER_SYMBOLS_UNKNOWN)
    assert (line["log_level"], line["enum"], line["symbols"]) == (
        "warning",
        "ReportStatus",
        ["ADDENDUM"],
    )
    assert line["writer"] == "a configured writer schema"
