"""Start-up on this host: the state directory, the instance slot (exactly-once without
HER2_INSTANCE_ID) and the host clock compared with the Kafka cluster's."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from consumer.config import Settings
from consumer.errors import ConfigError, kind_of
from consumer.ops import events
from consumer.ops.logs import get_logger
from consumer.runtime.instance import InstanceSlot, claim_slot, slot_directory
from consumer.runtime.kafka import Admin
from consumer.state.backends import StateDir

log = get_logger("her2.service")

MEMORY_FILE_SYSTEMS: Final = frozenset({"tmpfs", "ramfs"})
_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


def _read_mountinfo() -> str | None:
    try:
        return Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux, or no /proc: the check is skipped
        return None


def file_system_type(path: Path, mountinfo: str) -> str | None:
    """The type of the file system `path` (absolute, resolved) lives on, from the text of
    /proc/self/mountinfo: the mount with the longest mount point above it (the later of two
    on the same point, which hides the earlier); None if no line parses."""
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest.split():
            continue
        point = Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), parts[4]))
        if path == point or point in path.parents:
            depth = len(point.parts)
            if best is None or depth >= best[0]:
                best = (depth, rest.split()[0])
    return None if best is None else best[1]


def open_state_dir(settings: Settings) -> StateDir:
    """The private directory of this process's disk stores; ConfigError if it cannot be made.
    On a memory file system (tmpfs: a pod's /tmp, a compose tmpfs, /tmp on many desktops) the
    disk store would hold the history in memory, and a small one fills up: logged as a warning
    (still allowed, for a developer who chooses it)."""
    try:
        state_dir = StateDir(settings.state_dir)
    except OSError as exc:
        where = settings.state_dir or "the system temp directory (HER2_STATE_DIR unset)"
        raise ConfigError(
            f"HER2_STATE_DIR: cannot create a state directory in {where} ({type(exc).__name__})"
        ) from None
    text = _read_mountinfo()
    kind = None if text is None else file_system_type(state_dir.path.resolve(), text)
    if kind in MEMORY_FILE_SYSTEMS:
        log.warning(
            events.STATE_DIR_IN_MEMORY,
            path=str(state_dir.path.parent),
            file_system=kind,
            state_dir_set=settings.state_dir is not None,
        )
    return state_dir


def claim_instance_slot(settings: Settings, hostname: str) -> InstanceSlot:
    """This process's slot on the host, whose id names the transactional id when
    HER2_INSTANCE_ID is unset (consumer/instance.py); ConfigError if it cannot be claimed."""
    directory, private = slot_directory(settings.state_dir)
    try:
        return claim_slot(directory, settings.group_id, hostname, private=private)
    except OSError as exc:
        if settings.state_dir is not None:
            where = f"HER2_STATE_DIR: cannot claim an instance slot in {directory}"
        else:
            where = f"HER2_STATE_DIR unset: cannot claim an instance slot in {directory}"
        raise ConfigError(
            f"{where} ({type(exc).__name__}); exactly_once without HER2_INSTANCE_ID needs a "
            "writable slot directory shared by the processes of this host"
        ) from None


def claim_instance(settings: Settings, hostname: str) -> InstanceSlot | None:
    """Exactly-once without HER2_INSTANCE_ID: claim a slot on this host for the process's
    lifetime; its id (`<host>-<tag>-<N>`) names the transactional id (issue 15, item 5). None
    otherwise."""
    if not settings.exactly_once or settings.instance_id is not None:
        return None
    slot = claim_instance_slot(settings, hostname)
    log.info(
        events.INSTANCE_SLOT_CLAIMED,
        instance_id=slot.instance_id,
        slot=slot.number,
        transactional_id=settings.transactional_id(slot.instance_id),
    )
    return slot


def check_clock(
    admin: Admin,
    s: Settings,
    clock: Callable[[], dt.datetime],
    offset_gauge: Any,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> float | None:
    """Issue 15 item 1: compare the host clock with the Kafka cluster's and warn beyond
    HER2_CLOCK_SKEW_TOLERANCE_SECONDS (0: no check). The cluster's time is the KRaft quorum
    leader's, which answers DescribeQuorum with its own clock as its entry's last fetch time;
    the host time is taken half-way through the request. Returns the offset in seconds (host
    minus cluster) and sets `offset_gauge`; None when the cluster does not tell (no KRaft, no
    DESCRIBE permission on the cluster): logged, never fatal. Outputs carry the input's
    timestamps, so a wrong host clock no longer stops publishing; it still moves the
    event-time-in-future check and the event age."""
    if s.clock_skew_tolerance_s <= 0:
        return None
    started = monotonic()
    before = clock()
    try:
        cluster_ms = _quorum_leader_time_ms(admin.describe_metadata_quorum())
    except Exception as exc:  # any refusal or an old broker: the check is advisory
        log.info(events.CLOCK_CHECK_UNAVAILABLE, error_type=kind_of(exc))
        return None
    half = (monotonic() - started) / 2
    if cluster_ms is None:
        log.info(events.CLOCK_CHECK_UNAVAILABLE, error_type="NoLeaderTime")
        return None
    host_ms = (before.timestamp() + half) * 1000
    offset = round((host_ms - cluster_ms) / 1000, 3)
    offset_gauge.set(offset)
    if abs(offset) > s.clock_skew_tolerance_s + half:
        log.warning(
            events.CLOCK_SKEW,
            offset_seconds=offset,
            tolerance_seconds=s.clock_skew_tolerance_s,
            uncertainty_seconds=round(half, 3),
        )
    else:
        log.info(events.CLOCK_CHECKED, offset_seconds=offset, uncertainty_seconds=round(half, 3))
    return offset


def _quorum_leader_time_ms(quorum: dict[str, Any]) -> int | None:
    """The leader's own last-fetch timestamp in a DescribeQuorum response (None if absent)."""
    for topic in quorum.get("topics") or []:
        for partition in topic.get("partitions") or []:
            leader = partition.get("leader_id")
            for voter in partition.get("current_voters") or []:
                stamp = voter.get("last_fetch_timestamp")
                if voter.get("replica_id") == leader and isinstance(stamp, int) and stamp > 0:
                    return stamp
    return None
