"""Inline rule packs: RE2 patterns and libinjection engines as YAML data, loaded strictly.

Contract: ``load_signatures(path)`` reads a rule file, or every ``*.yaml`` of a
directory in name order (``DEFAULT_RULES`` is ``enforcement/rules/inline/``),
and returns a ``SignatureSet``; ``lint(path)`` returns every problem as
``file:line: message`` (empty when valid): YAML syntax, duplicate keys, unknown
or missing keys, bad values, patterns RE2 rejects, and rule ids repeated
anywhere in the pack. ``load_signatures`` raises ``RuleLoadError`` listing them.

A rule::

    id: <UUID>                  title: <text>           status: experimental | test | stable
    category: <one of CATEGORIES>                       paranoia: 1-4
    severity: critical | error | warning | notice       (its score: 5, 4, 3, 2)
    targets: [path, query, header, cookie, body, body_key]   (optional; default all)
    engine: re2 | libinjection-sqli | libinjection-xss       (optional; default re2, the only one with a pattern)
    pattern: <RE2 syntax>       tags: [...]             notes: <text> (optional)
    samples: {hit: [...], miss: [...]}   raw values as a client sends them, possibly encoded

Every ``re2`` rule of a paranoia level is also compiled into one ``re2.Set``
searched over all values of a request at once (joined by ``SEPARATOR``), so a
clean request costs one linear scan; only the rules the set reports are then
confirmed value by value with their exact pattern (``enforcement.inspection``).
In the set, each pattern's anchors (``^ $ \\A \\z``) also hold at a separator
(``unanchored``), so the set never misses what a single value would match.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from enforcement.errors import RuleLoadError
from ingest.yamlfile import duplicate_ids, read_rule_files, rule_files

__all__ = ["CATEGORIES", "DEFAULT_RULES", "ENGINES", "SCAN_CHUNK", "SCAN_INTRA", "SCAN_OVERLAP", "SEPARATOR", "SEVERITIES", "Signature", "SignatureSet", "TARGETS", "lint", "load_signatures", "unanchored"]

DEFAULT_RULES = Path(__file__).with_name("rules") / "inline"
#: canonical inline attack categories (issue 6)
CATEGORIES = ("sqli", "xss", "traversal", "cmdi", "ssrf", "jndi", "ssti", "nosqli", "xxe", "crlf", "prototype-pollution",
              "code-injection", "ldap", "session-fixation", "file-upload", "mass-assignment", "schema-violation")  # fmt: skip
#: severity name -> score it adds (CRS anomaly scoring)
SEVERITIES = {"critical": 5, "error": 4, "warning": 3, "notice": 2}
ENGINES = ("re2", "libinjection-sqli", "libinjection-xss")
TARGETS = ("path", "query", "header", "cookie", "body", "body_key")
#: joins the values of a request for one set scan: a control character no value normally holds and no rule is about
SEPARATOR = "\x01"
#: first and largest piece of joined text per set scan when a scan budget applies; the smallest piece and the overlap
#: when one value is longer than a piece and must be cut inside (longer than any bounded span of a shipped rule)
SCAN_CHUNK, SCAN_INTRA, SCAN_OVERLAP = (256, 8192), 2048, 1024
_EDGE = {"^": "(?:^|\\x01)", "\\A": "(?:^|\\x01)", "$": "(?:$|\\x01)", "\\z": "(?:$|\\x01)"}
_RULE_KEYS = {"id", "title", "status", "category", "paranoia", "severity", "targets", "engine", "pattern", "tags", "samples", "notes"}
_REQUIRED = {"id", "title", "status", "category", "paranoia", "severity", "samples"}
_STATUSES = ("experimental", "test", "stable")
_FILE_KEYS = frozenset({"version", "rules"})


def re2_options(max_mem: int) -> Any:
    """RE2 options for a rule pack: errors not logged (they are reported as lint problems), ``max_mem`` bytes of DFA."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    return options


# RE2's default 8 MB budget is too small for the whole pack in one set (Compile fails), and a set
# that runs out of DFA memory while searching reports nothing: give it room.
_OPTIONS = re2_options(256 << 20)


@dataclass(frozen=True)
class Signature:
    """One loaded rule; ``regex`` is the compiled RE2 pattern (None for libinjection engines)."""

    id: str
    title: str
    category: str
    paranoia: int
    score: int
    targets: frozenset[str]
    engine: str
    pattern: str | None
    regex: Any
    samples: dict[str, list[str]]
    status: str = "experimental"
    tags: tuple[str, ...] = ()


