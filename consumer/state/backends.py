"""Where a HistoryStore keeps its patients' committed states: in memory, or in a sqlite file.

The committed states of a store are the encoded `PatientHistory` records (in the service, the
changelog record's value), one per patient, with the patient's accession count. Two backends:

- `MemoryStates` ("memory"): a dict of bytes. RSS grows by about 4 KB per patient (measured:
  +1,063 MB over 500,000 synthetic events, ~254,000 patients).
- `DiskStates` ("disk", the service's default): one sqlite3 file per store, like Kafka Streams'
  RocksDB stores. The file is a disposable cache of the compacted changelog, which stays the
  source of truth: a new file is created at every assignment and restore and deleted when the
  store is closed, so it is written without a journal and without fsync (a crash loses nothing
  that a restore does not rebuild), and sqlite's page cache is bounded to a few MB.

Both keep running totals (patients, accessions, bytes), so the store's size gauges never scan.
`StateDir` is the private directory the disk files of one process live in.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Final, ParamSpec, Protocol, TypeVar, cast

from consumer.errors import StateStoreError

MEMORY: Final = "memory"
DISK: Final = "disk"
BACKENDS: Final = (DISK, MEMORY)

# sqlite's page cache per store (negative = KiB). A service owns at most a few partitions, so
# the cache costs a few MB in all; a patient is read once per batch, so a larger cache buys
# little (the kernel's page cache holds the file anyway: outside the process's RSS, and
# reclaimable, though a container's memory cgroup counts it until reclaimed).
CACHE_KIB: Final = 2048
# Restore writes are committed in bulk, every this many records (a transaction per record
# costs a commit each; one transaction for the whole restore is fine too, this only bounds it).
RESTORE_COMMIT_EVERY: Final = 5000

_PREFIX: Final = "her2-state-"
_LOCK: Final = ".lock"


class CommittedStates(Protocol):
    """The committed (encoded) states of one store, with running totals."""

    patients: int  # rows held
    accessions: int  # sum of the rows' accession counts
    size: int  # sum of the rows' encoded lengths

    def get(self, patient_id: str) -> bytes | None:
        """The encoded state of a patient, or None."""

    def accessions_of(self, patient_id: str) -> int | None:
        """The accession count of a patient's state, or None if there is none."""

    def put(self, patient_id: str, encoded: bytes, accessions: int) -> None:
        """Store one state (restore: committed in bulk)."""

    def put_many(self, rows: Iterable[tuple[str, bytes, int]]) -> None:
        """Store several states at once (one transaction)."""

    def delete(self, patient_id: str) -> None:
        """Forget a patient (a changelog tombstone)."""

    def ids(self) -> list[str]:
        """Every patient id held, sorted."""

    def close(self) -> None:
        """Release the states (and their file); idempotent."""


class MemoryStates:
    """Committed states in a dict of bytes (offline runs, tests, HER2_HISTORY_STORE=memory)."""

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}
        self._counts: dict[str, int] = {}  # accessions per patient
        self.patients = self.accessions = self.size = 0

    def get(self, patient_id: str) -> bytes | None:
        """The encoded state of a patient, or None."""
        return self._rows.get(patient_id)

    def accessions_of(self, patient_id: str) -> int | None:
        """The accession count of a patient's state, or None if there is none."""
        return self._counts.get(patient_id)

    def put(self, patient_id: str, encoded: bytes, accessions: int) -> None:
        """Store one state."""
        old = self._rows.get(patient_id)
        if old is None:
            self.patients += 1
        self.size += len(encoded) - (0 if old is None else len(old))
        self.accessions += accessions - self._counts.get(patient_id, 0)
        self._rows[patient_id] = encoded
        self._counts[patient_id] = accessions

    def put_many(self, rows: Iterable[tuple[str, bytes, int]]) -> None:
        """Store several states."""
        for patient_id, encoded, accessions in rows:
            self.put(patient_id, encoded, accessions)

    def delete(self, patient_id: str) -> None:
        """Forget a patient."""
        old = self._rows.pop(patient_id, None)
        if old is not None:
            self.patients -= 1
            self.size -= len(old)
            self.accessions -= self._counts.pop(patient_id)

    def ids(self) -> list[str]:
        """Every patient id held, sorted."""
        return sorted(self._rows)

    def close(self) -> None:
        """Drop every state; idempotent."""
        self._rows.clear()
        self._counts.clear()
        self.patients = self.accessions = self.size = 0


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _state_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """sqlite3.Error -> StateStoreError (chained): the state boundary maps the third-party error,
    so the runtime catches only the package's own error tree."""

    @functools.wraps(method)
    def mapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StateStoreError(type(exc).__name__, str(exc)) from exc

    return mapped


