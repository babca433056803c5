"""Both delivery guarantees against the fake broker: the order of sends, acknowledgements and
commits (B8 of docs/fault-report.md), and every way a delivery can fail."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from conftest import Harness
from fakes import FakeBroker
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    InvalidTransactionTimeoutError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    UnknownMemberIdError,
)
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.errors import StopRequested
from consumer.ops.metrics import Metrics
from consumer.runtime.delivery import AtLeastOnce
from consumer.runtime.kafka.producer import ProducerHandle
from consumer.runtime.kafka.quirks import bounded
from consumer.runtime.records import Backoff, Output
from consumer.service import EXIT_CONFIG, EXIT_FAILURE, EXIT_FENCED, EXIT_OK

UNANSWERED = "no answer from the broker within the request timeout; not ready while waiting"


@dataclasses.dataclass(frozen=True)
class Waited:
    """What one send_and_wait on a silent producer did (clock in seconds of its own)."""

    flushes: int  # flush calls
    longest: float  # the longest flush timeout asked for
    waited: float  # the clock when the wait ended
    told: tuple[float, ...]  # the clock at each readiness tell
    stopped: str | None  # the stage a StopRequested ended it at


def _sliced_wait(
    answer_after: int, error: KafkaError | None = None, stop_at: float | None = None
) -> Waited:
    """One send_and_wait whose producer's flush times out `answer_after` times, its timeout's
    time passing (or raises `error` at once); a stop is asked for from `stop_at` on; request
    timeout 30 s, delivery timeout 100 s."""
    clock = [0.0]
    flushes: list[float] = []
    told: list[float] = []

    class Silent:
        def send(self, *args: Any, **kwargs: Any) -> Any:
            raise KafkaTimeoutError("never sent")  # the future is the error: not acked

        def flush(self, timeout: float | None = None) -> None:
            assert timeout is not None
            flushes.append(timeout)
            assert len(flushes) < 500, "the wait spins on a flush that gives up at once"
            if error is not None:
                raise error
            if len(flushes) > answer_after:
                return
            clock[0] += timeout
            raise KafkaTimeoutError("still waiting")

    tuning = dataclasses.replace(
        Settings().tuning, request_timeout_ms=30_000, delivery_timeout_ms=100_000
    )
    broker = FakeBroker()
    broker.producer = lambda **_: Silent()  # type: ignore[method-assign, assignment]
    handle = ProducerHandle(
        broker,  # type: ignore[arg-type]
        Settings(tuning=tuning),
        "test",
        monotonic=lambda: clock[0],
        unanswered=lambda: told.append(clock[0]),
        wait=lambda _seconds: stop_at is not None and clock[0] >= stop_at,
    )
    stopped = None
    try:
        handle.send_and_wait([Output("out", b"k", b"v")])
    except StopRequested as exc:
        stopped = exc.stage
    return Waited(len(flushes), max(flushes), clock[0], tuple(told), stopped)


def _beats_per_journal_line(harness: Harness) -> list[tuple[str, object, int]]:
    """(kind, what, /healthz beats so far) for each line the fake broker journals from now on."""
    beats: list[tuple[str, object, int]] = []

    class Journal(list[tuple[str, Any]]):
        def append(self, line: tuple[str, Any]) -> None:
            super().append(line)
            beats.append((line[0], line[1], harness.health.beats))

    harness.broker.events = Journal()
    return beats


def _history_sends_after_output_acks(harness: Harness) -> tuple[int, int, int]:
    """(index of the last ack of a non-changelog output, of the first changelog send, of the
    commit) in the broker's journal."""
    history = harness.settings.topics.history
    events = harness.broker.events
    last_output_ack = max(
        i for i, (kind, what) in enumerate(events) if kind == "ack" and what != history
    )
    first_change_send = min(
        i for i, (kind, what) in enumerate(events) if kind == "send" and what == history
    )
    commit = harness.broker.kinds().index("commit")
    return last_output_ack, first_change_send, commit


