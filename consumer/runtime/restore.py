"""Changelog restore: the history of newly assigned partitions, read from the compacted
changelog up to the end offsets captured when the restore starts, within
HER2_RESTORE_TIMEOUT_SECONDS (HistoryRestoreError past it). An unreadable changelog record is
counted and skipped; a partition with more than HER2_MAX_UNREADABLE_CHANGELOG_SHARE of its
changelog records unreadable is held back (paused, never processed, /readyz 503 with the
reason): evaluated against a history with holes, a patient could get wrong alerts, and new
states written over the unreadable records would let compaction erase them for good. Runs on
the main thread, between two polls."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from consumer.config import Settings
from consumer.errors import HistoryRestoreError, kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.ops.metrics import Metrics
from consumer.runtime.kafka import Clients, Consumer, TopicPartition
from consumer.runtime.kafka.clients import restore_consumer_config
from consumer.runtime.partitions import PartitionTable
from consumer.runtime.records import INPUT_OFFSET_HEADER, INPUT_TOPIC_ID_HEADER
from consumer.state.backends import StateDir, open_states
from consumer.state.store import CacheBudget, HistoryRecordError, HistoryStore, PartCodec

log = get_logger("her2.service")

PROGRESS_EVERY_S: Final = 10.0  # a restore still running logs how far it got this often


class Restorer:
    """Restores pending partitions of a PartitionTable; owns the changelog reader."""

    def __init__(  # noqa: PLR0917 - the composition root hands over the runtime parts in order
        self,
        clients: Clients,
        settings: Settings,
        default_id: Callable[[], str],
        metrics: Metrics,
        stopping: Callable[[], bool],
        clock: Callable[[], dt.datetime],
        *,
        state_dir: Callable[[], StateDir | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        """Nothing connects before the first restore. `beat` tells /healthz the loop is
        turning: a restore may take up to HER2_RESTORE_TIMEOUT_SECONDS, longer than the
        liveness limit, and reading the changelog is progress."""
        self._clients = clients
        self._settings = settings
        self._default_id = default_id  # the instance id when HER2_INSTANCE_ID is unset
        self._metrics = metrics
        self._stopping = stopping
        self._clock = clock
        self._state_dir = state_dir
        self._monotonic = monotonic
        self._beat = beat
        # the decoded patients of every partition's store together (HER2_HISTORY_CACHE_PATIENTS)
        self._cache_budget = CacheBudget(settings.history_cache_patients)
        # the changelog parts of every partition's store, their fallbacks to fastavro counted
        self._codec = PartCodec(
            on_encode_fallback=metrics.fallback_hook("history_encode"),
            on_decode_fallback=metrics.fallback_hook("history_decode"),
        )
        self._retention = settings.evaluation.history_retention
        self._reader: Consumer | None = None
        self._seen: dict[TopicPartition, list[int]] = {}  # changelog tp -> [read, unreadable]
        # the input topic's id (start-up sets it; None when the broker does not tell it): the
        # offset guard holds only for changelog records written reading this very topic
        self.input_topic_id: bytes | None = None

    def new_store(self, tp: TopicPartition) -> HistoryStore:
        """An empty history store for input partition `tp`, on the configured backend."""
        states = open_states(self._settings.history_store, self._state_dir(), f"p{tp.partition}")
        return HistoryStore(
            self._retention, self._clock, states, budget=self._cache_budget, codec=self._codec
        )

    def restore_pending(self, table: PartitionTable) -> bool:
        """Read each pending partition's changelog to its end and hand the stores to `table`;
        False if stopped while restoring (the partitions stay paused and pending)."""
        partitions = sorted(table.pending)
        started = self._monotonic()
        timeout_ms = self._settings.tuning.request_timeout_ms
        # the offset guard is for at-least-once: under exactly-once the changelog and the
        # offsets commit in one transaction, and a committed-offset fetch would wait out any
        # open transaction (read_committed fetches only stable offsets)
        next_offsets: dict[TopicPartition, int | None] = dict.fromkeys(partitions)
        if not self._settings.exactly_once:
            for tp in partitions:  # each a broker request: a beat before each
                self._beat()
                next_offsets[tp] = table.next_offset(tp, timeout_ms)
        stores = {tp: self.new_store(tp) for tp in partitions}
        count = None
        try:
            count = self._read(stores, next_offsets, started)
        finally:
            if count is None:  # failed, or stopped while restoring (partitions left paused)
                for store in stores.values():
                    store.close()
        if count is None:
            return False
        seconds = self._monotonic() - started
        for tp in partitions:
            reason = self._too_unreadable(tp)
            if reason is not None:
                stores.pop(tp).close()
                table.block(tp, reason)
        table.restored(stores)
        self._metrics.history_restore_seconds.observe(seconds)
        log.info(
            events.HISTORY_RESTORED,
            topic=self._settings.topics.history,
            partitions=[tp.partition for tp in partitions],
            records=count,
            seconds=round(seconds, 3),
            patients=sum(len(store) for store in stores.values()),
        )
        return True

    def _too_unreadable(self, tp: TopicPartition) -> str | None:
        """The readiness reason if `tp`'s changelog had too many unreadable records."""
        read, unreadable = self._seen.get(
            TopicPartition(self._settings.topics.history, tp.partition), (0, 0)
        )
        share = self._settings.max_unreadable_changelog_share
        if unreadable == 0 or unreadable <= share * read:
            return None
        log.error(
            events.HISTORY_UNREADABLE_SHARE,
            topic=self._settings.topics.history,
            partition=tp.partition,
            count=unreadable,
            records=read,
            limit=share,
        )
        return (
            f"history changelog unreadable: {unreadable} of {read} records "
            f"(partition {tp.partition}, HER2_MAX_UNREADABLE_CHANGELOG_SHARE={share:g})"
        )

    def _read(
        self,
        stores: dict[TopicPartition, HistoryStore],
        next_offsets: dict[TopicPartition, int | None],
        started: float,
    ) -> int | None:
        """Apply changelog records up to the end offsets captured now; None if stopped. A long
        restore logs how far it got every PROGRESS_EVERY_S and counts its records as it reads
        them (her2_consumer_history_restored_records_total), so a pod that stays unready while
        it restores shows it is moving and how much is left."""
        s = self._settings
        deadline = started + s.tuning.restore_timeout_s
        history_topic = s.topics.history
        by_changelog = {TopicPartition(history_topic, tp.partition): stores[tp] for tp in stores}
        guard = {TopicPartition(history_topic, tp.partition): next_offsets[tp] for tp in stores}
        changelog = sorted(by_changelog)
        if self._reader is None:
            self._reader = self._clients.consumer(**restore_consumer_config(s, self._default_id()))
        rc = self._reader
        timeout_ms = s.tuning.request_timeout_ms
        rc.assign(changelog)
        for tp in changelog:
            self._seen[tp] = [0, 0]
        counts = _Counts({}, {}, {})
        try:
            rc.seek_to_beginning(*changelog)
            end = rc.end_offsets(changelog, timeout_ms=timeout_ms)
            # an input offset at or past the input partition's end was never processed here
            # (the input topic re-created or truncated since): such a record is history that
            # no re-run will rebuild, so the offset guard must not skip it
            guarded = [tp for tp in stores if next_offsets[tp] is not None]
            input_end = rc.end_offsets(guarded, timeout_ms=timeout_ms) if guarded else {}
            ends = {TopicPartition(history_topic, tp.partition): input_end.get(tp) for tp in stores}
            left = {tp: end[tp] - rc.position(tp, timeout_ms=timeout_ms) for tp in changelog}
            remaining = {tp for tp, n in left.items() if n > 0}
            count = 0
            report_at = started + PROGRESS_EVERY_S
            while remaining:
                if self._stopping():
                    return None
                self._beat()
                now = self._monotonic()
                if now > deadline:
                    raise HistoryRestoreError(
                        f"history restore of {history_topic} partitions "
                        f"{sorted(tp.partition for tp in remaining)} did not reach the end offsets "
                        f"within HER2_RESTORE_TIMEOUT_SECONDS={s.tuning.restore_timeout_s:g} "
                        f"({count} records restored, {sum(left[tp] for tp in remaining)} "
                        "offsets left)"
                    )
                if now >= report_at:
                    report_at = now + PROGRESS_EVERY_S
                    log.info(
                        events.HISTORY_RESTORE_PROGRESS,
                        topic=history_topic,
                        partitions=sorted(tp.partition for tp in remaining),
                        records=count,
                        offsets_left=sum(left[tp] for tp in remaining),
                        seconds=round(now - started, 3),
                        timeout_seconds=s.tuning.restore_timeout_s,
                    )
                polled = 0
                for tp, records in rc.poll(timeout_ms=200).items():
                    for record in records:
                        if record.offset < end[tp]:
                            polled += self._take(
                                by_changelog[tp], tp, record, (guard[tp], ends[tp]), counts
                            )
                if polled:
                    count += polled
                    self._metrics.history_restored_records.inc(polled)
                for tp in list(remaining):
                    left[tp] = end[tp] - rc.position(tp, timeout_ms=timeout_ms)
                    if left[tp] <= 0:
                        remaining.discard(tp)
            return count
        finally:
            _log_counts(counts)  # also when stopped, past the deadline or failed
            rc.assign([])

    def _take(
        self,
        store: HistoryStore,
        tp: TopicPartition,
        record: Any,
        limits: tuple[int | None, int | None],
        counts: _Counts,
    ) -> int:
        """Restore one changelog record unless the offset guard skips it (`limits`: the next
        input offset to process, the input partition's end); 1 if restored."""
        headers = _headers(record)
        covered = _input_offset(headers)
        if covered is None:  # written before the header existed: restored
            return self._restore_record(store, tp, record)
        if limits[0] is not None and _elsewhere(headers, self.input_topic_id):
            _note(counts.elsewhere, tp, record.offset)  # another topic's offsets: restored
        elif _past(covered, limits[1]):
            _note(counts.beyond_end, tp, record.offset)  # no re-run rebuilds it: restored
        elif _past(covered, limits[0]):
            self._metrics.history_ahead_records.inc()
            _note(counts.ahead, tp, record.offset)
            return 0
        return self._restore_record(store, tp, record)

    def _restore_record(self, store: HistoryStore, tp: TopicPartition, record: Any) -> int:
        seen = self._seen.setdefault(tp, [0, 0])
        seen[0] += 1
        try:
            store.restore(record.key, record.value)
        except HistoryRecordError as exc:
            seen[1] += 1
            self._metrics.history_unreadable_records.inc()
            log.error(
                events.HISTORY_RECORD_UNREADABLE,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                reason=exc.reason,
                error_type=type(exc).__name__,
            )
            return 0
        return 1

    def close(self) -> None:
        """Close the changelog reader (logged, never raised)."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        try:
            reader.close(autocommit=False, timeout_ms=self._settings.tuning.request_timeout_ms)
        except Exception as exc:
            log.warning(events.RESTORE_CONSUMER_CLOSE_FAILED, error_type=kind_of(exc))


class _Counts(NamedTuple):
    """Changelog records of one restore, per partition [count, first, last offset]."""

    ahead: dict[TopicPartition, list[int]]  # skipped by the offset guard
    beyond_end: dict[TopicPartition, list[int]]  # past the input's end: restored
    elsewhere: dict[TopicPartition, list[int]]  # written reading another input: restored


def _note(seen: dict[TopicPartition, list[int]], tp: TopicPartition, offset: int) -> None:
    """Count a changelog record of `tp` at `offset` in `seen` ([count, first, last offset])."""
    entry = seen.setdefault(tp, [0, offset, offset])
    entry[0] += 1
    entry[2] = offset


def _log_counts(counts: _Counts) -> None:
    """One warning per partition and restore, not one per record (a stop between the changelog
    and the commit leaves up to a batch's worth of records ahead): the records the offset guard
    skipped, then those past the input's end that it restored."""
    for tp, (count, first, last) in sorted(counts.ahead.items()):
        log.warning(
            events.HISTORY_RECORD_AHEAD,
            topic=tp.topic,
            partition=tp.partition,
            count=count,
            first_offset=first,
            last_offset=last,
        )
    for tp, (count, first, last) in sorted(counts.beyond_end.items()):
        log.warning(
            events.HISTORY_BEYOND_INPUT_END,
            topic=tp.topic,
            partition=tp.partition,
            count=count,
            first_offset=first,
            last_offset=last,
        )
    for tp, (count, first, last) in sorted(counts.elsewhere.items()):
        log.info(
            events.HISTORY_FROM_OTHER_INPUT,
            topic=tp.topic,
            partition=tp.partition,
            count=count,
            first_offset=first,
            last_offset=last,
        )


def _headers(record: Any) -> dict[str, bytes]:
    """A changelog record's headers by name (the first of a repeated name, as read before)."""
    found: dict[str, bytes] = {}
    for name, value in record.headers or ():
        found.setdefault(name, value)
    return found


def _elsewhere(headers: dict[str, bytes], topic_id: bytes | None) -> bool:
    """Whether a changelog record was written reading another input topic (header
    her2.input.topic-id: a DR site's mirror, a failback's rebuilt topic, the topic re-created):
    its input offset is that topic's, and says nothing about this one's committed offset or end.
    MirrorMaker does not keep offsets: a DR site's are often lower, so the offset guard skipped
    its history as "ahead" of the committed offset, input records that are never read again
    there (measured: a T-DXd alert left open for 20 of 40 patients then reported HER2 0).
    Records without the header (before it existed) keep the guard and the input-end rule."""
    value = headers.get(INPUT_TOPIC_ID_HEADER)
    return topic_id is not None and bool(value) and bytes(value or b"") != topic_id


def _input_offset(headers: dict[str, bytes]) -> int | None:
    """The input offset a changelog record covers (header her2.input.offset); None for a
    record written before the header existed, or with a value that is not a number."""
    value = headers.get(INPUT_OFFSET_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _past(covered: int, offset: int | None) -> bool:
    """Whether input offset `covered` is at or past `offset` (never, with no offset).

    The offset guard (`offset` the next input offset to process, PartitionTable.next_offset: the
    committed offset, or where a re-run starts): at-least-once publishes the changelog after
    every other output and then commits, so a stop in between leaves the changelog ahead, and
    the input records are processed again; applying their state first would evaluate them
    against themselves. With no committed offset (none yet, or the group's offsets expired)
    nothing is skipped: processing then restarts from the reset policy, and dropping the
    changelog would lose the history. Records without the header are applied."""
    return offset is not None and covered >= offset
