"""Fault injection (issue 5, fault 4): poison messages of every kind interleaved with good ones
under load; and records whose outputs are larger than a Kafka request (a crash loop this suite
found, see docs/fault-report.md).

Every poison record must land in the dead-letter topic with its original key, value and
headers and the error headers of design.md (the reason per kind), every good event must be
classified once with exactly the alerts of the offline run, and the consumer must never stop.
"""

from __future__ import annotations

import collections
import copy
import io
import json
import math
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from faults import (
    EOS,
    LogTail,
    Probe,
    Record,
    alerts_of,
    assert_delivery,
    check_alerts,
    classified_ids,
    delivery_counts,
    outputs,
    produce_records,
    record_result,
    stop_gracefully,
    wait_committed,
    wait_log,
)
from helpers import (
    Env,
    ServiceProcess,
    encoder,
    make_event,
    offline_alerts,
)

from consumer.avro.wire import frame_confluent
from consumer.tools.synthetic import SyntheticGenerator

pytestmark = pytest.mark.fault

PARTITIONS = 3
MAGIC_BYTES = {0x00, 0x01, 0xC3}  # Confluent, Confluent GUID, single-object

# kind -> (stage, reason) the DLQ headers must carry
POISON_KINDS: dict[str, tuple[str, str]] = {
    "garbage": ("decode", "unknown-magic-byte"),
    "wrong magic": ("decode", "unknown-magic-byte"),
    "truncated": ("decode", "avro-decode"),
    "trailing bytes": ("decode", "avro-decode"),
    "confluent guid framing": ("decode", "unsupported-framing"),
    "unknown schema id": ("decode", "unknown-schema-id"),
    "unknown fingerprint": ("decode", "unknown-fingerprint"),
    "incompatible writer schema": ("decode", "schema-resolution"),
    "schema-invalid": ("validate", "schema-validation"),
    "empty value": ("decode", "empty-value"),
}
_INCOMPATIBLE = {
    "type": "record",
    "name": "PathologyResult",
    "namespace": "health.her2",
    "fields": [{"name": "legacy_code", "type": "int"}],
}


def _register(base: str, subject: str, body: dict[str, Any]) -> int:
    """Register a schema with the registry's Confluent-compatible API; return its id."""
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{base}/subjects/{urllib.parse.quote(subject, safe='')}/versions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return int(json.loads(answer.read())["id"])


def _invalid_event(rng: random.Random, event: dict[str, Any], n: int) -> dict[str, Any]:
    """Valid Avro that check_event refuses (one broken rule per event)."""
    bad = copy.deepcopy(event)
    bad["event_id"] = f"{event['event_id']}-invalid-{n}"
    choice = n % 7
    if choice == 5:  # B4 of docs/fault-report.md: the Avro path enforces the JSON path's limits
        bad["specimen"] = {**(bad["specimen"] or {}), "body_site": "x" * 100_000}
    elif choice == 6:
        ctx = bad["clinical_context"] or {}
        bad["clinical_context"] = {**ctx, "planned_therapies": ["trastuzumab"] * 5_000}
    elif choice == 0:
        bad["patient_id"] = "   "
    elif choice == 1:
        bad["her2_ihc"] = {**(bad["her2_ihc"] or {}), "percent_cells_stained": 150.0}
    elif choice == 2:
        bad["er"] = {"percent_positive": math.nan, "result": None}
    elif choice == 3:
        ctx = bad["clinical_context"] or {}
        bad["clinical_context"] = {**ctx, "metastatic_chemotherapy_lines": -rng.randint(1, 9)}
    else:
        bad["her2_ish"] = {
            "probe_type": "DUAL",
            "her2_copies_per_cell": 4.0,
            "cep17_copies_per_cell": 2.0,
            "her2_cep17_ratio": 2.0,
            "cells_counted": 20,
            "recount_group": 9,
            "reported_result": None,
        }
    return bad