@dataclass
class SignatureSet:
    """A loaded rule pack; ``at(paranoia)`` keeps the rules run at a paranoia level, ``candidates`` prefilters."""

    signatures: list[Signature]
    _set: Any = field(default=None, init=False, repr=False)
    _re2: list[Signature] = field(default_factory=list, init=False, repr=False)
    _levels: dict[int, SignatureSet] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._re2 = [s for s in self.signatures if s.engine == "re2"]
        if self._re2:
            self._set = re2.Set.SearchSet(_OPTIONS)
            for sig in self._re2:
                self._set.Add(unanchored(sig.pattern or ""))
            self._set.Compile()

    def at(self, paranoia: int) -> SignatureSet:
        """The rules of paranoia ``paranoia`` and below (compiled once per level and kept)."""
        found = self._levels.get(paranoia)
        if found is None:
            found = self._levels[paranoia] = SignatureSet([s for s in self.signatures if s.paranoia <= paranoia])
        return found

    def engine_rules(self, engine: str) -> list[Signature]:
        """The rules run by one engine (``libinjection-sqli``...)."""
        return [s for s in self.signatures if s.engine == engine]

    def candidates(self, text: str) -> list[int]:
        """Indices (into ``patterned``) of the RE2 rules whose pattern matches somewhere in ``text``: one scan, usually empty."""
        if self._set is None:
            return []
        found: list[int] | None = self._set.Match(text)  # None when nothing matches
        return found or []

    def candidates_within(self, text: str, deadline: float, cpu_deadline: float = -math.inf) -> tuple[list[int] | None, bool]:
        """``candidates`` piece by piece: (the rule indices, or None once ``time.perf_counter()`` passes ``deadline``
        and this thread's CPU time (``time.thread_time()``) passes ``cpu_deadline``; whether a value was cut). The CPU
        condition keeps a garbage collection or another thread holding the interpreter from cutting an ordinary scan;
        the wall clock is read first, being ten times cheaper.

        The set's DFA is built lazily; text made of many distinct punctuation
        runs keeps it building states (measured: 15-26 ms per KB for the
        whole pack on such text, against a few us per KB on API traffic), so
        a long text is scanned in pieces with the clock read in between. The
        pieces grow from ``SCAN_CHUNK[0]`` to ``SCAN_CHUNK[1]`` characters, so
        crafted text overruns the deadline by about one piece while ordinary
        text costs a dozen calls per 64 KB. A piece ends at the last
        ``SEPARATOR`` in it, so no value is cut; only a single value longer
        than the piece is cut inside, into pieces of at least
        ``SCAN_INTRA`` characters overlapping by ``SCAN_OVERLAP``: a match
        longer than that across such a cut can be missed, and the caller is
        told (the second item) so it does not remember the values as clean.
        """
        if self._set is None:
            return [], False
        size, largest = SCAN_CHUNK
        if len(text) <= size:
            return self.candidates(text), False
        found: set[int] = set()
        start, end, cut_inside = 0, len(text), False
        while start < end:
            stop = min(start + size, end)
            if stop == end:
                piece_end = next_start = end
            else:
                cut = text.rfind(SEPARATOR, start + 1, stop)
                if cut > start:
                    piece_end, next_start = cut, cut + 1
                else:
                    stop = min(start + max(size, SCAN_INTRA), end)
                    piece_end, next_start = stop, (stop - SCAN_OVERLAP if stop < end else end)
                    cut_inside = cut_inside or stop < end
            found.update(self.candidates(text[start:piece_end]))
            if time.perf_counter() > deadline and time.thread_time() > cpu_deadline:
                return None, cut_inside
            start, size = next_start, min(size * 2, largest)
        return sorted(found), cut_inside

    @property
    def patterned(self) -> list[Signature]:
        """The ``re2`` rules, in the order ``candidates`` numbers them."""
        return self._re2


