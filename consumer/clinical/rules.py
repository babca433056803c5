"""Load, validate and evaluate the alert rules in `rules/` (one YAML file per rule).

A rule's `when` is a tree of `all` / `any` / `not` over `{fact, op, value}`. The loader refuses
an unknown fact or operator, a value of the wrong kind, an unknown citation, a text placeholder
that is not a fact, a dependency cycle, and any embedded example that does not behave as stated.
Rules that read `fired_codes` (codes of rules that fired for the same event) run after the
rules they name. Conditions compile to closures once, at load time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from consumer.clinical.facts import ENUM_VALUES, FACTS
from consumer.clinical.model import ALERT_TYPES, PATIENT, REPORT, SEVERITIES, scope_of
from consumer.errors import RuleSetError
from consumer.resources import data_dir

Facts = Mapping[str, Any]
Condition = Callable[[Facts, frozenset[str]], bool]

FIRED_CODES = "fired_codes"
_NUMERIC = (int, float)


_VALUELESS = frozenset({"is_true", "is_false", "is_null", "not_null"})
_ORDERED = frozenset({"gte", "gt", "lte", "lt"})
OPERATORS = _VALUELESS | _ORDERED | {"eq", "ne", "in", "not_in", "contains_any"}


def _check_leaf(node: Mapping[str, Any], where: str) -> None:
    """Refuse unknown facts, unknown operators and values of the wrong kind."""
    fact, op = node.get("fact"), node.get("op")
    if set(node) - {"fact", "op", "value"}:
        raise RuleSetError(
            f"{where}: unexpected keys {sorted(set(node) - {'fact', 'op', 'value'})}"
        )
    if op not in OPERATORS:
        raise RuleSetError(f"{where}: unknown operator {op!r}")
    if fact == FIRED_CODES:
        if op != "contains_any" or not isinstance(node.get("value"), list):
            raise RuleSetError(f"{where}: fired_codes takes op contains_any with a list of codes")
        return
    if fact not in FACTS:
        raise RuleSetError(f"{where}: unknown fact {fact!r}")
    kind = FACTS[fact][0]
    if kind == "text":
        raise RuleSetError(f"{where}: fact {fact!r} is text, for alert texts only")
    value = node.get("value")
    if op in _VALUELESS:
        if "value" in node:
            raise RuleSetError(f"{where}: operator {op!r} takes no value")
        if op in ("is_true", "is_false") and kind != "bool":
            raise RuleSetError(f"{where}: {op} needs a bool fact, {fact!r} is {kind}")
    elif op in _ORDERED:
        if kind != "int" or isinstance(value, bool) or not isinstance(value, _NUMERIC):
            raise RuleSetError(f"{where}: {op} needs an int fact and a number")
    elif op == "contains_any":
        raise RuleSetError(f"{where}: contains_any applies to fired_codes only")
    else:
        values = value if op in ("in", "not_in") else [value]
        if not isinstance(values, list) or not values:
            raise RuleSetError(f"{where}: {op} needs a non-empty list")
        for item in values:
            _check_value_kind(fact, kind, item, where)


def _check_value_kind(fact: str, kind: str, value: Any, where: str) -> None:
    """Refuse a comparison value that the fact can never take (typos never fire silently)."""
    if kind == "enum":
        if value not in ENUM_VALUES[fact]:
            raise RuleSetError(
                f"{where}: {value!r} is not a value of {fact} "
                f"({', '.join(sorted(ENUM_VALUES[fact]))})"
            )
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RuleSetError(f"{where}: {fact} is an integer fact, got {type(value).__name__}")
    elif kind == "bool" and not isinstance(value, bool):
        raise RuleSetError(f"{where}: {fact} is a true/false fact, got {type(value).__name__}")


def _leaf_source(node: Mapping[str, Any]) -> str:
    """Python source for one validated leaf (fact names and values come from the catalogue/YAML)."""
    fact, op = node["fact"], node["op"]
    value: Any = node.get("value")  # validated: a list for fired codes and in/not_in
    if fact == FIRED_CODES:
        return f"(not fired.isdisjoint({sorted(value)!r}))"
    v = f"f.get({fact!r})"
    if op == "is_true":
        return f"({v} is True)"
    if op == "is_false":
        return f"({v} is False)"
    if op == "is_null":
        return f"({v} is None)"
    if op == "not_null":
        return f"({v} is not None)"
    if op in ("in", "not_in"):
        members = repr(frozenset(value))
        if op == "in":
            return f"({v} in {members})"
        return f"(_x is not None and _x not in {members})".replace("_x", f"({v})")
    symbol = {"eq": "==", "ne": "!=", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}[op]
    return f"(_x is not None and _x {symbol} {value!r})".replace("_x", f"({v})")


def _source(node: Any, where: str, facts: set[str], codes: set[str]) -> str:
    """Validate a `when` tree and return it as one Python boolean expression over f, fired."""
    if not isinstance(node, Mapping) or not node:
        raise RuleSetError(f"{where}: a condition must be a mapping")
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        children = node[key]
        if len(node) != 1 or not isinstance(children, list) or not children:
            raise RuleSetError(f"{where}: {key} takes a non-empty list and nothing else")
        parts = [_source(c, f"{where}.{key}[{i}]", facts, codes) for i, c in enumerate(children)]
        return "(" + (" and " if key == "all" else " or ").join(parts) + ")"
    if "not" in node:
        if len(node) != 1:
            raise RuleSetError(f"{where}: not takes one condition and nothing else")
        return f"(not {_source(node['not'], f'{where}.not', facts, codes)})"
    _check_leaf(node, where)
    if node["fact"] == FIRED_CODES:
        codes.update(node["value"])
    else:
        facts.add(node["fact"])
    return _leaf_source(node)


def compile_condition(node: Any, where: str) -> tuple[Condition, set[str], set[str]]:
    """Compile a `when` tree: (predicate, facts read, codes read through fired_codes).

    The validated tree becomes one Python expression compiled once: evaluation is a single
    call per rule. Only catalogued fact names and YAML scalars reach the source (as repr).
    """
    facts: set[str] = set()
    codes: set[str] = set()
    expression = _source(node, where, facts, codes)
    code = compile(f"lambda f, fired: {expression}", f"<{where}>", "eval")
    predicate: Condition = eval(code, {"__builtins__": {}, "frozenset": frozenset})  # noqa: S307
    return predicate, facts, codes


@dataclass(frozen=True, slots=True)
class Note:
    """A sentence appended to the detail when its condition holds."""

    when: Condition
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule, validated and compiled."""

    rule_id: str
    version: int
    code: str
    alert_type: str
    severity: str
    severity_overrides: tuple[tuple[Condition, str], ...]
    description: str
    title: str
    detail: str
    recommendation: str
    evidence: tuple[str, ...]
    notes: tuple[Note, ...]
    when: Condition
    reads: frozenset[str]
    depends_on: frozenset[str]
    examples: tuple[Mapping[str, Any], ...]
    path: str
    # the codes its notes read through fired_codes: the only fired codes its rendered text
    # depends on (its `when` and severity overrides read them too, but the severity is content
    # of its own), so the only ones in a finding's content (her2-rules.md section 8)
    text_depends_on: frozenset[str] = frozenset()

    def severity_for(self, facts: Facts, fired: frozenset[str]) -> str:
        """The severity, escalated by the first matching override."""
        for cond, severity in self.severity_overrides:
            if cond(facts, fired):
                return severity
        return self.severity

    def render_detail(self, facts: Facts, fired: frozenset[str]) -> str:
        """The detail text with facts filled in and the notes that apply appended."""
        text = fill(self.detail, facts)
        extra = [fill(n.text, facts) for n in self.notes if n.when(facts, fired)]
        return " ".join([text, *extra]) if extra else text