class TestAtLeastOnce:
    def test_b8_the_changelog_is_sent_only_after_every_other_output_is_acknowledged(
        self, harness: Harness
    ) -> None:
        """B8: were the changelog sent with the alerts, a broker failure could store a patient's
        new state without all of its alerts, and the redelivered batch would never re-emit them."""
        harness.publish(12)
        assert harness.run() == EXIT_OK
        last_output_ack, first_change_send, commit = _history_sends_after_output_acks(harness)
        assert last_output_ack < first_change_send < commit
        history = harness.settings.topics.history
        acks_before_commit = [w for k, w in harness.broker.events[:commit] if k == "ack"]
        assert acks_before_commit.count(history) == len(harness.broker.records(history)) > 0
        assert harness.broker.committed == {next(iter(harness.broker.committed)): 12}

    def test_b8_an_unacknowledged_output_stops_before_any_changelog_record_or_commit(
        self, harness: Harness
    ) -> None:
        harness.publish(6)
        topic = harness.settings.topics.classification
        harness.broker.script(f"ack:{topic}", KafkaTimeoutError("expired"))
        assert harness.run() == EXIT_FAILURE
        assert harness.broker.records(harness.settings.topics.history) == []
        assert ("send", harness.settings.topics.history) not in harness.broker.events
        assert harness.broker.committed == {}
        [stop] = harness.logged("stopping without committing")
        assert stop["error_type"] == "PublishError"

    def test_a_failed_output_is_re_sent_through_a_new_producer(self, harness: Harness) -> None:
        """B5: a retry goes through a replaced producer; the batch then commits."""
        harness.configure(publish_retries=1)
        harness.publish(3)
        harness.broker.script(f"ack:{harness.settings.topics.classification}", KafkaTimeoutError())
        assert harness.run() == EXIT_OK
        assert len(harness.broker.producers) == 2
        assert harness.broker.producers[0].closed
        assert harness.value("her2_consumer_publish_retries_total") == 1
        assert harness.logged("producer replaced after a failed publish attempt")
        assert harness.broker.committed

    def test_a_topic_whose_send_blocked_is_not_sent_to_again_in_the_batch(
        self, harness: Harness
    ) -> None:
        """A send that waited max_block_ms for a topic's metadata (the topic deleted while the
        service runs) fails the topic's other outputs of the batch unsent: each would block as
        long (measured live: 40 records, 200 s, a SIGTERM unanswered). The retry through a new
        producer sends them all; the final error names the topic."""
        harness.configure(publish_retries=1)
        harness.publish(5)
        topic = harness.settings.topics.classification
        attempts: list[int] = []  # per send to the topic after the first: which producer

        def sent() -> None:
            attempts.append(len(harness.broker.producers))

        blocked = KafkaTimeoutError("Failed to update metadata")
        harness.broker.script(f"send:{topic}", blocked, *[sent] * 20)
        assert harness.run() == EXIT_OK
        # attempt 1 sent no other classification; attempt 2, through a new producer, all five
        assert attempts == [2] * 5
        assert harness.value("her2_consumer_publish_retries_total") == 1

    def test_outputs_never_acknowledged_name_their_topics(
        self, harness: Harness, capsys: pytest.CaptureFixture[str]
    ) -> None:
        harness.configure(publish_retries=0)
        harness.publish(2)
        topic = harness.settings.topics.classification
        harness.broker.script(f"send:{topic}", *[KafkaTimeoutError("no metadata")] * 2)
        assert harness.run() == EXIT_FAILURE
        [stop] = harness.logged("stopping without committing")
        assert stop["error_type"] == "PublishError"
        assert harness.broker.committed == {}
        assert f"(KafkaTimeoutError; topics ['{topic}'])" in capsys.readouterr().err

    def test_a_new_producer_that_cannot_bootstrap_yet_is_a_failed_attempt_not_the_end(
        self, harness: Harness
    ) -> None:
        """README: the service stops only after HER2_PUBLISH_RETRIES re-sends. A renewal whose
        bootstrap fails (the broker back, but not answering this client yet) used to stop it
        at once (measured live: exit 1 with 2 of 3 re-sends left, 18 s after the broker was
        back); it is a failed attempt, and the next one makes a producer again."""
        harness.configure(publish_retries=2)
        harness.publish(3)
        harness.broker.script(f"ack:{harness.settings.topics.classification}", KafkaTimeoutError())
        harness.broker.script("producer", lambda: None, KafkaTimeoutError("Unable to bootstrap"))
        assert harness.run() == EXIT_OK
        # the renewal's bootstrap failed; the re-send made the second producer itself
        assert len(harness.broker.producers) == 2
        assert harness.value("her2_consumer_publish_retries_total") == 1
        assert harness.broker.committed

    def test_no_producer_for_every_attempt_stops_without_committing(
        self, harness: Harness, capsys: pytest.CaptureFixture[str]
    ) -> None:
        harness.configure(publish_retries=1)
        harness.publish(2)
        harness.broker.script(f"ack:{harness.settings.topics.classification}", KafkaTimeoutError())
        harness.broker.script("producer", lambda: None, *[KafkaTimeoutError("no bootstrap")] * 3)
        assert harness.run() == EXIT_FAILURE
        assert harness.broker.committed == {}
        assert "not acknowledged after 1 retries (KafkaTimeoutError" in capsys.readouterr().err

    def test_a_stop_after_a_blocked_send_sends_nothing_more(self) -> None:
        """A send that waited max_block_ms (a topic deleted): a stop asked for meanwhile ends
        the batch there (StopRequested: nothing committed) instead of blocking on the next
        topic; so does a stop before a new producer's bootstrap."""
        broker = FakeBroker()
        for topic in ("gone", "other"):
            broker.create_topic(topic, 1)
        broker.script("send:gone", KafkaTimeoutError("Failed to update metadata"))
        stop = [False]
        handle = ProducerHandle(broker, Settings(), "test", wait=lambda _s: stop[0])  # type: ignore[arg-type]
        stop[0] = True
        with pytest.raises(StopRequested):
            handle.send_and_wait([Output("gone", b"k", b"v"), Output("other", b"k", b"v")])
        assert ("send", "other") not in broker.events
        handle._producer = None  # a renewal that failed
        with pytest.raises(StopRequested):
            handle.send_and_wait([Output("other", b"k", b"v")])
        assert len(broker.producers) == 1, "no bootstrap after the stop"

    def test_each_re_send_waits_out_its_back_off_after_saying_so(self) -> None:
        """Outputs not acknowledged are re-sent after the back-off's delay for the attempt (a
        broker refusing writes is not hammered) and after the warning the runbooks send
        operators to (`outputs not acknowledged; re-sending`, with the attempt and the wait)."""
        broker = FakeBroker()
        broker.create_topic("out", 1)
        settings = Settings(publish_retries=2)
        broker.script("ack:out", KafkaTimeoutError("expired"), KafkaTimeoutError("expired"))

        def sleep(seconds: float) -> bool:
            broker.events.append(("sleep", seconds))
            return False

        delivery = AtLeastOnce(
            ProducerHandle(broker, settings, "test", wait=sleep),  # type: ignore[arg-type]
            broker.consumer(group_id="g"),  # type: ignore[arg-type]
            settings,
            Metrics(CollectorRegistry(), "t"),
            lambda: None,
            backoff=Backoff((0.25, 0.75)),
        )
        with structlog.testing.capture_logs() as logs:
            delivery.publish([Output("out", b"k", b"v")])
        assert broker.events == [
            ("send", "out"),
            ("nack", "out"),
            ("sleep", 0.25),
            ("sleep", 0),  # a stop asked for? (before the new producer's bootstrap)
            ("send", "out"),
            ("nack", "out"),
            ("sleep", 0.75),
            ("sleep", 0),
            ("send", "out"),
            ("ack", "out"),
        ]
        resent = [
            (line["attempt"], line["count"], line["error_type"], line["seconds"])
            for line in logs
            if line["event"] == "outputs not acknowledged; re-sending"
        ]
        assert resent == [(1, 1, "KafkaTimeoutError", 0.25), (2, 1, "KafkaTimeoutError", 0.75)]
        assert [r.value for r in broker.records("out")] == [b"v"]

    def test_readiness_drops_while_outputs_go_unacknowledged_and_returns_once_delivered(
        self, harness: Harness
    ) -> None:
        """A broker that stops answering mid-delivery: the loop waits in its sends (up to the
        delivery timeout per attempt) and looks at the broker only between batches, so /readyz
        stayed 200 for the whole wait. A request timeout without an acknowledgement (here a
        scripted flush timeout) makes it not ready once, during the wait; the delivered batch
        makes it ready again, and nothing is sent twice."""
        harness.publish(3)
        harness.broker.script("flush", KafkaTimeoutError())
        assert harness.run() == EXIT_OK
        states = harness.health.states
        silent = states.index((False, "broker unreachable"))
        assert (True, "") in states[:silent], "ready before the delivery"
        assert (True, "") in states[silent:], "ready again once delivered"
        assert states.count((False, "broker unreachable")) == 1
        [told] = harness.logged(UNANSWERED)
        assert told["stage"] == "outputs"
        assert told["seconds"] == harness.settings.tuning.request_timeout_ms / 1000
        sent = harness.broker.records(harness.settings.topics.classification)
        assert len(sent) == 3
        assert harness.broker.committed

    @pytest.mark.parametrize(
        ("answer_after", "error", "stop_at", "expected"),
        [
            pytest.param(
                1_000,
                None,
                None,
                Waited(105, 1.0, 105.0, (30.0,), None),
                id="silent-to-the-deadline",
            ),
            pytest.param(
                40,
                None,
                None,
                Waited(41, 1.0, 40.0, (30.0,), None),
                id="answers-after-the-request-timeout",
            ),
            pytest.param(
                10,
                None,
                None,
                Waited(11, 1.0, 10.0, (), None),
                id="answers-within-the-request-timeout",
            ),
            pytest.param(
                0,
                KafkaError("fatal"),
                None,
                Waited(1, 1.0, 0.0, (), None),
                id="other-error-ends-the-wait",
            ),
            # a flush that gives up at once (no time passes): told, no spinning
            pytest.param(
                1_000,
                KafkaTimeoutError("at once"),
                None,
                Waited(1, 1.0, 0.0, (0.0,), None),
                id="gives-up-at-once",
            ),
            # a stop during an unanswered wait ends it; before the request timeout the broker
            # is still given the time to answer (SIGTERM finishes the batch when it can)
            pytest.param(
                1_000,
                None,
                50.0,
                Waited(50, 1.0, 50.0, (30.0,), "outputs"),
                id="stop-while-unanswered",
            ),
            pytest.param(
                1_000,
                None,
                5.0,
                Waited(30, 1.0, 30.0, (30.0,), "outputs"),
                id="stop-before-the-request-timeout",
            ),
            pytest.param(20, None, 5.0, Waited(21, 1.0, 20.0, (), None), id="stop-then-answered"),
        ],
    )
    def test_the_wait_for_acknowledgements_is_sliced(
        self,
        answer_after: int,
        error: KafkaError | None,
        stop_at: float | None,
        expected: Waited,
    ) -> None:
        """The wait runs a second at a time to the delivery deadline (100 s + 5 s); readiness
        is told once when it has lasted a request timeout (30 s here) however many pieces
        time out; from then on a stop request ends it (StopRequested: nothing committed, the
        orchestrator's grace period not outlasted). Any other flush error, or a flush that
        gives up before its piece, ends the wait at once (the futures tell)."""
        assert _sliced_wait(answer_after, error, stop_at) == expected

    def test_a_commit_refused_by_a_rebalance_is_counted_not_fatal(self, harness: Harness) -> None:
        harness.publish(3)
        harness.broker.script("commit", CommitFailedError())
        assert harness.run() == EXIT_OK
        assert harness.value("her2_consumer_commit_failures_total") == 1
        assert harness.logged(
            "offset commit refused during a rebalance; records may be redelivered"
        )

    def test_each_bounded_wait_of_a_delivery_follows_a_beat(self, harness: Harness) -> None:
        """/healthz's stall limit covers the longest single wait (a send attempt, up to the
        delivery timeout; the commit, up to the request timeout), so each begins with a beat:
        without them, a batch whose outputs were re-sent and then committed through a slow
        broker went longer without a beat than the limit, and the liveness probe restarted a
        pod that was only waiting."""
        harness.configure(publish_retries=1)
        harness.publish(3)
        topics = harness.settings.topics
        harness.broker.script(f"ack:{topics.classification}", KafkaTimeoutError())
        beats = _beats_per_journal_line(harness)
        assert harness.run() == EXIT_OK
        classified = [
            n for kind, what, n in beats if (kind, what) == ("send", topics.classification)
        ]
        history = [n for kind, what, n in beats if (kind, what) == ("send", topics.history)]
        [commit] = [n for kind, _, n in beats if kind == "commit"]
        assert len(set(classified)) == 2, "each send attempt begins with a beat"
        assert history
        assert min(history) > max(classified)
        assert commit > max(history), "the commit begins with a beat"

    def test_a_member_that_left_the_group_during_the_outputs_writes_no_changelog(
        self, harness: Harness
    ) -> None:
        """The outputs' delivery outlasted max.poll.interval.ms and the member left the group
        (kafka-python resets its generation; librdkafka forgets its member id): another member
        may own the partition now and have written its history. The batch's changelog is not
        written and nothing is committed; the batch runs again from the changelog (here the
        partition stays with this member: the outputs twice, the history once)."""
        reference = Harness(FakeBroker(), harness.settings)
        reference.broker.create_topic(harness.settings.topics.input, 1)
        reference.publish(6)
        assert reference.run() == EXIT_OK
        topics = harness.settings.topics
        harness.publish(6)
        harness.broker.script("group_metadata", CommitFailedError())
        assert harness.run() == EXIT_OK
        [warned] = harness.logged(
            "left the consumer group before writing the changelog; the batch runs again from "
            "the changelog"
        )
        assert warned["error_type"] == "CommitFailedError"
        sends = [what for kind, what in harness.broker.events if kind == "send"]
        classified = [i for i, topic in enumerate(sends) if topic == topics.classification]
        assert len(classified) == 12, "at-least-once: the re-run sends the outputs again"
        assert sends.index(topics.history) > classified[-1], "no changelog before the re-run"
        history = harness.broker.records(topics.history)
        assert [r.key for r in history] == [  # once, as without the departure
            r.key for r in reference.broker.records(topics.history)
        ]
        assert [what for kind, what in harness.broker.events if kind == "commit"] == [{0: 6}]
        assert harness.value("her2_consumer_commit_failures_total") == 1


