"""Offline throughput benchmark: classify and evaluate N synthetic events (no Kafka).

Prints events/s and per-event latency percentiles for each stage, and the ratio of each stage
against a baseline measured in the same run (so a noisy, shared machine still gives comparable
figures). Stages:
  baseline   json.loads + json.dumps of the same NDJSON lines (the I/O floor of `evaluate`)
  classify   ASCO/CAP classification only
  pipeline   classification + facts + rules + alerts (Pipeline.process)
  history    the same with the per-patient history store and report lifecycle
  evaluate   the whole `her2-consumer evaluate --history` path: JSON -> validate -> history -> JSON

Usage: python bench/offline.py [--events 100000] [--seed 7] [--json out.json]
(Run as a script, it measures the installed `consumer`; `python -m bench.offline` from a
checkout measures that checkout. The first line on stderr names the package measured.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import consumer
from consumer.clinical.classify import classify_sample
from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.state.store import HistoryStore
from consumer.tools.evaluate import evaluate_lines, render
from consumer.tools.jsonout import dumps
from consumer.tools.synthetic import SyntheticGenerator


def _timed(label: str, items: Sequence[Any], step: Callable[[Any], object]) -> dict[str, Any]:
    """Run `step` over every item, timing each call; return the figures."""
    clock = time.perf_counter
    durations = [0.0] * len(items)
    start = clock()
    for i, item in enumerate(items):
        t0 = clock()
        step(item)
        durations[i] = clock() - t0
    total = clock() - start
    durations.sort()
    n = len(durations)
    return {
        "stage": label,
        "events": n,
        "seconds": total,
        "events_per_s": n / total,
        "p50_us": durations[n // 2] * 1e6,
        "p99_us": durations[min(n - 1, int(n * 0.99))] * 1e6,
        "mean_us": statistics.fmean(durations) * 1e6,
    }


def run(events: int, seed: int) -> list[dict[str, Any]]:
    """Measure every stage on the same `events` synthetic events."""
    print(f"measuring {consumer.__file__}", file=sys.stderr)
    print(f"generating {events} synthetic events (seed {seed})...", file=sys.stderr)
    batch = SyntheticGenerator(seed=seed).events(events)
    lines = [dumps(e) + "\n" for e in batch]
    pipeline = Pipeline(load_ruleset())
    results = []
    print("measuring baseline (json round trip)...", file=sys.stderr)
    results.append(_timed("baseline", lines, lambda line: dumps(json.loads(line))))
    print("measuring classify...", file=sys.stderr)
    results.append(
        _timed("classify", batch, lambda e: classify_sample(e.get("her2_ihc"), e.get("her2_ish")))
    )
    print("measuring pipeline...", file=sys.stderr)
    results.append(_timed("pipeline", batch, pipeline.process))
    print("measuring history...", file=sys.stderr)
    store = HistoryStore()
    results.append(_timed("history", batch, lambda e: store.apply(e, pipeline)))
    print("measuring evaluate --history (end to end)...", file=sys.stderr)
    outputs = render(evaluate_lines(iter(lines), pipeline, HistoryStore()))
    results.append(_timed("evaluate", range(len(lines)), lambda _: next(outputs)))
    base = results[0]["events_per_s"]
    for r in results:
        r["ratio_to_baseline"] = r["events_per_s"] / base
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, print the table (and JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = run(args.events, args.seed)
    print(f"{'stage':<10} {'events/s':>10} {'p50 us':>8} {'p99 us':>8} {'vs baseline':>12}")
    for r in results:
        print(
            f"{r['stage']:<10} {r['events_per_s']:>10,.0f} {r['p50_us']:>8.1f} "
            f"{r['p99_us']:>8.1f} {r['ratio_to_baseline']:>11.2f}x"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
