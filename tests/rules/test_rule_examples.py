"""The shipped rule set: one test per embedded example, the catalogue against the spec tables,
and a rule folder broken in each way fails loudly (RuleSetError naming the file; CLI exit != 0).
"""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.clinical.facts import FACTS
from consumer.clinical.rules import FIRED_CODES, Rule, RuleSet, load_ruleset
from consumer.errors import RuleSetError
from consumer.resources import data_dir

SHIPPED = data_dir("rules")
RULESET = load_ruleset(check=False)
CLI_TIMEOUT_S = 60


def _example_params() -> list[Any]:
    params = []
    for rule in RULESET.rules:
        for i, example in enumerate(rule.examples):
            name = re.sub(r"[^a-z0-9]+", "-", str(example.get("name", f"example-{i}")).lower()).strip("-")
            params.append(pytest.param(rule, example, id=f"{rule.rule_id}:{name}"))
    return params


class TestEmbeddedExamples:
    """style.md Tests: one test per embedded example."""

    @pytest.mark.parametrize(("rule", "example"), _example_params())
    def test_example(self, rule: Rule, example: dict[str, Any]) -> None:
        given = dict(example.get("facts") or {})
        fired = frozenset(given.pop(FIRED_CODES, None) or [])
        assert set(given) <= set(FACTS), f"unknown facts {sorted(set(given) - set(FACTS))}"
        assert rule.when(given, fired) is example["fires"]
        if example["fires"] and "severity" in example:
            assert rule.severity_for(given, fired) == example["severity"]

    def test_every_rule_has_a_firing_and_a_quiet_example(self) -> None:
        for rule in RULESET.rules:
            outcomes = {bool(e["fires"]) for e in rule.examples}
            assert outcomes == {True, False}, rule.rule_id

    def test_check_examples_counts_them_all(self) -> None:
        assert RULESET.check_examples() == len(_example_params())


# Section 5 tables: code -> (alert_type, base severity, severity variants allowed).
SPEC = {
    "TDXD-LOW-DB04": ("TDXD_ELIGIBILITY", "WARNING"),
    "TDXD-HR-DB06": ("TDXD_ELIGIBILITY", "WARNING"),
    "TDXD-POSITIVE-DB03": ("TDXD_ELIGIBILITY", "INFO"),
    "TDXD-POSITIVE-DB09": ("TDXD_ELIGIBILITY", "INFO"),
    "TDXD-POSITIVE-EARLY": ("TDXD_ELIGIBILITY", "INFO"),
    "TDXD-CANDIDATE": ("TDXD_ELIGIBILITY", "INFO"),
    "TC-HER2-TARGETED-NOT-POSITIVE": ("THERAPY_CAUTION", "CRITICAL"),
    "TC-HER2-STATUS-NOT-FINAL": ("THERAPY_CAUTION", "WARNING"),
    "TC-TDXD-CRITERIA-NOT-MET": ("THERAPY_CAUTION", "WARNING"),
    "TC-TDXD-EARLY-STAGE": ("THERAPY_CAUTION", "WARNING"),
    "TC-TDXD-ILD": ("THERAPY_CAUTION", "WARNING"),
    "RT-METASTATIC-SITE": ("RETEST", "WARNING"),
    "RT-ALL-ZERO": ("RETEST", "INFO"),
    "RT-DISCORDANT": ("RETEST", "INFO"),
    "RT-CONVERSION": ("RETEST", "WARNING"),
    "RT-PREANALYTIC": ("RETEST", "WARNING"),
    "RT-IHC-ISH-DISCORDANT": ("RETEST", "INFO"),
    "RT-CLINICAL-SUSPICION": ("RETEST", "WARNING"),
    "DG-UNSCORED": ("DOCUMENTATION_GAP", "WARNING"),
    "DG-ISH-ONLY": ("DOCUMENTATION_GAP", "INFO"),  # WARNING when advanced
    "DG-ZERO-SUBTYPE": ("DOCUMENTATION_GAP", "INFO"),  # WARNING when HR-positive advanced
    "DG-NO-REFLEX-ISH": ("DOCUMENTATION_GAP", "WARNING"),
    "DG-ISH-COUNTS": ("DOCUMENTATION_GAP", "WARNING"),
    "DG-ISH-WORKUP": ("DOCUMENTATION_GAP", "WARNING"),
    "DG-PREANALYTIC": ("DOCUMENTATION_GAP", "INFO"),  # WARNING when HER2-negative
    "DG-ASSAY": ("DOCUMENTATION_GAP", "INFO"),
    "DG-SPECIMEN": ("DOCUMENTATION_GAP", "INFO"),
    "DG-STAINING-DETAIL": ("DOCUMENTATION_GAP", "INFO"),
    "DG-CONTROLS": ("DOCUMENTATION_GAP", "INFO"),
    "DG-SCORE-INCONSISTENT": ("DOCUMENTATION_GAP", "WARNING"),
}
ESCALATING = {"DG-ISH-ONLY", "DG-ZERO-SUBTYPE", "DG-PREANALYTIC"}


