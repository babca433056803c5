"""consumer/state/store.py: the cache of committed patients (issue 17) and the cheaper paths
around it. Whatever the cache holds, a store publishes the same bytes as one without a cache:
the same outcomes, the same changelog records, the same states, the same totals."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.avro.codec import Encoder
from consumer.clinical.model import Outcome
from consumer.clinical.patient import AcceptedReport, Accession, AlertState, PriorEntry, Published
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.resources import PATIENT_HISTORY, parsed_schema
from consumer.state.backends import BACKENDS, StateDir, open_states
from consumer.state.store import (
    CACHE_PATIENTS,
    CacheBudget,
    HistoryStore,
    _alert_out,
    _prior_out,
    _published_out,
    _report_out,
    _round_trips,
    accession_key,
    part_codec,
    patient_key,
)
from consumer.tools.synthetic import SyntheticGenerator

Event = dict[str, Any]
Change = tuple[bytes, bytes | None]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    """A fixed clock: runs at different times publish the same created_at."""
    return Pipeline(load_ruleset(), clock=lambda: dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def events() -> list[Event]:
    """Interleaved by event time: patients come back across batches."""
    return SyntheticGenerator(seed=5).events(900)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDir]:
    directory = StateDir(tmp_path)
    yield directory
    directory.close()


@pytest.fixture
def closing() -> Iterator[Callable[[HistoryStore], HistoryStore]]:
    """Register a store to be closed at the test's end, whatever happened (Python 3.13 warns
    about a sqlite connection collected unclosed, which fails whichever test runs then)."""
    opened: list[HistoryStore] = []

    def keep(store: HistoryStore) -> HistoryStore:
        opened.append(store)
        return store

    yield keep
    for store in opened:
        store.close()


def run(
    store: HistoryStore, events: list[Event], pipeline: Pipeline, batch: int = 100
) -> tuple[list[Outcome], list[list[Change]]]:
    """Events through the store as the service does: apply() each, take_dirty() per batch."""
    outcomes, changes = [], []
    for at in range(0, len(events), batch):
        for event in events[at : at + batch]:
            outcomes.append(store.apply(copy.deepcopy(event), pipeline))
        changes.append(store.take_dirty())
    return outcomes, changes


def snapshot(store: HistoryStore) -> tuple[Any, ...]:
    """Every state (repr: order and types count) and every total."""
    states = repr(list(store.patients()))
    return states, len(store), store.accession_count(), store.encoded_bytes(), store.open_alerts()


@pytest.mark.parametrize("kind", BACKENDS)
class TestCache:
    def test_the_cache_never_holds_more_than_its_bound(
        self, kind: str, state_dir: StateDir, events: list[Event], pipeline: Pipeline
    ) -> None:
        store = HistoryStore(states=open_states(kind, state_dir, "p0"), cache_patients=7)
        for at in range(0, len(events), 50):
            for event in events[at : at + 50]:
                store.apply(copy.deepcopy(event), pipeline)
                assert len(store._cache) <= 7
            store.take_dirty()
            assert len(store._cache) == 7
        assert len(store) > 7 * 10
        store.close()
        assert len(store._cache) == 0

    @pytest.mark.parametrize("cache", [0, 1, 13, CACHE_PATIENTS])
    def test_any_cache_size_publishes_the_same_bytes(
        self,
        kind: str,
        cache: int,
        state_dir: StateDir,
        events: list[Event],
        pipeline: Pipeline,
    ) -> None:
        """Patients evicted and touched again, or kept: outcomes, changelog records (keys,
        values, order) and states equal those of a store that caches nothing."""
        uncached = HistoryStore(states=open_states(kind, state_dir, "a"), cache_patients=0)
        cached = HistoryStore(states=open_states(kind, state_dir, "b"), cache_patients=cache)
        assert run(cached, events, pipeline) == run(uncached, events, pipeline)
        assert snapshot(cached) == snapshot(uncached)
        cached.close()
        uncached.close()

    def test_an_evicted_patient_touched_again_reads_its_committed_state(
        self,
        kind: str,
        state_dir: StateDir,
        events: list[Event],
        pipeline: Pipeline,
        closing: Callable[[HistoryStore], HistoryStore],
    ) -> None:
        store = closing(HistoryStore(states=open_states(kind, state_dir, "p0"), cache_patients=2))
        run(store, events[:300], pipeline)
        pid = next(e["patient_id"] for e in events[300:] if store.get(e["patient_id"]))
        held = store.get(pid)
        assert pid in store._cache
        store._cache.clear()  # evicted
        assert repr(store.get(pid)) == repr(held)  # decoded again from the backend's row
        assert store.get(pid) is store.get(pid)  # then kept decoded

    def test_roll_back_across_the_cache_restores_the_committed_state(
        self,
        kind: str,
        state_dir: StateDir,
        events: list[Event],
        pipeline: Pipeline,
        closing: Callable[[HistoryStore], HistoryStore],
    ) -> None:
        """A cached patient's event fails after apply(): roll_back() leaves the cached state as
        it was, and the batch publishes what a store that never saw the event publishes."""
        store = closing(HistoryStore(states=open_states(kind, state_dir, "a")))
        clean = closing(HistoryStore(states=open_states(kind, state_dir, "b"), cache_patients=0))
        for s in (store, clean):
            run(s, events[:400], pipeline)
        rng = random.Random(9)  # noqa: S311 - reproducible test data
        rolled_back = 0
        for at in range(400, len(events), 100):
            for event in events[at : at + 100]:
                pid = event["patient_id"]
                before = store.get(pid)
                undo = store.checkpoint(pid)
                store.apply(copy.deepcopy(event), pipeline)
                if rng.random() < 0.3:
                    store.roll_back(undo)
                    assert store.get(pid) is before  # the very same state, cached or live
                    rolled_back += 1
                    continue
                clean.apply(copy.deepcopy(event), pipeline)
            assert store.take_dirty() == clean.take_dirty()
        assert rolled_back > 50
        assert snapshot(store) == snapshot(clean)

    def test_restore_in_any_order_gives_the_same_store(
        self,
        kind: str,
        state_dir: StateDir,
        events: list[Event],
        pipeline: Pipeline,
        closing: Callable[[HistoryStore], HistoryStore],
    ) -> None:
        """A changelog restored as written, shuffled (a patient's records apart) or with every
        record twice (uncompacted) gives the same states and totals; then both carry on alike."""
        source = closing(HistoryStore(states=open_states(kind, state_dir, "src")))
        _, changes = run(source, events[:600], pipeline)
        log = [change for batch in changes for change in batch]
        shuffled = list(dict(log).items())  # compacted: the latest value of each key
        random.Random(2).shuffle(shuffled)  # noqa: S311 - reproducible test data
        stores = []
        for order in (log, shuffled, log + log):
            store = closing(HistoryStore(states=open_states(kind, state_dir, "r")))
            for key, value in order:
                store.restore(key, value)
            stores.append(store)
        expected = snapshot(source)
        assert [snapshot(s) for s in stores] == [expected] * 3
        runs = [run(s, events[600:], pipeline) for s in (source, *stores)]
        assert runs[1:] == [runs[0]] * 3


class TestCacheBudget:
    """HER2_HISTORY_CACHE_PATIENTS: the decoded patients of a process's stores together."""

    @pytest.mark.parametrize(
        ("patients", "per_store", "stores", "share"),
        [
            pytest.param(6144, 1024, 1, 1024, id="one-partition-per-store-bound"),
            pytest.param(6144, 1024, 6, 1024, id="six-partitions-fit"),
            pytest.param(6144, 1024, 12, 512, id="twelve-partitions-split"),
            pytest.param(6144, 1024, 0, 1024, id="none-open"),
            pytest.param(0, 1024, 3, 0, id="off"),
            pytest.param(10, 1024, 3, 3, id="small"),
        ],
    )
    def test_the_share_of_one_store(
        self, patients: int, per_store: int, stores: int, share: int
    ) -> None:
        budget = CacheBudget(patients, per_store)
        for n in range(stores):
            budget.join(n)
        assert budget.share() == share

    def test_the_stores_of_a_process_hold_the_budget_in_all(
        self, state_dir: StateDir, events: list[Event], pipeline: Pipeline
    ) -> None:
        budget = CacheBudget(12, per_store=8)
        stores = [
            HistoryStore(states=open_states("disk", state_dir, f"p{n}"), budget=budget)
            for n in range(3)
        ]
        for at in range(0, 300, 30):
            for i, event in enumerate(events[at : at + 30]):
                stores[i % 3].apply(copy.deepcopy(event), pipeline)
            for store in stores:
                store.take_dirty()
            assert [len(store._cache) for store in stores] == [4, 4, 4]
        # two partitions revoked: the one left may hold its own bound again
        stores[1].close()
        stores[2].close()
        stores[2].close()  # idempotent
        run(stores[0], events[300:400], pipeline, batch=50)
        assert len(stores[0]._cache) == 8
        stores[0].close()

    def test_a_budgeted_store_publishes_what_an_unbudgeted_one_does(
        self, events: list[Event], pipeline: Pipeline
    ) -> None:
        budget = CacheBudget(2)
        budgeted = HistoryStore(budget=budget)
        crowd = [HistoryStore(budget=budget) for _ in range(3)]  # its share: 2 // 4 = 0
        assert run(budgeted, events[:300], pipeline) == run(HistoryStore(), events[:300], pipeline)
        assert len(budgeted._cache) == 0
        for store in crowd:
            store.close()


@given(st.text(), st.text())
def test_keys_are_the_json_lists_they_always_were(patient_id: str, accession_id: str) -> None:
    def dumped(parts: list[str]) -> bytes:
        return json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()

    assert patient_key(patient_id) == dumped(["P", patient_id])
    assert accession_key(patient_id, accession_id) == dumped(["A", patient_id, accession_id])


def test_accession_parts_encode_as_with_unnamed_union_branches(
    events: list[Event], pipeline: Pipeline
) -> None:
    """Naming the record branches of the unions (fastavro's tuple notation) changes no byte."""
    store = HistoryStore()
    run(store, events, pipeline)
    plain = Encoder("single-object", parsed_schema(PATIENT_HISTORY))
    checked = 0
    for pid, state in store.patients():
        for acc in state.accessions.values():
            part = {
                "accession_id": acc.accession_id,
                "report": _report_out(acc.report) if acc.report else None,
                "prior": _prior_out(acc.prior) if acc.prior else None,
                "alerts": [_alert_out(a) for a in acc.alerts.values()],
                "emitted": [_published_out(p) for p in acc.emitted],
            }
            datum = {"patient_id": pid, "part": ("health.her2.state.AccessionPart", part)}
            assert part_codec().encode_accession(pid, acc) == plain.encode(datum)
            checked += 1
    assert checked > 300


_UTC_MS = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
# what a live part may hold that the decoder would not give back as it is
_ANY_TIME = st.one_of(
    _UTC_MS,
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
        lambda t: t.replace(tzinfo=dt.UTC)  # microseconds
    ),
    _UTC_MS.map(lambda t: t.astimezone(dt.timezone(dt.timedelta(hours=2)))),
    _UTC_MS.map(lambda t: t.replace(fold=1)),
)
_TEXT = st.text(max_size=5)


