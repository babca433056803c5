"""Fault injection (issue 5, fault 5): a hostile-input fuzz run against one consumer process.

10,000 hostile payloads (seeded) interleaved with 2,000 valid events on 3 partitions:

- absurd but well-formed Avro (2,000): huge, negative, NaN and infinite numbers, ints beyond
  32 bits, dates and timestamps far in the future or past (some not representable), 10,000- and
  100,000-character strings, odd Unicode, up to 1,000 prior HER2 results, 1,000-item arrays,
  empty or blank ids;
- mutations of valid payloads (3,500): bit flips, inserted, deleted and duplicated bytes,
  truncations, appended tails, varints overwritten with huge ones;
- huge lengths (1,000): a string length or array count in an otherwise valid payload replaced
  by a huge, negative or over-long varint;
- framings (1,000): wrong magic bytes, Confluent (no registry configured) and Confluent-GUID
  framing, unknown fingerprints, headers alone, truncated headers, empty values;
- random bytes (2,500): with or without a valid single-object header in front.

Checks: the process never exits or stalls (per-poll progress sampled), its RSS stays within
RSS_GROWTH_BOUND of the warmed-up baseline, and every input offset is accounted for: either
a dead letter naming that partition and offset (with the reason the offline decoder predicts)
or a classification (the multiset of classified event ids equals the offline prediction), so
count in = classified + dead-lettered. The valid events' alerts equal the offline run's.

Hostile payloads stay below what triggers the known output-size bug (docs/fault-report.md):
at most 1,000 priors, one patient per absurd event, and no more than 20 priors on an event
whose accession id is long (a 10,000-character accession id x 1,000 priors makes a 35 KB event
whose discordance alert is 10 MB); test_faults_poison.py reproduces that bug on purpose.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import io
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import pytest
from faults import (
    EOS,
    LogTail,
    Probe,
    RssSampler,
    alerts_of,
    assert_delivery,
    check_alerts,
    delivery_counts,
    outputs,
    produce_records,
    record_result,
    stop_gracefully,
    wait_log,
)
from helpers import Env, Out, ServiceProcess, encoder, offline_alerts

from consumer.avro.codec import Decoder
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import DEFAULT_MAX_EVENT_TIME_SKEW, check_event
from consumer.errors import RecordError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema, raw_schema
from consumer.runtime.routing import REASON_MISROUTED, patient_key
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

pytestmark = pytest.mark.fault

PARTITIONS = 3
SEED = 5005
COUNTS = {"absurd": 2000, "mutation": 3500, "huge length": 1000, "framing": 1000, "random": 2500}
VALID = 2000
RSS_GROWTH_BOUND = 128 * 1024 * 1024  # bytes over the warmed-up baseline (observed: ~35 MiB)
STALL_BOUND_S = 20.0  # longest time a partition has uncommitted input and no commit progress
MAX_PAYLOAD = 512 * 1024  # well under a Kafka request (see the module docstring)

_EPOCH_DAY = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FLOATS = (1e308, -1e308, 1e6, -1.0, -0.0, 100.0000001, math.nan, math.inf, -math.inf, 5e-324)
_INTS = (-1, 0, 2**31 - 1, -(2**31), 2**31, 2**40, -(2**62), 10**6)
_FAR_TIMES = (
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    dt.datetime(1, 1, 2, tzinfo=dt.UTC),
    2**62,  # epoch millis beyond any datetime
    -(2**62),
    2**63 - 1,
)
_FAR_DATES = (dt.date(9999, 12, 31), dt.date(1, 1, 1), 2**31 - 1, -(2**31), 10**12)
_ODD_TEXT = ("\x00", "\u202e", "\U0001f9ec", "e\u0301", "\ufeff", "\n", "'\";--", "\udcff")


# -- a loose writer: the reader schema with no logical types and every int a long (the same
# varint on the wire), so that dates and ints can hold any 64-bit value ---------------------


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return "long" if schema == "int" else schema


_LOOSE = fastavro.parse_schema(_strip_logical(copy.deepcopy(raw_schema(PATHOLOGY_RESULT))))


def _wire(obj: Any) -> Any:
    """Dates to days and timestamps to millis (ints pass through: they may be absurd)."""
    if isinstance(obj, dt.datetime):
        return (obj - _EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(obj, dt.date):
        return (obj - _EPOCH_DAY).days
    if isinstance(obj, dict):
        return {k: _wire(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_wire(v) for v in obj]
    return obj


def _text(rng: random.Random, size: int) -> str:
    """`size` characters, plain or odd Unicode (no lone surrogates: Avro strings are UTF-8)."""
    if rng.random() < 0.5:
        return "x" * size
    alphabet = [c for c in _ODD_TEXT if not 0xD800 <= ord(c[0]) <= 0xDFFF] + ["a", "Z", "7"]
    chunk = "".join(rng.choice(alphabet) for _ in range(97))
    return (chunk * (size // len(chunk) + 1))[:size]


# -- hostile payloads ----------------------------------------------------------------------


class Hostile:
    """Seeded source of hostile payloads."""

    def __init__(self, rng: random.Random, bases: list[dict[str, Any]], prefix: str) -> None:
        self.rng = rng
        self.bases = bases
        self.prefix = prefix
        self.enc = encoder()
        self.valid = [self.enc.encode(e) for e in bases]
        self.header = self.valid[0][:10]  # single-object marker + the reader's fingerprint
        self.n = 0

    def loose(self, event: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, _LOOSE, _wire(event))
        return self.header + out.getvalue()

    # absurd but well-formed ----------------------------------------------------------------

    def absurd(self) -> tuple[bytes | None, bytes]:
        rng = self.rng
        while True:
            self.n += 1
            e = copy.deepcopy(rng.choice(self.bases))
            e["event_id"] = f"{self.prefix}-abs-{self.n}"
            e["patient_id"] = f"{self.prefix}-absp-{self.n}"  # one patient each: bounded history
            e["accession_id"] = f"{self.prefix}-absa-{self.n}"
            for _ in range(rng.randint(1, 3)):
                rng.choice(self._absurdities)(self, e)
            if len(e["accession_id"]) > 100:  # long ids x many priors: the known size bug
                e["prior_her2_results"] = e["prior_her2_results"][:20]
            value = self.loose(e)
            if len(value) <= MAX_PAYLOAD:
                return e["patient_id"].encode(), value

    def _numbers(self, e: dict[str, Any]) -> None:
        rng = self.rng
        ihc = e["her2_ihc"] or {}
        e["her2_ihc"] = {**_IHC_NONE, **ihc, "percent_cells_stained": rng.choice(_FLOATS)}
        e["er"] = {
            "percent_positive": rng.choice(_FLOATS),
            "result": rng.choice([None, "POSITIVE"]),
        }
        e["pr"] = {"percent_positive": rng.choice(_FLOATS), "result": None}

    def _ish(self, e: dict[str, Any]) -> None:
        rng = self.rng
        e["her2_ish"] = {
            "probe_type": rng.choice(["DUAL", "SINGLE", None]),
            "her2_copies_per_cell": rng.choice(_FLOATS),
            "cep17_copies_per_cell": rng.choice((*_FLOATS, 0.0)),
            "her2_cep17_ratio": rng.choice((*_FLOATS, None)),
            "cells_counted": rng.choice(_INTS),
            "recount_group": rng.choice((*_INTS, 3, 6)),
            "reported_result": rng.choice(["AMPLIFIED", "EQUIVOCAL", None]),
        }

    def _lines(self, e: dict[str, Any]) -> None:
        ctx = e["clinical_context"] or dict(_CTX_NONE)
        for name in (
            "metastatic_chemotherapy_lines",
            "metastatic_endocrine_therapy_lines",
            "metastatic_anti_her2_lines",
        ):
            ctx[name] = self.rng.choice(_INTS)
        e["clinical_context"] = ctx

    def _specimen(self, e: dict[str, Any]) -> None:
        spec = e["specimen"] or dict(_SPECIMEN_NONE)
        spec["cold_ischemia_minutes"] = self.rng.choice(_INTS)
        spec["fixation_hours"] = self.rng.choice(_FLOATS)
        e["specimen"] = spec

    def _times(self, e: dict[str, Any]) -> None:
        rng = self.rng
        e["event_time"] = rng.choice(_FAR_TIMES)
        spec = e["specimen"] or dict(_SPECIMEN_NONE)
        spec["collection_date"] = rng.choice(_FAR_DATES)
        e["specimen"] = spec
        ctx = e["clinical_context"] or dict(_CTX_NONE)
        for name in (
            "adjuvant_chemotherapy_end_date",
            "perioperative_anti_her2_end_date",
            "recurrence_date",
        ):
            ctx[name] = rng.choice((*_FAR_DATES, None))
        e["clinical_context"] = ctx

    def _representable_far_dates(self, e: dict[str, Any]) -> None:
        """Far dates a datetime can hold, so that they decode and reach the pipeline."""
        rng = self.rng
        e["event_time"] = rng.choice(_FAR_TIMES[:2])
        spec = e["specimen"] or dict(_SPECIMEN_NONE)
        spec["collection_date"] = rng.choice(_FAR_DATES[:2])
        e["specimen"] = spec
        ctx = e["clinical_context"] or dict(_CTX_NONE)
        for name in (
            "adjuvant_chemotherapy_end_date",
            "perioperative_anti_her2_end_date",
            "recurrence_date",
        ):
            ctx[name] = rng.choice(_FAR_DATES[:2])
        e["clinical_context"] = ctx

    def _long_strings(self, e: dict[str, Any]) -> None:
        rng = self.rng
        size = 100_000 if rng.random() < 0.05 else rng.choice([10_000, 10_001])
        target = rng.choice(["body_site", "fixative", "reported_text", "source", "ids"])
        if target == "ids":
            e["patient_id"] = f"{e['patient_id']}-" + _text(rng, 10_000)
            e["accession_id"] = f"{e['accession_id']}-" + _text(rng, 10_000)
        elif target == "source":
            e["source_system"] = _text(rng, size)
        elif target == "reported_text":
            e["her2_ihc"] = {
                **_IHC_NONE,
                **(e["her2_ihc"] or {}),
                "reported_text": _text(rng, size),
            }
        else:
            spec = e["specimen"] or dict(_SPECIMEN_NONE)
            spec[target] = _text(rng, size)
            e["specimen"] = spec

    def _deep_priors(self, e: dict[str, Any]) -> None:
        sample = {
            "accession_id": "",
            "specimen": {**_SPECIMEN_NONE, "site": "PRIMARY_BREAST"},
            "her2_ihc": {**_IHC_NONE, "score": self.rng.choice(["ZERO", "ONE_PLUS", None])},
            "her2_ish": None,
        }
        deep = self.rng.random() < 0.25
        count = self.rng.randint(100, 1000) if deep else self.rng.randint(2, 60)
        e["prior_her2_results"] = [
            {**sample, "accession_id": f"{self.prefix}-prior-{self.n}-{i}"} for i in range(count)
        ]

    def _arrays(self, e: dict[str, Any]) -> None:
        ctx = e["clinical_context"] or dict(_CTX_NONE)
        ctx["planned_therapies"] = [self.rng.choice(["Enhertu", "x" * 50, ""]) for _ in range(1000)]
        ctx["clinical_flags"] = ["TRIPLE_NEGATIVE_LIKE_BEHAVIOR"] * 1000
        e["clinical_context"] = ctx

    def _odd_ids(self, e: dict[str, Any]) -> None:
        rng = self.rng
        choice = rng.randint(0, 3)
        if choice == 0:
            e[rng.choice(["event_id", "patient_id", "accession_id"])] = rng.choice(["", "  ", "\t"])
        elif choice == 1:
            e["patient_id"] = f"{e['patient_id']}{rng.choice(_ODD_TEXT[:-1])}"
        elif choice == 2:
            e["report_status"] = rng.choice(["CANCELLED", "PRELIMINARY", "CORRECTED"])
        else:
            for name in ("specimen", "her2_ihc", "her2_ish", "er", "pr", "clinical_context"):
                e[name] = None

    _absurdities = (
        _numbers,
        _ish,
        _lines,
        _specimen,
        _times,
        _representable_far_dates,
        _long_strings,
        _deep_priors,
        _arrays,
        _odd_ids,
    )

    # mutations of valid bytes ------------------------------------------------------------

    def mutation(self) -> tuple[bytes | None, bytes]:
        rng = self.rng
        i = rng.randrange(len(self.bases))
        data = bytearray(self.valid[i])
        for _ in range(rng.randint(1, 4)):
            kind = rng.randint(0, 6)
            pos = rng.randrange(len(data)) if data else 0
            if kind == 0 and data:
                for _ in range(rng.randint(1, 8)):
                    bit = rng.randrange(len(data) * 8)
                    data[bit // 8] ^= 1 << (bit % 8)
            elif kind == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 16))
            elif kind == 2:
                del data[pos : pos + rng.randint(1, 16)]
            elif kind == 3:
                data[pos:pos] = data[pos : pos + rng.randint(1, 64)]
            elif kind == 4:
                del data[rng.randint(0, len(data)) :]
            elif kind == 5:
                data += rng.randbytes(rng.randint(1, 64))
            else:
                data[pos : pos + rng.randint(1, 3)] = _huge_varint(rng)
        return self.bases[i]["patient_id"].encode(), bytes(data)

    # huge lengths and counts at known places ---------------------------------------------

    def huge_length(self) -> tuple[bytes | None, bytes]:
        rng = self.rng
        base = rng.choice(self.bases)
        e = copy.deepcopy(base)
        marker = "MARKER-0123456789"  # 17 characters: its length varint is 0x22
        e["source_system"] = marker
        ctx = e["clinical_context"] or dict(_CTX_NONE)
        ctx["planned_therapies"] = [marker, marker]
        e["clinical_context"] = ctx
        data = bytearray(self.enc.encode(e))
        first = data.index(marker.encode())
        where = rng.randint(0, 3)
        if where == 0:  # the event id's length (the first byte of the body)
            end = 11
            while data[end - 1] & 0x80:
                end += 1
            data[10:end] = _huge_varint(rng)
        elif where == 1:  # source_system's length
            assert data[first - 1] == 0x22
            data[first - 1 : first] = _huge_varint(rng)
        else:  # planned_therapies' block count (0x04: two items), or a negative count + size
            second = data.index(marker.encode(), first + 1)
            assert data[second - 2 : second] == b"\x04\x22"
            count = _huge_varint(rng) if where == 2 else _zigzag(-rng.choice([2, 2**31, 2**62]))
            size = b"" if where == 2 else _huge_varint(rng)
            data[second - 2 : second - 1] = count + size
        return base["patient_id"].encode(), bytes(data)

    # framings ----------------------------------------------------------------------------

    def framing(self) -> tuple[bytes | None, bytes | None]:
        rng = self.rng
        i = rng.randrange(len(self.bases))
        key = self.bases[i]["patient_id"].encode()
        body = self.valid[i][10:]
        kind = rng.randint(0, 7)
        if kind == 0:
            return key, bytes([rng.choice([b for b in range(256) if b not in (0, 1, 0xC3)])]) + body
        if kind == 1:
            return key, b"\x01" + rng.randbytes(16) + body
        if kind == 2:
            return key, b"\x00" + rng.randbytes(4) + body
        if kind == 3:
            return key, b"\xc3\x01" + rng.randbytes(8) + body
        if kind == 4:
            return key, self.header
        if kind == 5:
            return key, rng.choice([b"\xc3", b"\xc3\x01", b"\x00", b"\x00\x00\x00", b"\x01"])
        if kind == 6:
            return key, rng.choice([b"", None])
        return key, b"\xc3" + bytes([rng.randrange(256)]) + body

    # random bytes ------------------------------------------------------------------------

    def random_bytes(self) -> tuple[bytes | None, bytes]:
        rng = self.rng
        size = rng.choice([rng.randint(0, 64), rng.randint(0, 512), rng.randint(512, 4096)])
        data = rng.randbytes(size)
        roll = rng.random()
        if roll < 0.4:
            data = self.header + data
        elif roll < 0.5:
            data = b"\x00" + data
        key = rng.choice([None, rng.randbytes(rng.randint(1, 40))])
        return key, data or (b"" if key else b"\x7f")


_IHC_NONE: dict[str, Any] = {
    "score": None,
    "percent_cells_stained": None,
    "staining_intensity": None,
    "staining_completeness": None,
    "antibody_clone": None,
    "assay_type": None,
    "controls_documented": None,
    "reported_text": None,
}
_SPECIMEN_NONE: dict[str, Any] = {
    "site": "UNKNOWN",
    "body_site": None,
    "collection_date": None,
    "cold_ischemia_minutes": None,
    "fixation_hours": None,
    "fixative": None,
    "decalcified": None,
}
_CTX_NONE: dict[str, Any] = {
    "disease_setting": "METASTATIC",
    "menopausal_status": None,
    "metastatic_chemotherapy_lines": None,
    "metastatic_endocrine_therapy_lines": None,
    "metastatic_anti_her2_lines": None,
    "adjuvant_chemotherapy_end_date": None,
    "perioperative_anti_her2_end_date": None,
    "recurrence_date": None,
    "planned_therapies": [],
    "interstitial_lung_disease_history": None,
    "clinical_flags": [],
}


def _zigzag(n: int) -> bytes:
    """Avro's long encoding of `n` (zig-zag, then base-128 varint)."""
    z = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _huge_varint(rng: random.Random) -> bytes:
    """A huge or negative length, or an over-long varint."""
    return rng.choice(
        [
            _zigzag(2**31),
            _zigzag(2**40),
            _zigzag(2**62),
            _zigzag(2**63 - 1),
            _zigzag(-(2**63)),
            _zigzag(-1),
            b"\xff" * 12 + b"\x01",
        ]
    )


