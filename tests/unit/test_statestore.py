"""consumer/state/backends.py: the committed-state backends of HistoryStore ("memory", "disk"),
their running totals, the disk file's life (created with the store, deleted by close()), and
the private state directory (abandoned ones removed, live ones kept)."""

from __future__ import annotations

import copy
import fcntl
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.clinical.patient import AcceptedReport, Accession
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.errors import StateStoreError
from consumer.state.backends import (
    BACKENDS,
    DISK,
    MEMORY,
    RESTORE_COMMIT_EVERY,
    DiskStates,
    StateDir,
    open_states,
)
from consumer.state.store import (
    HistoryStore,
    _pack,
    accession_key,
    parse_key,
    part_codec,
)
from consumer.tools.synthetic import SyntheticGenerator

Record = dict[str, Any]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(load_ruleset())


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDir]:
    directory = StateDir(tmp_path)
    yield directory
    directory.close()


def totals(store: HistoryStore) -> tuple[int, int, int]:
    """(patients, accessions, bytes) as the store reports them."""
    return len(store), store.accession_count(), store.encoded_bytes()


def recount(store: HistoryStore, committed: dict[bytes, bytes | None]) -> tuple[int, int, int]:
    """The same figures from scratch: every state decoded, and the rows the committed changelog
    records (key -> value, None = tombstone) pack into, one per patient."""
    states = dict(store.patients())
    accessions = sum(len(s.accessions) for s in states.values())
    rows: dict[str, dict[bytes, bytes]] = {}
    for key, value in committed.items():
        if value is not None:
            rows.setdefault(parse_key(key)[0], {})[key] = value
    return len(states), accessions, sum(len(_pack(parts)) for parts in rows.values())


def accession_record(patient_id: str, padding: int = 0) -> tuple[bytes, bytes]:
    """One real changelog record (an accession part), padded with seen event ids."""
    acc = Accession(
        "A1",
        report=AcceptedReport(
            "e1",
            None,
            "FINAL",
            1,
            ("x" * padding,) if padding else (),
            "PRIMARY_BREAST",
            None,
            "LOW",
            True,
            None,
            False,
            None,
            0,
        ),
    )
    return accession_key(patient_id, "A1"), part_codec().encode_accession(patient_id, acc)


