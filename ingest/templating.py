"""Path templating: concrete paths to templates plus the object ids they name.

Two templaters share one notion of an id-like segment: all digits, a UUID, a
hex string of 12+ characters (hashes), a token of 10+ letters and digits
(``web-7fb96c846b-2xkzq``, Okta and Twilio ids), an e-mail address, a digest
(``sha256:...``), an IPv4 address or a timestamp; ``CA0f3....json`` counts by
its stem and keeps the suffix (``{id}.json``). A date is a *weak* id: the
stateless templater treats it as an id, the learner only when a position
shows several (Twilio's ``/2010-04-01/`` is a version).

* ``template_path(path)`` is stateless: every id-like segment becomes ``{id}``.
  ``/orders/81231/items`` becomes ``/orders/{id}/items`` with ids ``["81231"]``.
* ``PathTemplater`` learns templates per service from observed traffic, so a
  parameter whose values look like words (``/namespaces/kube-system/pods``) is
  found too, while a fixed vocabulary of siblings (Kubernetes' resource names
  under ``/api/v1/``) stays literal. Declared OpenAPI specs, when given, win
  for the paths they match. See its docstring for the rules and the bounds.

Ids are hashed with a key before they leave the node (``hash_object_id``); raw
ids are never published by default.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.openapi import SpecIndex

__all__ = ["EXTENSIONS", "STRONG", "WEAK", "WORD", "PathTemplater", "hash_object_id", "id_kind", "template_path"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{12,}$")
_TOKEN = re.compile(r"^(?=.*\d)[A-Za-z0-9_-]{10,}$")
_EMAIL = re.compile(r"^[^@\s/]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_DIGEST = re.compile(r"^[a-z0-9]+:[0-9a-fA-F]{16,}$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T_ ]\d{2}[:%]")
_BASE64 = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9+_=-]{16,}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERSION = re.compile(r"^v\d+([a-z]+\d*)?(\.\d+)*$")
_EXT = re.compile(r"^(.+?)(\.[A-Za-z][A-Za-z0-9]{0,4})$")

#: extensions that name a representation of a resource (``/Calls/{id}.json``), kept apart from bare ids
EXTENSIONS = frozenset(".json .xml .yaml .yml .csv .txt .html .htm .atom .rss .pdf .png .jpg .jpeg .gif .svg .zip .tar .gz".split())

#: segments already known to be words: each is checked by regular expressions once (8 of them cost ~1.5 us)
_WORDS: set[str] = set()
_WORDS_MAX = 65536

#: id_kind results: a word, a weak id (a date: also an API version such as Twilio's ``2010-04-01``), an id
WORD, WEAK, STRONG = 0, 1, 2


def id_kind(segment: str) -> int:
    """``STRONG`` (2) for an id-like segment, ``WEAK`` (1) for a date, ``WORD`` (0) otherwise.

    >>> [id_kind(s) for s in ("pods", "2010-04-01", "81231", "john.doe@example.com")]
    [0, 1, 2, 2]
    """
    if segment.isdigit():
        return STRONG
    if segment in _WORDS:
        return WORD
    if _DATE.match(segment):
        return WEAK
    if any(p.match(segment) for p in (_UUID, _HEX, _TOKEN, _EMAIL, _DIGEST, _IPV4, _TIMESTAMP, _BASE64)):
        return STRONG
    if len(_WORDS) >= _WORDS_MAX:  # words repeat (a path's literals); the set stays small unless attacked
        _WORDS.clear()
    _WORDS.add(segment)
    return WORD


def _split_id(segment: str, least: int = STRONG) -> tuple[str, str] | None:
    """(stem, suffix) when the segment, or its stem before a short extension, is at least ``least`` id-like."""
    if id_kind(segment) >= least:
        return segment, ""
    m = _EXT.match(segment)
    if m and id_kind(m.group(1)) >= least:
        return m.group(1), m.group(2)
    return None


def _segments(path: str) -> list[str]:
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.split("/")[1:] if path.startswith("/") else path.split("/")


#: template_path's answer per literal segment: (template piece, id or None). Ids are not kept (they rarely repeat).
_PIECES: dict[str, tuple[str, str | None]] = {}
_PIECES_MAX = 16384


def _piece(seg: str) -> tuple[str, str | None]:
    """(template piece, id) of one path segment for ``template_path`` (literal segments memoised)."""
    found = _PIECES.get(seg)
    if found is not None:
        return found
    split = _split_id(seg, WEAK) if seg else None
    if split is not None:
        return "{id}" + split[1], split[0]
    if len(_PIECES) >= _PIECES_MAX:  # literals repeat (an API's words); the memo stays small unless attacked
        _PIECES.clear()
    found = _PIECES[seg] = (seg, None)
    return found


def template_path(path: str) -> tuple[str, list[str]]:
    """Split the query off, replace id-like segments by ``{id}``; return template and ids.

    The answer for a literal segment is memoised (``_piece``) and an all-digit segment is an id without
    asking the patterns (the collector calls this once per access-log entry).

    >>> template_path("/orders/81231/items?expand=1")
    ('/orders/{id}/items', ['81231'])
    >>> template_path("/Accounts/AC0123456789abcdef0123456789abcdef.json")
    ('/Accounts/{id}.json', ['AC0123456789abcdef0123456789abcdef'])
    """
    segments: list[str] = []
    ids: list[str] = []
    for seg in path.split("?", 1)[0].split("/"):
        if seg.isdigit():  # id_kind's first test: STRONG
            segments.append("{id}")
            ids.append(seg)
            continue
        piece, found = _piece(seg)
        segments.append(piece)
        if found is not None:
            ids.append(found)
    return "/".join(segments) or "/", ids


#: a keyed BLAKE2b that has taken its key, per key: copying it is a third cheaper than keying a new one
_HASHERS: dict[bytes, hashlib.blake2b] = {}


def hash_object_id(object_id: str, key: bytes) -> str:
    """Keyed BLAKE2b of an object id, 16 hex characters (stable per key, not reversible).

    Keys longer than BLAKE2b's 64 bytes are first reduced with an unkeyed BLAKE2b.
    """
    h = keyed_hasher(key).copy()
    h.update(object_id.encode())
    return h.hexdigest()


def keyed_hasher(key: bytes) -> hashlib.blake2b:
    """The BLAKE2b of ``hash_object_id`` having taken ``key``: ``copy()`` it, ``update`` the id, ``hexdigest``. Do not update it."""
    hasher = _HASHERS.get(key)
    if hasher is None:
        if len(_HASHERS) >= 64:  # a process uses one or two keys
            _HASHERS.clear()
        hasher = _HASHERS[key] = hashlib.blake2b(key=hashlib.blake2b(key).digest() if len(key) > 64 else key, digest_size=8)
    return hasher


class _Raw:
    """Observed traffic below one position: literal children (capped) and id children keyed by suffix."""

    __slots__ = ("ends", "hits", "lits", "ids")

    def __init__(self) -> None:
        self.hits = 0
        self.ends = 0
        self.lits: dict[str, _Raw] = {}
        self.ids: dict[str, _Raw] = {}


class _Node:
    """A compiled position: literal children, parameter children (longest suffix first)."""

    __slots__ = ("ends", "params", "static")

    def __init__(self, static: dict[str, _Node], params: list[tuple[str, _Node]], ends: int) -> None:
        self.static = static
        self.params = params
        self.ends = ends


class _Group:
    """Raw nodes that one compiled position merges: the same literal under every value of a parameter above."""

    __slots__ = ("hits", "nodes")

    def __init__(self) -> None:
        self.nodes: list[_Raw] = []
        self.hits = 0

    def add(self, node: _Raw) -> None:
        self.nodes.append(node)
        self.hits += node.hits

    def merge(self, other: _Group) -> None:
        self.nodes.extend(other.nodes)
        self.hits += other.hits

    def signature(self) -> set[str]:
        """The shape of the subtree: the literal names seen one and two levels below this position."""
        out: set[str] = set()
        for n in self.nodes:
            for name, child in n.lits.items():
                out.add(name)
                out.update(child.lits)
            for child in n.ids.values():
                out.update(child.lits)
        out.discard("")
        return out

    def vocabulary(self) -> set[str]:
        """Literal children, API versions left out (every API group has a ``v1``, which says nothing)."""
        return {name for n in self.nodes for name in n.lits if name and not _VERSION.match(name)}


def _looks_like_value(segment: str) -> bool:
    m = _EXT.match(segment)
    stem = m.group(1) if m and m.group(2).lower() in EXTENSIONS else segment
    return any(c.isdigit() for c in stem) or "." in stem.strip(".") or "@" in stem[1:]


def _fold_suffixes(params: dict[str, _Group]) -> None:
    """Keep a suffix parameter (``{id}.json``) only when every suffixed value carries one known extension.

    Several extensions at one position (``report.csv``, ``logo.png``) say the
    extension is part of the value (file names), so they fold into ``{id}``.
    """
    suffixes = [s for s in params if s]
    if len(suffixes) == 1 and suffixes[0].lower() in EXTENSIONS:
        return
    for sfx in suffixes:
        params.setdefault("", _Group()).merge(params.pop(sfx))


class PathTemplater:
    """Learn path templates per service from observed concrete paths.

    Parameters
    ----------
    specs: declared APIs by service; a path a service's ``SpecIndex`` matches
        gets the declared template (with the declared parameter names).
    max_children: distinct literal children remembered per position; later
        newcomers share one overflow child, which marks the position variable.
    max_nodes: trie nodes per service (about 300 bytes each); past it,
        learning stops descending, so memory is bounded per service.
    max_depth: segments learned per path (deeper ones use ``template_path``).
    light_hits: a literal seen at most this often is *light* (a value candidate).
    min_values: light literals that make a position variable.
    min_alike, alike: siblings that make a position variable by shape alone,
        and the Jaccard similarity their vocabularies need.
    sample_after, sample_every: ``learn`` observes every path of a service up to
        ``sample_after``, then one in ``sample_every``.
    compile_ratio, recompile_every: a service is recompiled after one
        observation per ``compile_ratio`` nodes of its trie, at most every
        ``recompile_every`` observations (so compiling costs O(1) node visits
        per observation, and a young service is recompiled at once).

    Rules, applied when templates are compiled from the trie of one service
    (strong ids never enter it as literals: they go straight to an id child).
    A position is *variable* when it has an id child (a strong id or the
    overflow), two dates, or at least ``min_values`` light literals; then its
    ids, dates and light literals are values of one parameter. Independently,
    at least ``min_alike`` siblings whose vocabularies (their literal
    children, counting only names that recur under at least half of the
    siblings, API versions such as ``v1beta1`` left out) agree are values,
    even when each is seen often: a few namespaces, each with ``pods``,
    ``services``... A heavier literal joins the values when its own subtree
    agrees with theirs (at least two shared names among the literals one and
    two levels below, and half of its own: ``default`` among namespace names)
    or when it is a leaf that looks like a value (digits, dots, ``@``);
    otherwise it stays a static sibling (``login`` next to ``{username}``).
    Values are merged per file suffix (``{id}.json`` apart from ``{id}``,
    only when one known extension is used), and the positions below a
    parameter pool the traffic of all its values. A fixed vocabulary seen
    many times (Kubernetes' resources under ``/api/v1/``) stays literal.

    Templates change as traffic arrives: a position may become a parameter
    later, and because the trie keeps the raw literals (up to the caps), a
    literal that looked light early can turn back into a static sibling once
    it is seen often. Compilation runs in ``observe`` on the schedule above
    and on ``refresh``; ``template`` answers from the last compilation with a trie
    walk (dict lookups, microseconds), and falls back to ``template_path``
    for segments the service has never shown. The method is accepted for the
    declared specs; learned templates are shared by all methods of a path.
    Learned parameters are all named ``{id}``; the ids returned are the
    parameter values in path order (suffix removed).
    """

    def __init__(
        self,
        specs: Mapping[str, SpecIndex] | None = None,
        *,
        max_children: int = 64,
        max_nodes: int = 50_000,
        max_depth: int = 32,
        light_hits: int = 2,
        min_values: int = 3,
        min_alike: int = 4,
        alike: float = 0.6,
        compile_ratio: int = 8,
        recompile_every: int = 4096,
        sample_after: int = 4096,
        sample_every: int = 8,
    ) -> None:
        self.specs = dict(specs or {})
        self.max_children = max_children
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.light_hits = light_hits
        self.min_values = min_values
        self.min_alike = min_alike
        self.alike = alike
        self.compile_ratio = compile_ratio
        self.recompile_every = recompile_every
        self.sample_after = sample_after
        self.sample_every = sample_every
        self._offered: dict[str, int] = {}
        self._raw: dict[str, _Raw] = {}
        self._nodes: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._next_compile: dict[str, int] = {}
        self._compiled: dict[str, _Node] = {}

    def observe(self, service: str, method: str, path: str) -> None:
        """Learn from one request (``method`` is not used by the learned templates)."""
        node = self._raw.setdefault(service, _Raw())
        node.hits += 1
        for seg in _segments(path)[: self.max_depth]:
            child = self._child(service, node, seg)
            if child is None:
                break
            node = child
            node.hits += 1
        else:
            node.ends += 1
        seen = self._seen[service] = self._seen.get(service, 0) + 1
        if seen >= self._next_compile.get(service, 1):
            self.refresh(service)

    def _child(self, service: str, node: _Raw, seg: str) -> _Raw | None:
        found = _split_id(seg) if seg else None
        table, key = (node.ids, found[1]) if found else (node.lits, seg)
        if key in table:
            return table[key]
        if not found and len(node.lits) >= self.max_children:
            table, key = node.ids, ""
            if key in table:
                return table[key]
        if self._nodes.get(service, 0) >= self.max_nodes:
            return None
        self._nodes[service] = self._nodes.get(service, 0) + 1
        table[key] = _Raw()
        return table[key]

    def refresh(self, service: str | None = None) -> None:
        """Compile the templates of one service (all when None) from everything observed so far."""
        for name in [service] if service is not None else list(self._raw):
            group = _Group()
            group.add(self._raw[name])
            self._compiled[name] = self._compile(group)
            seen = self._seen.get(name, 0)
            interval = self._nodes.get(name, 0) // max(self.compile_ratio, 1)
            self._next_compile[name] = seen + min(max(interval, 1), self.recompile_every)

    def _compile(self, group: _Group) -> _Node:
        lits: dict[str, _Group] = {}
        ids: dict[str, _Group] = {}
        for raw in group.nodes:
            for name, child in raw.lits.items():
                lits.setdefault(name, _Group()).add(child)
            for sfx, child in raw.ids.items():
                ids.setdefault(sfx, _Group()).add(child)
        for name in self._values(lits, ids):
            m = _EXT.match(name)
            sfx = m.group(2) if m and m.group(2).lower() in EXTENSIONS else ""
            ids.setdefault(sfx, _Group()).merge(lits.pop(name))
        _fold_suffixes(ids)
        static = {name: self._compile(g) for name, g in lits.items()}
        params = sorted(((sfx, self._compile(g)) for sfx, g in ids.items()), key=lambda p: -len(p[0]))
        return _Node(static, params, sum(n.ends for n in group.nodes))

    def _values(self, lits: dict[str, _Group], ids: dict[str, _Group]) -> set[str]:
        """The literal children that are values of a parameter at this position (see the class docstring)."""
        weak = {name for name in lits if id_kind(name) == WEAK}
        light = {name for name, g in lits.items() if name and g.hits <= self.light_hits}
        values = weak | light if ids or len(weak) >= 2 or len(light) >= self.min_values else set()
        values |= self._alike(lits)
        if not (values or ids):
            return set()
        shape: set[str] = set()
        for g in [lits[v] for v in values] + list(ids.values()):
            shape |= g.signature()
        for name, g in lits.items():
            if name and name not in values and self._joins(name, g, shape):
                values.add(name)
        return values

    def _alike(self, lits: dict[str, _Group]) -> set[str]:
        """The largest set of at least ``min_alike`` siblings whose subtrees look alike (see the class docstring)."""
        kids = {name: g.vocabulary() for name, g in lits.items() if name and not _VERSION.match(name)}
        if len(kids) < self.min_alike:
            return set()
        recurring = Counter(x for names in kids.values() for x in names)
        need = max(2, (len(kids) + 1) // 2)
        sigs = {name: sig for name, names in kids.items() if len(sig := {x for x in names if recurring[x] >= need}) >= 2}
        best: list[str] = []
        for sa in sigs.values():
            close = [b for b, sb in sigs.items() if len(sa & sb) >= self.alike * len(sa | sb)]
            best = close if len(close) > len(best) else best
        return set(best) if len(best) >= self.min_alike else set()

    @staticmethod
    def _joins(name: str, group: _Group, shape: set[str]) -> bool:
        own = group.signature()
        if not own:
            return _looks_like_value(name) and not any(n.ids for n in group.nodes)
        shared = len(own & shape)
        return shared >= 2 and 2 * shared >= len(own)

    def template(self, service: str, method: str, path: str) -> tuple[str, list[str]]:
        """The template of ``path`` and the parameter values in it (declared spec first, then learned)."""
        spec = self.specs.get(service)
        if spec is not None and (found := spec.lookup(path)) is not None:
            return found.template, found.ids
        node = self._compiled.get(service)
        if node is None:
            return template_path(path)
        out: list[str] = []
        ids: list[str] = []
        for seg in _segments(path):
            node = self._step(node, seg, out, ids) if node is not None else None
            if node is None:  # never seen here: strong ids only, a lone date may be a version
                split = _split_id(seg) if seg else None
                out.append(seg if split is None else "{id}" + split[1])
                ids.extend(split[:1] if split else ())
        return "/" + "/".join(out), ids

    @staticmethod
    def _step(node: _Node, seg: str, out: list[str], ids: list[str]) -> _Node | None:
        child = node.static.get(seg)
        if child is not None:
            out.append(seg)
            return child
        for sfx, param in node.params:
            if seg and (not sfx or (seg.endswith(sfx) and len(seg) > len(sfx))):
                out.append("{id}" + sfx)
                ids.append(seg[: len(seg) - len(sfx)])
                return param
        return None

    def learn(self, service: str, method: str, path: str) -> tuple[str, list[str]]:
        """``observe`` then ``template``, for a stream that learns as it goes.

        Paths a declared spec matches are answered from it and not learned; past
        ``sample_after`` paths of a service, one in ``sample_every`` is learned
        (a uniform sample keeps the relative hit counts the rules compare), so
        a busy service's learning costs a fixed share of its traffic.
        """
        spec = self.specs.get(service)
        if spec is not None and (found := spec.lookup(path)) is not None:
            return found.template, found.ids
        offered = self._offered[service] = self._offered.get(service, 0) + 1
        if offered <= self.sample_after or offered % self.sample_every == 0:
            self.observe(service, method, path)
        return self.template(service, method, path)

    def templates(self, service: str) -> list[str]:
        """Every learned template of a service at which some observed request ended, sorted."""
        root = self._compiled.get(service)
        return sorted(_walk_templates(root, "")) if root is not None else []


def _walk_templates(node: _Node, prefix: str) -> Iterator[str]:
    if node.ends:
        yield prefix or "/"
    for name, child in node.static.items():
        yield from _walk_templates(child, f"{prefix}/{name}")
    for sfx, child in node.params:
        yield from _walk_templates(child, f"{prefix}/{{id}}{sfx}")
