"""Equivalence check of HistoryStore against a reference revision (issue 17: faster, same bytes).

Runs the same scenario through the store of this tree and through the store of a reference
revision (default: the merge base with main, extracted read-only with `git archive`), each in
a child process, and compares what they produced, item by item (as SHA-256 digests of exact
reprs/bytes, so a difference in order, type or value counts):

- every Outcome of apply() (classification, alert records, transitions);
- every take_dirty() output (keys, values, tombstones, order), one per batch of 500 events;
- the gauges after each batch (__len__, accession_count, encoded_bytes, open_alerts);
- roll_back: a failure inside apply() (the pipeline raises) and a dead letter after apply()
  (checkpoint, apply, roll_back) at fixed events mid-batch, as the runtime does;
- restore-then-continue: after 60 % of the events the whole changelog so far (uncompacted, in
  order: overwrites and tombstones included) is restored into a new store on the same backend,
  which carries on; every patient's state (patients()) is compared after the restore and at
  the end.

Scenarios: both backends (memory, disk); events interleaved by event time (`events(n)`, where a
patient comes back across batches) and the patient-after-patient stream; with and without a
retention (accessions expire: tombstones). The store of this tree also runs with small caches
(`cache_patients`) so that eviction is exercised. Clocks are fixed, so runs are repeatable.

Usage: python bench/history_store_check.py [--events 20000] [--seed 7] [--reference REV]
Exit status 0 when every compared item is identical.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BATCH = 500
FAIL_INSIDE_EVERY = 211  # the pipeline raises inside apply() for this event index modulo
DEAD_LETTER_EVERY = 97  # checkpoint, apply, roll_back (an output too large, say)


def _digest(item: Any) -> str:
    data = item if isinstance(item, bytes) else repr(item).encode()
    return hashlib.sha256(data).hexdigest()


class _Trace:
    """(label, digest) of every compared item, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, label: str, item: Any) -> None:
        self.items.append((label, _digest(item)))