class TestDiskFile:
    def test_the_file_exists_while_open_and_close_deletes_it(self, state_dir: StateDir) -> None:
        states = open_states(DISK, state_dir, "p3")
        assert isinstance(states, DiskStates)
        assert states.path.is_file()
        assert states.path.parent == state_dir.path
        store = HistoryStore(states=states)
        key, value = accession_record("P1")
        store.restore(key, value)
        assert (len(store), store.encoded_bytes()) == (1, len(_pack({key: value})))
        store.close()
        assert not states.path.exists()
        store.close()  # idempotent
        assert list(state_dir.path.glob("*.sqlite")) == []

    def test_every_store_gets_a_new_file(self, state_dir: StateDir) -> None:
        first = open_states(DISK, state_dir, "p0")
        second = open_states(DISK, state_dir, "p0")  # the same partition assigned again
        assert isinstance(first, DiskStates)
        assert isinstance(second, DiskStates)
        assert first.path != second.path
        first.close()
        assert second.path.is_file()
        second.close()

    def test_a_file_that_cannot_be_set_up_leaves_no_connection_open(
        self, state_dir: StateDir, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The table cannot be created (the file already holds one): the error is the state
        boundary's, and the connection is closed, not left to the garbage collector (nobody
        gets the object to close; Python 3.13 warns about it then)."""
        path = state_dir.path / "taken.sqlite"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE states (x)")
        db.close()
        opened: list[sqlite3.Connection] = []
        real_connect = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            opened.append(real_connect(*args, **kwargs))
            return opened[-1]

        monkeypatch.setattr("consumer.state.backends.sqlite3.connect", connect)
        with pytest.raises(StateStoreError, match="already exists"):
            DiskStates(path)
        assert len(opened) == 1
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            opened[0].execute("SELECT 1")

    def test_a_closed_store_refuses_use(self, state_dir: StateDir) -> None:
        states = open_states(DISK, state_dir, "p0")
        states.close()
        with pytest.raises(StateStoreError, match="closed"):
            states.get("P1")


@pytest.mark.parametrize("kind", BACKENDS)
class TestTotals:
    def test_totals_follow_restore_tombstone_take_dirty_and_roll_back(
        self, kind: str, state_dir: StateDir, pipeline: Pipeline
    ) -> None:
        """After every operation the reported size equals a recount from the states."""
        store = HistoryStore(states=open_states(kind, state_dir, "p0"))
        committed: dict[bytes, bytes | None] = {}  # what the changelog would hold
        events = SyntheticGenerator(seed=3).events(400)
        for event in events[:150]:
            store.apply(copy.deepcopy(event), pipeline)
        assert totals(store)[:2] == recount(store, committed)[:2]  # all live, nothing committed
        assert store.encoded_bytes() == 0
        committed.update(store.take_dirty())
        assert totals(store) == recount(store, committed)

        restored = HistoryStore(states=open_states(kind, state_dir, "p0"))  # a restore
        for key, value in committed.items():
            restored.restore(key, value)
        store.close()
        store = restored
        assert totals(store) == recount(store, committed)
        gone = sorted(k for k in committed if k.startswith(b'["A"'))[:10]
        for key in gone:  # tombstones, one of them twice
            store.restore(key, None)
            del committed[key]
        store.restore(gone[0], None)
        assert totals(store) == recount(store, committed)

        rng = random.Random(4)  # noqa: S311 - reproducible test data
        for event in events[150:]:
            undo = store.checkpoint(event["patient_id"])
            store.apply(copy.deepcopy(event), pipeline)
            if rng.random() < 0.3:
                store.roll_back(undo)
            live = totals(store)
            assert live[:2] == recount(store, committed)[:2]
            if rng.random() < 0.1:
                committed.update(store.take_dirty())
                assert totals(store) == recount(store, committed)
        committed.update(store.take_dirty())
        assert totals(store) == recount(store, committed)
        store.close()
        assert totals(store) == (0, 0, 0)

    def test_a_roll_back_across_take_dirty_keeps_the_totals(
        self, kind: str, state_dir: StateDir, pipeline: Pipeline
    ) -> None:
        """roll_back() to a live state after take_dirty() committed a later one (the service
        never does this; the store reads the committed row to keep its totals right)."""
        store = HistoryStore(states=open_states(kind, state_dir, "p0"))
        events = SyntheticGenerator(seed=8).events(80)
        first = next(
            e for e in events if sum(x["patient_id"] == e["patient_id"] for x in events) > 1
        )
        later = next(e for e in events if e["patient_id"] == first["patient_id"] and e is not first)
        store.apply(copy.deepcopy(first), pipeline)
        undo = store.checkpoint(first["patient_id"])  # live, never committed
        store.apply(copy.deepcopy(later), pipeline)
        committed = dict(store.take_dirty())
        store.roll_back(undo)
        assert totals(store)[:2] == recount(store, committed)[:2] == (1, 1)
        committed.update(store.take_dirty())
        assert totals(store) == recount(store, committed)
        store.close()

    def test_restore_writes_are_committed_in_bulk(self, kind: str, state_dir: StateDir) -> None:
        """More records than one bulk commit: every one is readable, the totals add up, and a
        record restored twice (an uncompacted changelog) counts once."""
        states = open_states(kind, state_dir, "p0")
        n = RESTORE_COMMIT_EVERY + 123
        for i in range(n):
            states.put(f"P{i}", bytes([i % 256]) * (i % 50 + 1), i % 7)
        states.put("P0", b"ab", 5)
        assert states.patients == n
        assert states.size == sum(i % 50 + 1 for i in range(1, n)) + 2
        assert states.accessions == sum(i % 7 for i in range(1, n)) + 5
        assert states.get(f"P{n - 1}") == bytes([(n - 1) % 256]) * ((n - 1) % 50 + 1)
        assert states.ids()[:3] == ["P0", "P1", "P10"]
        states.close()


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc/self/statm, in pages)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_many_patients_on_disk_stay_out_of_the_process_memory(state_dir: StateDir) -> None:
    """20,000 patients of 4 KB (80 MB of states, as restored from a changelog): the process grows
    by a small part of that, the file holds it all, and encoded_bytes equals the sum of the
    rows' lengths in the file."""
    states = open_states(DISK, state_dir, "p0")
    assert isinstance(states, DiskStates)
    store = HistoryStore(states=states)
    before = rss_bytes()
    for i in range(20_000):
        for acc in ("A1", "A2"):
            key, value = accession_record(f"P{i}", 2000 + i % 64)
            store.restore(key.replace(b'"A1"', f'"{acc}"'.encode()), value)
    grown = rss_bytes() - before
    assert len(store) == 20_000
    assert store.accession_count() == 40_000
    db = states._conn()  # the backend's own connection: the file is locked exclusive
    [(rows_bytes,)] = db.execute("SELECT sum(length(state)) FROM states").fetchall()
    assert store.encoded_bytes() == rows_bytes > 79_000_000
    assert states.path.stat().st_size >= rows_bytes
    assert grown < rows_bytes // 8, f"RSS grew {grown} bytes for {rows_bytes} bytes of states"
    store.close()
    assert not states.path.exists()


