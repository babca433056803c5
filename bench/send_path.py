"""The service's publish path alone, against a real broker: CPU per output record.

`ProducerHandle.send_and_wait` (consumer/runtime/kafka/producer.py, the path every output and
changelog record of an at-least-once batch takes) sends N records shaped like the service's
(a patient key, a ~300-byte value, the input's partition and timestamp) in batches of
--batch records, and this script prints the CPU the sending thread spent per record and the
CPU of the process's other threads (the client's I/O threads) per record.

To compare two versions of the code, pass both trees: each round runs a child per tree,
interleaved (A B A B ...), and the medians and the ratio B/A are printed. CPU per record, not
records/s: on a shared 2-core machine it is far steadier.

Usage: python bench/send_path.py [--records 60000] [--batch 3000] [--rounds 3]
                                 [--client kafka-python|confluent] [--trees DIR_A,DIR_B]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kafka_bench as kb

REPO = Path(__file__).resolve().parents[1]
VALUE_BYTES = 300


def child(bootstrap: str, topic: str, client: str, records: int, batch: int) -> None:
    """Send `records` through ProducerHandle.send_and_wait; print CPU µs per record of this
    thread and of the other threads."""
    from consumer.config import Settings  # noqa: PLC0415 - the tree under test's
    from consumer.runtime.kafka.clients import clients_for  # noqa: PLC0415
    from consumer.runtime.kafka.producer import ProducerHandle  # noqa: PLC0415
    from consumer.runtime.records import Output  # noqa: PLC0415

    settings = Settings(bootstrap_servers=bootstrap, kafka_client=client)
    handle = ProducerHandle(clients_for(settings), settings, "bench-send-path")
    handle.warm_up([topic])
    outputs = [
        Output(
            topic,
            b"patient-%06d" % (i % 5000),
            os.urandom(VALUE_BYTES),
            partition=i % kb.PARTITIONS,
            timestamp_ms=1_700_000_000_000 + i,
            origin=None,
        )
        for i in range(batch)
    ]
    handle.send_and_wait(outputs)  # the first batch pays for connections and metadata
    thread_started, process_started = time.thread_time(), time.process_time()
    for _ in range(records // batch):
        sent = handle.send_and_wait(outputs)
        if sent.failed or sent.refused:
            raise SystemExit(f"{len(sent.failed) + len(sent.refused)} records not acknowledged")
    thread = time.thread_time() - thread_started
    others = time.process_time() - process_started - thread
    sent_records = records // batch * batch
    print(thread / sent_records * 1e6, others / sent_records * 1e6)


def run_child(tree: Path, bootstrap: str, topic: str, args: argparse.Namespace) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(  # noqa: S603 - this script, our own interpreter
        [
            sys.executable,
            __file__,
            "--child",
            bootstrap,
            topic,
            args.client,
            str(args.records),
            str(args.batch),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return [float(x) for x in out.stdout.split()[-2:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", default="kafka-python")
    parser.add_argument("--trees", default=str(REPO))
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bootstrap, topic, client, records, batch = args.child
        child(bootstrap, topic, client, int(records), int(batch))
        return 0
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    figures: dict[Path, list[list[float]]] = {tree: [] for tree in trees}
    with kb.broker() as bootstrap:
        topic = f"bench-send-{uuid.uuid4().hex[:6]}"
        kb.create_topic(bootstrap, topic)
        for round_no in range(1, args.rounds + 1):
            for tree in trees:
                main_us, other_us = run_child(tree, bootstrap, topic, args)
                figures[tree].append([main_us, other_us])
                kb.log(
                    f"round {round_no} {tree.name}: sending thread {main_us:.2f} µs/record, "
                    f"other threads {other_us:.2f}"
                )
    print(f"\n{args.client}, {args.records} records in batches of {args.batch}, medians")
    print(f"{'tree':<30} {'sending thread':>15} {'other threads':>14} {'x first':>8}")
    first = statistics.median(r[0] for r in figures[trees[0]])
    for tree in trees:
        main_us = statistics.median(r[0] for r in figures[tree])
        other_us = statistics.median(r[1] for r in figures[tree])
        print(f"{tree!s:<30} {main_us:>15.2f} {other_us:>14.2f} {main_us / first:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
