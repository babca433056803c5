"""The runtime's own cost per event: the whole service on the in-memory fake broker, against the
same work done without it, measured in one run (no Kafka, no network: what the loop,
the processor's bookkeeping, the outputs, the metrics and the delivery cost on top of the
clinical work).

Stages (the same N synthetic events, seed 7, one input partition, memory history store):
  core      decode -> validate -> HistoryStore.apply -> encode the outputs, take_dirty per 500
            events: what any application doing this job must do (the Quix peer does it too)
  service   `Service.run()` on tests/runtime/fakes.py's FakeBroker, at-least-once
  eos       the same, exactly-once
Each stage runs `--rounds` times interleaved; the medians are printed with the ratio of each
service stage to `core` (the runtime's overhead factor) and the µs per event above `core`.
`--profile` adds a cProfile of one service stage, by module (cumulative time of the frames
whose own code is in each file).

Usage: python bench/runtime_overhead.py [--events 20000] [--rounds 3] [--profile]
                                        [--json bench/results/runtime_overhead.json]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "runtime"))

from fakes import FakeBroker  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from consumer.avro.codec import Encoder  # noqa: E402
from consumer.avro.outputs import Codecs  # noqa: E402
from consumer.clinical.pipeline import Pipeline  # noqa: E402
from consumer.clinical.rules import load_ruleset  # noqa: E402
from consumer.clinical.validate import check_event  # noqa: E402
from consumer.config import Settings, Tuning  # noqa: E402
from consumer.ops.logs import configure_logging  # noqa: E402
from consumer.ops.metrics import Metrics  # noqa: E402
from consumer.resources import PATHOLOGY_RESULT, parsed_schema  # noqa: E402
from consumer.runtime import routing  # noqa: E402
from consumer.service import Service  # noqa: E402
from consumer.state.backends import MEMORY  # noqa: E402
from consumer.state.store import HistoryStore  # noqa: E402
from consumer.tools.synthetic import SyntheticGenerator  # noqa: E402

BATCH = 500


def encoded_events(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, single-object Avro value) of `count` synthetic events."""
    encoder = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    return [
        (routing.patient_key(e["patient_id"]), encoder.encode(e))
        for e in SyntheticGenerator(seed=seed).events(count)
    ]


def core(events: list[tuple[bytes, bytes]], pipeline: Pipeline, settings: Settings) -> float:
    """Seconds for the clinical work alone (what the peer does too)."""
    codecs = Codecs.build(settings, None)
    topics = settings.topics
    store = HistoryStore()
    started = time.perf_counter()
    for i, (_key, value) in enumerate(events, 1):
        event = check_event(codecs.decoder.decode(value))
        outcome = store.apply(event, pipeline)
        codecs.classification.encode(outcome.classification)
        for alert in outcome.alerts:
            codecs.alerts[topics.alert_topic(alert["alert_type"])].encode(alert)
        if i % BATCH == 0:
            store.take_dirty()
    store.take_dirty()
    return time.perf_counter() - started


def service(
    events: list[tuple[bytes, bytes]], pipeline: Pipeline, settings: Settings
) -> tuple[float, int]:
    """Seconds for `Service.run()` over the events on a fake broker, and the outputs written."""
    broker = FakeBroker()
    broker.create_topic(settings.topics.input, 1)
    for key, value in events:
        broker.append(settings.topics.input, key, value, 0)
    metrics = Metrics(CollectorRegistry(), "bench")
    svc = Service(settings, pipeline, metrics, clients=broker)
    broker.on_idle = svc.stop
    started = time.perf_counter()
    code = svc.run()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the service exited {code}")
    written = sum(
        len(r) for t, logs in broker.topics.items() if t != settings.topics.input for r in logs
    )
    return seconds, written


def by_module(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own (tottime) seconds per source file, largest first."""
    stats = pstats.Stats(profile)
    own: dict[str, float] = {}
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        name = filename.replace(str(REPO) + "/", "")
        if "site-packages/" in name:
            name = name.split("site-packages/")[1].split("/")[0]
        own[name] = own.get(name, 0.0) + row[2]
    return sorted(own.items(), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default=str(REPO / "bench/results/runtime_overhead.json"))
    args = parser.parse_args()
    configure_logging("WARNING")
    pipeline = Pipeline(load_ruleset())
    events = encoded_events(args.events, args.seed)
    with tempfile.TemporaryDirectory() as state_dir:
        base = Settings(
            state_dir=Path(state_dir),
            history_store=MEMORY,
            publish_retries=0,
            tuning=Tuning(poll_timeout_ms=0),
        )
        eos = dataclasses.replace(base, processing_guarantee="exactly_once")
        stages: dict[str, Callable[[], float]] = {
            "core": lambda: core(events, pipeline, base),
            "service": lambda: service(events, pipeline, base)[0],
            "eos": lambda: service(events, pipeline, eos)[0],
        }
        seconds: dict[str, list[float]] = {name: [] for name in stages}
        for round_ in range(1, args.rounds + 1):
            for name, stage in stages.items():
                seconds[name].append(stage())
                rate = args.events / seconds[name][-1]
                print(f"round {round_} {name:8s} {rate:10,.0f} events/s", flush=True)
        medians = {name: statistics.median(s) for name, s in seconds.items()}
        result: dict[str, Any] = {"events": args.events, "rounds": args.rounds, "stages": {}}
        print(f"\n{'stage':8s} {'events/s':>10s} {'x core':>7s} {'µs/event above core':>20s}")
        for name, median in medians.items():
            rate = args.events / median
            factor = median / medians["core"]
            above = (median - medians["core"]) / args.events * 1e6
            result["stages"][name] = {
                "events_per_s": rate,
                "seconds": seconds[name],
                "x_core": factor,
                "us_above_core": above,
            }
            print(f"{name:8s} {rate:10,.0f} {factor:7.2f} {above:20.1f}")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            service(events, pipeline, base)
            profile.disable()
            total = sum(s for _, s in by_module(profile))
            print("\nown time by file, service stage under cProfile:")
            rows = by_module(profile)[:25]
            result["profile"] = rows
            for name, own in rows:
                share, per_event = own / total * 100, own / args.events * 1e6
                print(f"{share:6.1f} %  {per_event:7.1f} µs/event  {name}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