# -- the offline prediction ----------------------------------------------------------------


def _predict(records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, str]]:
    """("ok", event_id) or ("dlq", "stage/reason") per (key, value), from the service's own
    decoder and validation (no registry: Confluent framing is dead-lettered as unsupported),
    then its routing check: records are placed by kafka-python's default partitioner (murmur2
    of the key), so a valid event is misrouted exactly when its key is not its patient_id (a
    mutation that changed the patient id, random bytes that happen to decode, a null key);
    then the history the service keeps (its own store and pipeline, in production order, which
    is each patient's order on its partition): a mutation that kept its base's event_id but
    changed the report after that report was accepted is `event-id-reused`."""
    decoder = Decoder("auto", parsed_schema(PATHOLOGY_RESULT))
    store, pipeline = HistoryStore(), Pipeline(load_ruleset())
    found = []
    for key, value in records:
        try:
            event = check_event(decoder.decode(value), utc_now(), DEFAULT_MAX_EVENT_TIME_SKEW)
            if key != patient_key(event["patient_id"]):
                found.append(("dlq", f"validate/{REASON_MISROUTED}"))
                continue
            store.apply(event, pipeline)
        except RecordError as exc:
            found.append(("dlq", f"{exc.stage}/{exc.reason}"))
        else:
            found.append(("ok", event["event_id"]))
    return found


