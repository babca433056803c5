"""Unit tests of consumer.avro.codec (Decoder, Encoder) and consumer.avro.registry (fake HTTP
registry)."""

from __future__ import annotations

import base64
import copy
import io
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from consumer.avro.codec import Decoder, Encoder, schema_json
from consumer.avro.outputs import Codecs
from consumer.avro.registry import SchemaRegistryClient
from consumer.avro.wire import frame_confluent, frame_single_object, schema_fingerprint
from consumer.config import Settings
from consumer.errors import ConfigError, DecodeError, RegistryError, SchemaError
from consumer.resources import (
    HER2_ALERT,
    PATHOLOGY_RESULT,
    parsed_schema,
    raw_schema,
)
from consumer.tools.downstream import output_decoder

MARKER = "PHI-MARKER-123"
PREFIX = "/apis/ccompat/v7"


def sample_result() -> dict[str, Any]:
    """Return a realistic PathologyResult with every nested part filled in."""
    specimen = {
        "site": "DISTANT_METASTASIS",
        "body_site": "liver",
        "collection_date": date(2024, 3, 5),
        "cold_ischemia_minutes": 35,
        "fixation_hours": 18.5,
        "fixative": "10% neutral buffered formalin",
        "decalcified": False,
    }
    ihc = {
        "score": "ONE_PLUS",
        "percent_cells_stained": 40.0,
        "staining_intensity": "FAINT",
        "staining_completeness": "INCOMPLETE",
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
        "reported_text": f"HER2 1+ ({MARKER})",
    }
    ish = {
        "probe_type": "DUAL",
        "her2_copies_per_cell": 2.1,
        "cep17_copies_per_cell": 1.9,
        "her2_cep17_ratio": 1.1,
        "cells_counted": 40,
        "recount_group": None,
        "reported_result": "NOT_AMPLIFIED",
    }
    return {
        "event_id": "evt-0001",
        "event_time": datetime(2024, 3, 8, 14, 30, 5, 123000, tzinfo=UTC),
        "source_system": "lis-east",
        "patient_id": MARKER,
        "accession_id": "S24-01234",
        "report_status": "FINAL",
        "specimen": specimen,
        "her2_ihc": ihc,
        "her2_ish": ish,
        "er": {"percent_positive": 95.0, "result": "POSITIVE"},
        "pr": {"percent_positive": None, "result": "NEGATIVE"},
        "clinical_context": {
            "disease_setting": "METASTATIC",
            "menopausal_status": "POST",
            "metastatic_chemotherapy_lines": 1,
            "metastatic_endocrine_therapy_lines": 2,
            "metastatic_anti_her2_lines": None,
            "adjuvant_chemotherapy_end_date": date(2021, 6, 30),
            "perioperative_anti_her2_end_date": None,
            "recurrence_date": date(2023, 11, 2),
            "planned_therapies": ["Enhertu"],
            "interstitial_lung_disease_history": False,
            "clinical_flags": ["SUSPECTED_RECEPTOR_CONVERSION"],
        },
        "prior_her2_results": [
            {
                "accession_id": "S19-00042",
                "specimen": {**specimen, "site": "PRIMARY_BREAST", "body_site": None},
                "her2_ihc": {**ihc, "score": "ZERO", "reported_text": None},
                "her2_ish": None,
            }
        ],
    }


