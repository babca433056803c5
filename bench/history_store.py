"""History store benchmark: N synthetic events through HistoryStore on each committed-state
backend ("memory", "disk"), no Kafka.

Runs as the service does: batches of 500 events (HER2_MAX_POLL_RECORDS), `apply()` per event
and `take_dirty()` per batch, states encoded with the changelog's framing (single-object).
Events come from SyntheticGenerator's endless patient-after-patient stream (as the memory run
of bench/kafka_bench.py), one batch at a time, so the events themselves do not grow the
process; `--order interleaved` takes `events(n)` instead (by event time, as the latency run of
bench/kafka_bench.py and bench/profile_service.py: a patient comes back across batches), built
before the first batch (the events are then part of the RSS at the first batch). Each backend
runs in a fresh Python process; RSS is read from /proc/self/statm after the first batch and at
the end. Only apply() and take_dirty() are timed.

Then a restore: every committed state is loaded into a new store on the same backend as the
service does from the changelog (decode the value, restore()); timed per record.

Prints events/s per backend, the ratio disk/memory, RSS growth, the bytes of states held, the
sqlite file's size, restore records/s, events/s of CPU time and the store's own CPU µs per
event (apply() and take_dirty() less Pipeline.step): on a busy machine CPU time is steadier
than the wall clock.

Usage: python bench/history_store.py [--events 100000] [--seed 7] [--order stream|interleaved]
                                     [--no-restore] [--json out.json]

RSS growth includes the changelog the bench keeps for the restore (a dict of every record):
with --no-restore it is the store's alone.

The `consumer` package of this tree is imported (not an editable install of another checkout).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's consumer package

from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.state.backends import BACKENDS, DISK, DiskStates, StateDir, open_states
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

BATCH = 500  # HER2_MAX_POLL_RECORDS default: one take_dirty() per batch, as the service


def rss_mb() -> float:
    """This process's resident set size, in MiB (/proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _TimedPipeline(Pipeline):
    """A Pipeline that adds up the time of its step(): the store's own time is the rest."""

    seconds = 0.0  # CPU time (process_time: what other processes take does not count)

    def step(self, state: Any, event: Any) -> Any:
        """Pipeline.step, timed."""
        started = time.process_time()
        try:
            return super().step(state, event)
        finally:
            self.seconds += time.process_time() - started


def measure(
    backend: str, events: int, seed: int, order: str = "stream", restore: bool = True
) -> dict[str, Any]:
    """Process `events` events through one store on `backend`; return the figures. Without
    `restore` the changelog is not kept (it grows the process as the states do) nor restored."""
    pipeline = _TimedPipeline(load_ruleset())
    with tempfile.TemporaryDirectory(prefix="her2-bench-") as parent:
        directory = StateDir(Path(parent))
        store = HistoryStore(states=open_states(backend, directory, "p0"))
        changelog: dict[bytes, bytes | None] = {}  # the compacted changelog, as restore reads it
        generator = SyntheticGenerator(seed=seed)
        stream = (
            iter(generator.events(events))
            if order == "interleaved"
            else itertools.islice(generator.iter_events(), events)
        )
        busy = 0.0
        cpu = 0.0
        done = 0
        rss_first = 0.0
        while batch := list(itertools.islice(stream, BATCH)):
            started, started_cpu = time.perf_counter(), time.process_time()
            for event in batch:
                store.apply(event, pipeline)
            changes = store.take_dirty()
            busy += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            done += len(batch)
            if restore:
                changelog.update(changes)
            if not rss_first:
                rss_first = rss_mb()
        rss_end = rss_mb()
        states = store._states  # the backend, for its ids and its file's size
        file_mb = states.path.stat().st_size / 2**20 if isinstance(states, DiskStates) else 0.0
        restored = HistoryStore(states=open_states(backend, directory, "p0"))
        started, started_cpu = time.perf_counter(), time.process_time()
        for key, value in changelog.items():
            restored.restore(key, value)
        restoring = max(time.perf_counter() - started, 1e-9)
        restoring_cpu = max(time.process_time() - started_cpu, 1e-9)
        assert not restore or restored.encoded_bytes() == store.encoded_bytes()
        result = {
            "backend": backend,
            "order": order,
            "events": done,
            "patients": len(store),
            "events_per_s": done / busy,
            "cpu_events_per_s": done / cpu,
            "store_cpu_us_per_event": (cpu - pipeline.seconds) / done * 1e6,
            "rss_first_batch_mb": rss_first,
            "rss_end_mb": rss_end,
            "rss_growth_mb": rss_end - rss_first,
            "states_mb": store.encoded_bytes() / 2**20,
            "file_mb": file_mb,
            "restore_records_per_s": len(changelog) / restoring,
            "restore_cpu_records_per_s": len(changelog) / restoring_cpu,
        }
        restored.close()
        store.close()
        directory.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run each backend in its own process, print the table (and JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--order", choices=("stream", "interleaved"), default="stream")
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="keep no changelog and skip the restore (RSS then shows the store alone)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.backend:
        figures = measure(args.backend, args.events, args.seed, args.order, not args.no_restore)
        print(json.dumps(figures))
        return 0
    results = {}
    for backend in sorted(BACKENDS, key=lambda b: b == DISK):  # memory first
        print(f"{backend}: {args.events} events...", file=sys.stderr)
        child = subprocess.run(  # noqa: S603 - this script, fixed arguments
            [
                sys.executable,
                __file__,
                "--events",
                str(args.events),
                "--seed",
                str(args.seed),
                "--order",
                args.order,
                *(["--no-restore"] if args.no_restore else []),
                "--backend",
                backend,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[backend] = json.loads(child.stdout)
    print(
        f"{'backend':<8} {'events':>8} {'patients':>9} {'events/s':>9} {'RSS growth MB':>14} "
        f"{'RSS end MB':>11} {'states MB':>10} {'file MB':>8} {'restore rec/s':>14} "
        f"{'CPU events/s':>13} {'store CPU us/event':>19} {'CPU restore rec/s':>18}"
    )
    for r in results.values():
        print(
            f"{r['backend']:<8} {r['events']:>8,} {r['patients']:>9,} {r['events_per_s']:>9,.0f} "
            f"{r['rss_growth_mb']:>14.1f} {r['rss_end_mb']:>11.1f} {r['states_mb']:>10.1f} "
            f"{r['file_mb']:>8.1f} {r['restore_records_per_s']:>14,.0f} "
            f"{r['cpu_events_per_s']:>13,.0f} {r['store_cpu_us_per_event']:>19.1f} "
            f"{r['restore_cpu_records_per_s']:>18,.0f}"
        )
    ratio = results[DISK]["events_per_s"] / results["memory"]["events_per_s"]
    print(f"disk/memory events/s: {ratio:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"ratio_disk_memory": ratio, **results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
