"""Two processes with one HER2_INSTANCE_ID (a copied deployment, a pod started by hand beside
its StatefulSet twin), at-least-once, on each Kafka client. The coordinator fences the first
member when the second joins with its group.instance.id. kafka-python only stopped the fenced
member's heartbeat: it stayed ready, kept its assignment, and at the next records processed a
batch of partitions now the other's (outputs, and changelog records built from its own,
possibly stale, history) before its commit was refused. It now stops at its next poll once its
heartbeat was fenced, without waiting for records (here no record is produced until it has
stopped: before the fix it never stopped), as on librdkafka (which makes the fencing fatal
itself); the other process does the work. (Exactly-once had transactional fencing at its next
transaction already.)"""

from __future__ import annotations

from collections.abc import Callable

from faults import Probe, wait_committed
from helpers import Env, ServiceThread, produce_events, wait_for

from consumer.runtime.exits import EXIT_FAILURE
from consumer.tools.synthetic import SyntheticGenerator

PROCESSED = {"outcome": "processed"}


def test_a_member_fenced_by_its_instance_id_stops_before_processing_anything(
    env: Env, create_topics: Callable[..., list[str]]
) -> None:
    create_topics(env.input, partitions=2)
    settings = env.settings(HER2_INSTANCE_ID="same-instance-1")
    first = ServiceThread(settings).start()
    try:
        first.wait_assigned()
        wait_for(lambda: first.health.ready, 60, "the first member to be ready")
        second = ServiceThread(settings).start()
        try:
            # fenced at its next heartbeat (3 s), seen at its next poll
            wait_for(lambda: not first.alive, 60, "the fenced member to stop")
            assert first.code == EXIT_FAILURE
            second.wait_assigned()
            events = SyntheticGenerator(seed=2027).events(20)
            produce_events(env.bootstrap, env.input, events)
            with Probe(env.bootstrap) as probe:
                wait_committed(probe, env.group, env.input, 90, alive=lambda: second.alive)
            assert second.metric("her2_consumer_events_total", PROCESSED) == len(events)
        finally:
            assert second.stop(60) == 0
    finally:
        first.stop(60)
