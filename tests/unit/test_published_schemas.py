"""The published schemas (docs/design.md, Her2Alert v2): every enum carries an Avro `default`, so
a symbol added later resolves to the default in an older reader instead of failing it."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from typing import Any

import fastavro
import pytest

from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, raw_schema


def enums(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "enum":
            yield node
        for value in node.values():
            yield from enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from enums(value)


@pytest.mark.parametrize("name", [HER2_ALERT, HER2_CLASSIFICATION])
def test_every_enum_has_a_default_among_its_symbols(name: str) -> None:
    found = list(enums(raw_schema(name)))
    assert found
    for enum in found:
        assert enum.get("default") in enum["symbols"], enum["name"]


def test_an_older_reader_reads_a_status_added_later() -> None:
    """A writer with a status symbol the reader does not know: the reader gets the default."""
    reader = raw_schema(HER2_ALERT)
    writer = _with_extra_status(reader, "SUPERSEDED")
    alert = {field["name"]: _sample(field) for field in writer["fields"]}
    alert["status"] = "SUPERSEDED"
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), alert)
    buffer.seek(0)
    read = fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )
    assert read["status"] == "ACTIVE"


def _with_extra_status(schema: dict[str, Any], symbol: str) -> dict[str, Any]:
    evolved = copy.deepcopy(schema)
    for field in evolved["fields"]:
        if field["name"] == "status":
            field["type"]["symbols"].append(symbol)
    return evolved


def _sample(field: dict[str, Any]) -> Any:
    kind = field["type"]
    if isinstance(kind, dict) and kind.get("type") == "enum":
        return kind["symbols"][0]
    if isinstance(kind, dict) and kind.get("type") == "array":
        return []
    if isinstance(kind, dict) and kind.get("logicalType") == "timestamp-millis":
        return 0
    if isinstance(kind, list):
        return None
    return {"string": "x", "int": 1, "long": 1}[kind]
