"""A rule's version is part of a finding's content (section 8): open alerts get a rule's new text
only when its version changes. So every change to what a rule publishes (its conditions,
severity, texts, notes, citations) must come with a new rule version, and every new rule
version with a new rule-set version. tests/rules/rule_versions.lock records, per rule, the
version and a digest of what it publishes (every key but `version`, `description` and
`examples`, which no alert record carries); these tests compare the shipped rules with it.

After a deliberate rule change: bump the rule's `version` and `rules/ruleset.yaml`'s `version`,
then rewrite the lock with `python3 tests/rules/test_rule_versions.py --update`."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[2] / "rules"
LOCK = Path(__file__).with_name("rule_versions.lock")
NOT_PUBLISHED = frozenset({"version", "description", "examples"})


def _published_digest(doc: dict[str, Any]) -> str:
    body = {key: value for key, value in doc.items() if key not in NOT_PUBLISHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _shipped() -> dict[str, Any]:
    rules = {}
    for path in sorted((RULES / "alerts").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        rules[doc["id"]] = {"version": doc["version"], "published": _published_digest(doc)}
    ruleset = yaml.safe_load((RULES / "ruleset.yaml").read_text(encoding="utf-8"))["version"]
    return {"ruleset_version": ruleset, "rules": rules}


def _locked() -> dict[str, Any]:
    locked: dict[str, Any] = json.loads(LOCK.read_text(encoding="utf-8"))
    return locked


def test_a_rule_that_publishes_something_new_has_a_new_version() -> None:
    shipped, locked = _shipped()["rules"], _locked()["rules"]
    unbumped = sorted(
        rule
        for rule, now in shipped.items()
        if rule in locked
        and now["published"] != locked[rule]["published"]
        and now["version"] == locked[rule]["version"]
    )
    assert not unbumped, (
        f"{unbumped} publish something new under their old version: open alerts would keep "
        "the old text; bump each rule's version (and the rule set's), then update the lock"
    )


def test_a_new_rule_version_comes_with_a_new_rule_set_version() -> None:
    shipped, locked = _shipped(), _locked()
    changed = sorted(
        rule
        for rule, now in shipped["rules"].items()
        if locked["rules"].get(rule, {}).get("version") != now["version"]
    )
    if changed:
        assert shipped["ruleset_version"] != locked["ruleset_version"], (
            f"{changed} have new versions under rule set {locked['ruleset_version']}: "
            "bump rules/ruleset.yaml's version"
        )


def test_the_lock_is_up_to_date() -> None:
    assert _shipped() == _locked(), (
        "tests/rules/rule_versions.lock is out of date: after the version checks above pass, run "
        "python3 tests/rules/test_rule_versions.py --update"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python3 tests/rules/test_rule_versions.py --update")
    LOCK.write_text(json.dumps(_shipped(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {LOCK}")
