"""How a call's source is named in least-privilege policy, one rule for ``kubeward policy suggest`` and the shim.

``source_peer(workload, ip, external)`` is ``("workload", "ns/name")`` when the source has a workload; else, for an
address outside the cluster, ``("cidr", network)``: the /24 (IPv4) or /64 (IPv6) around it, brackets stripped and an
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, a dual-stack listener's peer) read as the IPv4 address; else
``("address", ip)`` for an in-cluster address without a workload; None when there is nothing to name (or an external
address that does not parse). ``plain_address`` is the address normalisation on its own. Pure.

>>> source_peer(None, "::ffff:198.51.100.7", True)
('cidr', '198.51.100.0/24')
>>> source_peer("shop/web", "10.0.0.3", False), source_peer(None, "10.0.0.9", False)
(('workload', 'shop/web'), ('address', '10.0.0.9'))
"""

from __future__ import annotations

import ipaddress

__all__ = ["plain_address", "source_peer"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def plain_address(addr: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; any other address unchanged."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def source_peer(workload: str | None, ip: str | None, external: bool, prefix_v4: int = 24, prefix_v6: int = 64) -> tuple[str, str] | None:
    """(kind, name) of a call's source: ``workload``, ``cidr`` (external) or ``address``; see the module docstring."""
    if workload:
        return "workload", workload
    if not ip:
        return None
    if not external:
        return "address", ip
    try:
        addr = plain_address(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        return None
    prefix = prefix_v4 if addr.version == 4 else prefix_v6
    return "cidr", str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
