"""The shipped schemas stay compatible with the previous release's (README, "Schema
compatibility"): data is resolved by fastavro old writer -> new reader and new writer -> old
reader, and every enum carries a default so that a symbol added later does not break a reader.

The previous release's schemas are fixtures in tests/fixtures/schemas/eb67745 (copied from git,
see PROVENANCE there), so that a clone without history runs these tests too. Resolution is checked
on data, not only by comparing schemas: random records of the writer schema (every branch and
enum symbol many times over) plus a realistic synthetic stream.
"""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from fastavro.utils import generate_many

from consumer.avro.outputs import Codecs
from consumer.avro.wire import frame_single_object, schema_fingerprint
from consumer.config import Settings
from consumer.errors import DecodeError
from consumer.resources import (
    HER2_ALERT,
    HER2_CLASSIFICATION,
    PATHOLOGY_RESULT,
    previous_schemas,
    raw_schema,
)
from consumer.tools.synthetic import SyntheticGenerator

PREVIOUS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas" / "eb67745"
SAMPLES = 400
ADDED_SYMBOL = "ADDED_IN_A_LATER_VERSION"
# symbols that exist only as the default a later lab symbol is read as (README, policy)
DEFAULT_ONLY = {"ReceptorStatus": "UNKNOWN", "ClinicalFlag": "OTHER"}


def previous(name: str) -> dict[str, Any]:
    """The previous release's schema `name` (a fixture)."""
    loaded: dict[str, Any] = json.loads((PREVIOUS / f"{name}.avsc").read_text(encoding="utf-8"))
    return loaded


