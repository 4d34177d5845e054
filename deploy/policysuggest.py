"""Least-privilege policy from learned call edges: Istio, Cilium, Kubernetes NetworkPolicy and the shim's allow-list.

``judge(edges, thresholds)`` splits the edges of a window (``deploy.policyedges``)
into *allowed* and *for review*; the renderers turn the allowed ones into one
object per destination workload:

* Istio ``AuthorizationPolicy`` (``security.istio.io/v1``, L7): ``ALLOW``, its
  rules grouping the callers that call the same operations; callers by mTLS
  principal ``<trust domain>/ns/<ns>/sa/<service account>``, external CIDRs by
  ``ipBlocks``; operations by method and path, path templates in Istio's
  template syntax (``/orders/{id}`` becomes ``/orders/{*}``, one segment;
  supported since Istio 1.22). A segment Istio cannot express (``{id}.json``,
  a literal ``*``) becomes a whole-segment ``{*}``: broader, and noted.
* ``CiliumNetworkPolicy`` (``cilium.io/v2``): ``endpointSelector`` of the
  destination, ``fromEndpoints`` (labels plus the namespace label) or
  ``fromCIDR`` of the callers, ``toPorts`` with HTTP rules. Cilium matches a
  rule's ``path`` regex against the whole ``:path`` header, query included, so
  a template becomes ``/orders/[^/?]+([?].*)?``.
* ``NetworkPolicy`` (``networking.k8s.io/v1``, L4): ``podSelector`` of the
  destination, ``from`` the callers' pod and namespace selectors or CIDRs, the
  destination's ports.
* the shim's allow-list (``KubewardAllowList``, data): destination, method,
  template and callers, as the shim names them (``ns/name``, ``cidr:...``).
  The shim enforces it per destination (``KUBEWARD_SHIM_ALLOW_LIST__FILE``, ``enforcement.allowlist``).
  An allowed edge the shim's loader would refuse (a template with whitespace or
  an unbalanced brace, a method outside its pattern) is left out of it and
  listed in the review document's ``shim_left_out`` with the loader's reason:
  one such entry would make the shim refuse the whole file.

An edge is allowed when it had at least ``min_calls`` successful calls and,
when no call was the caller workload's own (a cohort: end users behind a
workload, addresses behind a CIDR), at least ``min_callers`` distinct actors.
A workload calling on its own behalf is one actor by nature, so the actor test
does not apply to it. Everything else is listed for review with its reasons:
too few calls or actors, no successful call, egress to an external host (not an
ingress policy's business), an in-cluster address without a workload.

Selectors and identities come from a ``deploy.policymapping.PolicyMapping``: pods are selected by
``label`` (``app.kubernetes.io/name``) = workload name, the service account is
the workload name, ports are those seen in traffic, else the named port
``http``; a mapping file overrides any of them per workload. A workload that
received no call in the window gets no object and stays open (all three allow
what no policy selects): ``default_deny`` adds a deny-all per namespace. Pure: edges in,
dicts out; nothing here reads files, the cluster or Kafka.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploy.policyedges import Edge, Endpoint, Peer
from deploy.policymapping import PolicyMapping, Port
from deploy.runtime.manifestcheck import KUBERNETES_VERSIONS, CoreSchemas, CrdSchemas, ManifestError, validate_objects
from enforcement.allowlistfile import endpoint_problems
from ingest.errors import SettingsError

__all__ = [
    "CILIUM_API", "FORMATS", "ISTIO_API", "MANAGED_BY", "Judged", "Suggestion", "Thresholds",
    "cilium_path", "cilium_policies", "default_deny", "istio_path", "istio_policies", "judge",
    "namespaces_seen", "network_policies", "render", "review_document", "shim_allowlist", "validate",
]

FORMATS = ("istio", "cilium", "networkpolicy", "shim")
ISTIO_API = "security.istio.io/v1"
CILIUM_API = "cilium.io/v2"
NETPOL_API = "networking.k8s.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubeward"}
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
CILIUM_NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"

_PLACEHOLDER = re.compile(r"\{[^{}/]*\}")
_ERE_SPECIAL = frozenset(".[]()*+?{}|^$\\")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")

Op = tuple[str, str]  # (method, path in the format's syntax)


# -------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Thresholds:
    """When an edge is allowed (see the module docstring); ``allow_external``: False leaves every external CIDR out."""

    min_calls: int = 5
    min_callers: int = 2
    allow_external: bool = True

    def __post_init__(self) -> None:
        for name in ("min_calls", "min_callers"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}={getattr(self, name)!r}: must be >= 1")


# -------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Judged:
    """An edge and why it is not allowed (no reasons: allowed)."""

    edge: Edge
    reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """True when nothing held it back."""
        return not self.reasons


@dataclass(frozen=True)
class Suggestion:
    """Every edge of the window, judged, and the thresholds used."""

    judged: tuple[Judged, ...]
    thresholds: Thresholds

    @property
    def allowed(self) -> list[Edge]:
        """The edges the policies allow."""
        return [j.edge for j in self.judged if j.allowed]

    @property
    def review(self) -> list[Judged]:
        """The edges listed for review, with their reasons."""
        return [j for j in self.judged if not j.allowed]


def _reasons(edge: Edge, t: Thresholds) -> tuple[str, ...]:
    peer, end, s = edge.peer, edge.endpoint, edge.stats
    if end.external:
        return ("egress to a host outside the cluster: not covered by ingress policies (Cilium toFQDNs or an Istio egress gateway)",)
    if peer.kind == "address":
        return ("in-cluster address without a workload: identity unresolved (is the pod watch running?)",)
    if peer.kind == "workload" and "/" not in peer.name:
        return ("caller workload has no namespace: no selector or principal can name it",)
    if peer.kind == "cidr" and not t.allow_external:
        return ("external caller left out (--external omit)",)
    if not end.namespace:
        return ("destination namespace unknown",)
    out = []
    if s.ok_calls == 0:
        out.append(f"no successful call ({s.calls} calls, {s.denied} refused with 401/403)")
    elif s.ok_calls < t.min_calls:
        out.append(f"{s.ok_calls} successful calls < min_calls {t.min_calls}")
    if s.ok_calls and not s.own_ok and s.actors < t.min_callers:
        out.append(f"{s.actors} actor(s) < min_callers {t.min_callers}")
    return tuple(out)


def judge(edges: Iterable[Edge], thresholds: Thresholds | None = None) -> Suggestion:
    """Judge every edge against ``thresholds`` (default ``Thresholds()``)."""
    t = thresholds or Thresholds()
    return Suggestion(tuple(Judged(e, _reasons(e, t)) for e in edges), t)


# -------------------------------------------------------------------------- paths


def istio_path(template: str) -> tuple[str, bool]:
    """(Istio path for a template, True when a segment had to be broadened to ``{*}``).

    >>> istio_path("/orders/{id}/items"), istio_path("/calls/{id}.json"), istio_path("/products")
    (('/orders/{*}/items', False), ('/calls/{*}', True), ('/products', False))
    """
    out, broadened = [], False
    for segment in template.split("/"):
        if _PLACEHOLDER.fullmatch(segment):
            out.append("{*}")
        elif any(c in segment for c in "{}*"):
            out.append("{*}")
            broadened = True
        else:
            out.append(segment)
    return "/".join(out), broadened


def _ere_escape(text: str) -> str:
    return "".join("\\" + c if c in _ERE_SPECIAL else c for c in text)


def cilium_path(template: str) -> str:
    """The Cilium HTTP ``path`` regex (POSIX ERE, matched against the whole ``:path``, query included) of a template.

    >>> cilium_path("/orders/{id}/items"), cilium_path("/calls/{id}.json")
    ('/orders/[^/?]+/items([?].*)?', '/calls/[^/?]+\\\\.json([?].*)?')
    """
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts += [_ere_escape(template[pos : m.start()]), "[^/?]+"]
        pos = m.end()
    parts.append(_ere_escape(template[pos:]))
    return "".join(parts) + "([?].*)?"


# -------------------------------------------------------------------------- objects

Destinations = dict[tuple[str, str], dict[Peer, list[Edge]]]


def _destinations(s: Suggestion) -> Destinations:
    """Allowed edges by destination (namespace, service), then by peer."""
    out: Destinations = defaultdict(lambda: defaultdict(list))
    for edge in s.allowed:
        out[(str(edge.endpoint.namespace), edge.endpoint.service)][edge.peer].append(edge)
    return out


def _split(workload: str) -> tuple[str, str]:
    namespace, _, name = workload.partition("/")
    return namespace, name


def object_name(service: str) -> str:
    """``kubeward-<service>`` as a DNS label."""
    return ("kubeward-" + _DNS_LABEL.sub("-", service.lower()).strip("-"))[:63].rstrip("-")


def _metadata(namespace: str, service: str) -> dict[str, Any]:
    return {"name": object_name(service), "namespace": namespace, "labels": dict(MANAGED_BY)}


def _groups(peers: Mapping[Peer, frozenset[Op]]) -> list[tuple[list[Peer], frozenset[Op]]]:
    """Peers with the same operations together; ordered by their first peer."""
    by_ops: dict[frozenset[Op], list[Peer]] = defaultdict(list)
    for peer in sorted(peers):
        by_ops[peers[peer]].append(peer)
    return sorted(((group, ops) for ops, group in by_ops.items()), key=lambda item: item[0][0])


def _by_method(ops: Iterable[Op]) -> list[tuple[str, list[str]]]:
    paths: dict[str, set[str]] = defaultdict(set)
    for method, path in ops:
        paths[method].add(path)
    return [(method, sorted(paths[method])) for method in sorted(paths)]


def _ports(mapping: PolicyMapping, namespace: str, service: str, peers: Mapping[Peer, list[Edge]]) -> list[Port]:
    return mapping.ports(namespace, service, (p for edges in peers.values() for e in edges for p in e.stats.ports))


def istio_policies(s: Suggestion, mapping: PolicyMapping | None = None) -> list[dict[str, Any]]:
    """One Istio ``AuthorizationPolicy`` (ALLOW) per destination workload with allowed edges."""
    mapping = mapping or PolicyMapping()
    out = []
    for (namespace, service), peers in sorted(_destinations(s).items()):
        ops = {peer: frozenset((e.endpoint.method, istio_path(e.endpoint.template)[0]) for e in edges) for peer, edges in peers.items()}
        rules = []
        for group, group_ops in _groups(ops):
            principals = sorted(mapping.principal(*_split(p.name)) for p in group if p.kind == "workload")
            cidrs = sorted(p.name for p in group if p.kind == "cidr")
            sources = ([{"source": {"principals": principals}}] if principals else []) + ([{"source": {"ipBlocks": cidrs}}] if cidrs else [])
            rules.append({"from": sources, "to": [{"operation": {"methods": [m], "paths": paths}} for m, paths in _by_method(group_ops)]})
        out.append({"apiVersion": ISTIO_API, "kind": "AuthorizationPolicy", "metadata": _metadata(namespace, service),
                    "spec": {"selector": {"matchLabels": mapping.labels(namespace, service)}, "action": "ALLOW", "rules": rules}})
    return out


def _unshared(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    copied: list[dict[str, Any]] = json.loads(json.dumps(value))
    return copied


def _cilium_peer_rules(group: list[Peer], to_ports: list[dict[str, Any]], mapping: PolicyMapping) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    endpoints = [{"matchLabels": {**mapping.labels(*_split(p.name)), CILIUM_NAMESPACE_LABEL: _split(p.name)[0]}}
                 for p in group if p.kind == "workload"]
    if endpoints:
        rules.append({"fromEndpoints": endpoints, "toPorts": to_ports})
    cidrs = sorted(p.name for p in group if p.kind == "cidr")
    if cidrs:
        rules.append({"fromCIDR": cidrs, "toPorts": to_ports})
    return rules


def cilium_policies(s: Suggestion, mapping: PolicyMapping | None = None) -> list[dict[str, Any]]:
    """One ``CiliumNetworkPolicy`` per destination workload with allowed edges (L7 HTTP rules)."""
    mapping = mapping or PolicyMapping()
    out = []
    for (namespace, service), peers in sorted(_destinations(s).items()):
        ports = [{"port": str(p), "protocol": "TCP"} for p in _ports(mapping, namespace, service, peers)]
        ops = {peer: frozenset((e.endpoint.method, cilium_path(e.endpoint.template)) for e in edges) for peer, edges in peers.items()}
        ingress = []
        for group, group_ops in _groups(ops):
            http = [{"method": m, "path": path} for m, paths in _by_method(group_ops) for path in paths]
            ingress += _cilium_peer_rules(group, [{"ports": ports, "rules": {"http": http}}], mapping)
        ingress = _unshared(ingress)  # each rule its own lists: YAML would print shared ones as &anchors
        out.append({"apiVersion": CILIUM_API, "kind": "CiliumNetworkPolicy", "metadata": _metadata(namespace, service),
                    "spec": {"endpointSelector": {"matchLabels": mapping.labels(namespace, service)}, "ingress": ingress}})
    return out


def _netpol_peer(peer: Peer, mapping: PolicyMapping) -> dict[str, Any]:
    if peer.kind == "cidr":
        return {"ipBlock": {"cidr": peer.name}}
    namespace, name = _split(peer.name)
    return {"podSelector": {"matchLabels": mapping.labels(namespace, name)}, "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: namespace}}}


def network_policies(s: Suggestion, mapping: PolicyMapping | None = None) -> list[dict[str, Any]]:
    """One Kubernetes ``NetworkPolicy`` (ingress, L4) per destination workload with allowed edges."""
    mapping = mapping or PolicyMapping()
    out = []
    for (namespace, service), peers in sorted(_destinations(s).items()):
        ports = [{"protocol": "TCP", "port": p} for p in _ports(mapping, namespace, service, peers)]
        sources = [_netpol_peer(peer, mapping) for peer in sorted(peers)]
        out.append({"apiVersion": NETPOL_API, "kind": "NetworkPolicy", "metadata": _metadata(namespace, service),
                    "spec": {"podSelector": {"matchLabels": mapping.labels(namespace, service)}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": sources, "ports": ports}]}})
    return out


def _shim_problems(edge: Edge) -> list[str]:
    """Why the shim's loader would refuse this edge's entry (``enforcement.allowlistfile.endpoint_problems``); empty: it loads."""
    end = edge.endpoint
    return endpoint_problems({"destination": end.destination, "method": end.method, "path_template": end.template, "callers": [str(edge.peer)]})


def shim_allowlist(s: Suggestion) -> dict[str, Any]:
    """The shim's allow-list as data: one entry per endpoint with its allowed callers (the shim enforces it: ``enforcement.allowlist``).

    An edge the shim's loader would refuse is left out (``review_document`` lists it under ``shim_left_out``)."""
    callers: dict[Endpoint, list[str]] = defaultdict(list)
    for edge in s.allowed:
        if not _shim_problems(edge):
            callers[edge.endpoint].append(str(edge.peer))
    entries = [{"destination": end.destination, "method": end.method, "path_template": end.template, "callers": sorted(names)}
               for end, names in sorted(callers.items(), key=lambda kv: (kv[0].destination, kv[0].template, kv[0].method))]
    return {"kind": "KubewardAllowList", "version": 1,
            "thresholds": {"min_calls": s.thresholds.min_calls, "min_callers": s.thresholds.min_callers},
            "endpoints": entries}


