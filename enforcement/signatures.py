"""Inline signatures: cheap regular expressions over the decoded request line.

Rules are data (``enforcement/rules/*.yaml``). The loader rejects unknown and
missing keys and names the file and rule; ``lint`` collects every error
instead of stopping at the first, each as ``file:line: message``.
``SignatureSet.match`` first searches for anything an attack needs (a quote,
dot-dot, angle bracket, semicolon, parenthesis, percent, ``union``, ``/etc/``,
``/proc/``, ``javascript``...), so ordinary paths cost one short search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import yaml

from enforcement.decision import Inspection, RequestView
from enforcement.errors import RuleLoadError
from ingest.yamlfile import StrictLoader as _StrictLoader

__all__ = ["DEFAULT_RULES", "Signature", "SignatureSet", "lint", "load_signatures"]

DEFAULT_RULES = Path(__file__).with_name("rules") / "inline.yaml"
_RULE_KEYS = {"id", "title", "status", "level", "tags", "attack_class", "pattern", "samples"}
_REQUIRED = _RULE_KEYS - {"tags"}
_STATUSES = {"experimental", "test", "stable"}
# Every rule needs a character outside this set, or one of these words, in the request line.
# Ordinary paths contain neither, so they cost one character-class match and a few substring tests
# (an alternation regex over the same triggers cost 1.5-4.4 us per line here; this costs ~0.7).
_SAFE = re.compile(r"[A-Za-z0-9/_.,~=&:+@?\-]*")
_TRIGGER_WORDS = ("..", "--", "/etc/", "/proc/", "union", "javascript", "onerror", "onload")


def _worth_scanning(line: str) -> bool:
    if _SAFE.fullmatch(line) is None:
        return True
    low = line.lower()
    for word in _TRIGGER_WORDS:
        if word in low:
            return True
    return False


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


def _rule_lines(text: str) -> list[int]:
    """1-based line of each item of the top-level ``rules`` list."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, value in getattr(root, "value", []):
        if getattr(key, "value", None) == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def lint(path: Path = DEFAULT_RULES) -> list[str]:
    """Every problem in a rule file as ``file:line: message`` (empty when it is valid)."""
    try:
        text = path.read_text()
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        context = f"{exc.context}: " if exc.context else ""
        return [f"{path}:{line}: {context}{exc.problem}"]
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: {exc}"]
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        return [f"{path}:1: expected a top-level 'rules' list"]
    lines = _rule_lines(text)
    errors = []
    for i, rule in enumerate(rules):
        rule_id = rule.get("id", "?") if isinstance(rule, dict) else "?"
        errors += _rule_errors(rule, f"{path}:{lines[i] if i < len(lines) else 0}: rule {rule_id}")
    ids = [r.get("id") for r in rules if isinstance(r, dict)]
    errors += [f"{path}:1: duplicate rule id {i!r}" for i in sorted({i for i in ids if ids.count(i) > 1}, key=str)]
    return errors


def load_signatures(path: Path = DEFAULT_RULES) -> SignatureSet:
    """Load and compile a rule file; raises ``RuleLoadError`` listing every problem."""
    errors = lint(path)
    if errors:
        raise RuleLoadError("; ".join(errors))
    rules = yaml.load(path.read_text(), Loader=_StrictLoader)["rules"]  # noqa: S506
    return SignatureSet([Signature(r["id"], r["title"], r["attack_class"], re.compile(r["pattern"]), r["samples"]) for r in rules])


class SignatureSet:
    """A set of compiled signatures applied to request lines."""

    def __init__(self, signatures: list[Signature]):
        self.signatures = signatures

    def inspect(self, req: RequestView) -> Inspection | None:
        """The ``Inspector`` protocol over the request line only."""
        found = self.match(req.path)
        return Inspection(tuple(found)) if found else None

    def match(self, request_line: str) -> list[str]:
        """Attack classes whose signature matches the decoded request line (empty for most traffic)."""
        if not _worth_scanning(request_line):
            return []
        decoded = unquote_plus(unquote_plus(request_line))
        return [s.attack_class for s in self.signatures if s.regex.search(decoded)]
