"""The clinical core's caches and fast paths give what the plain computation gives: a cached
value follows its input (never a stale answer), a fast path the slow one's bytes."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid

import pytest

from consumer.clinical import patient
from consumer.clinical.alerts import ALERT_NAMESPACE_V2, alert_id
from consumer.clinical.facts import ENUM_VALUES, FACTS, context_facts
from consumer.clinical.rules import _Texts, fill, load_ruleset


def _ctx(**extra: object) -> str:
    ctx = {
        "disease_setting": "METASTATIC",
        "planned_therapies": ["Enhertu"],
        "clinical_flags": ["DISCORDANT_HISTORY"],
        "recurrence_date": dt.date(2025, 3, 1),
        "adjuvant_chemotherapy_end_date": dt.date(2024, 12, 1),
        "metastatic_chemotherapy_lines": 1,
        **extra,
    }
    return patient._context_json(ctx)


def test_context_load_follows_the_text() -> None:
    """The parsed context is the one of the text asked for, whatever was asked before."""
    a, b = _ctx(), _ctx(metastatic_chemotherapy_lines=2)
    assert len(a) == len(b)  # same length, different content: a key on anything but the text
    first = patient._context_load(a)
    second = patient._context_load(b)
    assert first == patient._context_parse(a)
    assert second == patient._context_parse(b)
    assert second["metastatic_chemotherapy_lines"] == 2
    assert patient._context_load(a)["metastatic_chemotherapy_lines"] == 1
    assert first["recurrence_date"] == dt.date(2025, 3, 1)


def test_context_load_hands_out_a_fresh_dict() -> None:
    a = _ctx()
    patient._context_load(a)["disease_setting"] = "EARLY"
    assert patient._context_load(a)["disease_setting"] == "METASTATIC"


def test_context_facts_follow_the_text() -> None:
    a, b = _ctx(), _ctx(metastatic_chemotherapy_lines=0)  # same length
    c = _ctx(planned_therapies=["trastuzumab"])
    for text in (a, b, c, a, b, c):
        assert dict(patient._context_facts_of(text)) == context_facts(patient._context_parse(text))
    assert patient._context_facts_of(a)["metastatic_chemotherapy_lines"] == 1
    assert patient._context_facts_of(b)["metastatic_chemotherapy_lines"] == 0
    assert patient._context_facts_of(a)["planned_tdxd"] is True
    assert patient._context_facts_of(c)["planned_tdxd"] is False


def test_context_caches_stay_bounded() -> None:
    for i in range(patient._CONTEXTS_MAX + 50):
        text = _ctx(metastatic_chemotherapy_lines=i)
        assert patient._context_facts_of(text)["metastatic_chemotherapy_lines"] == i
    assert len(patient._CONTEXTS) <= patient._CONTEXTS_MAX
    assert len(patient._CONTEXT_FACTS_BY_TEXT) <= patient._CONTEXTS_MAX


def test_sorted_reads_and_basis_groups_follow_the_set() -> None:
    """Kept per set of fact names: a different set gets its own answer."""
    one = frozenset({"category", "advanced"})
    two = frozenset({"low_sample", "hr_status"})
    for reads in (one, two, one, frozenset(), frozenset({"zzz"})):
        assert patient._sorted_reads(reads) == tuple(sorted(reads))
        assert patient._basis_groups(reads) == tuple(
            i for i, (facts, _) in enumerate(patient._BASIS_GROUPS) if reads & facts
        )
    assert patient._basis_groups(one) != patient._basis_groups(two)


@pytest.mark.parametrize(
    "template",
    [
        "plain text, no field",
        "{category} and {category} again, {ihc_score}",
        "braces {{literal}} {category!r} {decisive_sample_count:>4} {ild_history!s}",
        "{} positional",  # not a plain name: format_map with _Texts (and its error)
        "{0} numbered",
        "{category.upper} attribute",
        "{category[0]} index",
        "{decisive_sample_count:{ihc_score}} nested",
        "{unclosed",
    ],
)
def test_fill_is_format_map_with_texts(template: str) -> None:
    """fill() gives format_map(_Texts(facts))'s text, or raises the same error."""
    for facts in (
        {"category": "LOW", "ihc_score": None, "decisive_sample_count": 3, "ild_history": False},
        {"category": "POSITIVE", "ihc_score": "THREE_PLUS", "decisive_sample_count": None},
        {},
    ):
        try:
            expected: object = template.format_map(_Texts(facts))
        except Exception as exc:
            expected = type(exc)
        try:
            got: object = fill(template, facts)
        except Exception as exc:
            got = type(exc)
        assert got == expected