def fill(template: str, facts: Facts) -> str:
    """`template.format_map(_Texts(facts))`: facts filled in, unknown values 'not documented'.
    A template whose fields are all plain names gets a plain dict of just those (the same
    values, without a _Texts and a __missing__ call per field)."""
    names = _FIELDS.get(template, _UNPARSED)
    if names is _UNPARSED:
        names = _FIELDS[template] = _plain_fields(template)
    if names is None:
        return template.format_map(_Texts(facts))
    values = {}
    for name in names:
        value = facts.get(name)
        values[name] = "not documented" if value is None else value
    return template.format_map(values)


_PLAIN_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNPARSED: tuple[str, ...] = ("",)  # a marker: no field is named ""
# template -> its field names when every field is a plain name, else None (few: one per text)
_FIELDS: dict[str, tuple[str, ...] | None] = {}


def _plain_fields(template: str) -> tuple[str, ...] | None:
    """The field names of a format template, once each, or None when a field is anything but a
    plain name (positional, attribute, index, a nested field in its format spec) or the
    template does not parse: format_map with a _Texts handles those."""
    names: dict[str, None] = {}
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not _PLAIN_FIELD.fullmatch(name) or (spec and "{" in spec):
            return None
        names[name] = None
    return tuple(names)


class _Texts(dict[str, Any]):
    """format_map view of facts: unknown values read as 'not documented'. Empty itself, so every
    lookup goes to __missing__; stateless, so one serves a detail and its notes."""

    __slots__ = ("_facts",)

    def __init__(self, facts: Facts) -> None:
        super().__init__()
        self._facts = facts

    def __missing__(self, key: str) -> Any:
        value = self._facts.get(key)
        return "not documented" if value is None else value


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule that fired for one event, with its severity and rendered detail."""

    rule: Rule
    severity: str
    detail: str
    fired_codes: frozenset[str] = frozenset()  # codes that had fired when it was evaluated


class RuleSet:
    """The validated rules in evaluation order, with the rule-set version and citations."""

    def __init__(self, version: str, citations: Mapping[str, str], rules: list[Rule]) -> None:
        self.version = version
        self.citations = dict(citations)
        self.rules = _order(rules)
        self._by_code: dict[str, Rule] = {}
        for rule in self.rules:
            self._by_code.setdefault(rule.code, rule)
        self._scoped = {
            scope: tuple(r for r in self.rules if scope_of(r.code) == scope)
            for scope in (REPORT, PATIENT)
        }
        self._reads = {
            scope: frozenset(name for r in members for name in r.reads)
            for scope, members in self._scoped.items()
        }
        # code -> position in scoped(scope); None for a scope where a code has several rules
        self._positions: dict[str, dict[str, int] | None] = {}
        for scope, members in self._scoped.items():
            positions = {r.code: i for i, r in enumerate(members)}
            self._positions[scope] = positions if len(positions) == len(members) else None
        for scope, members in self._scoped.items():  # fired_codes never cross scopes
            outside = {code for r in members for code in r.depends_on} - {r.code for r in members}
            if outside:
                raise RuleSetError(
                    f"{scope} rules depend on codes of the other scope: {sorted(outside)}"
                )
        self._evidence = {
            r.rule_id: tuple(f"[{ref}] {self.citations[ref]}" for ref in r.evidence) for r in rules
        }

    def evaluate(
        self, facts: Facts, rules: Sequence[Rule] | None = None, *, details: bool = True
    ) -> list[Fired]:
        """The rules that fire for these facts, dependencies first. `rules`: a part of the
        rule set in evaluation order that holds the rules its members depend on (default:
        all); `details=False` leaves the detail unrendered (the patient aggregate renders it
        from the stored fact values)."""
        fired_codes: set[str] = set()
        fired: list[Fired] = []
        for rule in self.rules if rules is None else rules:
            frozen = frozenset(fired_codes) if rule.depends_on else frozenset()
            if rule.when(facts, frozen):
                fired_codes.add(rule.code)
                fired.append(
                    Fired(
                        rule,
                        rule.severity_for(facts, frozen),
                        rule.render_detail(facts, frozen) if details else "",
                        frozen,
                    )
                )
        return fired

    def scoped(self, scope: str) -> tuple[Rule, ...]:
        """The rules of one alert scope (REPORT or PATIENT), in evaluation order."""
        return self._scoped[scope]

    def positions(self, scope: str) -> Mapping[str, int] | None:
        """Alert code -> its rule's position in scoped(scope); None when a code of the scope has
        more than one rule (a rule set built by hand: the loader refuses that)."""
        return self._positions[scope]

    def reads(self, scope: str) -> frozenset[str]:
        """The facts the rules of one alert scope read (conditions, overrides, notes, texts)."""
        return self._reads[scope]

    def rule_for(self, code: str) -> Rule | None:
        """The rule of an alert code (the first in evaluation order), or None."""
        return self._by_code.get(code)

    def evidence_text(self, rule: Rule) -> tuple[str, ...]:
        """Full citations of a rule's evidence."""
        return self._evidence[rule.rule_id]

    def check_examples(self) -> int:
        """Run every embedded example; raise RuleSetError on the first that fails."""
        count = 0
        for rule in self.rules:
            for i, example in enumerate(rule.examples):
                given = dict(example.get("facts") or {})
                fired_given = frozenset(given.pop(FIRED_CODES, []) or [])
                unknown = set(given) - set(FACTS)
                if unknown:
                    raise RuleSetError(
                        f"{rule.path}: example {i} names unknown facts {sorted(unknown)}"
                    )
                got = rule.when(given, fired_given)
                if got != example["fires"]:
                    raise RuleSetError(
                        f"{rule.path}: example {i} ({example.get('name', 'unnamed')}) expected "
                        f"fires={example['fires']}, got {got}"
                    )
                if got and "severity" in example:
                    severity = rule.severity_for(given, fired_given)
                    if severity != example["severity"]:
                        raise RuleSetError(
                            f"{rule.path}: example {i} expected severity {example['severity']}, "
                            f"got {severity}"
                        )
                count += 1
        return count