class DiskStates:
    """Committed states in a sqlite3 file of their own, deleted by close().

    Threads: the service creates and uses a store on its main thread, and closes it there or
    from kafka-python's rebalance listener, which 3.0.12 runs on its IO thread
    (`kafka-io-<client id>`) while the main thread waits inside `poll()` or `close()`
    (`NetworkSelector.run` blocks on an Event until the listener's coroutine is done). So a
    connection is used from two threads but never concurrently, which is what
    check_same_thread=False requires.
    """

    @_state_errors
    def __init__(self, path: Path) -> None:
        self.path = path
        self.patients = self.accessions = self.size = 0
        self._pending = 0  # restore writes not yet committed
        # isolation_level=None: no implicit transactions; writes say BEGIN/COMMIT themselves.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        try:
            for pragma in (
                "journal_mode=OFF",  # a disposable cache: nothing to roll back to after a crash
                "synchronous=OFF",  # no fsync: the changelog is the durable copy
                "locking_mode=EXCLUSIVE",  # one connection per file: no lock round trip per commit
                "temp_store=MEMORY",
                f"cache_size=-{CACHE_KIB}",
            ):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute(
                "CREATE TABLE states (patient_id TEXT PRIMARY KEY, state BLOB NOT NULL, "
                "accessions INTEGER NOT NULL)"
            )
        except BaseException:  # nobody gets the object to close: close its connection here
            self._db.close()
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("history store closed")
        return self._db

    def _row(self, columns: str, patient_id: str) -> tuple[Any, ...] | None:
        """`columns` (a fixed SQL list, never input) of a patient's row, or None."""
        query = f"SELECT {columns} FROM states WHERE patient_id = ?"  # noqa: S608 - fixed
        return cast(tuple[Any, ...] | None, self._conn().execute(query, (patient_id,)).fetchone())

    @_state_errors
    def get(self, patient_id: str) -> bytes | None:
        """The encoded state of a patient, or None."""
        row = self._row("state", patient_id)
        return None if row is None else cast(bytes, row[0])

    @_state_errors
    def accessions_of(self, patient_id: str) -> int | None:
        """The accession count of a patient's state, or None if there is none."""
        row = self._row("accessions", patient_id)
        return None if row is None else cast(int, row[0])

    def _write(self, db: sqlite3.Connection, patient_id: str, encoded: bytes, count: int) -> None:
        """Replace one row inside the open transaction, keeping the totals."""
        old = self._row("length(state), accessions", patient_id)
        if old is None:
            self.patients += 1
            old = (0, 0)
        db.execute(
            "INSERT OR REPLACE INTO states (patient_id, state, accessions) VALUES (?, ?, ?)",
            (patient_id, encoded, count),
        )
        self.size += len(encoded) - old[0]
        self.accessions += count - old[1]

    def _begin(self, db: sqlite3.Connection) -> None:
        if not db.in_transaction:
            db.execute("BEGIN")

    @_state_errors
    def put(self, patient_id: str, encoded: bytes, accessions: int) -> None:
        """Store one state; committed with the next RESTORE_COMMIT_EVERY - 1 writes (reads on
        this connection see it at once)."""
        db = self._conn()
        self._begin(db)
        self._write(db, patient_id, encoded, accessions)
        self._pending += 1
        if self._pending >= RESTORE_COMMIT_EVERY:
            self._commit(db)

    def _commit(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("COMMIT")
        self._pending = 0

    @_state_errors
    def put_many(self, rows: Iterable[tuple[str, bytes, int]]) -> None:
        """Store several states in one transaction."""
        db = self._conn()
        self._begin(db)
        for patient_id, encoded, accessions in rows:
            self._write(db, patient_id, encoded, accessions)
        self._commit(db)

    @_state_errors
    def delete(self, patient_id: str) -> None:
        """Forget a patient (committed in bulk like put)."""
        db = self._conn()
        self._begin(db)
        old = self._row("length(state), accessions", patient_id)
        if old is not None:
            db.execute("DELETE FROM states WHERE patient_id = ?", (patient_id,))
            self.patients -= 1
            self.size -= old[0]
            self.accessions -= old[1]
        self._pending += 1

    @_state_errors
    def ids(self) -> list[str]:
        """Every patient id held, sorted."""
        rows = self._conn().execute("SELECT patient_id FROM states ORDER BY patient_id")
        return [pid for (pid,) in rows]

    @_state_errors
    def close(self) -> None:
        """Close the connection and delete the file; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            db.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.patients = self.accessions = self.size = 0


class StateDir:
    """The private directory of one process's disk stores, under HER2_STATE_DIR (or the system
    temp dir): created at start, removed by close().

    A process killed with SIGKILL cannot remove its directory, and an emptyDir volume outlives
    the container: each directory holds a lock (flock) for as long as its process lives, and
    a new StateDir removes the directories whose lock is free, i.e. whose process is gone."""

    def __init__(self, parent: Path | None = None) -> None:
        base = Path(tempfile.gettempdir()) if parent is None else parent
        _remove_abandoned(base)
        # Created under a name the sweep ignores, locked, then renamed: another process's
        # sweep can never see this directory unlocked.
        fresh = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}", dir=base))
        self._lock: IO[bytes] | None = (fresh / _LOCK).open("wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = base / fresh.name[1:]
        fresh.rename(self.path)
        self._names = itertools.count()

    def new_file(self, label: str) -> Path:
        """A path for a new store's file (`label`: e.g. the partition; never a patient id)."""
        return self.path / f"{label}-{next(self._names)}.sqlite"

    def close(self) -> None:
        """Remove the directory and everything left in it; idempotent."""
        lock, self._lock = self._lock, None
        if lock is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            lock.close()


def _remove_abandoned(base: Path) -> None:
    """Remove the state directories under `base` whose process is gone (their lock is free)."""
    for path in base.glob(f"{_PREFIX}*"):
        try:
            with (path / _LOCK).open("rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # locked (alive), not ours, or already gone
            continue


def open_states(kind: str, directory: StateDir | None, label: str) -> CommittedStates:
    """A new, empty backend of `kind` (DISK needs `directory`)."""
    if kind == MEMORY:
        return MemoryStates()
    if directory is None:
        raise ValueError("a disk history store needs a state directory")
    return DiskStates(directory.new_file(label))
