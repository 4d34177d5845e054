"""enforcement.signatures: every shipped rule against its own samples (through normalisation and the engines), the loader and lint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcement.errors import EnforcementError, RuleLoadError
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, TARGETS, Signature, SignatureSet, lint, load_signatures, unanchored

RULES: list[dict[str, Any]] = [r for f in sorted(DEFAULT_RULES.glob("*.yaml")) for r in yaml.safe_load(f.read_text())["rules"]]


def _sample_params(kind: str) -> list[Any]:
    return [pytest.param(r["id"], s, id=f"{r['id']}:{kind}:{n}") for r in RULES for n, s in enumerate(r["samples"][kind])]


@pytest.fixture(scope="module")
def loaded() -> SignatureSet:
    return load_signatures()


def _only(loaded: SignatureSet, rule_id: str) -> tuple[WafInspector, Signature]:
    (sig,) = [s for s in loaded.signatures if s.id == rule_id]
    return WafInspector(SignatureSet([sig]), InspectionSettings(paranoia=4)), sig


def _location(sig: Signature) -> str:
    return "query" if "query" in sig.targets else next(t for t in TARGETS if t in sig.targets)


@pytest.mark.parametrize(("rule_id", "sample"), _sample_params("hit"))
def test_rule_hits_its_hit_samples(loaded: SignatureSet, rule_id: str, sample: str) -> None:
    one, sig = _only(loaded, rule_id)
    assert one.match_value(sample, _location(sig)) == [sig.id]


@pytest.mark.parametrize(("rule_id", "sample"), _sample_params("miss"))
def test_rule_misses_its_miss_samples(loaded: SignatureSet, rule_id: str, sample: str) -> None:
    one, sig = _only(loaded, rule_id)
    assert one.match_value(sample, _location(sig)) == []


def test_the_shipped_pack_lints_clean_and_loads_every_rule(loaded: SignatureSet) -> None:
    assert lint() == []
    assert [s.id for s in loaded.signatures] == [str(r["id"]) for r in RULES]
    assert {s.engine for s in loaded.signatures} >= {"libinjection-sqli", "libinjection-xss"}


def test_at_keeps_the_rules_up_to_a_paranoia_level(loaded: SignatureSet) -> None:
    for level in (1, 2, 3, 4):
        assert all(s.paranoia <= level for s in loaded.at(level).signatures)
    assert len(loaded.at(4).signatures) == len(loaded.signatures)


# ------------------------------------------------------------------ the set prefilter


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("^a$", "(?:^|\\x01)a(?:$|\\x01)"), ("[^a]b", "[^a]b"), ("[]^]x", "[]^]x"), ("\\^a\\$", "\\^a\\$"), ("\\Aa\\z", "(?:^|\\x01)a(?:$|\\x01)")],
    ids=["anchors", "negated-class", "caret-in-class", "escaped", "text-anchors"],
)
def test_unanchored_lets_anchors_hold_at_separators(pattern: str, expected: str) -> None:
    assert unanchored(pattern) == expected


@given(st.lists(st.text(alphabet="ab^$;x \n", max_size=6), min_size=1, max_size=5), st.sampled_from(["^a", "b$", "^ab$", "a;", "^x\\s*;", "[^a]b$"]))
@settings(max_examples=300, deadline=None)
def test_the_set_never_misses_a_value_its_rule_matches(values: list[str], pattern: str) -> None:
    import re2

    pack = SignatureSet([Signature("11111111-1111-1111-1111-111111111111", "t", "cmdi", 1, 5, frozenset(TARGETS), "re2", pattern, re2.compile(pattern), {})])
    if any(re2.search(pattern, v) for v in values):
        assert pack.candidates("\x01".join(values)) == [0]


# ------------------------------------------------------------------ lint and loader


def _rule(**overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "11111111-1111-1111-1111-111111111111", "title": "test rule", "status": "test", "category": "cmdi",
        "paranoia": 1, "severity": "critical", "tags": ["attack.t1059"], "pattern": "evil",
        "samples": {"hit": ["evil"], "miss": ["good"]},
    }  # fmt: skip
    rule.update(overrides)
    return {k: v for k, v in rule.items() if v is not None}


def _write(tmp_path: Path, rules: Any, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": "1.0.0", "rules": rules}) if not isinstance(rules, str) else rules)
    return path


def test_a_valid_file_lints_clean_and_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule()])
    assert lint(path) == []
    inspector = WafInspector(load_signatures(path), InspectionSettings())
    assert inspector.match_value("good") == [] and inspector.match_value("%65vil") == ["11111111-1111-1111-1111-111111111111"]


OTHER = "22222222-2222-2222-2222-222222222222"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_rule(level="high"), "unknown key 'level'"),
        (_rule(samples=None), "missing key 'samples'"),
        (_rule(samples={"hit": ["evil"]}), "samples needs at least one 'hit' and one 'miss'"),
        (_rule(status="beta"), "status='beta', expected one of ['experimental', 'test', 'stable']"),
        (_rule(category="injection"), "category='injection'"),
        (_rule(paranoia=5), "paranoia=5"),
        (_rule(severity="high"), "severity='high'"),
        (_rule(targets=["url"]), "targets=['url']"),
        (_rule(engine="hyperscan"), "engine='hyperscan'"),
        (_rule(engine="libinjection-sqli"), "engine libinjection-sqli takes no pattern"),
        (_rule(pattern=None), "missing key 'pattern' (required for engine re2)"),
        (_rule(pattern="(?=lookahead)"), "pattern does not compile under RE2"),
        (_rule(id="not-a-uuid"), "id='not-a-uuid' is not a UUID"),
        (_rule(title=None), "missing key 'title'"),
    ],
    ids=["unknown-key", "no-samples", "no-miss", "bad-status", "bad-category", "bad-paranoia", "bad-severity", "bad-target",
         "bad-engine", "engine-with-pattern", "no-pattern", "not-re2", "bad-id", "missing-title"],
)
def test_lint_reports_each_problem_with_the_file_name(tmp_path: Path, rule: dict[str, Any], message: str) -> None:
    path = _write(tmp_path, [_rule(id=OTHER), rule])
    errors = lint(path)
    assert any(message in e for e in errors), errors
    assert all(e.startswith(f"{path}:") for e in errors)


def test_lint_reports_duplicate_rule_ids_across_files(tmp_path: Path) -> None:
    _write(tmp_path, [_rule()], "a.yaml")
    _write(tmp_path, [_rule(id=OTHER), _rule()], "b.yaml")
    (error,) = lint(tmp_path)
    assert error.startswith(f"{tmp_path / 'b.yaml'}:") and "duplicate rule id '11111111-1111-1111-1111-111111111111' (first at" in error
    assert str(tmp_path / "a.yaml") in error


def test_a_directory_loads_its_files_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path, [_rule(id=OTHER)], "b.yaml")
    _write(tmp_path, [_rule()], "a.yaml")
    assert [s.id for s in load_signatures(tmp_path).signatures] == ["11111111-1111-1111-1111-111111111111", OTHER]
    assert lint(tmp_path / "empty") != []


def test_lint_collects_every_error_instead_of_stopping(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule(status="x", pattern="("), _rule(id=OTHER, bogus=1, samples=None)])
    errors = lint(path)
    assert len(errors) == 4, errors  # first: status, pattern; second: unknown key, missing 'samples'
    with pytest.raises(RuleLoadError) as info:
        load_signatures(path)
    assert all(e in str(info.value) for e in errors)
    assert isinstance(info.value, EnforcementError)


@pytest.mark.parametrize(
    ("content", "message"),
    [("rules: {not: a list}\n", "expected a top-level 'rules' list"), ("- just\n- a list\n", "expected a top-level 'rules' list"),
     ("rules: [\n", "while parsing"), ("rules:\n  - 42\n", "a rule must be a mapping, got int"), ("rules: []\nextra: 1\n", "unknown top-level key 'extra'")],
    ids=["rules-mapping", "top-level-list", "yaml-syntax", "rule-not-mapping", "unknown-top-level"],
)
def test_lint_reports_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path, content)
    errors = lint(path)
    assert errors and message in errors[0] and errors[0].startswith(str(path))


def test_lint_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    (error,) = lint(path)
    assert error.startswith(f"{path}: ") and "No such file" in error


def test_lint_rejects_a_duplicate_key_inside_a_rule(tmp_path: Path) -> None:
    text = yaml.safe_dump({"rules": [_rule()]}, sort_keys=False).replace("  pattern: evil\n", "  pattern: evil\n  pattern: (\n")
    assert text.count("pattern:") == 2
    assert any("duplicate key 'pattern'" in e for e in lint(_write(tmp_path, text)))


def test_lint_reports_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule(id=OTHER), _rule(status="beta")])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("- ") and i > 2)
    assert any(e.startswith(f"{path}:{line}:") and "status='beta'" in e for e in lint(path)), (line, lint(path))