def enums(schema: Any) -> Iterator[dict[str, Any]]:
    """Every enum definition in a schema (JSON, not parsed), depth first."""
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            yield schema
        for value in schema.values():
            yield from enums(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from enums(item)


def evolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A later version as the policy allows it: one optional field more, and one symbol more in
    every enum (the symbol is appended, the default kept)."""
    later = copy.deepcopy(schema)
    later["fields"].append(
        {"name": "added_in_a_later_version", "type": ["null", "string"], "default": None}
    )
    for enum in enums(later):
        enum["symbols"].append(ADDED_SYMBOL)
    return later


def resolve(writer: dict[str, Any], reader: dict[str, Any], datum: dict[str, Any]) -> Any:
    """Write `datum` with `writer`, read it back with `reader`."""
    w, r = fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, w, datum)
    fo.seek(0)
    return fastavro.schemaless_reader(fo, w, r)


def random_records(schema: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """SAMPLES random records of `schema` (fastavro's generator, seeded)."""
    random.seed(seed)
    return list(generate_many(fastavro.parse_schema(schema), SAMPLES))


def assert_resolves(writer: dict[str, Any], reader: dict[str, Any], seed: int) -> None:
    """Every random record of `writer` can be read with `reader`."""
    for datum in random_records(writer, seed):
        resolve(writer, reader, datum)


# the input subject: the service is a fixed-schema reader of what lab systems write


class TestInputSchema:
    def test_every_enum_has_a_default_among_its_symbols(self) -> None:
        found = list(enums(raw_schema(PATHOLOGY_RESULT)))
        assert len(found) == 12
        for enum in found:
            assert enum.get("default") in enum["symbols"], enum["name"]

    def test_records_of_the_previous_release_are_read_by_this_release(self) -> None:
        assert_resolves(previous(PATHOLOGY_RESULT), raw_schema(PATHOLOGY_RESULT), seed=1)

    def test_records_of_this_release_are_read_by_the_previous_release(self) -> None:
        """Labs' records written with this schema, less the two default-only symbols (ReceptorStatus
        UNKNOWN, ClinicalFlag OTHER: what a later lab symbol is read as, never sent by a lab)."""
        writer = copy.deepcopy(raw_schema(PATHOLOGY_RESULT))
        for enum in enums(writer):
            if enum["name"] in DEFAULT_ONLY:
                enum["symbols"].remove(DEFAULT_ONLY[enum["name"]])
                enum.pop("default")
        assert_resolves(writer, previous(PATHOLOGY_RESULT), seed=2)

    def test_default_only_symbols_are_the_defaults(self) -> None:
        by_name = {e["name"]: e for e in enums(raw_schema(PATHOLOGY_RESULT))}
        assert by_name["ReceptorStatus"]["default"] == "UNKNOWN"
        assert by_name["ClinicalFlag"]["default"] == "OTHER"

    def test_realistic_events_resolve_both_ways(self) -> None:
        events = SyntheticGenerator(seed=5, id_prefix="compat").events(200)
        old, new = previous(PATHOLOGY_RESULT), raw_schema(PATHOLOGY_RESULT)
        for event in events:
            assert resolve(old, new, event) == resolve(new, new, event)
            assert resolve(new, old, event) == resolve(old, old, event)

    def test_a_writer_that_adds_a_field_and_enum_symbols_is_read_by_this_release(self) -> None:
        """FORWARD: a lab system's later schema against the service's fixed reader."""
        current = raw_schema(PATHOLOGY_RESULT)
        assert_resolves(evolved(current), current, seed=3)

    @pytest.mark.parametrize(
        "enum", list(enums(raw_schema(PATHOLOGY_RESULT))), ids=lambda e: e["name"]
    )
    def test_an_unknown_symbol_reads_as_the_enums_default(self, enum: dict[str, Any]) -> None:
        reader = _holder(enum)
        writer = _holder({**enum, "symbols": [*enum["symbols"], ADDED_SYMBOL]})
        assert resolve(writer, reader, {"value": ADDED_SYMBOL}) == {"value": enum["default"]}


def _single_object(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """`datum` as a lab writes it with `schema` in single-object framing (what `auto` detects)."""
    parsed = fastavro.parse_schema(schema)
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, parsed, datum)
    return frame_single_object(schema_fingerprint(parsed), fo.getvalue())


class TestSingleObjectInputOfEarlierReleases:
    """design.md: single-object writer schemas are looked up by fingerprint among the schemas the
    service knows. It knows its own and every earlier shipped input schema
    (schemas/previous/), so a lab that frames with the schema of an earlier release (the
    `publish` tool of that release does) is read, not dead-lettered as an unknown fingerprint."""

    def test_the_previous_release_is_among_the_shipped_earlier_schemas(self) -> None:
        assert previous(PATHOLOGY_RESULT) in previous_schemas(PATHOLOGY_RESULT)
        assert raw_schema(PATHOLOGY_RESULT) not in previous_schemas(PATHOLOGY_RESULT)

    @pytest.mark.parametrize("index", range(len(previous_schemas(PATHOLOGY_RESULT))))
    def test_events_framed_with_an_earlier_schema_are_read(self, index: int) -> None:
        writer = previous_schemas(PATHOLOGY_RESULT)[index]
        decoder = Codecs.build(Settings(), None).decoder
        for event in SyntheticGenerator(seed=9, id_prefix="earlier").events(50):
            expected = resolve(writer, raw_schema(PATHOLOGY_RESULT), event)
            assert decoder.decode(_single_object(writer, event)) == expected

    def test_a_schema_the_service_never_shipped_is_still_an_unknown_fingerprint(self) -> None:
        decoder = Codecs.build(Settings(), None).decoder
        writer = evolved(raw_schema(PATHOLOGY_RESULT))
        [event] = SyntheticGenerator(seed=9, id_prefix="unknown").events(1)
        with pytest.raises(DecodeError) as caught:
            decoder.decode(_single_object(writer, event))
        assert caught.value.reason == "unknown-fingerprint"


def _holder(enum: dict[str, Any]) -> dict[str, Any]:
    """A record with one field of type `enum` (the enum resolved on its own)."""
    return {"type": "record", "name": "Holder", "fields": [{"name": "value", "type": enum}]}


# the output subjects: the service writes, notification services read


class TestClassificationSchema:
    """Same topic (her2.classifications.v1) across releases: compatible both ways."""

    def test_every_enum_has_a_default_among_its_symbols(self) -> None:
        for enum in enums(raw_schema(HER2_CLASSIFICATION)):
            assert enum.get("default") in enum["symbols"], enum["name"]

    def test_records_of_this_release_are_read_by_the_previous_release(self) -> None:
        assert_resolves(raw_schema(HER2_CLASSIFICATION), previous(HER2_CLASSIFICATION), seed=6)

    def test_records_of_the_previous_release_are_read_by_this_release(self) -> None:
        assert_resolves(previous(HER2_CLASSIFICATION), raw_schema(HER2_CLASSIFICATION), seed=7)

    def test_a_later_version_and_this_one_read_each_other(self) -> None:
        current = raw_schema(HER2_CLASSIFICATION)
        assert_resolves(evolved(current), current, seed=8)
        assert_resolves(current, evolved(current), seed=9)


class TestAlertSchema:
    """Her2Alert v2 deliberately breaks v1 readers and goes to new topics (`*.v2`): v1 -> v2 is
    a topic change, not an evolution. v2 must evolve compatibly from here on."""

    def test_every_enum_has_a_default_among_its_symbols(self) -> None:
        found = list(enums(raw_schema(HER2_ALERT)))
        assert len(found) == 4
        for enum in found:
            assert enum.get("default") in enum["symbols"], enum["name"]

    def test_v1_and_v2_are_incompatible_which_is_why_the_topics_changed(self) -> None:
        v1, v2 = previous(HER2_ALERT), raw_schema(HER2_ALERT)
        datum = random_records(v1, seed=10)[0]
        with pytest.raises(SchemaResolutionError):
            resolve(v1, v2, datum)  # `revision` has no default: a v2 reader cannot read v1

    def test_a_later_v2_and_this_v2_read_each_other(self) -> None:
        current = raw_schema(HER2_ALERT)
        assert_resolves(evolved(current), current, seed=11)  # old readers, newer service
        assert_resolves(current, evolved(current), seed=12)  # replays read by newer readers

    def test_an_added_status_reads_as_the_default_in_an_older_reader(self) -> None:
        current = raw_schema(HER2_ALERT)
        later = evolved(current)
        datum = random_records(later, seed=13)[0]
        datum["status"] = ADDED_SYMBOL
        assert resolve(later, current, datum)["status"] == "ACTIVE"
