"""A stop request during a wait on a real broker that does not answer (SIGSTOP: connections
stay open, requests stay in flight), on each Kafka client: the wait for acknowledgements gives
up once a request timeout has gone unanswered instead of lasting to the delivery deadline, so
SIGTERM during a broker outage ends within Kubernetes' grace period. The service then exits 0
without committing (tests/runtime/test_delivery.py::TestStopWhileTheBrokerIsSilent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from faults import Background, frozen_broker
from helpers import Env

from consumer.errors import StopRequested
from consumer.runtime.kafka.clients import clients_for
from consumer.runtime.kafka.producer import ProducerHandle
from consumer.runtime.records import Output


def test_a_stop_ends_a_wait_the_frozen_broker_does_not_answer(
    local_kafka: Any,
    env: Env,
    create_topics: Callable[..., list[str]],
    unique_name: Callable[[str], str],
) -> None:
    topic = unique_name("out")
    create_topics(topic, partitions=3)
    settings = env.settings(HER2_REQUEST_TIMEOUT_MS="3000", HER2_DELIVERY_TIMEOUT_MS="60000")
    request_s = settings.tuning.request_timeout_ms / 1000
    stop = threading.Event()
    told: list[float] = []
    handle = ProducerHandle(
        clients_for(settings),
        settings,
        "test",
        unanswered=lambda: told.append(time.monotonic()),
        wait=stop.wait,
    )
    batch = [Output(topic, b"k%d" % i, b"v%d" % i) for i in range(50)]
    send = Background(lambda: handle.send_and_wait(batch), "send")
    assert not handle.send_and_wait([Output(topic, b"warm", b"warm")]).failed  # connected
    with frozen_broker(local_kafka) as began:
        send.start()
        time.sleep(1)
        stop.set()  # SIGTERM while the batch waits
        # the old wait: to the delivery deadline, 65 s
        assert send.join(request_s + 15), "the wait went on after the stop"
    try:
        assert isinstance(send.error, StopRequested), send.error
        assert send.error.stage == "outputs"
        # not before the broker had a request timeout to answer, and soon after it
        assert told, "readiness was not told"
        assert send.ended is not None
        assert began + request_s - 0.5 <= send.ended < began + request_s + 5
    finally:
        handle.close(1)