def _order(rules: list[Rule]) -> list[Rule]:
    """Order rules so that every rule runs after the codes it reads (refuse cycles)."""
    by_code: dict[str, list[Rule]] = {}
    for rule in rules:
        by_code.setdefault(rule.code, []).append(rule)
    for rule in rules:
        missing = rule.depends_on - set(by_code)
        if missing:
            raise RuleSetError(f"{rule.path}: fired_codes names unknown codes {sorted(missing)}")
    ordered: list[Rule] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(rule: Rule) -> None:
        if rule.rule_id in done:
            return
        if rule.rule_id in visiting:
            raise RuleSetError(f"{rule.path}: dependency cycle through fired_codes")
        visiting.add(rule.rule_id)
        for code in sorted(rule.depends_on):
            for dep in by_code[code]:
                visit(dep)
        visiting.discard(rule.rule_id)
        done.add(rule.rule_id)
        ordered.append(rule)

    for rule in sorted(rules, key=lambda r: r.rule_id):
        visit(rule)
    return ordered


_RULE_KEYS = {
    "id",
    "version",
    "code",
    "alert_type",
    "severity",
    "severity_overrides",
    "description",
    "facts",
    "when",
    "title",
    "detail",
    "notes",
    "recommendation",
    "evidence",
    "examples",
}
_REQUIRED = _RULE_KEYS - {"severity_overrides", "notes"}