class TestStateDir:
    def test_close_removes_the_directory_and_its_files(self, tmp_path: Path) -> None:
        directory = StateDir(tmp_path)
        assert directory.path.is_dir()
        left_open = open_states(DISK, directory, "p1")
        assert isinstance(left_open, DiskStates)
        directory.close()
        assert not directory.path.exists()
        directory.close()  # idempotent
        left_open.close()  # its file is already gone: still fine

    def test_an_abandoned_directory_is_removed_and_a_live_one_kept(self, tmp_path: Path) -> None:
        """A process killed with SIGKILL leaves its directory behind (an emptyDir outlives the
        container): its lock is free, so the next StateDir removes it; a live one keeps it."""
        live = StateDir(tmp_path)
        abandoned = tmp_path / "her2-state-dead"
        abandoned.mkdir()
        (abandoned / ".lock").touch()
        (abandoned / "p0-0.sqlite").write_bytes(b"x" * 100)
        other = tmp_path / "unrelated"
        other.mkdir()
        newcomer = StateDir(tmp_path)
        assert not abandoned.exists()
        assert live.path.is_dir()
        assert other.is_dir()
        with (live.path / ".lock").open("rb") as lock, pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held by `live`
        newcomer.close()
        live.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated"]

    def test_memory_needs_no_directory(self) -> None:
        states = open_states(MEMORY, None, "p0")
        states.put("P1", b"abc", 1)
        assert (states.patients, states.size, states.accessions) == (1, 3, 1)
        states.close()
        assert (states.patients, states.size, states.accessions) == (0, 0, 0)


def test_disk_errors_are_mapped_to_state_store_error(tmp_path: Path) -> None:
    """The state boundary: a sqlite3.Error leaves the disk backend as StateStoreError (chained),
    so the runtime catches only the package's error tree."""
    directory = StateDir(tmp_path)
    states = open_states(DISK, directory, "p0")
    assert isinstance(states, DiskStates)
    states.put("p", b"x", 1)
    states._db.close()  # type: ignore[union-attr]  # every call now fails, as a broken disk would
    for call in (lambda: states.get("p"), lambda: states.put("q", b"y", 1), states.ids):
        with pytest.raises(StateStoreError) as raised:
            call()
        assert raised.value.kind == "ProgrammingError"
        assert isinstance(raised.value.__cause__, sqlite3.Error)
    directory.close()
