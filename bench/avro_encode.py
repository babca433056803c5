"""The output encoders with the compiled fast path (consumer/avro/fastwrite.py) and with fastavro
alone, on the service's own outputs.

The outputs are those of N synthetic events (seed 7) as the service builds them: each event
encoded and decoded as its single-object Avro value, validated and applied to a history store
(bench/runtime_overhead.py's core stage), its classification and alerts kept. Each round then
encodes every classification and every alert with `Encoder("single-object", ..., fast=True)`
and with `fast=False` (fastavro.schemaless_writer), interleaved (fast, fastavro, fast, ...), and
the bytes of both are checked equal once. Only `encode()` is timed (perf_counter, per kind).

Prints the median µs per record of each kind and path, and the ratio fast/fastavro.

Usage: python bench/avro_encode.py [--events 5000] [--rounds 7] [--seed 7]

The `consumer` package of this tree is imported (not an editable install of another checkout).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's consumer package

from consumer.avro.codec import Decoder, Encoder
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import check_event
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, PATHOLOGY_RESULT, parsed_schema
from consumer.state.store import HistoryStore
from consumer.tools.synthetic import SyntheticGenerator

PATHS = {"fast": True, "fastavro": False}


def outputs(count: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The classifications and alerts of `count` synthetic events, as the service builds them."""
    schema = parsed_schema(PATHOLOGY_RESULT)
    encoder, decoder = Encoder("single-object", schema), Decoder("single-object", schema)
    pipeline = Pipeline(load_ruleset())
    store = HistoryStore()
    classifications: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for event in SyntheticGenerator(seed=seed).events(count):
        outcome = store.apply(check_event(decoder.decode(encoder.encode(event))), pipeline)
        classifications.append(outcome.classification)
        alerts += outcome.alerts
    return {"classification": classifications, "alert": alerts}


def seconds(encoder: Encoder, records: list[dict[str, Any]]) -> float:
    """Seconds to encode every record once."""
    encode = encoder.encode
    started = time.perf_counter()
    for record in records:
        encode(record)
    return time.perf_counter() - started


def main() -> int:
    """Build the outputs, run the interleaved rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    records = outputs(args.events, args.seed)
    schemas = {"classification": HER2_CLASSIFICATION, "alert": HER2_ALERT}
    encoders = {
        (kind, path): Encoder("single-object", parsed_schema(schemas[kind]), fast=fast)
        for kind in schemas
        for path, fast in PATHS.items()
    }
    for kind, items in records.items():
        fast, plain = encoders[kind, "fast"], encoders[kind, "fastavro"]
        if [fast.encode(r) for r in items] != [plain.encode(r) for r in items]:
            raise SystemExit(f"the fast path wrote other bytes for a {kind}")
    timings: dict[tuple[str, str], list[float]] = {key: [] for key in encoders}
    for _ in range(args.rounds):
        for path in PATHS:  # interleaved: fast, fastavro, fast, fastavro, ...
            for kind, items in records.items():
                timings[kind, path].append(seconds(encoders[kind, path], items) / len(items))
    print(
        f"{args.events} events: {len(records['classification'])} classifications, "
        f"{len(records['alert'])} alerts; {args.rounds} rounds, median µs per record"
    )
    print(f"{'record':16s} {'fast':>8s} {'fastavro':>9s} {'fast/fastavro':>14s}")
    for kind in records:
        fast = statistics.median(timings[kind, "fast"]) * 1e6
        plain = statistics.median(timings[kind, "fastavro"]) * 1e6
        print(f"{kind:16s} {fast:8.2f} {plain:9.2f} {fast / plain:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
