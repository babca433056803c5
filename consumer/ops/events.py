"""The name of every log event the service emits, declared once (after arroyo's
`utils/metric_defs.py`). The strings are a contract: operators, alerts, tests and docs grep for
them, so a name never changes here without a changelog entry. Every `log.<level>(...)` in
consumer/ passes one of these constants; tests/unit/test_log_events.py checks that no call
uses a literal and that every name here is used.
"""

from __future__ import annotations

from typing import Final

# app.py: the composition root of `run`
SIGNAL_RECEIVED: Final = "signal received; finishing the batch and stopping"
HTTP_SERVING: Final = "serving /metrics, /healthz and /readyz"
CONFIG_ERROR: Final = "configuration error"
RULESET_INVALID: Final = "rule set invalid"
HTTP_START_FAILED: Final = "metrics HTTP server failed to start"

# runtime/kafka/clients.py: kafka-python's internals the workarounds of quirks.py reach
KAFKA_WORKAROUND_NOT_APPLIED: Final = (
    "a kafka-python workaround cannot reach this kafka-python's internals and is not applied; "
    "the service was tested with 3.0.12 (docs/operations.md: Client log lines)"
)

# runtime/service.py: start, stop, exit codes
STARTED: Final = "started"
SHUTDOWN: Final = "shutdown"
INSTANCE_SLOT_CLAIMED: Final = "instance slot claimed"
STATE_DIR_IN_MEMORY: Final = (
    "HER2_STATE_DIR is on a memory file system (tmpfs): the disk history store will hold the "
    "history in memory, and a small tmpfs fills up; point HER2_STATE_DIR at a disk"
)
HISTORY_RETENTION_ON: Final = (
    "HER2_HISTORY_RETENTION_DAYS is set: accessions reported longer ago leave the patient "
    "history, and a dropped sample can change findings (README: Patient history)"
)
TEST_CRASH_BEFORE_COMMIT: Final = "test hook: killing the process before commit"
CONSUMER_CLOSE_FAILED: Final = "consumer close failed"
CONSUMER_REPLACED_AFTER_SESSION_LOST: Final = (
    "consumer fenced after its group session ended; a new consumer rejoins"
)
PRODUCER_FENCED: Final = "producer fenced: another instance uses this transactional id; stopping"
STOPPING_WITHOUT_COMMITTING: Final = "stopping without committing"
STOPPED_WAITING_ON_BROKER: Final = (
    "stop requested while the batch in flight waited on the broker; the batch is given up"
)
HISTORY_STORE_FAILED: Final = "history store failed; stopping without committing"
STOPPING_ON_KAFKA_ERROR: Final = "stopping on a Kafka error"
STOPPING_ON_UNEXPECTED_ERROR: Final = "stopping on an unexpected error"

# runtime/startup.py and runtime/kafka/preflight.py: before the loop
REGISTRY_UNAVAILABLE_AT_START: Final = "schema registry unavailable; retrying"
INPUT_TOPIC_MISSING: Final = (
    "input topic missing; waiting for it to be created (it is never auto-created)"
)
OUTPUT_TOPICS_CREATED: Final = "output topics created"
GROUP_OFFSETS_UNREAD: Final = (
    "cannot read the group's committed offsets; a missing changelog is created without checking "
    "that no history was lost"
)
BROKER_CONFIG_UNREAD: Final = (
    "cannot read the broker's settings; the setting named is not checked against them"
)
GROUP_OFFSETS_RETRY: Final = (
    "the group's committed offsets could not be read yet (the changelog is missing); retrying"
)
OUTPUT_CONFIG_UNREAD: Final = (
    "cannot read an output topic's cleanup policy; make sure it is not compacted"
)
ALERT_TOPIC_RETENTION_FINITE: Final = (
    "alert topic deletes records by age or size (retention.ms / retention.bytes); a reader "
    "building the open alerts from its start misses those opened before: set retention.ms=-1"
)
DLQ_RETENTION_FINITE: Final = (
    "dead-letter topic deletes records by age or size (retention.ms / retention.bytes); a "
    "dead letter not replayed before then is a lab result lost: set retention.ms=-1"
)
CHANGELOG_CONFIG_UNREAD: Final = (
    "cannot read the history changelog's cleanup policy; make sure it is compact only"
)
CHANGELOG_COMPACTION_LAG_SHORT: Final = (
    "history changelog's min.compaction.lag.ms is below a day; a restore after commits failed "
    "for longer than it could lose history"
)
CLOCK_CHECK_UNAVAILABLE: Final = "clock check unavailable"
CLOCK_SKEW: Final = "host clock differs from the Kafka cluster's clock"
CLOCK_CHECKED: Final = "clock checked"
KAFKA_UNREACHABLE: Final = "cannot connect to Kafka"
KAFKA_UNREACHABLE_RETRY: Final = "no Kafka broker answered at start-up; retrying"

