"""A lost changelog rebuilt at scale, against an uninterrupted run (README "If the changelog
topic is lost"): the figures the README quotes.

Two runs of the service over the same events, on fresh topics each:
- uninterrupted: N synthetic events, then M cancellations of earlier accessions;
- interrupted: the same N events; then (with --upgrade) an earlier release's upgrade that
  re-published every tenth open alert as its next revision with another text and rule version;
  the changelog deleted; the history rebuilt (`--procedure rebuild`: `her2-consumer
  rebuild-history`; `replay`: the older procedure, the group reset to the earliest offsets and
  the service replaying); then the same M cancellations (with --meanwhile: sent while the
  consumers are stopped, before the rebuild). With --behind K, the group's committed offsets
  are moved back K records per partition before the rebuild: at-least-once, the commits of the
  last batches lost after their outputs were published.
Both sides' alert topics are folded as a reader does (highest revision per alert_id) and
compared: alerts whose status differs (a care team shown the wrong thing), and whose revision
differs or is lower on the interrupted side.

Usage: python bench/rebuild_check.py [--events 20000] [--cancellations 2000]
                                     [--procedure rebuild|replay] [--upgrade]
                                     [--guarantee at_least_once|exactly_once]
                                     [--behind K] [--meanwhile]
The broker is KAFKA_BOOTSTRAP_SERVERS if set, else a local one (as bench/kafka_bench.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import kafka_bench as kb
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumer.avro.codec import Encoder
from consumer.avro.outputs import Codecs
from consumer.config import Settings
from consumer.resources import HER2_ALERT, PATHOLOGY_RESULT, parsed_schema
from consumer.tools.downstream import output_decoder, read_alert_topics
from consumer.tools.synthetic import SyntheticGenerator

SEED = 11


def _env(boot: str, topics: dict[str, str], guarantee: str) -> dict[str, str]:
    return {
        **os.environ,
        **topics,
        "KAFKA_BOOTSTRAP_SERVERS": boot,
        "HER2_PROCESSING_GUARANTEE": guarantee,
        "HER2_HTTP_PORT": "0",
        "HER2_LOG_LEVEL": "WARNING",
    }


def _run_until(env: dict[str, str], topics: dict[str, str], boot: str, count: int) -> None:
    """`run` (a dynamic member: it leaves the group when stopped) until `count` are committed."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(  # our own module
            [sys.executable, "-m", "consumer", "run"], env=env, stderr=err
        )
        for _ in kb.commit_progress(
            boot, topics["HER2_GROUP_ID"], topics["HER2_INPUT_TOPIC"], count, [proc], 900
        ):
            pass
        deadline = time.monotonic() + 120  # joined (its history restored) before it stops,
        while proc.poll() is None and time.monotonic() < deadline:  # when nothing was left
            if kb.group_members(boot, topics["HER2_GROUP_ID"]):
                break
            time.sleep(0.5)
        code = kb.stop_service(proc)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the service did not stop cleanly (exit {code}): {tail}")


def _fold(env: dict[str, str], boot: str) -> dict[str, dict[str, Any]]:
    s = Settings.from_env(env)
    fold, bad = read_alert_topics(
        {"bootstrap_servers": boot},
        s.topics.alert_topics(),
        decoder=output_decoder(s, HER2_ALERT, None),
        timeout_s=300,
    )
    if bad:
        raise RuntimeError(f"{bad} alert records could not be decoded")
    return fold.latest