def reader_json() -> dict[str, Any]:
    """Return a deep copy of the PathologyResult reader schema as JSON."""
    return copy.deepcopy(raw_schema(PATHOLOGY_RESULT))


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the field `name` of a record schema."""
    return next(f for f in schema["fields"] if f["name"] == name)


def writer_v0() -> dict[str, Any]:
    """An older writer without two optional fields (source_system, prior_her2_results)."""
    schema = reader_json()
    dropped = ("source_system", "prior_her2_results")
    assert all("default" in field(schema, name) for name in dropped)
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in dropped]
    return schema


def writer_with_extra_fields() -> dict[str, Any]:
    """A newer writer: an extra top-level field and an extra field inside her2_ihc."""
    schema = reader_json()
    schema["fields"].append({"name": "lab_comment", "type": "string", "default": ""})
    ihc = field(schema, "her2_ihc")["type"][1]
    ihc["fields"].append({"name": "scoring_system", "type": ["null", "string"], "default": None})
    return schema


def writer_cells_counted_as(kind: str) -> dict[str, Any]:
    """A writer whose her2_ish.cells_counted has type [null, kind]."""
    schema = reader_json()
    ish = field(schema, "her2_ish")["type"][1]
    field(ish, "cells_counted")["type"] = ["null", kind]
    return schema


def writer_event_time_as_string() -> dict[str, Any]:
    """A writer whose event_time is a string: never resolvable to timestamp-millis."""
    schema = reader_json()
    event_time = field(schema, "event_time")
    event_time["type"] = "string"
    event_time.pop("default", None)
    return schema


def writer_with_extra_enum_symbol() -> dict[str, Any]:
    """A writer whose ReportStatus has a symbol the reader does not know."""
    schema = reader_json()
    field(schema, "report_status")["type"]["symbols"].append("ADDENDUM")
    return schema


def avro_body(schema: Any, datum: dict[str, Any]) -> bytes:
    """Return the unframed Avro binary of `datum`."""
    return Encoder("raw", schema).encode(datum)


def reader() -> Any:
    """Return the parsed reader schema."""
    return parsed_schema(PATHOLOGY_RESULT)


# -- a fake Confluent-compatible registry ------------------------------------------------------


class FakeRegistry:
    """Serve /schemas/ids/{id}, /subjects/{s}/versions[/{v}] and /config from memory, under a
    path prefix; over TLS when given a server `ssl_context`."""

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        self.prefix = prefix
        self.schemas: dict[int, dict[str, Any]] = {}
        self.versions: dict[tuple[str, int], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status_override: int | None = None
        self.fail_prefix: str | None = None  # GETs of paths starting with it answer 503
        self.plain_404 = False
        self._server = HTTPServer(("127.0.0.1", 0), self._handler())
        self._scheme = "http"
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the registry, prefix included."""
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def add(
        self,
        schema_id: int,
        schema: Any,
        schema_type: str | None = None,
        references: list[dict[str, Any]] | None = None,
    ) -> None:
        """Register `schema` (JSON or text) under `schema_id`, with `references` if given."""
        answer: dict[str, Any] = {
            "schema": schema if isinstance(schema, str) else json.dumps(schema)
        }
        if schema_type is not None:
            answer["schemaType"] = schema_type
        if references is not None:
            answer["references"] = references
        self.schemas[schema_id] = answer

    def add_version(
        self,
        subject: str,
        version: int,
        schema: Any,
        references: list[dict[str, Any]] | None = None,
    ) -> None:
        """Register `schema` as `version` of `subject` (GET /subjects/{subject}/versions/{v})."""
        answer: dict[str, Any] = {
            "subject": subject,
            "version": version,
            "id": 1000 + len(self.versions),
            "schema": schema if isinstance(schema, str) else json.dumps(schema),
        }
        if references is not None:
            answer["references"] = references
        self.versions[(subject, version)] = answer

    def count(self, method: str) -> int:
        """Number of requests received with `method`."""
        return sum(1 for request in self.requests if request[0] == method)

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

            def do_GET(self) -> None:
                registry.requests.append(("GET", self.path, dict(self.headers), b""))
                if registry.status_override is not None:
                    self._send(registry.status_override, {"error_code": 50001, "message": "x"})
                    return
                path = self.path.removeprefix(registry.prefix)
                if registry.fail_prefix is not None and path.startswith(registry.fail_prefix):
                    self._send(503, {"error_code": 50003, "message": "unavailable"})
                    return
                head, _, last = path.rpartition("/")
                subject, _, versions = head.removeprefix("/subjects/").rpartition("/")
                version_key = (urllib.parse.unquote(subject), int(last) if last.isdigit() else 0)
                if head == "/schemas/ids" and last.isdigit() and int(last) in registry.schemas:
                    self._send(200, registry.schemas[int(last)])
                elif head.startswith("/subjects/") and versions == "versions":
                    if version_key in registry.versions:
                        self._send(200, registry.versions[version_key])
                    else:
                        self._send(404, {"error_code": 40402, "message": "Version not found"})
                elif path == "/config":
                    self._send(200, {"compatibilityLevel": "FULL_TRANSITIVE"})
                elif registry.plain_404:
                    self._send_raw(404, b"<html>not found</html>", "text/html")
                else:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                registry.requests.append(("POST", self.path, dict(self.headers), body))
                if registry.status_override is not None:
                    self._send(registry.status_override, {"error_code": 409, "message": "x"})
                    return
                path = self.path.removeprefix(registry.prefix)
                if not (path.startswith("/subjects/") and path.endswith("/versions")):
                    self._send(404, {"error_code": 40401, "message": "Subject not found"})
                    return
                text = json.loads(body)["schema"]
                for schema_id, answer in registry.schemas.items():
                    if answer["schema"] == text:
                        self._send(200, {"id": schema_id})
                        return
                schema_id = max(registry.schemas, default=0) + 1
                registry.schemas[schema_id] = {"schema": text}
                self._send(200, {"id": schema_id})

            def _send(self, status: int, answer: dict[str, Any]) -> None:
                self._send_raw(status, json.dumps(answer).encode(), "application/json")

            def _send_raw(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    """A running fake registry under the Apicurio-style ccompat prefix."""
    with FakeRegistry(PREFIX) as registry:
        yield registry


def assert_clean(error: Exception) -> None:
    """The error carries no planted field value and no chained exception that could."""
    assert MARKER not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


# -- Decoder -----------------------------------------------------------------------------------


class TestDecoderRoundTrip:
    """Each framing carries a realistic PathologyResult unchanged."""

    @pytest.mark.parametrize(
        ("output_format", "input_format"),
        [
            pytest.param("single-object", "auto", id="single-object-auto"),
            pytest.param("single-object", "single-object", id="single-object"),
            pytest.param("raw", "raw", id="raw"),
            pytest.param("confluent", "auto", id="confluent-auto"),
            pytest.param("confluent", "confluent", id="confluent"),
        ],
    )
    def test_round_trip(
        self, fake_registry: FakeRegistry, output_format: str, input_format: str
    ) -> None:
        client = SchemaRegistryClient(fake_registry.url)
        encoder = Encoder(output_format, reader(), registry=client, subject="results-value")
        decoder = Decoder(input_format, reader(), registry=client)
        assert decoder.decode(encoder.encode(sample_result())) == sample_result()

    def test_minimal_record_gets_reader_defaults(self) -> None:
        defaults = {f["name"]: f["default"] for f in reader_json()["fields"] if "default" in f}
        minimal = {k: v for k, v in sample_result().items() if k not in defaults}
        value = Encoder("single-object", reader()).encode(minimal)
        decoded = Decoder("auto", reader()).decode(value)
        assert decoded == {**defaults, **minimal}

    def test_confluent_schema_is_fetched_once(self, fake_registry: FakeRegistry) -> None:
        fake_registry.add(7, raw_schema(PATHOLOGY_RESULT))
        decoder = Decoder("auto", reader(), registry=SchemaRegistryClient(fake_registry.url))
        value = frame_confluent(7, avro_body(reader(), sample_result()))
        for _ in range(3):
            assert decoder.decode(value) == sample_result()
        assert fake_registry.count("GET") == 1


class TestSchemaEvolution:
    """Writers older and newer than the reader resolve to the reader schema."""

    @staticmethod
    def written_by(writer: dict[str, Any]) -> dict[str, Any]:
        """The sample as `writer` can carry it (its extra fields filled in)."""
        datum = sample_result()
        names = {f["name"] for f in writer["fields"]}
        datum = {k: v for k, v in datum.items() if k in names}
        if "lab_comment" in names:
            datum["lab_comment"] = MARKER
            datum["her2_ihc"] = {**datum["her2_ihc"], "scoring_system": MARKER}
        return datum

    @staticmethod
    def expected_from(writer: dict[str, Any]) -> dict[str, Any]:
        """What the reader sees: reader defaults where the writer lacked a field."""
        names = {f["name"] for f in writer["fields"]}
        defaults = {
            f["name"]: f["default"] for f in reader_json()["fields"] if f["name"] not in names
        }
        return {**sample_result(), **defaults}

    @pytest.mark.parametrize(
        "make_writer",
        [
            pytest.param(writer_v0, id="v0-missing-optional-fields"),
            pytest.param(writer_with_extra_fields, id="extra-fields"),
            pytest.param(lambda: writer_cells_counted_as("int"), id="same-as-reader"),
        ],
    )
    @pytest.mark.parametrize("framing", ["single-object", "raw", "confluent"])
    def test_resolves(
        self,
        fake_registry: FakeRegistry,
        make_writer: Callable[[], dict[str, Any]],
        framing: str,
    ) -> None:
        writer = make_writer()
        body = avro_body(writer, self.written_by(writer))
        client = SchemaRegistryClient(fake_registry.url)
        if framing == "single-object":
            decoder = Decoder("auto", reader(), known_writer_schemas=[writer])
            value = frame_single_object(schema_fingerprint(fastavro.parse_schema(writer)), body)
        elif framing == "raw":
            decoder = Decoder("raw", reader(), raw_writer_schema=writer)
            value = body
        else:
            fake_registry.add(3, writer)
            decoder = Decoder("confluent", reader(), registry=client)
            value = frame_confluent(3, body)
        decoded = decoder.decode(value)
        assert decoded == self.expected_from(writer)
        assert "lab_comment" not in decoded

    def test_float_is_promoted_to_double(self) -> None:
        writer = reader_json()
        specimen = field(writer, "specimen")["type"][1]
        field(specimen, "fixation_hours")["type"] = ["null", "float"]
        body = avro_body(writer, sample_result())
        decoded = Decoder("raw", reader(), raw_writer_schema=writer).decode(body)
        assert decoded["specimen"]["fixation_hours"] == 18.5

    @pytest.mark.parametrize(
        ("make_writer", "datum"),
        [
            pytest.param(
                writer_event_time_as_string, {"event_time": MARKER}, id="string-to-timestamp"
            ),
            pytest.param(
                lambda: writer_cells_counted_as("long"),
                {"her2_ish": {**sample_result()["her2_ish"], "cells_counted": 2**40}},
                id="long-to-int",
            ),
        ],
    )
    def test_unresolvable_writer(
        self, make_writer: Callable[[], dict[str, Any]], datum: dict[str, Any]
    ) -> None:
        writer = make_writer()
        body = avro_body(writer, {**sample_result(), **datum})
        with pytest.raises(DecodeError) as caught:
            Decoder("raw", reader(), raw_writer_schema=writer).decode(body)
        assert caught.value.reason == "schema-resolution"
        assert "ADDENDUM" not in str(caught.value)
        assert_clean(caught.value)

    def test_the_dead_letter_names_where_the_schemas_differ(self) -> None:
        # an integration audit: every schema-resolution dead letter said only "cannot be
        # resolved"; the field path comes from the schemas, never from the record
        writer = writer_cells_counted_as("long")
        datum = {"her2_ish": {**sample_result()["her2_ish"], "cells_counted": 2**40}}
        body = avro_body(writer, {**sample_result(), **datum})
        with pytest.raises(DecodeError) as caught:
            Decoder("raw", reader(), raw_writer_schema=writer).decode(body)
        assert caught.value.message.endswith(
            "(the schemas differ at her2_ish.cells_counted: the writer's long is not in the "
            "reader's union)"
        )

    def test_an_unknown_enum_symbol_reads_as_the_enums_default(self) -> None:
        # the input schema's enums carry defaults (README, "Schema compatibility"): a symbol a
        # later lab schema adds is read as the conservative default, not dead-lettered
        writer = writer_with_extra_enum_symbol()
        body = avro_body(writer, {**sample_result(), "report_status": "ADDENDUM"})
        decoded = Decoder("raw", reader(), raw_writer_schema=writer).decode(body)
        assert decoded["report_status"] == "PRELIMINARY"

    def test_a_writer_with_unknown_enum_symbols_is_told_once(
        self, fake_registry: FakeRegistry
    ) -> None:
        # a renamed symbol (FINAL -> FINALIZED) passes a registry's compatibility check too, and
        # its FINAL reports read as PRELIMINARY (no alert): an integration audit found it silent
        writer = reader_json()
        status = field(writer, "report_status")["type"]
        status["symbols"] = ["FINALIZED" if s == "FINAL" else s for s in status["symbols"]]
        field(field(writer, "her2_ihc")["type"][1], "score")["type"][1]["symbols"].append("SCORE_4")
        fake_registry.add(8, writer)
        fake_registry.add(9, writer_with_extra_fields())  # new fields, no new symbol
        fake_registry.add(7, raw_schema(PATHOLOGY_RESULT))
        told: list[tuple[str, str, tuple[str, ...]]] = []
        decoder = Decoder(
            "auto",
            reader(),
            registry=SchemaRegistryClient(fake_registry.url),
            on_unknown_symbols=lambda *args: told.append(args),
        )
        finalized = {**sample_result(), "report_status": "FINALIZED"}
        for _ in range(2):
            value = frame_confluent(8, avro_body(fastavro.parse_schema(writer), finalized))
            assert decoder.decode(value)["report_status"] == "PRELIMINARY"
        extra = avro_body(fastavro.parse_schema(writer_with_extra_fields()), sample_result())
        decoder.decode(frame_confluent(9, extra))
        decoder.decode(frame_confluent(7, avro_body(reader(), sample_result())))
        assert sorted(told) == [
            ("writer schema id 8", "IhcScore", ("SCORE_4",)),
            ("writer schema id 8", "ReportStatus", ("FINALIZED",)),
        ]

    def test_resolution_is_checked_per_record(self) -> None:
        # fastavro resolves lazily: an unpromotable union branch only fails when a record uses it
        writer = writer_cells_counted_as("long")
        datum = {**sample_result(), "her2_ish": None}
        decoded = Decoder("raw", reader(), raw_writer_schema=writer).decode(
            avro_body(writer, datum)
        )
        assert decoded["her2_ish"] is None


def single_object(body: bytes) -> bytes:
    """Frame `body` as single-object with the reader schema's fingerprint."""
    return frame_single_object(schema_fingerprint(reader()), body)


def valid_body() -> bytes:
    """The Avro binary of the sample."""
    return avro_body(reader(), sample_result())


def body_with_event_id(raw: bytes) -> bytes:
    """A record whose event_id string holds the bytes `raw` (to plant invalid UTF-8)."""
    placeholder = "QQQQQQQQ"
    encoded = avro_body(reader(), {**sample_result(), "event_id": placeholder})
    return encoded.replace(b"\x10" + placeholder.encode(), bytes((len(raw) * 2,)) + raw, 1)


def body_with_report_status_index(index: int) -> bytes:
    """A record whose report_status enum index is `index` (valid ones are 0-4)."""
    first = avro_body(reader(), {**sample_result(), "report_status": "PRELIMINARY"})
    second = avro_body(reader(), {**sample_result(), "report_status": "FINAL"})
    at = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    assert (first[at], second[at]) == (0, 2)
    return first[:at] + bytes((index * 2,)) + first[at + 1 :]


def body_with_huge_collection_date() -> bytes:
    """A record whose specimen collection date is far outside what datetime.date holds."""
    datum = sample_result()
    writer = reader_json()
    specimen = field(writer, "specimen")["type"][1]
    field(specimen, "collection_date")["type"] = ["null", "int"]
    datum["specimen"] = {**datum["specimen"], "collection_date": 2_000_000_000}
    datum["prior_her2_results"] = []
    return avro_body(writer, datum)


class TestFramingHints:
    """A value in another wire format than HER2_INPUT_FORMAT expects says what it looks like (an
    integration audit: JSON, Confluent or single-object values under raw all read "the payload
    ended before the record was complete", and unframed Avro under auto only "unknown magic
    byte"), so the lab's engineer can tell what to change."""

    @pytest.mark.parametrize(
        ("input_format", "value", "says"),
        [
            ("auto", b'{"event_id": "e1"}', "looks like JSON"),
            ("auto", b"\x12" + valid_body(), "HER2_INPUT_FORMAT=raw"),
            ("raw", b'{"event_id": "e1"}', "starts like JSON"),
            ("raw", frame_confluent(7, valid_body()), "starts like Confluent framing"),
            ("raw", single_object(valid_body()), "starts like single-object framing"),
            # a 17-character event_id's length byte is a JSON string's quote: not JSON
            ("auto", avro_body(reader(), {**sample_result(), "event_id": "e" * 17}), "=raw"),
        ],
    )
    def test_the_message_says_what_the_value_looks_like(
        self, input_format: str, value: bytes, says: str
    ) -> None:
        with pytest.raises(DecodeError) as caught:
            Decoder(input_format, reader()).decode(value)
        assert says in caught.value.message

    def test_raw_garbage_gets_no_hint(self) -> None:
        with pytest.raises(DecodeError) as caught:
            Decoder("raw", reader()).decode(b"\xff" * 40)
        assert "starts like" not in caught.value.message


class TestDecodeErrors:
    """Every undecodable value raises DecodeError with the right reason and no field values."""

    @pytest.mark.parametrize(
        ("make_value", "reason"),
        [
            pytest.param(lambda: None, "empty-value", id="none"),
            pytest.param(lambda: b"", "empty-value", id="empty"),
            pytest.param(lambda: single_object(valid_body()[:-7]), "avro-decode", id="truncated"),
            pytest.param(lambda: single_object(b""), "avro-decode", id="header-only"),
            pytest.param(lambda: single_object(b"\xff" * 40), "avro-decode", id="garbage"),
            pytest.param(
                lambda: single_object(valid_body() + b"\x00"), "avro-decode", id="trailing-byte"
            ),
            pytest.param(
                lambda: single_object(valid_body() + MARKER.encode()),
                "avro-decode",
                id="trailing-bytes",
            ),
            pytest.param(
                lambda: single_object(body_with_event_id(b"\xff\xfe" + MARKER.encode())),
                "avro-decode",
                id="invalid-utf8",
            ),
            pytest.param(
                lambda: single_object(body_with_report_status_index(9)),
                "avro-decode",
                id="enum-index-out-of-range",
            ),
            pytest.param(
                lambda: single_object(body_with_huge_collection_date()),
                "avro-decode",
                id="date-out-of-range",
            ),
            pytest.param(lambda: b"\x7b" + valid_body(), "unknown-magic-byte", id="wrong-magic"),
            pytest.param(
                lambda: b"\x01" + bytes(16) + valid_body(),
                "unsupported-framing",
                id="confluent-guid",
            ),
            pytest.param(
                lambda: frame_single_object(b"\x00" * 8, valid_body()),
                "unknown-fingerprint",
                id="unknown-fingerprint",
            ),
            pytest.param(
                lambda: frame_confluent(1, valid_body()),
                "unsupported-framing",
                id="confluent-without-registry",
            ),
        ],
    )
    def test_reason(self, make_value: Callable[[], bytes | None], reason: str) -> None:
        with pytest.raises(DecodeError) as caught:
            Decoder("auto", reader()).decode(make_value())
        assert caught.value.reason == reason
        assert_clean(caught.value)

    def test_message_names_the_failure_not_the_data(self) -> None:
        with pytest.raises(DecodeError) as caught:
            Decoder("auto", reader()).decode(single_object(body_with_huge_collection_date()))
        # fastavro would say "year 5477784 is out of range"
        assert caught.value.message == (
            "Avro binary could not be decoded: a value is out of range for its type (ValueError)"
        )

    def test_trailing_bytes_are_counted(self) -> None:
        with pytest.raises(DecodeError, match="3 bytes left over"):
            Decoder("auto", reader()).decode(single_object(valid_body() + b"abc"))

    def test_unknown_schema_id(self, fake_registry: FakeRegistry) -> None:
        decoder = Decoder("confluent", reader(), registry=SchemaRegistryClient(fake_registry.url))
        for _ in range(2):
            with pytest.raises(DecodeError) as caught:
                decoder.decode(frame_confluent(99, valid_body()))
            assert caught.value.reason == "unknown-schema-id"
        assert fake_registry.count("GET") == 2  # not cached: the id may be registered later

    def test_registry_outage_is_not_a_record_error(self, fake_registry: FakeRegistry) -> None:
        fake_registry.status_override = 503
        decoder = Decoder("confluent", reader(), registry=SchemaRegistryClient(fake_registry.url))
        with pytest.raises(RegistryError):
            decoder.decode(frame_confluent(1, valid_body()))


RECURSIVE_WRITER = {
    "type": "record",
    "name": "health.her2.PathologyResult",
    "fields": [
        *reader_json()["fields"],
        {
            "name": "chain",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [{"name": "next", "type": ["null", "Node"]}],
            },
        },
    ],
}

