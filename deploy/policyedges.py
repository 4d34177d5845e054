"""Call edges with names, folded from request summaries the way the worker sees them: the input of ``kubeward policy suggest``.

The worker's edge learner (``streams.edges``) keeps 64-bit hashes only, and an
``api.inventory.v1`` record names just the top five callers of an endpoint:
neither can say *every* caller of an endpoint by name, which a least-privilege
policy needs. ``EdgeFold`` folds the summaries themselves (Parquet archives or
``l7.summaries.v1``) through the worker's own decoding (``streams.batch.
BatchView``: identity, the edge ``service + method + template``, a shim's own
refusal not counted as the upstream's answer) and its repeat filter (a second
reporter's copy of a call is counted once, and its answer once: from the first
copy that carried one, so a call the shim reported before the upstream answered
gets the access log's status), keeping names.

Peers are what a network policy can name, so they are coarser than the
worker's callers: a workload (``namespace/name``, from the pod watch or XFCC)
whether it calls on its own behalf or for end users behind it (its user cohort
in ``streams.edges``); an external address, grouped into a CIDR
(``/24`` IPv4, ``/64`` IPv6 by default); an in-cluster address without a
workload (an unresolved identity: never allowed, listed for review). The
actors of an edge (``EdgeStats.actors``) are the worker's: the workload itself,
each principal behind it, each address behind a CIDR, counted over successful
calls. Pure: tables in, edges out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from ingest.peername import source_peer
from streams.batch import BatchView, column
from streams.repeats import RepeatFilter

__all__ = ["Edge", "EdgeFold", "EdgeStats", "Endpoint", "Peer", "peer_of"]

PeerKind = Literal["workload", "cidr", "address"]
#: principals and addresses remembered per edge: enough to compare with any sane ``min_callers``
_ACTOR_CAP = 1000


@dataclass(frozen=True, order=True)
class Peer:
    """Who calls, as a policy can name it: ``workload`` ``ns/name``, external ``cidr``, or an unresolved in-cluster ``address``."""

    kind: PeerKind
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "workload" else f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Endpoint:
    """What is called: destination namespace and service, method, path template; ``external`` for a host outside the cluster."""

    namespace: str | None
    service: str
    method: str
    template: str
    external: bool = False

    @property
    def destination(self) -> str:
        """``namespace/service`` (``service`` alone when the namespace is unknown)."""
        return f"{self.namespace}/{self.service}" if self.namespace else self.service


@dataclass
class EdgeStats:
    """What the window saw of one (peer, endpoint) edge."""

    calls: int = 0
    ok_calls: int = 0
    denied: int = 0
    own_ok: int = 0  # successful calls the peer made on its own behalf (no principal)
    first_seen: float = float("inf")
    last_seen: float = float("-inf")
    ports: set[int] = field(default_factory=set)
    principals: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)

    @property
    def actors(self) -> int:
        """Distinct actors with a successful call: the workload itself, each principal, each address (capped at 1000 each)."""
        return (1 if self.own_ok else 0) + len(self.principals) + len(self.addresses)


@dataclass(frozen=True)
class Edge:
    """One (peer, endpoint) edge and its statistics."""

    peer: Peer
    endpoint: Endpoint
    stats: EdgeStats


def peer_of(workload: str | None, ip: str | None, external: bool, prefix_v4: int = 24, prefix_v6: int = 64) -> Peer | None:
    """The peer of a call's source: its workload, else its address (external: the CIDR around it), else None.

    The rule is ``ingest.peername.source_peer``, which the shim's allow-list (``enforcement.allowlist``) names callers
    by too (an IPv4-mapped IPv6 address is read as IPv4, so the listed network holds the callers it was learned from).

    >>> peer_of(None, "198.51.100.7", True)
    Peer(kind='cidr', name='198.51.100.0/24')
    >>> str(peer_of(None, "::ffff:198.51.100.7", True))
    'cidr:198.51.100.0/24'
    >>> str(peer_of("shop/web", "10.0.0.3", False))
    'shop/web'
    """
    found = source_peer(workload, ip, external, prefix_v4, prefix_v6)
    return None if found is None else Peer(found[0], found[1])  # type: ignore[arg-type]  # kind is a PeerKind


def _struct_field(table: pa.Table, struct: str, name: str) -> list[object]:
    values = column(table, struct)
    names = {values.type.field(i).name for i in range(values.type.num_fields)}
    return values.field(name).to_pylist() if name in names else [None] * table.num_rows


class EdgeFold:
    """Folds summary tables into named edges (see the module docstring).

    >>> import pyarrow as pa
    >>> fold = EdgeFold()
    >>> fold.update(pa.Table.from_pylist([{"id": "1", "time": 1.0, "reporter": "shim", "principal": None, "status": 200,
    ...     "source": {"workload": "shop/web", "ip": "10.0.0.3", "external": False},
    ...     "destination": {"service": "orders", "namespace": "shop", "port": 8080, "external": False},
    ...     "method": "GET", "path_template": "/orders/{id}", "object_ids": [], "sensitive": [], "inline_findings": [],
    ...     "response_bytes": 10, "request_bytes": 5}]))
    >>> [(str(e.peer), e.endpoint.destination, e.stats.ok_calls, sorted(e.stats.ports)) for e in fold.edges()]
    [('shop/web', 'shop/orders', 1, [8080])]
    """

    def __init__(self, prefix_v4: int = 24, prefix_v6: int = 64, request_id_memory: int = 200_000) -> None:
        if not 0 <= prefix_v4 <= 32 or not 0 <= prefix_v6 <= 128:
            raise ValueError(f"CIDR prefixes {prefix_v4}/{prefix_v6}: expected 0-32 (IPv4) and 0-128 (IPv6)")
        self.prefix_v4, self.prefix_v6 = prefix_v4, prefix_v6
        self._repeats = RepeatFilter(request_id_memory)
        self._edges: dict[tuple[Peer, Endpoint], EdgeStats] = {}
        self.rows = 0
        self.skipped = 0  # rows with no source identity at all

    def update(self, table: pa.Table) -> None:
        """Fold one table of summaries (``RequestSummary`` columns; rows in time order across calls)."""
        if not table.num_rows:
            return
        view = BatchView.decode(table, ids=self._repeats)
        self.rows += int(view.first.sum())
        rows = zip(view.source_workload.to_pylist(), view.source_ip.to_pylist(), view.external.tolist(), view.principal.to_pylist(),
                   _struct_field(table, "destination", "namespace"), view.service.to_pylist(), view.method.to_pylist(),
                   view.template.to_pylist(), view.dest_external.tolist(), _struct_field(table, "destination", "port"),
                   view.status.tolist(), view.time.tolist())
        counted = zip(view.first.tolist(), view.answer.tolist())
        for (first, answer), row in zip(counted, rows):
            if first or answer:
                self._fold(first, answer, *row)

    def _fold(self, first: bool, answer: bool, workload: str | None, ip: str | None, external: bool, principal: str | None,
              namespace: object, service: str, method: str | None, template: str | None, dest_external: bool, port: object,
              status: int, t: float) -> None:
        """Fold one row: the call when it is the call's ``first`` copy, its status when it carries the call's ``answer``
        (a shim's copy of an allowed call comes before the access log's, which alone has the status); the edge is the
        one the row names."""
        peer = peer_of(workload, ip, external, self.prefix_v4, self.prefix_v6)
        if peer is None:
            self.skipped += first
            return
        endpoint = Endpoint(str(namespace) if namespace else None, service, (method or "-").upper(), template or "-", dest_external)
        stats = self._edges.get((peer, endpoint))
        if stats is None:
            stats = self._edges[(peer, endpoint)] = EdgeStats()
        if isinstance(port, int) and port > 0:
            stats.ports.add(port)  # the access log's copy knows the port, the shim's may not
        if first:
            stats.calls += 1
            stats.first_seen, stats.last_seen = min(stats.first_seen, t), max(stats.last_seen, t)
        if not answer:
            return
        if status in (401, 403):
            stats.denied += 1
        if not 200 <= status < 400:
            return
        stats.ok_calls += 1
        if principal:
            if len(stats.principals) < _ACTOR_CAP:
                stats.principals.add(principal)
        elif peer.kind != "workload":
            if ip and len(stats.addresses) < _ACTOR_CAP:
                stats.addresses.add(ip)
        else:
            stats.own_ok += 1

    def edges(self) -> list[Edge]:
        """Every edge seen so far, sorted by peer then endpoint."""
        return [Edge(peer, endpoint, stats) for (peer, endpoint), stats in sorted(self._edges.items(), key=lambda kv: _order(*kv[0]))]


def _order(peer: Peer, endpoint: Endpoint) -> tuple[str, str, str, str, str, str, bool]:
    return (peer.kind, peer.name, endpoint.namespace or "", endpoint.service, endpoint.method, endpoint.template, endpoint.external)