def _poison(
    kind: str, n: int, rng: random.Random, *, event: dict[str, Any], ids: dict[str, int]
) -> bytes | None:
    """The n-th poison value of `kind`, derived from `event` (encoded as single-object)."""
    valid = encoder().encode(event)
    body = valid[10:]
    if kind == "garbage":
        first = rng.choice([b for b in range(256) if b not in MAGIC_BYTES])
        return bytes([first]) + rng.randbytes(rng.randint(0, 200))
    if kind == "wrong magic":
        if n % 2:
            return b"\xc3" + bytes([rng.choice([b for b in range(256) if b != 0x01])]) + valid[2:]
        return bytes([rng.choice([b for b in range(256) if b not in MAGIC_BYTES])]) + valid[1:]
    if kind == "truncated":
        return valid[: rng.randint(1, len(valid) - 1)]
    if kind == "trailing bytes":
        return valid + rng.randbytes(rng.randint(1, 32))
    if kind == "confluent guid framing":
        return b"\x01" + rng.randbytes(16) + body
    if kind == "unknown schema id":
        return frame_confluent(rng.randint(1_000_000, 2**31 - 1), body)
    if kind == "unknown fingerprint":
        return b"\xc3\x01" + rng.randbytes(8) + body
    if kind == "incompatible writer schema":
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(_INCOMPATIBLE), {"legacy_code": n})
        return frame_confluent(ids["incompatible"], out.getvalue())
    if kind == "schema-invalid":
        return encoder().encode(_invalid_event(rng, event, n))
    if kind == "empty value":
        return None if n % 2 else b""
    raise AssertionError(kind)


Planned = tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str | None]
PER_KIND = 30


def _plan(rng: random.Random, good: list[dict[str, Any]], ids: dict[str, int]) -> list[Planned]:
    """(key, value, headers, poison kind or None) of every record, in produce order: the
    poison shuffled among the good events, which keep their per-patient order. Poison keys are
    mostly patients' keys, so that poison sits in the middle of patients' partitions."""
    enc = encoder()
    plan: list[Planned] = [(e["patient_id"].encode(), enc.encode(e), [], None) for e in good]
    for kind in POISON_KINDS:
        for n in range(PER_KIND):
            event = rng.choice(good)
            value = _poison(kind, n, rng, event=event, ids=ids)
            keyed = n % 3 or value is None  # Kafka refuses a record without key and value
            key = event["patient_id"].encode() if keyed else None
            plan.append((key, value, [("poison-kind", kind.encode())], kind))
    order = list(range(len(plan)))
    rng.shuffle(order)
    in_order = iter(plan[: len(good)])
    shuffled = [next(in_order) if plan[i][3] is None else plan[i] for i in order]
    return [
        (key, value, [*headers, ("trace-id", f"t-{i}".encode())], kind)
        for i, (key, value, headers, kind) in enumerate(shuffled)
    ]


def _check_dead_letters(
    dead_letters: list[Any], by_place: dict[tuple[int, int], Planned], input_topic: str
) -> int:
    """Every poison record in the DLQ once, untouched, with the headers and the reason of its
    kind; nothing else there. Return the number of dead letters."""
    seen: set[tuple[int, int]] = set()
    reasons: collections.Counter[tuple[str, str]] = collections.Counter()
    for letter in dead_letters:
        h = letter.headers
        place = (int(h["her2.errors.partition"]), int(h["her2.errors.offset"]))
        assert place not in seen, f"{place} dead-lettered twice"
        seen.add(place)
        key, value, headers, kind = by_place[place]
        assert kind is not None, f"a good event was dead-lettered: {h}"
        stage, reason = POISON_KINDS[kind]
        got = (h["her2.errors.stage"].decode(), h["her2.errors.reason"].decode())
        assert got == (stage, reason), kind
        assert h["her2.errors.topic"] == input_topic.encode()
        assert h["her2.errors.exception.class.name"] in (b"DecodeError", b"InvalidEvent")
        assert h["her2.errors.exception.message"], kind
        assert h["her2.errors.timestamp"].isdigit()
        assert letter.key == key, f"{kind}: key changed"
        assert letter.raw == value, f"{kind}: value changed"
        for name, original in headers:
            assert h.get(name) == original, f"{kind}: original header {name} lost"
        if key:
            assert key not in h["her2.errors.exception.message"], "no patient id in the message"
        reasons[(kind, reason)] += 1
    poison = {place for place, r in by_place.items() if r[3] is not None}
    assert seen == poison, f"{len(poison - seen)} poison records missing from the DLQ"
    assert reasons == {(k, r): PER_KIND for k, (_, r) in POISON_KINDS.items()}
    return len(seen)


