"""Who made a call and where it went, derived from what the data plane forwards.

* **Principal**: from the credentials the request carries (JWT, Basic, API key,
  session cookie), as a keyed hash, never the token: ``ingest.principal``.
* **Workload**: the SPIFFE URI of the nearest hop in ``x-forwarded-client-cert``
  (``spiffe://<td>/ns/<ns>/sa/<sa>``; only the element the nearest proxy wrote,
  read with quoted values respected), else the pod directory's answer for the
  client address (``ingest.pods``), else none.
* **Client address**: the data plane's peer, or, with ``trusted_hops = n``, the
  n-th entry from the right of ``x-forwarded-for`` (each trusted proxy appends
  one): never the leftmost entry, which any client can write.
* **Who may forward identity**: a component asked by the data plane (the shim)
  believes ``x-forwarded-for``, ``x-forwarded-client-cert`` and ``x-kubeward-*``
  only from a peer in ``trusted_data_planes`` (``IdentityResolver.trusts``); from
  any other peer those headers are dropped (``without_forwarded``) and the peer
  itself is the client. A collector reads what the data plane itself logged, so
  its peer is the data plane's downstream and no such gate applies.
* **Destination**: a configured header, the route or upstream cluster, a
  Kubernetes service host name: ``ingest.destination``.

``IdentityResolver`` puts the three together. Everything here is pure; results
are memoised per distinct input because identities repeat from request to
request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.destination import Target, destination_from
from ingest.principal import principal_from_headers

__all__ = [
    "Identity",
    "IdentityConfig",
    "IdentityResolver",
    "FORWARDED_IDENTITY",
    "client_ip",
    "grpc_peer_address",
    "without_forwarded",
    "workload_from_xfcc",
]

_MEMO_MAX = 65536
#: headers through which a proxy tells who the client is; believed only from a trusted data plane (besides ``x-kubeward-*``)
FORWARDED_IDENTITY: frozenset[str] = frozenset({"x-forwarded-for", "x-forwarded-client-cert", "forwarded", "x-real-ip"})
_LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class Identity:
    """The source side of one call, as Kubeward derived it."""

    workload: str | None = None
    namespace: str | None = None
    pod: str | None = None
    ip: str | None = None
    external: bool = False
    principal: str | None = None
    auth_type: str = "none"


@dataclass(frozen=True)
class IdentityConfig:
    """How identities are derived; every field has a safe default.

    ``principal_key`` keys the principal hash. ``jwt_hs256_secret`` and ``jwks``
    (``{"keys": [...]}``) enable signature checks. ``trusted_hops`` is how many
    proxies in front of the reporter append to ``x-forwarded-for``.
    ``internal_networks`` are the CIDRs of the cluster (pods, nodes); other
    client addresses are external. ``trusted_proxies`` are the CIDRs of gateways
    whose own ``x-forwarded-for`` entry is believed (an ingress or a BFF in front
    of end users): calls through them are attributed to the address they saw.
    ``trusted_data_planes`` are the CIDRs of the data planes that ask the shim
    (its TCP peers: Envoy, nginx, Traefik, the gRPC caller of ext_authz and
    ext_proc); only from them are forwarded identity headers believed
    (``IdentityResolver.trusts``). The default, loopback, fits a data plane on
    the same host or in the same pod; in a cluster name the gateways' pod CIDR.
    """

    principal_key: bytes = b"kubeward-dev-principal-key"
    jwt_hs256_secret: bytes | None = None
    jwks: Mapping[str, Any] | None = None
    trusted_hops: int = 0
    api_key_headers: tuple[str, ...] = ("x-api-key", "api-key")
    session_cookies: tuple[str, ...] = ("session", "sessionid", "jsessionid", "connect.sid", "_session_id")
    destination_header: str = "x-kubeward-destination"
    internal_networks: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fd00::/8", "::1/128")
    cluster_domain: str = "cluster.local"
    trusted_proxies: tuple[str, ...] = ()
    trusted_data_planes: tuple[str, ...] = _LOOPBACK
    extra: Mapping[str, str] = field(default_factory=dict)


def _split_unquoted(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double quotes (a backslash escapes the next character)."""
    if '"' not in text:
        return text.split(sep)
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def workload_from_xfcc(xfcc: str) -> str | None:
    """``ns/serviceaccount`` from the SPIFFE URI of the nearest hop in ``x-forwarded-client-cert``.

    Envoy appends one comma-separated element per proxy; the last is the peer that connected to us,
    and only it counts: the elements before it came from further away (with ``APPEND_FORWARD``,
    from the client itself), so a nearest hop without a SPIFFE id has no workload. Commas and
    semicolons inside quoted values (``Subject="CN=a,URI=spiffe://..."``) split nothing.

    >>> workload_from_xfcc('By=spiffe://a/ns/x/sa/y;URI=spiffe://cluster.local/ns/shop/sa/frontend')
    'shop/frontend'
    >>> workload_from_xfcc('URI=spiffe://cluster.local/ns/kube-system/sa/admin,Hash=ab;DNS=client.example') is None
    True
    """
    nearest = _split_unquoted(xfcc, ",")[-1]
    for part in _split_unquoted(nearest, ";"):
        key, _, value = part.strip().partition("=")
        if key.upper() == "URI" and value.strip('"').startswith("spiffe://"):
            bits = value.strip('"')[len("spiffe://") :].split("/")
            if len(bits) >= 5 and bits[1] == "ns" and bits[3] == "sa":
                return f"{bits[2]}/{bits[4]}"
    return None