def _review_item(edge: Edge, reasons: Iterable[str]) -> dict[str, Any]:
    return {"caller": str(edge.peer), "destination": edge.endpoint.destination, "method": edge.endpoint.method,
            "path_template": edge.endpoint.template, "calls": edge.stats.calls, "successful_calls": edge.stats.ok_calls,
            "actors": edge.stats.actors, "reasons": list(reasons)}


def review_document(s: Suggestion) -> dict[str, Any]:
    """The edges held back, with their counts and reasons, the Istio paths broadened, and the allowed edges the shim's
    allow-list leaves out (``shim_left_out``: its loader would refuse them, the reasons say why); for a human to read."""
    review = [_review_item(j.edge, j.reasons) for j in s.review]
    broadened = sorted({e.endpoint.template for e in s.allowed if istio_path(e.endpoint.template)[1]})
    left_out = [_review_item(e, (f"not in the shim's allow-list: {p}" for p in problems)) for e in s.allowed if (problems := _shim_problems(e))]
    return {"kind": "KubewardPolicyReview", "version": 1, "allowed_edges": len(s.allowed), "review": review,
            "istio_paths_broadened": broadened, "shim_left_out": left_out}


_RENDERERS = {"istio": istio_policies, "cilium": cilium_policies, "networkpolicy": network_policies}
DEFAULT_DENY = "kubeward-default-deny"


