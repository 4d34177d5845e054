"""The tool-poisoning rule pack: RE2 patterns over MCP tool definitions as YAML data, loaded strictly.

Contract: ``load_tool_rules(path)`` reads a rule file, or every ``*.yaml`` of a
directory in name order (``DEFAULT_TOOL_RULES`` is ``enforcement/rules/tools/``),
and returns a ``ToolRuleSet``; ``lint(path)`` returns every problem as
``file:line: message`` (empty when valid): YAML syntax, duplicate keys, unknown
or missing keys, bad values, patterns RE2 rejects, rule ids repeated anywhere
in the pack, and samples a rule does not match as they say.
``load_tool_rules`` raises ``RuleLoadError`` listing them. A rule::

    id: <UUID>                  title: <text>           status: experimental | test | stable
    trait: <one of TRAITS>      severity: critical | error | warning | notice | info   (points: 5, 4, 3, 2, 1)
    targets: [text, param, name]      (optional; default [text]; see enforcement.tooltext)
    pattern: <RE2 syntax>       unless: <RE2 syntax> (optional)     tags: [...]    notes: <text>
    repeat: 1-5                 (optional; default 1: how many distinct segments may each add the points)
    samples: {hit: [...], miss: [...]}   texts as a tool definition would carry them

``unless`` is a filter in the manner of Sigma's: a match does not count when
the sentence around it also matches ``unless`` (an honest "never sent
anywhere" next to a sensitive word). Samples are checked against ``pattern``
and ``unless`` together, so a sample documents the filter too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from enforcement.errors import RuleLoadError
from enforcement.signatures import re2_options, sample_errors, targets_and_id_errors
from enforcement.tooltext import TARGETS
from ingest.yamlfile import duplicate_ids, read_rule_files

__all__ = ["DEFAULT_TOOL_RULES", "SEVERITIES", "TRAITS", "ToolRule", "ToolRuleSet", "lint", "load_tool_rules"]

DEFAULT_TOOL_RULES = Path(__file__).with_name("rules") / "tools"
#: what a poisoned definition does (README of the dev set and issue 8)
TRAITS = ("instruction", "concealment", "override", "sensitive", "exfiltration", "shadowing", "hijacking", "covert",
          "side_channel", "command", "obfuscation")  # fmt: skip
#: severity name -> points it adds to a tool's score (CRS-style anomaly scoring)
SEVERITIES = {"critical": 5, "error": 4, "warning": 3, "notice": 2, "info": 1}
_RULE_KEYS = {"id", "title", "status", "trait", "severity", "targets", "pattern", "unless", "repeat", "tags", "samples", "notes"}
_REQUIRED = {"id", "title", "status", "trait", "severity", "pattern", "samples"}
_STATUSES = ("experimental", "test", "stable")
_FILE_KEYS = frozenset({"version", "rules"})


# bounded gaps such as {0,160} make large DFAs; with RE2's default 8 MB a set falls back to slow
# matching (measured on the dev set: 250 us per tool; 15 us once the DFA is built)
_OPTIONS = re2_options(64 << 20)


@dataclass(frozen=True)
class ToolRule:
    """One loaded rule; ``regex`` and ``unless_regex`` are compiled RE2 patterns."""

    id: str
    title: str
    trait: str
    points: int
    targets: frozenset[str]
    pattern: str
    regex: Any
    unless_regex: Any
    samples: dict[str, list[str]]
    status: str = "experimental"
    tags: tuple[str, ...] = ()
    repeat: int = 1

    def matches(self, text: str) -> bool:
        """True when the pattern matches ``text`` and ``unless`` does not (the sample semantics)."""
        return bool(self.regex.search(text)) and not (self.unless_regex is not None and self.unless_regex.search(text))


@dataclass(frozen=True)
class ToolRuleSet:
    """A loaded pack; ``candidates(target, text)`` gives the rules of a target whose pattern matches ``text``.

    Each target's patterns are also compiled into one ``re2.Set``, so a segment costs one scan for the
    whole pack and only the rules it reports are run on their own (measured on the dev set: 440 us per
    tool running every rule, against the figure ``kubeward eval-agents`` reports).
    """

    rules: tuple[ToolRule, ...]
    _sets: dict[str, tuple[Any, tuple[ToolRule, ...]]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for target in TARGETS:
            rules = self.for_target(target)
            if rules:
                search = re2.Set.SearchSet(_OPTIONS)
                for rule in rules:
                    search.Add(rule.pattern)
                search.Compile()
                self._sets[target] = (search, rules)

    def for_target(self, target: str) -> tuple[ToolRule, ...]:
        """The rules whose ``targets`` include ``target``."""
        return tuple(r for r in self.rules if target in r.targets)

    def candidates(self, target: str, text: str) -> tuple[ToolRule, ...]:
        """The rules of ``target`` whose pattern matches somewhere in ``text`` (``unless`` not yet applied)."""
        found = self._sets.get(target)
        if found is None:
            return ()
        hits = found[0].Match(text)
        return tuple(found[1][i] for i in sorted(hits)) if hits else ()


# ------------------------------------------------------------------ lint


def _compile_error(rule: dict[str, Any], key: str, where: str) -> list[str]:
    value = rule.get(key)
    if not isinstance(value, str) or not value:
        return [f"{where}: {key} must be a non-empty RE2 pattern, got {value!r}"]
    try:
        re2.compile(value, _OPTIONS)
    except re2.error as exc:
        return [f"{where}: {key} does not compile under RE2: {exc}"]
    return []


def _value_errors(rule: dict[str, Any], where: str, traits: tuple[str, ...] = TRAITS) -> list[str]:
    checks = [("status", _STATUSES), ("trait", traits), ("severity", tuple(SEVERITIES))]
    errors = [f"{where}: {k}={rule.get(k)!r}, expected one of {list(valid)}" for k, valid in checks if k in rule and rule[k] not in valid]
    repeat = rule.get("repeat", 1)
    if isinstance(repeat, bool) or repeat not in (1, 2, 3, 4, 5):
        errors.append(f"{where}: repeat={rule.get('repeat')!r}, expected an integer 1-5")
    return errors + targets_and_id_errors(rule, where, TARGETS, ["text"])


def _behaviour_errors(rule: dict[str, Any], where: str) -> list[str]:
    """Samples the compiled rule does not treat as they claim (only for a rule otherwise valid)."""
    compiled = _rule(rule)
    errors = [f"{where}: sample hit does not match: {s!r}" for s in rule["samples"]["hit"] if not compiled.matches(s)]
    return errors + [f"{where}: sample miss matches: {s!r}" for s in rule["samples"]["miss"] if compiled.matches(s)]


def _rule_errors(rule: Any, where: str, traits: tuple[str, ...] = TRAITS) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: a rule must be a mapping, got {type(rule).__name__}"]
    errors = [f"{where}: unknown key {k!r}" for k in rule if k not in _RULE_KEYS]
    errors += [f"{where}: missing key {k!r}" for k in sorted(_REQUIRED - rule.keys())]
    errors += _value_errors(rule, where, traits)
    errors += _compile_error(rule, "pattern", where) if "pattern" in rule else []
    errors += _compile_error(rule, "unless", where) if "unless" in rule else []
    errors += sample_errors(rule, where) if "samples" in rule else []
    return errors or _behaviour_errors(rule, where)


def lint(path: Path = DEFAULT_TOOL_RULES, traits: tuple[str, ...] = TRAITS) -> list[str]:
    """Every problem in a tool rule file or directory as ``file:line: message`` (empty when it is valid).

    ``traits`` are the valid ``trait`` values (another pack over the same format, such as
    ``enforcement.promptrules``, passes its own)."""
    found, errors = read_rule_files(Path(path), _FILE_KEYS)
    for where, rule in found:
        errors += _rule_errors(rule, where, traits)
    return errors + duplicate_ids(found)


def _rule(rule: dict[str, Any]) -> ToolRule:
    unless = rule.get("unless")
    return ToolRule(
        id=str(rule["id"]), title=rule["title"], trait=rule["trait"], points=SEVERITIES[rule["severity"]],
        targets=frozenset(rule.get("targets", ["text"])), pattern=rule["pattern"], regex=re2.compile(rule["pattern"], _OPTIONS),
        unless_regex=re2.compile(unless, _OPTIONS) if unless else None,
        samples={"hit": list(rule["samples"]["hit"]), "miss": list(rule["samples"]["miss"])},
        status=rule["status"], tags=tuple(rule.get("tags", ())), repeat=rule.get("repeat", 1),
    )  # fmt: skip


def load_tool_rules(path: Path = DEFAULT_TOOL_RULES, traits: tuple[str, ...] = TRAITS) -> ToolRuleSet:
    """Load and compile a tool rule file or directory (``traits`` as in ``lint``); raises ``RuleLoadError`` listing every problem."""
    errors = lint(path, traits)
    if errors:
        raise RuleLoadError("; ".join(errors))
    return ToolRuleSet(tuple(_rule(rule) for _, rule in read_rule_files(Path(path), _FILE_KEYS)[0]))
