"""Threshold detectors as data: YAML rule files, loaded and linted like the inline signatures.

A rule scores one feature of the feature table (``models.features``) against a
threshold: ``max(floor, baseline_factor * <baseline feature>, cohort_factor *
<the cohort's p99 of the feature>)``, for the keys it applies to (users,
services or all), once a key is ``learn_windows`` old, and only when every
``when`` condition on other features holds. Each file holds a top-level
``rules`` list::

    rules:
      - id: bola-foreign-objects         # unique; letters, digits, '-' and '_'
        status: stable                   # stable | experimental (observe only) | disabled
        attack_class: bola
        feature: foreign_objects_long
        floor: 20
        baseline: baseline_foreign       # optional
        baseline_factor: 4               # optional (default 0: no baseline)
        cohort_factor: 3                 # optional (default 0: no cohort)
        applies_to: users                # users | services | all
        learn_windows: 0
        when: ["denied_objects >= 2"]    # optional
        action: block                    # block | throttle | redact
        mode: inherit                    # inherit (the policy's mode) | observe
        scope: actor                     # actor | edge (the verdict names the service and template)
        description: one sentence
        samples:
          fire: [{foreign_objects_long: 40, denied_objects: 5}]
          quiet: [{foreign_objects_long: 3}]

``lint`` reports every problem as ``file:line: message``; ``load_rules`` raises
``ModelError`` listing them. Deployments tune shipped rules without editing
them: ``overrides`` (rule id -> fields) replace values after loading, and are
linted the same way.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.yamlfile import duplicate_ids, read_rule_files
from models.errors import ModelError
from models.features import FEATURES, feature

__all__ = ["ATTACK_CLASSES", "DEFAULT_RULES", "Condition", "Rule", "lint", "load_rules"]

DEFAULT_RULES = Path(__file__).parent / "rules"

ATTACK_CLASSES = frozenset({
    "bola", "credential_abuse", "exfiltration", "injection", "retired_api", "lateral_movement", "bfla",
    "resource_consumption", "business_flow", "ssrf", "misconfiguration", "inventory", "unsafe_consumption",
    "honeytoken", "mass_assignment", "data_exposure", "anomaly",
    # AI agents and MCP (issue 8): data from tools to external models; tool supply chain (streams.toolpins)
    "agent_exfiltration", "agent_hijack", "tool_rug_pull", "tool_new", "tool_poisoning", "prompt_injection",
    # model APIs: systematic querying to copy a model (OWASP Top 10 for LLM applications 2025, LLM10 unbounded consumption)
    "model_extraction",
})
_STATUSES = ("stable", "experimental", "disabled")
_APPLIES = ("users", "services", "all")
_ACTIONS = ("block", "throttle", "redact")
_MODES = ("inherit", "observe")
_SCOPES = ("actor", "edge")
_REQUIRED = frozenset({"id", "status", "attack_class", "feature", "floor", "applies_to", "action", "description", "samples"})
_OPTIONAL = frozenset({"baseline", "baseline_factor", "cohort_factor", "learn_windows", "when", "mode", "scope"})
_FILE_KEYS = frozenset({"version", "rules"})
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{2,63}$")
_CONDITION = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPS: dict[str, Callable[[Any, Any], Any]] = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Condition:
    """``feature op value``: an extra condition a row must meet before the rule scores it."""

    feature: str
    op: str
    value: float

    def holds(self, values: Any) -> Any:
        """Elementwise truth of the condition on the feature's values (numpy array or float)."""
        return _OPS[self.op](values, self.value)

    def __str__(self) -> str:
        return f"{self.feature} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Rule:
    """One threshold rule (see the module docstring for the fields)."""

    id: str
    status: str
    attack_class: str
    feature: str
    floor: float
    applies_to: str
    action: str
    description: str
    baseline: str | None = None
    baseline_factor: float = 0.0
    cohort_factor: float = 0.0
    learn_windows: int = 0
    when: tuple[Condition, ...] = ()
    mode: str = "inherit"
    scope: str = "actor"
    fire: tuple[dict[str, float], ...] = field(default=(), compare=False)
    quiet: tuple[dict[str, float], ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """The state key the rule's feature belongs to (``actor`` or ``source``)."""
        return feature(self.feature).key

    @property
    def enabled(self) -> bool:
        """False for disabled rules."""
        return self.status != "disabled"


def _number_errors(rule: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    for name in ("floor", "baseline_factor", "cohort_factor"):
        value = rule.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(f"{where}: {name}={value!r} must be a number >= 0")
    lw = rule.get("learn_windows", 0)
    if isinstance(lw, bool) or not isinstance(lw, int) or lw < 0:
        errors.append(f"{where}: learn_windows={lw!r} must be an integer >= 0")
    return errors


def _choice_errors(rule: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    for name, choices, default in (("status", _STATUSES, None), ("applies_to", _APPLIES, None), ("action", _ACTIONS, None),
                                   ("mode", _MODES, "inherit"), ("scope", _SCOPES, "actor")):
        value = rule.get(name, default)
        if value not in choices:
            errors.append(f"{where}: {name}={value!r} is not one of {', '.join(choices)}")
    if rule.get("attack_class") not in ATTACK_CLASSES:
        errors.append(f"{where}: attack_class={rule.get('attack_class')!r} is not one of {', '.join(sorted(ATTACK_CLASSES))}")
    if not _ID.match(str(rule.get("id", ""))):
        errors.append(f"{where}: id={rule.get('id')!r} must be 3-64 of a-z, 0-9, '-' and '_'")
    return errors


def _feature_errors(rule: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    for name in ("feature", "baseline"):
        value = rule.get(name)
        if (name == "feature" or value is not None) and value not in FEATURES:
            errors.append(f"{where}: {name}={value!r} is not a declared feature (models/features.py)")
    when = rule.get("when", [])
    if not isinstance(when, list):
        return errors + [f"{where}: when must be a list of 'feature op number' strings"]
    for text in when:
        m = _CONDITION.match(str(text))
        if m is None:
            errors.append(f"{where}: when {text!r} is not 'feature op number' (op one of >= <= == != > <)")
        elif m.group(1) not in FEATURES:
            errors.append(f"{where}: when {text!r} names an undeclared feature {m.group(1)!r}")
    if rule.get("feature") in FEATURES and feature(str(rule["feature"])).key == "source" and rule.get("applies_to") != "all":
        errors.append(f"{where}: a rule on a per-source feature must have applies_to: all (a client address is not a user or a service)")
    return errors


def _sample_errors(rule: Mapping[str, Any], where: str) -> list[str]:
    samples = rule.get("samples")
    if not (isinstance(samples, dict) and samples.get("fire") and samples.get("quiet")):
        return [f"{where}: samples needs at least one 'fire' and one 'quiet' row"]
    errors = [f"{where}: samples has unknown key {k!r}" for k in samples if k not in ("fire", "quiet")]
    for kind in ("fire", "quiet"):
        for row in samples.get(kind) or []:
            if not isinstance(row, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()):
                errors.append(f"{where}: samples {kind} row {row!r} must map feature names to numbers")
            elif unknown := sorted(set(row) - set(FEATURES) - {f"cohort:{rule.get('feature')}"}):
                errors.append(f"{where}: samples {kind} row names undeclared features {unknown}")
    return errors


def rule_errors(rule: Any, where: str) -> list[str]:
    """Every problem with one rule mapping."""
    if not isinstance(rule, dict):
        return [f"{where}: a rule must be a mapping, got {type(rule).__name__}"]
    errors = [f"{where}: unknown key {k!r}" for k in rule if k not in _REQUIRED | _OPTIONAL]
    errors += [f"{where}: missing key {k!r}" for k in sorted(_REQUIRED - rule.keys())]
    return errors + _choice_errors(rule, where) + _number_errors(rule, where) + _feature_errors(rule, where) + _sample_errors(rule, where)


def _override(rules: list[tuple[str, Any]], overrides: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[str, Any]], list[str]]:
    by_id = {r.get("id"): i for i, (_, r) in enumerate(rules) if isinstance(r, dict)}
    errors = [f"overrides: no rule {rid!r} to override; rules: {', '.join(sorted(map(str, by_id)))}" for rid in overrides if rid not in by_id]
    out = list(rules)
    for rid, fields in overrides.items():
        if rid in by_id:
            where, rule = out[by_id[rid]]
            out[by_id[rid]] = (f"{where} (overridden)", {**rule, **fields})
    return out, errors


def lint(path: Path = DEFAULT_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Every problem in a rule file or directory (and the overrides) as ``file:line: message``."""
    rules, errors = read_rule_files(path, _FILE_KEYS)
    rules, override_errors = _override(rules, overrides or {})
    errors += override_errors
    for where, rule in rules:
        errors += rule_errors(rule, where)
    return errors + duplicate_ids(rules)


def _rule(data: Mapping[str, Any]) -> Rule:
    when = tuple(Condition(m.group(1), m.group(2), float(m.group(3))) for m in (_CONDITION.match(str(t)) for t in data.get("when", [])) if m)
    rule = Rule(
        id=str(data["id"]), status=data["status"], attack_class=data["attack_class"], feature=data["feature"],
        floor=float(data["floor"]), applies_to=data["applies_to"], action=data["action"], description=str(data["description"]),
        baseline=data.get("baseline"), baseline_factor=float(data.get("baseline_factor", 0)),
        cohort_factor=float(data.get("cohort_factor", 0)), learn_windows=int(data.get("learn_windows", 0)), when=when,
        mode=data.get("mode", "inherit"), scope=data.get("scope", "actor"),
        fire=tuple(dict(r) for r in data["samples"]["fire"]), quiet=tuple(dict(r) for r in data["samples"]["quiet"]),
    )  # fmt: skip
    return replace(rule, mode="observe") if rule.status == "experimental" else rule


def load_rules(path: Path = DEFAULT_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Rule]:
    """Every rule of a file or directory (disabled ones included; see ``Rule.enabled``); raises ``ModelError`` listing every problem."""
    errors = lint(path, overrides)
    if errors:
        raise ModelError("detection rules are invalid: " + "; ".join(errors))
    rules, _ = read_rule_files(path, _FILE_KEYS)
    rules, _ = _override(rules, overrides or {})
    return [_rule(r) for _, r in rules]
