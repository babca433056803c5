"""A partition whose committed offset the group cannot read shows as her2_consumer_position_unknown
on a real broker (F1 of docs/fault-report.md; the alert Her2ConsumerPartitionPositionUnknown).

F1 leaves a transaction hanging on the group's `__consumer_offsets` partition; here another
transactional producer holds an offset commit of the service's group open, which gives the
consumer the same answer (UNSTABLE_OFFSET_COMMIT for a read_committed offset fetch) without
stopping the broker. Once that transaction is aborted the partition starts and the gauge
clears."""

from __future__ import annotations

from collections.abc import Callable

from helpers import Env, committed, produce_events, running, wait_for
from kafka import KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.tools.synthetic import SyntheticGenerator

INPUT_PARTITIONS = 1
EVENTS = 5


def test_an_unreadable_committed_offset_shows_as_position_unknown(
    env: Env, unique_name: Callable[[str], str]
) -> None:
    produce_events(env.bootstrap, env.input, SyntheticGenerator(seed=4242).events(EVENTS))
    blocker = KafkaProducer(
        bootstrap_servers=env.bootstrap,
        transactional_id=unique_name("blocker"),
        transaction_timeout_ms=120_000,
    )
    labels = {"topic": env.input, "partition": "0"}
    try:
        blocker.init_transactions()
        blocker.begin_transaction()
        blocker.send_offsets_to_transaction(
            {TopicPartition(env.input, 0): OffsetAndMetadata(0, "", -1)}, env.group
        )
        settings = env.settings(HER2_LAG_REFRESH_SECONDS="1")
        with running(settings) as svc:
            wait_for(
                lambda: svc.metric("her2_consumer_position_unknown", labels) == 1,
                60,
                "the partition to be flagged",
            )
            assert committed(env.bootstrap, env.group, env.input) == {0: None}
            blocker.abort_transaction()
            wait_for(
                lambda: committed(env.bootstrap, env.group, env.input) == {0: EVENTS},
                60,
                "the partition to start once the transaction is aborted",
            )
            wait_for(
                lambda: svc.metric("her2_consumer_position_unknown", labels) == 0,
                30,
                "the flag to clear",
            )
    finally:
        blocker.close(timeout=5)
