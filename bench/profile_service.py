"""Where the service's time goes: `her2-consumer run` under py-spy, its samples grouped by part.

Pre-loads N synthetic events (as bench/kafka_bench.py does), starts the service, attaches
py-spy at the first commit and detaches at the last, so start-up (imports, rule loading, the
group join) is left out. py-spy samples only the thread holding the interpreter lock (`--gil`):
the service is one process whose threads (main loop, kafka-python's producer and consumer I/O
threads) share that lock, so these shares are shares of the one core the process can use.

It prints the share of each part, the µs of held lock each costs per event, and from
kafka-python's own µs per event the most events/s its CPU alone would allow if everything else
cost nothing (the broker's side is not in it: bench/kafka_bench.py's producer ceiling is).

Needs py-spy (`pip install -e '.[bench]'`) and permission to attach to a process (root, or
CAP_SYS_PTRACE).

Usage: python bench/profile_service.py [--events 20000] [--guarantee at_least_once]
                                       [--rate-hz 200] [--raw bench/results/profile.txt]
                                       [--json bench/results/profile.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kafka_bench as kb

REPO = Path(__file__).resolve().parents[1]

# (part, frame markers): a sample belongs to the part of the innermost frame (nearest the
# leaf) that carries one of these function names (where they live: Encoder/Decoder in
# consumer/avro/codec.py, DiskStates in consumer/state/backends.py, HistoryStore in
# consumer/state/store.py, check_event in consumer/clinical/validate.py, Pipeline in
# consumer/clinical/pipeline.py, Loop in consumer/runtime/loop.py; the batch metrics are
# Gauges in consumer/runtime/gauges.py, counted with the loop's bookkeeping); samples of
# threads other than the main one are kafka-python's I/O threads (or the HTTP endpoint's).
# History encode/decode are told apart from the outputs' and the input's by a HistoryStore frame
# above them. sqlite releases the lock while it works, so the disk store's own I/O shows only in
# the wall time, not in these samples.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("avro encode", ("Encoder.encode",)),
    ("avro decode", ("Decoder.decode", "_read")),
    (
        "history store files (sqlite)",
        (
            "DiskStates.get",
            "DiskStates.put",
            "DiskStates.put_many",
            "DiskStates.delete",
        ),
    ),
    ("validation", ("check_event",)),
    # the patient aggregate (Pipeline.step -> patient.step: facts, rules, transitions) runs
    # under HistoryStore.apply: counted here, not as the store's own work
    ("clinical pipeline", ("Pipeline.process", "Pipeline.classify", "Pipeline.step")),
    ("kafka-python producer (send, flush)", ("KafkaProducer.send", "KafkaProducer.flush")),
    (
        "kafka-python consumer (poll, commit, offsets)",
        (
            "KafkaConsumer.poll",
            "KafkaConsumer.commit",
            "KafkaConsumer.end_offsets",
            "KafkaConsumer.position",
        ),
    ),
)
KAFKA_PARTS = frozenset(
    {
        "kafka-python producer (send, flush)",
        "kafka-python consumer (poll, commit, offsets)",
        "kafka-python I/O threads",
    }
)


def classify(stack: str) -> str:
    """The part one collapsed py-spy stack belongs to."""
    frames = stack.split(";")
    thread = frames[0]
    if "MainThread" not in thread:
        return "http endpoint" if "her2-http" in thread else "kafka-python I/O threads"
    names = [frame.split(" (", 1)[0] for frame in frames[1:]]
    if "Loop.run" not in names:  # consumer/runtime/loop.py
        return "start-up and shutdown"
    history = any(name.startswith("HistoryStore.") for name in names)
    for name in reversed(names):
        for part, markers in PARTS:
            if name in markers:
                if history and part in ("avro encode", "avro decode"):
                    return f"{part} (patient history)"
                return part
        if name.startswith("HistoryStore."):
            return "history store (lifecycle, copies)"
    return "service loop (bookkeeping, metrics)"


def aggregate(raw: Path) -> dict[str, int]:
    """Samples per part of a py-spy `--format raw` file."""
    parts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[classify(stack)] += int(count)
    return dict(parts)


def profile(bootstrap: str, count: int, guarantee: str, rate_hz: int, raw: Path) -> dict[str, Any]:
    """Run the service over `count` events with py-spy attached between the first and the last
    commit; return the measured rate, the wall time and the samples per part."""
    env = kb.topics_for(f"prof-{uuid.uuid4().hex[:6]}")
    topic, group = env["HER2_INPUT_TOPIC"], env["HER2_GROUP_ID"]
    kb.create_topic(bootstrap, topic)
    kb.log(f"producing {count} events")
    kb.produce(bootstrap, topic, kb.encoded_events(count, 7))
    proc = kb.start_service(bootstrap, env, guarantee)
    spy: subprocess.Popen[bytes] | None = None
    first_t, first_n = 0.0, 0
    try:
        for done in kb.commit_progress(bootstrap, group, topic, count, [proc], 1800, 0.1):
            if spy is None and done > 0:
                first_t, first_n = time.perf_counter(), done
                spy = subprocess.Popen(  # noqa: S603 - py-spy from PATH, our own child
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--gil",
                        "--threads",
                        "--nonblocking",
                        "--rate",
                        str(rate_hz),
                        "--format",
                        "raw",
                        "-o",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                kb.log("py-spy attached at the first commit")
        seconds = time.perf_counter() - first_t
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT) and not raw.exists():
                sys.exit(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
        kb.stop_service(proc)
    events = count - first_n
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "samples": aggregate(raw),
    }


def report(result: dict[str, Any], rate_hz: int) -> dict[str, Any]:
    """Shares per part, the lock's busy fraction and the bound kafka-python sets."""
    samples: dict[str, int] = result["samples"]
    measured = {part: n for part, n in samples.items() if part != "start-up and shutdown"}
    total = sum(measured.values()) or 1
    shares = {part: n / total for part, n in sorted(measured.items(), key=lambda kv: -kv[1])}
    kafka_share = sum(share for part, share in shares.items() if part in KAFKA_PARTS)
    rate = result["events_per_s"]
    # µs of held lock per event: the samples cover only the time some thread held the lock
    held_per_event = min(1.0, total / (result["seconds"] * rate_hz)) * 1e6 / rate
    kafka_us = kafka_share * held_per_event
    return {
        **result,
        "shares": shares,
        "lock_busy": total / (result["seconds"] * rate_hz),
        "us_per_event": {part: share * held_per_event for part, share in shares.items()},
        "kafka_python_share": kafka_share,
        "kafka_python_bound_events_per_s": 1e6 / kafka_us if kafka_us else float("inf"),
    }


def main() -> None:
    """Parse arguments, profile, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once"
    )
    parser.add_argument("--rate-hz", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--raw", default=str(REPO / "bench/results/profile.txt"))
    parser.add_argument("--json", default=str(REPO / "bench/results/profile.json"))
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: python3 -m pip install -e '.[bench]'")
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    with kb.broker() as bootstrap:
        out = report(
            profile(bootstrap, args.events, args.guarantee, args.rate_hz, raw), args.rate_hz
        )
    print(
        f"\n{args.guarantee}: {out['events']:,} events at {out['events_per_s']:,.0f} events/s; "
        f"the interpreter lock was held {out['lock_busy']:.0%} of the time"
    )
    print(f"{'part':48} {'share':>6} {'µs/event (lock held)':>21}")
    for part, share in out["shares"].items():
        print(f"{part:48} {share:6.1%} {out['us_per_event'][part]:21.1f}")
    print(
        f"kafka-python's own share: {out['kafka_python_share']:.1%} -> with every other part "
        f"free, its CPU alone allows at most {out['kafka_python_bound_events_per_s']:,.0f} "
        "events/s"
    )
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"figures written to {args.json}; raw stacks in {raw}")


if __name__ == "__main__":
    main()