@st.composite
def accessions(draw: st.DrawFn) -> Accession:
    def alerts() -> dict[str, AlertState]:
        codes = draw(st.lists(_TEXT, max_size=3, unique=True))
        return {
            c: AlertState(
                c,
                draw(st.integers(0, 2**31 - 1)),
                draw(st.booleans()),
                draw(_TEXT),
                draw(_TEXT),
                draw(st.one_of(st.tuples(), st.tuples(_TEXT), st.lists(_TEXT, max_size=2))),
            )
            for c in codes
        }

    report = AcceptedReport(
        draw(_TEXT),
        draw(st.none() | _ANY_TIME),
        draw(_TEXT),
        draw(st.integers(0, 2**62)),
        draw(st.one_of(st.tuples(), st.tuples(_TEXT, _TEXT), st.lists(_TEXT, max_size=2))),
        draw(_TEXT),
        draw(st.none() | st.dates()),
        draw(_TEXT),
        draw(st.one_of(st.booleans(), st.integers(0, 1))),
        draw(st.none() | _TEXT),
        draw(st.booleans()),
        draw(st.none() | _TEXT),
        draw(st.integers(0, 2**62)),
    )
    prior = PriorEntry(
        draw(_TEXT), draw(st.integers(0, 9)), draw(_TEXT), draw(st.none() | st.dates()), "LOW"
    )
    emitted = tuple(
        Published(
            draw(_TEXT),
            draw(_TEXT),
            draw(st.integers(1, 9)),
            "ACTIVE",
            "opened",
            draw(_TEXT),
            draw(st.integers(1, 9)),
            "LOW",
            draw(st.none() | _TEXT),
            draw(_ANY_TIME),
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    return Accession(
        draw(_TEXT),
        report=draw(st.none() | st.just(report)),
        prior=draw(st.none() | st.just(prior)),
        alerts=alerts(),
        emitted=emitted,
    )


@given(accessions())
def test_a_part_used_live_is_exactly_what_decoding_would_give(acc: Accession) -> None:
    """take_dirty() keeps a part it just encoded instead of decoding it later only when
    _round_trips() says so: then decoding its encoding gives an equal part of the same types
    (repr compares both, and the dicts' order)."""
    _, decoded = part_codec().decode(part_codec().encode_accession("p", acc))
    if _round_trips(acc):
        assert repr(decoded) == repr(acc)
    else:  # what it refused really differs in type, time zone, precision or fold
        assert repr(decoded) != repr(acc) or any(
            t is not None and t.fold
            for t in (
                acc.report.event_time if acc.report else None,
                *(p.created_at for p in acc.emitted),
            )
        )


def test_the_parts_of_a_synthetic_run_are_used_live(
    events: list[Event], pipeline: Pipeline
) -> None:
    """What the pipeline builds round-trips (so the cache seldom decodes a part it wrote)."""
    store = HistoryStore()
    run(store, events, pipeline)
    parts = [a for _, s in store.patients() for a in s.accessions.values()]
    assert len(parts) > 300
    assert all(_round_trips(a) for a in parts)
