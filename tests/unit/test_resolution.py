"""consumer.avro.resolution: where a writer schema may not resolve to the reader, from the schemas
alone (the hint of a `schema-resolution` dead letter). Each row also reads a record of that
writer with fastavro: a writer this finds nothing in must resolve, one it names must fail."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from test_codec import sample_result

from consumer.avro.resolution import first_mismatch
from consumer.resources import PATHOLOGY_RESULT, parsed_schema, previous_schemas, raw_schema

Schema = dict[str, Any]


def _field(schema: Schema, name: str) -> Schema:
    return next(f for f in schema["fields"] if f["name"] == name)


def _ish(schema: Schema) -> Schema:
    return _field(schema, "her2_ish")["type"][1]


def _drop(name: str) -> Callable[[Schema], None]:
    return lambda s: s.__setitem__("fields", [f for f in s["fields"] if f["name"] != name])


def _event_time_as(kind: Any) -> Callable[[Schema], None]:
    def change(s: Schema) -> None:
        _field(s, "event_time")["type"] = kind
        _field(s, "event_time").pop("default", None)

    return change


# (how the writer differs from the reader, the mismatch named, or None)
ROWS: dict[str, tuple[Callable[[Schema], None], str | None]] = {
    "the-same": (lambda s: None, None),
    "a-field-added": (lambda s: s["fields"].append({"name": "x", "type": "string"}), None),
    "an-optional-field-removed": (_drop("source_system"), None),
    "another-namespace": (lambda s: s.__setitem__("namespace", "org.lab"), None),
    "an-enum-symbol-added": (
        lambda s: _field(s, "report_status")["type"]["symbols"].append("ADDENDUM"),
        None,  # the reader's enum has a default
    ),
    "int-widened-to-long": (
        lambda s: _field(_ish(s), "cells_counted").__setitem__("type", ["null", "long"]),
        "her2_ish.cells_counted: the writer's long is not in the reader's union",
    ),
    "a-required-field-removed": (
        _drop("accession_id"),
        "accession_id: not in the writer's schema, and the reader's has no default",
    ),
    "the-record-renamed": (
        lambda s: s.__setitem__("name", "LabOrder"),
        "record: the writer's record LabOrder is not the reader's PathologyResult",
    ),
    "a-timestamp-sent-as-text": (
        _event_time_as("string"),
        "event_time: the writer's string is not in the reader's union",
    ),
    "an-int-timestamp-promoted": (_event_time_as(["null", "int"]), None),
}


def _writer(change: Callable[[Schema], None]) -> Any:
    schema = copy.deepcopy(raw_schema(PATHOLOGY_RESULT))  # the cached one is shared
    change(schema)
    return fastavro.parse_schema(schema)


# what a record of each writer holds that differs from the sample (a value that uses the change)
DATA: dict[str, dict[str, Any]] = {
    "a-field-added": {"x": "lab note"},
    "an-enum-symbol-added": {"report_status": "ADDENDUM"},
    "int-widened-to-long": {"her2_ish": {**sample_result()["her2_ish"], "cells_counted": 2**40}},
    "a-timestamp-sent-as-text": {"event_time": "2026-01-01T00:00:00Z"},
    "an-int-timestamp-promoted": {"event_time": 1_700_000},
}


@pytest.mark.parametrize(
    ("row", "change", "named"), [(k, *v) for k, v in ROWS.items()], ids=list(ROWS)
)
def test_the_first_mismatch_is_named_and_fastavro_agrees(
    row: str, change: Callable[[Schema], None], named: str | None
) -> None:
    writer, reader = _writer(change), parsed_schema(PATHOLOGY_RESULT)
    assert first_mismatch(writer, reader) == named
    datum = {**sample_result(), **DATA.get(row, {})}
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, writer, {f["name"]: datum.get(f["name"]) for f in writer["fields"]}
    )
    try:
        fastavro.schemaless_reader(io.BytesIO(body.getvalue()), writer, reader)
    except SchemaResolutionError:
        resolved = False
    else:
        resolved = True
    assert resolved == (named is None)


def test_every_shipped_earlier_schema_resolves() -> None:
    reader = parsed_schema(PATHOLOGY_RESULT)
    earlier = previous_schemas(PATHOLOGY_RESULT)
    assert earlier
    assert [first_mismatch(fastavro.parse_schema(s), reader) for s in earlier] == [None] * len(
        earlier
    )


def test_an_enum_without_a_default_names_the_unknown_symbols() -> None:
    def schema(symbols: list[str], default: str | None) -> Any:
        enum: Schema = {"type": "enum", "name": "E", "symbols": symbols}
        if default is not None:
            enum["default"] = default
        return fastavro.parse_schema(
            {"type": "record", "name": "R", "fields": [{"name": "e", "type": enum}]}
        )

    assert first_mismatch(schema(["A", "B", "C"], None), schema(["A", "B"], None)) == (
        "e: the writer's symbols ['C'] are not in the reader's enum"
    )
    assert first_mismatch(schema(["A", "B", "C"], None), schema(["A", "B"], "A")) is None
    assert first_mismatch(schema(["A"], None), schema(["A", "B"], None)) is None