def test_poison_messages_of_every_kind_under_load(
    env: Env,
    create_topics: Callable[..., list[str]],
    tmp_path: Path,
    apicurio: Any,
) -> None:
    """2,000 good events and 300 poison records (30 of each of 10 kinds), shuffled together
    and produced in bursts while one consumer runs."""
    started = time.monotonic()
    seed = 4004
    rng = random.Random(seed)  # noqa: S311 - seeded test data
    create_topics(env.input, partitions=PARTITIONS)
    good = SyntheticGenerator(seed=seed, id_prefix="poison").events(2000)

    # the session's real registry; an "unknown schema id" is an id never registered there
    legacy = {"schema": json.dumps(_INCOMPATIBLE)}
    ids = {"incompatible": _register(apicurio.ccompat_url, f"{env.input}-legacy-value", legacy)}
    records = _plan(rng, good, ids)
    environ = env.environ(
        HER2_SCHEMA_REGISTRY_URL=apicurio.ccompat_url, HER2_MAX_POLL_RECORDS="200"
    )
    bursts = [records[i : i + 460] for i in range(0, len(records), 460)]
    placed: list[tuple[int, int]] = []
    proc = ServiceProcess(environ, tmp_path, "poison")
    with proc, Probe(env.bootstrap) as probe:
        placed += produce_records(env.bootstrap, env.input, (r[:3] for r in bursts[0]))
        tail = LogTail(proc.stderr_path)
        wait_log(tail, lambda t: t.count("batch committed") >= 1, 45, "a first batch", proc)
        for burst in bursts[1:]:  # more arrive while it works through the first burst
            placed += produce_records(env.bootstrap, env.input, (r[:3] for r in burst))
        wait_committed(probe, env.group, env.input, 90, alive=lambda: proc.proc.poll() is None)
        tail.read()
        stops = [e for e in tail.events if e.get("level") == "error"]
        assert not stops, f"the consumer logged errors: {stops[:3]}"
        assert proc.proc.poll() is None, "the consumer never stops"
        assert stop_gracefully(proc) == 0, proc.logs()[-3000:]

    out = outputs(env)
    dead_lettered = _check_dead_letters(
        out["dlq"], dict(zip(placed, records, strict=True)), env.input
    )
    verdict = check_alerts(alerts_of(out), offline_alerts(good))
    # no fault here: even at-least-once must deliver every good event's outputs exactly once
    classified = classified_ids(out)
    counts = delivery_counts(verdict, classified, (e["event_id"] for e in good))
    record_result(
        "poison messages under load",
        mode="at_least_once",
        seed=seed,
        good=len(good),
        poison=len(records) - len(good),
        dead_lettered=dead_lettered,
        poison_per_kind=dict.fromkeys(POISON_KINDS, PER_KIND),
        **counts,
        alerts=verdict.as_dict(),
        seconds=round(time.monotonic() - started, 1),
    )
    assert_delivery(EOS, verdict, classified, (e["event_id"] for e in good))


# -- records whose outputs are larger than a Kafka request ----------------------------------


