"""`her2-consumer rebuild-history`: rebuild a lost changelog from the input topic without
re-numbering what readers already hold (README "If the changelog topic is lost").

With every instance stopped, the changelog topic deleted (or empty) and the input and alert
topics whole (starting at offset 0), it
1. reads the four alert topics to their end (read_committed: the highest revision per alert_id,
   what a care-team notification service holds);
2. evaluates every input record from the beginning to the input's end noted at the start as
   `run` does (decode, validation, routing check, the rule set; retention at each record's
   timestamp), publishing nothing;
3. reconciles (consumer/clinical/reconcile.py): per alert_id, the replay's last record against
   the one held; publishes only what differs, numbered above the held one, and raises the
   state's revisions so that every later record is one the readers keep;
4. publishes the reconciliation's alert records; then the classifications and dead letters of
   the records past the group's committed offsets (reports sent while it was stopped, and,
   at-least-once, reports `run` published for before a commit was lost), as `run` would have;
   then writes the whole history to the changelog (created un-compacted, which start-up
   refuses, and deleted again if not all written); commits the group's offsets at the noted
   ends; and compacts the changelog: `run` may start, and goes on from the ends.
The records past the committed offsets are evaluated once, in order, by the replay: a first
version left them to `run` (several reports of one patient were evaluated against a state that
already held the last: a retracted alert re-opened and closed again, fifth review), the next
had `run` read them again as redeliveries (a dead letter lost, an expired accession's report
evaluated again: sixth review).

Nothing is written before step 4, and `--dry-run` stops before it. Progress goes to stderr,
one JSON summary line to stdout.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TextIO

from consumer.avro.outputs import Codecs
from consumer.clinical import reconcile
from consumer.clinical.model import Record
from consumer.clinical.patient import PatientState, Step
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.clinical.rules import RuleSet, load_ruleset
from consumer.config import Settings
from consumer.errors import ConfigError, Her2Error
from consumer.ops.logs import configure_logging
from consumer.resources import HER2_ALERT
from consumer.runtime.kafka.clients import KafkaClients
from consumer.runtime.kafka.preflight import explained
from consumer.runtime.processor import Processor
from consumer.runtime.records import (
    Output,
    covers,
    input_timestamp,
)
from consumer.runtime.results import DeadLettered, Processed, Retry
from consumer.runtime.routing import partition_for
from consumer.runtime.startup import (
    CHANGELOG_BEING_REBUILT,
    CHANGELOG_CONFIGS,
    create_topics,
    input_topic_id,
    partition_counts,
)
from consumer.state.backends import StateDir, open_states
from consumer.state.store import HistoryStore
from consumer.tools.downstream import (
    committed_reader,
    output_decoder,
    read_alert_topics,
    topic_partitions,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError, NoError
    from kafka.structs import OffsetAndMetadata

EXIT_OK, EXIT_FAILURE, EXIT_REFUSED = 0, 1, 2
# group states in which no instance is running (the coordinator's names)
_IDLE: Final = frozenset({"Empty", "Dead", ""})
_PROGRESS_S: Final = 5.0
_ATTEMPTS: Final = 5


class Refused(Her2Error):
    """A precondition does not hold: nothing was written (exit 2)."""


class _ReplayClock:
    """Retention's clock during the replay: the time of the record being replayed (its
    timestamp: about when `run` evaluated it), so that a report is kept while the reports
    minutes after it are evaluated, as in `run`; the host clock for a record without a usable
    timestamp and outside the replay."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self._clock = clock
        self._at: dt.datetime | None = None

    def at(self, millis: int | None) -> None:
        try:
            self._at = None if millis is None else dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        except (ValueError, OverflowError, OSError):  # not milliseconds (a sender's error)
            self._at = None

    def __call__(self) -> dt.datetime:
        return self._at or self._clock()