class TestExactlyOnce:
    def _eos(self, harness: Harness, timeout_ms: int = 60000) -> None:
        harness.configure(
            processing_guarantee="exactly_once", tuning={"transaction_timeout_ms": timeout_ms}
        )

    def test_outputs_and_offsets_commit_in_one_transaction(self, harness: Harness) -> None:
        self._eos(harness)
        harness.publish(6)
        assert harness.run() == EXIT_OK
        kinds = harness.broker.kinds()
        assert "commit" not in kinds, "offsets go to the transaction, not the consumer"
        txn = [what for kind, what in harness.broker.events if kind == "txn"]
        assert txn == ["begin", "offsets", "commit"]
        assert kinds.index("ack") < harness.broker.events.index(("txn", "offsets"))
        assert harness.broker.records(harness.settings.topics.history)
        assert list(harness.broker.committed.values()) == [6]

    @pytest.mark.parametrize(
        "refusal", [IllegalGenerationError(), UnknownMemberIdError(), CommitFailedError()]
    )
    def test_offsets_a_rebalance_refused_abort_and_the_batch_runs_again(
        self, harness: Harness, refusal: Exception
    ) -> None:
        """librdkafka rejoins in the background: a rebalance can end the generation under the
        open transaction. Abort, restore the partition, run the batch again: every event once
        in the outputs, the offsets committed, the service still running."""
        self._eos(harness)
        harness.publish(6)
        harness.broker.script("send_offsets", refusal)
        assert harness.run() == EXIT_OK
        txn = [what for kind, what in harness.broker.events if kind == "txn"]
        assert txn == ["begin", "abort", "begin", "offsets", "commit"]
        topics = harness.settings.topics
        assert len(harness.broker.records(topics.classification)) == 6
        assert harness.broker.records(topics.history)
        assert list(harness.broker.committed.values()) == [6]
        assert harness.value("her2_consumer_commit_failures_total") == 1
        [warned] = harness.logged(
            "transaction offsets refused during a rebalance; the batch runs again from the "
            "changelog"
        )
        assert warned["error_type"] == type(refusal).__name__

    def test_each_bounded_wait_of_a_transaction_follows_a_beat(self, harness: Harness) -> None:
        """The sends, the offsets and the commit of a transaction each wait up to a timeout of
        their own: each begins with a beat, so /healthz's stall limit covers one of them."""
        self._eos(harness)
        harness.publish(3)
        beats = _beats_per_journal_line(harness)
        assert harness.run() == EXIT_OK
        sends = [n for kind, _, n in beats if kind == "send"]
        [offsets] = [n for kind, what, n in beats if (kind, what) == ("txn", "offsets")]
        [commit] = [n for kind, what, n in beats if (kind, what) == ("txn", "commit")]
        assert max(sends) < offsets < commit

    def test_readiness_drops_while_the_transaction_offsets_or_commit_wait_for_the_broker(
        self, harness: Harness
    ) -> None:
        """The transaction's offsets and commit wait up to the transaction timeout each (a
        minute by default): one still waiting a request timeout in makes the service not
        ready once, and the committed transaction makes it ready again."""
        self._eos(harness, timeout_ms=5000)
        harness.configure(tuning={"request_timeout_ms": 50})
        harness.publish(3)
        slow = lambda: time.sleep(0.3)  # noqa: E731 - a scripted effect
        harness.broker.script("send_offsets", slow)
        harness.broker.script("commit_transaction", slow)
        assert harness.run() == EXIT_OK
        states = harness.health.states
        silent = states.index((False, "broker unreachable"))
        assert (True, "") in states[silent:], "ready again once committed"
        told = [line["stage"] for line in harness.logged(UNANSWERED)]
        assert told == ["transaction offsets", "transaction commit"]
        assert list(harness.broker.committed.values()) == [3]

    def _blocked(self) -> tuple[threading.Event, object]:
        release = threading.Event()
        return release, lambda: release.wait(5)

    def test_send_offsets_that_never_returns_times_out_and_aborts(self, harness: Harness) -> None:
        self._eos(harness, timeout_ms=100)
        harness.publish(3)
        release, block = self._blocked()
        harness.broker.script("send_offsets", block)
        try:
            assert harness.run() == EXIT_FAILURE
        finally:
            release.set()
        assert ("txn", "abort") in harness.broker.events
        assert harness.broker.records(harness.settings.topics.history) == []
        assert harness.broker.committed == {}
        assert harness.value("her2_consumer_commit_failures_total") == 1
        [stop] = harness.logged("stopping without committing")
        assert stop["error_type"] == "PublishError"

    def test_a_commit_transaction_that_never_returns_times_out_and_aborts(
        self, harness: Harness, capsys: object
    ) -> None:
        self._eos(harness, timeout_ms=100)
        harness.publish(3)
        release, block = self._blocked()
        harness.broker.script("commit_transaction", block)
        try:
            assert harness.run() == EXIT_FAILURE
        finally:
            release.set()
        assert ("txn", "abort") in harness.broker.events
        assert harness.broker.committed == {}
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert "committing the transaction did not complete within 0.1 s" in err

    def test_a_failed_abort_is_logged_and_the_original_failure_stops_the_service(
        self, harness: Harness, capsys: object
    ) -> None:
        self._eos(harness)
        harness.publish(3)
        harness.broker.script("commit_transaction", KafkaError("broker said no"))
        harness.broker.script("abort_transaction", KafkaError("abort failed too"))
        assert harness.run() == EXIT_FAILURE
        [warning] = harness.logged("transaction abort failed")
        assert warning["error_type"] == "KafkaError"
        [stop] = harness.logged("stopping without committing")
        assert stop["error_type"] == "PublishError"
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert "the transaction failed (KafkaError) and was aborted" in err
        assert harness.broker.committed == {}

    def test_a_fenced_producer_stops_with_exit_fenced(self, harness: Harness) -> None:
        self._eos(harness)
        harness.publish(3)
        harness.broker.script("send_offsets", ProducerFencedError())
        assert harness.run() == EXIT_FENCED
        assert harness.broker.committed == {}
        assert ("txn", "abort") not in harness.broker.events

    @pytest.mark.parametrize(
        "refusal",
        [
            # kafka-python 3.0.12: a plain KafkaError naming it
            KafkaError(
                "Unexpected error in InitProducerIdResponse: [Error 50] "
                "InvalidTransactionTimeoutError"
            ),
            InvalidTransactionTimeoutError(),  # librdkafka, through the confluent adapter
        ],
        ids=["kafka-python", "confluent"],
    )
    def test_a_transaction_timeout_the_broker_refuses_is_a_configuration_error(
        self, harness: Harness, capsys: object, refusal: KafkaError
    ) -> None:
        """Above the broker's transaction.max.timeout.ms (15 minutes by default), which the
        service's own range (up to 60 minutes) cannot know: exit 2 naming the variable."""
        self._eos(harness)
        harness.configure(tuning={"transaction_timeout_ms": 1_200_000})
        harness.broker.script("init_transactions", refusal)
        assert harness.run() == EXIT_CONFIG
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert "the broker refused HER2_TRANSACTION_TIMEOUT_MS=1200000" in err
        assert "transaction.max.timeout.ms" in err
        assert harness.broker.producers[0].closed

    def test_a_producer_fenced_at_start_stops_with_exit_fenced(self, harness: Harness) -> None:
        self._eos(harness)
        harness.broker.script("init_transactions", ProducerFencedError())
        assert harness.run() == EXIT_FENCED
        assert harness.broker.producers[0].closed


