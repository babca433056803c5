"""A rule's version is part of a finding's content (section 8): open alerts get a rule's new text
only when its version changes. So a rule version, once recorded, must keep publishing what it
published then (its conditions, severity, texts, notes, citations: every key but `version`,
`description` and `examples`, which no alert record carries); a change needs a new version.
tests/rules/rule_versions.lock keeps a digest of what each recorded `id@version` publishes
(never rewritten) and the rule versions of each rule-set version.

After a deliberate rule change: bump the rule's `version` (and, for a release,
`rules/ruleset.yaml`'s), then record it with `python3 tests/rules/test_rule_versions.py
--update`, which refuses to rewrite what a recorded version publishes, and the rule versions of
a recorded rule set (a `ruleset_version` on a classification names one set of rules)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "rules"
LOCK = Path(__file__).with_name("rule_versions.lock")
NOT_PUBLISHED = frozenset({"version", "description", "examples"})


def _published_digest(doc: dict[str, Any]) -> str:
    body = {key: value for key, value in doc.items() if key not in NOT_PUBLISHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _shipped() -> tuple[str, dict[str, int], dict[str, str]]:
    """(rule-set version, rule id -> version, "id@version" -> digest of what it publishes)."""
    versions, digests = {}, {}
    for path in sorted((RULES / "alerts").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        versions[doc["id"]] = doc["version"]
        digests[f"{doc['id']}@{doc['version']}"] = _published_digest(doc)
    ruleset = yaml.safe_load((RULES / "ruleset.yaml").read_text(encoding="utf-8"))["version"]
    return ruleset, versions, digests


def _locked() -> dict[str, Any]:
    locked: dict[str, Any] = json.loads(LOCK.read_text(encoding="utf-8"))
    return locked


def _rewritten(digests: dict[str, str], recorded: dict[str, str]) -> list[str]:
    """The recorded rule versions that now publish something else."""
    return sorted(key for key, digest in digests.items() if recorded.get(key, digest) != digest)


def test_a_recorded_rule_version_publishes_what_it_published() -> None:
    _, _, digests = _shipped()
    rewritten = _rewritten(digests, _locked()["rules"])
    assert not rewritten, (
        f"{rewritten} publish something new under a recorded version: open alerts would keep "
        "the old text; bump each rule's version, then record it (--update)"
    )


def test_every_rule_version_and_the_rule_set_are_recorded() -> None:
    ruleset, versions, digests = _shipped()
    locked = _locked()
    update = "python3 tests/rules/test_rule_versions.py --update"
    assert set(digests) <= set(locked["rules"]), f"new rule versions not recorded: run {update}"
    assert locked["rulesets"].get(ruleset) == versions, (
        f"rule set {ruleset}'s rule versions are not recorded: run {update}"
    )


def test_every_recorded_rule_set_names_recorded_rule_versions() -> None:
    locked = _locked()
    unknown = {
        ruleset: sorted(f"{rule}@{v}" for rule, v in versions.items())
        for ruleset, versions in locked["rulesets"].items()
        if not {f"{rule}@{v}" for rule, v in versions.items()} <= set(locked["rules"])
    }
    assert not unknown, f"rule sets naming rule versions never recorded: {unknown}"


class Refused(Exception):
    """--update would rewrite a record."""


def updated(
    locked: dict[str, Any], ruleset: str, versions: dict[str, int], digests: dict[str, str]
) -> dict[str, Any]:
    """The lock with the shipped rules recorded; raises Refused instead of rewriting a record."""
    rewritten = _rewritten(digests, locked["rules"])
    if rewritten:
        raise Refused(f"{rewritten} would publish something new under a recorded version")
    recorded = locked["rulesets"].get(ruleset)
    if recorded is not None and recorded != versions:
        changed = sorted(
            k for k in recorded.keys() | versions.keys() if recorded.get(k) != versions.get(k)
        )
        raise Refused(
            f"rule set {ruleset} is recorded with other rule versions ({changed}): "
            "bump rules/ruleset.yaml's version"
        )
    return {
        "rules": locked["rules"] | digests,
        "rulesets": locked["rulesets"] | {ruleset: versions},
    }


def test_update_refuses_to_give_a_recorded_rule_set_other_rule_versions() -> None:
    ruleset, versions, digests = _shipped()
    locked = _locked()
    assert updated(locked, ruleset, versions, digests) == locked  # nothing new: the same lock
    rule = sorted(versions)[0]
    bumped = versions | {rule: versions[rule] + 1}
    new_digest = {f"{rule}@{versions[rule] + 1}": "0" * 16}
    with pytest.raises(Refused, match=f"rule set {ruleset} is recorded with other rule versions"):
        updated(locked, ruleset, bumped, digests | new_digest)
    # the same change under a new rule-set version is recorded
    again = updated(locked, ruleset + "-next", bumped, digests | new_digest)
    assert again["rulesets"][ruleset + "-next"] == bumped
    assert again["rulesets"][ruleset] == locked["rulesets"][ruleset]


def test_update_refuses_to_rewrite_what_a_recorded_rule_version_publishes() -> None:
    ruleset, versions, digests = _shipped()
    key = sorted(digests)[0]
    with pytest.raises(Refused, match="would publish something new under a recorded version"):
        updated(_locked(), ruleset + "-next", versions, digests | {key: "0" * 16})


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python3 tests/rules/test_rule_versions.py --update")
    ruleset, versions, digests = _shipped()
    locked = _locked() if LOCK.exists() else {"rules": {}, "rulesets": {}}
    try:
        locked = updated(locked, ruleset, versions, digests)
    except Refused as exc:
        sys.exit(f"refused: {exc}")
    LOCK.write_text(json.dumps(locked, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"recorded rule set {ruleset} in {LOCK}")