ZERO_WIDTH_ARRAY_WRITER = {
    "type": "record",
    "name": "health.her2.PathologyResult",
    "fields": [
        *reader_json()["fields"],
        {"name": "nothing", "type": {"type": "array", "items": "null"}},
    ],
}


class TestUnsafeWriterSchemas:
    """Writer schemas that would crash or hang fastavro on hostile data are refused."""

    @pytest.mark.parametrize(
        ("writer", "tail"),
        [
            # 20 000 nesting levels crash fastavro's compiled reader (segmentation fault)
            pytest.param(RECURSIVE_WRITER, b"\x02" * 20_000 + b"\x00", id="recursive"),
            # a count of 2**62 null items would loop (and allocate) without end
            pytest.param(
                ZERO_WIDTH_ARRAY_WRITER,
                b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f",
                id="zero-width-array",
            ),
        ],
    )
    def test_refused_from_registry_and_remembered(
        self, fake_registry: FakeRegistry, writer: dict[str, Any], tail: bytes
    ) -> None:
        fake_registry.add(5, writer)
        decoder = Decoder("auto", reader(), registry=SchemaRegistryClient(fake_registry.url))
        value = frame_confluent(5, valid_body() + tail)
        for _ in range(2):
            with pytest.raises(DecodeError) as caught:
                decoder.decode(value)
            assert caught.value.reason == "schema-resolution"
        assert fake_registry.count("GET") == 1

    @pytest.mark.parametrize(
        "writer",
        [
            pytest.param(RECURSIVE_WRITER, id="recursive"),
            pytest.param(ZERO_WIDTH_ARRAY_WRITER, id="zero-width-array"),
        ],
    )
    def test_configured_unsafe_schema_is_fatal(self, writer: dict[str, Any]) -> None:
        with pytest.raises(SchemaError, match="refused"):
            Decoder("raw", reader(), raw_writer_schema=writer)
        with pytest.raises(SchemaError, match="refused"):
            Decoder("auto", reader(), known_writer_schemas=[writer])

    @pytest.mark.parametrize(
        ("schema_text", "schema_type", "reason"),
        [
            pytest.param(
                '{"type": "record", "name": "R"', None, "schema-resolution", id="not-json"
            ),
            pytest.param(
                '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]}',
                None,
                "schema-resolution",
                id="unknown-named-type",
            ),
            pytest.param('syntax = "proto3";', "PROTOBUF", "unsupported-framing", id="protobuf"),
        ],
    )
    def test_unusable_registered_schema(
        self, fake_registry: FakeRegistry, schema_text: str, schema_type: str | None, reason: str
    ) -> None:
        fake_registry.add(6, schema_text, schema_type)
        decoder = Decoder("auto", reader(), registry=SchemaRegistryClient(fake_registry.url))
        with pytest.raises(DecodeError) as caught:
            decoder.decode(frame_confluent(6, valid_body()))
        assert caught.value.reason == reason
        assert "proto3" not in str(caught.value)


