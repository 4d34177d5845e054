"""MCP tool supply chain: pin tool definitions and scan them for poisoning (issue 8, item 2).

Contract: pure; the only I/O is loading the rule pack (``enforcement.toolrules``,
once per process). Three functions:

- ``definition_hash(name, description, input_schema)``: SHA-256 hex of the
  canonical JSON of the three parts (``ingest.mcp.tool_definition_hash``: sorted
  keys, no whitespace, non-ASCII kept as is), so key order never changes the pin
  and the scanner and the collector's summaries agree.
- ``scan_tool(name, description, input_schema, annotations)``: a ``ToolScan``.
  Every segment ``enforcement.tooltext.segments`` yields is matched against
  the rules of its target; each rule that matches adds its points once
  (CRS-style anomaly scoring), and each obfuscation flag adds ``FLAG_POINTS``.
  ``poisoned`` when the points reach ``THRESHOLD`` (5: one critical rule, or
  e.g. a sensitive file plus a send-it-out clause), or when an optional
  second-signal ``model`` (``enforcement.toolmodel``) scores the text at or
  above its own threshold. ``score`` in [0, 1] is the larger of
  ``points / (2 * THRESHOLD)`` (capped at 1) and the model's score, both placed
  so that 0.5 is the decision threshold.
- ``compare(previous, current)``: a ``Change``: whether the pinned hash moved,
  which parts did (name, description, schema) and whether the change *adds*
  poisoning (the new version scans poisoned while the old did not, or the text
  the change added scans poisoned on its own).

A changed definition is always a finding (a rug pull is caught on the first
changed ``tools/list``); ``adds_poisoning`` says how urgent it is.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from enforcement.toolrules import ToolRuleSet, load_tool_rules
from enforcement.tooltext import Segments, segments
from ingest.mcp import tool_definition_hash

__all__ = ["EVIDENCE_CHARS", "FLAG_POINTS", "THRESHOLD", "Change", "TextScorer", "ToolScan", "compare", "definition_hash",
           "model_text", "scan_tool"]

THRESHOLD = 5
#: points an obfuscation flag adds: hidden characters have no honest use inside a tool description
FLAG_POINTS = {"unicode_tags": 5, "zero_width": 5, "bidi_control": 4, "mixed_script": 5, "mixed_script_word": 3, "encoded_text": 2}
EVIDENCE_CHARS = 120
_STOPS = ".!?\n"


class TextScorer(Protocol):
    """A second signal over a tool's text: ``score(text, points)`` in [0, 1], 0.5 being its decision threshold.

    ``points`` are the rule points of the same definition, which the scorer may weigh in (``enforcement.toolmodel``).
    """

    def score(self, text: str, points: int) -> float:
        """How poisoned ``text`` reads, given ``points``."""
        ...


@dataclass(frozen=True)
class ToolScan:
    """The verdict on one definition: ``findings`` are ``(trait, evidence)``; ``rule_ids`` the rules that matched."""

    score: float
    poisoned: bool
    points: int
    findings: tuple[tuple[str, str], ...]
    rule_ids: tuple[str, ...] = ()
    model_score: float | None = None
    truncated: bool = False


@dataclass(frozen=True)
class Change:
    """How ``current`` differs from ``previous``; ``parts`` names what moved: name, description, schema."""

    changed: bool
    parts: tuple[str, ...]
    adds_poisoning: bool
    previous_hash: str
    current_hash: str
    scan: ToolScan
    added: ToolScan | None = None


def definition_hash(name: str | None, description: str | None, input_schema: Any) -> str:
    """SHA-256 hex of the canonical JSON of a definition's name, description and input schema: the pin the collector
    puts in summaries (``ingest.mcp.tool_definition_hash``, the one definition)."""
    return tool_definition_hash(name, description, input_schema)


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence (or line) of ``text`` around ``start:end`` and the one after it, for ``unless`` filters.

    The next sentence is included because honest descriptions state their limits right after the capability
    ("Lists the SSH keys in ~/.ssh. Private keys are never read.").
    """
    left = max(text.rfind(c, 0, start) for c in _STOPS) + 1
    right = end
    for _ in range(2):
        stops = [i for i in (text.find(c, right) for c in _STOPS) if i >= 0]
        right = min(stops) + 1 if stops else len(text)
    return text[left:right]


def _evidence(text: str, start: int, end: int) -> str:
    snippet = text[max(0, start - 20) : min(len(text), max(end, start + 40) + 20)]
    return " ".join(snippet.split())[:EVIDENCE_CHARS]