STOPPED = "stop requested while the batch in flight waited on the broker; the batch is given up"


class TestStopWhileTheBrokerIsSilent:
    """SIGTERM while a batch waits on a broker that does not answer: the wait is given up and
    the service exits 0 without committing anything of the batch (processed again at the next
    start), instead of waiting out the delivery timeout (two minutes per attempt by default,
    beyond Kubernetes' 60 s grace period)."""

    def _stop_then(self, harness: Harness, effect: Callable[[], Any]) -> Callable[[], Any]:
        def stop_and_effect() -> Any:
            assert harness.service is not None
            harness.service.stop()
            return effect()

        return stop_and_effect

    def _silent_piece(self) -> Any:
        time.sleep(0.25)  # a flush piece that passes without an answer
        raise KafkaTimeoutError("no answer")

    def _assert_stopped_uncommitted(self, harness: Harness, code: int, stage: str) -> None:
        assert code == EXIT_OK
        [stopped] = harness.logged(STOPPED)
        assert stopped["stage"] == stage
        [shutdown] = harness.logged("shutdown")
        assert shutdown["committed"] is False
        assert harness.broker.committed == {}
        assert harness.broker.records(harness.settings.topics.history) == []
        # no request timeout more for leaving the group: the grace period is what is left
        [member] = [c for c in harness.broker.consumers if c.group]
        assert member.closed_with == (False, 1000)

    def test_a_stop_ends_a_wait_for_acknowledgements_the_broker_does_not_give(
        self, harness: Harness
    ) -> None:
        harness.configure(tuning={"request_timeout_ms": 200})
        harness.publish(3)
        harness.broker.script(
            "flush",
            self._stop_then(harness, self._silent_piece),
            *[self._silent_piece] * 40,  # ten seconds of silence, were the stop ignored
        )
        began = time.monotonic()
        code = harness.run()
        assert time.monotonic() - began < 5
        self._assert_stopped_uncommitted(harness, code, "outputs")
        assert harness.logged(UNANSWERED), "readiness told first: the wait lasted a request"

    def test_a_stop_during_a_re_send_back_off_sends_nothing_more(self, harness: Harness) -> None:
        harness.configure(publish_retries=3)
        harness.publish(1)
        topic = harness.settings.topics.classification

        def expired() -> None:
            raise KafkaTimeoutError("expired")

        harness.broker.script(f"ack:{topic}", self._stop_then(harness, expired))
        code = harness.run()
        self._assert_stopped_uncommitted(harness, code, "re-sending outputs")
        assert harness.broker.events.count(("send", topic)) == 1, "no attempt after the stop"
        assert harness.broker.records(topic) == []

    @pytest.mark.parametrize(
        ("op", "stage"),
        [
            ("send_offsets", "sending offsets to the transaction"),
            ("commit_transaction", "committing the transaction"),
        ],
    )
    def test_a_stop_ends_a_transaction_wait_the_broker_does_not_answer(
        self, harness: Harness, op: str, stage: str
    ) -> None:
        harness.configure(
            processing_guarantee="exactly_once",
            tuning={"transaction_timeout_ms": 60_000, "request_timeout_ms": 200},
        )
        harness.publish(3)
        release = threading.Event()
        harness.broker.script(op, self._stop_then(harness, lambda: release.wait(30)))
        began = time.monotonic()
        try:
            code = harness.run()
        finally:
            release.set()
        assert time.monotonic() - began < 5
        self._assert_stopped_uncommitted(harness, code, stage)
        assert ("txn", "abort") not in harness.broker.events, "no abort to a silent broker"


