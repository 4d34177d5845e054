"""Envoy ext_authz, HTTP service (also Istio ``envoyExtAuthzHttp`` providers and Envoy Gateway).

Envoy repeats the original request to the shim: the same method, the path
behind ``path_prefix`` (query included), no body, and only the headers its
``allowed_headers`` let through (``Host``, ``Authorization`` always). It obeys
the status: 200 lets the request through and copies the answer's headers
matching ``allowed_upstream_headers`` (``x-kubeward-*``) onto it; any other
status goes back to the client, so a throttle is a plain 429 with
``Retry-After``. A check whose path lacks the configured prefix is unparsed.
Shipped configuration: ``deploy/dataplanes/envoy/ext_authz-http.yaml``.
"""

from __future__ import annotations

from enforcement.adapters.httpcheck import HttpAdapter

__all__ = ["EnvoyHttpAdapter"]


class EnvoyHttpAdapter(HttpAdapter):
    """Envoy ext_authz HTTP: method and path from the check's own request line.

    >>> from enforcement.adapters.httpcheck import HeaderIdentity
    >>> from ingest.identity import IdentityResolver
    >>> adapter = EnvoyHttpAdapter(HeaderIdentity(IdentityResolver()), path_prefix="/check")
    >>> adapter.view_of("GET", "/check/orders/7?x=1", {b"host": b"orders.shop.svc"}, "10.0.0.9").path
    '/orders/7?x=1'
    """

    name = "envoy"
    authority_header = "host"
    check_uses_original_method = True
