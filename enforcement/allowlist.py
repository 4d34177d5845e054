"""The learned L7 allow-list the shim enforces: ``KubewardAllowList`` documents, loaded strictly, and their matcher.

``kubeward policy suggest --format shim`` writes the document
(``deploy.policysuggest.shim_allowlist``)::

    kind: KubewardAllowList
    version: 1
    thresholds: {min_calls: 5, min_callers: 2}      # how it was learned; informational
    endpoints:
    - {destination: shop/orders, method: GET, path_template: /orders/{id}, callers: [shop/web, cidr:198.51.100.0/24]}

``enforcement.allowlistfile.load_allowlist(path)`` reads it (YAML or JSON);
``allowlist_from_dict`` checks a parsed one. Both collect every problem and raise ``AllowListError``
naming the key and the bad value (``file:line`` where the file says): an
unknown key (with the nearest valid one), a wrong ``kind`` or ``version``, a
template that does not start with ``/``, carries a query or unbalanced
braces, a caller that is no peer name, the same endpoint twice.

``AllowList.refusal(request)`` answers None (allowed, or not governed) or why
the request is refused. Only destinations the list names are governed; for
them the list is complete: a method and path no entry matches is refused
(``unknown-endpoint``), and so is a caller no matching entry names
(``unknown-caller``), or no caller at all (``unnamed-caller``). Names agree
with ``deploy.policyedges`` by construction:

* **destination**: ``namespace/service`` as ``Endpoint.destination`` (the
  service alone when the namespace is unknown). A listed destination without
  a namespace governs that service in every namespace. A request whose
  namespace the shim could not tell (a bare ``Host: orders``) could be bound
  for any of them, so it is governed by every listed ``<namespace>/orders``
  and passes only if *each* of them allows it (the strictest: ``dev/orders``
  allowing a caller opens nothing in ``shop/orders``); with a listed bare
  ``orders`` it must pass those entries alone, which govern it in namespaces
  the list does not name.
  A request the shim names no service for at all (an IP address as host and
  no destination header) is not governed: the data plane's route must name
  the destination (the shipped configurations set ``x-kubeward-destination``).
* **caller**: ``peer_of`` names a call's source by its workload
  (``namespace/name``: XFCC, the pod directory, the data plane's
  ``x-kubeward-source-workload``), else its address: an external one as the
  ``cidr:`` around it, an in-cluster one as ``address:<ip>`` (never allowed by
  ``policy suggest``). External is the identity resolver's word
  (``identity.internal_networks``), which collectors and the shim's own
  reports (``RequestView.external`` -> ``source.external``) both carry, so a
  client only the shim saw is learned as its network too. The shim does the
  same: a request with a workload matches only a listed workload; one without
  matches a listed ``cidr:<network>`` that contains its address (a new address
  in a learned network passes) or a listed ``address:<ip>``. Containment alone
  decides, not the request's ``external`` bit: suggest lists only external
  networks, and a network an operator writes by hand means what it says.
  IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) count as the IPv4 address.
  Principals are not peers: policyedges counts them as actors *behind* a
  workload or CIDR, so the list names none and the principal plays no part.
* **template**: ``path_template`` as the summaries carry it (``template_path``
  ``{id}``, a learned or declared ``{name}``); each ``{...}`` stands for one
  non-empty piece of one segment, as in the Istio (``{*}``) and Cilium
  (``[^/?]+``) renderings of the same edges; other segments match literally
  after one round of percent-decoding (what the upstream reads). The query
  is not part of the match. A path the shim's normaliser
  (``enforcement.normalize.decode``: repeated percent-decoding, overlong
  UTF-8, NFKC) turns into a ``.``/``..`` segment or a segment with ``/`` or
  ``\\`` is refused on a governed destination (``ambiguous-path``): the
  upstream may resolve it to an endpoint other than the one it matched. So is
  a segment that is ``.``, ``..`` or empty once its path parameters are
  dropped (``..;``, ``..;x=1``, ``;x``): Tomcat and Jetty drop ``;`` and what
  follows from each segment before they resolve dot segments, so
  ``/users/..;/orders/5`` is ``/orders/5`` to them. Otherwise a segment with
  parameters is matched as sent (``/orders/5;v=1`` is ``{id}`` = ``5;v=1``).
* **method**: exact, upper case (``HEAD`` is not ``GET``, as in Istio).

An entry with method or template ``-`` (a summary without one) matches no
request. Pure: ``load_allowlist`` reads one file; the rest is data in, data out.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from enforcement.decision import RequestView
from enforcement.errors import EnforcementError
from enforcement.normalize import decode
from ingest.peername import plain_address, source_peer

__all__ = [
    "AMBIGUOUS_PATH", "KIND", "REASONS", "UNKNOWN_CALLER", "UNKNOWN_ENDPOINT", "UNNAMED_CALLER", "VERSION",
    "AllowList", "AllowListError", "AllowedEndpoint", "caller_of",
]

KIND = "KubewardAllowList"
VERSION = 1
UNKNOWN_ENDPOINT = "unknown-endpoint"
UNKNOWN_CALLER = "unknown-caller"
UNNAMED_CALLER = "unnamed-caller"
AMBIGUOUS_PATH = "ambiguous-path"
#: every refusal reason (the shim's ``allowlist:<reason>``; a bounded set, so a metric label)
REASONS = (AMBIGUOUS_PATH, UNKNOWN_CALLER, UNKNOWN_ENDPOINT, UNNAMED_CALLER)

_PLACEHOLDER = re.compile(r"\{[^{}/]*\}")  # deploy.policysuggest's: a placeholder is one piece of one segment
_NAME = re.compile(r"[^\s/]+")
_MEMO_MAX = 65536
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllowListError(EnforcementError):
    """An allow-list document is invalid; the message lists every problem, each naming its key and value."""


# -------------------------------------------------------------------------- matching


#: a whole segment that is one placeholder (``{id}``): any non-empty value, no regex needed
_ANY = re.compile(r".+", re.DOTALL)


def _segment_pattern(segment: str) -> re.Pattern[str] | None:
    """A segment with placeholders as a regex over its decoded text (``_ANY`` for a bare placeholder); None for a literal."""
    if not _PLACEHOLDER.search(segment):
        return None
    if _PLACEHOLDER.fullmatch(segment):
        return _ANY
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(segment):
        parts += [re.escape(unquote(segment[pos : m.start()])), "(?:.+?)"]
        pos = m.end()
    parts.append(re.escape(unquote(segment[pos:])))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class _Template:
    """A compiled path template: per segment its decoded literal, or a pattern."""

    literals: tuple[str, ...]
    patterns: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def of(cls, template: str) -> _Template:
        segments = template.split("/")
        return cls(tuple(unquote(s) for s in segments), tuple(_segment_pattern(s) for s in segments))

    def matches(self, segments: tuple[str, ...]) -> bool:
        for literal, pattern, seg in zip(self.literals, self.patterns, segments):
            if pattern is None:
                if seg != literal:
                    return False
            elif not seg or (pattern is not _ANY and pattern.fullmatch(seg) is None):
                return False
        return True


@dataclass(frozen=True)
class AllowedEndpoint:
    """One entry: who may call ``method path_template`` on ``destination`` (callers as policyedges names peers)."""

    destination: str
    method: str
    path_template: str
    callers: tuple[str, ...]
    line: int = 0
    _template: _Template | None = field(default=None, repr=False, compare=False)
    _workloads: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _addresses: frozenset[Address] = field(default=frozenset(), repr=False, compare=False)
    _networks: tuple[Network, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(cls, destination: str, method: str, path_template: str, callers: Iterable[str], line: int = 0) -> AllowedEndpoint:
        """An entry with its template compiled and callers sorted into workloads, addresses and networks (names checked)."""
        names = tuple(callers)
        workloads: set[str] = set()
        addresses: set[Address] = set()
        networks: list[Network] = []
        for name in names:
            value = _caller(name)
            if isinstance(value, str):
                workloads.add(value)
            elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                addresses.add(value)
            else:
                networks.append(value)
        template = None if path_template == "-" or method == "-" else _Template.of(path_template)
        return cls(destination, method, path_template, names, line, template, frozenset(workloads), frozenset(addresses), tuple(networks))

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        """Whether this entry covers the method and the (decoded) path segments."""
        t = self._template
        return t is not None and method == self.method and len(segments) == len(t.literals) and t.matches(segments)

    def allows(self, workload: str | None, address: Address | None) -> bool:
        """Whether the caller is listed: its workload, else its address (in a listed CIDR, or listed itself)."""
        if workload:
            return workload in self._workloads
        if address is None:
            return False
        return address in self._addresses or any(address in net for net in self._networks if net.version == address.version)


def caller_of(req: RequestView, prefix_v4: int = 24, prefix_v6: int = 64) -> str | None:
    """The request's caller as ``deploy.policyedges.peer_of`` names it (same default prefixes), for messages and tests:
    the workload; else, for an external address (``req.external``), the ``cidr:`` network around it; else
    ``address:<ip>``; else None. Which listed ``cidr:`` contains an address is the matcher's question.

    >>> caller_of(RequestView("GET", "/", source_workload="shop/web", ip="10.0.0.3"))
    'shop/web'
    >>> caller_of(RequestView("GET", "/", ip="198.51.100.7", external=True))
    'cidr:198.51.100.0/24'
    >>> caller_of(RequestView("GET", "/", ip="10.0.0.99"))
    'address:10.0.0.99'
    """
    found = source_peer(req.source_workload, req.ip, req.external, prefix_v4, prefix_v6)
    if found is None:
        return None
    kind, name = found
    return name if kind == "workload" else f"{kind}:{name}"


#: characters after which a path segment needs the normaliser (percent and other escapes, non-ASCII)
_ESCAPES = re.compile(r"[%&\\]|[^\x00-\x7f]")


def _dotted(segment: str) -> bool:
    """Whether a decoded segment is ``.``/``..``, or becomes one (or empty) once its ``;`` path parameters are dropped,
    as Tomcat and Jetty drop them before resolving dot segments (``..;`` is ``..`` to them)."""
    if ";" in segment:
        segment = segment.split(";", 1)[0]
        if not segment:
            return True
    return segment in (".", "..")


def _path_segments(path: str) -> tuple[str, ...] | None:
    """The path's segments decoded once (as the upstream reads them); None when the shim's normaliser finds a segment
    that could name another path (``.``, ``..``, the same behind ``;`` path parameters, an encoded ``/`` or ``\\``)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return None
    if _ESCAPES.search(path) is None:  # nothing to decode (most paths): 1 regex scan
        if ";" in path:
            for seg in segments:
                if ";" in seg and _dotted(seg):
                    return None
        return tuple(segments)
    out = []
    for raw in segments:
        seg = unquote(raw) if "%" in raw else raw
        full = decode(raw) if _ESCAPES.search(raw) else raw
        if _dotted(full) or _dotted(seg) or "/" in full or "\\" in full:
            return None
        out.append(seg)
    return tuple(out)