class TestDecoderConfiguration:
    """Bad configuration fails when the decoder is built."""

    def test_unknown_input_format(self) -> None:
        with pytest.raises(ConfigError, match="HER2_INPUT_FORMAT"):
            Decoder("json", reader())

    def test_confluent_needs_a_registry(self) -> None:
        with pytest.raises(SchemaError, match="registry"):
            Decoder("confluent", reader())

    def test_reader_must_be_a_record(self) -> None:
        with pytest.raises(SchemaError, match="record"):
            Decoder("auto", "string")


# -- Encoder -----------------------------------------------------------------------------------


class TestEncoder:
    """Output framings."""

    def test_single_object_header(self) -> None:
        value = Encoder("single-object", reader()).encode(sample_result())
        assert value[:2] == b"\xc3\x01"
        assert value[2:10] == schema_fingerprint(reader())
        assert value[10:] == valid_body()

    def test_raw_has_no_header(self) -> None:
        body = Encoder("raw", reader()).encode(sample_result())
        decoded = fastavro.schemaless_reader(io.BytesIO(body), reader(), None)
        assert decoded == sample_result()

    def test_confluent_registers_once_lazily(self, fake_registry: FakeRegistry) -> None:
        client = SchemaRegistryClient(fake_registry.url)
        encoder = Encoder(
            "confluent", parsed_schema(HER2_ALERT), registry=client, subject="alerts-value"
        )
        assert fake_registry.count("POST") == 0
        alert = {
            "alert_id": "a1",
            "revision": 1,
            "alert_type": "RETEST",
            "code": "RETEST-01",
            "scope": "PATIENT",
            "status": "ACTIVE",
            "rule_id": "retest-metastasis",
            "rule_version": 1,
            "severity": "WARNING",
            "patient_id": MARKER,
            "accession_id": "S1",
            "event_id": "e1",
            "her2_category": "LOW",
            "title": "t",
            "detail": "d",
            "recommendation": "r",
            "evidence": ["ASCO/CAP 2023"],
            "ruleset_version": "1",
            "created_at": datetime(2024, 1, 1, tzinfo=UTC),
            "event_time": datetime(2024, 1, 1, tzinfo=UTC),
        }
        values = [encoder.encode(alert) for _ in range(3)]
        assert fake_registry.count("POST") == 1
        schema_id = int.from_bytes(values[0][1:5], "big")
        assert values[0][0] == 0
        registered = json.loads(fake_registry.schemas[schema_id]["schema"])
        assert to_parsing_canonical_form(registered) == to_parsing_canonical_form(
            parsed_schema(HER2_ALERT)
        )
        assert registered["fields"][0]["doc"]  # docs and defaults are registered, not just the PCF

    @pytest.mark.parametrize(
        ("registry", "subject"),
        [pytest.param(False, "s", id="no-registry"), pytest.param(True, None, id="no-subject")],
    )
    def test_confluent_needs_registry_and_subject(
        self, fake_registry: FakeRegistry, registry: bool, subject: str | None
    ) -> None:
        client = SchemaRegistryClient(fake_registry.url) if registry else None
        with pytest.raises(SchemaError, match="registry"):
            Encoder("confluent", reader(), registry=client, subject=subject)

    def test_unknown_output_format(self) -> None:
        with pytest.raises(ConfigError, match="HER2_OUTPUT_FORMAT"):
            Encoder("auto", reader())

    @pytest.mark.parametrize(
        "datum",
        [
            pytest.param({**sample_result(), "report_status": MARKER}, id="bad-enum"),
            pytest.param({**sample_result(), "event_id": 12345}, id="wrong-type"),
            pytest.param({"patient_id": MARKER}, id="missing-fields"),
        ],
    )
    def test_invalid_datum(self, datum: dict[str, Any]) -> None:
        with pytest.raises(SchemaError) as caught:
            Encoder("single-object", reader()).encode(datum)
        assert_clean(caught.value)

    def test_schema_json_drops_fastavro_keys(self) -> None:
        plain = schema_json(reader())
        assert not [key for key in plain if key.startswith("__")]
        assert to_parsing_canonical_form(fastavro.parse_schema(plain)) == to_parsing_canonical_form(
            reader()
        )


