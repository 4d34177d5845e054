"""Inline inspection of a whole request: values, normalisation, engines, CRS-style scoring.

Contract: pure and bounded. ``WafInspector(rules, settings).inspect(req)``
lists the request's values (``enforcement.requestparts``), normalises each
(``enforcement.normalize``), runs the rule pack's engines on them up to
``settings.paranoia``, and adds up the score of every rule that fired (each
rule counts once per request, however many values it matched). A request
whose total reaches ``settings.threshold`` yields ``Inspection(categories
highest score first, rule ids, score)``; otherwise ``None`` (most traffic).

Engines and their cost (measured with ``deploy/lab/bench_inspection.py``):

- ``re2`` rules: every variant of every value is joined by ``SEPARATOR`` and
  searched once by an ``re2.Set`` of all (unanchored) patterns; a JSON body is
  first searched whole (its quotes turned into separators, its structure left
  in place) and split into values only when the set or an engine guard finds
  something in it. The rules the set reports are confirmed with their exact
  pattern on the values, halving the list of values while the set still
  matches (``_locate``: a few scans instead of one per value), within each
  rule's ``targets``.
- ``libinjection-sqli`` / ``libinjection-xss``: about 5 us and 1 us per call
  (the binding builds a token list), and the XSS scan is linear (~36 us per
  KB). They read the decoded form of a value only when a cheap guard finds
  what they need (``_SQLI_GUARD``: a quote, operator, parenthesis, comma,
  comment or SQL keyword; ``_XSS_GUARD``: an angle bracket or an event or URL
  attribute), and XSS only on values up to ``_XSS_MAX_CHARS``: longer text is
  left to the RE2 rules.

A body past ``max_body_bytes`` with ``oversize: deny`` is the finding
``Inspection(("oversize",), ("oversize",), threshold)``: not an attack
category, but the reason the request was refused. The RE2 scan of one request
has a CPU budget (``budget_ms``): text crafted to keep the set's DFA building
states costs 15-26 ms per KB where API traffic costs microseconds, and a
slow enough check makes ext_authz time out and fail open. Past the budget,
``over_budget: deny`` makes the request the finding ``inspection-budget``
(at the threshold, with whatever was found so far); ``allow`` keeps only what
was found so far. ``Inspectors`` composes
inspectors (this one and the request-schema validator) and merges what they
find; ``build_inspector`` builds the shim's from its settings.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from pathlib import Path

import libinjection
import re2

from enforcement.decision import Inspection, Inspector, RequestView
from enforcement.normalize import variants
from enforcement.requestparts import Part, body_parts, request_parts
from enforcement.settings import InspectionSettings
from enforcement.signatures import SEPARATOR, Signature, SignatureSet, load_signatures
from ingest.bodies import is_json_media, media_type

__all__ = ["Inspectors", "NoInspection", "OVERSIZE", "OVER_BUDGET", "WafInspector", "build_inspector", "score"]

#: category and rule id of a body refused for its size (``oversize: deny``)
OVERSIZE = "oversize"
#: category and rule id of a request whose scan ran past ``budget_ms`` (``over_budget: deny``)
OVER_BUDGET = "inspection-budget"
_SQLI_GUARD_TEXT = (r"['`;()#=|&<>]|--|/\*|(?i:\b(?:union|select|sleep|benchmark|waitfor|having|exec)\b)")
_XSS_GUARD_TEXT = (r"[<>]|(?i:\b(?:on[a-z]{3,}|style|src|href|formaction|action|data)\s*=)")
_SQLI_GUARD, _XSS_GUARD = re.compile(_SQLI_GUARD_TEXT), re.compile(_XSS_GUARD_TEXT)
# Python's re is fastest on short values; on long text its case-insensitive alternations cost ~100 us/KB, RE2 ~3.
_LONG = 256
_SQLI_GUARD_LONG, _XSS_GUARD_LONG = re2.compile(_SQLI_GUARD_TEXT), re2.compile(_XSS_GUARD_TEXT)
# A whole JSON body is guarded by one scan of both guards when both engines run: the two scans were ~4 us per KB.
_EITHER_GUARD_LONG = re2.compile(f"{_SQLI_GUARD_TEXT}|{_XSS_GUARD_TEXT}")
_XSS_MAX_CHARS = 4096
# Engine answers are memoised per decoded value (User-Agent, Referer and many arguments repeat across requests).
_MEMO_CHARS = 512
_MEMO_SIZE = 8192
_CLEAN_SIZE = 16384  # values known clean (see ``_remember_clean``); the bench's browser-like GETs went from 56 to 33 us (same run, loaded machine)
_DIRECT = 4  # values confirmed one by one below this many (a set scan each), halved above
# '+' is a space in query strings; in paths too for the rules' sake (servers and frameworks disagree, attackers use both)
_FORM_ENCODED = frozenset({"query", "path"})
_BODY_TARGETS = frozenset({"body", "body_key"})

Normalized = tuple[str, tuple[str, ...]]


def score(hits: Iterable[Signature], threshold: int) -> Inspection | None:
    """CRS-style anomaly score: each rule adds its score once; categories by their summed score, highest first."""
    by_category: dict[str, int] = {}
    ids: list[str] = []
    total = 0
    for sig in hits:
        by_category[sig.category] = by_category.get(sig.category, 0) + sig.score
        ids.append(sig.id)
        total += sig.score
    if total < threshold or not ids:
        return None
    categories = tuple(sorted(by_category, key=lambda c: (-by_category[c], c)))
    return Inspection(categories, tuple(sorted(ids)), total)


class WafInspector:
    """The ``Inspector`` of the rule engines (see the module docstring)."""

    def __init__(self, rules: SignatureSet, settings: InspectionSettings):
        self.settings = settings
        self.rules = rules.at(settings.paranoia)
        self._sqli = self.rules.engine_rules("libinjection-sqli")
        self._xss = self.rules.engine_rules("libinjection-xss")
        self._passes = settings.decode_passes
        self._threshold = settings.threshold
        self._has_re2 = any(s.engine == "re2" for s in self.rules.signatures)
        self._patterned = self.rules.patterned
        self._memo: dict[str, tuple[bool, bool]] = {}
        self._clean: set[tuple[bool, str]] = set()
        self._budget_s = settings.budget_ms / 1000
        self._deny_over_budget = settings.over_budget == "deny"
        #: requests whose RE2 scan ran past ``budget_ms`` (a metric)
        self.over_budget = 0

    def inspect(self, req: RequestView) -> Inspection | None:
        """Inspect one request; None when its score stays below the threshold."""
        found = request_parts(req, self.settings)
        if found.oversize:
            return Inspection((OVERSIZE,), (OVERSIZE,), self._threshold)
        before = self.over_budget
        hits = self.hits(found.parts, found.body, found.content_type, req, time.perf_counter() + self._budget_s,
                         time.thread_time() + self._budget_s)
        result = score(hits.values(), self._threshold)
        if self.over_budget == before or not self._deny_over_budget:
            return result
        return Inspection((OVER_BUDGET, *(result.categories if result else ())), (OVER_BUDGET, *(result.rules if result else ())),
                          max(self._threshold, result.score if result else 0))  # fmt: skip

    def hits(self, parts: list[Part], body: str | None = None, content_type: str | None = None,
             req: RequestView | None = None, deadline: float = math.inf, cpu_deadline: float = -math.inf) -> dict[str, Signature]:
        """Every rule that fires on at least one value (``parts`` and the body's), by id (no threshold).

        ``req``, the request ``body`` came from, shares its parsed JSON body
        with other inspectors. ``deadline`` (``time.perf_counter()``) and ``cpu_deadline``
        (``time.thread_time()``: the scan is cut only once both passed) bound
        the RE2 scan: past it, what was confirmed so far is returned and
        ``self.over_budget`` counts one more request.
        """
        passes = self._passes
        clean = self._clean
        fresh = [(loc, value) for loc, _, value in parts if (loc in _FORM_ENCODED, value) not in clean]
        normalized: list[Normalized] = [(loc, variants(value, passes, loc in _FORM_ENCODED)) for loc, value in fresh]
        blob: tuple[str, ...] = ()
        if body is not None:
            if _is_json(body, content_type):
                blob = variants(_json_values(body), passes + 1)
            else:
                normalized.extend(self._body(body, content_type, req))
        texts = [v for _, forms in normalized for v in forms]
        scan = _Scan(self.rules, deadline, cpu_deadline)
        candidates = scan.candidates(SEPARATOR.join(texts + list(blob))) if self._has_re2 else []
        if blob and (any(_BODY_TARGETS & self._patterned[i].targets for i in candidates) or self._guarded(blob[0])):
            normalized.extend(self._body(body or "", content_type, req))
        found: dict[str, Signature] = {}
        if candidates:
            self._locate(normalized, 0, len(normalized), set(candidates), found, scan)
        if scan.over:
            self.over_budget += 1
        if self._sqli or self._xss:
            self._engines(normalized, found)
        if not candidates and not found and not scan.over and not scan.cut:
            self._remember_clean(fresh)
        return found

    def _remember_clean(self, values: list[tuple[str, str]]) -> None:
        """Values of a request nothing fired on are skipped next time (User-Agent, Referer, cookies, query names repeat).

        A value is clean for every location's rules once no rule matched it at
        all; the key keeps whether it was read as form-encoded, since that
        changes its decoded forms. Only short values are kept, in a bounded set.
        """
        clean = self._clean
        if len(clean) >= _CLEAN_SIZE:
            clean.clear()
        clean.update((loc in _FORM_ENCODED, value) for loc, value in values if len(value) <= _MEMO_CHARS)

    def _locate(self, normalized: list[Normalized], lo: int, hi: int, wanted: set[int], found: dict[str, Signature], scan: _Scan) -> None:
        """Confirm candidate rules value by value, halving the values while the set still matches (a few scans, not one per value)."""
        if scan.over:
            return
        if hi - lo <= _DIRECT:
            for loc, forms in normalized[lo:hi]:
                for i in wanted.intersection(scan.candidates(SEPARATOR.join(forms))):
                    sig = self._patterned[i]
                    if loc in sig.targets and sig.id not in found and any(sig.regex.search(v) for v in forms):
                        found[sig.id] = sig
            return
        if hi - lo < len(normalized):
            got = wanted.intersection(scan.candidates(SEPARATOR.join([v for _, forms in normalized[lo:hi] for v in forms])))
            if not got:
                return
            wanted = got
        mid = (lo + hi) // 2
        self._locate(normalized, lo, mid, wanted, found, scan)
        self._locate(normalized, mid, hi, wanted, found, scan)

    def match_value(self, value: str, location: str = "query") -> list[str]:
        """Ids of the rules that fire on one raw value at ``location`` (rule samples are tested through this)."""
        if location == "body":
            return sorted(self.hits([], value, "text/plain"))
        return sorted(self.hits([(location, "", value)]))

    def _body(self, body: str, content_type: str | None, req: RequestView | None = None) -> list[Normalized]:
        parts, _ = body_parts(body, content_type, self.settings.max_values, req)
        passes = self._passes
        return [(loc, variants(value, passes)) for loc, _, value in parts]

    def _guarded(self, text: str) -> bool:
        """Whether an engine could fire somewhere in ``text`` (a whole JSON body)."""
        sqli, xss = (_SQLI_GUARD, _XSS_GUARD) if len(text) < _LONG else (_SQLI_GUARD_LONG, _XSS_GUARD_LONG)
        if self._sqli and self._xss and len(text) >= _LONG:
            return _EITHER_GUARD_LONG.search(text) is not None
        return bool((self._sqli and sqli.search(text)) or (self._xss and xss.search(text)))

    def _engine_verdict(self, decoded: str) -> tuple[bool, bool]:
        """(sqli, xss) of libinjection on one decoded value, behind the guards; memoised for short values."""
        memo = self._memo
        got = memo.get(decoded)
        if got is not None:
            return got
        sqli_guard, xss_guard = (_SQLI_GUARD, _XSS_GUARD) if len(decoded) < _LONG else (_SQLI_GUARD_LONG, _XSS_GUARD_LONG)
        sqli = bool(self._sqli) and sqli_guard.search(decoded) is not None and libinjection.is_sql_injection(decoded)["is_sqli"]
        xss = (bool(self._xss) and len(decoded) <= _XSS_MAX_CHARS and xss_guard.search(decoded) is not None
               and libinjection.is_xss(decoded)["is_xss"])  # fmt: skip
        got = (bool(sqli), bool(xss))
        if len(decoded) <= _MEMO_CHARS:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[decoded] = got
        return got

    def _engines(self, normalized: list[Normalized], found: dict[str, Signature]) -> None:
        for loc, forms in normalized:
            sqli, xss = self._engine_verdict(forms[0])
            if sqli:
                found.update((s.id, s) for s in self._sqli if loc in s.targets)
            if xss:
                found.update((s.id, s) for s in self._xss if loc in s.targets)


class _Scan:
    """The set scans of one request against its deadline; ``over`` once the deadline passed (later scans find nothing)."""

    __slots__ = ("rules", "deadline", "cpu_deadline", "over", "cut")  # cut: a value was cut inside (see ``candidates_within``)

    def __init__(self, rules: SignatureSet, deadline: float, cpu_deadline: float = -math.inf):
        self.rules, self.deadline, self.cpu_deadline, self.over, self.cut = rules, deadline, cpu_deadline, False, False

    def candidates(self, text: str) -> list[int]:
        if self.over:
            return []
        if self.deadline == math.inf:
            return self.rules.candidates(text)
        found, cut = self.rules.candidates_within(text, self.deadline, self.cpu_deadline)
        self.cut = self.cut or cut
        if found is None:
            self.over = True
            return []
        return found


def _is_json(body: str, content_type: str | None) -> bool:
    media = media_type(content_type)[0]
    if media:
        return is_json_media(media)
    return body.lstrip()[:1] in ("{", "[")


def _json_values(body: str) -> str:
    """A JSON text with each string's edges turned into ``SEPARATOR`` (escaped quotes kept), for one scan of the whole body."""
    if "\\" in body and '\\"' in body:  # a one-character test first: memchr, where the two-character one costs ~1 us per KB
        return body.replace('\\"', "\x02").replace('"', SEPARATOR).replace("\x02", '"')
    return body.replace('"', SEPARATOR)


class NoInspection:
    """The ``Inspector`` when inspection is disabled: finds nothing."""

    def inspect(self, req: RequestView) -> Inspection | None:
        """Always None."""
        return None


class Inspectors:
    """Several inspectors as one: every one runs, and what they find is merged (categories by score, highest first)."""

    def __init__(self, *inspectors: Inspector):
        self.inspectors = inspectors

    def inspect(self, req: RequestView) -> Inspection | None:
        """The merged finding of all inspectors, or None when none found anything."""
        found = [f for f in (i.inspect(req) for i in self.inspectors) if f is not None]
        if len(found) <= 1:
            return found[0] if found else None
        found.sort(key=lambda f: -f.score)
        categories = tuple(dict.fromkeys(c for f in found for c in f.categories))
        rules = tuple(dict.fromkeys(r for f in found for r in f.rules))
        return Inspection(categories, rules, sum(f.score for f in found))


def build_inspector(settings: InspectionSettings, rules_path: Path) -> Inspector:
    """The shim's rule-engine inspector from its settings (``NoInspection`` when disabled)."""
    if not settings.enabled:
        return NoInspection()
    return WafInspector(load_signatures(rules_path), settings)
