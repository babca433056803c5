"""The default instance id of an exactly-once process (issue 15, item 5): a slot on its host,
claimed with a lock held for the process's lifetime (consumer/instance.py), and the
ConfigError naming the variable when no slot can be claimed (runtime/host.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.config import Settings
from consumer.errors import ConfigError
from consumer.runtime.host import claim_instance_slot
from consumer.runtime.instance import SLOTS_DIR, InstanceSlot, claim_slot, slot_directory

REPO_ROOT = Path(__file__).resolve().parents[2]
_HOLD_A_SLOT = """
import sys
from pathlib import Path
from consumer.runtime.instance import claim_slot
slot = claim_slot(Path(sys.argv[1]), "g", "host-a")
print(slot.number, flush=True)
sys.stdin.read()  # hold the lock until killed
"""


@pytest.fixture
def claims() -> Iterator[list[InstanceSlot]]:
    """Slots claimed by a test, released at its end."""
    held: list[InstanceSlot] = []
    yield held
    for slot in held:
        slot.release()


def _claim(held: list[InstanceSlot], directory: Path, group: str = "g") -> InstanceSlot:
    slot = claim_slot(directory, group, "host-a")
    held.append(slot)
    return slot


class TestClaimSlot:
    def test_two_claims_in_one_process_get_different_slots(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        first, second = _claim(claims, tmp_path), _claim(claims, tmp_path)
        assert (first.number, second.number) == (0, 1)
        assert first.instance_id != second.instance_id
        assert first.held
        assert second.held

    def test_a_released_slot_is_reclaimed_with_the_same_id(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        first = _claim(claims, tmp_path)
        first_id = first.instance_id
        first.release()
        first.release()  # idempotent
        assert not first.held
        again = _claim(claims, tmp_path)
        assert (again.number, again.instance_id) == (0, first_id)

    def test_the_lowest_free_slot_wins(self, tmp_path: Path, claims: list[InstanceSlot]) -> None:
        slots = [_claim(claims, tmp_path) for _ in range(3)]
        slots[1].release()
        assert _claim(claims, tmp_path).number == 1
        assert _claim(claims, tmp_path).number == 3

    def test_the_slot_of_a_killed_process_is_free_again(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        # the kernel drops the lock of a process however it dies: its restart (here, the
        # next claim) takes the same id back, and its init_transactions() fences the old one
        with subprocess.Popen(  # noqa: S603 - fixed argv, our own module
            [sys.executable, "-c", _HOLD_A_SLOT, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        ) as holder:
            try:
                assert holder.stdout is not None
                assert holder.stdout.readline().strip() == "0"
                assert _claim(claims, tmp_path).number == 1, "slot 0 is held by the other one"
            finally:
                holder.send_signal(signal.SIGKILL)
                holder.wait(10)
        assert _claim(claims, tmp_path).number == 0

    def test_each_group_counts_its_own_slots(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        assert _claim(claims, tmp_path, "group-a").number == 0
        assert _claim(claims, tmp_path, "group-b").number == 0
        assert _claim(claims, tmp_path, "group/with:odd chars").path.parent == tmp_path

    def test_the_id_is_host_directory_tag_and_slot(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        here = _claim(claims, tmp_path / "one")
        again = claim_slot(tmp_path / "one", "other-group", "host-a")
        claims.append(again)
        elsewhere = _claim(claims, tmp_path / "two")
        host, tag, number = here.instance_id.rsplit("-", 2)
        assert (host, number) == ("host-a", "0")
        assert len(tag) == 8
        assert again.instance_id == here.instance_id, "the tag depends on the directory only"
        # two slot directories on one host (two HER2_STATE_DIRs, two users): both count from
        # slot 0, the tag keeps their ids apart
        assert elsewhere.number == 0
        assert elsewhere.instance_id != here.instance_id

    def test_a_host_name_is_made_id_safe(self, tmp_path: Path) -> None:
        slot = claim_slot(tmp_path, "g", "bad host/name")
        slot.release()
        assert slot.instance_id.startswith("bad-host-name-")

    def test_slot_files_are_kept_after_release(self, tmp_path: Path) -> None:
        # never unlinked: a file deleted while another process has it open would let two
        # processes hold the same slot
        slot = claim_slot(tmp_path, "g", "h")
        slot.release()
        assert slot.path.exists()


class TestSlotDirectory:
    def test_under_the_state_dir_when_set(self, tmp_path: Path) -> None:
        assert slot_directory(tmp_path) == (tmp_path / SLOTS_DIR, False)

    def test_else_private_to_the_user_under_the_temp_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        directory, private = slot_directory(None)
        assert (directory, private) == (tmp_path / f"{SLOTS_DIR}-{os.getuid()}", True)
        claim_slot(directory, "g", "h", private=True).release()
        assert directory.stat().st_mode & 0o777 == 0o700

    def test_a_private_directory_open_to_others_is_refused(self, tmp_path: Path) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        with pytest.raises(PermissionError):
            claim_slot(shared, "g", "h", private=True)
        claim_slot(shared, "g", "h").release()  # fine as HER2_STATE_DIR/her2-slots


class TestClaimInstanceSlot:
    """runtime/host.py: the claim, or a ConfigError naming the variable (exit 2)."""

    def test_the_slot_is_claimed_under_the_state_dir(
        self, tmp_path: Path, claims: list[InstanceSlot]
    ) -> None:
        settings = Settings(processing_guarantee="exactly_once", state_dir=tmp_path)
        slot = claim_instance_slot(settings, "host-a")
        claims.append(slot)
        assert slot.path.parent == tmp_path / SLOTS_DIR
        assert slot.path.name == f"{settings.group_id}.0.lock"
        assert settings.transactional_id(slot.instance_id) == (
            f"{settings.group_id}-{slot.instance_id}"
        )

    def test_an_unusable_state_dir_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("x")
        settings = Settings(processing_guarantee="exactly_once", state_dir=not_a_dir)
        with pytest.raises(ConfigError, match=r"^HER2_STATE_DIR: cannot claim an instance slot"):
            claim_instance_slot(settings, "host-a")

    @pytest.mark.skipif(os.getuid() == 0, reason="root writes into read-only directories")
    def test_a_read_only_state_dir_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o500)
        settings = Settings(processing_guarantee="exactly_once", state_dir=read_only)
        with pytest.raises(ConfigError, match="HER2_STATE_DIR"):
            claim_instance_slot(settings, "host-a")

    def test_an_unusable_temp_dir_default_names_the_variables_to_set(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        taken = tmp_path / f"{SLOTS_DIR}-{os.getuid()}"
        taken.mkdir(mode=0o777)
        taken.chmod(0o777)  # e.g. made by someone else to hold our slots
        with pytest.raises(ConfigError, match=r"^HER2_STATE_DIR unset: .*HER2_INSTANCE_ID"):
            claim_instance_slot(Settings(processing_guarantee="exactly_once"), "host-a")
