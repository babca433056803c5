"""The service against a real schema registry: Apicurio Registry 3 from Maven Central
(conftest's session fixture `apicurio`, deploy/registry/launcher.py), through its
Confluent-compatible API (/apis/ccompat/v7), and the real broker.

- Confluent framing in and out;
- an evolved lab schema (a field and an enum symbol more) under FORWARD_TRANSITIVE;
- a Java-style producer: nested named types registered as their own subjects and the value
  schema with `references`, as Apicurio's serializer does (these used to be dead-lettered);
- a registry that lost its data (a second, empty Apicurio) under a service with history: the
  changelog is self-contained, so every patient's history is restored and a cancellation
  retracts the alerts of the first run (issue 14, item 3);
- the registry unreachable at start-up and mid-stream: records wait, nothing is dead-lettered
  or committed past them. "Unreachable" is a TCP forwarder in front of the registry that stops
  accepting connections (restarting Apicurio would lose its in-memory schemas and cost a boot).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Env,
    committed,
    encoder,
    end_offsets,
    make_event,
    offline_alerts,
    output_reader,
    pipeline,
    produce,
    running,
)

from consumer.avro.codec import Encoder
from consumer.avro.registry import SchemaRegistryClient
from consumer.avro.wire import frame_confluent
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, PATHOLOGY_RESULT, raw_schema
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

PREVIOUS_SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas" / "eb67745"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


INPUT_PARTITIONS = 2  # the `env` fixture creates the input topic


# -- the registry's REST API, as a producer's tooling would call it ---------------------------


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One ccompat request; returns the JSON answer, raises HTTPError on a non-2xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        base + path, data=data, method=method, headers={"Content-Type": CONTENT_TYPE}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def subject_path(subject: str) -> str:
    return "/subjects/" + urllib.parse.quote(subject, safe="")


def register(
    base: str,
    subject: str,
    schema: dict[str, Any],
    references: Sequence[dict[str, Any]] = (),
) -> int:
    """Register `schema` under `subject` (with `references`), return its id."""
    body: dict[str, Any] = {"schema": json.dumps(schema)}
    if references:
        body["references"] = list(references)
    answer = call(base, "POST", subject_path(subject) + "/versions", body)
    return int(answer["id"])


def set_compatibility(base: str, subject: str, level: str) -> None:
    call(base, "PUT", "/config/" + urllib.parse.quote(subject, safe=""), {"compatibility": level})


def refused(base: str, subject: str, schema: dict[str, Any]) -> int:
    """The HTTP status of a registration the registry is expected to refuse."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        register(base, subject, schema)
    caught.value.close()  # the error holds the answer's connection
    return caught.value.code


def java_style_split(
    schema: dict[str, Any],
) -> tuple[dict[str, Any], list[str], list[tuple[str, dict[str, Any], list[str]]]]:
    """Split `schema` as Apicurio's Java serializer registers it: every nested named type its
    own schema, each schema naming the types it uses by full name and
    listing them as references. Returns (value schema, its references, nested subjects in
    registration order: a type after the types it uses)."""
    nested: list[tuple[str, dict[str, Any], list[str]]] = []

    def full(name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def walk(node: Any, namespace: str | None, refs: list[str]) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            name = full(node, namespace)
            if name not in refs:
                refs.append(name)
            return name
        if isinstance(node, list):
            return [walk(branch, namespace, refs) for branch in node]
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            name, own = define(node, namespace)
            nested.append((name, own[0], own[1]))
            if name not in refs:
                refs.append(name)
            return name
        if kind == "array":
            return {**node, "items": walk(node["items"], namespace, refs)}
        if kind == "map":
            return {**node, "values": walk(node["values"], namespace, refs)}
        return node  # a primitive with a logical type

    def define(
        node: dict[str, Any], namespace: str | None
    ) -> tuple[str, tuple[dict[str, Any], list[str]]]:
        name = full(node["name"], node.get("namespace", namespace))
        own_namespace = name.rpartition(".")[0] or None
        refs: list[str] = []
        out = {k: v for k, v in node.items() if k not in ("name", "namespace", "fields")}
        out["name"] = name
        if node["type"] == "record":
            out["fields"] = [
                {**f, "type": walk(f["type"], own_namespace, refs)} for f in node["fields"]
            ]
        return name, (out, refs)

    _, (value, value_refs) = define(copy.deepcopy(schema), None)
    return value, value_refs, nested


def register_java_style(base: str, subject: str, schema: dict[str, Any], prefix: str) -> int:
    """Register each nested type as its own subject (`prefix` + its full name) and the value
    schema with references to them; return the value schema's id."""
    value, value_refs, nested = java_style_split(schema)
    assert len(nested) >= 8, "the schema has nested named types"

    def references(names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "subject": prefix + n, "version": 1} for n in names]

    for name, nested_schema, refs in nested:
        register(base, prefix + name, nested_schema, references(refs))
    return register(base, subject, value, references(value_refs))


