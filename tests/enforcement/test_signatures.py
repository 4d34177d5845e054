"""enforcement.signatures: every inline rule against its own samples, the loader and lint."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcement.errors import EnforcementError, RuleLoadError
from enforcement.signatures import DEFAULT_RULES, Signature, SignatureSet, lint, load_signatures

RULES: list[dict[str, Any]] = yaml.safe_load(DEFAULT_RULES.read_text())["rules"]


def _sample_params(kind: str) -> list[Any]:
    params = []
    for rule in RULES:
        for n, sample in enumerate(rule["samples"][kind]):
            params.append(pytest.param(rule["id"], sample, id=f"{rule['id']}:{kind}:{n}"))
    return params


@pytest.fixture(scope="module")
def loaded() -> SignatureSet:
    return load_signatures()


def _only(loaded: SignatureSet, rule_id: str) -> tuple[SignatureSet, Signature]:
    (sig,) = [s for s in loaded.signatures if s.id == rule_id]
    return SignatureSet([sig]), sig


@pytest.mark.parametrize(("rule_id", "sample"), _sample_params("hit"))
def test_rule_hits_its_hit_samples(loaded: SignatureSet, rule_id: str, sample: str) -> None:
    one, sig = _only(loaded, rule_id)
    assert sig.regex.search(sample), "the pattern itself must match its sample"
    assert one.match(sample) == [sig.attack_class]


@pytest.mark.parametrize(("rule_id", "sample"), _sample_params("miss"))
def test_rule_misses_its_miss_samples(loaded: SignatureSet, rule_id: str, sample: str) -> None:
    one, _ = _only(loaded, rule_id)
    assert one.match(sample) == []


def test_the_shipped_rule_file_lints_clean_and_loads_every_rule(loaded: SignatureSet) -> None:
    assert lint() == []
    assert [s.id for s in loaded.signatures] == [r["id"] for r in RULES]
    assert all(len(r["samples"]["hit"]) >= 1 and len(r["samples"]["miss"]) >= 1 for r in RULES)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/search?q=%27%20OR%20%271%27%3D%271", ["injection"]),
        ("/search?q=%2527%2520OR%2520%25271%2527%253D%25271", ["injection"]),
        ("/files/%2e%2e/%2e%2e/etc/passwd", ["traversal"]),
        ("/s?q=%3Cscript%3Ealert(1)%3C/script%3E", ["injection"]),
        ("/s?q=1'+or+'1'='1", ["injection"]),
        ("/files/../../etc/passwd?q=<script>", ["traversal", "injection"]),
        ("/orders/81231/items", []),
        ("/docs/a.b/c", []),
    ],
    ids=["percent-encoded", "double-encoded", "encoded-dots", "encoded-script", "plus-spaces", "two-classes", "plain", "dot-in-path"],
)
def test_match_decodes_the_request_line(loaded: SignatureSet, line: str, expected: list[str]) -> None:
    assert loaded.match(line) == expected


# ------------------------------------------------------------------ lint and loader


def _rule(**overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "11111111-1111-1111-1111-111111111111",
        "title": "test rule",
        "status": "test",
        "level": "high",
        "tags": ["attack.t1190"],
        "attack_class": "injection",
        "pattern": "evil",
        "samples": {"hit": ["/evil"], "miss": ["/good"]},
    }
    rule.update(overrides)
    return {k: v for k, v in rule.items() if v is not None}


def _write(tmp_path: Path, rules: Any, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": "1.0.0", "rules": rules}) if not isinstance(rules, str) else rules)
    return path


def test_a_valid_file_lints_clean_and_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule()])
    assert lint(path) == []
    loaded = load_signatures(path)
    assert loaded.match("/x/evil?a=1") == [] and loaded.match("/x/evil?a='") == ["injection"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_rule(severity="high"), "unknown key 'severity'"),
        (_rule(samples=None), "samples needs at least one 'hit' and one 'miss'"),
        (_rule(samples={"hit": ["/evil"]}), "samples needs at least one 'hit' and one 'miss'"),
        (_rule(samples={"hit": [], "miss": ["/a"]}), "samples needs at least one 'hit' and one 'miss'"),
        (_rule(status="beta"), "status='beta', expected one of ['experimental', 'stable', 'test']"),
        (_rule(pattern="(unclosed"), "pattern does not compile: missing ), unterminated subpattern"),
        (_rule(title=None), "missing key 'title'"),
        (_rule(attack_class=None, pattern=None), "missing key 'attack_class'"),
    ],
    ids=["unknown-key", "no-samples", "no-miss", "empty-hit", "bad-status", "bad-regex", "missing-title", "missing-two"],
)
def test_lint_reports_each_problem_with_the_file_name(tmp_path: Path, rule: dict[str, Any], message: str) -> None:
    path = _write(tmp_path, [_rule(id="ok-rule"), rule])
    errors = lint(path)
    assert errors, "lint found nothing"
    assert any(message in e for e in errors), errors
    assert all(e.startswith(f"{path}:") for e in errors)
    assert any(f"rule {rule['id']}:" in e for e in errors)


def test_lint_reports_duplicate_rule_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule(id="dup"), _rule(id="other"), _rule(id="dup")])
    assert lint(path) == [f"{path}:1: duplicate rule id 'dup'"]


def test_lint_collects_every_error_instead_of_stopping(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule(id="a", status="x", pattern="("), _rule(id="b", bogus=1, samples=None)])
    errors = lint(path)
    assert len(errors) == 5  # a: status, pattern; b: unknown key, missing 'samples', samples needs hit and miss
    with pytest.raises(RuleLoadError) as info:
        load_signatures(path)
    assert all(e in str(info.value) for e in errors)
    assert isinstance(info.value, EnforcementError)


@pytest.mark.parametrize(
    ("content", "message"),
    [("rules: {not: a list}\n", "expected a top-level 'rules' list"), ("- just\n- a list\n", "expected a top-level 'rules' list"),
     ("rules: [\n", "while parsing"), ("rules:\n  - 42\n", "a rule must be a mapping, got int")],
    ids=["rules-mapping", "top-level-list", "yaml-syntax", "rule-not-mapping"],
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
    path = _write(tmp_path, text)
    assert any("duplicate key 'pattern'" in e for e in lint(path))


def test_lint_reports_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule(id="first"), _rule(id="second", status="beta")])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "status: beta" in text or "id: second" in text)
    assert any(f"{path}:{line}" in e or f"{path}:{line - 1}" in e for e in lint(path)), lint(path)


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_.,~=&:+@?-'\"<>;()%\\* "


@given(st.lists(st.sampled_from(["union", "select", "etc", "passwd", "proc", "self", "javascript", "onerror", "onload", "or", "1", "..", "--", "/", "%27", "%20", "'", "<script>", "=", " "]) | st.text(alphabet=_ALPHABET, max_size=6), max_size=12).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_prefilter_never_skips_a_line_some_rule_matches(line: str) -> None:
    from enforcement.signatures import _worth_scanning

    decoded = unquote_plus(unquote_plus(line))
    if any(sig.regex.search(decoded) for sig in load_signatures().signatures):
        assert _worth_scanning(line), line
