"""Where a call went, derived from what the data plane reports.

A configured header the data plane sets, else the route or upstream cluster the
data plane reports (``outbound|80||orders.shop.svc.cluster.local``,
``shop/orders``), else a Kubernetes service host name
(``orders.shop.svc.cluster.local``); an IP address is never a service name.
Every name is returned in lower case and without a trailing dot (``ORDERS``,
``orders.`` and ``orders`` are one service: DNS names compare without case and
Kubernetes names are lower case), so a client cannot step around a per-name
policy (the shim's allow-list) by spelling the Host differently.

A two-label host (``orders.shop``) stays an external host, though a pod's DNS
search path resolves it as service ``orders`` in namespace ``shop``: nothing
here can tell it from ``example.com`` (the identity configuration knows no
namespaces). The data plane's route says which it is (``x-kubeward-destination``,
an Istio cluster name), and the shipped configurations set it.

Pure; ``ingest.identity.IdentityResolver.destination`` memoises
``destination_from`` per distinct input.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.identity import IdentityConfig

__all__ = ["Target", "destination_from"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a call went: service name, namespace, and the external host when it left the cluster."""

    service: str | None
    namespace: str | None = None
    host: str | None = None
    external: bool = False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _strip_port(authority: str) -> str:
    """``host:port``, ``[v6]:port`` or a bare IPv6 address -> the host."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _name(text: str) -> str:
    """A host or service name as one spelling: lower case, no trailing dot (the root)."""
    return text.rstrip(".").lower()


def _from_service_host(host: str, cluster_domain: str) -> Target | None:
    """``name.ns.svc[.cluster.local]`` (or a multi-cluster ``.svc.clusterset.local``) -> service ``name`` in ``ns``."""
    labels = _name(host).split(".")
    if len(labels) >= 3 and labels[2] == "svc" and ".".join(labels[3:]) in ("", cluster_domain.lower(), "clusterset.local"):
        return Target(labels[0], labels[1])
    return None


#: Envoy/Istio cluster names that say nothing of the destination (the authority does)
_NO_INFORMATION = ("passthroughcluster", "inboundpassthroughcluster", "blackholecluster", "allow_any")


def destination_from(header_value: str | None, route: str | None, authority: str | None, config: IdentityConfig) -> Target:
    """Destination of a call: configured header, route/cluster name, service host name, external host.

    An Istio cluster name (``outbound|443||api.example.com``) names its host: a service
    host is that service, any other dotted host is outside the cluster (a ServiceEntry's).
    A plain dotted route name (``default.route``, ``orders.shop``) and Istio's passthrough
    clusters say nothing sure, so the authority decides; there a dotted host that is no
    service host is external.

    >>> from ingest.identity import IdentityConfig
    >>> destination_from(None, "outbound|80||orders.shop.svc.cluster.local", "10.1.2.3:80", IdentityConfig())
    Target(service='orders', namespace='shop', host=None, external=False)
    >>> destination_from(None, None, "10.1.2.3:8080", IdentityConfig()).service is None
    True
    """
    for candidate in (header_value, route):
        if not candidate:
            continue
        candidate = candidate.strip()
        if candidate.lower().startswith(_NO_INFORMATION):
            continue
        istio = "|" in candidate
        if istio:  # Istio cluster names: direction|port|subset|host
            candidate = candidate.rsplit("|", 1)[-1]
        if "/" in candidate and not _is_ip(candidate):
            namespace, _, name = candidate.lower().partition("/")
            return Target(name, namespace or None)
        host = candidate.split(":", 1)[0]
        found = _from_service_host(host, config.cluster_domain)
        if found is not None:
            return found
        host = _name(host)
        if host and not _is_ip(host):
            if "." not in host:
                return Target(host)  # a bare name (``orders``): a service of the mesh
            if istio:
                return Target(host, None, host, True)
            if not authority:
                return Target(host)
            break  # a dotted route name: the authority decides
    if authority:
        host = _name(_strip_port(authority))
        if not _is_ip(host):
            found = _from_service_host(host, config.cluster_domain)
            if found is not None:
                return found
            if "." in host:
                return Target(host, None, host, True)
            return Target(host or None)
    return Target(None)