# -- a TCP forwarder that can stop accepting connections --------------------------------------


class Forwarder:
    """127.0.0.1:<port> forwarded to the registry; `down()` closes the listening socket (new
    connections are refused, like a registry that is gone), `up()` listens again."""

    def __init__(self, target: str) -> None:
        parts = urllib.parse.urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._path = parts.path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for s in (source, sink):  # ends the other direction too; closing twice is harmless
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# -- helpers -------------------------------------------------------------------------------


def offline_categories(events: list[dict[str, Any]]) -> dict[str, str]:
    """Category per event_id from the offline pipeline (the same events, no Kafka)."""
    store, p = HistoryStore(), pipeline()
    return {e["event_id"]: store.apply(e, p).classification["category"] for e in events}


def produce_framed(
    env: Env, events: list[dict[str, Any]], schema_id: int, writer: dict[str, Any]
) -> None:
    """Produce events written with `writer`, Confluent-framed with `schema_id`."""
    raw = Encoder("raw", writer)
    produce(
        env.bootstrap,
        env.input,
        [(e["patient_id"].encode(), frame_confluent(schema_id, raw.encode(e))) for e in events],
    )


def confluent_settings(env: Env, url: str, **extra: str) -> Any:
    return env.settings(
        HER2_INPUT_FORMAT="confluent",
        HER2_OUTPUT_FORMAT="confluent",
        HER2_SCHEMA_REGISTRY_URL=url,
        **extra,
    )


# -- the tests -------------------------------------------------------------------------------


def test_confluent_framing_in_and_out_through_apicurio(env: Env, apicurio: Any) -> None:
    base = apicurio.ccompat_url
    client = SchemaRegistryClient(base)
    events = SyntheticGenerator(seed=21, id_prefix="apicurio").events(30)
    enc = encoder("confluent", client, f"{env.input}-value")
    produce(env.bootstrap, env.input, [(e["patient_id"].encode(), enc.encode(e)) for e in events])

    with (
        running(confluent_settings(env, base)) as svc,
        output_reader(env, output_format="confluent", registry=client) as reader,
    ):
        reader.wait(lambda r: len(r.classified_ids()) == len(events), what="classifications")
        reader.settle(0.5)
        assert (
            svc.metric(
                "her2_consumer_schema_registry_errors_total",
                {"operation": "get-schema", "kind": "unreachable"},
            )
            == 0
        )

    assert reader.records["dlq"] == []
    assert {c["event_id"]: c["category"] for c in reader.classifications()} == offline_categories(
        events
    )
    assert reader.alerts(), "alerts were published and read back through the registry"
    subjects = set(call(base, "GET", "/subjects"))
    assert f"{env.topics['classification']}-value" in subjects
    assert f"{env.topics['history']}-value" not in subjects, "the changelog is self-contained"
    # what the service registered is the shipped schema
    for out, name in (
        (reader.records["classification"][0], HER2_CLASSIFICATION),
        (reader.alerts()[0], HER2_ALERT),
    ):
        schema_id = int.from_bytes(out.raw[1:5], "big")
        registered = json.loads(call(base, "GET", f"/schemas/ids/{schema_id}")["schema"])
        assert registered["name"] == raw_schema(name)["name"]
        assert [f["name"] for f in registered["fields"]] == [
            f["name"] for f in raw_schema(name)["fields"]
        ]