# runtime/partitions.py and runtime/restore.py: rebalances and the changelog
PARTITIONS_ASSIGNED: Final = "partitions assigned"
PARTITIONS_REVOKED: Final = "partitions revoked"
PARTITIONS_LOST: Final = "partitions lost"
OFFSET_GUARD_OFF: Final = "committed offset unknown; changelog offset guard off for the partition"
HISTORY_RESTORED: Final = "history restored"
HISTORY_RESTORE_PROGRESS: Final = "history restore in progress"
HISTORY_UNREADABLE_SHARE: Final = (
    "history changelog unreadable beyond HER2_MAX_UNREADABLE_CHANGELOG_SHARE; partition held back"
)
HISTORY_RECORD_AHEAD: Final = (
    "history records ahead of the committed input offset; skipped "
    "(their input records are processed again)"
)
HISTORY_BEYOND_INPUT_END: Final = (
    "history records cover input offsets past the input partition's end (the input topic "
    "re-created or truncated); restored, not skipped"
)
INPUT_TOPIC_ID_UNREAD: Final = (
    "cannot read the input topic's id; changelog records are written without it (after a "
    "failover to a mirror, or the topic re-created, a restore may skip history as ahead)"
)
HISTORY_FROM_OTHER_INPUT: Final = (
    "history records were written reading another input topic (a mirror after a failover or "
    "a failback, or the topic re-created); restored without the offset guard"
)
HISTORY_RECORD_UNREADABLE: Final = "history record unreadable; skipped"
RESTORE_CONSUMER_CLOSE_FAILED: Final = "restore consumer close failed"

# runtime/loop.py and runtime/processor.py: records and batches
POLL_BROKER_UNREACHABLE: Final = "broker unreachable while polling; retrying"
RECORD_PROCESSED: Final = "record processed"
RECORD_DEAD_LETTERED: Final = "record dead-lettered"
RECORD_PROCESSING_FAILED: Final = "record processing failed"
WRITER_SYMBOLS_UNKNOWN: Final = (
    "a writer schema has enum symbols this service does not know; records that carry one are "
    "read as the enum's default (README, Schema compatibility): ask the lab"
)
REGISTRY_UNAVAILABLE_RETRY: Final = "schema registry unavailable; record will be retried"
BROKER_METADATA_RETRY: Final = "input partition count unavailable; record will be retried"
DLQ_LIMIT_REACHED: Final = "too many processing errors in a row; stopping without committing"
HISTORY_STATE_TOO_LARGE: Final = (
    "history state larger than a Kafka request; stopping without committing"
)
OUTPUT_REFUSED: Final = (
    "output refused by the broker for good; "
    "the record will be dead-lettered and its batch run again"
)
BATCH_COMMITTED: Final = "batch committed"
LAG_REFRESH_FAILED: Final = "lag refresh failed"
INPUT_TOPIC_GONE: Final = (
    "input topic missing while running (deleted, or no longer visible to this service's user?); "
    "not ready until it exists again "
    "(docs/operations.md, Her2ConsumerNoPartitionsAssigned)"
)

# runtime/delivery.py and runtime/kafka/: publishing and committing
OUTPUTS_RESENT: Final = "outputs not acknowledged; re-sending"
BROKER_UNANSWERED: Final = (
    "no answer from the broker within the request timeout; not ready while waiting"
)
COMMIT_REFUSED_IN_REBALANCE: Final = (
    "offset commit refused during a rebalance; records may be redelivered"
)
COMMIT_FAILED: Final = (
    "offset commit failed; a later commit covers these records or they are redelivered"
)
PRODUCER_UNAVAILABLE: Final = (
    "a new producer could not be made (its bootstrap failed); the next publish attempt tries again"
)
PRODUCER_REPLACED: Final = "producer replaced after a failed publish attempt"
PRODUCER_CLOSE_FAILED: Final = "producer close failed"
PRODUCER_FORCE_CLOSED: Final = "producer force-closed"
TRANSACTION_ABORT_FAILED: Final = "transaction abort failed"
TRANSACTION_OFFSETS_REFUSED: Final = (
    "transaction offsets refused during a rebalance; the batch runs again from the changelog"
)
GROUP_LEFT_BEFORE_CHANGELOG: Final = (
    "left the consumer group before writing the changelog; the batch runs again from the changelog"
)
REFUSED_OUTPUTS_ISOLATED: Final = "outputs refused for good isolated"
PROBE_ABORT_FAILED: Final = "probe transaction abort failed"