# -- the test ------------------------------------------------------------------------------


Plan = list[tuple[bytes | None, bytes | None, str]]  # key, value, category


def _payloads(prefix: str) -> tuple[Plan, list[dict[str, Any]]]:
    """The seeded run: hostile payloads and valid events shuffled together (valid events
    keep their per-patient order); also the valid events."""
    rng = random.Random(SEED)  # noqa: S311 - seeded test data
    valid = SyntheticGenerator(seed=SEED, id_prefix=f"{prefix}-v").events(VALID)
    bases = SyntheticGenerator(seed=SEED + 1, id_prefix=f"{prefix}-b").events(1500)
    hostile = Hostile(rng, bases, prefix)
    makers: dict[str, Callable[[], tuple[bytes | None, bytes | None]]] = {
        "absurd": hostile.absurd,
        "mutation": hostile.mutation,
        "huge length": hostile.huge_length,
        "framing": hostile.framing,
        "random": hostile.random_bytes,
    }
    enc = encoder()
    plan: Plan = [(e["patient_id"].encode(), enc.encode(e), "valid") for e in valid]
    for category, count in COUNTS.items():
        for _ in range(count):
            key, value = makers[category]()
            plan.append((key if key or value is not None else b"k", value, category))
    order = list(range(len(plan)))
    rng.shuffle(order)
    in_order = iter(plan[:VALID])
    return [next(in_order) if plan[i][2] == "valid" else plan[i] for i in order], valid