def test_an_evolved_lab_schema_passes_forward_transitive_and_is_processed(
    env: Env, apicurio: Any
) -> None:
    base = apicurio.ccompat_url
    subject = f"{env.input}-value"
    shipped = raw_schema(PATHOLOGY_RESULT)
    register(base, subject, shipped)
    set_compatibility(base, subject, "FORWARD_TRANSITIVE")

    evolved = copy.deepcopy(shipped)
    evolved["fields"].append({"name": "lab_site_code", "type": ["null", "string"], "default": None})
    status = next(f for f in evolved["fields"] if f["name"] == "report_status")
    status["type"]["symbols"].append("ADDENDUM")
    evolved_id = register(base, subject, evolved)  # the enum default makes this FORWARD-safe

    # the registry enforces the policy: a writer that drops a field the reader needs is refused
    dropped = copy.deepcopy(shipped)
    dropped["fields"] = [f for f in dropped["fields"] if f["name"] != "accession_id"]
    assert refused(base, subject, dropped) == 409
    # and the issue-5 failure: without enum defaults (previous release), the added symbol is
    # refused under FORWARD_TRANSITIVE instead of being dead-lettered at run time
    old_subject = f"{env.input}-old-value"
    old = json.loads((PREVIOUS_SCHEMAS / "pathology_result.avsc").read_text())
    register(base, old_subject, old)
    set_compatibility(base, old_subject, "FORWARD_TRANSITIVE")
    old_evolved = copy.deepcopy(old)
    next(f for f in old_evolved["fields"] if f["name"] == "report_status")["type"][
        "symbols"
    ].append("ADDENDUM")
    assert refused(base, old_subject, old_evolved) == 409

    events = [
        {**make_event(f"evo-e{i}", f"evo-p{i}", f"evo-a{i}", minutes=i), "lab_site_code": "L7"}
        for i in range(3)
    ]
    events[2]["report_status"] = "ADDENDUM"
    produce_framed(env, events, evolved_id, evolved)

    with (
        running(confluent_settings(env, base)),
        output_reader(
            env, output_format="confluent", registry=SchemaRegistryClient(base)
        ) as reader,
    ):
        reader.wait(lambda r: len(r.classified_ids()) == 3, what="three classifications")
        reader.settle(0.3)
    assert reader.records["dlq"] == []
    statuses = {c["event_id"]: c["report_status"] for c in reader.classifications()}
    assert statuses == {"evo-e0": "FINAL", "evo-e1": "FINAL", "evo-e2": "PRELIMINARY"}


def test_a_java_style_producer_with_schema_references_is_processed(
    env: Env, apicurio: Any, unique_name: Callable[[str], str]
) -> None:
    base = apicurio.ccompat_url
    prefix = unique_name("ref") + "."
    schema_id = register_java_style(
        base, f"{env.input}-value", raw_schema(PATHOLOGY_RESULT), prefix
    )
    answer = call(base, "GET", f"/schemas/ids/{schema_id}")
    assert answer.get("references"), "the registry serves the value schema with references"

    events = SyntheticGenerator(seed=22, id_prefix="javaref").events(25)
    produce_framed(env, events, schema_id, raw_schema(PATHOLOGY_RESULT))

    with (
        running(confluent_settings(env, base)),
        output_reader(
            env, output_format="confluent", registry=SchemaRegistryClient(base)
        ) as reader,
    ):
        reader.wait(
            lambda r: len(r.classified_ids()) == len(events) or bool(r.records["dlq"]),
            what="classifications of every Java-serialized record",
        )
        reader.settle(0.3)
    reasons = collections.Counter(
        d.headers.get("her2.errors.reason") for d in reader.records["dlq"]
    )
    assert reasons == collections.Counter(), f"dead-lettered: {reasons}"
    assert {c["event_id"]: c["category"] for c in reader.classifications()} == offline_categories(
        events
    )


