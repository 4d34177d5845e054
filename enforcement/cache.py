"""The shim's local verdict cache: subject keys to compiled verdicts, optionally scoped to an edge.

Lookups are dictionary gets on ``kind:value`` keys; each entry keeps only what
the hot path needs. A verdict replaces the one of its entry key; a signed
``lift`` record removes it (a subject's lift also its edge verdicts) and stands
until its own expiry, so that no verdict of that key issued before the lift is
applied again. A record issued more than ``REORDER_TOLERANCE_S`` (1 s: workers'
clocks are expected in step) before the one in place, or not after the newest
lift standing on its key or its subject, is stale: ignored and counted
(``stale``), so replaying an old signed record cannot undo a newer one. Expired
entries are ignored at lookup and purged lazily.

Scopes: a verdict with ``scope.service`` only is stored under its subject key
(one per subject, as before) and matches requests to that service. A verdict
with ``scope.path_template`` is an *edge* verdict: it is stored under
``entry_key(verdict)`` (``subject@service template``), several may stand for
one subject (one per edge), and it matches only requests to that service (any
service when the scope names none) whose path matches the template. The
template is compiled once, when the verdict is cached: each ``{param}`` matches
one non-empty segment, the rest literally, case-insensitively; the path is
matched without its query, with repeated and trailing slashes folded, as sent
and percent-decoded, and each of those also as a server reads it: dot segments
resolved (RFC 3986 section 5.2.4) and ``;params`` cut from every segment. Any
form matching is enough, so ``/admin/%65xport/1``, ``/admin/./export/1``,
``/admin/x/../export/1`` and ``/admin;v=1/export;x=1/1`` do not slip past
``/admin/export/{id}``. A request whose path is unknown
(``path=None``) matches no edge verdict. Subjects without edge verdicts pay
nothing for this: ``find`` probes the edge index only when it is non-empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ingest import Verdict

__all__ = ["CachedVerdict", "VerdictCache", "compile_template", "entry_key"]

#: how far a record's ``issued_at`` may lag the one in place (clocks of several workers) and still replace it
REORDER_TOLERANCE_S = 1.0
_NEVER = (float("-inf"), float("-inf"))
_PARAM = re.compile(r"\{[^}/]*\}")
_SLASHES = re.compile(r"/{2,}")


@dataclass(frozen=True, slots=True)
class CachedVerdict:
    """What a shim needs from a verdict at request time (``pattern``: the compiled ``scope_template``)."""

    action: str
    mode: str
    expires_at: float
    scope_service: str | None
    rate_per_s: float
    burst: int
    reason: str
    verdict_id: str
    scope_template: str | None = None
    pattern: re.Pattern[str] | None = None
    issued_at: float = 0.0


def compile_template(template: str) -> re.Pattern[str]:
    """A regular expression matching the paths of a template (``{param}`` = one non-empty segment).

    >>> p = compile_template("/admin/export/{id}")
    >>> bool(p.fullmatch("/admin/export/17")), bool(p.fullmatch("/admin/export/17/x")), bool(p.fullmatch("/admin/export/"))
    (True, False, False)
    """
    template = _fold(template.split("?", 1)[0])
    parts, pos = [], 0
    for m in _PARAM.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        parts.append("[^/]+")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts), re.IGNORECASE)


def _fold(path: str) -> str:
    """Repeated slashes as one, no trailing slash (the root stays ``/``)."""
    path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


def _resolved(path: str) -> str:
    """The path as a server reads it: ``;params`` cut from each segment, then dot segments resolved, slashes folded.

    Cutting first makes ``..;x`` a parent step, as servers that strip parameters treat it.

    >>> _resolved("/admin/./x/../export;v=1/17;jsessionid=2"), _resolved("/../admin/..;/export")
    ('/admin/export/17', '/export')
    """
    out: list[str] = []
    for segment in path.split("/"):
        segment = segment.split(";", 1)[0]
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    return "/" + "/".join(out)


def _path_matches(pattern: re.Pattern[str], path: str) -> bool:
    """Whether any reading of ``path`` (as sent, decoded, each resolved) matches the template's pattern."""
    raw = _fold(path.split("?", 1)[0].split("#", 1)[0])
    if pattern.fullmatch(raw):
        return True
    forms = [raw, _fold(unquote(raw))] if "%" in raw else [raw]
    forms += [_resolved(f) for f in forms if "." in f or ";" in f]
    return any(pattern.fullmatch(f) is not None for f in forms[1:])


def entry_key(verdict: Verdict) -> str:
    """The cache (and compacted topic) key of a verdict (``Verdict.entry_key``)."""
    return verdict.entry_key


_ACTION_STRENGTH = {"block": 3, "quarantine": 3, "throttle": 2, "redact": 1}


def _strength(hit: CachedVerdict) -> int:
    """Enforced verdicts above observed ones; within each, block over throttle over redact."""
    return (10 if hit.mode == "enforce" else 0) + _ACTION_STRENGTH.get(hit.action, 0)