def _longest_stall(progress: list[tuple[float, dict[int, int], dict[int, int]]]) -> float:
    """Longest time one partition had uncommitted input and its commits did not move, from
    samples of (time, committed per partition, end offset per partition)."""
    longest = 0.0
    since: dict[int, float] = {}
    previous: dict[int, int] = {}
    for now, done, end in progress:
        for p, off in end.items():
            moved = done.get(p, 0) != previous.get(p, -1)
            if moved or done.get(p, 0) >= off:
                since[p] = now
            longest = max(longest, now - since.setdefault(p, now))
        previous = dict(done)
    return longest


@dataclass
class Accounting:
    """Where every input offset went."""

    dead: dict[tuple[int, int], str]  # place -> "stage/reason"
    classified: collections.Counter[str]  # event id -> classifications
    processing_errors: collections.Counter[str]  # category -> predicted ok, dead-lettered


def _account(
    out: dict[str, list[Out]],
    input_topic: str,
    by_place: dict[tuple[int, int], tuple[tuple[bytes | None, bytes | None, str], tuple[str, str]]],
) -> Accounting:
    """Match dead letters (by the partition and offset in their headers) and classifications
    (by event id) against the offline prediction of every input offset."""
    dead: dict[tuple[int, int], str] = {}
    for letter in out["dlq"]:
        h = letter.headers
        place = (int(h["her2.errors.partition"]), int(h["her2.errors.offset"]))
        assert place not in dead, f"offset {place} dead-lettered twice"
        assert h["her2.errors.topic"] == input_topic.encode()
        dead[place] = f"{h['her2.errors.stage'].decode()}/{h['her2.errors.reason'].decode()}"
        assert letter.raw == by_place[place][0][1], f"{place}: dead letter bytes changed"
    processing_errors: collections.Counter[str] = collections.Counter()
    mismatched = []
    expected_ids: collections.Counter[str] = collections.Counter()
    for place, ((_, _, category), (verdict, detail)) in by_place.items():
        if place in dead:
            if dead[place] == "process/processing-error" and verdict == "ok":
                processing_errors[category] += 1
            elif verdict != "dlq" or dead[place] != detail:
                mismatched.append((place, category, verdict, detail, dead[place]))
        elif verdict == "ok":
            expected_ids[detail] += 1
        else:
            mismatched.append((place, category, verdict, detail, "classified or missing"))
    assert not mismatched, f"{len(mismatched)} payloads not as predicted, e.g. {mismatched[:5]}"
    classified = collections.Counter(
        c.value["event_id"] for c in out["classification"] if c.value is not None
    )
    assert classified == expected_ids, "classified event ids differ from the prediction"
    assert len(by_place) == sum(classified.values()) + len(dead), "count in = classified + DLQ"
    return Accounting(dead, classified, processing_errors)