def without_forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without the ones only a trusted data plane may set (``FORWARDED_IDENTITY``, ``x-kubeward-*``).

    >>> without_forwarded({"x-forwarded-for": "6.6.6.6", "x-kubeward-principal": "victim", "authorization": "Bearer t"})
    {'authorization': 'Bearer t'}
    """
    return {k: v for k, v in headers.items() if k not in FORWARDED_IDENTITY and not k.startswith("x-kubeward-")}


def grpc_peer_address(peer: str | None) -> str | None:
    """The address in a gRPC peer string (``ipv4:10.0.0.7:5000``, ``ipv6:[::1]:5000``, ``ipv6:%5B::1%5D:5000``);
    ``None`` for a Unix socket or anything else (the caller is then on this machine or unknown).

    >>> grpc_peer_address("ipv4:10.0.0.7:51234"), grpc_peer_address("ipv6:[::1]:51234"), grpc_peer_address("unix:/run/s")
    ('10.0.0.7', '::1', None)
    """
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    rest = rest.replace("%5B", "[").replace("%5D", "]")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0] or None
    if kind == "ipv6":
        return rest[1 : rest.find("]")] if rest.startswith("[") and "]" in rest else rest.rsplit(":", 1)[0] or None
    return None


def client_ip(peer_ip: str | None, forwarded_for: str | None, trusted_hops: int,
              trusted_proxy: Callable[[str], bool] | None = None) -> str | None:
    """The client address: the peer, or the entry ``trusted_hops`` from the right of ``x-forwarded-for``.

    With ``trusted_hops=1`` the one proxy in front of us appended the address it
    saw, so the rightmost entry is trusted; anything left of that was written by
    someone we do not trust. When that address is itself a trusted proxy (an
    ingress gateway that appends the address *it* saw, ``trusted_proxy``), the
    walk goes one entry further left, and so on: the first address that is not
    a trusted proxy is the client.

    >>> client_ip("10.0.0.9", "6.6.6.6, 203.0.113.7", 1)
    '203.0.113.7'
    >>> client_ip("10.0.0.9", "6.6.6.6", 0)
    '10.0.0.9'
    >>> client_ip("10.0.0.9", "6.6.6.6, 198.18.0.4, 10.244.0.7", 1, lambda a: a.startswith("10.244."))
    '198.18.0.4'
    """
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()] if forwarded_for else []
    if trusted_hops <= 0 or not entries:
        chain, pos = [*entries, peer_ip], len(entries)
    elif len(entries) < trusted_hops:
        return peer_ip
    else:
        chain, pos = list(entries), len(entries) - trusted_hops
    address = chain[pos]
    while trusted_proxy is not None and address is not None and trusted_proxy(address) and pos > 0:
        pos -= 1
        if chain[pos] != address:  # a proxy in front of us may have appended the same peer
            address = chain[pos]
    return address


PodLookup = Callable[[str], "tuple[str, str, str] | None"]


class IdentityResolver:
    """Derives ``Identity`` and destinations from forwarded headers; memoised per distinct input.

    ``pods`` maps a client address to ``(workload, namespace, pod)`` (``ingest.pods.PodDirectory.lookup``
    adapted), or None. ``trusts(peer)`` says whether a peer may forward identity (``trusted_data_planes``).
    """

    def __init__(self, config: IdentityConfig | None = None, pods: Callable[[str], tuple[str, str, str] | None] | None = None):
        self.config = config or IdentityConfig()
        self.pods = pods
        self._networks = tuple(ipaddress.ip_network(n) for n in self.config.internal_networks)
        self._proxies = tuple(ipaddress.ip_network(n) for n in self.config.trusted_proxies)
        self._planes = tuple(ipaddress.ip_network(n) for n in self.config.trusted_data_planes)
        self._classes: dict[str, tuple[bool, bool, bool]] = {}
        self._destinations: dict[tuple[str | None, str | None, str | None], Target] = {}
        self._memo: dict[tuple[str | None, ...], Identity] = {}
        #: the headers an identity is derived from (the memo's key, with the peer)
        self._key_headers = ("authorization", "x-forwarded-client-cert", "x-forwarded-for", "cookie", *self.config.api_key_headers)

    def _classify(self, ip: str) -> tuple[bool, bool, bool]:
        """(is a trusted proxy, is external, is a trusted data plane) of an address, memoised (``ipaddress`` costs microseconds)."""
        found = self._classes.get(ip)
        if found is None:
            try:
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                found = (False, False, False)
            else:
                if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                    addr = addr.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
                found = (any(addr in n for n in self._proxies), not any(addr in n for n in self._networks),
                         any(addr in n for n in self._planes))
            if len(self._classes) >= _MEMO_MAX:
                self._classes.clear()
            self._classes[ip] = found
        return found

    def _is_proxy(self, ip: str) -> bool:
        return self._classify(ip)[0]

    def _external(self, ip: str | None) -> bool:
        return self._classify(ip)[1] if ip else False

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (the TCP peer that asks) is a trusted data plane, so its forwarded identity headers count.

        ``None`` (a Unix socket, or a caller that passed no peer) is trusted: only this machine reaches a Unix socket.
        """
        return peer is None or self._classify(peer)[2]

    def resolve(self, headers: Mapping[str, str], peer_ip: str | None) -> Identity:
        """The source identity of one request (header names lower case).

        The header-derived part (JWT parsing and checking, hashing) is memoised per
        distinct set of identity headers; the pod directory is asked on every call,
        because pod addresses are reused.
        """
        key = (*map(headers.get, self._key_headers), peer_ip)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            found = self._memo[key] = self._from_headers(headers, peer_ip)
        if found.workload is None and found.ip and self.pods is not None:
            pod = self.pods(found.ip)
            if pod is not None:
                return Identity(pod[0], pod[1], pod[2], found.ip, False, found.principal, found.auth_type)
        return found

    def _from_headers(self, headers: Mapping[str, str], peer_ip: str | None) -> Identity:
        ip = client_ip(peer_ip, headers.get("x-forwarded-for"), self.config.trusted_hops, self._is_proxy if self._proxies else None)
        principal, auth_type = principal_from_headers(headers, self.config)
        xfcc = headers.get("x-forwarded-client-cert")
        workload = workload_from_xfcc(xfcc) if xfcc else None
        if workload is not None and auth_type == "none":
            auth_type = "mtls"
        namespace = workload.split("/", 1)[0] if workload else None
        return Identity(workload, namespace, None, ip, workload is None and self._external(ip), principal, auth_type)

    def destination(self, headers: Mapping[str, str], route: str | None, authority: str | None) -> Target:
        """Destination of one request (see ``destination_from``)."""
        key = (headers.get(self.config.destination_header), route, authority)
        found = self._destinations.get(key)
        if found is None:
            if len(self._destinations) >= _MEMO_MAX:
                self._destinations.clear()
            found = self._destinations[key] = destination_from(key[0], route, authority, self.config)
        return found