class VerdictCache:
    """Entry key -> cached verdict, an index of the edge verdicts of each subject, and counts for metrics."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedVerdict] = {}
        #: subject key -> entry keys of its edge verdicts (insertion ordered)
        self.edges: dict[str, dict[str, None]] = {}
        self._subject_of: dict[str, str] = {}  # edge entry key -> subject key (a subject may contain '@')
        #: MCP server (``[<namespace>/]<service>``) -> entry keys of the verdicts on its tools (``tool:<server>/<tool>``):
        #: requests to a server are read for the tools they call only while it has one
        self.tools: dict[str, set[str]] = {}
        #: entry key -> (issued_at, expires_at) of the lift standing on it
        self.lifted: dict[str, tuple[float, float]] = {}
        self.applied = 0
        self.removed = 0
        self.stale = 0

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, verdict: Verdict) -> bool:
        """Add or replace the verdict of its entry key (the subject, or the subject on one edge), or apply a lift;
        False (counted in ``stale``) when the record is older than what stands for its key."""
        key = entry_key(verdict)
        lifted_at = max(self.lifted.get(key, _NEVER)[0], self.lifted.get(verdict.subject.cache_key, _NEVER)[0])
        current = self.entries.get(key)
        if verdict.issued_at <= lifted_at or (current is not None and verdict.issued_at < current.issued_at - REORDER_TOLERANCE_S):
            self.stale += 1
            return False
        if verdict.action == "lift":
            self.lifted[key] = (verdict.issued_at, verdict.expires_at)
            self.remove(key, before=verdict.issued_at)
            return True
        reason = verdict.reasons[0].detector if verdict.reasons else "verdict"
        scope = verdict.scope
        template = scope.path_template if scope is not None and scope.path_template else None
        self.entries[key] = CachedVerdict(
            action=verdict.action,
            mode=verdict.mode,
            expires_at=verdict.expires_at,
            scope_service=scope.service if scope else None,
            rate_per_s=verdict.rate_per_s or 1.0,
            burst=verdict.burst or 1,
            reason=reason,
            verdict_id=verdict.id,
            scope_template=template,
            pattern=compile_template(template) if template else None,
            issued_at=verdict.issued_at,
        )
        if template:
            self.edges.setdefault(verdict.subject.cache_key, {})[key] = None
            self._subject_of[key] = verdict.subject.cache_key
        if verdict.subject.kind == "tool":
            self.tools.setdefault(verdict.subject.value.rpartition("/")[0], set()).add(key)
        self.applied += 1
        return True

    def _drop(self, key: str) -> bool:
        if self.entries.pop(key, None) is None:
            return False
        if key.startswith("tool:"):
            service = key[5:].rpartition("/")[0]
            keys = self.tools.get(service)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.tools[service]
        subject = self._subject_of.pop(key, None)
        if subject is not None:
            self.edges[subject].pop(key, None)
            if not self.edges[subject]:
                del self.edges[subject]
        return True

    def remove(self, cache_key: str, before: float = float("inf")) -> None:
        """Drop the verdict of an entry key and, for a subject's key, its edge verdicts too: those issued up to ``before``."""
        hit = self.entries.get(cache_key)
        dropped = hit is not None and hit.issued_at <= before and self._drop(cache_key)
        for key in list(self.edges.get(cache_key, ())):
            if self.entries[key].issued_at <= before:
                dropped = self._drop(key) or dropped
        if dropped:
            self.removed += 1

    def find(self, keys: tuple[str, ...], service: str | None, now: float, path: str | None = None) -> tuple[str, CachedVerdict] | None:
        """The strongest live verdict among ``keys`` whose scope matches the destination service (and, for an edge, the path).

        Strongest: enforced before observed, then block, throttle, redact. A weaker verdict on a more
        specific key (an observe-mode one on the actor) never hides a block on its edge or its address.
        Returns the entry key (the subject key, or the edge's) and the verdict.
        """
        entries, best, best_rank = self.entries, None, -1
        for key in keys:
            hit = entries.get(key)
            if hit is not None and hit.expires_at > now and (hit.scope_service is None or hit.scope_service == service):
                rank = _strength(hit)
                if rank > best_rank:
                    best, best_rank = (key, hit), rank
            if self.edges and path is not None:
                found = self._find_edge(key, service, now, path)
                if found is not None and _strength(found[1]) > best_rank:
                    best, best_rank = found, _strength(found[1])
        return best

    def _find_edge(self, subject: str, service: str | None, now: float, path: str) -> tuple[str, CachedVerdict] | None:
        best, best_rank = None, -1
        for key in self.edges.get(subject, ()):
            hit = self.entries[key]
            if hit.expires_at > now and (hit.scope_service is None or hit.scope_service == service):
                if hit.pattern is not None and _path_matches(hit.pattern, path) and _strength(hit) > best_rank:
                    best, best_rank = (key, hit), _strength(hit)
        return best

    def purge(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        dead = [k for k, v in self.entries.items() if v.expires_at <= now]
        for k in dead:
            self._drop(k)
        for k in [k for k, (_, expires) in self.lifted.items() if expires <= now]:
            del self.lifted[k]
        return len(dead)