def test_a_producer_whose_close_raises_is_force_closed() -> None:
    """kafka-python's close() flushes first and raises while records are unacknowledged (a
    batch given up on a stop) before it stops its I/O thread: the handle stops that thread
    (it would deliver the given-up records after the consumer closed) and marks the producer
    closed, as at a renewal."""
    calls: list[tuple[str, object]] = []

    class Sender:
        def force_close(self) -> None:
            calls.append(("sender.force_close", None))

        def join(self, timeout: float) -> None:
            calls.append(("sender.join", timeout))

    class Holding:
        _sender = Sender()

        def close(self, timeout: float | None = None) -> None:
            calls.append(("close", timeout))
            if timeout:
                raise KafkaTimeoutError("records still unacknowledged")

    broker = FakeBroker()
    broker.producer = lambda **_: Holding()  # type: ignore[method-assign, assignment]
    handle = ProducerHandle(broker, Settings(), "test")  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        handle.close(1)
    assert calls == [
        ("close", 1),
        ("sender.force_close", None),
        ("sender.join", 1),
        ("close", 0),
    ]
    assert [line["event"] for line in logs] == ["producer close failed"]


def test_a_transaction_call_that_ends_while_the_stop_is_seen_stands() -> None:
    """quirks.bounded: a stop seen while the call (a transaction's commit) was ending does not
    report it given up: its result stands (the batch is committed, not processed again)."""

    def stopping() -> bool:
        time.sleep(0.3)  # the call ends meanwhile
        return True

    def commit() -> str:
        time.sleep(0.15)
        return "committed"

    assert bounded("committing", 5, commit, tell_after=0.05, stopping=stopping) == "committed"