def _oversized(case: str, prefix: str) -> list[tuple[bytes | None, bytes | None]]:
    enc = encoder()
    events = SyntheticGenerator(seed=77, id_prefix=prefix).events(200)
    if case == "undecodable value near the 1 MiB limit":
        # accepted by the broker (1 MiB + 12 bytes per batch), but its DLQ copy carries the
        # error headers on top and no longer fits a request
        return [(b"oversized", b"{" + b"x" * (1_048_400 - 1))]
    if case == "event with 6,000 prior HER2 results":
        # a HER2-low metastasis after an IHC 0 primary: the discordance alert's detail lists
        # every earlier sample, and the history kept that alert twice (emitted, active); since
        # B4 was fixed such an event is refused by validation (at most 1,000 items per array)
        prior = {
            "accession_id": "",
            "specimen": {**make_event("x", "x", "x")["specimen"], "site": "PRIMARY_BREAST"},
            "her2_ihc": {
                **make_event("x", "x", "x")["her2_ihc"],
                "score": "ZERO",
                "percent_cells_stained": 0.0,
                "staining_intensity": "NONE",
                "staining_completeness": "NONE",
            },
            "her2_ish": None,
        }
        priors = [{**prior, "accession_id": f"{prefix}-prior-{i}"} for i in range(6000)]
        event = make_event(
            f"{prefix}-e", f"{prefix}-p", f"{prefix}-a", site="DISTANT_METASTASIS", prior=priors
        )
        return [(event["patient_id"].encode(), enc.encode(event))]
    if case == "35 KB event: 10,000-character accession id, 1,000 prior results":
        event = _oversized_event(prefix)
        return [(event["patient_id"].encode(), enc.encode(event))]
    # one patient id (a placeholder like UNKNOWN) on 40 accessions: the patient's history
    # record grows quadratically (each alert's detail lists the other samples, and each
    # accession keeps its emitted and active alerts) and passes 1 MiB after ~32
    hot: list[tuple[bytes | None, bytes | None]] = []
    for i, event in enumerate(events[:40]):
        e = copy.deepcopy(event)
        e["patient_id"] = f"{prefix}-UNKNOWN"
        e["accession_id"] = f"{prefix}-acc-{i}"
        hot.append((e["patient_id"].encode(), enc.encode(e)))
    return hot


def _oversized_event(prefix: str) -> dict[str, Any]:
    """A 35 KB HER2-low metastasis after 1,000 IHC 0 samples whose accession id has 10,000
    characters: the discordance alert's detail repeats that id once per earlier sample, a
    10 MB alert."""
    prior = {
        "accession_id": "",
        "specimen": {**make_event("x", "x", "x")["specimen"], "site": "PRIMARY_BREAST"},
        "her2_ihc": {
            **make_event("x", "x", "x")["her2_ihc"],
            "score": "ZERO",
            "percent_cells_stained": 0.0,
            "staining_intensity": "NONE",
            "staining_completeness": "NONE",
        },
        "her2_ish": None,
    }
    priors = [{**prior, "accession_id": f"p{i}"} for i in range(1000)]
    return make_event(
        f"{prefix}-e", f"{prefix}-p", "A" * 10_000, site="DISTANT_METASTASIS", prior=priors
    )