def _events(n: int, m: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """N events (patient after patient) and M cancellations of accessions among them."""
    enc = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT))
    events = list(itertools.islice(SyntheticGenerator(seed=SEED).iter_events(), n))
    first = [(e["patient_id"].encode(), enc.encode(e)) for e in events]
    finals = [e for e in events if e["report_status"] == "FINAL"]
    step = max(1, len(finals) // max(1, m))
    later = [
        {
            **e,
            "event_id": e["event_id"] + "-cancel",
            "report_status": "CANCELLED",
            "event_time": (e["event_time"] or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=1),
        }
        for e in finals[::step][:m]
    ]
    return first, [(e["patient_id"].encode(), enc.encode(e)) for e in later]


def _upgrade(env: dict[str, str], boot: str) -> int:
    """An earlier release's upgrade: every tenth open alert re-published as its next revision
    with another text and rule version. Returns how many."""
    s = Settings.from_env(env)
    codecs = Codecs.build(s, None)
    producer = KafkaProducer(bootstrap_servers=boot)
    bumped = 0
    for i, (_aid, rec) in enumerate(sorted(_fold(env, boot).items())):
        if i % 10 == 0 and rec["status"] == "ACTIVE":
            topic = s.topics.alert_topic(rec["alert_type"])
            older = {
                **rec,
                "revision": rec["revision"] + 1,
                "rule_version": rec["rule_version"] + 50,
                "detail": "an earlier release's text",
            }
            producer.send(topic, codecs.alerts[topic].encode(older), key=rec["patient_id"].encode())
            bumped += 1
    producer.flush()
    producer.close()
    return bumped


def _move_back(admin: Any, topics: dict[str, str], k: int) -> None:
    """The group's committed offsets K records back on every input partition."""
    group, topic = topics["HER2_GROUP_ID"], topics["HER2_INPUT_TOPIC"]
    inputs = [TopicPartition(topic, p) for p in range(kb.PARTITIONS)]
    committed = admin.list_group_offsets({group: inputs})[group]
    admin.alter_group_offsets(
        group,
        {tp: OffsetAndMetadata(max(0, committed[tp].offset - k), "", -1) for tp in inputs},
    )


def _compare(fa: dict[str, Any], fb: dict[str, Any]) -> dict[str, Any]:
    """The interrupted side's fold (fa) against the uninterrupted one's (fb)."""
    ids = fa.keys() | fb.keys()
    status = sum(
        1 for k in ids if (fa.get(k) or {}).get("status") != (fb.get(k) or {}).get("status")
    )
    revision = sum(
        1 for k in ids if (fa.get(k) or {}).get("revision") != (fb.get(k) or {}).get("revision")
    )
    lowers = [k for k in sorted(fa.keys() & fb.keys()) if fa[k]["revision"] < fb[k]["revision"]]
    lower = len(lowers)

    def shown(k: str) -> list[Any]:  # synthetic patients: code, (revision, status) each side
        a, b = fa.get(k) or {}, fb.get(k) or {}
        return [
            a.get("code") or b.get("code"),
            [a.get("revision"), a.get("status")],
            [b.get("revision"), b.get("status")],
        ]

    return {
        "examples_lower": [shown(k) for k in lowers[:3]],
        "alerts": [len(fa), len(fb)],
        "open": [
            sum(1 for r in fa.values() if r["status"] == "ACTIVE"),
            sum(1 for r in fb.values() if r["status"] == "ACTIVE"),
        ],
        "status_differs": status,
        "revision_differs": revision,
        "revision_lower": lower,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--cancellations", type=int, default=2_000)
    parser.add_argument("--procedure", choices=["rebuild", "replay"], default="rebuild")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument("--behind", type=int, default=0)
    parser.add_argument("--meanwhile", action="store_true")
    args = parser.parse_args()
    n, m = args.events, args.cancellations
    first, later = _events(n, m)
    tag = uuid.uuid4().hex[:6]
    with kb.broker() as boot:
        a, b = kb.topics_for(f"rb-{tag}-a"), kb.topics_for(f"rb-{tag}-b")
        env_a, env_b = _env(boot, a, args.guarantee), _env(boot, b, args.guarantee)
        for t in (a, b):
            kb.create_topic(boot, t["HER2_INPUT_TOPIC"])
        kb.log(f"interrupted side: {n} events")
        kb.produce(boot, a["HER2_INPUT_TOPIC"], first)
        _run_until(env_a, a, boot, n)
        bumped = _upgrade(env_a, boot) if args.upgrade else 0
        with KafkaAdminClient(bootstrap_servers=boot) as admin:
            admin.delete_topics([a["HER2_HISTORY_TOPIC"]])
            if args.behind:
                _move_back(admin, a, args.behind)
        time.sleep(2)
        if args.meanwhile:
            kb.log(f"interrupted side: {len(later)} cancellations sent while stopped")
            kb.produce(boot, a["HER2_INPUT_TOPIC"], later)
        figures: dict[str, Any] = {
            "upgrade_revisions": bumped,
            "procedure": args.procedure,
            "behind": args.behind,
            "meanwhile": args.meanwhile,
        }
        started = time.monotonic()
        if args.procedure == "rebuild":
            done = subprocess.run(
                [sys.executable, "-m", "consumer", "rebuild-history"],
                env=env_a,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"rebuild-history exited {done.returncode}: {done.stderr}")
            figures["summary"] = json.loads(done.stdout)
        else:
            with KafkaAdminClient(bootstrap_servers=boot) as admin:
                admin.alter_group_offsets(
                    a["HER2_GROUP_ID"],
                    {
                        TopicPartition(a["HER2_INPUT_TOPIC"], p): OffsetAndMetadata(0, "", -1)
                        for p in range(kb.PARTITIONS)
                    },
                )
            _run_until(env_a, a, boot, n)
        figures["seconds"] = round(time.monotonic() - started, 1)
        if not args.meanwhile:
            kb.log(f"interrupted side: {len(later)} cancellations")
            kb.produce(boot, a["HER2_INPUT_TOPIC"], later)
        _run_until(env_a, a, boot, n + len(later))
        kb.log("uninterrupted side")
        kb.produce(boot, b["HER2_INPUT_TOPIC"], first + later)
        _run_until(env_b, b, boot, n + len(later))
        fa, fb = _fold(env_a, boot), _fold(env_b, boot)
    figures.update(_compare(fa, fb))
    print(json.dumps(figures, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
