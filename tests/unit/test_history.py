"""The patient history's size (docs/fault-report.md, B3) and the lifecycle behaviour that its
compaction must keep: a redelivered event re-emits byte-identical alerts, a retraction carries
the id of the alert it retracts, and records written before the compaction restore unchanged.

B3: every accession entry kept two full copies of its last event's alerts (`emitted`, and
again in `active`), and alert details that list the patient's discordant sample pairs grow
with the square of the patient's samples, so a patient's record grew with the cube of its
accessions (6.7 MB at 64 accessions of one placeholder patient id, more than a Kafka request
from 32 on). Now an alert is stored once per entry and its stored detail is cut at
MAX_STORED_DETAIL characters.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from consumer.codec import Decoder, Encoder
from consumer.history import MAX_STORED_DETAIL, HistoryStore, active_alerts
from consumer.model import ACTIVE, RETRACTED
from consumer.pipeline import Pipeline
from consumer.resources import HER2_ALERT, PATIENT_HISTORY, parsed_schema
from consumer.rules import load_ruleset
from consumer.statestore import BACKENDS, StateDir, open_states
from consumer.synthetic import SyntheticGenerator

Record = dict[str, Any]
KAFKA_REQUEST_BYTES = 1_048_576  # the producer's max_request_size (consumer/service.py)


@pytest.fixture(scope="module")
def ruleset() -> Any:
    return load_ruleset()


class StoreFactory(Protocol):
    def __call__(self, *, clock: Callable[[], dt.datetime] | None = None) -> HistoryStore: ...


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """New HistoryStores on one committed-states backend (every test runs on each); the disk
    ones in a private StateDir under tmp_path, closed at the end."""
    directory = StateDir(tmp_path)
    made: list[HistoryStore] = []

    def make(*, clock: Callable[[], dt.datetime] | None = None) -> HistoryStore:
        states = open_states(request.param, directory, "p0")
        store = HistoryStore(clock=clock or ticking_clock(), states=states)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    directory.close()


def ticking_clock() -> Callable[[], dt.datetime]:
    """A deterministic clock: one second later at every call (created_at values differ)."""
    ticks = iter(range(10**9))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return lambda: start + dt.timedelta(seconds=next(ticks))


def history_codec() -> tuple[Encoder, Decoder]:
    schema = parsed_schema(PATIENT_HISTORY)
    return Encoder("single-object", schema), Decoder("auto", schema)


def one_patient(n: int) -> Iterator[Record]:
    """n varied synthetic reports under one placeholder patient id (an `UNKNOWN` from a lab
    system), one accession each: the case that made the record grow without bound."""
    for i, event in enumerate(SyntheticGenerator(seed=77, id_prefix="big").events(n)):
        e = copy.deepcopy(event)
        e["patient_id"] = "UNKNOWN"
        e["accession_id"] = f"acc-{i}"
        yield e


def test_the_history_of_one_patient_grows_linearly_with_its_accessions(
    ruleset: Any, make_store: StoreFactory
) -> None:
    """Encoded size after 16, 32 and 64 accessions. Linear growth: the 32 accessions from 33 to
    64 add at most 1.5 x per accession what the 16 from 17 to 32 added (cubic growth, before
    the fix: 4.0 x). Bound: each stored alert is at most its fixed fields plus MAX_STORED_DETAIL
    characters of detail, each entry holds a bounded number of alerts; measured here that puts
    64 accessions at about a third of a Kafka request (1 MiB), which they must stay under
    (before: 6.7 MB)."""
    enc, _ = history_codec()
    clock = ticking_clock()
    store = make_store(clock=clock)
    pipeline = Pipeline(ruleset, clock=clock)
    size: dict[int, int] = {}
    for n, event in enumerate(one_patient(64), start=1):
        store.apply(event, pipeline)
        if n in (16, 32, 64):
            state = store.get("UNKNOWN")
            assert state is not None
            size[n] = len(enc.encode(state))
    per_accession_17_32 = (size[32] - size[16]) / 16
    per_accession_33_64 = (size[64] - size[32]) / 32
    assert per_accession_33_64 <= 1.5 * per_accession_17_32, size
    assert size[64] < KAFKA_REQUEST_BYTES // 2, size

    state = store.get("UNKNOWN")
    assert state is not None
    stored = [a for entry in state["accessions"] for a in (*entry["emitted"], *entry["active"])]
    assert max(len(a["detail"]) for a in stored) <= MAX_STORED_DETAIL
    for entry in state["accessions"]:
        ids = [a["alert_id"] for a in entry["active"]]
        own = {a["alert_id"] for a in entry["emitted"] if a["status"] == ACTIVE}
        assert not own & set(ids), "an alert is stored once per entry"


def lifecycle_stream(seed: int, patients: int, count: int) -> list[Record]:
    """Synthetic reports (amendments, corrections, cancellations, preliminaries) squeezed onto
    a few patients, with 15 % redeliveries of recent events."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    squeezed: dict[str, str] = {}  # a generated patient's reports stay together
    events: list[Record] = []
    for event in SyntheticGenerator(seed=seed).events(count):
        e = copy.deepcopy(event)
        pid = squeezed.setdefault(e["patient_id"], f"P{rng.randrange(patients)}")
        e["patient_id"] = pid
        events.append(e)
        if rng.random() < 0.15:
            events.append(copy.deepcopy(rng.choice(events[-30:])))
    return events