class _Recording(Pipeline):
    """The pipeline, keeping the alert records each evaluated report would publish (a record the
    processor then refuses is dropped with it: `settle`)."""

    def __init__(self, ruleset: RuleSet, clock: Callable[[], dt.datetime]) -> None:
        super().__init__(ruleset, clock)
        self.last: dict[str, Record] = {}  # alert_id -> the last record the replay published
        self._pending: list[Record] = []

    def step(self, state: PatientState | None, event: Any) -> Step:
        done = super().step(state, event)
        self._pending = list(done.alerts)
        return done

    def settle(self, kept: bool) -> None:
        """The record just processed was evaluated (kept) or dead-lettered / retried."""
        if kept:
            for alert in self._pending:
                self.last[alert["alert_id"]] = alert
        self._pending = []


def main(args: argparse.Namespace) -> int:
    """`her2-consumer rebuild-history`; exit 0 done, 1 a Kafka error or no progress for
    `args.timeout` seconds, 2 a precondition or the configuration (nothing written)."""
    out, err = sys.stdout, sys.stderr
    settings = Settings.from_env(os.environ)
    # the service's log lines (a dead letter's reason, the changelog created) as `run` writes
    # them, on stderr: stdout carries the summary alone
    configure_logging(settings.log_level)
    ruleset = load_ruleset()
    try:
        summary = Rebuild(settings, ruleset, err, stall_s=args.timeout).run(dry_run=args.dry_run)
    except Refused as exc:
        print(f"rebuild-history: refused, nothing written: {exc}", file=err)
        return EXIT_REFUSED
    except ConfigError:
        raise
    except (KafkaError, Her2Error, TimeoutError) as exc:
        print(f"rebuild-history: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILURE
    out.write(json.dumps(summary, sort_keys=True) + "\n")
    return EXIT_OK


def _check_whole(reader: Any, partitions: list[TopicPartition], what: str, lost: str) -> None:
    """Refused when a partition no longer starts at offset 0: records were deleted (retention,
    delete-records), so the replay would miss reports (and resolve the findings that rested on
    them) or the alert topics would not show everything readers hold."""
    starts = reader.beginning_offsets(partitions) if partitions else {}
    trimmed = sorted(
        f"{tp.topic} partition {tp.partition} from {starts[tp]}" for tp in starts if starts[tp] > 0
    )
    if trimmed:
        raise Refused(
            f"{what} no longer holds every record ({', '.join(trimmed)}): {lost} deleted from it "
            "cannot be rebuilt"
        )


def _pause(seconds: float) -> bool:
    """A wait between attempts (start-up's `Wait`: True would mean stopped; never here)."""
    time.sleep(seconds)
    return False


def _acknowledged(producer: Any, futures: list[Any], timeout: float) -> None:
    """Every send acknowledged, or the broker's refusal raised."""
    producer.flush()
    for future in futures:
        future.get(timeout=timeout)


def _configure(admin: Any, topic: str, configs: Mapping[str, str]) -> None:
    """Set `configs` on `topic` (the others as they are: IncrementalAlterConfigs, no
    DescribeConfigs first); Her2Error if the broker refuses (AlterConfigs on the topic)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(configs))
    try:
        answer = admin.alter_configs([resource], incremental=True, raise_on_unknown=False)
    except (KafkaError, ValueError) as exc:  # a broker without IncrementalAlterConfigs
        answer = {"topic": {topic: f"{type(exc).__name__}: {exc}"}}
    result = answer.get("topic", {}).get(topic)
    if result != "OK":
        raise Her2Error(
            f"the changelog topic {topic}'s settings could not be changed ({result}): the "
            "rebuild needs AlterConfigs on it (and a broker with IncrementalAlterConfigs)"
        )


def _settle_states(store: HistoryStore, floors: dict[str, list[reconcile.Floor]]) -> None:
    """Every patient of `store` with its floors (taken out of `floors`) and without `emitted`,
    written to the store's backend a thousand patients at a time."""
    changed_patients = 0
    for pid, state in store.patients():
        new, raised = reconcile.with_floors(state, pid, floors.pop(pid, ()))
        new, dropped = reconcile.without_emitted(new)
        if raised or dropped:
            store.replace(pid, new, raised | dropped)
            changed_patients += 1
            if changed_patients % 1000 == 0:
                store.take_dirty()
    store.take_dirty()


class Rebuild:
    """One rebuild of the history of `settings.group_id` from `settings.topics.input`."""

    def __init__(
        self,
        settings: Settings,
        ruleset: RuleSet,
        err: TextIO,
        *,
        stall_s: float = 60.0,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.s = settings
        self.ruleset = ruleset
        self.err = err
        self.stall_s = stall_s
        self.clock = clock
        self.client = {
            **settings.kafka_common(),
            "bootstrap_timeout_ms": settings.tuning.request_timeout_ms,
        }

    def say(self, text: str) -> None:
        print(f"rebuild-history: {text}", file=self.err, flush=True)

    def run(self, *, dry_run: bool = False) -> dict[str, Any]:
        """The rebuild; its summary."""
        s = self.s
        topics = s.topics
        with explained(s):
            admin = KafkaClients().admin(**self.client, client_id="her2-rebuild-admin")
        try:
            self._check_group_idle(admin)
            counts = partition_counts(admin, [topics.input, topics.history])
            if topics.input not in counts:
                raise Refused(f"the input topic {topics.input} (HER2_INPUT_TOPIC) does not exist")
            topic_id = input_topic_id(admin, topics.input, _pause)
            reader = committed_reader(self.client, contextlib.nullcontext)  # the admin connected
            try:
                inputs = topic_partitions(reader, [topics.input])
                self._check_changelog_empty(reader, counts)
                _check_whole(reader, inputs, "the input topic", "reports")
                _check_whole(
                    reader,
                    topic_partitions(reader, topics.alert_topics()),
                    "an alert topic",
                    "alerts",
                )
                ends = reader.end_offsets(inputs)  # the input's ends now: replayed up to
                committed = self._committed(admin, inputs)
                self.say("reading the alert topics (what readers hold)")
                held = self._held()
                self._check_committed(committed, ends, held, counts[topics.input])
                total = sum(ends.values())
                self.say(f"replaying {total} input records (nothing is published meanwhile)")
                state_dir = StateDir(s.state_dir)
                try:
                    return self._rebuild(
                        admin,
                        reader,
                        inputs,
                        (committed, ends),
                        counts,
                        held,
                        topic_id,
                        state_dir,
                        dry_run,
                    )
                finally:
                    state_dir.close()
            finally:
                reader.close()
        finally:
            admin.close()

    # -- preconditions ---------------------------------------------------------------------

    def _check_group_idle(self, admin: Any) -> None:
        group = self.s.group_id
        for attempt in range(_ATTEMPTS):  # a coordinator still starting answers "not available"
            try:
                described = admin.describe_groups([group])
                break
            except KafkaError as exc:
                if not exc.retriable or attempt == _ATTEMPTS - 1:
                    raise
                _pause(1.0)
        info = described.get(group, {}) if isinstance(described, dict) else {}
        state = str(info.get("group_state") or info.get("state") or "")
        if state not in _IDLE or info.get("members"):
            raise Refused(
                f"consumer group {group} has running members (state {state}): stop every "
                "instance first (a static member, HER2_INSTANCE_ID, stays until its session "
                "timeout has passed)"
            )

    def _check_changelog_empty(self, reader: Any, counts: Mapping[str, int]) -> None:
        history, input_count = self.s.topics.history, counts[self.s.topics.input]
        if history not in counts:
            return
        if counts[history] != input_count:
            raise Refused(
                f"the changelog topic {history} has {counts[history]} partitions, the input "
                f"{input_count}: delete it (it is created again with the input's count)"
            )
        parts = topic_partitions(reader, [history])
        ends, starts = reader.end_offsets(parts), reader.beginning_offsets(parts)
        if any(ends[tp] > starts[tp] for tp in parts):
            raise Refused(
                f"the changelog topic {history} holds records: this rebuilds a lost changelog; "
                "delete the topic first (README 'If the changelog topic is lost')"
            )

    def _committed(self, admin: Any, inputs: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset on each input partition (0 where it has none): what
        `run` processed and published. The records past it get their classifications and dead
        letters from the rebuild (`_write`)."""
        group = self.s.group_id
        offsets = admin.list_group_offsets({group: inputs}).get(group, {})
        return {tp: max(0, getattr(offsets.get(tp), "offset", 0) or 0) for tp in inputs}

    def _check_committed(
        self,
        committed: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
        held: Mapping[str, Record],
        n_input: int,
    ) -> None:
        """Refused when readers hold alerts of patients on an input partition that has records
        but on which the group has committed nothing: `HER2_GROUP_ID` not the service's group
        (the rebuild would commit offsets for another group), or the group's offsets deleted,
        expired or reset (every record of the partition would get its classification again;
        the second review found the first version resolving every such alert)."""
        topic = self.s.topics.input
        where = {
            TopicPartition(topic, partition_for(h["patient_id"].encode(), n_input))
            for h in held.values()
        }
        bare = sorted(tp.partition for tp in where if committed[tp] == 0 < ends[tp])
        if bare:
            raise Refused(
                f"consumer group {self.s.group_id} has no committed offset on input partition(s) "
                f"{', '.join(map(str, bare))}, while the alert topics hold alerts of their "
                "patients: HER2_GROUP_ID not the service's group? Its offsets expired or reset? "
                "Set the group's offsets to where the service had got (kafka-consumer-groups "
                "--reset-offsets --to-offset or --to-datetime) and run the rebuild again"
            )

    def _held(self) -> dict[str, Record]:
        s = self.s
        decoder = output_decoder(s, HER2_ALERT, s.registry_client())
        fold, undecodable = read_alert_topics(
            self.client,
            s.topics.alert_topics(),
            decoder=decoder,
            timeout_s=max(self.stall_s, s.tuning.request_timeout_ms / 1000),
        )
        if undecodable:
            raise Refused(
                f"{undecodable} alert records could not be decoded: what readers hold is not "
                "known (a writer schema this release does not read?)"
            )
        return fold.latest

    # -- the rebuild -----------------------------------------------------------------------

    def _rebuild(  # noqa: PLR0917 - one call site, the steps in order
        self,
        admin: Any,
        reader: Any,
        inputs: list[TopicPartition],
        offsets: tuple[Mapping[TopicPartition, int], Mapping[TopicPartition, int]],
        counts: Mapping[str, int],
        held: Mapping[str, Record],
        topic_id: bytes | None,
        state_dir: StateDir,
        dry_run: bool,
    ) -> dict[str, Any]:
        """`offsets`: the group's committed offsets and the input's ends (replayed up to)."""
        committed, ends = offsets
        s = self.s
        n_input = counts[s.topics.input]
        clock, pipeline, processor, stores = self.replay_parts(inputs, n_input, state_dir)
        try:
            done, dead, unread = self._replay(reader, offsets, processor, pipeline, clock, stores)
            plan = reconcile.plan(
                held, pipeline.last, ruleset_version=self.ruleset.version, now=self.clock()
            )
            by_patient: dict[str, list[reconcile.Floor]] = collections.defaultdict(list)
            for floor in plan.floors:
                by_patient[floor.patient_id].append(floor)
            for store in stores.values():
                _settle_states(store, by_patient)
            for pid, floors in by_patient.items():  # patients only the alert topics know
                store = stores[TopicPartition(s.topics.input, partition_for(pid.encode(), n_input))]
                state, changed = reconcile.with_floors(None, pid, floors)
                store.replace(pid, state, changed)
            for store in stores.values():
                store.take_dirty()
            summary: dict[str, Any] = {
                "input_records": done,
                "dead_lettered": dict(sorted(dead.items())),
                "patients": sum(len(store) for store in stores.values()),
                "alerts_held": len(held),
                "alerts_rebuilt": len(pipeline.last),
                "reconciled": dict(sorted(plan.outcomes.items())),
                "alerts_published": 0 if dry_run else len(plan.publish),
                "changelog_records": 0,
                "dry_run": dry_run,
                # the group's committed offsets before; the input's ends, replayed up to and,
                # unless a dry run, the group's committed offsets after
                "committed_before": {str(tp.partition): committed[tp] for tp in inputs},
                "replayed_to": {str(tp.partition): ends[tp] for tp in inputs},
                # classifications and dead letters of the records past the committed offsets
                "outputs_published": 0 if dry_run else len(unread),
            }
            if dry_run:
                summary["alerts_to_publish"] = len(plan.publish)
                summary["outputs_to_publish"] = len(unread)
                return summary
            summary["changelog_records"] = self._write(
                admin,
                inputs,
                offsets,
                counts,
                stores,
                (plan.publish, unread),
                processor.codecs,
                topic_id,
            )
            return summary
        finally:
            for store in stores.values():
                store.close()

    def replay_parts(
        self, inputs: list[TopicPartition], n_input: int, state_dir: StateDir | None
    ) -> tuple[_ReplayClock, _Recording, Processor, dict[TopicPartition, HistoryStore]]:
        """Retention's clock, the recording pipeline, the processor and a store per input
        partition, as the replay uses them."""
        s = self.s
        clock = _ReplayClock(self.clock)  # retention's: each record at its time
        # the event-time check and created_at on the host clock (a record's timestamp is only a
        # lower bound of when `run` judged it: a future-time check against it refused reports
        # `run` accepted, review)
        pipeline = _Recording(self.ruleset, self.clock)
        codecs = Codecs.build(s, s.registry_client())
        processor = Processor(s, pipeline, codecs, lambda _topic: n_input, self.clock)
        stores = {
            tp: HistoryStore(
                s.evaluation.history_retention,
                clock,
                open_states(s.history_store, state_dir, f"p{tp.partition}"),
            )
            for tp in inputs
        }
        return clock, pipeline, processor, stores

    def _read(
        self,
        reader: Any,
        stops: Mapping[TopicPartition, int],
        each: Callable[[TopicPartition, list[Any]], None],
        progress: Callable[[], None],
    ) -> None:
        """`each(tp, records)` for the records of [0, stops) of every partition, in order;
        TimeoutError after `stall_s` without a record."""
        left = {tp for tp, stop in stops.items() if stop > 0}
        reader.assign(sorted(left))  # only these: no partition fetched for nothing
        for tp in left:
            reader.seek(tp, 0)
        last_read = last_said = time.monotonic()
        positions: dict[TopicPartition, int] = {}
        while left:
            now = {tp: reader.position(tp) for tp in left}
            left = {tp for tp in left if now[tp] < stops[tp]}
            if not left:
                break
            if now != positions:  # progress: records, or markers and aborted batches skipped
                positions, last_read = now, time.monotonic()
            elif time.monotonic() - last_read > self.stall_s:
                raise TimeoutError(
                    f"no input record read for {self.stall_s:g} s (--timeout); nothing written"
                )
            batch = reader.poll(timeout_ms=500)
            for tp, records in batch.items():
                below = [r for r in records if r.offset < stops[tp]]
                if below:
                    each(tp, below)
            if time.monotonic() - last_said >= _PROGRESS_S:
                last_said = time.monotonic()
                progress()

    def _remove_partial_changelog(self, admin: Any) -> None:
        """Delete the changelog a failed write left part-written (best effort, said either
        way): without it `run` refuses to start, and the rebuild can run again."""
        history = self.s.topics.history
        try:
            admin.delete_topics([history])
            self.say(f"the history was not all written: the changelog topic {history} removed")
        except Exception as exc:
            self.say(
                f"the history was not all written and the changelog topic {history} could not "
                f"be removed ({type(exc).__name__}): delete it before starting `run`"
            )

    def _replay(  # noqa: PLR0917 - one call site
        self,
        reader: Any,
        offsets: tuple[Mapping[TopicPartition, int], Mapping[TopicPartition, int]],
        processor: Processor,
        pipeline: _Recording,
        clock: _ReplayClock,
        stores: Mapping[TopicPartition, HistoryStore],
    ) -> tuple[int, collections.Counter[str], list[Output]]:
        """Every input record below the noted ends (`offsets`: the committed offsets and the
        ends), evaluated in order per partition; how many, the dead-letter reasons of those
        `run` would dead-letter, and the classifications and dead letters of the records past
        the committed offsets (`run` publishes them for records it reads; the alerts are the
        reconciliation's)."""
        committed, ends = offsets
        alert_topics = frozenset(self.s.topics.alert_topics())
        dead: collections.Counter[str] = collections.Counter()
        unread: list[Output] = []
        done = 0
        total = sum(ends.values())

        def evaluate(tp: TopicPartition, records: list[Any]) -> None:
            nonlocal done
            for record in records:
                clock.at(input_timestamp(record))
                result = processor.process(tp, record, stores[tp])
                pipeline.settle(isinstance(result, Processed))
                if isinstance(result, Retry):
                    raise TimeoutError(
                        "the schema registry did not answer (a record could not be "
                        "decoded without it); nothing written"
                    )
                if isinstance(result, DeadLettered):
                    dead[result.reason] += 1
                if record.offset >= committed[tp]:
                    if isinstance(result, DeadLettered):
                        unread.append(result.output)
                    else:
                        unread.extend(o for o in result.outputs if o.topic not in alert_topics)
                done += 1
            stores[tp].take_dirty()  # into the store's backend; written whole at the end

        def progress() -> None:
            self.say(f"{done} of about {total} input records evaluated")

        self._read(reader, ends, evaluate, progress)
        clock.at(None)  # the host clock again for what follows
        self.say(f"{done} input records evaluated ({sum(dead.values())} would be dead-lettered)")
        return done, dead, unread

    def _write(  # noqa: PLR0917 - one call site
        self,
        admin: Any,
        inputs: list[TopicPartition],
        offsets: tuple[Mapping[TopicPartition, int], Mapping[TopicPartition, int]],
        counts: Mapping[str, int],
        stores: Mapping[TopicPartition, HistoryStore],
        outputs: tuple[Iterable[Record], list[Output]],
        codecs: Codecs,
        topic_id: bytes | None,
    ) -> int:
        """The reconciliation's alerts, the unread records' outputs, the changelog (each
        acknowledged), the group's offsets at the ends, the changelog compacted."""
        s = self.s
        topics = s.topics
        committed, ends = offsets
        producer = KafkaProducer(
            **s.kafka_common(),
            acks="all",
            linger_ms=20,
            client_id="her2-rebuild",
            allow_auto_create_topics=False,
            max_block_ms=s.tuning.request_timeout_ms,
        )
        timeout = s.tuning.delivery_timeout_ms / 1000 + 5
        existed = topics.history in counts  # created empty beforehand
        complete = False
        try:
            # un-compacted until the whole history is written (start-up refuses it), and
            # removed again if not all written: `run` would start on a partial one (third
            # review); a rebuild killed part way (no handler runs) leaves one `run` refuses
            try:
                if existed:
                    _configure(admin, topics.history, CHANGELOG_BEING_REBUILT)
                self._publish(producer, outputs, codecs, timeout)
                if not existed:
                    try:
                        create_topics(
                            admin,
                            s,
                            [topics.history],
                            counts[topics.input],
                            history_configs=CHANGELOG_BEING_REBUILT,
                        )
                    except ConfigError as exc:  # after the alerts: not "nothing written"
                        raise Her2Error(f"the changelog topic: {exc}") from exc
                    existed = True
                written = self._write_history(
                    producer, inputs, committed, stores, topic_id, timeout
                )
                self.say(f"{written} changelog records acknowledged")
                self._commit(admin, inputs, committed, ends)
                complete = True
                _configure(admin, topics.history, CHANGELOG_CONFIGS)  # whole: `run` may start
            except BaseException:
                if complete:  # the history whole, the offsets past it: keep it (review)
                    self.say(
                        f"the history is written whole and the group's offsets committed, but "
                        f"the changelog topic {topics.history} could not be compacted: compact "
                        "it yourself (kafka-configs --bootstrap-server <broker> --alter "
                        f"--entity-type topics --entity-name {topics.history} --add-config "
                        "cleanup.policy=compact,min.compaction.lag.ms=86400000); start-up "
                        "refuses it until then"
                    )
                elif existed:
                    self._remove_partial_changelog(admin)
                raise
        finally:
            producer.close(timeout=s.tuning.request_timeout_ms / 1000)
        return written

    def _publish(
        self,
        producer: Any,
        outputs: tuple[Iterable[Record], list[Output]],
        codecs: Codecs,
        timeout: float,
    ) -> None:
        """The reconciliation's alerts, then the unread records' classifications and dead
        letters, each acknowledged."""
        topics = self.s.topics
        publish, unread = outputs
        # the alerts first: refused, nothing of the history is written and the rebuild
        # can run again (what was published then held); written after the history, a
        # refusal left a changelog whose floors said "closed" while readers held it open
        futures = []
        for alert in publish:
            topic = topics.alert_topic(alert["alert_type"])
            futures.append(
                producer.send(
                    topic,
                    key=alert["patient_id"].encode(),
                    value=codecs.alerts[topic].encode(alert),
                )
            )
        try:
            _acknowledged(producer, futures, timeout)
        except KafkaError as exc:
            raise Her2Error(
                f"a reconciled alert was not acknowledged ({type(exc).__name__}: {exc}): if "
                "the broker refuses it for good, fix the alert topic (max.message.bytes of at "
                "least 1 MiB, WRITE ACL: docs/operations.md Her2ConsumerOutputsRefused) and run "
                "the rebuild again"
            ) from exc
        self.say(f"{len(futures)} reconciled alerts acknowledged")
        futures = [
            producer.send(
                out.topic,
                key=out.key,
                value=out.value,
                headers=out.headers,
                partition=out.partition,
                timestamp_ms=out.timestamp_ms,
            )
            for out in unread
        ]
        try:
            _acknowledged(producer, futures, timeout)
        except KafkaError as exc:  # run dead-letters such a record; a rebuild stops
            where = ", ".join(sorted({out.topic for out in unread}))
            raise Her2Error(
                "a classification or dead letter of a record past the committed offsets "
                f"was not acknowledged ({type(exc).__name__}: {exc}; sent to {where}): if "
                "the broker refuses it for good, fix the topic (max.message.bytes of at "
                "least 1 MiB, WRITE ACL, timestamp limits: docs/operations.md "
                "Her2ConsumerOutputsRefused) and run the rebuild again"
            ) from exc
        self.say(
            f"{len(futures)} classifications and dead letters of the records past the "
            "committed offsets acknowledged"
        )

    def _write_history(  # noqa: PLR0917 - one call site
        self,
        producer: Any,
        inputs: list[TopicPartition],
        committed: Mapping[TopicPartition, int],
        stores: Mapping[TopicPartition, HistoryStore],
        topic_id: bytes | None,
        timeout: float,
    ) -> int:
        """Every patient part of `stores` to the changelog, acknowledged; how many."""
        topics = self.s.topics
        written = 0
        for tp in inputs:
            # the offset below the committed one `run` had: applied by its restore
            # whether or not the offsets below were committed yet (the guard skips
            # records at or past the committed offset as written ahead of a commit)
            headers = covers(committed[tp] - 1 if committed[tp] > 0 else None, topic_id)
            futures = [
                producer.send(
                    topics.history,
                    key=key,
                    value=value,
                    headers=headers,
                    partition=tp.partition,
                )
                for key, value in stores[tp].records()
            ]
            _acknowledged(producer, futures, timeout)
            written += len(futures)
        return written

    def _commit(
        self,
        admin: Any,
        inputs: list[TopicPartition],
        committed: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
    ) -> None:
        """The group's offsets at the replayed ends: `run` goes on from there (the records
        before have their outputs). Her2Error if the broker refuses (a member joined)."""
        moved = {
            tp: OffsetAndMetadata(ends[tp], "", -1) for tp in inputs if ends[tp] > committed[tp]
        }
        if not moved:
            return
        answer = admin.alter_group_offsets(self.s.group_id, moved)
        failed = sorted(
            f"partition {tp.partition}: {error.__name__}"
            for tp, error in answer.items()
            if error is not NoError
        )
        if failed:
            raise Her2Error(
                f"the group's offsets could not be committed ({', '.join(failed)}): did an "
                "instance start? The changelog is removed; run the rebuild again with every "
                "instance stopped"
            )
        self.say(f"the group's offsets committed at the replayed ends ({len(moved)} partitions)")