def test_hostile_input_fuzz_never_crashes_stalls_or_loses_a_payload(
    env: Env,
    create_topics: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    create_topics(env.input, partitions=PARTITIONS)
    records, valid = _payloads("fuzz")  # fixed ids: the same bytes every run
    predicted = _predict([(key, value) for key, value, _ in records])
    generated_s = time.monotonic() - started

    proc = ServiceProcess(env.environ(HER2_MAX_POLL_RECORDS="200"), tmp_path, "fuzz")
    # (monotonic, committed per partition, end offset per partition)
    progress: list[tuple[float, dict[int, int], dict[int, int]]] = []
    with proc, Probe(env.bootstrap) as probe, RssSampler(proc.proc.pid) as rss:
        tail = LogTail(proc.stderr_path)
        placed = produce_records(
            env.bootstrap, env.input, ((k, v, []) for k, v, _ in records[:2000])
        )
        wait_log(tail, lambda t: t.count("batch committed") >= 1, 45, "a first batch", proc)
        warm = time.monotonic()  # the RSS baseline: started, assigned, first batch done
        placed += produce_records(
            env.bootstrap, env.input, ((k, v, []) for k, v, _ in records[2000:])
        )
        deadline = time.monotonic() + 180
        while True:
            assert proc.proc.poll() is None, f"the consumer exited:\n{proc.logs()[-3000:]}"
            end = probe.end_offsets(env.input)
            done = probe.committed(env.group, env.input)
            progress.append((time.monotonic(), done, end))
            if sum(end.values()) == len(records) and all(
                done.get(p, 0) >= off for p, off in end.items()
            ):
                break
            assert time.monotonic() < deadline, f"not done in time: {done} of {end}"
            time.sleep(0.25)
        processing_s = time.monotonic() - warm
        tail.read()
        errors = [e for e in tail.events if e.get("level") in ("error", "critical")]
        assert not errors, f"the consumer logged errors: {errors[:3]}"
        assert stop_gracefully(proc) == 0, proc.logs()[-3000:]
    baseline, peak, final = rss.at(warm), rss.peak(after=warm), rss.samples[-1][1]
    longest_stall = _longest_stall(progress)
    assert longest_stall < STALL_BOUND_S, f"a partition made no progress for {longest_stall:.1f}s"
    assert peak - baseline < RSS_GROWTH_BOUND, f"RSS grew by {(peak - baseline) >> 20} MiB"

    out = outputs(env, timeout=120)
    by_place = dict(zip(placed, zip(records, predicted, strict=True), strict=True))
    seen = _account(out, env.input, by_place)

    # the valid events (patients of their own) got exactly the offline alerts
    valid_ids = {e["event_id"] for e in valid}
    valid_alerts = [a for a in alerts_of(out) if a.value and a.value["event_id"] in valid_ids]
    alerts = check_alerts(valid_alerts, offline_alerts(valid))
    valid_classified = collections.Counter({i: seen.classified[i] for i in valid_ids})
    counts = delivery_counts(alerts, valid_classified, valid_ids)
    record_result(
        "hostile-input fuzz",
        mode="at_least_once",
        seed=SEED,
        payloads=len(records),
        hostile=sum(COUNTS.values()),
        hostile_per_category=COUNTS,
        valid=VALID,
        classified=sum(seen.classified.values()),
        dead_lettered=len(seen.dead),
        reasons=dict(collections.Counter(seen.dead.values()).most_common()),
        processing_errors=dict(seen.processing_errors),
        rss_baseline_mib=round(baseline / 2**20, 1),
        rss_peak_mib=round(peak / 2**20, 1),
        rss_final_mib=round(final / 2**20, 1),
        longest_stall_s=round(longest_stall, 1),
        generate_s=round(generated_s, 1),
        processing_s=round(processing_s, 1),
        valid_alerts=alerts.as_dict(),
        **counts,
        seconds=round(time.monotonic() - started, 1),
    )
    assert_delivery(EOS, alerts, valid_classified, valid_ids)
