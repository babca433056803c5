"""Output equivalence check for changes to the clinical core: record everything the pipeline
produces for N synthetic events, then compare a later run against that recording.

Recorded, one JSON line each, in order:
  history    per event through HistoryStore.apply (the `evaluate --history` lifecycle): the
             classification, every alert record and its transition; every 7th event is followed
             by a re-delivery of an event 3 back (a redelivery or a stale report), and every 500
             events the changed changelog records (take_dirty(): keys and Avro values, hex)
  state      at the end, every patient's encode_state() value (hex)
  process    per event, Pipeline.process (each event a patient of its own)
  evaluate   the `her2-consumer evaluate --history` output lines (validation included)

The pipeline clock is fixed, so `created_at` is compared too (nothing is ignored).

Usage:
  python -m bench.equivalence --record /tmp/golden.jsonl [--events 20000] [--seed 7]
  python -m bench.equivalence --check /tmp/golden.jsonl   (exit 1 on the first difference)
(`-m` from the repository root imports this checkout's `consumer`, whatever is installed.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from itertools import zip_longest

from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.state.store import HistoryStore, encode_state
from consumer.tools.evaluate import evaluate_lines, render
from consumer.tools.jsonout import dumps
from consumer.tools.synthetic import SyntheticGenerator

NOW = dt.datetime(2031, 1, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)


def _clock() -> dt.datetime:
    return NOW


def lines(events: int, seed: int) -> Iterator[str]:
    """Every recorded line, in order."""
    batch = SyntheticGenerator(seed=seed).events(events)
    pipeline = Pipeline(load_ruleset(), clock=_clock)
    store = HistoryStore(clock=_clock)
    for i, event in enumerate(batch):
        stream = [event] if i % 7 else [event, batch[max(0, i - 3)]]
        for e in stream:
            out = store.apply(e, pipeline)
            yield dumps(
                {
                    "k": "history",
                    "i": i,
                    "event_id": e["event_id"],
                    "classification": out.classification,
                    "alerts": out.alerts,
                    "transitions": out.transitions,
                }
            )
        if i % 500 == 499:
            dirty = [[k.hex(), v.hex() if v is not None else None] for k, v in store.take_dirty()]
            yield dumps({"k": "dirty", "i": i, "records": dirty})
    dirty = [[k.hex(), v.hex() if v is not None else None] for k, v in store.take_dirty()]
    yield dumps({"k": "dirty", "i": len(batch), "records": dirty})
    for pid, state in store.patients():
        yield dumps({"k": "state", "patient_id": pid, "value": encode_state(state).hex()})
    for event in batch:
        out = pipeline.process(event)
        yield dumps(
            {
                "k": "process",
                "classification": out.classification,
                "alerts": out.alerts,
                "transitions": out.transitions,
            }
        )
    ndjson = [dumps(e) + "\n" for e in batch]
    for line in render(evaluate_lines(ndjson, pipeline, HistoryStore(clock=_clock), clock=_clock)):
        yield line.rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Record or check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", help="write the recording to this file")
    mode.add_argument("--check", help="compare against this recording")
    args = parser.parse_args(argv)
    digest = hashlib.sha256()
    count = 0
    if args.record:
        with open(args.record, "w", encoding="utf-8") as fh:
            for line in lines(args.events, args.seed):
                fh.write(line + "\n")
                digest.update(line.encode())
                count += 1
        print(f"recorded {count} lines, sha256 {digest.hexdigest()}")
        return 0
    with open(args.check, encoding="utf-8") as fh:
        for number, (got, stored) in enumerate(
            zip_longest(lines(args.events, args.seed), fh), start=1
        ):
            want = stored.rstrip("\n") if stored is not None else None
            if got is None or got != want:
                print(f"line {number} differs:\n  want {want!s:.2000}\n  got  {got!s:.2000}")
                return 1
            digest.update(got.encode())
            count += 1
    print(f"identical: {count} lines, sha256 {digest.hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
