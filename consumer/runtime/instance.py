"""The default instance id of an exactly-once process: a slot on its host, held with a lock.

Issue 15, item 5. The transactional id is `<group>-<instance id>`. It must be unique per
process (two live producers with one id fence each other in turn: exit 3, restart, repeat) and
stable across a process's restarts (the restarted process's init_transactions() aborts the
transaction its dead predecessor left open; under a new id that transaction would hold
read_committed readers back until HER2_TRANSACTION_TIMEOUT_MS). HER2_INSTANCE_ID, when set,
is the instance id (the StatefulSet pod name). Without it the process claims the lowest free
slot N of its group in a slot directory, an exclusive non-blocking `flock` on
`<directory>/<group>.<N>.lock` held until the process ends, and its instance id is
`<host>-<tag>-<N>`. The kernel drops the lock however the process dies, so a restarted process
finds the slot free again and takes the same id back (the lowest free slot: of several
processes restarting at once, one of them; whichever takes it fences the dead one's transaction).

The tag, 8 hex digits of the slot directory's path, keeps ids apart when processes of one group
on one host use different slot directories (different HER2_STATE_DIRs; different users, the
temp-directory default being per user): each would otherwise count from slot 0.

Slot files are never deleted: a file unlinked while another process has it open would let two
processes lock two files of one name, i.e. hold the same slot.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Final

SLOTS_DIR: Final = "her2-slots"
MAX_SLOTS: Final = 1024  # processes of one group on one host; beyond it a claim fails
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class InstanceSlot:
    """A claimed slot: its number, the instance id it gives, the lock file that holds it."""

    def __init__(self, number: int, instance_id: str, path: Path, fd: int) -> None:
        """Wrap a locked slot file (`fd` holds the lock)."""
        self.number = number
        self.instance_id = instance_id
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this slot is still locked by this object."""
        return self._fd is not None

    def release(self) -> None:
        """Unlock the slot (closing the file drops the lock); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def slot_directory(state_dir: Path | None) -> tuple[Path, bool]:
    """Where the slots are, and whether that directory must be private to this user:
    `<HER2_STATE_DIR>/her2-slots`, else `her2-slots-<uid>` under the system temp dir."""
    if state_dir is not None:
        return Path(os.path.abspath(state_dir)) / SLOTS_DIR, False
    return Path(os.path.abspath(tempfile.gettempdir())) / f"{SLOTS_DIR}-{os.getuid()}", True


def claim_slot(
    directory: Path, group_id: str, hostname: str, *, private: bool = False
) -> InstanceSlot:
    """Lock the lowest free slot of `group_id` in `directory` (created if missing) and return
    it; OSError if the directory cannot be made or used, or every slot is taken. A `private`
    directory (the per-user default under the shared temp dir) must belong to this user and be
    closed to others, or another user could hold our slots."""
    directory = Path(os.path.abspath(directory))
    _make_directory(directory, private=private)
    tag = hashlib.sha256(str(directory).encode()).hexdigest()[:8]
    host = _UNSAFE.sub("-", hostname).strip("-") or "host"
    prefix = _UNSAFE.sub("_", group_id)[:100]
    for number in range(MAX_SLOTS):
        path = directory / f"{prefix}.{number}.lock"
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by a live process (or by another claim of this one)
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return InstanceSlot(number, f"{host}-{tag}-{number}", path, fd)
    raise OSError(errno.EAGAIN, f"all {MAX_SLOTS} instance slots are taken")


def _make_directory(directory: Path, *, private: bool) -> None:
    """Create the slot directory; a private one must be ours and closed to others."""
    directory.mkdir(mode=0o700 if private else 0o777, parents=not private, exist_ok=True)
    if private:
        info = directory.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
        ):
            raise PermissionError(errno.EACCES, "not a private directory of this user")
