"""Detection rules as data: every shipped rule lints, loads, and its samples fire or stay quiet as declared."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models import REGISTRY, ModelError, RuleDetector, load_rules
from models.registry import SHIPPED_RULES
from models.rules import lint

RULES = load_rules(SHIPPED_RULES)


def test_the_shipped_rules_lint_clean_and_are_registered() -> None:
    assert lint(SHIPPED_RULES) == []
    assert {r.id for r in RULES if r.enabled} == set(REGISTRY)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_sample_fires_or_stays_quiet_as_declared(rule: object) -> None:
    det = RuleDetector(rule)  # type: ignore[arg-type]
    assert det.rule.fire and det.rule.quiet
    for row in det.rule.fire:
        assert det.score(row) >= 0.5, row
    for row in det.rule.quiet:
        assert det.score(row) < 0.5, row


def _write(tmp_path: Path, rules: list[dict[str, object]]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "rules": rules}))
    return path


def _rule(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "demo-rule", "status": "stable", "attack_class": "bola", "feature": "denied", "floor": 5,
                               "applies_to": "users", "action": "block", "description": "demo",
                               "samples": {"fire": [{"denied": 9}], "quiet": [{"denied": 1}]}}
    return base | over


@pytest.mark.parametrize(("over", "message"), [
    ({"feature": "nope"}, "feature='nope' is not a declared feature"),
    ({"status": "maybe"}, "status='maybe' is not one of"),
    ({"attack_class": "aliens"}, "attack_class='aliens' is not one of"),
    ({"floor": -1}, "floor=-1 must be a number >= 0"),
    ({"when": ["denied >> 3"]}, "is not 'feature op number'"),
    ({"when": ["ghost >= 3"]}, "undeclared feature 'ghost'"),
    ({"samples": {"fire": [{"denied": 9}]}}, "needs at least one 'fire' and one 'quiet'"),
    ({"scope": "planet"}, "scope='planet' is not one of"),
    ({"id": "X"}, "id='X' must be"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"feature": "source_auth_failures"}, "per-source feature must have applies_to: all"),
])
def test_lint_names_the_file_line_rule_and_problem(tmp_path: Path, over: dict[str, object], message: str) -> None:
    path = _write(tmp_path, [_rule(**over)])
    errors = lint(path)
    assert any(message in e and e.startswith(f"{path}:") for e in errors), errors
    with pytest.raises(ModelError, match="detection rules are invalid"):
        load_rules(path)


def test_duplicate_ids_and_missing_keys_are_reported(tmp_path: Path) -> None:
    broken = _rule()
    del broken["action"]
    errors = lint(_write(tmp_path, [_rule(), _rule(), broken]))
    assert any("duplicate rule id 'demo-rule'" in e for e in errors) and any("missing key 'action'" in e for e in errors)


def test_overrides_tune_a_rule_and_are_linted(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rule()])
    (rule,) = load_rules(path, {"demo-rule": {"floor": 50}})
    assert rule.floor == 50
    assert any("no rule 'ghost'" in e for e in lint(path, {"ghost": {"floor": 1}}))
    assert any("floor='x'" in e for e in lint(path, {"demo-rule": {"floor": "x"}}))


def test_experimental_rules_only_observe(tmp_path: Path) -> None:
    (rule,) = load_rules(_write(tmp_path, [_rule(status="experimental")]))
    assert rule.mode == "observe" and rule.enabled
    (off,) = load_rules(_write(tmp_path, [_rule(status="disabled")]))
    assert not off.enabled
