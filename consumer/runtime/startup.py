"""Start-up: the output schemas registered (Confluent output), the input topic waited for (never
created here), missing outputs created with the input's partition count, and the changelog
checked to be co-partitioned with the input and to keep every key for ever (the host's part:
runtime/host.py).

The two waits (registry down, input topic missing) beat the health hook at every attempt, so
/healthz stays 200 while the service waits (no back-off delay is longer than the stall limit),
and set /readyz's reason to what is awaited (issue 14, item 4; docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.avro.codec import schema_json
from consumer.avro.registry import SchemaRegistryClient
from consumer.config import Settings
from consumer.errors import BrokerError, ConfigError, RegistryError
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.resources import HER2_ALERT, HER2_CLASSIFICATION, parsed_schema
from consumer.runtime.kafka import (
    Admin,
    ConfigResource,
    ConfigResourceType,
    TopicPartition,
    errors,
)
from consumer.runtime.records import (
    INPUT_WAIT_BACKOFF,
    REGISTRY_BACKOFF,
    Backoff,
    StartupWait,
    input_missing,
)

_TOPIC_EXISTS: Final = 36  # TOPIC_ALREADY_EXISTS
# What to do when the broker refuses to create an output topic, by error code.
_CREATE_HINTS: Final = {
    38: "HER2_TOPIC_REPLICATION_FACTOR is more than the cluster's brokers: lower it",
    29: "the service may not create topics: create it, or grant it Create",
    31: "the service may not create topics: create it, or grant it Create",
}

# The changelog's settings when the service creates it. compact: the latest value of every key
# is kept for ever (under "delete" the broker would remove patients' history after
# retention.ms). min.compaction.lag.ms, one day: at a restore, at-least-once skips records
# written ahead of the committed offset (runtime/restore.py); while commits fail, compaction must
# not remove a key's older record in favour of one the restore would skip. The day is the time
# the on-call has to restore commits (Her2ConsumerCommitFailures) before that can happen.
_LAG: Final = "min.compaction.lag.ms"
CHANGELOG_CONFIGS: Final = {"cleanup.policy": "compact", _LAG: "86400000"}
_RETENTION: Final = ("retention.ms", "retention.bytes")  # what "delete" deletes by
_FOR_EVER: Final = "-1"
# Alert topics keep every record: a reader builds the open alerts from the start of them
# (`open-alerts`, a notification service's new instance, the replay procedure's `--from-offsets`),
# and a finite retention (the broker's default: a week) would hide every alert opened before.
ALERT_TOPIC_CONFIGS: Final = {"cleanup.policy": "delete", "retention.ms": _FOR_EVER}
# The dead-letter topic keeps every record too: a dead letter is a lab result that got no
# classification and no alert until someone fixes its cause and replays it, and the broker's
# default (a week) would delete it first over a long weekend (nothing lost, design.md).
DLQ_TOPIC_CONFIGS: Final = {"cleanup.policy": "delete", "retention.ms": _FOR_EVER}
# A changelog `her2-consumer rebuild-history` is writing: every record kept but not compacted,
# which start-up refuses (check_changelog_retention), until the whole history is written and the
# rebuild compacts it (CHANGELOG_CONFIGS). A rebuild killed part way leaves it so: `run` does not
# start on a partial history.
CHANGELOG_BEING_REBUILT: Final = {
    "cleanup.policy": "delete",
    "retention.ms": _FOR_EVER,
    "retention.bytes": _FOR_EVER,
}

log = get_logger("her2.service")

Wait = Callable[[float], bool]  # waits up to n seconds; True when the service was stopped
REGISTRY_UNAVAILABLE: Final = "schema registry unavailable"


def register_output_schemas(
    s: Settings,
    registry: SchemaRegistryClient | None,
    wait: Wait,
    set_ready: Callable[..., None],
    beat: Callable[[], None],
    *,
    backoff: Backoff = REGISTRY_BACKOFF,
) -> None:
    """Confluent output: register the output schemas now, retrying while the registry is
    unreachable, so that encoding never waits on the registry mid-batch."""
    if s.output_format != "confluent" or registry is None:
        return
    subjects = [
        (f"{s.topics.classification}-value", HER2_CLASSIFICATION),
        *((f"{topic}-value", HER2_ALERT) for topic in s.topics.alert_topics()),
    ]
    for subject, schema in subjects:
        retry = StartupWait(backoff, wait, set_ready, beat)
        while True:
            try:
                registry.register(subject, schema_json(parsed_schema(schema)))
                if retry.attempt:
                    set_ready(False, "starting")
                break
            except RegistryError as exc:
                delay = retry.failed()
                log.warning(
                    events.REGISTRY_UNAVAILABLE_AT_START,
                    attempt=retry.attempt,
                    error_type=type(exc).__name__,
                    reason=exc.kind,
                    seconds=delay,
                )
                if retry.pause(REGISTRY_UNAVAILABLE, delay):
                    return


def ensure_topics(
    admin: Admin,
    s: Settings,
    wait: Wait,
    set_ready: Callable[..., None],
    beat: Callable[[], None],
    *,
    backoff: Backoff = INPUT_WAIT_BACKOFF,
) -> dict[str, int] | None:
    """Wait for the input topic, create missing outputs; return the partition count of the
    input and of every output (None when stopped while waiting)."""
    retry = StartupWait(backoff, wait, set_ready, beat)
    while True:
        counts = partition_counts(admin, [s.topics.input])
        if s.topics.input in counts:
            break
        delay = retry.failed()
        log.warning(
            events.INPUT_TOPIC_MISSING,
            input_topic=s.topics.input,
            attempt=retry.attempt,
            seconds=delay,
        )
        if retry.pause(input_missing(s.topics.input), delay):
            return None
    partitions = counts[s.topics.input]
    existing = partition_counts(admin, list(s.topics.outputs()))
    missing = [t for t in s.topics.outputs() if t not in existing]
    if s.topics.history in missing and not check_history_not_lost(
        admin, s, partitions, wait, beat, set_ready=set_ready, backoff=backoff
    ):
        return None  # stopped while waiting for the group's offsets
    if missing:
        create_topics(admin, s, missing, partitions)
        existing = partition_counts(admin, list(s.topics.outputs()))
    history_partitions = existing.get(s.topics.history)
    if history_partitions != partitions:
        raise ConfigError(
            f"HER2_HISTORY_TOPIC {s.topics.history} has {history_partitions} partitions "
            f"but HER2_INPUT_TOPIC has {partitions}: the changelog must be co-partitioned "
            "with the input (same partition count)"
        )
    check_changelog_retention(admin, s.topics.history)
    check_output_settings(admin, s)
    return {**existing, s.topics.input: partitions}


# the /readyz reason while the group's committed offsets are unanswered at start-up
GROUP_COORDINATOR_WAIT: Final = "waiting for the group coordinator"
_EARLIEST: Final = -2  # ListOffsets' wire sentinel for a partition's log start
_SESSION_BOUNDS: Final = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")


# attempts of the input topic id's read before start-up goes on without it (the broker has just
# answered; a failure here is a blip or a refusal)
_TOPIC_ID_ATTEMPTS: Final = 3


def input_topic_id(admin: Admin, topic: str, wait: Wait) -> bytes | None:
    """The input topic's id (DescribeTopics; Kafka gives a mirror or a re-created topic a new
    one), which changelog records name beside the input offset they cover (records.
    INPUT_TOPIC_ID_HEADER). A retriable error is tried again, a second apart; None, with a
    warning, when the broker does not tell it (all zeros before topic ids) or keeps failing:
    the offset guard then holds for every record, as before (review: one timeout must not
    bring the DR loss back, so it is retried)."""
    for attempt in range(1, _TOPIC_ID_ATTEMPTS + 1):
        try:
            infos = admin.describe_topics([topic])
        except BrokerError as exc:
            if not exc.retriable or attempt == _TOPIC_ID_ATTEMPTS or wait(1.0):
                break
            continue
        found = next((info.get("topic_id") for info in infos if info.get("name") == topic), None)
        if isinstance(found, str) and found.strip("0-"):
            return found.encode()
        break
    log.warning(events.INPUT_TOPIC_ID_UNREAD, input_topic=topic)
    return None


def check_session_timeout(admin: Admin, s: Settings) -> None:
    """ConfigError when HER2_SESSION_TIMEOUT_MS is outside the broker's group session bounds:
    the broker refuses the join (InvalidSessionTimeout), which kafka-python raises as a Kafka
    error (exit 1, the variable unnamed) and librdkafka only logs at debug level (the service
    then waited unready for ever, without a line: measured). The bounds are read from the
    first live broker that answers; a warning when none does (no DescribeConfigs on the
    cluster, brokers down or fenced): the check must never stop a healthy cluster."""
    bounds = _session_bounds(admin)
    if bounds is None:
        log.warning(events.BROKER_CONFIG_UNREAD, variable="HER2_SESSION_TIMEOUT_MS")
        return
    low, high = bounds
    timeout = s.tuning.session_timeout_ms
    if not low <= timeout <= high:
        raise ConfigError(
            f"HER2_SESSION_TIMEOUT_MS={timeout} is outside the broker's group session bounds "
            f"(group.min.session.timeout.ms={low}, group.max.session.timeout.ms={high}): the "
            "broker would refuse the consumer's join; set it within them"
        )


def _session_bounds(admin: Admin) -> tuple[int, int] | None:
    """(group.min.session.timeout.ms, group.max.session.timeout.ms) of the first live broker
    that answers DescribeConfigs; None when none does."""
    try:
        brokers = admin.describe_cluster().get("brokers") or []
    except BrokerError:
        return None
    for broker in (str(b["broker_id"]) for b in brokers if not b.get("is_fenced")):
        resource = ConfigResource(
            ConfigResourceType.BROKER, broker, configs=dict.fromkeys(_SESSION_BOUNDS)
        )
        try:
            found = admin.describe_configs([resource], config_filter="all")
        except BrokerError:  # that broker down or restarting: ask the next
            continue
        entries = found.get("broker", {}).get(broker) or {}
        values = [entries.get(key, {}).get("value") for key in _SESSION_BOUNDS]
        if all(isinstance(value, str) and value.isdigit() for value in values):
            return int(values[0]), int(values[1])
    return None


def check_history_not_lost(
    admin: Admin,
    s: Settings,
    partitions: int,
    wait: Wait = lambda _seconds: False,
    beat: Callable[[], None] = lambda: None,
    *,
    set_ready: Callable[..., None] = lambda *_: None,
    backoff: Backoff = INPUT_WAIT_BACKOFF,
) -> bool:
    """ConfigError when the changelog does not exist but the group has committed offsets on
    the input: the history those records built is gone (the changelog deleted, or
    HER2_HISTORY_TOPIC changed), and a changelog created empty now would have every later
    report evaluated without it (measured: retractions missing, a CRITICAL caution left
    active). The service creates the changelog before it commits anything, so a first start
    has no committed offset. A warning when the offsets cannot be read (no Describe on the
    group); a retriable error (a coordinator not loaded yet on a broker just started) is
    waited out, like the input topic (unready with GROUP_COORDINATOR_WAIT as the reason). False
    when stopped while waiting."""
    asked = [TopicPartition(s.topics.input, p) for p in range(partitions)]
    retry = StartupWait(backoff, wait, set_ready, beat)
    while True:
        try:
            found = admin.list_group_offsets({s.group_id: asked}).get(s.group_id, {})
            if retry.attempt:
                set_ready(False, "starting")  # the coordinator answered: on with the start
            break
        except BrokerError as exc:
            if not exc.retriable:
                log.warning(events.GROUP_OFFSETS_UNREAD, group_id=s.group_id, error_type=exc.kind)
                return True
            delay = retry.failed()
            log.warning(
                events.GROUP_OFFSETS_RETRY,
                group_id=s.group_id,
                error_type=exc.kind,
                attempt=retry.attempt,
                seconds=delay,
            )
            if retry.pause(GROUP_COORDINATOR_WAIT, delay):
                return False
    committed = {tp: meta.offset for tp, meta in found.items() if meta and meta.offset > 0}
    if not committed:
        return True
    # a group reset to the earliest offsets (README: the changelog lost; an upgrade) has
    # processed nothing since: its offsets are at the log start, which retention or a records
    # deletion moves above 0
    earliest = admin.list_partition_offsets(dict.fromkeys(committed, _EARLIEST))
    committed = {tp: o for tp, o in committed.items() if o > earliest[tp].offset}
    if not committed or s.topics.history in partition_counts(admin, [s.topics.history]):
        return True  # nothing processed; or there after all (a metadata answer left it out)
    raise ConfigError(
        f"HER2_HISTORY_TOPIC {s.topics.history} does not exist, but group {s.group_id} "
        f"has processed records of HER2_INPUT_TOPIC {s.topics.input} (committed offsets "
        f"past the log start on partitions {sorted(tp.partition for tp in committed)}): "
        "the patients' history is gone (the changelog deleted, or HER2_HISTORY_TOPIC "
        "changed), and starting would evaluate every later report without it; restore the "
        "changelog or point HER2_HISTORY_TOPIC at it, or rebuild it from the input with "
        "`her2-consumer rebuild-history` (README: If the changelog topic is lost); if "
        "starting without it is deliberate, create the changelog yourself "
        "(docs/operations.md: History changelog missing)"
    )


# Output topics that must not be compacted: each is keyed by patient (the DLQ by the input's
# key, possibly none), so compaction would keep one record per patient and drop the others.
def check_output_settings(admin: Admin, s: Settings) -> None:
    """ConfigError when an output other than the changelog has a cleanup.policy with
    "compact" (a reader from the start, like `open-alerts`, would miss every alert but each
    patient's latest; a compacted DLQ refuses the records of keyless input). A warning when the
    settings cannot be read, when an alert topic deletes records by age or size (a reader
    building the open alerts from its start would miss those opened before), and when the
    dead-letter topic does (a dead letter not replayed in time is lost)."""
    topics = [t for t in s.topics.outputs() if t != s.topics.history]
    keys = dict.fromkeys(("cleanup.policy", *_RETENTION))
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs=keys) for t in topics]
    found = admin.describe_configs(resources, config_filter="all").get("topic", {})
    alert_topics = set(s.topics.alert_topics())
    for topic in topics:
        values = {key: entry.get("value") for key, entry in (found.get(topic) or {}).items()}
        policy = values.get("cleanup.policy")
        if policy is None:
            log.warning(events.OUTPUT_CONFIG_UNREAD, topic=topic)
            continue
        finite = any(values.get(k) != _FOR_EVER for k in _RETENTION)
        if topic in alert_topics and finite:
            log.warning(events.ALERT_TOPIC_RETENTION_FINITE, topic=topic)
        elif topic == s.topics.dlq and finite:
            log.warning(events.DLQ_RETENTION_FINITE, topic=topic)
        if "compact" in _policies(policy):
            raise ConfigError(
                f"output topic {topic} has cleanup.policy={policy}: its records are keyed by "
                "patient, and compaction would keep only each key's latest (alerts and "
                "dead letters lost to readers); set cleanup.policy=delete (kafka-configs "
                "--bootstrap-server <broker> --alter --entity-type topics --entity-name "
                f"{topic} --add-config cleanup.policy=delete)"
            )


def _policies(policy: str) -> set[str]:
    """The parts of a cleanup.policy value ("compact,delete" -> {"compact", "delete"})."""
    return {part.strip() for part in policy.split(",")}


def check_changelog_retention(admin: Admin, topic: str) -> None:
    """ConfigError when the broker would delete changelog records by age or size: a
    cleanup.policy without "compact", or with "delete" and a finite retention.ms or
    retention.bytes (a topic someone else created with the broker's defaults). A warning when
    the settings cannot be read (no DescribeConfigs permission: kafka-python returns nothing),
    and when its min.compaction.lag.ms is below the day the service sets (a changelog created
    before it set one, or by someone else)."""
    keys = ("cleanup.policy", *_RETENTION, _LAG)
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(keys))
    found = admin.describe_configs([resource], config_filter="all").get("topic", {}).get(topic)
    values = {key: entry.get("value") for key, entry in (found or {}).items()}
    policy = values.get("cleanup.policy")
    if policy is None:
        log.warning(events.CHANGELOG_CONFIG_UNREAD, topic=topic)
        return
    policies = _policies(policy)
    finite = [k for k in _RETENTION if "delete" in policies and values.get(k) != _FOR_EVER]
    if policies == {"delete"} and all(values.get(k) == _FOR_EVER for k in _RETENTION):
        raise ConfigError(
            f"HER2_HISTORY_TOPIC {topic} is not compacted and keeps every record, as "
            "`her2-consumer rebuild-history` leaves it until the whole history is written: a "
            "rebuild stopped part way, and the history in it is partial. Delete the topic and "
            "run the rebuild again (README 'If the changelog topic is lost'); if the rebuild "
            "said the history is whole, compact it instead. If no rebuild "
            "wrote it, compact it (kafka-configs --bootstrap-server <broker> --alter "
            f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)"
        )
    if "compact" not in policies or finite:
        raise ConfigError(
            f"HER2_HISTORY_TOPIC {topic} has cleanup.policy={policy}"
            + "".join(f", {k}={values.get(k)}" for k in finite)
            + ": the broker would delete patients' history; the changelog must be compacted "
            "and keep every key (cleanup.policy=compact; kafka-configs --bootstrap-server "
            f"<broker> --alter --entity-type topics --entity-name {topic} --add-config "
            "cleanup.policy=compact)"
        )
    lag = values.get(_LAG)
    if lag is not None and lag.isdigit() and int(lag) < int(CHANGELOG_CONFIGS[_LAG]):
        log.warning(
            events.CHANGELOG_COMPACTION_LAG_SHORT,
            topic=topic,
            min_compaction_lag_ms=int(lag),
            recommended_ms=int(CHANGELOG_CONFIGS[_LAG]),
        )


def create_topics(
    admin: Admin,
    s: Settings,
    missing: list[str],
    partitions: int,
    *,
    history_configs: Mapping[str, str] = CHANGELOG_CONFIGS,
) -> None:
    """Create the missing outputs like the input (the changelog compacted, or with
    `history_configs`); ConfigError if the broker refuses one."""
    specs: dict[str, dict[str, Any]] = {}
    for topic in missing:
        spec: dict[str, Any] = {
            "num_partitions": partitions,
            "replication_factor": s.tuning.replication_factor,
        }
        # the others never compacted, whatever the broker's log.cleanup.policy (start-up
        # refuses a compacted output: check_output_settings); alert topics kept for ever
        if topic == s.topics.history:
            spec["configs"] = dict(history_configs)
        elif topic in s.topics.alert_topics():
            spec["configs"] = dict(ALERT_TOPIC_CONFIGS)
        elif topic == s.topics.dlq:
            spec["configs"] = dict(DLQ_TOPIC_CONFIGS)
        else:
            spec["configs"] = {"cleanup.policy": "delete"}
        specs[topic] = spec
    result = admin.create_topics(specs, raise_errors=False)
    for entry in result.get("topics", []):
        code = entry.get("error_code", 0)
        if code not in (0, _TOPIC_EXISTS):
            name = errors.for_code(code).__name__
            hint = _CREATE_HINTS.get(code, "create it or fix the permissions")
            raise ConfigError(
                f"cannot create output topic {entry.get('name')} ({name}, Kafka error code "
                f"{code}); {hint}"
            )
    admin.wait_for_topics(missing, timeout_ms=s.tuning.request_timeout_ms)
    log.info(events.OUTPUT_TOPICS_CREATED, count=len(missing))


def partition_counts(admin: Admin, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists (missing topics are left out)."""
    counts: dict[str, int] = {}
    for info in admin.describe_topics(topics):
        if info.get("error_code", 0) == 0 and info.get("partitions"):
            counts[info["name"]] = len(info["partitions"])
    return counts


def copartitioned(s: Settings, counts: dict[str, int]) -> frozenset[str]:
    """Output topics with the input's partition count: their records get the input record's
    partition (the routing check made sure it is murmur2(key) mod n, the partition
    kafka-python's partitioner would compute again, in pure Python, for every output)."""
    partitions = counts[s.topics.input]
    return frozenset(t for t in s.topics.outputs() if counts.get(t) == partitions)