def _placeholders(text: str, where: str) -> set[str]:
    """Fact names used as {placeholders} in a text; refuse unknown ones."""
    names = {field for _, field, _, _ in string.Formatter().parse(text) if field}
    unknown = names - set(FACTS)
    if unknown:
        raise RuleSetError(f"{where}: text names unknown facts {sorted(unknown)}")
    return names


def _mappings(doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    """An optional list of mappings (severity_overrides, notes); refuse anything else."""
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise RuleSetError(f"{where}: {key} must be a list of mappings")
    return items


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RuleSetError(f"{where}: {key} must be a non-empty string")
    return " ".join(value.split())


def parse_rule(doc: Any, path: str, citations: Mapping[str, str]) -> Rule:
    """Validate one rule document and compile it."""
    if not isinstance(doc, Mapping):
        raise RuleSetError(f"{path}: a rule file holds one mapping")
    unknown, missing = set(doc) - _RULE_KEYS, _REQUIRED - set(doc)
    if unknown or missing:
        raise RuleSetError(
            f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    rule_id = doc["id"]
    if not isinstance(rule_id, str) or not rule_id or rule_id != rule_id.lower() or " " in rule_id:
        raise RuleSetError(f"{path}: id must be kebab-case")
    if (
        not isinstance(doc["version"], int)
        or isinstance(doc["version"], bool)
        or doc["version"] < 1
    ):
        raise RuleSetError(f"{path}: version must be a positive integer")
    if doc["alert_type"] not in ALERT_TYPES:
        raise RuleSetError(f"{path}: alert_type must be one of {ALERT_TYPES}")
    if doc["severity"] not in SEVERITIES:
        raise RuleSetError(f"{path}: severity must be one of {SEVERITIES}")
    when, reads, depends = compile_condition(doc["when"], f"{path}: when")
    overrides = []
    for i, item in enumerate(_mappings(doc, "severity_overrides", path)):
        cond, o_reads, o_deps = compile_condition(
            item.get("when"), f"{path}: severity_overrides[{i}]"
        )
        if item.get("severity") not in SEVERITIES:
            raise RuleSetError(f"{path}: severity_overrides[{i}] has an unknown severity")
        reads |= o_reads
        depends |= o_deps
        overrides.append((cond, item["severity"]))
    notes = []
    text_depends: set[str] = set()
    for i, item in enumerate(_mappings(doc, "notes", path)):
        cond, n_reads, n_deps = compile_condition(item.get("when"), f"{path}: notes[{i}]")
        text = _text(item, "text", f"{path}: notes[{i}]")
        reads |= n_reads | _placeholders(text, f"{path}: notes[{i}]")
        depends |= n_deps
        text_depends |= n_deps
        notes.append(Note(cond, text))
    texts = {
        key: _text(doc, key, path) for key in ("title", "detail", "recommendation", "description")
    }
    reads |= _placeholders(texts["detail"], path)
    declared = set(doc["facts"] or [])
    if declared != reads:
        raise RuleSetError(
            f"{path}: facts must list exactly the facts it reads: missing "
            f"{sorted(reads - declared)}, unused {sorted(declared - reads)}"
        )
    evidence = doc["evidence"]
    if not isinstance(evidence, list) or not evidence:
        raise RuleSetError(f"{path}: evidence must list at least one citation")
    bad = [ref for ref in evidence if ref not in citations]
    if bad:
        raise RuleSetError(f"{path}: unknown citations {bad}")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise RuleSetError(f"{path}: examples must be a list")
    for i, example in enumerate(examples):
        if (
            not isinstance(example, Mapping)
            or not isinstance(example.get("fires"), bool)
            or not isinstance(example.get("facts") or {}, Mapping)
        ):
            raise RuleSetError(
                f"{path}: examples[{i}] needs `facts` (a mapping) and `fires` (true/false)"
            )
    if not any(e["fires"] for e in examples) or all(e["fires"] for e in examples):
        raise RuleSetError(f"{path}: examples must include a case that fires and one that does not")
    return Rule(
        rule_id=rule_id,
        version=doc["version"],
        code=str(doc["code"]),
        alert_type=doc["alert_type"],
        severity=doc["severity"],
        severity_overrides=tuple(overrides),
        description=texts["description"],
        title=texts["title"],
        detail=texts["detail"],
        recommendation=texts["recommendation"],
        evidence=tuple(evidence),
        notes=tuple(notes),
        when=when,
        reads=frozenset(reads),
        depends_on=frozenset(depends),
        examples=tuple(examples),
        path=path,
        text_depends_on=frozenset(text_depends),
    )


def _load_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleSetError(f"{path}: cannot read: {exc}") from exc


def load_ruleset(folder: Path | None = None, *, check: bool = True) -> RuleSet:
    """Load `ruleset.yaml` and every `alerts/*.yaml` from `folder` (default: the shipped rules)."""
    root = folder or data_dir("rules")
    meta = _load_yaml(root / "ruleset.yaml")
    if (
        not isinstance(meta, Mapping)
        or not meta.get("version")
        or not isinstance(meta.get("citations"), Mapping)
    ):
        raise RuleSetError(f"{root / 'ruleset.yaml'}: needs a version and a citations mapping")
    citations = {str(k): " ".join(str(v).split()) for k, v in meta["citations"].items()}
    files = sorted((root / "alerts").glob("*.yaml"))
    if not files:
        raise RuleSetError(f"{root / 'alerts'}: no rule files")
    # errors name the file: the shipped rules by their place in the source tree (whether they
    # are read from there or from the wheel), a given folder's as given (relative stays relative)
    rules = [
        parse_rule(_load_yaml(p), f"rules/alerts/{p.name}" if folder is None else str(p), citations)
        for p in files
    ]
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.rule_id in seen:
            raise RuleSetError(
                f"{rule.path}: duplicate rule id {rule.rule_id!r} ({seen[rule.rule_id]})"
            )
        seen[rule.rule_id] = rule.path
    codes: dict[str, str] = {}
    for rule in rules:  # a code is a finding's identity (her2-rules.md section 8): one rule each
        if rule.code in codes:
            raise RuleSetError(
                f"{rule.path}: code {rule.code} is already used by {codes[rule.code]}"
            )
        codes[rule.code] = rule.path
    ruleset = RuleSet(str(meta["version"]), citations, rules)
    if check:
        ruleset.check_examples()
    return ruleset