def _scenario(  # noqa: PLR0915, PLR0917 - one scenario, read top to bottom
    backend: str, order: str, events_n: int, seed: int, retention_days: int, cache: int | None
) -> list[tuple[str, str]]:
    from consumer.clinical.pipeline import Pipeline  # noqa: PLC0415 - the tree under test
    from consumer.clinical.rules import load_ruleset  # noqa: PLC0415
    from consumer.state.backends import StateDir, open_states  # noqa: PLC0415
    from consumer.state.store import HistoryStore  # noqa: PLC0415
    from consumer.tools.synthetic import SyntheticGenerator  # noqa: PLC0415

    ticks = itertools.count()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def pipeline_clock() -> dt.datetime:  # created_at: fixed and increasing
        return start + dt.timedelta(milliseconds=7 * next(ticks))

    now = [start]

    def store_clock() -> dt.datetime:  # retention: the current event's time plus 30 days
        return now[0]

    class Failing(Pipeline):
        fail = False

        def step(self, state: Any, event: Any) -> Any:
            done = super().step(state, event)
            if self.fail:
                raise RuntimeError("a bug in the pipeline")
            return done

    pipeline = Failing(load_ruleset(), clock=pipeline_clock)
    gen = SyntheticGenerator(seed=seed)
    events = (
        gen.events(events_n)
        if order == "interleaved"
        else list(itertools.islice(gen.iter_events(), events_n))
    )
    retention = dt.timedelta(days=retention_days) if retention_days else None
    extra = {} if cache is None else {"cache_patients": cache}
    trace = _Trace()
    with tempfile.TemporaryDirectory(prefix="her2-check-") as parent:
        directory = StateDir(Path(parent))

        def new_store() -> Any:
            states = open_states(backend, directory, "p0")
            return HistoryStore(retention, store_clock, states, **extra)

        def state_dump(store: Any) -> None:
            for pid, state in store.patients():
                trace.add(f"patient {pid}", state)
            trace.add("gauges", _gauges(store))

        store = new_store()
        log: list[tuple[bytes, bytes | None]] = []
        restore_at = (len(events) * 6 // 10) // BATCH * BATCH
        for at in range(0, len(events), BATCH):
            if at == restore_at:
                restored = new_store()
                for key, value in log:
                    restored.restore(key, value)
                trace.add("gauges after restore", _gauges(restored))
                state_dump(restored)
                store.close()
                store = restored
            for i, event in enumerate(events[at : at + BATCH], start=at):
                if event.get("event_time") is not None:
                    now[0] = event["event_time"] + dt.timedelta(days=30)
                undo = store.checkpoint(event["patient_id"])
                if i % FAIL_INSIDE_EVERY == FAIL_INSIDE_EVERY - 1:
                    pipeline.fail = True
                    try:
                        store.apply(event, pipeline)
                    except RuntimeError:
                        store.roll_back(undo)
                        trace.add(f"failed {i}", "rolled back")
                    finally:
                        pipeline.fail = False
                    continue
                outcome = store.apply(event, pipeline)
                trace.add(f"outcome {i}", outcome)
                if i % DEAD_LETTER_EVERY == DEAD_LETTER_EVERY - 1:
                    store.roll_back(undo)
                    trace.add(f"dead-lettered {i}", "rolled back")
            changes = store.take_dirty()
            log.extend(changes)
            trace.add(f"take_dirty {at}", [(k, v) for k, v in changes])
            trace.add(f"gauges {at}", _gauges(store))
        state_dump(store)
        tombstones = sum(1 for _, value in log if value is None)
        trace.add(f"tombstones {tombstones}, changelog records {len(log)}", len(log))
        store.close()
        directory.close()
    return trace.items


def _gauges(store: Any) -> tuple[int, int, int, int]:
    return len(store), store.accession_count(), store.encoded_bytes(), store.open_alerts()


def _scenarios(events: int) -> Iterator[tuple[str, str, int, int]]:
    for backend in ("memory", "disk"):
        yield backend, "interleaved", events, 0
        yield backend, "interleaved", events, 31
        yield backend, "stream", max(events // 4, BATCH * 3), 0


def _child(args: argparse.Namespace) -> int:
    from consumer.state.store import HistoryStore  # noqa: PLC0415

    caches: list[int | None] = [None]
    if "cache_patients" in inspect.signature(HistoryStore).parameters and args.caches:
        caches += [int(c) for c in args.caches.split(",")]
    out = {}
    for backend, order, n, retention in _scenarios(args.events):
        for cache in caches:
            name = f"{backend}/{order}/{n}/retention={retention}"
            out[f"{name}/cache={cache}"] = _scenario(backend, order, n, args.seed, retention, cache)
            print(f"  {name} cache={cache}: done", file=sys.stderr)
    Path(args.out).write_text(json.dumps(out))
    return 0


def _run_tree(tree: Path, args: argparse.Namespace, out: Path, caches: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", _BOOT, str(tree), __file__, "--child", "--out", str(out)]
    command += ["--events", str(args.events), "--seed", str(args.seed), "--caches", caches]
    subprocess.run(command, env=env, check=True, cwd=tree)  # noqa: S603 - fixed arguments
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


# The tree's `consumer` first on sys.path (an editable install elsewhere must not win), then
# this script's main() as __main__.
_BOOT = (
    "import sys, runpy; sys.path.insert(0, sys.argv[1]); import consumer; "
    "assert consumer.__file__.startswith(sys.argv[1]), consumer.__file__; "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios on both trees and compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference", default=None, help="git revision (default: merge base)")
    parser.add_argument("--caches", default="0,1,50", help="extra cache sizes of this tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    git = ["git", "-C", str(REPO)]
    rev = (
        args.reference
        or subprocess.run(  # noqa: S603 - fixed arguments
            [*git, "merge-base", "HEAD", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="her2-reference-") as tmp:
        base = Path(tmp) / "tree"
        base.mkdir()
        archive = Path(tmp) / "tree.tar"
        subprocess.run([*git, "archive", "-o", str(archive), rev], check=True)  # noqa: S603
        with tarfile.open(archive) as tar:
            tar.extractall(base, filter="data")
        print(f"reference {rev[:12]}:", file=sys.stderr)
        reference = _run_tree(base, args, Path(tmp) / "reference.json", "")
        print(f"this tree ({REPO}):", file=sys.stderr)
        ours = _run_tree(REPO, args, Path(tmp) / "ours.json", args.caches)
    failures = 0
    for name, items in ours.items():
        expected = reference[name.rsplit("/cache=", 1)[0] + "/cache=None"]
        outcomes = sum(1 for label, _ in items if label.startswith("outcome"))
        batches = sum(1 for label, _ in items if label.startswith("take_dirty"))
        first = next(
            (i for i, (a, b) in enumerate(zip(items, expected, strict=False)) if a != b), None
        )
        if first is None and len(items) != len(expected):
            first = min(len(items), len(expected))
        if first is None:
            status = "identical"
        else:
            failures += 1
            got, want = items[first : first + 1], expected[first : first + 1]
            status = f"DIFFERS at item {first}: {got} vs {want}"
        counts = items[-1][0] if items else ""
        print(f"{name}: {len(items)} items ({outcomes} outcomes, {batches} take_dirty, {counts})")
        print(f"  {status}")
    print("all identical" if not failures else f"{failures} scenario(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