def default_deny(namespaces: Iterable[str], formats: Sequence[str] = FORMATS) -> list[dict[str, Any]]:
    """Per namespace, one object per format that refuses every ingress the other objects do not allow.

    Without it a workload that received no call in the window gets no object and stays open to anyone
    (Istio, Cilium and NetworkPolicy all allow what no policy selects).
    """
    out = []
    for namespace in sorted(set(namespaces)):
        meta = {"name": DEFAULT_DENY, "namespace": namespace, "labels": dict(MANAGED_BY)}
        kinds = {"istio": {"apiVersion": ISTIO_API, "kind": "AuthorizationPolicy", "spec": {}},  # allow-nothing
                 "cilium": {"apiVersion": CILIUM_API, "kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {}, "ingress": [{}]}},
                 "networkpolicy": {"apiVersion": NETPOL_API, "kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}}
        out += [{"apiVersion": kinds[f]["apiVersion"], "kind": kinds[f]["kind"], "metadata": dict(meta), "spec": kinds[f]["spec"]}
                for f in formats if f in kinds]
    return out


def render(s: Suggestion, mapping: PolicyMapping | None = None, formats: Sequence[str] = FORMATS,
           deny_namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The Kubernetes objects of the given formats (``shim`` is data, see ``shim_allowlist``), in format order;
    ``deny_namespaces`` adds a default deny in each of them (``default_deny``)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SettingsError(f"formats {unknown}: expected some of {list(FORMATS)}")
    deny = default_deny(deny_namespaces, formats)
    return [obj for f in formats if f in _RENDERERS for obj in _RENDERERS[f](s, mapping)] + deny


def namespaces_seen(s: Suggestion) -> list[str]:
    """Every in-cluster namespace of the window: of destinations and of caller workloads."""
    found = {j.edge.endpoint.namespace for j in s.judged if j.edge.endpoint.namespace and not j.edge.endpoint.external}
    found |= {j.edge.peer.name.partition("/")[0] for j in s.judged if j.edge.peer.kind == "workload" and "/" in j.edge.peer.name}
    return sorted(n for n in found if n)


def validate(objects: list[dict[str, Any]], crd_objects: list[dict[str, Any]], versions: Sequence[str] = KUBERNETES_VERSIONS,
             core: CoreSchemas | None = None) -> list[ManifestError]:
    """Every error of ``objects`` for each Kubernetes version: strict core schemas, strict CRD schemas (as the chart check)."""
    core = core or CoreSchemas()
    crds = CrdSchemas(crd_objects)
    return [error for version in versions for error in validate_objects(objects, version, core, crds, "policy suggest")]
