"""Traefik ForwardAuth.

Traefik asks with a ``GET`` to the middleware's ``address`` and carries the
original request in ``X-Forwarded-Method``, ``X-Forwarded-Uri`` (path and
query), ``X-Forwarded-Host`` and ``X-Forwarded-For``, plus the client headers
listed in ``authRequestHeaders``. A 2xx answer lets the request through and the
answer's headers matching ``authResponseHeadersRegex`` (``^X-Kubeward-``)
replace the client's on the upstream request; any other answer (403, 429 with
``Retry-After``) is returned to the client unchanged. A check without
``X-Forwarded-Method`` or ``X-Forwarded-Uri`` is unparsed.
Shipped configuration: ``deploy/dataplanes/traefik/``.
"""

from __future__ import annotations

from enforcement.adapters.httpcheck import HttpAdapter

__all__ = ["TraefikAdapter"]


class TraefikAdapter(HttpAdapter):
    """Traefik ForwardAuth: method, path and host from ``X-Forwarded-*``; status-coded answers.

    >>> from enforcement.adapters.httpcheck import HeaderIdentity
    >>> from ingest.identity import IdentityResolver
    >>> adapter = TraefikAdapter(HeaderIdentity(IdentityResolver(), TraefikAdapter.authority_header))
    >>> view = adapter.view_of("GET", "/", {b"x-forwarded-method": b"DELETE", b"x-forwarded-uri": b"/orders/7"}, None)
    >>> (view.method, view.path)
    ('DELETE', '/orders/7')
    """

    name = "traefik"
    authority_header = "x-forwarded-host"
    method_header = b"x-forwarded-method"
    uri_header = b"x-forwarded-uri"