@pytest.mark.parametrize(
    "case",
    [
        "undecodable value near the 1 MiB limit",
        "event with 6,000 prior HER2 results",
        "35 KB event: 10,000-character accession id, 1,000 prior results",
        "one patient id on 40 accessions",
    ],
)
def test_a_record_whose_outputs_exceed_a_kafka_request_does_not_stop_the_consumer(
    case: str,
    env: Env,
    create_topics: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    """Found by this suite (docs/fault-report.md): such an output used to fail with
    MessageSizeTooLargeError on every attempt, the service stopped without committing and every
    restart hit the same record (a crash loop; the partition stuck for good). Now every record
    must be accounted for (classified, or dead-lettered at its offset) and the partition must
    move on: a sentinel event after them is classified, every offset committed, no exit."""
    create_topics(env.input, partitions=1)
    prefix = "big"
    sentinel = SyntheticGenerator(seed=78, id_prefix=f"{prefix}-s").events(1)[0]
    bad = _oversized(case, prefix)
    records: list[Record] = [(k, v, []) for k, v in bad]
    records.append((sentinel["patient_id"].encode(), encoder().encode(sentinel), []))
    produce_records(env.bootstrap, env.input, records)
    proc = ServiceProcess(env.environ(HER2_MAX_POLL_RECORDS="10"), tmp_path, "oversized")
    with proc, Probe(env.bootstrap) as probe:
        try:
            wait_committed(probe, env.group, env.input, 60, alive=lambda: proc.proc.poll() is None)
        finally:
            events = LogTail(proc.stderr_path).read()
            failures = sorted(
                {
                    f"{e.get('event')} ({e.get('error_type')})"
                    for e in events
                    if e.get("level") in ("warning", "error")
                    and not str(e.get("logger", "")).startswith("kafka")
                    and e.get("event") != "record dead-lettered"
                }
            )
        assert proc.proc.poll() is None, "the consumer never stops"
        assert stop_gracefully(proc) == 0, proc.logs()[-3000:]

    out = outputs(env)
    classified = classified_ids(out)
    assert sentinel["event_id"] in classified, "the partition moved on"
    dead = {int(d.headers["her2.errors.offset"]): d for d in out["dlq"]}
    accounted = sum(classified.values()) + len(dead)
    assert accounted == len(records), f"{accounted} of {len(records)} records accounted for"
    if case == "event with 6,000 prior HER2 results":  # B4: refused like the JSON path does
        assert [
            (d.headers["her2.errors.stage"], d.headers["her2.errors.reason"]) for d in dead.values()
        ] == [(b"validate", b"schema-validation")]
    for offset, letter in dead.items():
        h = letter.headers
        assert h["her2.errors.topic"] == env.input.encode()
        if letter.raw is None:  # the copy would not fit: the headers point at the input record
            assert records[offset][1] is not None
            assert b"does not fit" in h["her2.errors.exception.message"]
        else:
            assert letter.raw == records[offset][1], "dead letter bytes changed"
    record_result(
        "output larger than a Kafka request",
        case=case,
        records=len(records),
        classified=sum(classified.values()),
        dead_lettered={
            o: (
                d.headers["her2.errors.stage"].decode(),
                d.headers["her2.errors.reason"].decode(),
                "value kept" if d.raw is not None else "value dropped",
            )
            for o, d in dead.items()
        },
        service_warnings=failures,
    )


def test_a_dead_lettered_event_leaves_no_trace_in_the_patients_history(
    env: Env,
    create_topics: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    """A HER2-low metastasis whose discordance alert cannot be published (10,000-character
    accession id x 1,000 earlier samples), then an IHC 0 primary of the same patient. The
    second event's alerts must be those of the offline run: without the first event if it was
    dead-lettered, with it if it was classified.

    Found by this suite (docs/fault-report.md): the service applied the event to the patient's
    history before it found the outputs too large and dead-lettered it, so the second event got
    a T-DXd eligibility alert (TDXD-LOW-DB04) and a discordance alert from a HER2-low result
    that was never classified, instead of RT-ALL-ZERO and RT-METASTATIC-SITE."""
    create_topics(env.input, partitions=1)
    first = _oversized("35 KB event: 10,000-character accession id, 1,000 prior results", "trace")
    low = next(iter(first))
    zero = make_event(
        "trace-zero",
        "trace-p",
        "trace-y",
        minutes=10,
        site="PRIMARY_BREAST",
        score="ZERO",
        percent=0.0,
        intensity="NONE",
        completeness="NONE",
    )
    produce_records(
        env.bootstrap,
        env.input,
        [(b"trace-p", low[1], []), (b"trace-p", encoder().encode(zero), [])],
    )
    proc = ServiceProcess(env.environ(), tmp_path, "trace")
    with proc, Probe(env.bootstrap) as probe:
        wait_committed(probe, env.group, env.input, 60, alive=lambda: proc.proc.poll() is None)
        assert stop_gracefully(proc) == 0, proc.logs()[-3000:]
    out = outputs(env)
    assert "trace-zero" in classified_ids(out)
    first_event = _oversized_event("trace")
    dead_lettered = bool(out["dlq"])
    history = [zero] if dead_lettered else [first_event, zero]
    expected = {t for t in offline_alerts(history) if t[0] == "trace-zero"}
    got = {
        (a.value["event_id"], a.value["code"], a.value["status"])
        for a in alerts_of(out)
        if a.value and a.value["event_id"] == "trace-zero"
    }
    record_result(
        "dead-lettered event leaves no trace",
        first_event_dead_lettered=dead_lettered,
        expected=sorted(c for _, c, _ in expected),
        published=sorted(c for _, c, _ in got),
    )
    assert got == expected