def run(
    events: list[Record],
    ruleset: Any,
    make_store: StoreFactory,
    *,
    restore_at: int | None = None,
    as_old_records: bool = False,
) -> list[list[bytes]]:
    """The encoded alerts of every event. At `restore_at` the store is replaced by one restored
    from its encoded changelog records; `as_old_records` writes them as the code before the
    B3 fix did (`active` repeating the last event's ACTIVE alerts). Changed states are
    committed every 50 events, as the service does per batch."""
    alert_enc = Encoder("single-object", parsed_schema(HER2_ALERT))
    enc, dec = history_codec()
    clock = ticking_clock()
    pipeline = Pipeline(ruleset, clock=clock)
    store = make_store(clock=clock)
    out = []
    for i, event in enumerate(events):
        if i % 50 == 0:
            store.take_dirty()
        if i == restore_at:
            restored = make_store(clock=clock)
            for patient_id, state in store.patients():
                record = copy.deepcopy(state)
                if as_old_records:
                    for entry in record["accessions"]:
                        entry["active"] = active_alerts(entry)
                restored.restore(patient_id, dec.decode(enc.encode(record)))
            store = restored
        outcome = store.apply(copy.deepcopy(event), pipeline)
        out.append([alert_enc.encode(a) for a in outcome.alerts])
    return out


def cut(detail: str) -> str:
    """A detail as the history stores it."""
    if len(detail) <= MAX_STORED_DETAIL:
        return detail
    return detail[: MAX_STORED_DETAIL - len(" [...]")] + " [...]"


def test_redelivered_events_re_emit_identical_alerts_and_retractions_keep_the_id(
    ruleset: Any, make_store: StoreFactory
) -> None:
    """A redelivered event (the accession's last) re-emits byte for byte what it published;
    only an alert whose detail is over MAX_STORED_DETAIL characters comes back with that detail
    cut (same id, every other field equal). Every retraction names a published alert."""
    events = lifecycle_stream(seed=21, patients=1000, count=5000)
    outputs = run(events, ruleset, make_store)
    decode = Decoder("auto", parsed_schema(HER2_ALERT)).decode
    published: dict[str, list[bytes]] = {}  # event_id -> its alerts as last published
    last_of_accession: dict[tuple[str, str], str] = {}
    active_ids: set[str] = set()
    identical = cut_only = retracted = 0
    for event, encoded in zip(events, outputs, strict=True):
        key = (event["patient_id"], event["accession_id"])
        event_id = event["event_id"]
        if event_id in published and last_of_accession.get(key) == event_id:
            assert len(encoded) == len(published[event_id])
            for again, first in zip(encoded, published[event_id], strict=True):
                if again == first:
                    identical += 1
                    continue
                a, b = decode(again), decode(first)
                assert a == {**b, "detail": cut(b["detail"])}, "only a long detail is cut"
                assert len(b["detail"]) > MAX_STORED_DETAIL
                cut_only += 1
            continue
        for alert in map(decode, encoded):
            if alert["status"] == RETRACTED:
                assert alert["alert_id"] in active_ids, "a retraction names a published alert"
                retracted += 1
            else:
                active_ids.add(alert["alert_id"])
        if event_id not in published or encoded:
            published[event_id] = encoded
            last_of_accession[key] = event_id
    assert identical > 10 * cut_only
    assert retracted > 50


@pytest.mark.parametrize("as_old_records", [False, True], ids=["records", "pre-B3 records"])
def test_restoring_from_the_changelog_changes_nothing(
    ruleset: Any, make_store: StoreFactory, as_old_records: bool
) -> None:
    """Restored mid-stream (from records of this code, or as the code before the B3 fix wrote
    them), the store publishes exactly what an uninterrupted one publishes."""
    events = lifecycle_stream(seed=22, patients=300, count=3000)
    uninterrupted = run(events, ruleset, make_store)
    restored = run(events, ruleset, make_store, restore_at=1700, as_old_records=as_old_records)
    assert restored == uninterrupted