class TestCatalogue:
    """The shipped rules against the section 5 tables."""

    def test_one_rule_per_code(self) -> None:
        assert sorted(r.code for r in RULESET.rules) == sorted(SPEC)

    @pytest.mark.parametrize("code", sorted(SPEC))
    def test_type_and_severity(self, code: str) -> None:
        (rule,) = [r for r in RULESET.rules if r.code == code]
        assert (rule.alert_type, rule.severity) == SPEC[code]
        assert bool(rule.severity_overrides) is (code in ESCALATING)
        for _, severity in rule.severity_overrides:
            assert severity == "WARNING"

    @pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.rule_id)
    def test_rule_file_shape(self, rule: Rule) -> None:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.rule_id)
        assert rule.path == f"rules/alerts/{rule.rule_id}.yaml"
        assert rule.rule_id == rule.code.lower()
        assert rule.evidence
        assert isinstance(rule.version, int)
        assert rule.version >= 1

    @pytest.mark.parametrize(
        ("code", "policy"),
        [
            pytest.param("TDXD-LOW-DB04", 'POLICY "any sample"', id="db04-any-sample"),
            pytest.param("TDXD-HR-DB06", 'POLICY "any sample"', id="db06-any-sample"),
            # 5.1: TDXD-CANDIDATE's HER2 condition is DB04's or DB06's "(sample policy included)"
            pytest.param("TDXD-CANDIDATE", 'POLICY "any sample"', id="candidate-any-sample"),
            pytest.param("TDXD-POSITIVE-EARLY", "POLICY", id="positive-early-fires-whether-planned"),
            pytest.param("DG-SCORE-INCONSISTENT", "POLICY", id="score-inconsistent-never-rescores"),
        ],
    )
    def test_policy_rules_say_policy(self, code: str, policy: str) -> None:
        """Front matter: where the spec says POLICY, keep it visible in the rule's description."""
        (rule,) = [r for r in RULESET.rules if r.code == code]
        assert policy in rule.description, code


# Section 4: "HER2-low" is "a trial-eligibility term, not a biological subtype, and ASCO/CAP does
# not report it as a category [S10][S11]: say so in texts". Section 2: the IHC 0 sub-types are
# "FDA/trial categories, not ASCO/CAP" [S13][S20][S25]; ultralow = faint incomplete staining in
# > 0 % to <= 10 % of cells [S25], the trials' IHC >0 <1+ [S67]. The spec does not call ultralow
# "not a biological subtype", so its sentence does not say so.
LOW_DISCLAIMER = "'HER2-low' (IHC 1+, or 2+ with negative ISH) is a trial-eligibility term, not a biological subtype, and not an ASCO/CAP reporting category"
ULTRALOW_DISCLAIMER = "'HER2-ultralow' (IHC 0 with faint, incomplete membrane staining in > 0 % to <= 10 % of tumour cells) is an FDA-label and trial-eligibility term, not an ASCO/CAP reporting category"
# how a published text names each term ("HER2-low/ultralow" and "HER2-low or ultralow" name both)
NAMES_LOW_TERM = re.compile(r"HER2-low\b", re.IGNORECASE)
NAMES_ULTRALOW_TERM = re.compile(r"HER2-ultralow|HER2-low(/| or )ultralow", re.IGNORECASE)
TRIAL_TERMS = [
    # how a text names the term, the sentence it then carries, the citations it needs
    pytest.param(NAMES_LOW_TERM, LOW_DISCLAIMER, {"S10", "S11"}, id="her2-low"),
    pytest.param(NAMES_ULTRALOW_TERM, ULTRALOW_DISCLAIMER, {"S10", "S11", "S25", "S67"}, id="her2-ultralow"),
]
# the rules that name the terms today: the check over every rule file below is not vacuous
NAMES_LOW = {"TDXD-LOW-DB04", "TDXD-HR-DB06", "TDXD-CANDIDATE", "TC-HER2-TARGETED-NOT-POSITIVE", "TC-TDXD-EARLY-STAGE", "DG-ISH-ONLY", "RT-ALL-ZERO"}
NAMES_ULTRALOW = {"TDXD-HR-DB06", "TDXD-CANDIDATE", "TC-TDXD-EARLY-STAGE", "TC-TDXD-CRITERIA-NOT-MET", "DG-ISH-ONLY", "DG-ZERO-SUBTYPE"}