#: the governing entries of one destination by (method, segment count): a check compares only templates of its own
#: method and length
_Group = dict[tuple[str, int], list[AllowedEndpoint]]


class AllowList:
    """Allowed endpoints by destination; ``refusal(request)`` is the shim's check (see the module docstring)."""

    def __init__(self, endpoints: Iterable[AllowedEndpoint], source: str = "<allow-list>") -> None:
        self.endpoints = tuple(endpoints)
        self.source = source
        self._by_destination: dict[str, list[AllowedEndpoint]] = {}
        self._by_service: dict[str, list[AllowedEndpoint]] = {}
        for entry in self.endpoints:
            self._by_destination.setdefault(entry.destination, []).append(entry)
            self._by_service.setdefault(entry.destination.rpartition("/")[2], []).append(entry)
        #: per governed (namespace, service) of a request: one group per destination it may be bound for (one, unless
        #: the namespace is unknown); only governed keys, so names a request makes up (the Host header) cost no memory
        self._index: dict[tuple[str | None, str], tuple[_Group, ...]] = {}
        self._addresses: dict[str, Address | None] = {}

    def __len__(self) -> int:
        return len(self.endpoints)

    @property
    def destinations(self) -> list[str]:
        """The destinations the list governs, sorted."""
        return sorted(self._by_destination)

    def governing(self, namespace: str | None, service: str | None) -> list[AllowedEndpoint]:
        """The entries that govern a destination (empty: not governed); without a namespace, those of every candidate
        (``candidates`` keeps them apart: a request without namespace must pass each)."""
        return [entry for group in self.candidates(namespace, service) for entry in group]

    def namespaces(self, service: str | None) -> tuple[str, ...]:
        """The namespaces of the listed destinations named ``<namespace>/<service>`` (``CallGate``)."""
        if not service:
            return ()
        return tuple(sorted({e.destination.partition("/")[0] for e in self._by_service.get(service, ()) if "/" in e.destination}))

    def candidates(self, namespace: str | None, service: str | None) -> list[list[AllowedEndpoint]]:
        """Per destination the request may be bound for, the entries that govern it there; the request passes only if
        some entry of every group allows it (empty: not governed). One group when the namespace is known."""
        if not service:
            return []
        bare = self._by_destination.get(service, [])
        if namespace:
            found = self._by_destination.get(f"{namespace}/{service}", []) + bare
            return [found] if found else []
        if bare:
            return [bare]  # they alone govern the namespaces the list does not name: the strictest candidate
        named = sorted({e.destination for e in self._by_service.get(service, ())})
        return [self._by_destination[d] for d in named]

    def _governing_index(self, namespace: str | None, service: str) -> tuple[_Group, ...]:
        key = (namespace, service)
        found = self._index.get(key)
        if found is not None:
            return found
        if service not in self._by_service:
            return ()  # no entry names the service (most ungoverned requests): one look-up, no memory
        groups = []
        for entries in self.candidates(namespace, service):
            group: _Group = {}
            for entry in entries:
                size = len(entry._template.literals) if entry._template is not None else -1
                group.setdefault((entry.method, size), []).append(entry)
            groups.append(group)
        found = tuple(groups)
        if found:  # governed only: an ungoverned name costs two dictionary look-ups each time, and no memory
            if len(self._index) >= _MEMO_MAX:  # still bounded: a bare listed service is governed in any namespace
                self._index.clear()
            self._index[key] = found
        return found

    def refusal(self, req: RequestView) -> str | None:
        """None when the request may pass (allowed, or its destination is not governed); else the reason it may not."""
        if not req.service:
            return None
        groups = self._governing_index(req.namespace, req.service)
        if not groups:
            return None
        segments = _path_segments(req.path)
        if segments is None:
            return AMBIGUOUS_PATH
        address = None if req.source_workload else self._address(req.ip)
        for group in groups:  # every candidate destination must allow it (one, unless the namespace is unknown)
            why = self._group_refusal(group, req, segments, address)
            if why is not None:
                return why
        return None

    @staticmethod
    def _group_refusal(group: _Group, req: RequestView, segments: tuple[str, ...], address: Address | None) -> str | None:
        matched = False
        for entry in group.get((req.method, len(segments)), ()):
            if entry.matches(req.method, segments):
                if entry.allows(req.source_workload, address):
                    return None
                matched = True
        if not matched:
            return UNKNOWN_ENDPOINT
        return UNKNOWN_CALLER if req.source_workload or address is not None else UNNAMED_CALLER

    def _address(self, ip: str | None) -> Address | None:
        if not ip:
            return None
        if ip in self._addresses:
            return self._addresses[ip]
        try:
            found: Address | None = plain_address(ipaddress.ip_address(ip.strip("[]")))
        except ValueError:
            found = None
        if len(self._addresses) >= _MEMO_MAX:
            self._addresses.clear()
        self._addresses[ip] = found
        return found


# -------------------------------------------------------------------------- caller names


@functools.lru_cache(maxsize=65536)
def _caller(name: str) -> str | Address | Network:
    """A caller name parsed: the workload ``namespace/name``, the address of ``address:<ip>``, the network of
    ``cidr:<network>``; ``ValueError`` naming what is wrong. Memoised: the same callers recur across entries."""
    if name.startswith("cidr:"):
        return ipaddress.ip_network(name[5:], strict=False)
    if name.startswith("address:"):
        return plain_address(ipaddress.ip_address(name[8:]))
    namespace, slash, workload = name.partition("/")
    if not slash or not _NAME.fullmatch(namespace) or not _NAME.fullmatch(workload):
        raise ValueError("expected a workload 'namespace/name', 'cidr:<network>' or 'address:<ip>'")
    return name
