"""models.taxonomy: every attack class, shipped rule and inline category has a mapping, and every id it names is declared."""

from __future__ import annotations

import re

import pytest

from enforcement.fasttier import ENUMERATION, INLINE_REPEAT
from enforcement.honeytokens import CATEGORY as HONEYTOKEN
from enforcement.promptinline import CATEGORY as PROMPT_INJECTION
from enforcement.promptrules import TRAITS as PROMPT_TRAITS
from enforcement.signatures import CATEGORIES as SIGNATURE_CATEGORIES
from models.rules import ATTACK_CLASSES, load_rules
from models.taxonomy import (ATLAS_TACTICS, ATLAS_TECHNIQUES, ATTACK_TACTICS, ATTACK_TECHNIQUES, CLASSES, INLINE, OWASP_API_2023,
                             OWASP_LLM_2025, RULES, Mapping, finding_attacks, finding_tags, inline_mapping, mapping_for, technique)
from streams.exposure import CATEGORY as EXPOSURE
from streams.toolpins import ToolPins

#: classes the worker emits beside the rules': the model's, the MCP tool pins' and the exposure tracker's
_EMITTED_ELSEWHERE = {"anomaly", "tool_rug_pull", "tool_new", "tool_poisoning", EXPOSURE}
_ALL_MAPPINGS = [*CLASSES.items(), *RULES.items(), *INLINE.items()]


@pytest.mark.parametrize("attack_class", sorted(ATTACK_CLASSES | _EMITTED_ELSEWHERE))
def test_every_attack_class_has_a_mapping(attack_class: str) -> None:
    assert attack_class in CLASSES, f"attack class {attack_class!r} has no entry in models/taxonomy.py CLASSES"


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r.id)
def test_every_shipped_rule_maps_to_something(rule: object) -> None:
    mapping = mapping_for(rule.attack_class, rule.id)  # type: ignore[attr-defined]
    assert not mapping.empty or mapping.note, f"rule {rule.id!r} maps to nothing and says not why"  # type: ignore[attr-defined]


def test_the_tool_pins_report_only_mapped_classes() -> None:
    import inspect

    emitted = set(re.findall(r'kind(?:, score)? = "(tool_[a-z_]+)"', inspect.getsource(ToolPins)))
    assert emitted == {"tool_rug_pull", "tool_new", "tool_poisoning"} and emitted <= set(CLASSES)


@pytest.mark.parametrize("category", [*SIGNATURE_CATEGORIES, HONEYTOKEN, ENUMERATION, INLINE_REPEAT, "oversize",
                                      *(f"{PROMPT_INJECTION}:{t}" for t in PROMPT_TRAITS)])
def test_every_inline_category_has_a_mapping(category: str) -> None:
    mapping = inline_mapping(category)
    assert mapping is not None and not mapping.empty, f"inline category {category!r} has no mapping in models/taxonomy.py INLINE"


@pytest.mark.parametrize(("name", "mapping"), _ALL_MAPPINGS, ids=[n for n, _ in _ALL_MAPPINGS])
def test_every_id_a_mapping_names_is_declared_with_its_name(name: str, mapping: Mapping) -> None:
    assert set(mapping.owasp_api) <= set(OWASP_API_2023) and set(mapping.owasp_llm) <= set(OWASP_LLM_2025)
    assert set(mapping.attack) <= set(ATTACK_TECHNIQUES) and set(mapping.atlas) <= set(ATLAS_TECHNIQUES)
    assert not mapping.empty or mapping.note, f"{name}: an empty mapping must say why"
    for uid in mapping.attack + mapping.atlas:
        t = technique(uid)
        assert t.name and t.tactic_name and (t.parent_uid is None or t.parent_name)


def test_ids_have_the_shapes_of_their_taxonomies() -> None:
    assert all(re.fullmatch(r"API([1-9]|10):2023", i) for i in OWASP_API_2023) and len(OWASP_API_2023) == 10
    assert all(re.fullmatch(r"LLM(0[1-9]|10):2025", i) for i in OWASP_LLM_2025) and len(OWASP_LLM_2025) == 10
    assert all(re.fullmatch(r"T\d{4}(\.\d{3})?", i) and tactic in ATTACK_TACTICS for i, (_, tactic) in ATTACK_TECHNIQUES.items())
    assert all(re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", i) and tactic in ATLAS_TACTICS for i, (_, tactic) in ATLAS_TECHNIQUES.items())
    assert all(i.rsplit(".", 1)[0] in ATTACK_TECHNIQUES for i in ATTACK_TECHNIQUES if "." in i)  # every parent declared
    assert all(i.rsplit(".", 1)[0] in ATLAS_TECHNIQUES for i in ATLAS_TECHNIQUES if i.count(".") == 2)


def test_well_known_entries() -> None:
    assert mapping_for("bola").owasp_api == ("API1:2023",) and "T1190" in mapping_for("bola").attack
    assert mapping_for("credential_abuse", "credential-stuffing").attack == ("T1110.004",)
    assert mapping_for("credential_abuse", "auth_failures") == CLASSES["credential_abuse"]  # no refinement: the class's
    assert mapping_for("model_extraction").owasp_llm == ("LLM10:2025",) and "AML.T0024.002" in mapping_for("model_extraction").atlas
    assert mapping_for("prompt_injection").owasp_llm == ("LLM01:2025",)
    with pytest.raises(KeyError, match="no taxonomy mapping"):
        mapping_for("not-a-class")


def test_sub_techniques_render_under_their_parent_with_tactic_and_version() -> None:
    (stuffing,) = finding_attacks(mapping_for("credential_abuse", "credential-stuffing"))
    assert (stuffing.technique.uid, stuffing.sub_technique and stuffing.sub_technique.uid) == ("T1110", "T1110.004")
    assert (stuffing.tactic.uid, stuffing.tactic.name, stuffing.version) == ("TA0006", "Credential Access", "ATT&CK v16")
    injection = finding_attacks(CLASSES["prompt_injection"])[0]
    assert (injection.technique.uid, injection.sub_technique and injection.sub_technique.uid) == ("AML.T0051", "AML.T0051.001")
    assert injection.version.startswith("ATLAS") and injection.tactic.uid == "AML.TA0005"
    assert [t.value for t in finding_tags(CLASSES["bola"])] == ["API1:2023 Broken Object Level Authorization"]
