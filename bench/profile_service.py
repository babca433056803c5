"""Where the service's time goes: `her2-consumer run` under py-spy, its samples grouped by part.

Pre-loads N synthetic events (as bench/kafka_bench.py does), starts the service, attaches
py-spy at the first commit and detaches at the last, so start-up (imports, rule loading, the
group join) is left out. py-spy samples only the thread holding the interpreter lock (`--gil`):
the service is one process whose threads (main loop, kafka-python's producer and consumer I/O
threads) share that lock, so these shares are shares of the one core the process can use.

It prints the share of each part, the µs each costs per event (its share of the process's CPU
per event from /proc: py-spy's lock-held sample count undercounts the time, see
docs/benchmarks.md, ninth session), and from
kafka-python's own µs per event the most events/s its CPU alone would allow if everything else
cost nothing (the broker's side is not in it: bench/kafka_bench.py's producer ceiling is).
It also prints the CPU (user + system, from /proc) the main thread and the other threads used
per event over the same window: under load a thread can hold the lock while the OS has it off
the CPU, and C code that released the lock (sqlite, sockets) runs without it, so the held-lock
figures and the CPU can differ.

`--peer` profiles the Quix Streams peer (bench/peer/app.py) the same way, with the project's
shared parts (decode, validation, clinical pipeline, output encode) told apart by the same frame
names, its patient state (decode_state / encode_state, RocksDB) and Quix's own runtime by module:
what each side spends on its own, beside the work both do. `--all-threads` samples every running
thread instead of only the lock holder.

Needs py-spy (`pip install -e '.[bench]'`) and permission to attach to a process (root, or
CAP_SYS_PTRACE).

Usage: python bench/profile_service.py [--events 20000] [--guarantee at_least_once]
                                       [--peer] [--all-threads]
                                       [--rate-hz 200] [--raw bench/results/profile.txt]
                                       [--json bench/results/profile.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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


# The Quix Streams peer (bench/peer/app.py, `--peer`): the project's shared parts by the same
# markers (its patient state is decode_state / encode_state of consumer/state/store.py, one value
# per patient), the rest by the quixstreams module a frame is in. librdkafka's own threads are
# C: py-spy does not see them (their CPU is in the /proc figures).
PEER_STATE = ("decode_state", "encode_state")
PEER_MODULES: tuple[tuple[str, str], ...] = (
    ("quixstreams/state/", "quixstreams state (RocksDB, changelog)"),
    ("quixstreams/kafka/producer", "quixstreams producer (confluent-kafka)"),
    ("quixstreams/internal_producer", "quixstreams producer (confluent-kafka)"),
    ("quixstreams/rowproducer", "quixstreams producer (confluent-kafka)"),
    ("quixstreams/kafka/consumer", "quixstreams consumer (confluent-kafka)"),
    ("quixstreams/internal_consumer", "quixstreams consumer (confluent-kafka)"),
    ("quixstreams/rowconsumer", "quixstreams consumer (confluent-kafka)"),
    ("quixstreams/checkpointing", "quixstreams checkpoints (commit)"),
)


def classify_peer(stack: str) -> str:
    """The part one collapsed py-spy stack of the peer belongs to."""
    frames = stack.split(";")[1:]
    names = [frame.split(" (", 1)[0] for frame in frames]
    if "Application.run" not in names and "Application._run" not in names:
        return "start-up and shutdown"
    state = any(name in PEER_STATE for name in names)
    for name in reversed(names):
        for part, markers in PARTS:
            if name in markers and part not in KAFKA_PARTS:
                if state and part in ("avro encode", "avro decode"):
                    return f"{part} (patient history)"
                return part
    if state:  # store.py's own work on the one value: assembling, packing, copies
        return "patient state (decode_state, encode_state)"
    for frame in reversed(frames):
        for module, part in PEER_MODULES:
            if module in frame:
                return part
    return "quixstreams processing (dataframe, context)"


def aggregate(raw: Path, by: Callable[[str], str] = classify) -> dict[str, int]:
    """Samples per part of a py-spy `--format raw` file."""
    parts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[by(stack)] += int(count)
    return dict(parts)


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) each live thread of a process has used so far, by thread id
    (the main thread's id is the process id; threads that ended are not listed)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / kb.CLOCK_TICKS
    return out


def thread_split(pid: int, start: dict[int, float], end: dict[int, float]) -> dict[str, float]:
    """CPU seconds of the main thread and of all other threads between two snapshots."""
    main = end.get(pid, 0.0) - start.get(pid, 0.0)
    others = sum(t - start.get(tid, 0.0) for tid, t in end.items() if tid != pid)
    return {"main thread": main, "other threads": others}


def start_peer(
    bootstrap: str, env_topics: dict[str, str], guarantee: str, state_dir: str
) -> subprocess.Popen[bytes]:
    """bench/peer/app.py as kafka_bench.py's peer stage runs it (its output topics created)."""
    for key, name in env_topics.items():
        if key.endswith("_TOPIC") and key not in ("HER2_HISTORY_TOPIC", "HER2_INPUT_TOPIC"):
            kb.create_topic(bootstrap, name)
    env = {
        **os.environ,
        **env_topics,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HER2_PROCESSING_GUARANTEE": guarantee,
        "PEER_STATE_DIR": state_dir,
        "HER2_INSTANCE_ID": f"peer-{uuid.uuid4().hex[:6]}",
    }
    return subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(REPO / "bench/peer/app.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile(  # noqa: PLR0917 - one call site, the CLI's options
    bootstrap: str,
    count: int,
    guarantee: str,
    rate_hz: int,
    raw: Path,
    gil: bool = True,
    peer: bool = False,
) -> dict[str, Any]:
    """Run the service (or the peer) over `count` events with py-spy attached between the first
    and the last commit; return the measured rate, the wall time and the samples per part."""
    env = kb.topics_for(f"prof-{uuid.uuid4().hex[:6]}")
    topic, group = env["HER2_INPUT_TOPIC"], env["HER2_GROUP_ID"]
    kb.create_topic(bootstrap, topic)
    kb.log(f"producing {count} events")
    kb.produce(bootstrap, topic, kb.encoded_events(count, 7))
    state_dir = tempfile.mkdtemp(prefix="her2-peer-")
    if peer:
        proc = start_peer(bootstrap, env, guarantee, state_dir)
    else:
        proc = kb.start_service(bootstrap, env, guarantee)
    spy: subprocess.Popen[bytes] | None = None
    first_t, first_n = 0.0, 0
    cpu_start: dict[int, float] = {}
    cpu_end: dict[int, float] = {}
    try:
        for done in kb.commit_progress(bootstrap, group, topic, count, [proc], 1800, 0.1):
            if spy is None and done > 0:
                first_t, first_n = time.perf_counter(), done
                cpu_start = thread_cpu_s(proc.pid)
                spy = subprocess.Popen(  # noqa: S603 - py-spy from PATH, our own child
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(proc.pid),
                        *(["--gil"] if gil else []),
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
        cpu_end = thread_cpu_s(proc.pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT) and not raw.exists():
                sys.exit(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
        kb.stop_service(proc)
        shutil.rmtree(state_dir, ignore_errors=True)
    events = count - first_n
    return {
        "process": "peer" if peer else "service",
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "samples": aggregate(raw, classify_peer if peer else classify),
        "cpu_s": thread_split(proc.pid, cpu_start, cpu_end),
    }


def report(result: dict[str, Any], rate_hz: int) -> dict[str, Any]:
    """Shares per part, the lock's busy fraction and the bound kafka-python sets."""
    samples: dict[str, int] = result["samples"]
    measured = {part: n for part, n in samples.items() if part != "start-up and shutdown"}
    total = sum(measured.values()) or 1
    shares = {part: n / total for part, n in sorted(measured.items(), key=lambda kv: -kv[1])}
    kafka_share = sum(share for part, share in shares.items() if part in KAFKA_PARTS)
    # µs per event: the shares of the process's CPU per event (/proc, every thread). py-spy's
    # count of lock-held samples undercounts (perf put ~83 % of the main thread in the
    # interpreter while py-spy saw the lock held for ~54 % of the wall time), so the CPU, not
    # the sample count, gives the absolute figures; the shares are py-spy's.
    cpu_per_event = sum(result["cpu_s"].values()) * 1e6 / result["events"]
    kafka_us = kafka_share * cpu_per_event
    return {
        **result,
        "shares": shares,
        "lock_busy": total / (result["seconds"] * rate_hz),
        "us_per_event": {part: share * cpu_per_event for part, share in shares.items()},
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
    parser.add_argument(
        "--peer",
        action="store_true",
        help="profile the Quix Streams peer (bench/peer/app.py) instead of the service",
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread py-spy sees running (also in C code that released the "
        "interpreter lock: sqlite, sockets) instead of only the lock holder; shares are then "
        "of running samples, not of the one core the lock allows",
    )
    parser.add_argument("--raw", default=str(REPO / "bench/results/profile.txt"))
    parser.add_argument("--json", default=str(REPO / "bench/results/profile.json"))
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: python3 -m pip install -e '.[bench]'")
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    with kb.broker() as bootstrap:
        out = report(
            profile(
                bootstrap,
                args.events,
                args.guarantee,
                args.rate_hz,
                raw,
                gil=not args.all_threads,
                peer=args.peer,
            ),
            args.rate_hz,
        )
    print(
        f"\n{out['process']} {args.guarantee}: {out['events']:,} events at "
        f"{out['events_per_s']:,.0f} events/s; "
        f"the interpreter lock was held {out['lock_busy']:.0%} of the time"
    )
    print(f"{'part':48} {'share':>6} {'µs/event (share x CPU)':>23}")
    for part, share in out["shares"].items():
        print(f"{part:48} {share:6.1%} {out['us_per_event'][part]:23.1f}")
    cpu = out["cpu_s"]
    main_us, other_us = (cpu[k] / out["events"] * 1e6 for k in ("main thread", "other threads"))
    print(
        f"CPU per event (/proc, user + system): main thread {main_us:,.0f} µs, "
        f"other threads {other_us:,.0f} µs; "
        f"{(cpu['main thread'] + cpu['other threads']) / out['seconds']:.2f} cores"
    )
    if out["process"] == "service" and out["kafka_python_share"] > 0:  # not on confluent
        print(
            f"kafka-python's own share: {out['kafka_python_share']:.1%} -> with every other part "
            f"free, its CPU alone allows at most {out['kafka_python_bound_events_per_s']:,.0f} "
            "events/s"
        )
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"figures written to {args.json}; raw stacks in {raw}")


if __name__ == "__main__":
    main()