def unanchored(pattern: str) -> str:
    """``pattern`` for the joined values: each anchor ``^ $ \\A \\z`` (outside a class) also holds at ``SEPARATOR``."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            pair = pattern[i : i + 2]
            out.append(pair if in_class or pair not in ("\\A", "\\z") else _EDGE[pair])
            i += 2
            continue
        if in_class:
            in_class = c != "]" or pattern[i - 1] in "[^" and _class_start(pattern, i)
        elif c == "[":
            in_class = True
        elif c in "^$":
            out.append(_EDGE[c])
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _class_start(pattern: str, i: int) -> bool:
    """True when the ``]`` at ``i`` is the first character of a class (``[]`` or ``[^]``), hence literal."""
    return pattern[i - 1] == "[" or (pattern[i - 1] == "^" and pattern[i - 2] == "[")


# ------------------------------------------------------------------ lint


def _pattern_errors(rule: dict[str, Any], where: str) -> list[str]:
    engine, pattern = rule.get("engine", "re2"), rule.get("pattern")
    if engine not in ENGINES:
        return [f"{where}: engine={engine!r}, expected one of {list(ENGINES)}"]
    if engine != "re2":
        return [f"{where}: engine {engine} takes no pattern"] if pattern is not None else []
    if not isinstance(pattern, str) or not pattern:
        return [f"{where}: missing key 'pattern' (required for engine re2)"]
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        return [f"{where}: pattern does not compile under RE2: {exc}"]
    return []


def _value_errors(rule: dict[str, Any], where: str) -> list[str]:
    errors = []
    checks = [
        ("status", rule.get("status") in _STATUSES, list(_STATUSES)),
        ("category", rule.get("category") in CATEGORIES, list(CATEGORIES)),
        ("paranoia", rule.get("paranoia") in (1, 2, 3, 4), [1, 2, 3, 4]),
        ("severity", rule.get("severity") in SEVERITIES, list(SEVERITIES)),
    ]
    for key, ok, valid in checks:
        if key in rule and not ok:
            errors.append(f"{where}: {key}={rule.get(key)!r}, expected one of {valid}")
    return errors + targets_and_id_errors(rule, where, TARGETS, list(TARGETS))


def targets_and_id_errors(rule: dict[str, Any], where: str, valid: tuple[str, ...], default: list[str]) -> list[str]:
    """A rule's ``targets`` (a non-empty subset of ``valid``; ``default`` when absent) and its ``id`` (a UUID): the
    checks every RE2 rule pack shares (inline signatures, MCP tool and prompt rules)."""
    errors = []
    targets = rule.get("targets", default)
    if not (isinstance(targets, list) and targets and all(t in valid for t in targets)):
        errors.append(f"{where}: targets={targets!r}, expected a non-empty subset of {list(valid)}")
    try:
        uuid.UUID(str(rule.get("id")))
    except ValueError:
        errors.append(f"{where}: id={rule.get('id')!r} is not a UUID")
    return errors


def sample_errors(rule: dict[str, Any], where: str) -> list[str]:
    """A rule's ``samples``: at least one ``hit`` and one ``miss``, lists of strings (every RE2 rule pack)."""
    samples = rule.get("samples")
    if not (isinstance(samples, dict) and samples.get("hit") and samples.get("miss")):
        return [f"{where}: samples needs at least one 'hit' and one 'miss'"]
    errors = [f"{where}: samples has unknown key {k!r}" for k in samples if k not in ("hit", "miss")]
    lists = [samples["hit"], samples["miss"]]
    if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists):
        errors.append(f"{where}: samples hit and miss must be lists of strings")
    return errors


def _rule_errors(rule: Any, where: str) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: a rule must be a mapping, got {type(rule).__name__}"]
    errors = [f"{where}: unknown key {k!r}" for k in rule if k not in _RULE_KEYS]
    errors += [f"{where}: missing key {k!r}" for k in sorted(_REQUIRED - rule.keys())]
    errors += _value_errors(rule, where)
    errors += _pattern_errors(rule, where)
    if "samples" in rule:
        errors += sample_errors(rule, where)
    return errors


def lint(path: Path = DEFAULT_RULES) -> list[str]:
    """Every problem in a rule file or directory as ``file:line: message`` (empty when it is valid)."""
    found, errors = read_rule_files(path, _FILE_KEYS)
    for where, rule in found:
        errors += _rule_errors(rule, where)
    return errors + duplicate_ids(found)


def _signature(rule: dict[str, Any]) -> Signature:
    engine = rule.get("engine", "re2")
    pattern = rule.get("pattern")
    return Signature(
        id=str(rule["id"]), title=rule["title"], category=rule["category"], paranoia=rule["paranoia"],
        score=SEVERITIES[rule["severity"]], targets=frozenset(rule.get("targets", TARGETS)), engine=engine,
        pattern=pattern, regex=re2.compile(pattern, _OPTIONS) if engine == "re2" else None,
        samples={"hit": list(rule["samples"]["hit"]), "miss": list(rule["samples"]["miss"])},
        status=rule["status"], tags=tuple(rule.get("tags", ())),
    )  # fmt: skip


def load_signatures(path: Path = DEFAULT_RULES) -> SignatureSet:
    """Load and compile a rule file or directory; raises ``RuleLoadError`` listing every problem.

    Compiling the pack and its sets takes about a second; a pack whose files
    (names, sizes, modification times) have not changed is compiled once per
    process and shared (compiled RE2 objects are safe to share).
    """
    key = (str(Path(path).resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in rule_files(Path(path)) if f.exists()))
    cached = _LOADED.get(key)
    if cached is not None:
        return cached
    errors = lint(path)
    if errors:
        raise RuleLoadError("; ".join(errors))
    loaded = SignatureSet([_signature(rule) for _, rule in read_rule_files(Path(path), _FILE_KEYS)[0]])
    if len(_LOADED) >= 8:
        _LOADED.clear()
    _LOADED[key] = loaded
    return loaded


_LOADED: dict[tuple[str, tuple[tuple[str, int, int], ...]], SignatureSet] = {}