# -- SchemaRegistryClient ----------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TestSchemaRegistryClient:
    """The REST client against a fake registry."""

    def test_get_schema_uses_prefix_and_caches(self, fake_registry: FakeRegistry) -> None:
        fake_registry.add(11, raw_schema(PATHOLOGY_RESULT))
        client = SchemaRegistryClient(fake_registry.url + "/")
        first = client.get_schema(11)
        assert client.get_schema(11) is first
        assert to_parsing_canonical_form(first) == to_parsing_canonical_form(reader())
        assert [r[1] for r in fake_registry.requests] == [f"{PREFIX}/schemas/ids/11"]

    def test_unknown_id(self, fake_registry: FakeRegistry) -> None:
        with pytest.raises(DecodeError) as caught:
            SchemaRegistryClient(fake_registry.url).get_schema(12)
        assert caught.value.reason == "unknown-schema-id"
        # which registry was asked (an integration engineer's first question), no credentials
        assert caught.value.message.endswith(f"is not registered in {fake_registry.url}")

    def test_404_without_registry_error_body_is_a_registry_problem(
        self, fake_registry: FakeRegistry
    ) -> None:
        # e.g. a wrong path prefix: dead-lettering every record would be wrong
        fake_registry.plain_404 = True
        with pytest.raises(RegistryError, match="404"):
            SchemaRegistryClient(fake_registry.url).get_schema(12)

    @pytest.mark.parametrize("status", [500, 503, 401])
    def test_error_status_is_a_registry_error(
        self, fake_registry: FakeRegistry, status: int
    ) -> None:
        fake_registry.status_override = status
        with pytest.raises(RegistryError, match=str(status)):
            SchemaRegistryClient(fake_registry.url).get_schema(1)

    def test_unreachable(self) -> None:
        with pytest.raises(RegistryError, match="unreachable"):
            SchemaRegistryClient(f"http://127.0.0.1:{closed_port()}").get_schema(1)

    def test_timeout(self) -> None:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)  # the kernel accepts the connection; nobody answers
            client = SchemaRegistryClient(
                f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.2
            )
            started = time.monotonic()
            with pytest.raises(RegistryError):
                client.get_schema(1)
            assert time.monotonic() - started < 5

    def test_register_posts_and_caches(self, fake_registry: FakeRegistry) -> None:
        client = SchemaRegistryClient(fake_registry.url)
        schema = schema_json(parsed_schema(HER2_ALERT))
        schema_id = client.register("her2.alerts.retest.v1-value", schema)
        assert client.register("her2.alerts.retest.v1-value", schema) == schema_id
        assert fake_registry.count("POST") == 1
        _, path, headers, body = fake_registry.requests[0]
        assert path == f"{PREFIX}/subjects/her2.alerts.retest.v1-value/versions"
        assert headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
        assert json.loads(json.loads(body)["schema"]) == schema

    def test_register_quotes_the_subject(self, fake_registry: FakeRegistry) -> None:
        SchemaRegistryClient(fake_registry.url).register("a/b c", {"type": "string"})
        assert fake_registry.requests[0][1] == f"{PREFIX}/subjects/a%2Fb%20c/versions"

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            pytest.param(409, SchemaError, id="incompatible"),
            pytest.param(422, SchemaError, id="invalid"),
            pytest.param(500, RegistryError, id="server-error"),
        ],
    )
    def test_register_failures(
        self, fake_registry: FakeRegistry, status: int, error: type[Exception]
    ) -> None:
        fake_registry.status_override = status
        with pytest.raises(error) as caught:
            SchemaRegistryClient(fake_registry.url).register("s", {"type": "string", "doc": MARKER})
        assert MARKER not in str(caught.value)

    def test_basic_auth_from_url_and_repr_hides_it(self, fake_registry: FakeRegistry) -> None:
        fake_registry.add(1, {"type": "string"})
        url = fake_registry.url.replace("http://", "http://user:s%3Acret@")
        client = SchemaRegistryClient(url)
        client.get_schema(1)
        expected = base64.b64encode(b"user:s:cret").decode()
        assert fake_registry.requests[0][2]["Authorization"] == f"Basic {expected}"
        assert "cret" not in repr(client)

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("localhost:8081", id="no-scheme"),
            pytest.param("ftp://registry", id="wrong-scheme"),
            pytest.param("http://", id="no-host"),
        ],
    )
    def test_bad_url(self, url: str) -> None:
        with pytest.raises(ConfigError, match="HER2_SCHEMA_REGISTRY_URL"):
            SchemaRegistryClient(url)