def _published_texts(rule: Rule) -> list[str]:
    """What an alert of the rule shows: title, detail, the notes appended to it, recommendation."""
    return [rule.title, rule.detail, *(note.text for note in rule.notes), rule.recommendation]


class TestTrialTerms:
    """A rule whose published text names HER2-low or HER2-ultralow says, once and in its detail
    (always shown; notes are conditional), that the term is a trial-eligibility term and not an
    ASCO/CAP reporting category, and cites the sources. Every rule file, so a new one cannot
    forget it."""

    @pytest.mark.parametrize(("pattern", "disclaimer", "citations"), TRIAL_TERMS)
    @pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.rule_id)
    def test_a_rule_naming_the_term_says_what_it_is(self, rule: Rule, pattern: re.Pattern[str], disclaimer: str, citations: set[str]) -> None:
        texts = _published_texts(rule)
        if not any(pattern.search(text) for text in texts):
            return
        assert sum(text.count(disclaimer) for text in texts) == 1, f"{rule.path}: say once: {disclaimer}"
        assert disclaimer in rule.detail, rule.path
        assert citations <= set(rule.evidence), f"{rule.path}: cite {sorted(citations - set(rule.evidence))}"

    @pytest.mark.parametrize(("pattern", "codes"), [pytest.param(NAMES_LOW_TERM, NAMES_LOW, id="her2-low"), pytest.param(NAMES_ULTRALOW_TERM, NAMES_ULTRALOW, id="her2-ultralow")])
    def test_the_check_sees_the_rules_that_name_the_term(self, pattern: re.Pattern[str], codes: set[str]) -> None:
        naming = {r.code for r in RULESET.rules if any(pattern.search(text) for text in _published_texts(r))}
        assert naming >= codes


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.rule_id)
def test_every_alert_recommends_review_by_the_care_team(rule: Rule) -> None:
    """docs/her2-rules.md, preamble: "every alert says what it is based on and recommends review by the care team"."""
    assert "care team" in rule.recommendation, rule.path


# ---------------------------------------------------------------------------------------------
# Broken rule folders
# ---------------------------------------------------------------------------------------------

Mutation = Callable[[Path], None]


def _edit(name: str, change: Callable[[dict[str, Any]], None]) -> Mutation:
    """A mutation that loads rules/alerts/<name>, changes the document and writes it back."""

    def mutate(root: Path) -> None:
        path = root / "alerts" / name
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    return mutate


def _set_leaf(doc: dict[str, Any], index: int, **leaf: Any) -> None:
    doc["when"]["all"][index] = leaf


def _write(name: str, text: str) -> Mutation:
    def mutate(root: Path) -> None:
        (root / "alerts" / name).write_text(text, encoding="utf-8")

    return mutate


def _copy(src: str, dst: str) -> Mutation:
    def mutate(root: Path) -> None:
        shutil.copy(root / "alerts" / src, root / "alerts" / dst)

    return mutate