def test_registry_down_at_start_up_and_mid_stream_records_wait_never_dead_lettered(
    env: Env, apicurio: Any
) -> None:
    base = apicurio.ccompat_url
    subject = f"{env.input}-value"
    shipped = raw_schema(PATHOLOGY_RESULT)
    first_id = register(base, subject, shipped)
    first = [make_event(f"down-e{i}", f"down-p{i % 2}", f"down-a{i}", minutes=i) for i in range(4)]
    produce_framed(env, first, first_id, shipped)

    with Forwarder(base) as registry:  # down: nothing listens on its port yet
        settings = confluent_settings(env, registry.url, HER2_SCHEMA_REGISTRY_TIMEOUT_SECONDS="2")
        with (
            running(settings) as svc,
            output_reader(
                env, output_format="confluent", registry=SchemaRegistryClient(base)
            ) as reader,
        ):
            errors = "her2_consumer_schema_registry_errors_total"
            reader.wait(
                lambda r: svc.metric(errors, {"operation": "register", "kind": "unreachable"}) >= 2,
                what="start-up retries of the unreachable registry",
            )
            assert reader.records["classification"] == []
            assert committed(env.bootstrap, env.group, env.input) == {0: None, 1: None}

            registry.up()
            reader.wait(lambda r: len(r.classified_ids()) == 4, what="records after start-up")

            # mid-stream: a lab starts writing with a new schema id while the registry is gone
            registry.down()
            evolved = copy.deepcopy(shipped)
            evolved["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
            second_id = register(base, subject, evolved)  # straight to the registry
            second = [
                {
                    **make_event(f"down-f{i}", f"down-p{i % 2}", f"down-b{i}", minutes=10 + i),
                    "note": None,
                }
                for i in range(3)
            ]
            produce_framed(env, second, second_id, evolved)
            before = svc.metric(errors, {"operation": "get-schema", "kind": "unreachable"})
            reader.wait(
                lambda r: (
                    svc.metric(errors, {"operation": "get-schema", "kind": "unreachable"})
                    >= before + 2
                ),
                what="retries of the new schema id",
            )
            reader.poll()
            assert len(reader.classified_ids()) == 4, "nothing past the unreadable records"
            assert reader.records["dlq"] == []

            registry.up()
            reader.wait(lambda r: len(r.classified_ids()) == 7, what="records after the outage")
            reader.settle(0.3)
            assert reader.records["dlq"] == []
            assert svc.metric("her2_consumer_events_total", {"outcome": "dead_lettered"}) == 0
    total = committed(env.bootstrap, env.group, env.input)
    assert sum(v or 0 for v in total.values()) == 7


def test_a_registry_that_lost_its_data_leaves_every_history_readable(
    env: Env, apicurio: Any, empty_apicurio: Any
) -> None:
    """Issue 14, item 3: with Confluent output the changelog used to be framed with registry
    ids, so a service restarted against a registry that lost its data read every changelog
    record as "unreadable; skipped" and forgot every patient. Run 1 against `apicurio`, run 2
    against `empty_apicurio` (which never saw run 1's ids): the cancellation of run 2 must
    retract the alerts run 1 opened, exactly as the offline run over the same events."""
    unreadable = "her2_consumer_history_unreadable_records_total"
    patients = [f"lost-p{i}" for i in range(3)]
    first = [
        make_event(f"lost-e{i}", patient, f"lost-a{i}", minutes=i, planned=["trastuzumab"])
        for i, patient in enumerate(patients)
    ] + [
        make_event(f"lost-e{i + 3}", patient, f"lost-b{i}", minutes=10 + i, score="ZERO")
        for i, patient in enumerate(patients)
    ]
    cancels = [
        {
            **make_event(f"lost-c{i}", patient, f"lost-a{i}", minutes=30 + i),
            "report_status": "CANCELLED",
        }
        for i, patient in enumerate(patients)
    ]
    expected = offline_alerts(first + cancels)
    retracted = {t for t in expected if t[2] == "RETRACTED"}
    assert {t[0] for t in retracted} == {c["event_id"] for c in cancels}, "the case retracts"

    # run 1: lab and service use the registry that will be lost
    old = SchemaRegistryClient(apicurio.ccompat_url)
    enc = encoder("confluent", old, f"{env.input}-value")
    produce(env.bootstrap, env.input, [(e["patient_id"].encode(), enc.encode(e)) for e in first])
    with (
        running(confluent_settings(env, apicurio.ccompat_url)) as svc,
        output_reader(env, output_format="confluent", registry=old) as reader,
    ):
        reader.wait(lambda r: len(r.classified_ids()) == len(first), what="run 1")
        reader.settle(0.5)
        assert svc.metric(unreadable) == 0
    assert reader.alert_triples() == {t for t in expected if t[0].startswith("lost-e")}
    opened = {a.value["alert_id"]: a.value["code"] for a in reader.alerts() if a.value}
    history = [r.raw for r in reader.records["history"] if r.raw]
    assert history, "run 1 wrote the changelog"
    assert all(raw[:2] == b"\xc3\x01" for raw in history), "changelog single-object framed"

    # run 2: the registry is a new, empty one; the lab re-registers its schema there
    ends = end_offsets(env.bootstrap, [t for k, t in env.topics.items() if k != "input"])
    new = SchemaRegistryClient(empty_apicurio.ccompat_url)
    assert call(empty_apicurio.ccompat_url, "GET", "/subjects") == [], "the registry is empty"
    enc = encoder("confluent", new, f"{env.input}-value")
    produce(env.bootstrap, env.input, [(e["patient_id"].encode(), enc.encode(e)) for e in cancels])
    with (
        running(confluent_settings(env, empty_apicurio.ccompat_url)) as svc,
        output_reader(env, output_format="confluent", registry=new, start_offsets=ends) as reader,
    ):
        reader.wait(
            lambda r: len(r.classified_ids()) == len(cancels) or svc.metric(unreadable) > 0,
            what="the cancellations of run 2",
        )
        reader.settle(0.5)
        assert svc.metric(unreadable) == 0, "changelog records unreadable after the registry loss"
        assert svc.metric("her2_consumer_events_total", {"outcome": "dead_lettered"}) == 0
    assert reader.records["dlq"] == []
    assert reader.alert_triples() == {t for t in expected if t[0].startswith("lost-c")}
    retracted_ids = {
        a.value["alert_id"] for a in reader.alerts() if a.value and a.value["status"] == "RETRACTED"
    }
    assert retracted_ids <= set(opened), "the retractions carry run 1's alert ids"
    assert {opened[i] for i in retracted_ids} == {t[1] for t in retracted}