def _first_match(rule: Any, text: str) -> str | None:
    """Evidence of the first match of ``rule`` in ``text`` whose sentence ``unless`` does not excuse."""
    for m in rule.regex.finditer(text):
        start, end = m.span()
        if rule.unless_regex is None or not rule.unless_regex.search(_sentence(text, start, end)):
            return _evidence(text, start, end)
    return None


def _match_rules(segs: Segments, rules: ToolRuleSet) -> list[tuple[Any, str, str]]:
    """(rule, where, evidence) of every rule match that counts: one per rule, or up to ``repeat`` distinct segments."""
    hits: list[tuple[Any, str, str]] = []
    counts: dict[str, int] = {}
    for target, where, text in segs.items:
        for rule in rules.candidates(target, text):
            if counts.get(rule.id, 0) < rule.repeat:
                evidence = _first_match(rule, text)
                if evidence is not None:
                    counts[rule.id] = counts.get(rule.id, 0) + 1
                    hits.append((rule, where, evidence))
    return hits


def model_text(segs: Segments) -> str:
    """The text a second-signal model reads: every ``text`` segment, normalized, one per line."""
    return "\n".join(text for target, _, text in segs.items if target == "text")


def _rules() -> ToolRuleSet:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_tool_rules()
    return _DEFAULT


_DEFAULT: ToolRuleSet | None = None


def scan_segments(segs: Segments, rules: ToolRuleSet | None = None, model: TextScorer | None = None) -> ToolScan:
    """Score prepared segments (``scan_tool`` without the normalisation step)."""
    hits = _match_rules(segs, rules or _rules())
    points = sum(rule.points for rule, _, _ in hits) + sum(FLAG_POINTS[f] for f in segs.flags)
    findings = [(rule.trait, f"{where}: {evidence}") for rule, where, evidence in hits]
    findings += [("obfuscation", f"{where}: {flag}") for flag, where in segs.flags.items()]
    model_score = model.score(model_text(segs), points) if model is not None else None
    score = max(min(1.0, points / (2 * THRESHOLD)), model_score or 0.0)
    return ToolScan(score=round(score, 4), poisoned=score >= 0.5, points=points, findings=tuple(findings),
                    rule_ids=tuple(dict.fromkeys(rule.id for rule, _, _ in hits)), model_score=model_score, truncated=segs.truncated)  # fmt: skip


def scan_tool(name: str | None, description: str | None, input_schema: Any, annotations: Any = None, *,
              rules: ToolRuleSet | None = None, model: TextScorer | None = None) -> ToolScan:  # fmt: skip
    """Scan one tool definition for poisoning (see the module docstring); ``rules`` defaults to the shipped pack."""
    return scan_segments(segments(name, description, input_schema, annotations), rules, model)


def _added_words(old: str, new: str) -> str:
    """The runs of words ``new`` inserts or substitutes relative to ``old``, one per line."""
    a, b = old.split(), new.split()
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return "\n".join(" ".join(b[j1:j2]) for tag, _, _, j1, j2 in ops if tag in ("insert", "replace"))


def _added_schema_texts(old: Any, new: Any) -> Segments:
    """Segments of ``new``'s schema that ``old``'s schema does not have (same target and text)."""
    before = {(t, x) for t, _, x in segments(None, None, old).items}
    out = segments(None, None, new)
    out.items = [item for item in out.items if (item[0], item[2]) not in before]
    return out


def _parts(definition: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(name, description, input schema) of a definition (``inputSchema``, as MCP spells it, is accepted too)."""
    return definition.get("name"), definition.get("description"), definition.get("input_schema", definition.get("inputSchema"))


def compare(previous: Mapping[str, Any], current: Mapping[str, Any], *, rules: ToolRuleSet | None = None,
            model: TextScorer | None = None) -> Change:  # fmt: skip
    """How ``current`` (a ``{name, description, input_schema}`` mapping) differs from the pinned ``previous``."""
    old, new = _parts(previous), _parts(current)
    parts = tuple(p for p, a, b in zip(("name", "description", "schema"), old, new, strict=True) if a != b)
    scan = scan_tool(*new, current.get("annotations"), rules=rules, model=model)
    if not parts:
        return Change(False, (), False, definition_hash(*old), definition_hash(*new), scan)
    before = scan_tool(*old, previous.get("annotations"), rules=rules, model=model)
    added = _added_schema_texts(old[2], new[2])
    diff = segments(None, _added_words(old[1] or "", new[1] or ""), None)
    added.items, added.flags = diff.items + added.items, {**diff.flags, **added.flags}
    added_scan = scan_segments(added, rules, model)
    adds = (scan.poisoned and not before.poisoned) or added_scan.poisoned
    return Change(True, parts, adds, definition_hash(*old), definition_hash(*new), scan, added_scan)