def _edit_meta(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(root: Path) -> None:
        path = root / "ruleset.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    return mutate


def _cycle(doc: dict[str, Any]) -> None:
    # TC-TDXD-CRITERIA-NOT-MET reads TDXD-LOW-DB04; make DB04 read it back.
    doc["when"]["all"].append(
        {"not": {"fact": FIRED_CODES, "op": "contains_any", "value": ["TC-TDXD-CRITERIA-NOT-MET"]}}
    )


def _flip_example(index: int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["examples"][index]["fires"] = not doc["examples"][index]["fires"]

    return change


# A quiet example of a rule with two of each flipped: the rule still has a firing and a quiet
# example, so the load gets past that check to the comparison of each example's outcome.
FAILING_EXAMPLE = _edit("tc-her2-status-not-final.yaml", _flip_example(2))


BROKEN = [
    pytest.param(_edit("dg-assay.yaml", lambda d: _set_leaf(d, 1, fact="assay_undocumentd", op="is_true")), ("dg-assay.yaml",), id="unknown-fact"),
    pytest.param(_edit("dg-assay.yaml", lambda d: _set_leaf(d, 1, fact="assay_undocumented", op="is_yes")), ("dg-assay.yaml",), id="unknown-operator"),
    pytest.param(_edit("tdxd-low-db04.yaml", lambda d: d["when"]["all"][2]["any"].__setitem__(0, {"fact": "metastatic_chemotherapy_lines", "op": "gte", "value": "one"})), ("tdxd-low-db04.yaml",), id="wrong-kind-number-as-text"),
    pytest.param(_edit("dg-assay.yaml", lambda d: _set_leaf(d, 1, fact="assay_undocumented", op="gte", value=1)), ("dg-assay.yaml",), id="wrong-kind-ordering-a-bool"),
    pytest.param(_edit("tc-her2-status-not-final.yaml", lambda d: _set_leaf(d, 1, fact="category", op="in", value="EQUIVOCAL")), ("tc-her2-status-not-final.yaml",), id="wrong-kind-in-without-list"),
    pytest.param(_edit("dg-assay.yaml", lambda d: _set_leaf(d, 1, fact="assay_undocumented", op="is_true", value=True)), ("dg-assay.yaml",), id="wrong-kind-valueless-op-with-value"),
    pytest.param(_edit("rt-all-zero.yaml", lambda d: _set_leaf(d, 1, fact="decisive_sample_count", op="is_true")), ("rt-all-zero.yaml",), id="wrong-kind-is-true-on-int"),
    pytest.param(_edit("rt-discordant.yaml", lambda d: d.__setitem__("when", {"fact": "discordance_detail", "op": "not_null"})), ("rt-discordant.yaml",), id="text-fact-in-condition"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d["evidence"].append("S99")), ("dg-assay.yaml",), id="unknown-citation"),
    pytest.param(FAILING_EXAMPLE, ("tc-her2-status-not-final.yaml",), id="failing-example"),
    pytest.param(_edit("dg-assay.yaml", _flip_example(0)), ("dg-assay.yaml",), id="examples-without-a-firing-case"),
    pytest.param(_edit("dg-ish-only.yaml", lambda d: d["examples"][0].__setitem__("severity", "CRITICAL")), ("dg-ish-only.yaml",), id="failing-example-severity"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d["examples"][0]["facts"].__setitem__("no_such_fact", True)), ("dg-assay.yaml",), id="example-names-unknown-fact"),
    pytest.param(_edit("rt-conversion.yaml", lambda d: d.__setitem__("detail", "Samples: {conversion_details}.")), ("rt-conversion.yaml",), id="placeholder-unknown-fact"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.__setitem__("facts", ["has_her2_test"])), ("dg-assay.yaml",), id="facts-list-incomplete"),
    pytest.param(_copy("dg-assay.yaml", "dg-assay-copy.yaml"), ("dg-assay.yaml", "dg-assay-copy.yaml"), id="duplicate-id"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.pop("recommendation")), ("dg-assay.yaml",), id="missing-key-recommendation"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.pop("evidence")), ("dg-assay.yaml",), id="missing-key-evidence"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.pop("examples")), ("dg-assay.yaml",), id="missing-key-examples"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.pop("when")), ("dg-assay.yaml",), id="missing-key-when"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.__setitem__("severity", "URGENT")), ("dg-assay.yaml",), id="unknown-severity"),
    pytest.param(_edit("dg-assay.yaml", lambda d: d.__setitem__("alert_type", "NOTICE")), ("dg-assay.yaml",), id="unknown-alert-type"),
    pytest.param(_write("dg-assay.yaml", "id: dg-assay\nwhen: {all: [\n  - unclosed\n"), ("dg-assay.yaml",), id="yaml-syntax-error"),
    pytest.param(_edit("tc-tdxd-criteria-not-met.yaml", lambda d: d["when"]["all"][2]["not"]["value"].append("TDXD-NOPE")), ("tc-tdxd-criteria-not-met.yaml",), id="fired-codes-unknown-code"),
    pytest.param(_edit("tdxd-low-db04.yaml", _cycle), ("tdxd-low-db04.yaml", "tc-tdxd-criteria-not-met.yaml"), id="dependency-cycle"),
    pytest.param(_edit_meta(lambda d: d.pop("version")), ("ruleset.yaml",), id="ruleset-without-version"),
]


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(SHIPPED, root)
    return root


