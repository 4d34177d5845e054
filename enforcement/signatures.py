"""Inline signatures: cheap regular expressions over the decoded request line.

Rules are data (``enforcement/rules/*.yaml``). The loader rejects unknown and
missing keys and names the file and rule; ``lint`` collects every error
instead of stopping at the first. ``SignatureSet.match`` first checks for any
character an attack needs (quote, dot-dot, angle bracket, semicolon,
parenthesis, percent), so ordinary paths cost one set intersection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import yaml

from enforcement.errors import RuleLoadError

__all__ = ["DEFAULT_RULES", "Signature", "SignatureSet", "lint", "load_signatures"]

DEFAULT_RULES = Path(__file__).with_name("rules") / "inline.yaml"
_RULE_KEYS = {"id", "title", "status", "level", "tags", "attack_class", "pattern", "samples"}
_REQUIRED = _RULE_KEYS - {"tags"}
_STATUSES = {"experimental", "test", "stable"}
_TRIGGERS = frozenset("'\"<.;(%\\-*")


@dataclass(frozen=True)
class Signature:
    """One compiled inline rule."""

    id: str
    title: str
    attack_class: str
    regex: re.Pattern[str]
    samples: dict[str, list[str]]


def _rule_errors(rule: Any, where: str) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: a rule must be a mapping, got {type(rule).__name__}"]
    errors = [f"{where}: unknown key {k!r}" for k in rule if k not in _RULE_KEYS]
    errors += [f"{where}: missing key {k!r}" for k in sorted(_REQUIRED - rule.keys())]
    if rule.get("status") not in _STATUSES:
        errors.append(f"{where}: status={rule.get('status')!r}, expected one of {sorted(_STATUSES)}")
    try:
        re.compile(str(rule.get("pattern", "")))
    except re.error as exc:
        errors.append(f"{where}: pattern does not compile: {exc}")
    samples = rule.get("samples") or {}
    if not (isinstance(samples, dict) and samples.get("hit") and samples.get("miss")):
        errors.append(f"{where}: samples needs at least one 'hit' and one 'miss'")
    return errors


def lint(path: Path = DEFAULT_RULES) -> list[str]:
    """Every problem in a rule file (empty when it is valid)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: {exc}"]
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        return [f"{path}: expected a top-level 'rules' list"]
    errors = [e for i, r in enumerate(rules) for e in _rule_errors(r, f"{path}: rules[{i}] ({(r or {}).get('id', '?') if isinstance(r, dict) else '?'})")]
    ids = [r.get("id") for r in rules if isinstance(r, dict)]
    errors += [f"{path}: duplicate rule id {i!r}" for i in {i for i in ids if ids.count(i) > 1}]
    return errors


def load_signatures(path: Path = DEFAULT_RULES) -> SignatureSet:
    """Load and compile a rule file; raises ``RuleLoadError`` listing every problem."""
    errors = lint(path)
    if errors:
        raise RuleLoadError("; ".join(errors))
    rules = yaml.safe_load(path.read_text())["rules"]
    return SignatureSet([Signature(r["id"], r["title"], r["attack_class"], re.compile(r["pattern"]), r["samples"]) for r in rules])


class SignatureSet:
    """A set of compiled signatures applied to request lines."""

    def __init__(self, signatures: list[Signature]):
        self.signatures = signatures

    def match(self, request_line: str) -> list[str]:
        """Attack classes whose signature matches the decoded request line (empty for most traffic)."""
        if _TRIGGERS.isdisjoint(request_line):
            return []
        decoded = unquote_plus(unquote_plus(request_line))
        return [s.attack_class for s in self.signatures if s.regex.search(decoded)]