# -- readers of the service's outputs (tools/downstream.py: open-alerts, demo) -----------------


def _alert() -> dict[str, Any]:
    return {
        "alert_id": "a1", "revision": 1, "alert_type": "RETEST", "code": "RETEST-01",
        "scope": "PATIENT", "status": "ACTIVE", "rule_id": "retest-metastasis", "rule_version": 1,
        "severity": "WARNING", "patient_id": "P1", "accession_id": "S1", "event_id": "e1",
        "her2_category": "LOW", "title": "t", "detail": "d", "recommendation": "r",
        "evidence": ["ASCO/CAP 2023"], "ruleset_version": "1",
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "event_time": datetime(2024, 1, 1, tzinfo=UTC),
    }  # fmt: skip


@pytest.mark.parametrize("output_format", ["single-object", "confluent", "raw"])
def test_the_output_reader_reads_what_the_service_writes(
    fake_registry: FakeRegistry, output_format: str
) -> None:
    """`open-alerts` decoded with `auto` and no registry: with HER2_OUTPUT_FORMAT=confluent (or
    raw) every alert counted as undecodable. It now reads as the settings say (as the demo did)."""
    environ = {"HER2_OUTPUT_FORMAT": output_format}
    if output_format == "confluent":
        environ["HER2_SCHEMA_REGISTRY_URL"] = fake_registry.url
    settings = Settings.from_env(environ)
    registry = settings.registry_client()
    encoder = Codecs.build(settings, registry).alerts[settings.topics.retest]
    decoded = output_decoder(settings, HER2_ALERT, registry).decode(encoder.encode(_alert()))
    assert decoded == _alert()