def test_fill_follows_the_template() -> None:
    """The fields kept for one template are never used for another (same length here)."""
    facts = {"category": "LOW", "ihc_score": "ONE_PLUS"}
    one, two = "{category}" + "!" * 61, "{ihc_score}" + "!" * 60
    assert len(one) == len(two)
    for _ in range(2):
        assert fill(one, facts) == "LOW" + "!" * 61
        assert fill(two, facts) == "ONE_PLUS" + "!" * 60
        assert fill(one, {}) == "not documented" + "!" * 61


def _value(name: str, rng: random.Random) -> object:
    """A value fact `name` can take (None included)."""
    kind = FACTS[name][0]
    if kind == "bool":
        return rng.choice([None, True, False])
    if kind == "int":
        return rng.choice([None, 0, 1, 3])
    if kind == "enum":
        return rng.choice([None, *sorted(ENUM_VALUES[name])])
    return rng.choice([None, f"text {rng.randrange(99)}"])


def test_render_detail_of_every_rule_follows_its_values() -> None:
    """Every shipped rule's detail, from two sets of values, equals format_map with _Texts."""
    rng = random.Random(5)  # noqa: S311 - test data
    for rule in load_ruleset().rules:
        for _ in range(20):
            facts = {name: _value(name, rng) for name in sorted(rule.reads)}
            texts = _Texts(facts)
            fired = frozenset(rule.depends_on)
            expected = " ".join(
                [
                    rule.detail.format_map(texts),
                    *(n.text.format_map(texts) for n in rule.notes if n.when(facts, fired)),
                ]
            )
            assert rule.render_detail(facts, fired) == expected


def test_alert_id_is_uuid5() -> None:
    namespace = uuid.UUID(ALERT_NAMESPACE_V2)
    rng = random.Random(3)  # noqa: S311 - test data
    for i in range(5000):
        pid = f"P{rng.randrange(10**9)}-é"
        code = rng.choice(["DG-ASSAY", "RT-CONVERSION", "TDXD-LOW"])
        acc = rng.choice([None, f"A{i}"])
        name = f"{pid}\x1f{code}" if acc is None else f"{pid}\x1f{code}\x1f{acc}"
        assert alert_id(pid, code, acc) == str(uuid.uuid5(namespace, name))


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, 1.5, "é\n"], "c": {"z": dt.date(2025, 1, 2), "y": 2}},
        {"fired_codes": ["RT-X"], "low_sample": "PRIMARY_BREAST sample: LOW", "n": -0.0},
        {"inf": float("inf"), "nan": float("nan"), "big": 10**30},
        {},
    ],
)
def test_canonical_json_is_json_dumps(value: dict[str, object]) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert patient._canonical(value) == expected


def test_context_json_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError):
        patient._context_json({"planned_therapies": [], "odd": object()})


# --- the canonical JSON: CPython's private C encoder only where it writes json.dumps's text ---

_VALUE = {"k": [1, 2.5, "\u00e9"], "d": dt.date(2026, 12, 6), "a": None}


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _is_public_encoder(encode: object) -> bool:
    return getattr(encode, "__func__", None) is json.JSONEncoder.encode


def test_this_python_gets_the_c_encoder_and_json_dumps_text() -> None:
    encode = patient._json_encoder(str)
    assert not _is_public_encoder(encode)  # the fast path is taken on this CPython
    assert encode(_VALUE) == _dumps(_VALUE)


def test_a_constructor_of_another_signature_gets_the_public_encoder() -> None:
    def other_signature(*args: object) -> object:
        raise TypeError(f"c_make_encoder() takes 10 arguments ({len(args)} given)")

    encode = patient._json_encoder(str, other_signature)
    assert _is_public_encoder(encode)
    assert encode(_VALUE) == _dumps(_VALUE)


def test_a_constructor_that_writes_other_text_gets_the_public_encoder() -> None:
    """A Python whose C encoder took the same arguments but wrote other text (here: its key
    separator and item separator swapped meaning) would change every alert id: refused."""
    real = json.encoder.c_make_encoder  # type: ignore[attr-defined]

    def other_text(*args: object) -> object:
        markers, default, escape, indent, key_sep, item_sep, *rest = args
        return real(markers, default, escape, indent, f"{item_sep} ", key_sep, *rest)

    encode = patient._json_encoder(str, other_text)
    assert _is_public_encoder(encode)
    assert encode(_VALUE) == _dumps(_VALUE)