def test_a_long_detail_is_stored_cut_and_its_retraction_keeps_the_id(
    ruleset: Any, make_store: StoreFactory
) -> None:
    """A detail over MAX_STORED_DETAIL characters is published whole the first time; the
    history keeps it cut, so a re-emission or a retraction carries the cut detail (same alert
    id, every other field unchanged). Real alerts stay far below the limit."""
    clock = ticking_clock()
    store, pipeline = make_store(clock=clock), Pipeline(ruleset, clock=clock)
    events = list(one_patient(40))
    longest: Record | None = None
    for event in events:
        for alert in store.apply(event, pipeline).alerts:
            if longest is None or len(alert["detail"]) > len(longest["detail"]):
                longest = alert
    assert longest is not None
    assert len(longest["detail"]) > MAX_STORED_DETAIL, "the case needs a long detail"
    accession = longest["accession_id"]
    last = next(e for e in reversed(events) if e["accession_id"] == accession)
    again = store.apply(copy.deepcopy(last), pipeline).alerts
    twin = next(a for a in again if a["alert_id"] == longest["alert_id"])
    assert len(twin["detail"]) == MAX_STORED_DETAIL
    assert twin["detail"].endswith(" [...]")
    assert longest["detail"].startswith(twin["detail"][: -len(" [...]")])
    assert {k: v for k, v in twin.items() if k != "detail"} == {
        k: v for k, v in longest.items() if k != "detail"
    }
    cancel = {**copy.deepcopy(last), "event_id": "cancel-1", "report_status": "CANCELLED"}
    cancel["event_time"] = (last["event_time"] or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) + (
        dt.timedelta(days=1)
    )
    retractions = store.apply(cancel, pipeline).alerts
    retraction = next(a for a in retractions if a["alert_id"] == longest["alert_id"])
    assert retraction["status"] == RETRACTED
    assert retraction["detail"].endswith(f"Original detail: {twin['detail']}")


# -- the store keeps patients encoded ------------------------------------------------------


def test_committed_states_are_bytes_the_garbage_collector_never_scans(
    ruleset: Any, make_store: StoreFactory
) -> None:
    """After take_dirty() a store holds only bytes: no Python container per patient for the
    collector to walk (with dicts, a full collection at 50,000 patients took 374 ms here).
    The size counters agree with the decoded states."""
    import gc

    store, pipeline = make_store(), Pipeline(ruleset)
    events = SyntheticGenerator(seed=5).events(600)
    for event in events[:300]:
        store.apply(event, pipeline)
    store.take_dirty()
    gc.collect()
    before = len(gc.get_objects())
    for event in events[300:]:
        store.apply(event, pipeline)
    changed = store.take_dirty()
    gc.collect()
    assert changed and all(isinstance(value, bytes) for _, value in changed)
    assert len(gc.get_objects()) - before < 50  # no per-patient containers kept alive
    states = dict(store.patients())
    assert len(store) == len(states) == len({e["patient_id"] for e in events})
    assert store.accession_count() == sum(len(s["accessions"]) for s in states.values())
    codec_sizes = sum(len(store._codec.encode(s)) for s in states.values())  # noqa: SLF001
    assert store.encoded_bytes() == codec_sizes


def test_a_rolled_back_event_leaves_the_store_as_it_was(
    ruleset: Any, make_store: StoreFactory
) -> None:
    """checkpoint() / roll_back(): the service undoes an event that fails after apply(); the
    patient's state (committed or changed earlier in the batch) is exactly as before, and a
    new patient is gone."""
    store, pipeline = make_store(), Pipeline(ruleset)
    events = SyntheticGenerator(seed=9).events(60)
    by_patient: dict[str, list[Record]] = {}
    for event in events:
        by_patient.setdefault(event["patient_id"], []).append(event)
    first, second = next(evs for evs in by_patient.values() if len(evs) >= 3)[:2]
    store.apply(first, pipeline)
    store.take_dirty()
    committed = store.get(first["patient_id"])

    undo = store.checkpoint(second["patient_id"])  # committed only
    store.apply(second, pipeline)
    assert store.get(second["patient_id"]) != committed
    store.roll_back(undo)
    assert store.get(second["patient_id"]) == committed
    assert store.take_dirty() == []  # nothing to publish: nothing changed

    store.apply(second, pipeline)  # changed in this batch, then a failing event on top
    changed = copy.deepcopy(store.get(second["patient_id"]))
    third = copy.deepcopy(second)
    third["event_id"] += "-again"
    third["event_time"] += dt.timedelta(hours=1)
    undo = store.checkpoint(third["patient_id"])
    store.apply(third, pipeline)
    store.roll_back(undo)
    assert store.get(second["patient_id"]) == changed

    newcomer = next(evs[0] for pid, evs in by_patient.items() if pid != first["patient_id"])
    undo = store.checkpoint(newcomer["patient_id"])
    store.apply(newcomer, pipeline)
    store.roll_back(undo)
    assert store.get(newcomer["patient_id"]) is None
    assert [pid for pid, _ in store.take_dirty()] == [second["patient_id"]]
