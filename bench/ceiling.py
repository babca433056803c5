"""How far ahead of the Quix Streams peer the service could be if its runtime cost nothing.

The peer (bench/peer/app.py) runs the project's own decoder, validation, patient aggregate and
output encoders: that work is shared, and no runtime can make it cheaper for one side only. This
script measures, interleaved in one run on the same synthetic events:

  service   `her2-consumer run` on the local broker (CPU per event of its process, /proc)
  peer      the Quix Streams peer on the same broker (CPU per event of its process)
  core      the work the service cannot shed, alone in a fresh process without Kafka: decode,
            validate, history store (memory backend) with the patient aggregate, encode the
            outputs, the changelog records every 500 events (bench/runtime_overhead.py's core
            stage), with the service's GC tuning; its CPU per event
  shared    the same without the history store (patient states kept as objects): the work the
            peer does too, before its own state serialisation and framework

and prints the medians and the ratios: peer/service (where the service stands, by CPU and by
events/s), peer/core (the ceiling: the ratio if the service's Kafka client, loop, metrics,
delivery and disk store cost nothing), peer/shared (its history store free as well), and the CPU
per event the service's runtime may cost on top of `core` to be 1.5x ahead of the peer. CPU per
event, not only events/s: on a shared 2-core machine it is far steadier.

Usage: python bench/ceiling.py [--events 20000] [--rounds 3] [--guarantee at_least_once]
                               [--json bench/results/ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kafka_bench as kb

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.5  # issue 17: the service at >= 1.5x the peer


def core_cpu_us(count: int, seed: int) -> tuple[float, float]:
    """CPU µs per event of the shared and the core stages, run in a fresh interpreter (as the
    service would be: its own process, the service's GC tuning)."""
    out = subprocess.run(  # noqa: S603 - this script, our own interpreter
        [sys.executable, __file__, "--core-stage", str(count), str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    shared, core = out.stdout.split()[-2:]
    return float(shared), float(core)


def shared(events: list[tuple[bytes, bytes]], pipeline: Any, settings: Any) -> None:
    """What the peer does too, without any state serialisation: decode, validate, the patient
    aggregate on states kept as objects, encode the outputs."""
    from consumer.avro.outputs import Codecs  # noqa: PLC0415
    from consumer.clinical.validate import check_event  # noqa: PLC0415

    codecs = Codecs.build(settings, None)
    topics = settings.topics
    patients: dict[str, Any] = {}
    for _key, value in events:
        event = check_event(codecs.decoder.decode(value))
        pid = event["patient_id"]
        step = pipeline.step(patients.get(pid), event)
        if step.changed:
            patients[pid] = step.state
        codecs.classification.encode(step.classification)
        for alert in step.alerts:
            codecs.alerts[topics.alert_topic(alert["alert_type"])].encode(alert)


def core_stage(count: int, seed: int) -> None:
    """The child of core_cpu_us: prints the CPU µs per event of the shared and core stages."""
    import tempfile  # noqa: PLC0415 - only the child needs these

    sys.path.insert(0, str(REPO / "bench"))
    import runtime_overhead as ro  # noqa: PLC0415

    from consumer.app import tune_gc  # noqa: PLC0415
    from consumer.clinical.pipeline import Pipeline  # noqa: PLC0415
    from consumer.clinical.rules import load_ruleset  # noqa: PLC0415
    from consumer.config import Settings  # noqa: PLC0415
    from consumer.state.backends import MEMORY  # noqa: PLC0415

    tune_gc(Settings().tuning.gc_gen0_threshold)
    events = ro.encoded_events(count, seed)
    pipeline = Pipeline(load_ruleset())
    with tempfile.TemporaryDirectory() as state_dir:
        settings = Settings(state_dir=Path(state_dir), history_store=MEMORY)
        for stage in (shared, ro.core):
            started = time.process_time()
            stage(events, pipeline, settings)
            print((time.process_time() - started) / count * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once"
    )
    parser.add_argument(
        "--clients",
        default="",
        help="comma-separated HER2_KAFKA_CLIENT values, one service stage each per round "
        "(default: the service's own default client)",
    )
    parser.add_argument("--json", default=str(REPO / "bench/results/ceiling.json"))
    parser.add_argument("--core-stage", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.core_stage:
        core_stage(*args.core_stage)
        return 0
    clients = [c for c in args.clients.split(",") if c] or [""]
    services = [f"service {c}".strip() for c in clients]
    cpu: dict[str, list[float]] = {who: [] for who in (*services, "peer", "core", "shared")}
    rates: dict[str, list[float]] = {who: [] for who in (*services, "peer")}
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    with kb.broker() as bootstrap:
        for n in range(1, args.rounds + 1):
            for client, who in zip(clients, services, strict=True):
                if client:  # the service subprocess inherits this process's environment
                    os.environ["HER2_KAFKA_CLIENT"] = client
                service = kb.service_throughput(bootstrap, args.events, args.seed, args.guarantee)
                os.environ.pop("HER2_KAFKA_CLIENT", None)
                cpu[who].append(service["cpu_us_per_event"])
                rates[who].append(service["events_per_s"])
            peer = kb.peer_throughput(bootstrap, args.events, args.seed, args.guarantee)
            cpu["peer"].append(peer["cpu_us_per_event"])
            rates["peer"].append(peer["events_per_s"])
            shared_us, core_us = core_cpu_us(args.events, args.seed)
            cpu["shared"].append(shared_us)
            cpu["core"].append(core_us)
            loads.append(os.getloadavg())
            kb.log(
                f"round {n}: CPU µs/event " + ", ".join(f"{w} {v[-1]:,.0f}" for w, v in cpu.items())
            )
    med = {who: statistics.median(values) for who, values in cpu.items()}
    result: dict[str, Any] = {
        "events": args.events,
        "rounds": args.rounds,
        "guarantee": args.guarantee,
        "cpu_us_per_event": cpu,
        "median": med,
        "events_per_s": rates,
        "rate_ratio_over_peer": {
            who: statistics.median(rates[who]) / statistics.median(rates["peer"])
            for who in services
        },
        "peer_over_service": {who: med["peer"] / med[who] for who in services},
        "ceiling_peer_over_core": med["peer"] / med["core"],
        "ceiling_peer_over_shared": med["peer"] / med["shared"],
        "runtime_budget_us_for_target": med["peer"] / TARGET - med["core"],
        "runtime_now_us": {who: med[who] - med["core"] for who in services},
        "load": loads,
    }
    print(f"\n{args.guarantee}, CPU µs per event (medians of {args.rounds} rounds):")
    for who, values in cpu.items():
        print(f"  {who:22} {med[who]:7,.0f}   ({' / '.join(f'{v:,.0f}' for v in values)})")
    for who in services:
        print(
            f"peer / {who:22} {result['peer_over_service'][who]:.2f}  (where it stands); "
            f"its runtime on top of core {result['runtime_now_us'][who]:,.0f} µs/event; "
            f"events/s {' / '.join(f'{v:,.0f}' for v in rates[who])} against the peer's "
            f"{' / '.join(f'{v:,.0f}' for v in rates['peer'])}: rate ratio "
            f"{result['rate_ratio_over_peer'][who]:.2f}"
        )
    print(
        f"peer / core                   {result['ceiling_peer_over_core']:.2f}  (the ceiling: "
        f"the service's runtime free); {TARGET}x the peer leaves the runtime "
        f"{result['runtime_budget_us_for_target']:,.0f} µs/event"
    )
    print(
        f"peer / shared                 {result['ceiling_peer_over_shared']:.2f}  (the service's "
        "runtime and history store both free)"
    )
    print(
        "(shared and core run one after the other in one child interpreter, shared first: core "
        "starts with warm caches, so the ceiling leans towards the service)"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