def _names_a_file(message: str, files: tuple[str, ...]) -> bool:
    return any(name in message for name in files)


class TestBrokenRuleFolder:
    """rules.py / style.md: a broken rule file stops start-up with a message naming the file."""

    def test_unbroken_copy_loads(self, rules_copy: Path) -> None:
        ruleset = load_ruleset(rules_copy)
        assert isinstance(ruleset, RuleSet)
        assert len(ruleset.rules) == 30

    @pytest.mark.parametrize(("mutate", "files"), BROKEN)
    def test_load_ruleset_raises(self, rules_copy: Path, mutate: Mutation, files: tuple[str, ...]) -> None:
        mutate(rules_copy)
        with pytest.raises(RuleSetError) as info:
            load_ruleset(rules_copy)
        assert _names_a_file(str(info.value), files), str(info.value)

    def test_a_failing_example_is_caught_by_running_it(self, rules_copy: Path) -> None:
        """The `failing-example` row is refused by the comparison of the example's outcome with
        what the rule gives (check_examples), not by the shape check that every rule has a
        firing and a quiet example: the message says what was expected and what came."""
        FAILING_EXAMPLE(rules_copy)
        path = rules_copy / "alerts" / "tc-her2-status-not-final.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert {e["fires"] for e in doc["examples"]} == {True, False}, "the shape check passes"
        expected = "tc-her2-status-not-final.yaml: example 2 (HER2-low is final) expected fires=True, got False"
        with pytest.raises(RuleSetError, match=re.escape(expected)):
            load_ruleset(rules_copy)

    @pytest.mark.parametrize(("mutate", "files"), BROKEN)
    def test_rules_check_exits_non_zero(self, rules_copy: Path, mutate: Mutation, files: tuple[str, ...]) -> None:
        mutate(rules_copy)
        done = subprocess.run(  # noqa: S603 - fixed argv, our own module
            [sys.executable, "-m", "consumer", "rules", "check", "--rules-dir", str(rules_copy)],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "rule set invalid" in done.stderr
        assert _names_a_file(done.stderr, files), done.stderr

    @pytest.mark.parametrize(
        "mutate",
        [
            pytest.param(_edit("dg-ish-only.yaml", lambda d: d["examples"][0].pop("fires")), id="example-without-fires"),
            pytest.param(_edit("dg-assay.yaml", lambda d: d["examples"].append("just a string")), id="example-not-a-mapping"),
            pytest.param(_edit("dg-ish-only.yaml", lambda d: d["severity_overrides"].append("WARNING")), id="severity-override-not-a-mapping"),
            pytest.param(_edit_meta(lambda d: d.__setitem__("citations", ["S1", "S2"])), id="citations-not-a-mapping"),
        ],
    )
    def test_malformed_structure_raises_rule_set_error(self, rules_copy: Path, mutate: Mutation) -> None:
        mutate(rules_copy)
        with pytest.raises(RuleSetError):
            load_ruleset(rules_copy)

    @pytest.mark.parametrize(
        "mutate",
        [
            pytest.param(_edit("rt-metastatic-site.yaml", lambda d: _set_leaf(d, 0, fact="disease_setting", op="eq", value="METASTASTIC")), id="enum-value-typo"),
            pytest.param(_edit("tdxd-positive-db09.yaml", lambda d: _set_leaf(d, 2, fact="metastatic_chemotherapy_lines", op="eq", value="0")), id="int-fact-compared-to-text"),
            pytest.param(_edit("dg-assay.yaml", lambda d: _set_leaf(d, 1, fact="assay_undocumented", op="eq", value="yes")), id="bool-fact-compared-to-text"),
        ],
    )
    def test_eq_value_of_wrong_kind_is_refused_statically(self, rules_copy: Path, mutate: Mutation) -> None:
        mutate(rules_copy)
        with pytest.raises(RuleSetError):
            load_ruleset(rules_copy, check=False)


class TestRulesCheckCli:
    """design.md: `rules check` validates rules/ and runs every embedded example."""

    def test_shipped_rules_pass(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "consumer", "rules", "check"],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "30 rules" in done.stdout
        assert f"{len(_example_params())} embedded examples" in done.stdout

    def test_missing_folder(self, tmp_path: Path) -> None:
        done = subprocess.run(  # noqa: S603 - fixed argv, our own module
            [sys.executable, "-m", "consumer", "rules", "check", "--rules-dir", str(tmp_path / "nope")],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "nope" in done.stderr
